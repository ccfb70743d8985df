"""A model that a running ComfyUI generates with, for the benchmark runner: Wan + AlcheMinT adapter through the pack's
own nodes (Wan's VAE and text encoder live in ComfyUI, not here), the demo model the same way, or Wan alone with the
timing written into the caption (the paper's prompt-only baseline, ComfyUI's native KSampler graph).

The model is described by a small TOML file (`--model NAME=comfyui:SPEC.toml`, docs/scoring.md):

    server = "http://127.0.0.1:8188"
    model = "wan"                                        # or "demo"
    diffusion_model = "wan2.1_t2v_1.3B_fp16.safetensors"  # names as ComfyUI lists them in its model folders
    adapter = "alchemint_wan21_1.3B.safetensors"
    text_encoder = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
    vae = "wan_2.1_vae.safetensors"
    width = 832
    height = 480

One API-format graph per benchmark item (`item_graph`), checked against the server's /object_info before anything
runs (`graph_problems`)."""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import tomllib

from ..data.dataset import DatasetError
from ..sampling.guidance import Guidance

KINDS = ("wan", "demo")
SHIPPED = "shipped demo model"  # the Demo Model node's own checkpoint choice
NO_ADAPTER = "none"
TRANSPARENT = "transparent area (Load Image)"  # Reference Loader: the PNG's alpha is the subject
OUTPUT_NODE = "out"  # PreviewImage: lossless PNGs in ComfyUI's temp folder, nothing left in the user's output


@dataclass(frozen=True)
class ComfyUIModel:
    path: Path
    server: str = "http://127.0.0.1:8188"
    model: str = "wan"
    checkpoint: str = SHIPPED  # demo
    diffusion_model: str = ""  # wan: models/diffusion_models
    adapter: str = NO_ADAPTER  # wan: models/alchemint
    text_encoder: str = ""  # wan: models/text_encoders, loaded as type "wan"
    vae: str = ""  # wan: models/vae
    dtype: str = "default"
    width: int = 0  # 0: 832 for Wan, 64 for the demo
    height: int = 0
    negative: str = ""
    max_refs: int = 0  # the subjects the adapter takes; 0: 4 (the paper's), or the demo model's own
    steps: int = 0  # 0: the command's --steps; likewise shift and the scales
    shift: float = 0.0
    reference_scale: float = 0.0
    text_scale: float = 0.0
    timeout: float = 3600.0  # seconds per video

    @property
    def size(self) -> tuple[int, int]:
        default = 832 if self.model == "wan" else 64, 480 if self.model == "wan" else 64
        return self.width or default[0], self.height or default[1]

    def sampling(self, steps: int, shift: float, guidance: Guidance) -> tuple[int, float, Guidance]:
        """The command's sampling settings, with what this file sets instead."""
        return (self.steps or steps, self.shift or shift,
                Guidance(self.reference_scale or guidance.ref_scale, self.text_scale or guidance.text_scale,
                         guidance.joint_scale))

    def record(self) -> dict:
        """What the videos depend on (a rerun keeps them only when this is unchanged); the server is not part of it."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("path", "server", "timeout")}


def load_spec(path: str | Path) -> ComfyUIModel:
    """The TOML file of a ComfyUI model, every key checked (one line naming the file, the key and the fix)."""
    path = Path(path)
    where = f"--model comfyui:{path}"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{where}: no such file; write one as docs/scoring.md shows (server, model, the file "
                           f"names ComfyUI lists)") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise DatasetError(f"{where}: not a readable TOML file ({err}); fix it as docs/scoring.md shows") from None
    known = {f.name: f for f in fields(ComfyUIModel) if f.name != "path"}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise DatasetError(f"{where}: unknown keys {unknown}; the keys are {', '.join(known)}")
    for key, value in data.items():
        want = known[key].type
        ok = {"str": isinstance(value, str), "int": isinstance(value, int) and not isinstance(value, bool),
              "float": isinstance(value, (int, float)) and not isinstance(value, bool)}[want]
        if not ok or (want != "str" and value < 0):
            raise DatasetError(f"{where}: {key} = {value!r} must be a {'non-negative ' if want != 'str' else ''}"
                               f"{ {'str': 'string', 'int': 'whole number', 'float': 'number'}[want]}")
    spec = ComfyUIModel(path, **data)
    if spec.model not in KINDS:
        raise DatasetError(f"{where}: model = {spec.model!r} must be one of {KINDS}")
    if not spec.server.startswith(("http://", "https://")):
        raise DatasetError(f"{where}: server = {spec.server!r} must be a URL like http://127.0.0.1:8188")
    if spec.model == "wan":
        missing = [k for k in ("diffusion_model", "text_encoder", "vae") if not getattr(spec, k)]
        if missing:
            raise DatasetError(f"{where}: model = \"wan\" needs {', '.join(missing)}: the file names as ComfyUI "
                               f"lists them (models/diffusion_models, models/text_encoders, models/vae)")
    w, h = spec.size
    if w % 16 or h % 16 or not (16 <= w <= 4096 and 16 <= h <= 4096):
        raise DatasetError(f"{where}: width {w} x height {h} must be multiples of 16 between 16 and 4096")
    if spec.timeout <= 0:
        raise DatasetError(f"{where}: timeout must be a positive number of seconds")
    return spec


@dataclass(frozen=True)
class GraphSubject:
    tag: str
    start: float
    end: float
    image: str  # the uploaded reference's name in ComfyUI's input folder (LoadImage's value)


def item_graph(spec: ComfyUIModel, caption: str, subjects: list[GraphSubject], frames: int, fps: float, seed: int,
               steps: int, shift: float, guidance: Guidance, prompt_only: bool = False) -> dict:
    """The API-format prompt that makes one video: the pack's nodes (as the example workflows wire them), or for the
    prompt-only baseline Wan alone through ComfyUI's KSampler. Its PreviewImage node is OUTPUT_NODE."""
    w, h = spec.size
    if prompt_only:
        if spec.model != "wan":
            raise DatasetError(f"--model comfyui:{spec.path}: the prompt-only baseline runs Wan alone; for the demo "
                               f"model use --model demo --prompt-only (in-process)")
        return {
            "unet": node("UNETLoader", unet_name=spec.diffusion_model, weight_dtype="default"),
            "shifted": node("ModelSamplingSD3", model=["unet", 0], shift=shift),
            "clip": node("CLIPLoader", clip_name=spec.text_encoder, type="wan"),
            "vae": node("VAELoader", vae_name=spec.vae),
            "positive": node("CLIPTextEncode", text=caption, clip=["clip", 0]),
            "negative": node("CLIPTextEncode", text=spec.negative, clip=["clip", 0]),
            "empty": node("EmptyHunyuanLatentVideo", width=w, height=h, length=frames, batch_size=1),
            "sample": node("KSampler", model=["shifted", 0], seed=seed, steps=steps, cfg=guidance.text_scale,
                           sampler_name="euler", scheduler="simple", positive=["positive", 0],
                           negative=["negative", 0], latent_image=["empty", 0], denoise=1.0),
            "decode": node("VAEDecode", samples=["sample", 0], vae=["vae", 0]),
            OUTPUT_NODE: node("PreviewImage", images=["decode", 0]),
        }
    if spec.model == "demo":
        graph = {"model": node("AlcheMinTDemoModel", checkpoint=spec.checkpoint)}
        vae, clip = ["model", 1], ["model", 2]
    else:
        graph = {"model": node("AlcheMinTModelLoader", base=spec.diffusion_model, adapter=spec.adapter,
                               dtype=spec.dtype, offload_blocks=False),
                 "clip": node("CLIPLoader", clip_name=spec.text_encoder, type="wan"),
                 "vae": node("VAELoader", vae_name=spec.vae)}
        vae, clip = ["vae", 0], ["clip", 0]
    chain = None
    for i, s in enumerate(subjects):
        graph[f"image{i}"] = node("LoadImage", image=s.image)
        graph[f"ref{i}"] = node("AlcheMinTReferenceLoader", image=[f"image{i}", 0], mask=[f"image{i}", 1], tag=s.tag,
                                mask_means=TRANSPARENT, vae=vae, clip=clip, **({"references": chain} if chain else {}))
        chain = [f"ref{i}", 0]
    bars = {"version": 1, "subjects": [{"tag": s.tag, "start": s.start, "end": s.end} for s in subjects]}
    graph.update({
        "timeline": node("AlcheMinTIntervalTimeline", references=chain, frames=frames, fps=fps,
                         timeline=json.dumps(bars)),
        "positive": node("CLIPTextEncode", text=caption, clip=clip),
        "negative": node("CLIPTextEncode", text=spec.negative, clip=clip),
        "condition": node("AlcheMinTWeRoPEConditioner", model=["model", 0], timeline=["timeline", 0],
                          positive=["positive", 0], mode="as trained", w_mid=1.0, w_edge=-0.4, edge_offset=0.0),
        "guider": node("AlcheMinTMultiCFGGuider", negative=["negative", 0], reference_scale=guidance.ref_scale,
                       text_scale=guidance.text_scale, joint_scale=guidance.joint_scale or 0.0,
                       four_pass=guidance.joint_scale is not None),
        "sample": node("AlcheMinTSampler", model=["model", 0], conditioning=["condition", 0], guider=["guider", 0],
                       width=w, height=h, steps=steps, shift=shift, seed=seed),
        "decode": node("VAEDecode", samples=["sample", 0], vae=vae),
        OUTPUT_NODE: node("PreviewImage", images=["decode", 0]),
    })
    return graph


