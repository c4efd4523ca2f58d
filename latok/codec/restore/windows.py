"""Windowed inference: a model run over half-overlapping windows of a token grid, blended.

The inpainter trains on crops of 17 latent frames x 16 x 16 positions (8 x 8 tokens) and restores clips far larger:
at 240p a frame is 15 x 26 tokens, and a clip may hold hundreds of frames.  Rotary embeddings let it run at any
size, but attention then meets distances and numbers of keys it never saw.  :func:`in_windows` runs it over windows
of the size it knows instead, all at once in one batch, and blends the overlaps.
"""

from __future__ import annotations

import torch


def window_starts(size: int, window: int | None) -> list[int]:
    """Starts of windows of ``window`` along a dimension of ``size``, half-overlapping, the last ending at the end;
    ``[0]`` where one window (or ``None``) covers it all."""
    if window is None or size <= window:
        return [0]
    return sorted(set(range(0, size - window, max(window // 2, 1))) | {size - window})


def tent(size: int, window: int) -> torch.Tensor:
    """Blending weights across a window: 1 at its edges, rising to about ``window / 2`` at its centre."""
    index = torch.arange(window, dtype=torch.float32)
    return torch.minimum(index + 1, window - index) if size > window else torch.ones(window)


def in_windows(transform, x: torch.Tensor, window: tuple[int | None, int | None] | None) -> torch.Tensor:
    """``transform`` of tokens ``x`` ``(B, t, h, w, D)`` run over half-overlapping windows of ``window`` = (frames,
    tokens a side) (``None``: the whole clip or frame), batched, and blended with :func:`tent` weights.  The model
    attends over the spans it was trained on (crops of 17 x 8 x 8 tokens), however large the clip it restores."""
    frames, side = window or (None, None)
    _, t, h, w, _ = x.shape
    size = (min(frames or t, t), min(side or h, h), min(side or w, w))
    corners = [(a, b, c) for a in window_starts(t, frames) for b in window_starts(h, side) for c in window_starts(w, side)]
    if len(corners) == 1:
        return transform(x)
    pieces = torch.cat([x[:, a : a + size[0], b : b + size[1], c : c + size[2]] for a, b, c in corners])
    out = transform(pieces).split(x.shape[0])
    weight = tent(t, size[0]).view(-1, 1, 1) * tent(h, size[1]).view(1, -1, 1) * tent(w, size[2]).view(1, 1, -1)
    weight = weight.to(out[0]).unsqueeze(-1)
    total = out[0].new_zeros(*x.shape[:4], out[0].shape[-1])
    norm = out[0].new_zeros(1, t, h, w, 1)
    for (a, b, c), piece in zip(corners, out):
        total[:, a : a + size[0], b : b + size[1], c : c + size[2]] += weight * piece
        norm[:, a : a + size[0], b : b + size[1], c : c + size[2]] += weight
    return total / norm
