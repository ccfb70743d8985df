"""A running ComfyUI server spoken to over its HTTP API (the standard library only; no ComfyUI import): upload an
image, queue a prompt, wait for it, read back the images its output node made. Every failure is one line naming the
server and what to do; a prompt that runs past its time is interrupted, never left running."""
from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import numpy as np
from PIL import Image

from ..data.dataset import DatasetError


class ComfyUIClient:
    def __init__(self, url: str, where: str, poll: float = 0.25):
        self.url = url.rstrip("/")
        self.where = where  # names the setting the URL came from, in every error
        self.poll = poll
        self.client_id = f"alchemint-benchmark-{uuid.uuid4().hex[:8]}"

    def fail(self, message: str) -> DatasetError:
        return DatasetError(f"{self.where}: ComfyUI at {self.url}: {message}")

    def request(self, path: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 60):
        req = urllib.request.Request(self.url + path, data=data, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.read()
        except urllib.error.HTTPError as err:
            body = err.read()
            try:
                return json.loads(body) | {"__status__": err.code}
            except ValueError:
                raise self.fail(f"{path} answered {err.code}: {body[:300]!r}") from None
        except (urllib.error.URLError, OSError) as err:
            raise self.fail(f"cannot be reached ({getattr(err, 'reason', err)}); start ComfyUI (python main.py "
                            f"--listen) or fix the server URL") from None

    def get_json(self, path: str, timeout: float = 60):
        body = self.request(path, timeout=timeout)
        return body if isinstance(body, dict) else json.loads(body or b"null")

    def object_info(self) -> dict:
        return self.get_json("/object_info", timeout=120)

    def upload_png(self, png: bytes, name: str, subfolder: str) -> str:
        """Puts an image in the server's input folder; returns the value LoadImage takes for it."""
        boundary = uuid.uuid4().hex
        parts = [(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                  f'Content-Type: image/png\r\n\r\n').encode() + png + b"\r\n"]
        for key, value in (("subfolder", subfolder), ("type", "input"), ("overwrite", "true")):
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        answer = self.request("/upload/image", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        answer = answer if isinstance(answer, dict) else json.loads(answer)
        if "name" not in answer:
            raise self.fail(f"refused the reference upload {name}: {answer}")
        return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]

    def run(self, graph: dict, timeout: float) -> dict:
        """Queues the prompt and waits for it; returns its outputs (node id -> UI output)."""
        body = json.dumps({"prompt": graph, "client_id": self.client_id}).encode()
        answer = self.request("/prompt", body, {"Content-Type": "application/json"})
        answer = answer if isinstance(answer, dict) else json.loads(answer)
        if "prompt_id" not in answer:
            raise self.fail(f"refused the prompt: {describe_refusal(answer)}")
        prompt_id = answer["prompt_id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.get_json(f"/history/{prompt_id}").get(prompt_id)
            status = (entry or {}).get("status", {})
            if status.get("completed"):
                return entry.get("outputs", {})
            if status.get("status_str") == "error":
                raise self.fail(f"the prompt failed: {describe_error(status)}")
            time.sleep(self.poll)
        self.request("/interrupt", b"{}", {"Content-Type": "application/json"})
        raise self.fail(f"a video took longer than {timeout:g} s and was interrupted; raise timeout in the model "
                        f"file or use fewer steps")

    def images(self, outputs: dict, node_id: str) -> np.ndarray:
        """The images one output node showed, as uint8 [N, H, W, 3] in the order it showed them."""
        shown = outputs.get(node_id, {}).get("images")
        if not shown:
            raise self.fail(f"the prompt finished without images from its output node {node_id!r} (outputs: "
                            f"{sorted(outputs)})")
        frames = []
        for im in shown:
            query = urllib.parse.urlencode({k: im.get(k, "") for k in ("filename", "subfolder", "type")})
            body = self.request(f"/view?{query}", timeout=120)
            frames.append(np.asarray(Image.open(io.BytesIO(body)).convert("RGB")))
        return np.stack(frames)


def describe_refusal(answer: dict) -> str:
    """ComfyUI's /prompt refusal (its error and the per-node errors) as one line."""
    err = answer.get("error", {})
    parts = [err.get("message", "") + (f" ({err['details']})" if err.get("details") else "")]
    for nid, node_err in (answer.get("node_errors") or {}).items():
        for e in node_err.get("errors", []):
            parts.append(f"{node_err.get('class_type', nid)}: {e.get('message', '')} {e.get('details', '')}".strip())
    return "; ".join(p for p in parts if p) or json.dumps(answer)[:300]


def describe_error(status: dict) -> str:
    for kind, data in status.get("messages", []):
        if kind == "execution_error":
            return f"{data.get('node_type', '?')}: {data.get('exception_message', '').strip()}"
    return "no message (see the ComfyUI log)"
