"""Global motion: one translation per latent frame, estimated from the latents.

Per latent frame t, the translation ``v[t] = (dy, dx)`` that best maps frame t-1 onto frame t: an
integer search within ``radius`` minimising the mean |z[t] - shift(z[t-1], v)| over the frames' overlap,
then two refinements at half and quarter steps with bilinear warping.  No network and no parameters:
estimated, not learned.
"""

from __future__ import annotations

import torch

from latok.codec.rule.motion import DEFAULT_RADIUS, register_motion, warp
from latok.errors import InvalidInputError

REFINEMENT_STEPS = (0.5, 0.25)


@register_motion("global")
class GlobalMotion:
    """One (dy, dx) per latent frame: ``(B, t, 2)``."""

    per_block = False

    def estimate(self, latent: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        batch, _, frames = latent.shape[:3]
        motion = torch.zeros(batch, frames, 2, device=latent.device)
        before = previous
        for t in range(frames):
            if before is not None:
                motion[:, t] = estimate_shift(latent[:, :, t], before)
            before = latent[:, :, t]
        return motion


def _mismatch(current: torch.Tensor, previous: torch.Tensor, shift: torch.Tensor, margin: int) -> torch.Tensor:
    """``(B,)`` mean |current - warp(previous, shift)| over the interior ``margin`` pixels from every edge."""
    moved = warp(previous, shift)
    height, width = current.shape[-2:]
    inner = (slice(None), slice(None), slice(margin, height - margin), slice(margin, width - margin))
    return (current[inner] - moved[inner]).abs().mean(dim=(1, 2, 3))


def estimate_shift(current: torch.Tensor, previous: torch.Tensor, radius: int = DEFAULT_RADIUS) -> torch.Tensor:
    """``(B, 2)`` float (dy, dx): the translation that best maps ``previous`` onto ``current``, both ``(B, C, h, w)``.

    Scored on the interior ``radius + 1`` pixels from each edge, where every candidate shift
    moves real content rather than replicated borders.  Ties keep the smaller shift (zero first)."""
    if current.shape != previous.shape or current.ndim != 4:
        raise InvalidInputError(f"estimate_shift needs two frames (B, C, h, w) of one shape, got {tuple(current.shape)}, {tuple(previous.shape)}")
    batch, _, height, width = current.shape
    margin = radius + 1
    if radius < 1 or min(height, width) <= 2 * margin:
        return torch.zeros(batch, 2, device=current.device)
    current, previous = current.float(), previous.float()
    candidates = sorted(((dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)), key=lambda v: (abs(v[0]) + abs(v[1]), v))
    best = torch.zeros(batch, 2, device=current.device)
    best_error = _mismatch(current, previous, best, margin)
    inner = current[:, :, margin : height - margin, margin : width - margin]
    for dy, dx in candidates[1:]:  # integer shifts of the interior are slices: what warp gives there, exactly
        shift = torch.tensor([[dy, dx]], dtype=torch.float32, device=current.device).expand(batch, 2)
        moved = previous[:, :, margin - dy : height - margin - dy, margin - dx : width - margin - dx]
        error = (inner - moved).abs().mean(dim=(1, 2, 3))
        better = error < best_error
        best = torch.where(better.unsqueeze(1), shift, best)
        best_error = torch.minimum(error, best_error)
    for step in REFINEMENT_STEPS:
        centre = best.clone()
        for dy in (-step, 0.0, step):
            for dx in (-step, 0.0, step):
                if dy == 0.0 and dx == 0.0:
                    continue
                shift = centre + torch.tensor([[dy, dx]], device=current.device)
                error = _mismatch(current, previous, shift, margin)
                better = error < best_error
                best = torch.where(better.unsqueeze(1), shift, best)
                best_error = torch.minimum(error, best_error)
    return best
