"""Reconstruction metrics under the TokenBench protocol (DESIGN.md, "Evaluation protocol")."""

from __future__ import annotations

import math

import torch

from latok.errors import InvalidInputError


def psnr(video: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR in dB from one MSE over the whole clip, computed in float64 on the [0, 255] scale.

    Both inputs are ``(B, 3, T, H, W)`` float in ``[-1, 1]`` of the same shape.  Values are
    quantised to 8-bit levels first, as a decoded video file would be, but never wrap
    around (TokenBench's own script had a uint8 overflow here).  Identical clips give ``inf``.
    """
    if video.shape != reference.shape:
        raise InvalidInputError(f"psnr needs equal shapes, got {tuple(video.shape)} and {tuple(reference.shape)}")
    a = _to_255(video)
    b = _to_255(reference)
    mse = (a - b).pow(2).mean().item()
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _to_255(video: torch.Tensor) -> torch.Tensor:
    return video.detach().double().add(1.0).mul(127.5).round().clamp(0.0, 255.0)
