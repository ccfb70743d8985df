"""The SAM 3 backend: one `facebook/sam3` checkpoint (transformers format, `--models`/sam3) does all three jobs.

- detect: SAM 3's text-prompted detector (`Sam3Model`) on one frame; a query's score is its class probability times
  the presence head's probability that the tag is in the frame at all, kept above the checkpoint's own detection
  threshold (`score_threshold_detection`, the one SAM 3's video pipeline uses).
- similarity: the paper scores each box by CLIP's image-text similarity because Grounding DINO's scores are not
  comparable across boxes; SAM 3 aligns text and image inside its detector (the presence head and the query scores
  are conditioned on the text), so its own score of the box for the tag is used: the best query score weighted by
  that query's overlap with the box.
- track: SAM 3's video tracker (`Sam3TrackerVideoModel`) prompted with the box at one frame, propagated forward to
  the last frame, then backward to frame 0.

Detector and tracker come from one `Sam3VideoModel.from_pretrained(folder)`: its tracker has no backbone of its own
and reads the detector's ViT through the checkpoint's tracker neck, so the 0.9B weights are loaded once
(`Sam3TrackerVideoModel.from_pretrained` on the same folder would also work, with a second copy of the ViT).

Frames are resized, rescaled and normalised here the way SAM 3's image processor does (a square resize to the
model's input size, no padding), and box prompts are given to the tracker session as its processor does: transformers'
SAM 3 processors need torchvision, which the curation install otherwise does without (and PyPI's torchvision does
not load on a CPU-only torch build)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from ...dataset import DatasetError
from ..stages import Box, box_iou
from .models import MODEL_FOLDERS, model_folder
from .sam_video import default_device, frame_mask, prompt_box, square_pixels, video_session

TEXT_LENGTH = 32  # SAM 3's processors pad every prompt to this many tokens
TOKENIZER_FILES = ("tokenizer.json", "vocab.json")
SAM3_MEAN = SAM3_STD = (0.5, 0.5, 0.5)  # SAM 3's image processor defaults, used when the folder states none


class Sam3Backend:
    def __init__(self, model, tokenizer, mean=SAM3_MEAN, std=SAM3_STD, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, threshold: float | None = None):
        self.model = model.to(device=device, dtype=dtype).eval()
        self.tokenizer = tokenizer
        self.device, self.dtype = torch.device(device), dtype
        self.mean = torch.tensor(mean, device=self.device, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, device=self.device, dtype=torch.float32)[:, None, None]
        self.size = model.config.detector_config.vision_config.backbone_config.image_size
        self.threshold = model.config.score_threshold_detection if threshold is None else threshold
        self.last_scored: tuple[tuple[str, str], tuple[np.ndarray, np.ndarray]] | None = None

    @classmethod
    def from_folder(cls, models: Path | None, device: str | torch.device | None = None,
                    dtype: torch.dtype | None = None) -> Sam3Backend:
        """SAM 3 from `models`/sam3 (config.json, weights, tokenizer and processor files of facebook/sam3)."""
        from transformers import AutoTokenizer, Sam3VideoModel
        from transformers.image_processing_base import ImageProcessingMixin

        folder = model_folder(models, "sam3")
        device = device or default_device()
        dtype = dtype or (torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32)
        try:
            if not any((folder / name).is_file() for name in TOKENIZER_FILES):  # else transformers makes up one
                raise OSError(f"no tokenizer ({' or '.join(TOKENIZER_FILES)})")
            tokenizer = AutoTokenizer.from_pretrained(folder)
            norm = ImageProcessingMixin.get_image_processor_dict(folder)[0]
            model = Sam3VideoModel.from_pretrained(folder, dtype=dtype, use_safetensors=True)
        except (OSError, ValueError) as err:
            spec = MODEL_FOLDERS["sam3"]
            raise DatasetError(f"--models {models}: {folder} does not load as {spec.checkpoint} "
                               f"({str(err).splitlines()[0][:200]}); put the whole {spec.checkpoint} checkpoint "
                               f"there (`hf download {spec.checkpoint} --local-dir <models>/{spec.name}`)") from None
        return cls(model, tokenizer, norm.get("image_mean", SAM3_MEAN), norm.get("image_std", SAM3_STD), device, dtype)

    def pixels(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 frames [N, H, W, 3] -> the model's input [N, 3, S, S] on its device."""
        return square_pixels(frames, self.size, self.mean, self.std).to(self.device, self.dtype)

    def text(self, tag: str) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer(tag, return_tensors="pt", padding="max_length", max_length=TEXT_LENGTH,
                                truncation=True)
        return {"input_ids": tokens.input_ids.to(self.device), "attention_mask": tokens.attention_mask.to(self.device)}

    @torch.inference_mode()
    def scored_queries(self, frame: np.ndarray, tag: str) -> tuple[np.ndarray, np.ndarray]:
        """Every detector query's box (pixels, x0 y0 x1 y1) and score for the tag on this frame; the last frame's
        answer is kept, since `similarity` asks again about the boxes `detect` just found."""
        key = (hashlib.blake2b(frame.tobytes(), digest_size=16).hexdigest() + str(frame.shape), tag)
        if self.last_scored is None or self.last_scored[0] != key:
            out = self.model.detector_model(pixel_values=self.pixels(frame[None]), **self.text(tag))
            scores = out.pred_logits.float().sigmoid() * out.presence_logits.float().sigmoid()
            h, w = frame.shape[:2]
            boxes = out.pred_boxes[0].float().clamp(0, 1) * torch.tensor([w, h, w, h], device=self.device)
            self.last_scored = key, (boxes.cpu().numpy(), scores[0].cpu().numpy())
        return self.last_scored[1]

    def detect(self, frame: np.ndarray, tag: str) -> list[tuple[Box, float]]:
        boxes, scores = self.scored_queries(frame, tag)
        return [(tuple(map(float, b)), float(s)) for b, s in zip(boxes, scores)
                if s > self.threshold and b[2] > b[0] and b[3] > b[1]]

    def similarity(self, frame: np.ndarray, box: Box, tag: str) -> float:
        boxes, scores = self.scored_queries(frame, tag)
        return max((float(s) * box_iou(tuple(b), box) for b, s in zip(boxes, scores)), default=0.0)

    def cache_frame(self, session, index: int) -> None:
        """The tracker's vision features of one frame, from the detector's backbone through the tracker neck (the
        tracker in Sam3VideoModel has no backbone of its own)."""
        embeds = self.model.detector_model.get_vision_features(pixel_values=session.get_frame(index)[None])
        feats, pos = self.model.get_vision_features_for_tracker(embeds)
        session.cache.cache_vision_features(index, {"vision_feats": feats, "vision_pos_embeds": pos})

    def propagate(self, session, n: int, index: int):
        """The tracker's outputs in its order: the prompted frame, forward to the last frame, back to frame 0."""
        for f, reverse in [(f, False) for f in range(index, n)] + [(f, True) for f in range(index - 1, -1, -1)]:
            self.cache_frame(session, f)
            yield self.model.tracker_model(session, frame_idx=f, reverse=reverse)

    @torch.inference_mode()
    def track(self, frames: np.ndarray, index: int, box: Box) -> np.ndarray:
        n, h, w = frames.shape[:3]
        from transformers import Sam3TrackerVideoInferenceSession
        session = video_session(Sam3TrackerVideoInferenceSession, frames, self.size, self.mean, self.std,
                                self.device, self.dtype)
        prompt_box(session, 0, index, box, self.size)
        masks = np.zeros((n, h, w), bool)
        for out in self.propagate(session, n, index):
            masks[out.frame_idx] = frame_mask(out.pred_masks, h, w)
        return masks
