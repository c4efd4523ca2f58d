"""The picture users want: original | reconstruction | keep-mask overlay, with a token-usage bar."""

from __future__ import annotations

import numpy as np
import torch

from latok.io import video_to_frames

BAR_HEIGHT = 10
_DROPPED_TINT = np.array([20, 20, 90], dtype=np.float32)  # dropped cells go dark blue
_KEPT_EDGE = np.array([255, 200, 0], dtype=np.uint8)


def keep_overlay(frames: np.ndarray, keep: torch.Tensor) -> np.ndarray:
    """uint8 ``(T, H, W, 3)`` ``frames`` with the dropped cells of ``keep`` (``(1, t, h, w)`` bool) darkened and
    tinted; each latent cell covers ``ceil(H / h) x ceil(W / w)`` pixels and ``T / t`` frames."""
    count, height, width, _ = frames.shape
    keep = keep[0].cpu().numpy()  # (t, h, w)
    t, h, w = keep.shape
    frame_to_latent = np.minimum(np.arange(count) * t // count, t - 1)
    rows = np.minimum(np.arange(height) * h // height, h - 1)
    cols = np.minimum(np.arange(width) * w // width, w - 1)
    dropped = ~keep[frame_to_latent][:, rows][:, :, cols]  # (T, H, W)
    overlay = frames.astype(np.float32)
    overlay[dropped] = 0.35 * overlay[dropped] + _DROPPED_TINT
    return overlay.clip(0, 255).astype(np.uint8)


def side_by_side(original: torch.Tensor, reconstruction: torch.Tensor, keep: torch.Tensor) -> np.ndarray:
    """uint8 ``(T, H + BAR_HEIGHT, 3W, 3)`` frames.

    Args:
        original, reconstruction: ``(1, 3, T, H, W)`` float in ``[-1, 1]``.
        keep: ``(1, t, h, w)`` bool keep mask (see :func:`keep_overlay`).

    Panel three shows the original with dropped cells darkened and tinted; the bar
    under all panels fills to the kept fraction of that frame's latent positions.
    """
    left, middle = video_to_frames(original), video_to_frames(reconstruction)
    frames, height, width, _ = left.shape
    t = keep.shape[1]
    frame_to_latent = np.minimum(np.arange(frames) * t // frames, t - 1)
    usage = keep[0].float().mean(dim=(-2, -1)).cpu().numpy()  # (t,)
    out = np.zeros((frames, height + BAR_HEIGHT, 3 * width, 3), dtype=np.uint8)
    out[:, :height, :width] = left
    out[:, :height, width : 2 * width] = middle
    out[:, :height, 2 * width :] = keep_overlay(left, keep)
    for index in range(frames):
        out[index, height:, : round(float(usage[frame_to_latent[index]]) * 3 * width)] = _KEPT_EDGE
    return out
