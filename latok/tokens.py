"""``AdaptiveLatent``: the kept latent vectors of a clip, their positions, and what produced them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import torch

from latok.errors import InvalidInputError
from latok.fill import Fill, get_fill

STORAGE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def dtype_name(dtype: torch.dtype) -> str:
    for name, value in STORAGE_DTYPES.items():
        if value == dtype:
            return name
    raise InvalidInputError(f"storage dtype must be one of {', '.join(STORAGE_DTYPES)}, got {dtype}")


@dataclass(frozen=True)
class SourceInfo:
    """Where the pixels came from and how they were framed before encoding.

    Attributes:
        frames: T of the encoded video.
        height, width: H, W of the encoded video (what decode returns).
        fps: frame rate of the encoded video.
        source_size: ``(height, width)`` of the original frames.
        crop: ``(top, left, height, width)`` of the crop inside the resized frame.
        resized_size: ``(height, width)`` after the aspect-keeping resize.
    """

    frames: int
    height: int
    width: int
    fps: float = 24.0
    source_size: tuple[int, int] | None = None
    resized_size: tuple[int, int] | None = None
    crop: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class AdaptiveLatent:
    """An adaptively tokenized clip.

    Attributes:
        values: ``(N, C)`` kept latent vectors in the storage dtype, ordered as
            ``keep.nonzero()`` (batch, then time, then row, then column).
        keep: ``(B, t, h, w)`` bool mask, True where kept.
        shape: ``(B, C, t, h, w)`` of the full latent.
        backend: VAE backend name.
        backend_config: hash of the backend's identity (name, channels, ratios),
            checked when decoding with another backend.
        tau: threshold used; ``target_usage`` if tau was picked per clip.
        reference: ``"last-kept"`` or ``"previous"``.
        keyframe_interval: forced keyframe period in latent frames, or ``None``.
        source: the encoded video's size, fps and framing.
    """

    values: torch.Tensor
    keep: torch.Tensor
    shape: tuple[int, int, int, int, int]
    backend: str
    backend_config: str
    tau: float
    source: SourceInfo
    target_usage: float | None = None
    reference: str = "last-kept"
    keyframe_interval: int | None = None

    def __post_init__(self):
        batch, channels, frames, height, width = self.shape
        if self.keep.shape != (batch, frames, height, width) or self.keep.dtype != torch.bool:
            raise InvalidInputError(f"keep must be bool {(batch, frames, height, width)}, got {self.keep.dtype} {tuple(self.keep.shape)}")
        if self.values.shape != (int(self.keep.sum()), channels):
            raise InvalidInputError(f"values must be ({int(self.keep.sum())}, {channels}), got {tuple(self.values.shape)}")

    @classmethod
    def from_dense(cls, latent: torch.Tensor, keep: torch.Tensor, dtype: torch.dtype = torch.float16, **meta) -> AdaptiveLatent:
        """Gather the kept vectors of a dense ``(B, C, t, h, w)`` latent."""
        dtype_name(dtype)
        values = latent.permute(0, 2, 3, 4, 1)[keep].to(dtype)  # (N, C)
        return cls(values=values.cpu().contiguous(), keep=keep.cpu(), shape=tuple(latent.shape), **meta)

    @property
    def num_tokens(self) -> int:
        return self.values.shape[0]

    @property
    def token_usage(self) -> float:
        """Kept positions / all latent positions."""
        return self.num_tokens / self.keep.numel()

    @property
    def storage_dtype(self) -> torch.dtype:
        return self.values.dtype

    def sparse_dense(self) -> torch.Tensor:
        """``(B, C, t, h, w)`` float32 with kept values in place and zeros elsewhere."""
        batch, channels, frames, height, width = self.shape
        dense = torch.zeros(batch, frames, height, width, channels)
        dense[self.keep] = self.values.float()
        return dense.permute(0, 4, 1, 2, 3)  # (B, C, t, h, w)

    def to_dense(self, fill: str | Fill = "hold") -> torch.Tensor:
        """Restore the full ``(B, C, t, h, w)`` float32 latent with ``fill`` (zero, hold, interp, lit, or a callable)."""
        return get_fill(fill)(self.sparse_dense(), self.keep)


def backend_config_hash(vae) -> str:
    """Short stable hash of what makes latents of ``vae`` interchangeable."""
    identity = {
        "name": vae.name,
        "latent_channels": vae.latent_channels,
        "temporal_ratio": vae.temporal_ratio,
        "spatial_ratio": vae.spatial_ratio,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
