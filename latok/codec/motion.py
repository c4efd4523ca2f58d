"""Motion in latent space: one global translation per latent frame, or one per block, estimated from the latents.

When the camera pans, a position's content is still in the previous latent frame, only shifted,
so comparing positions in place (the temporal-L1 rule) keeps nearly everything.  The encoder has
every latent, so it estimates, per latent frame t, the translation ``v[t] = (dy, dx)`` (in latent
pixels) that best maps frame t-1 onto frame t: an integer search within ``radius`` minimising the
mean |z[t] - shift(z[t-1], v)| over the frames' overlap, then two refinements at half and quarter
steps with bilinear warping.  No network and no parameters: estimated, not learned.

Block motion (:func:`estimate_block_shift`) gives each ``BLOCK`` x ``BLOCK`` block of latent pixels
its own vector, searched and refined the same way, where it pays for itself: a block keeps the
frame's global translation unless its own lowers the block's mismatch by more than ``BLOCK_GAIN``
(an object moving against a pan gets its own vector; a flat or noisy block does not).  A frame's motion is then
``(2, gh, gw)`` instead of ``(2,)``, one (dy, dx) per block of a ceil(h/BLOCK) x ceil(w/BLOCK) grid.

:func:`warp` moves a latent frame's content by ``v``, one translation or one per block (bilinear,
borders replicated).  The rule
compares against the warped reference and the motion-compensated hold repeats the warped previous
restored frame (:func:`latok.codec.masking.redundancy_mask` and
:func:`latok.codec.fill.motion_hold_fill` take ``motion``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from latok.errors import InvalidInputError

MOTION_MODELS = ("global", "block")  # one (dy, dx) per latent frame, or one per block of it
DEFAULT_RADIUS = 4  # latent pixels: 32 pixels a frame at taef2's 8x, a fast pan at 240p
REFINEMENT_STEPS = (0.5, 0.25)
BLOCK = 4  # latent pixels per block side: 32x32 pixels at taef2's 8x
BLOCK_GAIN = 0.1  # a block keeps the global vector unless its own lowers its mismatch by more than this share


def block_grid(height: int, width: int) -> tuple[int, int]:
    """The block grid ``(gh, gw)`` of a ``height`` x ``width`` latent frame."""
    return -(-height // BLOCK), -(-width // BLOCK)


def flow_field(shift: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(B, 2, h, w)``: each latent pixel's (dy, dx) from one translation ``(B, 2)`` or a block field ``(B, 2, gh, gw)``."""
    if shift.ndim == 2:
        return shift.float().view(-1, 2, 1, 1).expand(-1, 2, height, width)
    field = shift.float().repeat_interleave(BLOCK, dim=2).repeat_interleave(BLOCK, dim=3)
    return field[:, :, :height, :width]


def warp(frame: torch.Tensor, shift: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """``frame`` ``(B, C, h, w)`` with its content moved by ``shift`` = (dy, dx) latent pixels, one per frame
    ``(B, 2)`` or one per block ``(B, 2, gh, gw)`` (:func:`block_grid`): ``out[y, x] = frame[y - dy, x - dx]``,
    interpolated by ``mode`` (``grid_sample``'s; bilinear, the measured choice: eval/results/warp_modes_val.md),
    borders replicated.  A zero shift returns ``frame`` exactly."""
    if frame.ndim != 4 or not _is_shift(shift, frame.shape[0], *frame.shape[-2:]):
        raise InvalidInputError(
            f"warp needs a frame (B, C, h, w) and shifts (B, 2) or (B, 2, gh, gw) per block, got {tuple(frame.shape)} and {tuple(shift.shape)}"
        )
    if not bool(shift.any()):
        return frame
    height, width = frame.shape[-2:]
    flow = flow_field(shift.to(frame.device), height, width)  # (B, 2, h, w)
    ys = torch.arange(height, dtype=torch.float32, device=frame.device).view(1, height, 1) - flow[:, 0]
    xs = torch.arange(width, dtype=torch.float32, device=frame.device).view(1, 1, width) - flow[:, 1]
    grid = torch.stack([2 * xs / max(width - 1, 1) - 1, 2 * ys / max(height - 1, 1) - 1], dim=-1)  # (B, h, w, 2), (x, y) in [-1, 1]
    return F.grid_sample(frame.float(), grid, mode=mode, padding_mode="border", align_corners=True).to(frame.dtype)


def motion_shape(batch: int, frames: int, height: int, width: int, model: str) -> tuple[int, ...]:
    """The shape of a clip's motion: ``(B, t, 2)`` for ``"global"``, ``(B, t, 2, gh, gw)`` for ``"block"``."""
    return (batch, frames, 2) if model == "global" else (batch, frames, 2, *block_grid(height, width))


def motion_model(motion: torch.Tensor, batch: int, frames: int, height: int, width: int) -> str:
    """``"global"`` or ``"block"``: which model ``motion`` is for a ``(B, ., t, h, w)`` latent.

    Raises:
        InvalidInputError: it is neither shape.
    """
    for model in MOTION_MODELS:
        if tuple(motion.shape) == motion_shape(batch, frames, height, width, model):
            return model
    raise InvalidInputError(
        f"motion must be (B, t, 2) = {(batch, frames, 2)} or per block {motion_shape(batch, frames, height, width, 'block')}, got {tuple(motion.shape)}"
    )


def _is_shift(shift: torch.Tensor, batch: int, height: int, width: int) -> bool:
    return tuple(shift.shape) in ((batch, 2), (batch, 2, *block_grid(height, width)))


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


def estimate_motion(latent: torch.Tensor, radius: int = DEFAULT_RADIUS, previous: torch.Tensor | None = None, model: str = "global") -> torch.Tensor:
    """Per latent frame of ``latent`` ``(B, C, t, h, w)``, its translation from the frame before:
    ``(B, t, 2)`` with ``model="global"``, ``(B, t, 2, gh, gw)`` with ``model="block"``.

    Frame 0's is zero unless ``previous`` (``(B, C, h, w)``, the frame before a stream chunk) is given."""
    if latent.ndim != 5:
        raise InvalidInputError(f"latent must be (B, C, t, h, w), got {tuple(latent.shape)}")
    if model not in MOTION_MODELS:
        raise InvalidInputError(f"motion model must be one of {', '.join(MOTION_MODELS)}, got {model!r}")
    batch, _, frames, height, width = latent.shape
    motion = torch.zeros(motion_shape(batch, frames, height, width, model), device=latent.device)
    before = previous
    for t in range(frames):
        if before is not None:
            shift = estimate_shift(latent[:, :, t], before, radius)
            motion[:, t] = shift if model == "global" else estimate_block_shift(latent[:, :, t], before, shift)
        before = latent[:, :, t]
    return motion

