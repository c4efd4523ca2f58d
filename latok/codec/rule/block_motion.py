"""Block motion: one translation per ``BLOCK`` x ``BLOCK`` block of latent pixels, where it pays for itself.

Each block is searched and refined as the global motion is, and keeps the frame's global translation
unless its own lowers the block's mismatch by more than ``BLOCK_GAIN`` (an object moving against a pan
gets its own vector; a flat or noisy block does not).  A frame's motion is then ``(2, gh, gw)``, one
(dy, dx) per block of a ceil(h/BLOCK) x ceil(w/BLOCK) grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from latok.codec.rule.global_motion import REFINEMENT_STEPS, estimate_pairs, estimate_shift, first_minimum, integer_differences, refinement_candidates
from latok.codec.rule.motion import BLOCK, DEFAULT_RADIUS, block_grid, candidate_differences, register_motion, warp
from latok.errors import InvalidInputError

BLOCK_GAIN = 0.1  # a block keeps the global vector unless its own lowers its mismatch by more than this share


@register_motion("block")
class BlockMotion:
    """One (dy, dx) per block: ``(B, t, 2, gh, gw)``."""

    per_block = True

    def estimate(self, latent: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        return estimate_pairs(latent, previous, (2, *block_grid(*latent.shape[-2:])), _search_pairs)


def _search_pairs(current: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
    """``(N, 2, gh, gw)``: each pair's global shift, then its blocks' (integer shifts scored once for both)."""
    differences = integer_differences(current, before)
    return estimate_block_shift(current, before, estimate_shift(current, before, differences=differences), differences=differences)


def _block_mean(difference: torch.Tensor, channels: int) -> torch.Tensor:
    """``(B, K, gh, gw)``: per block, the mean over its pixels of ``difference`` ``(B, K, h, w)`` (a sum over
    ``channels``), divided by ``channels``; partial edge blocks average their pixels."""
    height, width = difference.shape[-2:]
    gh, gw = block_grid(height, width)
    pad = (0, gw * BLOCK - width, 0, gh * BLOCK - height)
    area = F.avg_pool2d(F.pad(difference.new_ones(1, 1, height, width), pad), BLOCK)
    return F.avg_pool2d(F.pad(difference / channels, pad), BLOCK) / area


def _block_error(current: torch.Tensor, moved: torch.Tensor) -> torch.Tensor:
    """``(B, gh, gw)`` mean |current - moved| over each block (partial edge blocks: their pixels)."""
    return _block_mean((current - moved).abs().sum(dim=1, keepdim=True), current.shape[1]).squeeze(1)


def estimate_block_shift(current: torch.Tensor, previous: torch.Tensor, global_shift: torch.Tensor, radius: int = DEFAULT_RADIUS,
                         differences: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """``(B, 2, gh, gw)``: per block of ``current`` ``(B, C, h, w)``, the translation from ``previous`` that
    best explains it: every integer shift within ``radius`` (slices of the border-replicated frame, what
    :func:`warp` gives for them, scored together: :func:`integer_differences`, passed in if the caller has
    them), then half and quarter steps around the best, the eight of a step in one warp (:func:`candidate_differences`).  A block keeps
    the frame's ``global_shift`` ``(B, 2)`` unless its own vector lowers its mismatch by more than ``BLOCK_GAIN``."""
    if current.shape != previous.shape or current.ndim != 4 or global_shift.shape != (current.shape[0], 2):
        raise InvalidInputError(f"estimate_block_shift needs two frames (B, C, h, w) of one shape and (B, 2) shifts, got {tuple(current.shape)}")
    current, previous = current.float(), previous.float()
    batch, channels, height, width = current.shape
    gh, gw = block_grid(height, width)
    start = global_shift.float().view(batch, 2, 1, 1).expand(batch, 2, gh, gw).contiguous()
    start_error = _block_error(current, warp(previous, start))
    if differences is None:
        differences = integer_differences(current, previous, radius)
    shifts = torch.tensor([(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)], dtype=torch.float32, device=current.device)
    integer = shifts.view(1, -1, 2, 1, 1).expand(1, -1, 2, gh, gw)  # raster order, as integer_differences scores them
    best, best_error = first_minimum(start, start_error, integer, _block_mean(differences, channels))
    for step in REFINEMENT_STEPS:
        candidates = refinement_candidates(best, step)  # (B, 8, 2, gh, gw)
        errors = _block_mean(candidate_differences(current, previous, candidates), channels)  # (B, 8, gh, gw)
        best, best_error = first_minimum(best, best_error, candidates, errors)
    pays = best_error < (1 - BLOCK_GAIN) * start_error
    return torch.where(pays.unsqueeze(1), best, start)
