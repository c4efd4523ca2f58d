"""``LatentTokenizer``: video -> :class:`AdaptiveLatent` -> video.

Inference is one encoder pass, one mask pass, one fill and one decoder pass::

    tokenizer = LatentTokenizer("taef2")
    adaptive = tokenizer.encode(video)              # (1, 3, T, H, W) in [-1, 1] -> kept tokens
    tokenizer.save(adaptive, "clip.latok")
    video = tokenizer.decode(tokenizer.load("clip.latok"), fill="hold")

The steps are public too (``vae.encode``, :meth:`tokenize`, :meth:`restore`,
``vae.decode``) so callers can time or replace any of them.
"""

from __future__ import annotations

import functools

import os
from pathlib import Path

import torch

from latok.bitstream import DEFAULT_CHUNK_FRAMES, load_latok, save_latok
from latok.errors import InvalidInputError
from latok.fill import Fill
from latok.io import Clip
from latok.masking import Reference, redundancy_mask, resolve_tau
from latok.tokens import AdaptiveLatent, SourceInfo, backend_config_hash, dtype_name
from latok.vae import VideoAutoencoder, load_vae

CHECKPOINTS_ENV = "LATOK_CHECKPOINTS_DIR"
INPAINTER_PRESET = "xs"  # the shipped CPU-sized inpainter


def checkpoints_dir() -> Path:
    """``$LATOK_CHECKPOINTS_DIR``, or ``checkpoints/`` of this source tree."""
    return Path(os.environ.get(CHECKPOINTS_ENV) or Path(__file__).resolve().parents[1] / "checkpoints")


def default_inpainter_path(backend: str) -> Path:
    return checkpoints_dir() / f"{backend}-lit-{INPAINTER_PRESET}"


def default_fill(backend: str) -> str:
    """The fill :meth:`LatentTokenizer.decode` uses unless told otherwise: ``"hold"``.

    The shipped ``taef2-lit-xs`` beats hold by 1.1 dB on held-out DAVIS at 50 % usage and
    is within 0.2 dB of it on 11 of 12 tokenbench-mini clips at the default tau, but loses
    1.3 dB on one (robot_bridge_banana; eval/results/inpainter_eval_taef2-lit-xs.md), so
    ``lit`` is opt-in until a checkpoint is never worse than hold.
    """
    return "hold"


