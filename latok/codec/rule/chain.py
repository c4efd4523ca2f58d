"""Composed motion: where each latent position's reference lies, followed along the motion since it was kept.

Warping the previous restored frame at every frame blurs: a value held for n frames is interpolated n
times.  A :class:`MotionChain` instead carries, per latent position, the restored frame its reference
comes from and the (fractional) point in that frame, composed frame by frame along the motion.  The
reference is then one bilinear sample of that frame, however long the chain: a value moved by a pan of a
quarter pixel a frame for eight frames is sampled once at two pixels, not blurred eight times.

The rule (:func:`latok.codec.rule.masking.redundancy_mask`) and the motion-compensated fills
(:mod:`latok.codec.restore.fills`) step the same chain, so the decoder's reference is the rule's.

Composing: frame t's position p came from ``q = p - flow_t(p)`` in frame t-1 (:func:`~latok.codec.rule.motion.warp`'s
convention, borders replicated: q is clamped to the frame).  Its chain continues the chain of q's nearest
position n, offset by ``q - n``: exact for a translation, and for a block field inside each block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from latok.codec.rule.motion import flow_field

OVERLAPPED_BLOCKS = False  # block vectors blended between block centres (eval/motion_fill_val.py measures both)


@dataclass(frozen=True)
class MotionChain:
    """Per latent position, the frame and point its reference is sampled at.

    Attributes:
        frames: ``(B, C, n, h, w)`` float32, the restored frames some position still refers to.
        times: ``(n,)`` float32, each frame's latent frame index (``inf`` for a frame that stands for "none").
        source: ``(B, h, w)`` long, index into ``frames``.
        points: ``(B, 2, h, w)`` float32, the (y, x) point in that frame, inside it.
    """

    frames: torch.Tensor
    times: torch.Tensor
    source: torch.Tensor
    points: torch.Tensor

    @classmethod
    def start(cls, frame: torch.Tensor, time: float = 0.0) -> MotionChain:
        """Every position of ``frame`` ``(B, C, h, w)`` refers to itself."""
        batch, _, height, width = frame.shape
        return cls(
            frame.float().unsqueeze(2),  # (B, C, 1, h, w)
            torch.tensor([float(time)], device=frame.device),
            torch.zeros(batch, height, width, dtype=torch.long, device=frame.device),
            _grid(batch, height, width, frame.device),
        )

    def follow(self, shift: torch.Tensor) -> MotionChain:
        """The chain one frame later, for that frame's motion ``shift`` (``(B, 2)``, or ``(B, 2, gh, gw)`` per block)."""
        batch, height, width = self.source.shape
        if not bool(shift.any()):
            return self
        grid = _grid(batch, height, width, self.source.device)
        came_from = _clamp(grid - flow_field(shift.to(grid.device), height, width, OVERLAPPED_BLOCKS), height, width)  # (B, 2, h, w)
        nearest = came_from.round()
        index = (nearest[:, 0] * width + nearest[:, 1]).long().flatten(1)  # (B, h*w)
        source = self.source.flatten(1).gather(1, index).view(batch, height, width)
        points = self.points.flatten(2).gather(2, index.unsqueeze(1).expand(-1, 2, -1)).view(batch, 2, height, width)
        return MotionChain(self.frames, self.times, source, _clamp(points + (came_from - nearest), height, width))

    def reference(self) -> torch.Tensor:
        """``(B, C, h, w)`` float32: each position's frame, bilinearly sampled at its point."""
        batch, channels, count, height, width = self.frames.shape
        flat = self.frames.flatten(2)  # (B, C, n*h*w)
        y, x = self.points[:, 0], self.points[:, 1]
        y0, x0 = y.floor(), x.floor()
        y1, x1 = (y0 + 1).clamp(max=height - 1), (x0 + 1).clamp(max=width - 1)
        base = self.source * (height * width)

        def at(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
            index = (base + (rows * width + cols).long()).flatten(1)  # (B, h*w)
            return flat.gather(2, index.unsqueeze(1).expand(-1, channels, -1)).view(batch, channels, height, width)

        wy, wx = (y - y0).unsqueeze(1), (x - x0).unsqueeze(1)
        return torch.lerp(torch.lerp(at(y0, x0), at(y0, x1), wx), torch.lerp(at(y1, x0), at(y1, x1), wx), wy)

    def age(self, time: float) -> torch.Tensor:
        """``(B, 1, h, w)``: frames between ``time`` and each position's source frame (``inf`` for "none")."""
        return (self.times[self.source] - time).abs().unsqueeze(1)

    def commit(self, restored: torch.Tensor, kept: torch.Tensor, time: float) -> MotionChain:
        """The chain after frame ``time`` is restored as ``restored`` ``(B, C, h, w)``: positions ``kept``
        ``(B, h, w)`` now refer to themselves there; frames no position refers to any more are let go."""
        batch, _, height, width = restored.shape
        count = self.frames.shape[2]
        frames = torch.cat([self.frames, restored.float().unsqueeze(2)], dim=2)  # (B, C, n+1, h, w)
        times = torch.cat([self.times, self.times.new_tensor([float(time)])])
        source = torch.where(kept, count, self.source)
        points = torch.where(kept.unsqueeze(1), _grid(batch, height, width, restored.device), self.points)
        used = torch.unique(source)  # sorted
        if used.numel() == count + 1:
            return MotionChain(frames, times, source, points)
        renumber = torch.zeros(count + 1, dtype=torch.long, device=source.device)
        renumber[used] = torch.arange(used.numel(), device=source.device)
        return MotionChain(frames[:, :, used], times[used], renumber[source], points)


def _grid(batch: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    ys = torch.arange(height, dtype=torch.float32, device=device).view(height, 1).expand(height, width)
    xs = torch.arange(width, dtype=torch.float32, device=device).view(1, width).expand(height, width)
    return torch.stack([ys, xs]).unsqueeze(0).expand(batch, 2, height, width)  # (B, 2, h, w)


def _clamp(points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return torch.stack([points[:, 0].clamp(0, height - 1), points[:, 1].clamp(0, width - 1)], dim=1)
