"""Makes the README's pictures from the real thing, so they stay true:

- docs/images/demo-strip.png: the strip image `python -m alchemint_core demo` writes for its default subjects
  (references above, every frame below, the requested interval bars under the frames);
- docs/images/timeline.png: the demo workflow's Reference Loaders and Interval Timeline in a real ComfyUI, in
  headless Chromium (needs what tests/COMFYUI_E2E.md lists; `bash .ci/comfyui_env.sh PATH` sets it up).

    python docs/make_images.py                          # both (the timeline needs COMFYUI_DIR)
    python docs/make_images.py --only strip|timeline
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
WORKFLOW = ROOT / "workflows" / "alchemint_demo_cpu.json"
# canvas region shown: the two Load Image nodes, their Reference Loaders and the Interval Timeline (node 6)
REGION = (0, 170, 1120, 900)
MARGIN = (140, 120)  # where the region is put on the page: clear of the sidebar, the tab bar and their menus


def demo_strip() -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "alchemint_core", "demo", "--out", f"{tmp}/demo.mp4"], cwd=ROOT,
                       check=True)
        out = IMAGES / "demo-strip.png"
        shutil.copyfile(f"{tmp}/demo.png", out)
    return out


def timeline_screenshot() -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from comfyui_harness import ComfyServer, close_page, load_workflow, missing_node_types, open_page

    x0, y0, x1, y1 = REGION
    with ComfyServer() as server, tempfile.TemporaryDirectory() as profile:
        pw, ctx, page = open_page(server, Path(profile))
        try:
            load_workflow(page, json.loads(WORKFLOW.read_text()))
            if missing_node_types(page):
                raise RuntimeError(f"the demo workflow has missing nodes: {missing_node_types(page)}")
            page.evaluate("([x, y]) => { app.canvas.ds.scale = 1; app.canvas.ds.offset = [x, y]; "
                          "app.canvas.deselectAllNodes(); app.canvas.setDirty(true, true); }",
                          [MARGIN[0] - x0, MARGIN[1] - y0])
            page.wait_for_timeout(1000)
            left, top = page.evaluate("() => { const b = app.canvas.canvas.getBoundingClientRect(); "
                                      "return [b.x, b.y]; }")
            out = IMAGES / "timeline.png"
            page.screenshot(path=str(out), clip={"x": left + MARGIN[0], "y": top + MARGIN[1], "width": x1 - x0, "height": y1 - y0})
            if page.errors:
                raise RuntimeError(f"the page reported errors: {page.errors}")
        finally:
            close_page(pw, ctx)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=("strip", "timeline"))
    args = ap.parse_args()
    IMAGES.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "strip"):
        print(demo_strip())
    if args.only in (None, "timeline"):
        print(timeline_screenshot())


if __name__ == "__main__":
    main()
