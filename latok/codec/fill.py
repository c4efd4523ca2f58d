"""Closed-form fills: restore dropped latent positions from the kept ones.

A fill is any callable ``fill(latent, keep) -> latent`` where ``latent`` is
``(B, C, t, h, w)`` float with kept values in place (dropped positions hold
zeros) and ``keep`` is ``(B, t, h, w)`` bool with every position of frame 0
kept.  It returns the restored ``(B, C, t, h, w)`` latent; kept positions must
come back unchanged.  Which fill restores a clip, by name, including the
inpainter (``lit``) and the guarded default (``auto``), is decided in
:mod:`latok.codec.restoration`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from latok.codec.motion import warp

Fill = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def zero_fill(latent: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Dropped positions take the latent mean: zero after normalisation."""
    return latent * keep.unsqueeze(1)


def hold_fill(latent: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Zero-order hold: each dropped position repeats its last kept value (RLT's run-length repeat)."""
    return latent.gather(2, _expand(last_kept_index(keep), latent))


def interp_fill(latent: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Per position, linear interpolation in time between the kept values before and after;
    hold after the last kept value."""
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


def motion_hold_fill(latent: torch.Tensor, keep: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
    """Hold along the motion: each dropped position repeats the previous *restored* frame warped by
    its frame's motion ``motion`` (``(B, t, 2)``, or ``(B, t, 2, gh, gw)`` per block; :mod:`latok.codec.motion`).  A zero motion is
    exactly :func:`hold_fill`."""
    restored = [latent[:, :, 0]]
    for t in range(1, latent.shape[2]):
        moved = warp(restored[-1], motion[:, t])
        restored.append(torch.where(keep[:, t].unsqueeze(1), latent[:, :, t], moved))
    return torch.stack(restored, dim=2)  # (B, C, t, h, w)


def motion_interp_fill(latent: torch.Tensor, keep: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
    """Interpolation along the motion: the motion-compensated hold forward from the last kept value and
    backward from the next (warped by the inverse translations), blended by how many frames each lies
    away; hold where no kept value follows.  A zero motion is :func:`interp_fill`."""
    frames = latent.shape[2]
    mask = keep.unsqueeze(1).to(latent.dtype)  # (B, 1, t, h, w)
    forward, age_forward = [latent[:, :, 0]], [torch.zeros_like(mask[:, :, 0])]
    for t in range(1, frames):
        kept = keep[:, t].unsqueeze(1)
        forward.append(torch.where(kept, latent[:, :, t], warp(forward[-1], motion[:, t])))
        age_forward.append(torch.where(kept, 0.0, warp(age_forward[-1], motion[:, t]) + 1))
    inf = torch.full_like(mask[:, :, 0], float("inf"))
    backward, age_backward = [None] * frames, [None] * frames
    backward[-1] = latent[:, :, -1]
    age_backward[-1] = torch.where(keep[:, -1].unsqueeze(1), 0.0, inf)
    for t in range(frames - 2, -1, -1):
        kept = keep[:, t].unsqueeze(1)
        back = -motion[:, t + 1]
        backward[t] = torch.where(kept, latent[:, :, t], warp(backward[t + 1], back))
        age = warp(torch.where(torch.isinf(age_backward[t + 1]), -1.0, age_backward[t + 1]), back)
        age_backward[t] = torch.where(kept, 0.0, torch.where(age < 0, inf, age + 1))
    restored = []
    for t in range(frames):
        has_next = torch.isfinite(age_backward[t])
        span = torch.where(has_next, age_forward[t] + age_backward[t], 1.0).clamp(min=1)
        weight = torch.where(has_next, age_forward[t] / span, 0.0)
        restored.append(torch.lerp(forward[t], backward[t], weight))
    return torch.stack(restored, dim=2)  # (B, C, t, h, w)


def last_kept_index(keep: torch.Tensor) -> torch.Tensor:
    """``(B, t, h, w)`` int64: index of the most recent kept frame at or before t."""
    frames = keep.shape[1]
    time = torch.arange(frames, device=keep.device).view(1, frames, 1, 1)
    return torch.where(keep, time, torch.zeros((), dtype=torch.long, device=keep.device)).cummax(dim=1).values


def next_kept_index(keep: torch.Tensor) -> torch.Tensor:
    """``(B, t, h, w)`` int64: index of the next kept frame at or after t; ``t`` (the length) if none."""
    frames = keep.shape[1]
    time = torch.arange(frames, device=keep.device).view(1, frames, 1, 1)
    marked = torch.where(keep, time, torch.full((), frames, dtype=torch.long, device=keep.device))
    return marked.flip(1).cummin(dim=1).values.flip(1)


def staleness(keep: torch.Tensor) -> torch.Tensor:
    """``(B, t, h, w)`` int64: latent frames since the position was last kept (0 where kept)."""
    frames = keep.shape[1]
    time = torch.arange(frames, device=keep.device).view(1, frames, 1, 1)
    return time - last_kept_index(keep)


def _expand(index: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    return index.unsqueeze(1).expand(-1, latent.shape[1], -1, -1, -1)  # (B, C, t, h, w)
