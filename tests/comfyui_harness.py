"""A real ComfyUI server with this pack, on loopback, and a real headless Chromium page on it (Playwright).

Environment:
  COMFYUI_DIR           a ComfyUI checkout (main.py); the tests skip without it
  COMFYUI_PYTHON        the python that runs the server (default: this one)
  COMFYUI_FRONTEND_NEW  a newer frontend's static folder (comfyui_frontend_package/static), tested too when set
  CHROMIUM              the browser (default /usr/bin/chromium)
See tests/COMFYUI_E2E.md.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACK_NAME = "comfyui-alchemint"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"]


def comfyui_dir() -> Path:
    d = os.environ.get("COMFYUI_DIR")
    if not d:
        pytest.skip("COMFYUI_DIR is not set (see tests/COMFYUI_E2E.md)")
    if not (Path(d) / "main.py").is_file():
        pytest.skip(f"COMFYUI_DIR={d} is not a ComfyUI checkout (no main.py)")
    return Path(d)


def frontends() -> list[tuple[str, str | None]]:
    """(name, --front-end-root or None for the pinned one) to test."""
    out = [("pinned", None)]
    if os.environ.get("COMFYUI_FRONTEND_NEW"):
        out.append(("newest", os.environ["COMFYUI_FRONTEND_NEW"]))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """`with ComfyServer() as server:` a ComfyUI process with a throw-away base directory holding this pack."""

    def __init__(self, frontend_root: str | None = None, settings: dict | None = None,
                 model_files: dict[str, list[str]] | None = None, links: dict[str, Path] | None = None):
        self.dir = comfyui_dir()
        self.links = links or {}  # path inside the base directory -> a real file or folder linked there
        self.frontend_root = frontend_root
        self.settings = {"Comfy.TutorialCompleted": True, **(settings or {})}
        self.model_files = model_files or {}
        self.proc = None

    def __enter__(self) -> "ComfyServer":
        self.base = Path(tempfile.mkdtemp(prefix="alchemint-comfy-"))
        for sub in ("custom_nodes", "models", "input", "output", "temp", "user/default"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        (self.base / "user/default/comfy.settings.json").write_text(json.dumps(self.settings))
        (self.base / "custom_nodes" / PACK_NAME).symlink_to(ROOT)
        for folder, names in self.model_files.items():  # placeholder files so COMBO validation sees the names
            for name in names:
                (self.base / "models" / folder).mkdir(parents=True, exist_ok=True)
                (self.base / "models" / folder / name).write_bytes(b"")
        for rel, target in self.links.items():  # real model files, inputs or extra (test-only) node packs
            (self.base / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.base / rel).symlink_to(Path(target).resolve())
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [os.environ.get("COMFYUI_PYTHON", sys.executable), "main.py", "--cpu", "--listen", "127.0.0.1",
               "--port", str(self.port), "--base-directory", str(self.base),
               "--database-url", f"sqlite:///{self.base}/user/comfyui.db"]
        if self.frontend_root:
            cmd += ["--front-end-root", self.frontend_root]
        self.log_path = self.base / "server.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=self.dir, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                self.get("/system_stats")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        self.__exit__(None, None, None)
        raise RuntimeError(f"ComfyUI did not answer within 120 s:\n{self.log()[-4000:]}")

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if getattr(self, "_log", None):
            self._log.close()
        shutil.rmtree(self.base, ignore_errors=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read() or b"null")

    def post(self, path: str, data: dict) -> tuple[int, dict]:
        req = urllib.request.Request(self.url + path, data=json.dumps(data).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                body = r.read()
                return r.status, json.loads(body) if body else {}
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")

    def object_info(self) -> dict:
        return self.get("/object_info")

    def post_prompt(self, prompt: dict) -> tuple[int, dict]:
        return self.post("/prompt", {"prompt": prompt, "client_id": "alchemint-tests"})

    def interrupt(self) -> None:
        self.post("/interrupt", {})

    def wait_history(self, prompt_id: str, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            h = self.get(f"/history/{prompt_id}")
            if prompt_id in h and h[prompt_id].get("status", {}).get("completed") is not None \
                    and (h[prompt_id]["status"].get("status_str") in ("success", "error")):
                return h[prompt_id]
            time.sleep(0.5)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout} s:\n{self.log()[-3000:]}")

    def wait_running(self, prompt_id: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            q = self.get("/queue")
            if any(item[1] == prompt_id for item in q.get("queue_running", [])):
                return
            time.sleep(0.1)
        raise TimeoutError(f"prompt {prompt_id} did not start")


def open_page(server: ComfyServer, profile: Path, vue_nodes: bool = False):
    """(playwright, context, page) with the ComfyUI app loaded and the node renderer chosen."""
    sync_api = pytest.importorskip("playwright.sync_api")
    browser = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not Path(browser).is_file():
        pytest.skip(f"no Chromium at {browser} (set CHROMIUM)")
    pw = sync_api.sync_playwright().start()
    ctx = pw.chromium.launch_persistent_context(str(profile), executable_path=browser, headless=True,
                                                viewport={"width": 1600, "height": 1000}, args=BROWSER_ARGS)
    page = ctx.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(server.url)
    page.wait_for_function("window.app && app.graph && app.canvas", timeout=90_000)
    page.evaluate("async v => await app.extensionManager.setting.set('Comfy.VueNodes.Enabled', v)", vue_nodes)
    page.wait_for_timeout(500)
    return pw, ctx, page


def close_page(pw, ctx) -> None:
    ctx.close()
    pw.stop()


def load_workflow(page, workflow: dict) -> None:
    page.evaluate("async wf => { await app.loadGraphData(wf); }", workflow)
    page.wait_for_timeout(1500)


def missing_node_types(page) -> list[str]:
    return page.evaluate("() => app.graph._nodes.filter(n => !n.constructor.nodeData && "
                         "!['Reroute', 'Note', 'MarkdownNote'].includes(n.type)).map(n => n.type)")


def api_prompt(page) -> dict:
    return page.evaluate("async () => (await app.graphToPrompt()).output")


def focus_node(page, node_id: int, margin=(300, 200)) -> None:
    """Scroll the canvas so the node's top-left corner is at `margin` pixels, zoom 1."""
    page.evaluate("([id, m]) => { const n = app.graph.getNodeById(id); app.canvas.ds.scale = 1; "
                  "app.canvas.ds.offset = [-n.pos[0] + m[0], -n.pos[1] + m[1]]; app.canvas.setDirty(true, true); }",
                  [node_id, list(margin)])
    page.wait_for_timeout(800)


def drag(page, start: tuple[float, float], end: tuple[float, float], steps: int = 12) -> None:
    """A real mouse drag in several moves."""
    page.mouse.move(*start)
    page.mouse.down()
    for k in range(1, steps + 1):
        page.mouse.move(start[0] + (end[0] - start[0]) * k / steps, start[1] + (end[1] - start[1]) * k / steps)
        page.wait_for_timeout(20)
    page.mouse.up()
    page.wait_for_timeout(300)
