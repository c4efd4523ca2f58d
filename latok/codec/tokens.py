"""``AdaptiveLatent``: the kept latent vectors of a clip, their positions, and what produced them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from latok.codec.fill import Fill, last_kept_index
from latok.codec.motion import motion_model
from latok.errors import InvalidInputError

if TYPE_CHECKING:
    from latok.codec.packing import PackedTokens
    from latok.vae.base import VideoAutoencoder

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
        lit_frames: the lit guard, one flag per latent frame: True where the encoder found the
            inpainter closer to the true latent than hold on that frame's dropped positions
            (``None``: not checked).  ``fill="lit"`` uses hold on the other frames.
        lit_model: :attr:`~latok.codec.inpainter.InpaintingTransformer.fingerprint` of the inpainter
            the guard was decided with.
        motion: float32, each latent frame's translation (dy, dx) from the one before when the rule was
            motion-compensated (:mod:`latok.codec.motion`): ``(B, t, 2)`` global, or ``(B, t, 2, gh, gw)``
            one per block; ``None``: in place.
        value_step: the per-channel quantisation steps of ``values`` (:mod:`latok.codec.values`): each
            value is float32 and exactly ``code * step``; ``None``: exact values in the storage dtype.
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
    lit_frames: tuple[bool, ...] | None = None
    lit_model: str | None = None
    motion: torch.Tensor | None = None
    value_step: tuple[float, ...] | None = None

    @property
    def motion_model(self) -> str | None:
        """``"global"``, ``"block"``, or ``None`` (the rule compared positions in place)."""
        return None if self.motion is None else ("global" if self.motion.ndim == 3 else "block")

    def __post_init__(self):
        batch, channels, frames, height, width = self.shape
        if self.keep.shape != (batch, frames, height, width) or self.keep.dtype != torch.bool:
            raise InvalidInputError(f"keep must be bool {(batch, frames, height, width)}, got {self.keep.dtype} {tuple(self.keep.shape)}")
        if self.values.shape != (int(self.keep.sum()), channels):
            raise InvalidInputError(f"values must be ({int(self.keep.sum())}, {channels}), got {tuple(self.values.shape)}")
        if (self.lit_frames is None) != (self.lit_model is None) or (
            self.lit_frames is not None and len(self.lit_frames) != frames
        ):
            raise InvalidInputError(f"the lit guard needs one flag per latent frame ({frames}) and the model it was decided with")
        if self.motion is not None:
            motion_model(self.motion, batch, frames, height, width)
            if self.motion.dtype != torch.float32:
                raise InvalidInputError(f"motion must be float32, got {self.motion.dtype}")
        if self.value_step is not None and (len(self.value_step) != channels or self.values.dtype != torch.float32):
            raise InvalidInputError(f"quantised values need {channels} steps and float32 values, got {len(self.value_step)} and {self.values.dtype}")

    @classmethod
    def from_dense(
        cls, latent: torch.Tensor, keep: torch.Tensor, dtype: torch.dtype = torch.float16, value_step: tuple[float, ...] | None = None, **meta
    ) -> AdaptiveLatent:
        """Gather the kept vectors of a dense ``(B, C, t, h, w)`` latent, in ``dtype``, or quantised
        to float32 codes times ``value_step`` (:func:`latok.codec.values.channel_steps`) when given."""
        dtype_name(dtype)
        values = latent.permute(0, 2, 3, 4, 1)[keep]  # (N, C)
        if value_step is None:
            values = values.to(dtype)
        else:
            from latok.codec.values import dequantise, quantise

            values = dequantise(quantise(values.cpu(), value_step), value_step)
            meta["value_step"] = tuple(value_step)
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

    def dense(self, fill: str | Fill = "hold", native: bool = False, vae: VideoAutoencoder | None = None) -> torch.Tensor:
        """The restored ``(B, C, t, h, w)`` float32 latent, e.g. for a generator.

        Args:
            fill: how dropped positions come back: ``"zero"`` (the kept values in place, zeros
                elsewhere), ``"hold"``, ``"interp"``, or any fill callable, such as
                ``tokenizer.resolve(adaptive, "lit")`` for the inpainter (see
                :mod:`latok.codec.restoration`).
            native: ``False`` (default): latok's normalised space, roughly unit variance,
                which for the diffusers backends is the space their pipelines' transformers
                work in (``latents=``).  ``True``: the autoencoder's own latent space, what
                the diffusers ``AutoencoderKL*.decode`` takes directly.
            vae: the backend (``tokenizer.vae``) whose normalisation to undo for ``native=True``;
                not needed where the two spaces coincide (taef2).
        """
        from latok.codec.restoration import resolve

        batch, channels, frames, height, width = self.shape
        scattered = torch.zeros(batch, frames, height, width, channels)
        scattered[self.keep] = self.values.float()
        latent = resolve(self, fill)(scattered.permute(0, 4, 1, 2, 3), self.keep)  # (B, C, t, h, w)
        if not native:
            return latent
        if vae is None:
            from latok.vae import vae_class
            from latok.vae.base import VideoAutoencoder

            if vae_class(self.backend).denormalise is not VideoAutoencoder.denormalise:
                raise InvalidInputError(
                    f"native latents of {self.backend} need its normalisation statistics: pass vae=tokenizer.vae"
                )
            return latent
        if vae.name != self.backend or backend_config_hash(vae) != self.backend_config:
            raise InvalidInputError(f"tokens come from {self.backend!r}, the vae given is {vae.name!r}")
        return vae.denormalise(latent)

    def for_pipeline(self, name: str, fill: str | Fill = "hold", scheduler=None) -> torch.Tensor:
        """Exactly the tensor diffusers pipeline ``name``'s ``latents=`` takes (:mod:`latok.codec.pipelines`):
        ``"wan"``, ``"cogvideox"``, ``"hunyuanvideo"``, ``"ltx-video"`` or ``"cosmos"``, from tokens of that
        pipeline's VAE backend, restored with ``fill``.  ``scheduler``: the pipeline's scheduler, for the
        scales it applies to a passed tensor (default: the shipped settings)."""
        from latok.codec.pipelines import check_backend, to_pipeline

        check_backend(name, self.backend)
        return to_pipeline(name, self.dense(fill), scheduler)

    def packed(self) -> PackedTokens:
        """The kept tokens as a :class:`~latok.codec.packing.PackedTokens` sequence (one per clip of the batch)."""
        from latok.codec.packing import PackedTokens

        index = self.keep.nonzero()  # (N, 4): batch, t, y, x, in the order of `values`
        previous = last_kept_index(self.keep[:, :-1])  # kept index at or before t - 1
        before = torch.cat([torch.zeros_like(self.keep[:, :1], dtype=torch.long), previous], dim=1)
        time = torch.arange(self.keep.shape[1]).view(1, -1, 1, 1)
        stale = torch.where(time == 0, torch.zeros_like(before), time - before)[self.keep]
        counts = self.keep.flatten(1).sum(dim=1)
        return PackedTokens(
            values=self.values.float(),
            positions=index[:, 1:].contiguous(),
            staleness=stale,
            cu_seqlens=torch.cat([torch.zeros(1, dtype=torch.int32), counts.cumsum(0).to(torch.int32)]),
            max_seqlen=int(counts.max()),
        )


def backend_config_hash(vae) -> str:
    """Short stable hash of what makes latents of ``vae`` interchangeable."""
    identity = {
        "name": vae.name,
        "latent_channels": vae.latent_channels,
        "temporal_ratio": vae.temporal_ratio,
        "spatial_ratio": vae.spatial_ratio,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
