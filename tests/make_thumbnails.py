"""Makes workflows/<name>.jpg from each example workflow's real output in a real ComfyUI (COMFYUI_DIR).

    COMFYUI_DIR=... COMFYUI_PYTHON=... python tests/make_thumbnails.py      # --wan-only: just the Wan plot
                                                                             # --only NAME: just that workflow

The Wan workflows cannot run without Wan's weights, so each one's thumbnail is the attention plot the conditioning
draws for its timeline (computed with that model's RoPE bank: Wan 2.1 1.3B, or Wan 2.2 A14B's experts)."""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from comfyui_harness import ComfyServer, api_prompt, close_page, load_workflow, open_page  # noqa: E402
from workflow_builder import WAN_TIMELINE, WORKFLOWS  # noqa: E402

SIZE = (768, 576)


def output_file(server: ComfyServer, item: dict) -> Path:
    return server.base / item.get("type", "output") / item.get("subfolder", "") / item["filename"]


def frames_of(path: Path) -> list[Image.Image]:
    with av.open(str(path)) as f:
        return [frame.to_image() for frame in f.decode(video=0)]


def strip(frames: list[Image.Image], width: int, count: int = 9) -> Image.Image:
    picks = [frames[round(i * (len(frames) - 1) / (count - 1))] for i in range(count)]
    side = width // count
    out = Image.new("RGB", (side * count, side), "black")
    for i, f in enumerate(picks):
        out.paste(f.convert("RGB").resize((side, side), Image.NEAREST), (i * side, 0))
    return out


def compose(top: Image.Image, bottom: Image.Image | None, caption: str) -> Image.Image:
    canvas = Image.new("RGB", SIZE, (24, 24, 24))
    canvas.paste(top, ((SIZE[0] - top.width) // 2, 30))
    if bottom is not None:
        b = bottom.copy()
        b.thumbnail((SIZE[0], SIZE[1] - top.height - 50))
        canvas.paste(b, ((SIZE[0] - b.width) // 2, top.height + 40))
    ImageDraw.Draw(canvas).text((10, 8), caption, fill="white")
    return canvas


def run(server: ComfyServer, prompt: dict) -> dict:
    status, body = server.post_prompt(prompt)
    if status != 200:
        raise RuntimeError(body)
    result = server.wait_history(body["prompt_id"], timeout=900)
    if result["status"]["status_str"] != "success":
        raise RuntimeError(result["status"])
    return result["outputs"]


def wan_plot(config_name: str = "WAN21_1_3B") -> Image.Image:
    import torch

    from alchemint_core import config as configs
    from alchemint_core.model.config import AdapterConfig
    from alchemint_core.model.transformer import WanModel
    from alchemint_core.sampling.plotting import attention_profile_plot
    from alchemint_core.sampling.timeline import latent_intervals, parse_timeline
    with torch.device("meta"):
        model = WanModel(getattr(configs, config_name), AdapterConfig())
    bars = parse_timeline(WAN_TIMELINE)
    return attention_profile_plot(model.bank, model.alchemint.temporal_rope, [b.tag for b in bars],
                                  [(b.start, b.end) for b in bars], latent_intervals(bars, 81, 16.0, 0.5), 81, 16.0,
                                  size=(720, 420))


# Workflows that need Wan's weights: (name, model config, caption over its attention plot).
WAN_THUMBNAILS = (
    ("alchemint_wan21_1.3B_two_subjects", "WAN21_1_3B",
     "Wan 2.1 1.3B, two subjects: attention each subject gets over time"),
    ("alchemint_wan21_1.3B_native", "WAN21_1_3B",
     "Wan 2.1 1.3B on ComfyUI's MODEL: attention each subject gets over time"),
    ("alchemint_wan22_A14B_two_experts", "WAN22_A14B",
     "Wan 2.2 A14B, both experts: attention each subject gets over time"),
)

RUNNABLE = ("alchemint_demo_cpu", "alchemint_timing_evaluation", "alchemint_train_demo_model",
            "alchemint_build_dataset")


def main(only_wan: bool = False, only: tuple[str, ...] = RUNNABLE) -> None:
    if not only_wan:
        run_workflows(only)
    for name, config, caption in WAN_THUMBNAILS:
        compose(Image.new("RGB", (1, 1)), wan_plot(config), caption).save(WORKFLOWS / f"{name}.jpg", quality=88)
    for p in sorted(WORKFLOWS.glob("*.jpg")):
        print(p, Image.open(p).size)


def run_workflows(names: tuple[str, ...]) -> None:
    with ComfyServer() as server, tempfile.TemporaryDirectory() as profile:
        pw, ctx, page = open_page(server, Path(profile))
        prompts = {}
        for name in names:
            load_workflow(page, json.loads((WORKFLOWS / f"{name}.json").read_text()))
            prompts[name] = api_prompt(page)
        close_page(pw, ctx)

        if "alchemint_demo_cpu" in prompts:
            out = run(server, prompts["alchemint_demo_cpu"])
            video = output_file(server, out["14"]["images"][0])
            plot = Image.open(output_file(server, out["15"]["images"][0]))
            compose(strip(frames_of(video), SIZE[0]), plot, "AlcheMinT demo (CPU): red ring 0-1 s, yellow star "
                    "1-2.1 s").save(WORKFLOWS / "alchemint_demo_cpu.jpg", quality=88)

        if "alchemint_timing_evaluation" in prompts:
            out = run(server, prompts["alchemint_timing_evaluation"])
            frames = [Image.open(output_file(server, i)) for i in out["16"]["images"]]
            report = json.loads("".join(out["15"]["text"]))
            compose(strip(frames, SIZE[0]), None, f"timing evaluation: t-IOU {report['t_iou']:.2f}, "
                    f"t-L2 {report['t_l2']:.2f}").save(WORKFLOWS / "alchemint_timing_evaluation.jpg", quality=88)

        if "alchemint_train_demo_model" in prompts:
            out = run(server, prompts["alchemint_train_demo_model"])
            loss = Image.open(output_file(server, out["4"]["images"][0]))
            compose(Image.new("RGB", (1, 1)), loss, "training a demo-size model: loss") \
                .save(WORKFLOWS / "alchemint_train_demo_model.jpg", quality=88)

        if "alchemint_build_dataset" in prompts:
            out = run(server, prompts["alchemint_build_dataset"])
            first, second = (Image.open(output_file(server, out[k]["images"][0])) for k in ("5", "10"))
            both = Image.new("RGB", (max(first.width, second.width), first.height + second.height + 8), (24, 24, 24))
            both.paste(first, (0, 0))
            both.paste(second, (0, first.height + 8))
            compose(Image.new("RGB", (1, 1)), both, "building a dataset: two videos, their subjects' mask tracks "
                    "and intervals, then the cache").save(WORKFLOWS / "alchemint_build_dataset.jpg", quality=88)


if __name__ == "__main__":
    picked = tuple(sys.argv[sys.argv.index("--only") + 1:]) if "--only" in sys.argv else RUNNABLE
    main(only_wan="--wan-only" in sys.argv, only=picked)