class LatentTokenizer:
    """Adaptive tokenizer over a frozen VAE backend.

    Args:
        vae: backend name (see ``latok backends``) or a built :class:`VideoAutoencoder`.
        tau: threshold of the temporal-L1 rule; ``None`` uses the backend's calibrated default.
        target_usage: instead of tau, keep about this fraction of positions (tau picked per clip).
        reference: ``"last-kept"`` (default) or ``"previous"``.
        keyframe_interval: force every K-th latent frame to be kept; ``None`` for off.
        storage_dtype: dtype of the kept values (fp16 default, bf16 or fp32).
        fill: default fill for :meth:`decode`: ``zero``, ``hold``, ``interp``, ``lit`` or a callable;
            ``None`` picks :func:`default_fill` (``hold``).
        inpainter: a checkpoint directory or model for ``lit`` (default: ``checkpoints/<backend>-lit-xs``).
        **vae_options: passed to :func:`latok.load_vae` when ``vae`` is a name.
    """

    def __init__(
        self,
        vae: str | VideoAutoencoder = "taef2",
        tau: float | None = None,
        target_usage: float | None = None,
        reference: Reference = "last-kept",
        keyframe_interval: int | None = None,
        storage_dtype: torch.dtype = torch.float16,
        fill: str | Fill | None = None,
        inpainter=None,
        **vae_options,
    ):
        self.vae = load_vae(vae, **vae_options) if isinstance(vae, str) else vae
        dtype_name(storage_dtype)
        self.tau = tau
        self.target_usage = target_usage
        self.reference = reference
        self.keyframe_interval = keyframe_interval
        self.storage_dtype = storage_dtype
        self.fill = fill or default_fill(self.vae.name)
        self._inpainter = inpainter

    @property
    def default_tau(self) -> float:
        tau = getattr(self.vae, "default_tau", None)
        if tau is None:
            raise InvalidInputError(
                f"backend {self.vae.name} has no calibrated default tau; pass tau or target usage"
            )
        return tau

    # -- encode ---------------------------------------------------------------------------

    def encode(
        self,
        video: torch.Tensor | Clip,
        tau: float | None = None,
        target_usage: float | None = None,
        fps: float | None = None,
    ) -> AdaptiveLatent:
        """Encode one clip.

        Args:
            video: ``(1, 3, T, H, W)`` float in ``[-1, 1]``, or a :class:`latok.io.Clip`
                (which also carries fps and framing).
            tau, target_usage: override the tokenizer's settings for this clip.
            fps: frame rate to record when ``video`` is a tensor (default 24).
        """
        video, source = source_info(video, fps)
        return self.tokenize(self.vae.encode(video), source, tau=tau, target_usage=target_usage)

    def tokenize(
        self,
        latent: torch.Tensor,
        source: SourceInfo,
        tau: float | None = None,
        target_usage: float | None = None,
    ) -> AdaptiveLatent:
        """Mask a dense ``(1, C, t, h, w)`` latent and keep the surviving vectors."""
        if tau is None and target_usage is None:
            tau, target_usage = self.tau, self.target_usage
        default = self.default_tau if tau is None and target_usage is None else 0.0
        tau = resolve_tau(latent, tau, target_usage, default, self.reference, self.keyframe_interval)
        mask = redundancy_mask(latent, tau, self.reference, self.keyframe_interval)
        return AdaptiveLatent.from_dense(
            latent,
            mask.keep,
            dtype=self.storage_dtype,
            backend=self.vae.name,
            backend_config=backend_config_hash(self.vae),
            tau=tau,
            source=source,
            target_usage=target_usage,
            reference=self.reference,
            keyframe_interval=self.keyframe_interval,
        )

    # -- decode ---------------------------------------------------------------------------

    def restore(self, adaptive: AdaptiveLatent, fill: str | Fill | None = None) -> torch.Tensor:
        """The full ``(1, C, t, h, w)`` latent with dropped positions filled."""
        self._check_backend(adaptive)
        fill = fill or self.fill
        if fill == "lit":
            fill = functools.partial(self.lit_fill, tau=adaptive.tau, reference=adaptive.reference)
        return adaptive.to_dense(fill)

    @property
    def inpainter(self):
        """The Latent Inpainting Transformer behind ``fill="lit"`` (loaded on first use)."""
        from latok.inpainter import InpaintingTransformer

        if not isinstance(self._inpainter, InpaintingTransformer):
            path = self._inpainter or default_inpainter_path(self.vae.name)
            self._inpainter = InpaintingTransformer.from_pretrained(path, device=self.vae.device)
            if self._inpainter.config.latent_channels != self.vae.latent_channels:
                raise InvalidInputError(
                    f"inpainter {path} expects {self._inpainter.config.latent_channels} latent channels, "
                    f"backend {self.vae.name} has {self.vae.latent_channels}"
                )
        return self._inpainter

    def lit_fill(
        self, latent: torch.Tensor, keep: torch.Tensor, tau: float | None = None, reference: Reference = "last-kept"
    ) -> torch.Tensor:
        """Fill strategy running the inpainter on the backend's device.

        ``tau`` and ``reference`` are those that made the mask; they bound where a dropped
        value can lie (``None``: unknown, no bound)."""
        model = self.inpainter
        with torch.inference_mode():
            restored = model(latent.to(self.vae.device), keep.to(self.vae.device), tau, reference)
        return restored.float().to(latent.device)

    def decode(self, adaptive: AdaptiveLatent, fill: str | Fill | None = None) -> torch.Tensor:
        """``(1, 3, T, H, W)`` float32 in ``[-1, 1]`` at the encoded video's size."""
        source = adaptive.source
        return self.vae.decode(self.restore(adaptive, fill), size=(source.frames, source.height, source.width))

    def _check_backend(self, adaptive: AdaptiveLatent) -> None:
        if adaptive.backend != self.vae.name or adaptive.backend_config != backend_config_hash(self.vae):
            raise InvalidInputError(
                f"tokens come from backend {adaptive.backend!r} ({adaptive.backend_config}); this tokenizer "
                f"runs {self.vae.name!r} ({backend_config_hash(self.vae)})"
            )

    # -- files ----------------------------------------------------------------------------

    @staticmethod
    def save(adaptive: AdaptiveLatent, path: str | os.PathLike, chunk_frames: int = DEFAULT_CHUNK_FRAMES):
        """Write a ``.latok`` file atomically."""
        return save_latok(adaptive, path, chunk_frames)

    @staticmethod
    def load(path: str | os.PathLike) -> AdaptiveLatent:
        """Read a ``.latok`` file (raises :class:`~latok.errors.LatokFormatError` if malformed)."""
        return load_latok(path)


def source_info(video: torch.Tensor | Clip, fps: float | None = None) -> tuple[torch.Tensor, SourceInfo]:
    """Split a clip (or a bare ``(1, 3, T, H, W)`` tensor at ``fps``, default 24) into its video and :class:`SourceInfo`."""
    if isinstance(video, Clip):
        tensor = video.video
        _, _, frames, height, width = tensor.shape
        return tensor, SourceInfo(
            frames=frames, height=height, width=width, fps=video.fps,
            source_size=video.source_size, resized_size=video.resized_size, crop=video.crop,
        )  # fmt: skip
    if not isinstance(video, torch.Tensor) or video.ndim != 5 or video.shape[0] != 1:
        shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
        raise InvalidInputError(f"encode takes one clip (1, 3, T, H, W) or a latok.io.Clip, got {shape}")
    _, _, frames, height, width = video.shape
    return video, SourceInfo(frames=frames, height=height, width=width, fps=24.0 if fps is None else fps)
