"""Block motion: one translation per ``BLOCK`` x ``BLOCK`` block of latent pixels, where it pays for itself.

Each block is searched and refined as the global motion is, and keeps the frame's global translation
unless its own lowers the block's mismatch by more than ``BLOCK_GAIN`` (an object moving against a pan
gets its own vector; a flat or noisy block does not).  A frame's motion is then ``(2, gh, gw)``, one
(dy, dx) per block of a ceil(h/BLOCK) x ceil(w/BLOCK) grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from latok.codec.rule.global_motion import REFINEMENT_STEPS, estimate_shift
from latok.codec.rule.motion import BLOCK, DEFAULT_RADIUS, block_grid, register_motion, warp
from latok.errors import InvalidInputError

BLOCK_GAIN = 0.1  # a block keeps the global vector unless its own lowers its mismatch by more than this share


@register_motion("block")
class BlockMotion:
    """One (dy, dx) per block: ``(B, t, 2, gh, gw)``."""

    per_block = True

    def estimate(self, latent: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        batch, _, frames, height, width = latent.shape
        motion = torch.zeros(batch, frames, 2, *block_grid(height, width), device=latent.device)
        before = previous
        for t in range(frames):
            if before is not None:
                motion[:, t] = estimate_block_shift(latent[:, :, t], before, estimate_shift(latent[:, :, t], before))
            before = latent[:, :, t]
        return motion


def _block_error(current: torch.Tensor, moved: torch.Tensor) -> torch.Tensor:
    """``(B, gh, gw)`` mean |current - moved| over each block (partial edge blocks: their pixels)."""
    difference = (current - moved).abs().sum(dim=1, keepdim=True) / current.shape[1]  # (B, 1, h, w)
    height, width = current.shape[-2:]
    gh, gw = block_grid(height, width)
    padded = F.pad(difference, (0, gw * BLOCK - width, 0, gh * BLOCK - height))
    ones = F.pad(torch.ones_like(difference), (0, gw * BLOCK - width, 0, gh * BLOCK - height))
    return (F.avg_pool2d(padded, BLOCK) / F.avg_pool2d(ones, BLOCK)).squeeze(1)


def estimate_block_shift(current: torch.Tensor, previous: torch.Tensor, global_shift: torch.Tensor, radius: int = DEFAULT_RADIUS) -> torch.Tensor:
    """``(B, 2, gh, gw)``: per block of ``current`` ``(B, C, h, w)``, the translation from ``previous`` that
    best explains it: every integer shift within ``radius`` (slices of the border-replicated frame, what
    :func:`warp` gives for them), then half and quarter steps around the best.  A block keeps the frame's
    ``global_shift`` ``(B, 2)`` unless its own vector lowers its mismatch by more than ``BLOCK_GAIN``."""
    if current.shape != previous.shape or current.ndim != 4 or global_shift.shape != (current.shape[0], 2):
        raise InvalidInputError(f"estimate_block_shift needs two frames (B, C, h, w) of one shape and (B, 2) shifts, got {tuple(current.shape)}")
    current, previous = current.float(), previous.float()
    batch, _, height, width = current.shape
    gh, gw = block_grid(height, width)
    start = global_shift.float().view(batch, 2, 1, 1).expand(batch, 2, gh, gw).contiguous()
    start_error = _block_error(current, warp(previous, start))
    best, best_error = start.clone(), start_error.clone()

    def consider(candidate: torch.Tensor, error: torch.Tensor) -> None:
        nonlocal best, best_error
        better = error < best_error
        best = torch.where(better.unsqueeze(1), candidate, best)
        best_error = torch.minimum(error, best_error)

    padded = F.pad(previous, (radius, radius, radius, radius), mode="replicate")
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            moved = padded[:, :, radius - dy : radius - dy + height, radius - dx : radius - dx + width]
            consider(torch.tensor([dy, dx], dtype=torch.float32, device=current.device).view(1, 2, 1, 1).expand_as(best), _block_error(current, moved))
    for step in REFINEMENT_STEPS:
        centre = best.clone()
        for dy in (-step, 0.0, step):
            for dx in (-step, 0.0, step):
                if dy or dx:
                    candidate = centre + torch.tensor([dy, dx], dtype=torch.float32, device=current.device).view(1, 2, 1, 1)
                    consider(candidate, _block_error(current, warp(previous, candidate)))
    pays = best_error < (1 - BLOCK_GAIN) * start_error
    return torch.where(pays.unsqueeze(1), best, start)
