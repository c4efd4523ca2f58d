"""``LatentTokenizer``: video -> :class:`AdaptiveLatent` -> video, a thin facade over the codec's stages.

Inference is one encoder pass, one mask pass, one fill and one decoder pass::

    tokenizer = LatentTokenizer("taef2")
    adaptive = tokenizer.encode(video)              # (1, 3, T, H, W) in [-1, 1] -> kept tokens
    tokenizer.save(adaptive, "clip.latok")
    video = tokenizer.decode(tokenizer.load("clip.latok"), fill="hold")

The stages are public too: the rule (:mod:`latok.codec.rule`), restoration (:mod:`latok.codec.restore`),
the file (:mod:`latok.codec.format`) and interop (:mod:`latok.codec.interop`); streams are
:mod:`latok.codec.streams`.  Every choice that shapes the tokens is one :class:`CodecSettings`.
"""

from __future__ import annotations

import os
from dataclasses import replace
from collections.abc import Iterable, Iterator

import torch

from latok.codec import streams
from latok.codec.format.reader import load_latok
from latok.codec.format.writer import DEFAULT_CHUNK_FRAMES, save_latok
from latok.codec.quantise import channel_steps
from latok.codec.restore import resolve as restoration
from latok.codec.restore.fills import Fill
from latok.codec.restore.guard import check_per_frame, decide_lit_guard
from latok.codec.restore.quality import QualityCalibration, check_frames, checked_calibration, decoded_loss, hold_error, tau_for_quality
from latok.codec.rule.masking import MaskState, in_rule_metric, redundancy_mask, resolve_tau
from latok.codec.rule.motion import estimate_motion
from latok.codec.settings import CodecSettings, check_rate
from latok.codec.streams import STREAM_CONTEXT_FRAMES, StreamSummary, source_info
from latok.codec.tokens import AdaptiveLatent, SourceInfo, backend_config_hash, rule_weights
from latok.errors import InvalidInputError
from latok.io import Clip
from latok.vae import VideoAutoencoder, load_vae


