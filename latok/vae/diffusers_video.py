"""Adapters for diffusers' video VAEs: Wan 2.1, Cosmos CV8x8x8, CogVideoX, HunyuanVideo, LTX-Video.

Each adapter owns what diffusers leaves to its pipelines:

- latent normalisation: per-channel ``latents_mean``/``latents_std`` (Wan, Cosmos, LTX)
  or a global ``scaling_factor`` (CogVideoX, HunyuanVideo), so that :meth:`encode`
  returns roughly unit-variance latents exactly as the matching pipeline feeds
  its transformer;
- the ``1 + k*s`` frame alignment (replicate-pad, crop back on decode);
- deterministic latents (the posterior ``mode()``), dtype and device;
- memory: diffusers' own spatial/temporal tiling (``tiling=True``, the default),
  which is how these models are run on long or large clips.

diffusers is imported only when an adapter is built.  Weights come from
``from_pretrained(hub id or local directory)``; tests pass a tiny random model
through ``model=``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import ClassVar

import torch

from latok.errors import InvalidInputError, WeightsNotFoundError
from latok.vae.base import VideoAutoencoder
from latok.vae.registry import register_vae

logger = logging.getLogger(__name__)


class DiffusersVideoVAE(VideoAutoencoder):
    """Common adapter over a diffusers ``AutoencoderKL*`` video model.

    Options:
        pretrained: hub id or local directory (default: the class's ``hub_id``).
        subfolder: folder inside ``pretrained`` holding the VAE (default ``"vae"`` for hub ids,
            none for a local directory that has its own ``config.json``).
        model: an already-built diffusers model; skips ``from_pretrained``.
        tiling: enable diffusers' tiled encode/decode to bound memory on large clips.
        precision: ``auto`` (bf16 where native, else fp32), ``fp32``, ``bf16`` or ``fp16`` (CUDA); or ``dtype``.
    """

    model_class: ClassVar[str]
    hub_id: ClassVar[str]
    weights_option: ClassVar[str] = "pretrained"
    fixed_geometry: ClassVar[bool] = False  # a model's config sets its channels and ratios

    def __init__(
        self,
        pretrained: str | os.PathLike | None = None,
        subfolder: str | None = None,
        model: torch.nn.Module | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        tiling: bool = True,
        chunk_pixels: int | None = None,
        precision: str | None = None,
    ):
        super().__init__(device=device, dtype=dtype, chunk_pixels=chunk_pixels, precision=precision)
        if model is None:
            model = self._from_pretrained(pretrained, subfolder)
        if type(model).__name__ != self.model_class:
            raise InvalidInputError(f"{self.name} expects a diffusers {self.model_class}, got {type(model).__name__}")
        self.model = model.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)
        if tiling and hasattr(self.model, "enable_tiling"):
            self.model.enable_tiling()
        # Instance attributes shadow the class defaults: a custom config may change them.
        self.latent_channels = int(self.model.config.latent_channels if "latent_channels" in self.model.config
                                   else self.model.config.z_dim)
        self.temporal_ratio, self.spatial_ratio = self._ratios()
        self.spatial_multiple = self.spatial_ratio
        self._setup_normalisation()

    def _from_pretrained(self, pretrained: str | os.PathLike | None, subfolder: str | None) -> torch.nn.Module:
        import diffusers

        if isinstance(pretrained, (tuple, list)):
            raise InvalidInputError(f"{self.name} takes one weights path (a hub id or a local folder), got {len(pretrained)}")
        source = str(pretrained or self.hub_id)
        local = Path(source).expanduser()
        if subfolder is None:
            subfolder = None if (local / "config.json").is_file() else "vae"
        from latok.weights import OFFLINE_ENV, offline

        library_logger = logging.getLogger("diffusers")
        level = library_logger.level
        library_logger.setLevel(logging.ERROR)  # its loading advice (install accelerate, ...) is not latok's user's concern
        try:  # offline: the Hugging Face cache or a local folder only, no network call
            return getattr(diffusers, self.model_class).from_pretrained(source, subfolder=subfolder, local_files_only=offline())
        except (OSError, ValueError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise WeightsNotFoundError(
                f"{self.name}: could not load {self.model_class} from {source!r}"
                f"{f' (subfolder {subfolder!r})' if subfolder else ''}: {reason}; pass a local diffusers "
                f"directory with pretrained=..., or run once with internet access to fill the Hugging Face cache"
                f"{f' ({OFFLINE_ENV} is set: nothing was downloaded)' if offline() else ''}"
            ) from None
        finally:
            library_logger.setLevel(level)

    @classmethod
    def weights_available(cls, pretrained: str | os.PathLike | None = None, **options) -> bool:
        if pretrained is not None and (Path(pretrained).expanduser() / "config.json").is_file():
            return True
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return False
        cached = try_to_load_from_cache(str(pretrained or cls.hub_id), "vae/config.json")
        return isinstance(cached, str)

    # -- per-model hooks ----------------------------------------------------------------------

    def _ratios(self) -> tuple[int, int]:
        """(temporal, spatial) compression read from the model's config."""
        config = self.model.config
        return int(config.temporal_compression_ratio), int(config.spatial_compression_ratio)

    def _setup_normalisation(self) -> None:
        """Default: ``z * scaling_factor`` (CogVideoX, HunyuanVideo)."""
        self._scale = float(self.model.config.scaling_factor)

    def normalise(self, latent: torch.Tensor) -> torch.Tensor:
        return latent * self._scale

    def denormalise(self, latent: torch.Tensor) -> torch.Tensor:
        return latent / self._scale

    # -- protocol -----------------------------------------------------------------------------

    def _encode(self, video: torch.Tensor) -> torch.Tensor:
        return self.normalise(self.model.encode(video).latent_dist.mode())

    def _decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.model.decode(self.denormalise(latent)).sample


class _MeanStdNormalised(DiffusersVideoVAE):
    """``(z - mean) / std`` with per-channel statistics (optionally per latent frame as well)."""

    def _statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        config = self.model.config
        return torch.tensor(config.latents_mean), torch.tensor(config.latents_std)

    def _setup_normalisation(self) -> None:
        mean, std = self._statistics()
        channels = self.latent_channels
        if mean.numel() % channels or std.numel() != mean.numel():
            raise InvalidInputError(
                f"{self.name}: latents_mean/std have {mean.numel()}/{std.numel()} values, "
                f"not a multiple of {channels} channels"
            )
        self._mean = mean.float().view(1, channels, -1, 1, 1)  # (1, C, frames_with_stats, 1, 1)
        self._std = std.float().view(1, channels, -1, 1, 1)

    def _stats_for(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = latent.shape[2]
        mean, std = self._mean, self._std
        if mean.shape[2] > 1:  # per-frame statistics (Cosmos): cut, or extend with the last frame's
            index = torch.arange(frames).clamp(max=mean.shape[2] - 1)
            mean, std = mean[:, :, index], std[:, :, index]
        return mean.to(latent), std.to(latent)

    def normalise(self, latent: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats_for(latent)
        return (latent - mean) / std

    def denormalise(self, latent: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats_for(latent)
        return latent * std + mean


@register_vae("wan2.1")
class Wan21(_MeanStdNormalised):
    """Wan 2.1 VAE (AutoencoderKLWan): 16 channels, 4x8x8, causal."""

    model_class = "AutoencoderKLWan"
    hub_id = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
    latent_channels = 16
    temporal_ratio = 4
    spatial_ratio = 8

    def _ratios(self) -> tuple[int, int]:
        config = self.model.config
        return int(config.scale_factor_temporal), int(config.scale_factor_spatial)


@register_vae("cosmos-cv8x8x8")
class CosmosCV8x8x8(_MeanStdNormalised):
    """Cosmos continuous video tokenizer CV8x8x8 (AutoencoderKLCosmos): 16 channels, 8x8x8.

    Its ``latents_mean``/``latents_std`` are per channel *and* per latent frame.
    """

    model_class = "AutoencoderKLCosmos"
    hub_id = "nvidia/Cosmos-1.0-Tokenizer-CV8x8x8"
    latent_channels = 16
    temporal_ratio = 8
    spatial_ratio = 8

    def _statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        config = self.model.config
        if config.latents_mean is None or config.latents_std is None:
            return torch.zeros(self.latent_channels), torch.ones(self.latent_channels)
        return torch.tensor(config.latents_mean), torch.tensor(config.latents_std)


@register_vae("cogvideox")
class CogVideoX(DiffusersVideoVAE):
    """CogVideoX VAE (AutoencoderKLCogVideoX): 16 channels, 4x8x8, scaled by ``scaling_factor``."""

    model_class = "AutoencoderKLCogVideoX"
    hub_id = "THUDM/CogVideoX-2b"
    latent_channels = 16
    temporal_ratio = 4
    spatial_ratio = 8

    def _ratios(self) -> tuple[int, int]:
        config = self.model.config
        return int(config.temporal_compression_ratio), 2 ** (len(config.block_out_channels) - 1)

    def aligned_frames(self, frames: int) -> int:
        """``1 + 2k*s`` frames: CogVideoX's decoder only undoes the time compression
        as ``1 + (t-1)*s`` for an odd number t of latent frames (it gives ``t*s`` for even t)."""
        step = 2 * self.temporal_ratio
        return 1 + -(-(frames - 1) // step) * step


@register_vae("hunyuanvideo")
class HunyuanVideo(DiffusersVideoVAE):
    """HunyuanVideo VAE (AutoencoderKLHunyuanVideo): 16 channels, 4x8x8, scaled by ``scaling_factor``."""

    model_class = "AutoencoderKLHunyuanVideo"
    hub_id = "hunyuanvideo-community/HunyuanVideo"
    latent_channels = 16
    temporal_ratio = 4
    spatial_ratio = 8


@register_vae("ltx-video")
class LTXVideo(_MeanStdNormalised):
    """LTX-Video VAE (AutoencoderKLLTXVideo): 128 channels, 8x32x32.

    Normalised as the LTX pipeline does: ``(z - mean) * scaling_factor / std``
    with the model's ``latents_mean``/``latents_std`` buffers.
    """

    model_class = "AutoencoderKLLTXVideo"
    hub_id = "Lightricks/LTX-Video"
    latent_channels = 128
    temporal_ratio = 8
    spatial_ratio = 32

    def _ratios(self) -> tuple[int, int]:
        return int(self.model.temporal_compression_ratio), int(self.model.spatial_compression_ratio)

    def _statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        scale = float(self.model.config.scaling_factor)
        return self.model.latents_mean.float().cpu(), self.model.latents_std.float().cpu() / scale
