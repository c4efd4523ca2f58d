"""Closed-form fills: restore dropped latent positions from the kept ones, registered by name.

A fill is a callable ``fill(latent, keep, motion=None) -> latent`` where ``latent`` is ``(B, C, t, h, w)``
float with kept values in place (dropped positions hold zeros), ``keep`` is ``(B, t, h, w)`` bool with
every position of frame 0 kept, and ``motion`` the translations the rule warped by
(:mod:`latok.codec.rule.motion`; ``None``: in place).  It returns the restored ``(B, C, t, h, w)``
latent; kept positions come back unchanged.  A plain ``fill(latent, keep)`` callable works for tokens
without motion.  Which fill restores a clip, by name, including the inpainter (``lit``) and the guarded
default (``auto``), is decided in :mod:`latok.codec.restore.resolve`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from latok.codec.rule.chain import MotionChain
from latok.codec.rule.motion import one_thread
from latok.codec.tokens import last_kept_index, next_kept_index
from latok.errors import InvalidInputError

Fill = Callable[..., torch.Tensor]
MODEL_FILLS = ("lit", "auto")  # names that may run the inpainter, resolved in latok.codec.restore.resolve
_FILLS: dict[str, Fill] = {}


def register_fill(name: str):
    """Decorator adding a closed-form fill ``fill(latent, keep, motion=None)`` under ``name``."""
    if name in MODEL_FILLS:
        raise InvalidInputError(f"{name!r} is reserved for the inpainter")

    def decorate(fn: Fill) -> Fill:
        _FILLS[name] = fn
        return fn

    return decorate


def closed_form_fills() -> list[str]:
    return sorted(_FILLS)


def get_fill(fill: str | Fill) -> Fill:
    """A closed-form fill by name (a callable passes through)."""
    if callable(fill):
        return fill
    try:
        return _FILLS[fill]
    except KeyError:
        raise InvalidInputError(f"unknown fill {fill!r}; available: {', '.join(sorted(_FILLS))}") from None


@register_fill("zero")
def zero_fill(latent: torch.Tensor, keep: torch.Tensor, motion: torch.Tensor | None = None) -> torch.Tensor:
    """Dropped positions take the latent mean: zero after normalisation (motion changes nothing)."""
    return latent * keep.unsqueeze(1)


@register_fill("hold")
def hold_fill(latent: torch.Tensor, keep: torch.Tensor, motion: torch.Tensor | None = None) -> torch.Tensor:
    """Zero-order hold: each dropped position repeats its last kept value (RLT's run-length repeat);
    along the ``motion`` when given (:func:`motion_hold_fill`)."""
    if motion is not None:
        return motion_hold_fill(latent, keep, motion.to(latent.device))
    return latent.gather(2, _expand(last_kept_index(keep), latent))


@register_fill("interp")
def interp_fill(latent: torch.Tensor, keep: torch.Tensor, motion: torch.Tensor | None = None) -> torch.Tensor:
    """Per position, linear interpolation in time between the kept values before and after;
    hold after the last kept value.  Along the ``motion`` when given (:func:`motion_interp_fill`)."""
    if motion is not None:
        return motion_interp_fill(latent, keep, motion.to(latent.device))
    previous = last_kept_index(keep)  # (B, t, h, w)
    following = next_kept_index(keep)  # (B, t, h, w); t where none follows
    frames = keep.shape[1]
    has_next = following < frames
    following = torch.where(has_next, following, previous)
    before = latent.gather(2, _expand(previous, latent))
    after = latent.gather(2, _expand(following, latent))
    time = torch.arange(frames, device=keep.device).view(1, frames, 1, 1)
    span = (following - previous).clamp(min=1)
    weight = torch.where(has_next, (time - previous) / span, torch.zeros((), device=keep.device))
    return torch.lerp(before, after, weight.unsqueeze(1).to(latent.dtype))


@one_thread()
def motion_hold_fill(latent: torch.Tensor, keep: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
    """Hold along the motion: each dropped position takes its last kept value followed along the motion
    composed since (``motion`` ``(B, t, 2)``, or ``(B, t, 2, gh, gw)`` per block; one interpolation however
    long the hold: :class:`~latok.codec.rule.chain.MotionChain`, the reference the rule compared against).
    A zero motion is exactly :func:`hold_fill`."""
    return torch.stack(_held(latent, keep, motion)[0], dim=2).to(latent.dtype)  # (B, C, t, h, w)


@one_thread()
def motion_interp_fill(latent: torch.Tensor, keep: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
    """Interpolation along the motion: the motion-compensated hold forward from the last kept value and
    backward from the next (followed by the negated translations), blended by how many frames each lies
    away; hold where no kept value follows.  A zero motion is :func:`interp_fill`."""
    forward, age_forward = _held(latent, keep, motion)
    frames = latent.shape[2]
    last = latent[:, :, -1].float()
    kept = keep[:, -1]
    # the last frame's dropped positions have no value ahead: they refer to a frame standing for "none"
    chain = MotionChain.start(last, frames - 1).commit(torch.zeros_like(last), ~kept, float("inf"))
    restored = [None] * frames
    for t in range(frames - 1, -1, -1):
        if t < frames - 1:
            chain = chain.follow(-motion[:, t + 1])
        backward = chain.reference()
        if t < frames - 1:
            backward = torch.where(keep[:, t].unsqueeze(1), latent[:, :, t], backward)
            chain = chain.commit(backward, keep[:, t], t)
        age_backward = chain.age(t)
        has_next = torch.isfinite(age_backward)
        span = torch.where(has_next, age_forward[t] + age_backward, 1.0).clamp(min=1)
        weight = torch.where(has_next, age_forward[t] / span, 0.0)
        restored[t] = torch.lerp(forward[t], backward, weight)
    return torch.stack(restored, dim=2).to(latent.dtype)  # (B, C, t, h, w)


def _held(latent: torch.Tensor, keep: torch.Tensor, motion: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The motion-compensated hold frame by frame, ``(B, C, h, w)`` each, and each position's age ``(B, 1, h, w)``:
    frames since its value was kept."""
    chain = MotionChain.start(latent[:, :, 0])
    restored, ages = [latent[:, :, 0].float()], [chain.age(0)]
    for t in range(1, latent.shape[2]):
        chain = chain.follow(motion[:, t])
        restored.append(torch.where(keep[:, t].unsqueeze(1), latent[:, :, t].float(), chain.reference()))
        chain = chain.commit(restored[-1], keep[:, t], t)
        ages.append(chain.age(t))
    return restored, ages


def _expand(index: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    return index.unsqueeze(1).expand(-1, latent.shape[1], -1, -1, -1)  # (B, C, t, h, w)


def with_context(context: torch.Tensor | None, sparse: torch.Tensor, keep: torch.Tensor, motion: torch.Tensor | None):
    """``(latent, keep, motion, n)``: a chunk's sparse ``(1, C, k, h, w)`` latent with the ``n`` restored frames of
    C_fill before it, marked kept (their translations zero: kept frames never move anything), as a fill takes them."""
    if context is None:
        return sparse, keep, motion, 0
    _, _, n, height, width = context.shape
    known = torch.ones(1, n, height, width, dtype=torch.bool, device=keep.device)
    if motion is not None:
        motion = torch.cat([motion.new_zeros(1, n, *motion.shape[2:]), motion], dim=1)
    return torch.cat([context, sparse], dim=2), torch.cat([known, keep], dim=1), motion, n
