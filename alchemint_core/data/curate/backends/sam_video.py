"""What the SAM-family video trackers (SAM 2 video, SAM 3's tracker) share here: frames prepared the way their image
processors prepare them (their transformers processors need torchvision, which the curation install does without and
which PyPI does not ship for a CPU-only torch), a video session kept on the CPU, a box prompt given as their
processors give it, and the mask logits resized back to the frame."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from ..stages import Box

BOX_LABELS = (2, 3)  # the trackers' point labels for a box's top-left and bottom-right corners


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def square_pixels(frames: np.ndarray, size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 frames [N, H, W, 3] -> the model's input [N, 3, S, S] on the CPU: square resize, [0, 1], normalised by
    mean and std of shape [3, 1, 1]."""
    x = rearrange(torch.from_numpy(np.ascontiguousarray(frames)), "n h w c -> n c h w").float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return (x / 255 - mean.cpu()) / std.cpu()


def video_session(session_cls, frames: np.ndarray, size: int, mean, std, device, dtype, chunk: int = 16):
    """An inference session over the video, its frames prepared in chunks (the full-size float frames never all
    exist at once) and kept on the CPU (a long video at the model's input size would crowd the GPU), moved to the
    device a frame at a time."""
    video = torch.cat([square_pixels(frames[i:i + chunk], size, mean, std) for i in range(0, len(frames), chunk)])
    return session_cls(video=video.to(dtype), video_height=frames.shape[1], video_width=frames.shape[2],
                       inference_device=device, inference_state_device=device, video_storage_device="cpu",
                       dtype=dtype)


def prompt_box(session, obj_id: int, index: int, box: Box, size: int) -> None:
    """The box as the tracker's two corner points at frame `index`, in model-input coordinates."""
    scale = torch.tensor([size / session.video_width, size / session.video_height])
    corners = torch.tensor(box, dtype=torch.float32).reshape(1, 1, 2, 2) * scale
    session.add_point_inputs(session.obj_id_to_idx(obj_id), index, {
        "point_coords": corners, "point_labels": torch.tensor([[BOX_LABELS]], dtype=torch.int32)})
    session.obj_with_new_inputs = [obj_id]


def frame_mask(pred_masks: torch.Tensor, height: int, width: int) -> np.ndarray:
    """The tracked object's low-resolution logits -> its bool mask at the frame's size."""
    logits = F.interpolate(pred_masks[:1].float(), size=(height, width), mode="bilinear", align_corners=False)
    return (logits[0, 0] > 0).cpu().numpy()
