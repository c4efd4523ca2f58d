"""The picture users want: original | reconstruction | keep-mask overlay, with a token-usage bar."""

from __future__ import annotations

import numpy as np
import torch

from latok.io import video_to_frames

BAR_HEIGHT = 10
_DROPPED_TINT = np.array([20, 20, 90], dtype=np.float32)  # dropped cells go dark blue
_KEPT_EDGE = np.array([255, 200, 0], dtype=np.uint8)


def side_by_side(original: torch.Tensor, reconstruction: torch.Tensor, keep: torch.Tensor) -> np.ndarray:
    """uint8 ``(T, H + BAR_HEIGHT, 3W, 3)`` frames.

    Args:
        original, reconstruction: ``(1, 3, T, H, W)`` float in ``[-1, 1]``.
        keep: ``(1, t, h, w)`` bool keep mask; each latent cell covers
            ``ceil(H / h) x ceil(W / w)`` pixels and ``T / t`` frames.

    Panel three shows the original with dropped cells darkened and tinted; the bar
    under all panels fills to the kept fraction of that frame's latent positions.
    """
    left, middle = video_to_frames(original), video_to_frames(reconstruction)
    frames, height, width, _ = left.shape
    keep = keep[0].cpu().numpy()  # (t, h, w)
    t, h, w = keep.shape
    frame_to_latent = np.minimum(np.arange(frames) * t // frames, t - 1)
    rows = np.minimum(np.arange(height) * h // height, h - 1)
    cols = np.minimum(np.arange(width) * w // width, w - 1)
    out = np.zeros((frames, height + BAR_HEIGHT, 3 * width, 3), dtype=np.uint8)
    for index in range(frames):
        cell_keep = keep[frame_to_latent[index]]  # (h, w)
        pixel_keep = cell_keep[rows][:, cols]  # (H, W)
        overlay = left[index].astype(np.float32)
        overlay[~pixel_keep] = 0.35 * overlay[~pixel_keep] + _DROPPED_TINT
        out[index, :height, :width] = left[index]
        out[index, :height, width : 2 * width] = middle[index]
        out[index, :height, 2 * width :] = overlay.clip(0, 255).astype(np.uint8)
        usage = float(cell_keep.mean())
        out[index, height:, : round(usage * 3 * width)] = _KEPT_EDGE
    return out
