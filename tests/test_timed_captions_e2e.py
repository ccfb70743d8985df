"""Timed captions in a real ComfyUI and its real frontend in headless Chromium (runs when COMFYUI_DIR is set): the
AlcheMinT Timed Captions node's caption bars are dragged with the mouse, a caption's text is typed, one is added and
removed, the workflow and the prompt carry the result, save/reload keeps it, and a queued run uses it — in the
classic canvas and the Vue node renderer, with the pinned frontend and (COMFYUI_FRONTEND_NEW) the newest. The shipped
demo model has no dense-caption branch: the run fails with the one-line error that says so; a demo-sized model with a
random dense branch (written into models/alchemint) runs, and its video changes with the captions' text."""
import json
from dataclasses import replace

import pytest

from comfyui_harness import (ComfyServer, api_prompt, close_page, drag, focus_node, frontends, load_workflow,
                              missing_node_types, open_page)
from workflow_builder import DEMO, Node, ui_workflow

pytestmark = pytest.mark.comfyui

CAPTIONS_NODE = 16
DENSE_MODEL = "dense_demo.safetensors"
PAD, RULER, ROW, GAP = 8, 22, 22, 4  # web/timeline_logic.js layout()
DURATION = 2.125  # 17 frames at 8 fps
CAPTIONS = [{"text": "a red ring rolls in", "start": 0.0, "end": 1.0},
            {"text": "a yellow star spins", "start": 1.0, "end": 2.125}]


def captions_workflow(checkpoint: str = "shipped demo model") -> dict:
    """The demo workflow with a Timed Captions node (CLIP from the Demo Model) wired into the WeRoPE Conditioner."""
    nodes_ = [Node(n.id, n.type, n.pos, list(n.widgets), dict(n.links), n.size, n.title) for n in DEMO]
    nodes_[0].widgets = [checkpoint]
    nodes_[8].links["timed_captions"] = (CAPTIONS_NODE, 0)
    nodes_.append(Node(CAPTIONS_NODE, "AlcheMinTTimedCaptions", (640, 900),
                       [17, 8.0, json.dumps({"version": 1, "captions": CAPTIONS})], {"clip": (1, 2)},
                       size=(460, 340)))
    return ui_workflow(nodes_)


def write_dense_demo_model(path) -> None:
    """The shipped demo model with a dense-caption branch whose weights (zero-initialised output included) are
    random, so timed captions change what it predicts."""
    import torch
    from alchemint_core.demo.pipeline import MODEL_FILE
    from alchemint_core.model.loading import load_model, save_model
    from alchemint_core.model.transformer import WanModel
    shipped = load_model(MODEL_FILE)
    model = WanModel(shipped.cfg, replace(shipped.alchemint.cfg, dense_captions=True))
    missing, unexpected = model.load_state_dict(shipped.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("alchemint.dense.") for k in missing)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.alchemint.dense.named_parameters():
            p.copy_(1 + 0.05 * torch.randn(p.shape, generator=g) if "norm" in name
                    else 0.1 * torch.randn(p.shape, generator=g))
    save_model(model, path)


@pytest.fixture(scope="module", params=[name for name, _ in frontends()])
def server(request):
    root = dict(frontends())[request.param]
    with ComfyServer(frontend_root=root, model_files={"alchemint": [DENSE_MODEL]}) as s:
        write_dense_demo_model(s.base / "models" / "alchemint" / DENSE_MODEL)  # over the placeholder
        yield s


def bar_point(page, index: int, seconds: float) -> tuple[float, float]:
    """Client coordinates of time `seconds` on caption bar `index`."""
    x, y, w, h, cw, ch = page.evaluate(
        "id => { const c = app.graph.getNodeById(id).alchemintCaptions.canvas; const b = c.getBoundingClientRect(); "
        "return [b.x, b.y, b.width, b.height, c.clientWidth, c.clientHeight]; }", CAPTIONS_NODE)
    lx = PAD + seconds / DURATION * (cw - 2 * PAD)
    ly = PAD + RULER + index * (ROW + GAP) + ROW / 2
    return x + lx * w / cw, y + ly * h / ch


def captions_value(page) -> list[dict]:
    text = page.evaluate("id => app.graph.getNodeById(id).widgets.find(w => w.name === 'captions').value",
                         CAPTIONS_NODE)
    return json.loads(text)["captions"]


