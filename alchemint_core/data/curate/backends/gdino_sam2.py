"""The paper's own models (section 3.3, appendix I): Grounding DINO finds a tag's boxes in a frame, CLIP scores a box's
crop against the tag, and SAM 2 video tracks the chosen box forward to the end of the video and backward to its
first frame. All three load through transformers from their folders under `--models` (backends/models.py); nothing is
downloaded."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ...dataset import DatasetError
from ..stages import Box
from .models import MODEL_FOLDERS, model_folder

BOX_THRESHOLD = 0.35  # Grounding DINO's usual box and text thresholds (the paper gives none)
TEXT_THRESHOLD = 0.25
TRACK_ID = 1  # the one object of a tracking session


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


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class GroundingDinoSam2Backend:
    def __init__(self, detector, detector_processor, clip, clip_processor, tracker, tracker_processor,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
                 box_threshold: float = BOX_THRESHOLD, text_threshold: float = TEXT_THRESHOLD):
        self.device, self.dtype = torch.device(device) if device else default_device(), dtype
        self.detector, self.clip, self.tracker = (m.to(self.device, dtype).eval() for m in (detector, clip, tracker))
        self.detector_processor, self.clip_processor = detector_processor, clip_processor
        self.tracker_processor = tracker_processor
        self.box_threshold, self.text_threshold = box_threshold, text_threshold

    @classmethod
    def from_folder(cls, models: Path | None, device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.float32, box_threshold: float = BOX_THRESHOLD,
                    text_threshold: float = TEXT_THRESHOLD) -> "GroundingDinoSam2Backend":
        """The three models from `models`/grounding-dino, clip and sam2 (checked first, one line naming what is
        missing)."""
        folders = {key: model_folder(models, key) for key in ("grounding-dino", "clip", "sam2")}
        from transformers import (AutoModelForZeroShotObjectDetection, AutoProcessor, CLIPModel, Sam2VideoModel,
                                  Sam2VideoProcessor)
        from transformers.utils import is_torchvision_available
        if not is_torchvision_available():  # SAM 2's image and video processors are torchvision-only
            raise DatasetError("--backend gdino-sam2 needs torchvision for SAM 2's video processor: pip install "
                               "torchvision (the build that matches your torch)")

        def load(key, loader, **kwargs):
            try:  # local files only: a folder missing a file fails here instead of asking the hub
                return loader.from_pretrained(folders[key], local_files_only=True, **kwargs)
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise DatasetError(f"--models {models}: {folders[key]} could not be loaded "
                                   f"({str(err).splitlines()[0][:200]}); {MODEL_FOLDERS[key].hint()}") from None

        weights = {"use_safetensors": True}
        return cls(load("grounding-dino", AutoModelForZeroShotObjectDetection, **weights),
                   load("grounding-dino", AutoProcessor), load("clip", CLIPModel, **weights),
                   load("clip", AutoProcessor), load("sam2", Sam2VideoModel, **weights),
                   load("sam2", Sam2VideoProcessor), device, dtype, box_threshold, text_threshold)

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
        """CLIP's cosine similarity between the box's crop and the tag."""
        batch = self.clip_processor(text=[tag], images=Image.fromarray(crop(frame, box)), return_tensors="pt",
                                    padding=True)
        out = self.clip(**self.on_device(batch))
        image, text = (torch.nn.functional.normalize(e.float(), dim=-1) for e in (out.image_embeds, out.text_embeds))
        return float((image * text).sum())

    @torch.inference_mode()
    def track(self, frames: np.ndarray, index: int, box: Box) -> np.ndarray:
        """SAM 2 video with the box as prompt at frame `index`, propagated forward to the last frame and backward to
        frame 0: bool masks [N, H, W] at the frames' size."""
        n, h, w = frames.shape[:3]
        # the video is resized and kept on the CPU (a long video's 1024-pixel frames would fill a GPU); frames move to
        # the device one at a time
        session = self.tracker_processor.init_video_session(
            video=frames, inference_device=self.device, processing_device="cpu", video_storage_device="cpu",
            dtype=self.dtype)
        self.tracker_processor.add_inputs_to_inference_session(
            inference_session=session, frame_idx=index, obj_ids=TRACK_ID, input_boxes=[[[float(v) for v in box]]])
        masks = np.zeros((n, h, w), bool)
        for reverse in (False, True):  # the prompt frame's output is computed once and reused by the backward pass
            for out in self.tracker.propagate_in_video_iterator(session, start_frame_idx=index, reverse=reverse):
                masks[out.frame_idx] = self.frame_mask(out.pred_masks, h, w)
        return masks

    def frame_mask(self, pred_masks: torch.Tensor, height: int, width: int) -> np.ndarray:
        """The tracked object's low-resolution logits -> its bool mask at the frame's size."""
        full = self.tracker_processor.post_process_masks([pred_masks.float()], original_sizes=[[height, width]],
                                                         binarize=True)[0]
        return full[0, 0].cpu().numpy().astype(bool)
