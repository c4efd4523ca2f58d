"""Motion models for the rule: how a latent frame's content moved since the frame before, and :func:`warp`.

When the camera pans, a position's content is still in the previous latent frame, only shifted, so
comparing positions in place keeps nearly everything.  The encoder has every latent, so a motion model
estimates, per latent frame t, the translation ``(dy, dx)`` (in latent pixels) that maps frame t-1 onto
frame t: one for the whole frame, or one per ``BLOCK`` x ``BLOCK`` block of latent pixels.  The rule
compares against the warped reference (:func:`latok.codec.rule.masking.redundancy_mask`), and hold,
interp and the inpainter follow the same motion (:mod:`latok.codec.restore.fills`).

Models register by name (:func:`register_motion`); ``"none"`` compares in place.  A model is a class
with ``per_block`` (one vector per frame, or one per block) and ``estimate(latent, previous) ->
motion``.  The built-in ones, :mod:`~latok.codec.rule.global_motion` and
:mod:`~latok.codec.rule.block_motion`, are imported on first use; adding a model is one file with
``@register_motion("name")`` and its module in :data:`BUILTIN_MODELS` (or an import by the caller).
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Protocol

import torch
import torch.nn.functional as F

from latok.errors import InvalidInputError

NO_MOTION = "none"
BUILTIN_MODELS = {"global": "latok.codec.rule.global_motion", "block": "latok.codec.rule.block_motion"}
DEFAULT_RADIUS = 4  # latent pixels: 32 pixels a frame at taef2's 8x, a fast pan at 240p
BLOCK = 4  # latent pixels per block side: 32x32 pixels at taef2's 8x


class MotionModel(Protocol):
    name: str
    per_block: bool  # one (dy, dx) per BLOCK x BLOCK block of a frame, else one per frame

    def estimate(self, latent: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, C, t, h, w)`` latent -> ``(B, t, 2)``, or ``(B, t, 2, gh, gw)`` per block: frame t's translation
        from frame t-1 (frame 0's from ``previous``, ``(B, C, h, w)``, the frame before a stream chunk; zero
        without one)."""
        ...


_MODELS: dict[str, type] = {}


def register_motion(name: str):
    """Class decorator adding a motion model under ``name`` (``--motion name``)."""

    def decorate(cls: type) -> type:
        if name == NO_MOTION or (name in _MODELS and _MODELS[name] is not cls):
            raise InvalidInputError(f"motion model name {name!r} is taken")
        cls.name = name
        _MODELS[name] = cls
        return cls

    return decorate


def motion_names() -> tuple[str, ...]:
    """Every ``--motion`` choice: ``"none"``, then the registered models."""
    for module in BUILTIN_MODELS.values():
        importlib.import_module(module)
    return (NO_MOTION, *_MODELS)


def motion_model(name: str) -> MotionModel:
    """The registered model ``name``.

    Raises:
        InvalidInputError: no model of that name.
    """
    if name not in _MODELS and name in BUILTIN_MODELS:
        importlib.import_module(BUILTIN_MODELS[name])
    if name not in _MODELS:
        raise InvalidInputError(f"motion model must be one of {', '.join(motion_names()[1:])}, got {name!r}")
    return _MODELS[name]()


def estimate_motion(latent: torch.Tensor, model: str = "global", previous: torch.Tensor | None = None) -> torch.Tensor | None:
    """``model``'s motion of ``latent`` ``(B, C, t, h, w)``; ``None`` for ``"none"``."""
    if model == NO_MOTION:
        return None
    if latent.ndim != 5:
        raise InvalidInputError(f"latent must be (B, C, t, h, w), got {tuple(latent.shape)}")
    estimator = motion_model(model)
    with one_thread():
        return estimator.estimate(latent, previous)


@contextlib.contextmanager
def one_thread():
    """Run the block inside with one torch thread.  The motion search is hundreds of small ops a frame; with
    two threads each one waits for the second thread, which on a busy machine is late (4 DAVIS clips beside
    two CPU burners: 9.7 s with two threads, 2.1 s with one; idle 1.7 s and 1.4 s: eval/results/motion_under_load.md).
    One thread also makes the estimate independent of the thread count."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def motion_shape(batch: int, frames: int, height: int, width: int, model: str) -> tuple[int, ...]:
    """The shape of a clip's motion under ``model``: ``(B, t, 2)``, or ``(B, t, 2, gh, gw)`` per block."""
    return (batch, frames, 2, *block_grid(height, width)) if motion_model(model).per_block else (batch, frames, 2)


