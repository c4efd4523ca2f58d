"""The allocator interface and registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from latok.errors import InvalidInputError


@dataclass
class Passes:
    """Work done for one clip, in whole-clip equivalents of each network's forward pass."""

    encoder: float = 0.0
    decoder: float = 0.0
    inpainter: float = 0.0


@dataclass
class AllocationContext:
    """What an allocator may look at.

    Attributes:
        video: ``(1, 3, T, H, W)`` in ``[-1, 1]``.
        latent: ``(1, C, t, h, w)`` normalised latent of ``video`` (the one encoder pass).
        decode: ``latent, frames -> video`` for latent frames ``frames`` (a slice); the
            decoder of the frozen VAE, cropped to the video's size.
        fill: ``(sparse latent, keep) -> dense latent``; the fill used for the final
            reconstruction too.
        fill_is_model: the fill is a network (lit): its calls count as inpainter passes.
        target_usage: kept fraction for rate-targeted allocators (``None``: their own default).
        temporal_ratio: video frames per latent frame of the backend.
        default_tau: the backend's calibrated tau (:attr:`~latok.VideoAutoencoder.default_tau`),
            latok's threshold unless its allocator is given one.
        value_steps: the tokenizer's per-channel value steps (:func:`latok.codec.format.coders.values.channel_steps`),
            for allocators that rank by coded bits.
    """

    video: torch.Tensor
    latent: torch.Tensor
    decode: Callable[[torch.Tensor, slice], torch.Tensor]
    fill: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    fill_is_model: bool = False
    target_usage: float | None = None
    temporal_ratio: int = 1
    default_tau: float | None = None
    value_steps: tuple[float, ...] | None = None


@dataclass
class Allocation:
    keep: torch.Tensor  # (1, t, h, w) bool, frame 0 kept
    passes: Passes = field(default_factory=Passes)
    info: dict = field(default_factory=dict)
    motion: torch.Tensor | None = None  # the translations the mask was made with (latok's rule); fills follow them

    @property
    def usage(self) -> float:
        return self.keep.float().mean().item()


class Allocator(Protocol):
    name: str

    def allocate(self, context: AllocationContext) -> Allocation: ...


ALLOCATORS: dict[str, type] = {}


def register_allocator(name: str):
    def decorate(cls: type) -> type:
        cls.name = name
        ALLOCATORS[name] = cls
        return cls

    return decorate


def get_allocator(name: str, **options) -> Allocator:
    if name not in ALLOCATORS:
        raise InvalidInputError(f"unknown allocator {name!r}; available: {', '.join(ALLOCATORS)}")
    return ALLOCATORS[name](**options)


def final_passes(context: AllocationContext) -> Passes:
    """The last fill + decode every allocator ends with, after one encode."""
    return Passes(encoder=1.0, decoder=1.0, inpainter=1.0 if context.fill_is_model else 0.0)


def top_fraction(score: torch.Tensor, usage: float) -> torch.Tensor:
    """Keep mask of the ``usage`` fraction of highest ``score`` ``(1, t, h, w)``; frame 0 always kept.

    Frame 0 counts towards the budget; the rest goes to the highest scores of frames 1.."""
    keep = torch.zeros_like(score, dtype=torch.bool)
    keep[:, 0] = True
    wanted = round(usage * score.numel()) - int(keep.sum())
    rest = score[:, 1:].flatten()
    if wanted > 0 and rest.numel():
        chosen = torch.zeros(rest.numel(), dtype=torch.bool)
        chosen[rest.topk(min(wanted, rest.numel())).indices] = True
        keep[:, 1:] = chosen.view_as(score[:, 1:])
    return keep
