"""TAEF2: the tiny per-frame autoencoder distilled from the FLUX.2 VAE (madebyollin/taesd).

Architecture (TAESD with a GroupNorm "midblock" in the three deepest encoder
blocks and the three first decoder blocks), re-implemented here so the
published fp16 state dicts load with ``torch.load(weights_only=True)``.
32 latent channels, 8x spatial downsampling, no temporal compression; the
network itself maps RGB in ``[0, 1]`` to latents and back.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from latok.errors import CorruptWeightsError, InvalidInputError, WeightsChecksumError
from latok.vae.base import VideoAutoencoder
from latok.vae.registry import register_vae
from latok.weights import WeightFile, find_weight, resolve_weight

logger = logging.getLogger(__name__)

_UPSTREAM = "https://github.com/madebyollin/taesd/raw/main"
TAEF2_ENCODER = WeightFile(
    "taef2_encoder.pth", f"{_UPSTREAM}/taef2_encoder.pth",
    "10a4e1021e89d7551eaf161352da8dbd0b1aa83872ae28b150c1df1ce2f147b6",
)
TAEF2_DECODER = WeightFile(
    "taef2_decoder.pth", f"{_UPSTREAM}/taef2_decoder.pth",
    "0a44a31e1ae59eb9dbf9359d24942fd3ef5928162c1800d97a28c61d51be0ab5",
)

WIDTH = 64  # TAESD feature width at every resolution


def _conv(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class _Clamp(nn.Module):
    """Soft clamp of decoder inputs to (-3, 3), as TAESD was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class _Block(nn.Module):
    """Residual 3-conv block; ``midblock`` adds TAEF2's 1x1 bottleneck with GroupNorm before it."""

    def __init__(self, channels: int, midblock: bool = False):
        super().__init__()
        self.conv = nn.Sequential(
            _conv(channels, channels), nn.ReLU(), _conv(channels, channels), nn.ReLU(), _conv(channels, channels)
        )
        self.skip = nn.Identity()
        self.fuse = nn.ReLU()
        self.pool = None
        if midblock:
            hidden = 4 * channels
            self.pool = nn.Sequential(
                nn.Conv2d(channels, hidden, 1, bias=False),
                nn.GroupNorm(4, hidden),
                nn.ReLU(),
                nn.Conv2d(hidden, channels, 1, bias=False),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


def build_encoder(latent_channels: int = 32) -> nn.Sequential:
    """(N, 3, H, W) in [0, 1] -> (N, latent_channels, H/8, W/8)."""
    w = WIDTH
    return nn.Sequential(
        _conv(3, w), _Block(w),
        _conv(w, w, stride=2, bias=False), _Block(w), _Block(w), _Block(w),
        _conv(w, w, stride=2, bias=False), _Block(w), _Block(w), _Block(w),
        _conv(w, w, stride=2, bias=False), _Block(w, True), _Block(w, True), _Block(w, True),
        _conv(w, latent_channels),
    )  # fmt: skip


def build_decoder(latent_channels: int = 32) -> nn.Sequential:
    """(N, latent_channels, h, w) -> (N, 3, 8h, 8w), roughly in [0, 1]."""
    w = WIDTH
    return nn.Sequential(
        _Clamp(), _conv(latent_channels, w), nn.ReLU(),
        _Block(w, True), _Block(w, True), _Block(w, True), nn.Upsample(scale_factor=2), _conv(w, w, bias=False),
        _Block(w), _Block(w), _Block(w), nn.Upsample(scale_factor=2), _conv(w, w, bias=False),
        _Block(w), _Block(w), _Block(w), nn.Upsample(scale_factor=2), _conv(w, w, bias=False),
        _Block(w), _conv(w, 3),
    )  # fmt: skip


def load_state(module: nn.Module, path: os.PathLike, what: str) -> nn.Module:
    """Load a published state dict (``torch.load(weights_only=True)``: tensors only, no code)."""
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol warning: the error below says all there is
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise TypeError(f"holds a {type(state).__name__}, not a state dict")
        module.load_state_dict(state)
    except Exception as error:  # noqa: BLE001 - truncated zip, foreign pickle, wrong tensors: all one answer
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise CorruptWeightsError(f"{path}: not a readable {what} state dict ({reason})") from None
    return module.eval().requires_grad_(False)


def weight_paths(weights) -> tuple[os.PathLike | None, os.PathLike | None]:
    """``weights`` as (encoder, decoder) lookup paths: ``None``, a folder, or the two files."""
    if isinstance(weights, (tuple, list)):
        if len(weights) == 1:
            weights = weights[0]
        elif len(weights) == 2:
            return weights[0], weights[1]
        else:
            raise InvalidInputError(f"taef2 takes a weights folder or its two files (encoder, decoder), got {len(weights)} paths")
    if weights is not None and Path(weights).is_file():
        raise InvalidInputError(
            f"{weights}: taef2 has two weight files; pass the folder holding {TAEF2_ENCODER.name} and "
            f"{TAEF2_DECODER.name}, or both files (--weights ENCODER.pth --weights DECODER.pth)"
        )
    return weights, weights


@register_vae("taef2")
class TAEF2(VideoAutoencoder):
    """The default backend: TAEF2 applied frame by frame.

    Options:
        weights: a directory holding ``taef2_{encoder,decoder}.pth``, or the two files as an
            ``(encoder, decoder)`` pair (or ``None`` for ``LATOK_WEIGHTS_DIR`` -> cache -> download).
        channels_last: run convolutions in channels-last memory format (default: on; ~1.2-1.3x
            faster on CPU, see eval/bench_vae.py).
        chunk_pixels: pixels per encoder/decoder call (default: one 240p frame on CPU).
        threads: set ``torch.set_num_threads`` (CPU only; ``None`` leaves it alone).
        precision: ``auto`` (default: bf16 where the hardware computes it natively, fp32 elsewhere), ``fp32``,
            ``bf16`` or ``fp16`` (CUDA only); see :mod:`latok.vae.precision`.
    """

    latent_channels = 32
    temporal_ratio = 1
    spatial_ratio = 8
    default_tau = 0.15  # no motion: hold on DAVIS + tokenbench-mini, before they only reported, under the plain rule (eval/README.md, changes)
    default_taus = {"block": 0.15}  # the default decode on the pool validation split, rule in the decoder metric: eval/results/calibrate_pool.md
    # sqrt of the decoder metric's diagonal on the pool validation split: eval/results/decoder_sensitivity_taef2.json
    value_sensitivity = (0.642, 1.383, 1.194, 3.821, 0.721, 1.229, 0.856, 0.915, 3.542, 0.655, 0.639, 0.940, 0.764, 0.626, 0.983, 1.894, 0.732, 0.656, 0.730, 1.829, 0.729, 0.825, 0.982, 0.668, 1.290, 0.911, 1.272, 0.731, 0.738, 1.337, 0.793, 1.324)  # fmt: skip
    # the default decode's PSNR loss from the weighted hold error, block motion, fitted on 41 pool_train clips: eval/results/quality_target_fit.md
    quality_calibration = (0.7283, 1.0758)
    default_target_quality = 0.5  # beats a fixed tau on the pool validation split: eval/results/quality_target_val.md
    auto_bf16_on_cpu = True  # within 0.05 dB of fp32 on DAVIS and tokenbench-mini: eval/results/precision.md
    default_value_step = 0.13  # the largest step within 0.04 dB on the pool validation split: eval/results/value_coding_val_fine.md

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        chunk_pixels: int | None = None,
        channels_last: bool = True,
        threads: int | None = None,
        precision: str | None = None,
    ):
        super().__init__(device=device, dtype=dtype, chunk_pixels=chunk_pixels, precision=precision)
        if threads is not None:
            torch.set_num_threads(threads)
        self.channels_last = channels_last
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        encoder, decoder = weight_paths(weights)
        self.encoder = load_state(build_encoder(self.latent_channels), resolve_weight(TAEF2_ENCODER, encoder), "TAEF2 encoder")
        self.decoder = load_state(build_decoder(self.latent_channels), resolve_weight(TAEF2_DECODER, decoder), "TAEF2 decoder")
        for module in (self.encoder, self.decoder):
            module.to(device=self.device, dtype=self.dtype, memory_format=memory_format)

    @classmethod
    def weights_available(cls, weights: str | os.PathLike | None = None, **options) -> bool:
        try:
            return all(find_weight(file, path) is not None for file, path in zip((TAEF2_ENCODER, TAEF2_DECODER), weight_paths(weights)))
        except (FileNotFoundError, InvalidInputError, WeightsChecksumError):
            return False

    def _frames(self, x: torch.Tensor) -> torch.Tensor:
        """(1, C, T, H, W) -> (T, C, H, W): frames become the batch of the 2-D network."""
        x = x[0].transpose(0, 1)  # (T, C, H, W)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x.contiguous()

    def _encode(self, video: torch.Tensor) -> torch.Tensor:
        latent = self.encoder(self._frames(video).add(1.0).mul(0.5))  # (T, C, h, w); TAEF2 expects [0, 1]
        return latent.transpose(0, 1).unsqueeze(0)  # (1, C, T, h, w)

    def _decode(self, latent: torch.Tensor) -> torch.Tensor:
        video = self.decoder(self._frames(latent)).mul(2.0).sub(1.0)  # (T, 3, H, W) in [-1, 1]
        return video.transpose(0, 1).unsqueeze(0)  # (1, 3, T, H, W)