def check_motion(motion: torch.Tensor, model: str, batch: int, frames: int, height: int, width: int) -> None:
    """Raise :class:`InvalidInputError` unless ``motion`` is ``model``'s motion of a ``(B, ., t, h, w)`` latent."""
    expected = motion_shape(batch, frames, height, width, model)
    if tuple(motion.shape) != expected:
        raise InvalidInputError(f"{model} motion must be {expected}, got {tuple(motion.shape)}")


def block_grid(height: int, width: int) -> tuple[int, int]:
    """The block grid ``(gh, gw)`` of a ``height`` x ``width`` latent frame."""
    return -(-height // BLOCK), -(-width // BLOCK)


def flow_field(shift: torch.Tensor, height: int, width: int, overlapped: bool = False) -> torch.Tensor:
    """``(B, 2, h, w)``: each latent pixel's (dy, dx) from one translation ``(B, 2)`` or a block field ``(B, 2, gh, gw)``:
    its block's vector, or with ``overlapped`` the bilinear blend of the vectors of the four nearest block centres."""
    if shift.ndim == 2:
        return shift.float().view(-1, 2, 1, 1).expand(-1, 2, height, width)
    if overlapped:
        field = F.interpolate(shift.float(), scale_factor=BLOCK, mode="bilinear", align_corners=False)
    else:
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
    grid = _sampling_grid(shift.to(frame.device), *frame.shape[-2:])
    return F.grid_sample(frame.float(), grid, mode=mode, padding_mode="border", align_corners=True).to(frame.dtype)


def candidate_differences(current: torch.Tensor, previous: torch.Tensor, shifts: torch.Tensor, rows: slice = slice(None),
                          columns: slice = slice(None)) -> torch.Tensor:  # fmt: skip
    """``(B, K, h', w')``: the sum over channels of |``current`` - ``previous`` warped| (bilinear, as :func:`warp`),
    for each of K candidate shifts ``(B, K, 2)`` or ``(B, K, 2, gh, gw)``, only at ``rows`` x ``columns`` (both
    frames ``(B, C, h, w)``).  One ``grid_sample`` whose grid stacks the K candidates, so the frame is neither
    copied K times nor sampled where no one looks; the difference is taken in place in the sampler's layout
    (channels outermost), measured 4x faster than on a transposed view."""
    batch, count = shifts.shape[:2]
    height, width = previous.shape[-2:]
    grid = _sampling_grid(shifts.flatten(0, 1).to(previous.device), height, width)[:, rows, columns]  # (B K, h', w', 2)
    grid = grid.unflatten(0, (batch, count)).flatten(1, 2)  # (B, K h', w', 2): the candidates one above the other
    moved = F.grid_sample(previous.float(), grid, mode="bilinear", padding_mode="border", align_corners=True)  # (B, C, K h', w')
    moved = moved.unflatten(2, (count, -1))  # (B, C, K, h', w')
    return moved.sub_(current.float()[:, :, rows, columns].unsqueeze(2)).abs_().sum(dim=1)


def _sampling_grid(shift: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(N, h, w, 2)``: where each output pixel samples a frame moved by ``shift`` (``grid_sample``'s (x, y) in [-1, 1])."""
    flow = flow_field(shift, height, width)  # (N, 2, h, w)
    ys = torch.arange(height, dtype=torch.float32, device=shift.device).view(1, height, 1) - flow[:, 0]
    xs = torch.arange(width, dtype=torch.float32, device=shift.device).view(1, 1, width) - flow[:, 1]
    return torch.stack([2 * xs / max(width - 1, 1) - 1, 2 * ys / max(height - 1, 1) - 1], dim=-1)


def _is_shift(shift: torch.Tensor, batch: int, height: int, width: int) -> bool:
    return tuple(shift.shape) in ((batch, 2), (batch, 2, *block_grid(height, width)))


def is_motion(motion: torch.Tensor, batch: int, frames: int, height: int, width: int) -> bool:
    """Is ``motion`` one translation, or one per block, for each of ``frames`` latent frames of ``(h, w)``?"""
    return tuple(motion.shape) in ((batch, frames, 2), (batch, frames, 2, *block_grid(height, width)))