def node(class_type: str, **inputs) -> dict:
    return {"class_type": class_type, "inputs": inputs}


PATH_CHECKED = {("LoadImage", "image")}  # validated by the node itself (uploads may sit in subfolders)


def graph_problems(graph: dict, object_info: dict) -> list[str]:
    """What the server would refuse, found before anything runs: node types it does not have (a pack not installed),
    inputs it does not know, required inputs left out, and choices not in its lists (a model file it cannot see)."""
    problems = []
    for nid, n in graph.items():
        cls, inputs = n["class_type"], n["inputs"]
        info = object_info.get(cls)
        if info is None:
            where = "the AlcheMinT pack is not installed there" if cls.startswith("AlcheMinT") else \
                "that ComfyUI is too old or lacks the node"
            problems.append(f"node {cls} is unknown to the server ({where})")
            continue
        declared = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        for name in set(info["input"].get("required", {})) - set(inputs):
            problems.append(f"{cls}: required input {name!r} not given")
        for name, value in inputs.items():
            if name not in declared:
                problems.append(f"{cls}: input {name!r} is unknown to the server")
                continue
            options = declared[name][0]
            if options == "COMBO":  # the newer node API's spelling of a list of choices
                options = (declared[name][1] if len(declared[name]) > 1 else {}).get("options", [])
            if isinstance(options, list) and not isinstance(value, list) and (cls, name) not in PATH_CHECKED \
                    and value not in options:
                shown = ", ".join(map(str, options[:8])) + (" ..." if len(options) > 8 else "")
                problems.append(f"{cls}: {name} {value!r} is not among the server's choices ({shown or 'none'})")
    return problems
