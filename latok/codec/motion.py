"""Motion in latent space: one global translation per latent frame, estimated from the latents.

When the camera pans, a position's content is still in the previous latent frame, only shifted,
so comparing positions in place (the temporal-L1 rule) keeps nearly everything.  The encoder has
every latent, so it estimates, per latent frame t, the translation ``v[t] = (dy, dx)`` (in latent
pixels) that best maps frame t-1 onto frame t: an integer search within ``radius`` minimising the
mean |z[t] - shift(z[t-1], v)| over the frames' overlap, then two refinements at half and quarter
steps with bilinear warping.  No network and no parameters: estimated, not learned.

:func:`warp` moves a latent frame's content by ``v`` (bilinear, borders replicated).  The rule
compares against the warped reference and the motion-compensated hold repeats the warped previous
restored frame (:func:`latok.codec.masking.redundancy_mask` and
:func:`latok.codec.fill.motion_hold_fill` take ``motion``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from latok.errors import InvalidInputError

DEFAULT_RADIUS = 4  # latent pixels: 32 pixels a frame at taef2's 8x, a fast pan at 240p
REFINEMENT_STEPS = (0.5, 0.25)


def warp(frame: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``frame`` ``(B, C, h, w)`` with its content moved by ``shift`` ``(B, 2)`` = (dy, dx) latent pixels:
    ``out[y, x] = frame[y - dy, x - dx]``, bilinear, borders replicated.  A zero shift returns ``frame`` exactly."""
    if frame.ndim != 4 or shift.shape != (frame.shape[0], 2):
        raise InvalidInputError(f"warp needs a frame (B, C, h, w) and shifts (B, 2), got {tuple(frame.shape)} and {tuple(shift.shape)}")
    if not bool(shift.any()):
        return frame
    batch, _, height, width = frame.shape
    ys = torch.arange(height, dtype=torch.float32, device=frame.device).view(1, height, 1) - shift[:, 0].view(batch, 1, 1).float()
    xs = torch.arange(width, dtype=torch.float32, device=frame.device).view(1, 1, width) - shift[:, 1].view(batch, 1, 1).float()
    grid = torch.stack(  # (B, h, w, 2) as (x, y) in [-1, 1], align_corners=True
        [(2 * xs / max(width - 1, 1) - 1).expand(batch, height, width), (2 * ys / max(height - 1, 1) - 1).expand(batch, height, width)],
        dim=-1,
    )
    return F.grid_sample(frame.float(), grid, mode="bilinear", padding_mode="border", align_corners=True).to(frame.dtype)


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


def estimate_motion(latent: torch.Tensor, radius: int = DEFAULT_RADIUS, previous: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, t, 2)`` float: per latent frame of ``latent`` ``(B, C, t, h, w)``, its translation from the frame before.

    Frame 0's is zero unless ``previous`` (``(B, C, h, w)``, the frame before a stream chunk) is given."""
    if latent.ndim != 5:
        raise InvalidInputError(f"latent must be (B, C, t, h, w), got {tuple(latent.shape)}")
    batch, _, frames = latent.shape[:3]
    motion = torch.zeros(batch, frames, 2, device=latent.device)
    before = previous
    for t in range(frames):
        if before is not None:
            motion[:, t] = estimate_shift(latent[:, :, t], before, radius)
        before = latent[:, :, t]
    return motion