class LatentTokenizer:
    """Adaptive tokenizer over a frozen VAE backend.

    Args:
        vae: backend name (see ``latok backends``) or a built :class:`VideoAutoencoder`.
        settings: the :class:`CodecSettings` (τ or target usage, reference, keyframes, motion, value
            step, storage dtype, lit guard); or give any of its fields as keywords (``tau=0.2``,
            ``motion="none"``, ...), not both.
        fill: default fill for :meth:`decode`: ``auto`` (guarded lit where possible, else hold),
            ``zero``, ``hold``, ``interp``, ``lit`` or a callable (:mod:`latok.codec.restore.resolve`).
        inpainter: a checkpoint directory or model for ``lit`` (default: ``checkpoints/<backend>-lit-xs``).
        **options: :class:`CodecSettings` fields; anything else goes to :func:`latok.load_vae`: ``device``, weights,
            ``precision`` (``"auto"``, the default: bf16 where the hardware computes it natively, else fp32;
            ``"fp32"``, ``"bf16"``, ``"fp16"`` on CUDA; :mod:`latok.vae.precision`).
    """

    def __init__(self, vae: str | VideoAutoencoder = "taef2", settings: CodecSettings | None = None, fill: str | Fill | None = None,
                 inpainter=None, **options):  # fmt: skip
        chosen = {name: options.pop(name) for name in CodecSettings.names() if name in options}
        if settings is not None and chosen:
            raise InvalidInputError(f"give settings or {', '.join(chosen)}, not both")
        self.settings = settings or CodecSettings(**chosen)  # validated before anything loads
        self.vae = load_vae(vae, **options) if isinstance(vae, str) else vae
        if self.settings.pixel_guard:
            check_per_frame(self.vae)  # fail at construction, not after the encode
        self.fill = fill or restoration.DEFAULT_FILL
        self.inpainters = restoration.Inpainters(self.vae.name, self.vae.latent_channels, self.vae.device, inpainter)
        self.value_step = self.settings.value_step_for(self.vae)
        self.value_steps = channel_steps(self.value_step, self.vae.value_sensitivity, self.vae.latent_channels)

    @property
    def default_tau(self) -> float | None:
        """The backend's tau calibrated for this tokenizer's motion (``None`` if it has none)."""
        return self.vae.default_taus.get(self.settings.motion, self.vae.default_tau)

    @property
    def rule_weights(self) -> tuple[float, ...] | None:
        """The rule's channel weights under the settings' ``rule_metric`` (``None``: the plain rule)."""
        return rule_weights(self.settings.rule_metric, self.vae.value_sensitivity)

    @property
    def default_target_quality(self) -> float | None:
        """The backend's default PSNR loss budget (dB), where it has a quality calibration (else ``None``)."""
        return self.vae.default_target_quality if self.vae.quality_calibration is not None else None

    def rate(self, tau: float | None = None, target_usage: float | None = None, target_quality: float | None = None) -> tuple:
        """``(tau, target_usage, target_quality)`` in force: the one given, else the settings', else the backend's
        default quality target, else (all ``None``) its calibrated default tau."""
        if tau is None and target_usage is None and target_quality is None:
            s = self.settings
            tau, target_usage, target_quality = s.tau, s.target_usage, s.target_quality
            if tau is None and target_usage is None and target_quality is None:
                target_quality = self.default_target_quality
        check_rate(tau, target_usage, target_quality)
        return tau, target_usage, target_quality

    def resolve_tau(self, latent: torch.Tensor | None = None, tau: float | None = None, target_usage: float | None = None,
                    motion: torch.Tensor | None = None, target_quality: float | None = None, state: MaskState | None = None,
                    context: torch.Tensor | None = None) -> float:  # fmt: skip
        """The one place tau is settled, from :meth:`rate`: a fixed tau, or one picked for ``latent`` (and its
        ``motion``) by a target usage or quality, or the backend's calibrated default.  ``latent`` is the
        clip's own; the rule measures it in its metric (:attr:`rule_weights`).  A stream chunk's quality target
        takes the caches it continues (``state``: C_sel, ``context``: C_fill; :func:`~latok.codec.restore.quality.hold_error`)."""
        s = self.settings
        tau, target_usage, target_quality = self.rate(tau, target_usage, target_quality)
        if target_quality is not None:
            if latent is None:
                raise InvalidInputError("a target quality picks tau per clip: it needs the clip's latent")
            if self.vae.quality_calibration is None:
                raise InvalidInputError(f"backend {self.vae.name} has no quality calibration; pass tau or target usage")
            calibration = QualityCalibration(*self.vae.quality_calibration)
            return tau_for_quality(latent, target_quality, calibration, self.vae.value_sensitivity, s.reference, s.keyframe_interval, motion,
                                   self.rule_weights, start=self.default_tau, state=state, context=context)  # fmt: skip
        measured = None if latent is None else in_rule_metric(latent.float(), self.rule_weights)
        return resolve_tau(measured, tau, target_usage, self.default_tau, self.vae.name, s.reference, s.keyframe_interval, motion)

    # -- encode ---------------------------------------------------------------------------

    def encode(self, video: torch.Tensor | Clip, tau: float | None = None, target_usage: float | None = None, fps: float | None = None,
               target_quality: float | None = None) -> AdaptiveLatent:  # fmt: skip
        """Encode one clip: ``video`` is ``(1, 3, T, H, W)`` float in ``[-1, 1]``, or a :class:`latok.io.Clip`
        (which also carries fps and framing); ``tau``/``target_usage``/``target_quality`` override the settings
        for this clip; ``fps`` is recorded when ``video`` is a tensor (default 24)."""
        video, source = source_info(video, fps)
        return self.tokenize(self.vae.encode(video), source, tau=tau, target_usage=target_usage, video=video, target_quality=target_quality)

    def tokenize(self, latent: torch.Tensor, source: SourceInfo, tau: float | None = None, target_usage: float | None = None,
                 lit_guard: bool | None = None, video: torch.Tensor | None = None, target_quality: float | None = None) -> AdaptiveLatent:  # fmt: skip
        """Mask a dense ``(1, C, t, h, w)`` latent and keep the surviving vectors (and, unless ``lit_guard``
        or the settings say no, :meth:`guard_lit` them; the pixel guard needs ``video``, ``(1, 3, T, H, W)``)."""
        s = self.settings
        tau, target_usage, target_quality = self.rate(tau, target_usage, target_quality)
        motion = estimate_motion(latent, s.motion)  # None without a motion model
        guard = s.lit_guard if lit_guard is None else lit_guard

        def masked(tau: float) -> tuple[AdaptiveLatent, torch.Tensor | None]:
            keep = redundancy_mask(in_rule_metric(latent.float(), self.rule_weights), tau, s.reference, s.keyframe_interval, motion=motion).keep
            adaptive = self.tokens(latent, keep, tau, source, target_usage, motion, target_quality)
            return self._guarded(adaptive, latent, video) if guard else (adaptive, None)

        adaptive, restored = masked(self.resolve_tau(latent, tau, target_usage, motion, target_quality))
        if target_quality is not None and video is not None and s.quality_check_frames and self.vae.temporal_ratio == 1 and adaptive.tau > 0:
            checked = self.checked_tau(adaptive, latent, video, target_quality, motion, restored if self.fill == "auto" else None)
            if checked != adaptive.tau:
                adaptive, _ = masked(checked)
        return adaptive

    def checked_tau(self, adaptive: AdaptiveLatent, latent: torch.Tensor, video: torch.Tensor, target_quality: float,
                    motion: torch.Tensor | None = None, restored: torch.Tensor | None = None, state: MaskState | None = None,
                    context: torch.Tensor | None = None) -> float:  # fmt: skip
        """The quality target's tau searched again after checking the prediction at ``adaptive``'s tau on
        decoded frames (:func:`~latok.codec.restore.quality.checked_calibration`): the decode's loss against the full
        rate on ``quality_check_frames`` frames, over the loss the map predicted there (``motion``: the clip's, as the
        mask used; ``restored``: the restoration of ``adaptive`` the decode will give, default this tokenizer's fill's,
        offline; given, it saves an inpainter run.  A stream chunk passes its restoration as the stream's default decode
        gives it, as its lit weights model it, and the caches it continues, as :meth:`resolve_tau` takes them)."""
        s = self.settings
        calibration = QualityCalibration(*self.vae.quality_calibration)
        frames = check_frames(latent.shape[2], s.quality_check_frames)
        if not frames:  # one latent frame (a stream's last chunk, say): the map alone
            return adaptive.tau
        if restored is None:
            restored = self.restore(adaptive)
        measured = decoded_loss(self.vae, restored, latent, video, frames)
        error = hold_error(latent, adaptive.tau, self.vae.value_sensitivity, s.reference, s.keyframe_interval, motion, self.rule_weights,
                           state=state, context=context)  # fmt: skip
        corrected = checked_calibration(calibration, calibration.loss_db(error), measured)
        return tau_for_quality(latent, target_quality, corrected, self.vae.value_sensitivity, s.reference, s.keyframe_interval, motion,
                               self.rule_weights, start=adaptive.tau, state=state, context=context)  # fmt: skip

    def guard_lit(self, adaptive: AdaptiveLatent, latent: torch.Tensor, video: torch.Tensor | None = None) -> AdaptiveLatent:
        """``adaptive`` with its lit guard (:func:`latok.codec.restore.guard.decide_lit_guard`), decided against
        ``latent``, the truth (and ``video`` with the pixel guard); unchanged when the backend has no inpainter."""
        return self._guarded(adaptive, latent, video)[0]

    def _guarded(self, adaptive: AdaptiveLatent, latent: torch.Tensor, video: torch.Tensor | None = None) -> tuple[AdaptiveLatent, torch.Tensor | None]:
        """:meth:`guard_lit` and the guarded restoration from the same inpainter run (``None`` without an inpainter)."""
        if not self.inpainters.available:
            return adaptive, None
        if self.settings.pixel_guard and video is None:
            raise InvalidInputError("the pixel guard needs the input video: use encode(), or tokenize(..., video=video)")
        pixels = video if self.settings.pixel_guard else None
        return decide_lit_guard(adaptive, latent, self.inpainters, self.vae, pixels, self.settings.lit_guard_margin, self.settings.lit_tile)

    def tokens(self, latent: torch.Tensor, keep: torch.Tensor, tau: float, source: SourceInfo, target_usage: float | None,
               motion: torch.Tensor | None = None, target_quality: float | None = None) -> AdaptiveLatent:  # fmt: skip
        """The :class:`AdaptiveLatent` of ``latent`` under ``keep``, stored as the settings say."""
        s = self.settings
        return AdaptiveLatent.from_dense(
            latent, keep, dtype=s.storage_dtype, value_step=self.value_steps, backend=self.vae.name,
            backend_config=backend_config_hash(self.vae), tau=tau, source=source, target_usage=target_usage,
            reference=s.reference, keyframe_interval=s.keyframe_interval,
            motion=None if motion is None else motion.float().cpu(), motion_model=None if motion is None else s.motion,
            precision=self.vae.precision, target_quality=target_quality,
            rule_metric="latent" if self.rule_weights is None else s.rule_metric,
        )  # fmt: skip

    def from_pipeline_latents(self, name: str, latents: torch.Tensor, fps: float = 24.0, scheduler=None,
                              latent_shape: tuple[int, int, int] | None = None) -> AdaptiveLatent:  # fmt: skip
        """Tokens of a diffusers pipeline's ``output_type="latent"`` result (:mod:`latok.codec.interop.pipelines`),
        without decoding to pixels: ``latents`` is one clip's, ``scheduler`` the pipeline's (Cosmos' final
        scale), ``latent_shape`` the ``(F, h, w)`` of LTX's packed latents."""
        from latok.codec.interop.pipelines import check_backend, from_pipeline

        check_backend(name, self.vae.name)
        latent = from_pipeline(name, latents, scheduler, latent_shape).float()
        if latent.shape[0] != 1 or latent.shape[1] != self.vae.latent_channels:
            raise InvalidInputError(f"one clip of {self.vae.latent_channels}-channel latents expected, got {tuple(latent.shape)}")
        frames, height, width = self.vae.decoded_size(latent.shape)
        adaptive = self.tokenize(latent, SourceInfo(frames=frames, height=height, width=width, fps=fps), lit_guard=False)
        return replace(adaptive, precision=None)  # the pipeline encoded them, not this tokenizer's autoencoder

    # -- decode ---------------------------------------------------------------------------

    @property
    def inpainter(self):
        """The Latent Inpainting Transformer behind ``fill="lit"`` (loaded on first use)."""
        return self.inpainters.model

    def resolve(self, adaptive: AdaptiveLatent, fill: str | Fill | None = None) -> restoration.NamedFill:
        """The fill that restores ``adaptive`` (default: the tokenizer's), resolved once: ``auto`` becomes
        ``lit`` or ``hold``, ``lit`` carries the tokens' tau and lit guard; its ``name`` is what reports call it."""
        return restoration.resolve(adaptive, fill or self.fill, self.inpainters)

    def restore(self, adaptive: AdaptiveLatent, fill: str | Fill | None = None, native: bool = False) -> torch.Tensor:
        """The full ``(1, C, t, h, w)`` float32 latent with dropped positions filled, e.g. for a generator:
        in latok's normalised space, or with ``native`` the autoencoder's own (what its ``decode`` takes)."""
        self.check_backend(adaptive.backend, adaptive.backend_config)
        return restoration.restore(adaptive, fill or self.fill, self.inpainters, native=native, vae=self.vae)

    def decode(self, adaptive: AdaptiveLatent, fill: str | Fill | None = None) -> torch.Tensor:
        """``(1, 3, T, H, W)`` float32 in ``[-1, 1]`` at the encoded video's size."""
        source = adaptive.source
        return self.vae.decode(self.restore(adaptive, fill), size=(source.frames, source.height, source.width))

    def for_pipeline(self, adaptive: AdaptiveLatent, name: str, fill: str | Fill | None = "hold", scheduler=None) -> torch.Tensor:
        """Exactly the tensor diffusers pipeline ``name``'s ``latents=`` takes (:mod:`latok.codec.interop.pipelines`):
        ``"wan"``, ``"cogvideox"``, ``"hunyuanvideo"``, ``"ltx-video"`` or ``"cosmos"``, from tokens of that
        pipeline's VAE backend restored with ``fill``; ``scheduler``: the pipeline's, for the scales it applies."""
        from latok.codec.interop.pipelines import check_backend, to_pipeline

        check_backend(name, adaptive.backend)
        return to_pipeline(name, self.restore(adaptive, fill), scheduler)

    def check_backend(self, backend: str, config: str) -> None:
        """Refuse tokens of another backend or backend config (a header's ``backend``/``backend_config``)."""
        if backend != self.vae.name or config != backend_config_hash(self.vae):
            raise InvalidInputError(
                f"tokens come from backend {backend!r} ({config}); this tokenizer runs {self.vae.name!r} ({backend_config_hash(self.vae)})"
            )

    # -- streams and files ----------------------------------------------------------------

    def encode_stream(self, chunks: Iterable[torch.Tensor | Clip], path: str | os.PathLike, tau: float | None = None,
                      fps: float | None = None, carry_selection: bool = True, target_quality: float | None = None) -> StreamSummary:  # fmt: skip
        """Encode a video of any length chunk by chunk into a ``.latok`` file, at a fixed tau or a quality target per
        chunk (:func:`latok.codec.streams.encode_stream`)."""
        return streams.encode_stream(self, chunks, path, tau, fps, carry_selection, target_quality)

    def decode_stream(self, path: str | os.PathLike, fill: str | Fill | None = None, context_frames: int = STREAM_CONTEXT_FRAMES) -> Iterator[torch.Tensor]:
        """Decode a ``.latok`` file chunk by chunk, ``(1, 3, k, H, W)`` pieces in order (:func:`latok.codec.streams.decode_stream`)."""
        return streams.decode_stream(self, path, fill, context_frames)

    def resolve_stream(self, header: dict, fill: str | Fill | None = None, guard: torch.Tensor | None = None,
                       tau: float | None = None) -> restoration.NamedFill:  # fmt: skip
        """The fill :meth:`decode_stream` restores the stream of ``header`` with (the streaming rule; ``guard``: a chunk's
        lit weights over its context and itself; ``tau``: the chunk's, where the stream has one per chunk, else the header's)."""
        weights = rule_weights(header["rule_metric"] or "latent", self.vae.value_sensitivity)
        tau = float(header["tau"] if tau is None else tau)
        return restoration.resolve_stream(tau, header["reference"], fill or self.fill, self.inpainters, weights, guard)

    @staticmethod
    def save(adaptive: AdaptiveLatent, path: str | os.PathLike, chunk_frames: int = DEFAULT_CHUNK_FRAMES):
        """Write a ``.latok`` file atomically."""
        return save_latok(adaptive, path, chunk_frames)

    @staticmethod
    def load(path: str | os.PathLike) -> AdaptiveLatent:
        """Read a ``.latok`` file (raises :class:`~latok.errors.LatokFormatError` if malformed)."""
        return load_latok(path)
