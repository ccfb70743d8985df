"""The model folders of the curation backends: which subfolder of `--models` holds which public checkpoint (in the
transformers format, downloaded by the user beforehand: nothing is downloaded at run time), and the one-line error
when a folder is missing or holds something else."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ...dataset import DatasetError


@dataclass(frozen=True)
class ModelFolder:
    name: str  # the subfolder of --models
    checkpoint: str  # the public checkpoint that belongs there (Hugging Face id)
    model_types: tuple[str, ...]  # config.json "model_type" values accepted; empty: any
    role: str

    def hint(self) -> str:
        """What belongs in the folder and how to get it."""
        return (f"put the {self.checkpoint} checkpoint ({self.role}; transformers format, e.g. `hf download "
                f"{self.checkpoint} --local-dir <models>/{self.name}`) there")


MODEL_FOLDERS = {
    "sam3": ModelFolder("sam3", "facebook/sam3", ("sam3_video",), "SAM 3 video: text to instance mask tracks"),
    "grounding-dino": ModelFolder("grounding-dino", "IDEA-Research/grounding-dino-tiny", ("grounding-dino",),
                                  "Grounding DINO: text to boxes"),
    "clip": ModelFolder("clip", "openai/clip-vit-large-patch14", ("clip",), "CLIP: box crop against the tag"),
    "sam2": ModelFolder("sam2", "facebook/sam2.1-hiera-large", ("sam2_video",), "SAM 2 video: box to mask track"),
    "tagger": ModelFolder("tagger", "Qwen/Qwen2.5-7B-Instruct", (),
                          "an instruction-tuned language model that extracts the entity tags from the captions"),
}


def require_transformers(what: str) -> None:
    """One line instead of an ImportError when the optional install is missing."""
    import importlib.util
    if importlib.util.find_spec("transformers") is None:
        raise DatasetError(f"{what} needs transformers, an optional install: pip install -r requirements-curate.txt")


def model_folder(models: Path | None, key: str, option: str = "--models") -> Path:
    """The checked folder of MODEL_FOLDERS[key] under `models`, or one line naming the folder and what belongs
    there."""
    spec = MODEL_FOLDERS[key]
    fix = spec.hint()
    if models is None:
        raise DatasetError(f"{option} is needed: a folder with a subfolder {spec.name}/; {fix}")
    folder = Path(models) / spec.name
    config = folder / "config.json"
    if not config.is_file():
        raise DatasetError(f"{option} {models}: no {folder}/config.json; {fix}")
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise DatasetError(f"{option} {models}: {config} is not a JSON model config; {fix}") from None
    if spec.model_types and model_type not in spec.model_types:
        raise DatasetError(f"{option} {models}: {folder} holds a '{model_type}' model, not "
                           f"{' or '.join(spec.model_types)}; {fix}")
    return folder
