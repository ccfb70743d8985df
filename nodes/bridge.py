"""What the nodes take from ComfyUI, imported lazily so the nodes import and run without it (tests, scripts).

Without ComfyUI: model folders come from `SEARCH_PATHS` (tests point them at temporary folders), progress and
interruption are no-ops and everything runs on the CPU.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

MODEL_FOLDER = "alchemint"  # models/alchemint: adapters, demo checkpoints, trained outputs
EXTENSIONS = {".safetensors"}
# Used only when ComfyUI's folder_paths is not importable.
SEARCH_PATHS: dict[str, list[Path]] = {"diffusion_models": [Path("models/diffusion_models")],
                                       MODEL_FOLDER: [Path("models") / MODEL_FOLDER], "output": [Path("output")]}


def folder_paths() -> Any | None:
    try:
        import folder_paths as fp
    except ImportError:
        return None
    return fp


def register_model_folder() -> None:
    """Register models/alchemint with ComfyUI (extra_model_paths.yaml entries named 'alchemint' add to it)."""
    fp = folder_paths()
    if fp is None:
        return
    default = os.path.join(fp.models_dir, MODEL_FOLDER)
    os.makedirs(default, exist_ok=True)
    if MODEL_FOLDER in fp.folder_names_and_paths:
        paths, exts = fp.folder_names_and_paths[MODEL_FOLDER]
        if default not in paths:
            paths.append(default)
        fp.folder_names_and_paths[MODEL_FOLDER] = (paths, set(exts) | EXTENSIONS)
    else:
        fp.folder_names_and_paths[MODEL_FOLDER] = ([default], set(EXTENSIONS))


def folders(kind: str) -> list[Path]:
    fp = folder_paths()
    if fp is not None:
        return [Path(p) for p in fp.get_folder_paths(kind)]
    return list(SEARCH_PATHS.get(kind, []))


def list_files(kind: str) -> list[str]:
    """Model files of a folder kind, as names relative to their folder (what a COMBO shows)."""
    fp = folder_paths()
    if fp is not None:
        return sorted(f for f in fp.get_filename_list(kind) if Path(f).suffix in EXTENSIONS)
    out = set()
    for root in folders(kind):
        if root.is_dir():
            out.update(p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix in EXTENSIONS)
    return sorted(out)


def relative_name(name: str, what: str, where: str) -> Path:
    """A name from a workflow as a path that stays inside its folder: no absolute paths, drives or '..'. The
    check is on the name itself, so files the user linked into a folder (symlinks) still work."""
    if not isinstance(name, str) or not name.strip() or "\0" in name:
        raise ValueError(f"{what}: nothing chosen; pick a name from {where}")
    rel = Path(name)
    if rel.is_absolute() or rel.drive or ".." in rel.parts:
        raise ValueError(f"{what}: '{name[:100]}' is not a file name inside {where}; pick one from the list")
    return rel


def resolve(kind: str, name: str, what: str) -> Path:
    """The file `name` inside one of the `kind` model folders; names that leave the folder are refused."""
    rel = relative_name(name, what, f"models/{kind}")
    for root in folders(kind):
        if (root / rel).is_file():
            return root / rel
    raise ValueError(f"{what}: '{name}' is not in models/{kind} ({', '.join(str(f) for f in folders(kind))}); "
                     "put the file there and refresh")


def output_folder(kind: str) -> Path:
    """Where trained files go: the first models/<kind> folder."""
    paths = folders(kind)
    if not paths:
        raise ValueError(f"no models/{kind} folder is configured")
    paths[0].mkdir(parents=True, exist_ok=True)
    return paths[0]


def device() -> Any:
    import torch
    try:
        import comfy.model_management as mm
    except ImportError:
        return torch.device("cpu")
    return mm.get_torch_device()


def check_interrupted() -> None:
    """Raise ComfyUI's interruption exception if the user pressed Cancel; nothing without ComfyUI."""
    try:
        import comfy.model_management as mm
    except ImportError:
        return
    mm.throw_exception_if_processing_interrupted()


def interrupted() -> bool:
    try:
        import comfy.model_management as mm
    except ImportError:
        return False
    return bool(mm.processing_interrupted())


class Progress:
    """comfy.utils.ProgressBar when ComfyUI is there (with an optional preview image), else nothing."""

    def __init__(self, total: int):
        try:
            import comfy.utils
            self.bar = comfy.utils.ProgressBar(total)
        except ImportError:
            self.bar = None
        self.total = total

    def update(self, value: int, preview=None) -> None:
        if self.bar is not None:
            self.bar.update_absolute(value, self.total, ("JPEG", preview, 768) if preview is not None else None)


def load_on_device(handle: Any) -> Any:
    """Hand the model to ComfyUI's model management (a ModelPatcher made once per model), which moves it to the
    GPU now and can unload it again whenever ComfyUI needs the memory. Returns the device to sample on."""
    import torch
    try:
        import comfy.model_management as mm
        import comfy.model_patcher
    except ImportError:
        mm = None
    if mm is not None:
        dev = mm.get_torch_device()
    else:
        dev = next(handle.model.parameters()).device if any(True for _ in handle.model.parameters()) \
            else torch.device("cpu")
    if handle.offload:  # blocks visit the device one at a time; ComfyUI manages only what stays there
        if getattr(handle, "offloader", None) is None:
            handle.offloader = handle.model.offload_blocks(dev)
        return dev
    if mm is None:
        return dev
    if getattr(handle, "patcher", None) is None:
        handle.patcher = comfy.model_patcher.ModelPatcher(handle.model, load_device=mm.get_torch_device(),
                                                          offload_device=mm.unet_offload_device())
    mm.load_models_gpu([handle.patcher])
    return mm.get_torch_device()


DEMO_DATASET = "alchemint_demo_dataset"
DEMO_DATASET_SAMPLES = 24


def install_example_inputs(source: Path) -> list[Path]:
    """What the example workflows read from ComfyUI's input folder, added once if missing: the reference images
    (copied), two demo videos for the dataset-building workflow and a small synthetic training set for the training
    workflow (generated, ~2 s)."""
    fp = folder_paths()
    if fp is None or not source.is_dir():
        return []
    target = Path(fp.get_input_directory())
    dataset = target / DEMO_DATASET
    if not (dataset / "done").exists():
        from alchemint_core.demo.data import write_demo_dataset
        write_demo_dataset(dataset, DEMO_DATASET_SAMPLES, seed=99)  # resumable: completes a partial folder
        (dataset / "done").write_text("")
    from alchemint_core.demo.data import write_example_videos
    copied = write_example_videos(target)  # the dataset-building workflow's videos
    for src in sorted(source.glob("*.png")):
        dst = target / src.name
        if not dst.exists():
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            copied.append(dst)
    return copied
