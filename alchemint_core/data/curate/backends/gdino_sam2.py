"""The paper's own models (section 3.3, appendix I): Grounding DINO finds a tag's boxes in a frame, CLIP scores a box's
crop against the tag, and SAM 2 video tracks the chosen box forward to the end of the video and backward to frame 0.
All three load through transformers from their folders under `--models` (backends/models.py); nothing is downloaded.

Grounding DINO and CLIP run through their own processors. SAM 2's processors are torchvision-only (and PyPI's
torchvision does not load beside a CPU-only torch), so its frames are prepared here the way its video processor does
(a square resize to the model's input size, [0, 1], the folder's mean and std), the box is given to the inference
session as the processor gives it (two corner points in model-input coordinates), and the low-resolution logits are
resized back to the frame as its post-processing does."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ....scoring.identity import ClipEmbedder
from ...dataset import DatasetError
from ..stages import Box
from .models import MODEL_FOLDERS, model_folder
from .sam_video import default_device, frame_mask, prompt_box, video_session

BOX_THRESHOLD = 0.35  # Grounding DINO's usual box and text thresholds (the paper gives none)
TEXT_THRESHOLD = 0.25
TRACK_ID = 1  # the one object of a tracking session
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # SAM 2's processor defaults


def prompt(tag: str) -> str:
    """Grounding DINO's text: lower case, one phrase ending in '.'."""
    return tag.lower().strip().rstrip(".").strip() + "."


def inside(box, height: int, width: int) -> Box:
    """The box clipped to the frame."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return min(max(x0, 0.0), width), min(max(y0, 0.0), height), min(max(x1, 0.0), width), min(max(y1, 0.0), height)


def crop(frame: np.ndarray, box: Box) -> np.ndarray:
    """The box's pixels, at least one pixel even for a degenerate box."""
    h, w = frame.shape[:2]
    x0, y0 = min(int(np.floor(box[0])), w - 1), min(int(np.floor(box[1])), h - 1)
    x1, y1 = max(int(np.ceil(box[2])), x0 + 1), max(int(np.ceil(box[3])), y0 + 1)
    return frame[max(y0, 0):y1, max(x0, 0):x1]


class GroundingDinoSam2Backend:
    def __init__(self, detector, detector_processor, clip: ClipEmbedder, tracker, tracker_mean=IMAGENET_MEAN,
                 tracker_std=IMAGENET_STD, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
                 box_threshold: float = BOX_THRESHOLD, text_threshold: float = TEXT_THRESHOLD):
        self.device, self.dtype = torch.device(device) if device else default_device(), dtype
        self.detector, self.tracker = (m.to(self.device, dtype).eval() for m in (detector, tracker))
        self.detector_processor, self.clip = detector_processor, clip
        self.mean, self.std = (torch.tensor(v, dtype=torch.float32)[:, None, None] for v in (tracker_mean, tracker_std))
        self.size = tracker.config.image_size  # SAM 2's square input
        self.box_threshold, self.text_threshold = box_threshold, text_threshold

    @classmethod
    def from_folder(cls, models: Path | None, device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.float32, box_threshold: float = BOX_THRESHOLD,
                    text_threshold: float = TEXT_THRESHOLD) -> "GroundingDinoSam2Backend":
        """The three models from `models`/grounding-dino, clip and sam2 (checked first, one line naming what is
        missing)."""
        folders = {key: model_folder(models, key) for key in ("grounding-dino", "clip", "sam2")}
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor, CLIPModel, Sam2VideoModel
        from transformers.image_processing_base import ImageProcessingMixin

        def load(key, loader, **kwargs):
            try:  # local files only: a folder missing a file fails here instead of asking the hub
                return loader(folders[key], local_files_only=True, **kwargs)
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise DatasetError(f"--models {models}: {folders[key]} could not be loaded "
                                   f"({str(err).splitlines()[0][:200]}); {MODEL_FOLDERS[key].hint()}") from None

        weights = {"use_safetensors": True}
        detector = load("grounding-dino", AutoModelForZeroShotObjectDetection.from_pretrained, **weights)
        detector_processor = load("grounding-dino", AutoProcessor.from_pretrained)
        clip = load("clip", CLIPModel.from_pretrained, **weights)
        clip_processor = load("clip", AutoProcessor.from_pretrained)
        tracker = load("sam2", Sam2VideoModel.from_pretrained, **weights)
        norm = load("sam2", ImageProcessingMixin.get_image_processor_dict)[0]  # {} when the folder states none
        return cls(detector, detector_processor, ClipEmbedder(clip, clip_processor, device, dtype), tracker,
                   norm.get("image_mean", IMAGENET_MEAN), norm.get("image_std", IMAGENET_STD), device, dtype,
                   box_threshold, text_threshold)

    def on_device(self, batch) -> dict:
        """A processor's output on the models' device, its floating tensors in their dtype."""
        def move(v):
            if not torch.is_tensor(v):
                return v
            return v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device)
        return {k: move(v) for k, v in batch.items()}

    @torch.inference_mode()
    def detect(self, frame: np.ndarray, tag: str) -> list[tuple[Box, float]]:
        batch = self.detector_processor(images=Image.fromarray(frame), text=prompt(tag), return_tensors="pt")
        inputs = self.on_device(batch)
        out = self.detector(**inputs)
        h, w = frame.shape[:2]
        found = self.detector_processor.post_process_grounded_object_detection(
            out, inputs["input_ids"], threshold=self.box_threshold, text_threshold=self.text_threshold,
            target_sizes=[(h, w)])[0]
        boxes = [(inside(b.tolist(), h, w), float(s)) for b, s in zip(found["boxes"].float(), found["scores"])]
        return [(b, s) for b, s in boxes if b[2] > b[0] and b[3] > b[1]]  # a box clipped to nothing is no box

    @torch.inference_mode()
    def similarity(self, frame: np.ndarray, box: Box, tag: str) -> float:
        """CLIP's cosine similarity between the box's crop and the tag (the scorer's CLIP-T on one crop)."""
        return float(self.clip.images([crop(frame, box)])[0] @ self.clip.texts([tag])[0])

    @torch.inference_mode()
    def track(self, frames: np.ndarray, index: int, box: Box) -> np.ndarray:
        """SAM 2 video with the box as prompt at frame `index`, propagated forward to the last frame and backward to
        frame 0: bool masks [N, H, W] at the frames' size."""
        n, h, w = frames.shape[:3]
        from transformers import Sam2VideoInferenceSession
        session = video_session(Sam2VideoInferenceSession, frames, self.size, self.mean, self.std, self.device,
                                self.dtype)
        prompt_box(session, TRACK_ID, index, box, self.size)
        masks = np.zeros((n, h, w), bool)
        for reverse in (False, True):  # the prompt frame's output is computed once and reused by the backward pass
            for out in self.tracker.propagate_in_video_iterator(session, start_frame_idx=index, reverse=reverse):
                masks[out.frame_idx] = frame_mask(out.pred_masks, h, w)
        return masks