def field_texts(page) -> list[str]:
    return page.evaluate("id => app.graph.getNodeById(id).alchemintCaptions.rows.map(r => r.input.value)",
                         CAPTIONS_NODE)


def retype(page, index: int, text: str) -> None:
    """Click caption `index`'s text field, select all and type `text` with the keyboard."""
    page.locator(".alchemint-captions .alchemint-caption-text").nth(index).click()
    page.keyboard.press("Control+A")
    page.keyboard.type(text, delay=10)
    page.wait_for_timeout(300)


def run_prompt(server, prompt: dict) -> dict:
    status, body = server.post_prompt(prompt)
    assert status == 200, body
    return server.wait_history(body["prompt_id"], timeout=300)


@pytest.mark.parametrize("vue", [False, True], ids=["classic", "vue-nodes"])
def test_drag_type_add_remove_save_reload_and_run(server, tmp_path, vue):
    pw, ctx, page = open_page(server, tmp_path / "profile", vue_nodes=vue)
    try:
        load_workflow(page, captions_workflow())
        assert missing_node_types(page) == []
        focus_node(page, CAPTIONS_NODE)
        assert captions_value(page) == CAPTIONS and field_texts(page) == [c["text"] for c in CAPTIONS]
        # move the first caption by +0.5 s, then drag the second one's right end from 2.125 s to 1.5 s
        drag(page, bar_point(page, 0, 0.5), bar_point(page, 0, 1.0))
        drag(page, bar_point(page, 1, 2.11), bar_point(page, 1, 1.45))
        # type a new text for the second caption (Backspace inside the field edits the text, not the graph)
        retype(page, 1, "a yellow star spins fastx")
        page.keyboard.press("Backspace")
        page.wait_for_timeout(300)
        want = [{"text": "a red ring rolls in", "start": 0.5, "end": 1.5},
                {"text": "a yellow star spins fast", "start": 1, "end": 1.5}]
        assert captions_value(page) == want
        assert page.evaluate("id => !!app.graph.getNodeById(id)", CAPTIONS_NODE)
        # add a third caption (placed after the last one), type into it, then remove it
        page.locator(".alchemint-captions .alchemint-add-caption").click()
        page.wait_for_timeout(300)
        page.keyboard.type("gone soon", delay=10)  # the new field has the focus
        page.wait_for_timeout(300)
        assert captions_value(page) == want + [{"text": "gone soon", "start": 1.5, "end": 2.125}]
        page.locator(".alchemint-captions button", has_text="✕").nth(2).click()
        page.wait_for_timeout(300)
        assert captions_value(page) == want and field_texts(page) == [c["text"] for c in want]
        # the prompt and the saved workflow carry the captions; reloading brings the bars and texts back
        prompt = api_prompt(page)
        assert json.loads(prompt[str(CAPTIONS_NODE)]["inputs"]["captions"])["captions"] == want
        assert prompt["9"]["inputs"]["timed_captions"] == [str(CAPTIONS_NODE), 0]
        saved = page.evaluate("() => app.graph.serialize()")
        node = next(n for n in saved["nodes"] if n["id"] == CAPTIONS_NODE)
        assert node["widgets_values"][:2] == [17, 8] and json.loads(node["widgets_values"][2])["captions"] == want
        load_workflow(page, captions_workflow())
        assert captions_value(page) == CAPTIONS
        load_workflow(page, saved)
        assert captions_value(page) == want and field_texts(page) == [c["text"] for c in want]
        bars = page.evaluate("id => app.graph.getNodeById(id).alchemintCaptions.state.bars", CAPTIONS_NODE)
        assert [(b["start"], b["end"]) for b in bars] == [(0.5, 1.5), (1, 1.5)]
        # the shipped demo model has no dense-caption branch: one line that says so, naming the node and the fix
        page.evaluate("s => { const n = app.graph._nodes.find(n => n.type === 'AlcheMinTSampler'); "
                      "n.widgets.find(w => w.name === 'seed').value = s; "
                      "n.widgets.find(w => w.name === 'steps').value = 4; }", 31 if vue else 32)
        result = run_prompt(server, api_prompt(page))
        assert result["status"]["status_str"] == "error"
        error = next(m[1] for m in result["status"]["messages"] if m[0] == "execution_error")
        assert error["node_type"] == "AlcheMinTWeRoPEConditioner"
        assert error["exception_message"].strip() == (
            "WeRoPE Conditioner: timed_captions: this model has no dense-caption branch (it was trained without "
            "timed captions, as the shipped demo model was), so timed captions cannot reach it; use a model trained "
            "with dense_captions on, or disconnect the Timed Captions node")
        # a model with a dense branch runs the same graph and writes the video
        page.evaluate("m => { const n = app.graph._nodes.find(n => n.type === 'AlcheMinTDemoModel'); "
                      "n.widgets.find(w => w.name === 'checkpoint').value = m; }", DENSE_MODEL)
        result = run_prompt(server, api_prompt(page))
        assert result["status"]["status_str"] == "success", result["status"]
        videos = [f for o in result["outputs"].values() for f in o.get("images", []) if f["filename"].endswith(".mp4")]
        assert videos and (server.base / "output" / videos[0]["subfolder"] / videos[0]["filename"]).stat().st_size > 500
        assert page.errors == []
    finally:
        close_page(pw, ctx)


def test_the_captions_text_reaches_the_dense_model(server, tmp_path):
    """Same graph, seed and spans, two caption texts: the frames differ; the same text twice: identical frames."""
    import numpy as np
    from PIL import Image
    pw, ctx, page = open_page(server, tmp_path / "profile")
    try:
        load_workflow(page, captions_workflow(DENSE_MODEL))
        prompt = api_prompt(page)
    finally:
        close_page(pw, ctx)
    prompt["11"]["inputs"].update(steps=4, seed=41)
    prompt["17"] = {"class_type": "SaveImage", "inputs": {"images": ["12", 0], "filename_prefix": "frames"}}  # lossless

    def frames(texts):
        caps = [dict(c, text=t) for c, t in zip(CAPTIONS, texts)]
        prompt[str(CAPTIONS_NODE)]["inputs"]["captions"] = json.dumps({"version": 1, "captions": caps})
        result = run_prompt(server, json.loads(json.dumps(prompt)))
        assert result["status"]["status_str"] == "success", result["status"]
        return np.stack([np.asarray(Image.open(server.base / "output" / f["subfolder"] / f["filename"]))
                         for f in result["outputs"]["17"]["images"]])

    a = frames([c["text"] for c in CAPTIONS])
    b = frames(["a blue disc", "a green square"])
    assert a.shape == (17, 64, 64, 3) and not np.array_equal(a, b)
    assert np.array_equal(a, frames([c["text"] for c in CAPTIONS]))


def test_server_rejects_captions_outside_the_clip_with_the_fix(server):
    prompt = {"1": {"class_type": "AlcheMinTDemoModel", "inputs": {"checkpoint": "shipped demo model"}},
              "2": {"class_type": "AlcheMinTTimedCaptions", "inputs": {
                  "clip": ["1", 2], "frames": 17, "fps": 8.0,
                  "captions": json.dumps({"version": 1, "captions": [{"text": "late", "start": 1.0, "end": 3.0}]})}},
              "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}
    status, body = server.post_prompt(prompt)
    assert status == 400
    assert ("Timed Captions: captions: timed caption 1 ('late'): [1, 3] s lies outside the clip [0, 2.125] s "
            "(17 frames at 8 fps); drag it inside") in json.dumps(body), body


def test_hostile_caption_text_stays_text(server, tmp_path):
    """Security: caption text holding markup or script is shown as text in the bars and fields; nothing runs, nothing
    is injected into the page, no prototype is polluted."""
    hostile = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
    pw, ctx, page = open_page(server, tmp_path / "profile")
    try:
        load_workflow(page, captions_workflow())
        value = json.dumps({"version": 1, "captions": [{"text": hostile, "start": 0, "end": 1}]})
        value = value[:-1] + ', "__proto__": {"polluted": 1}}'
        page.evaluate("([id, v]) => { const n = app.graph.getNodeById(id); "
                      "n.widgets.find(w => w.name === 'captions').value = v; n.alchemintCaptions.sync(true); }",
                      [CAPTIONS_NODE, value])
        page.wait_for_timeout(500)
        assert field_texts(page) == [hostile]
        assert page.evaluate("() => [window.__pwned ?? null, ({}).polluted ?? null, "
                             "document.querySelectorAll('img[src=\"x\"]').length, "
                             "document.querySelectorAll('.alchemint-captions script').length]") == [None, None, 0, 0]
        assert page.errors == []
    finally:
        close_page(pw, ctx)
