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

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from latok.codec import restoration
from latok.codec.bitstream import DEFAULT_CHUNK_FRAMES, LatokWriter, header_of, save_latok
from latok.codec.fill import Fill
from latok.codec.header import MAX_TAU
from latok.codec.masking import Reference, check_rule, redundancy_mask, resolve_tau
from latok.codec.motion import estimate_motion
from latok.codec.reader import LatokReader, load_latok
from latok.codec.restoration import LIT_GUARD_MARGIN, Inpainters, NamedFill
from latok.codec.tokens import AdaptiveLatent, SourceInfo, backend_config_hash, dtype_name
from latok.codec.values import channel_steps
from latok.errors import InvalidInputError
from latok.io import Clip
from latok.vae import VideoAutoencoder, load_vae

logger = logging.getLogger(__name__)

STREAM_CONTEXT_FRAMES = 4  # latent frames of C_fill: restored context carried into the next chunk
MOTIONS = ("none", "global", "block")  # the rule's reference in place, or warped by one translation per latent frame, or per block


class LatentTokenizer:
    """Adaptive tokenizer over a frozen VAE backend.

    Args:
        vae: backend name (see ``latok backends``) or a built :class:`VideoAutoencoder`.
        tau: threshold of the temporal-L1 rule; ``None`` uses the backend's calibrated default.
        target_usage: instead of tau, keep about this fraction of positions (tau picked per clip).
        reference: ``"last-kept"`` (default) or ``"previous"``.
        keyframe_interval: force every K-th latent frame to be kept; ``None`` for off.
        storage_dtype: dtype of the kept values (fp16 default, bf16 or fp32) when they are exact.
        value_step: quantise the kept values with this step (:mod:`latok.codec.values`; per channel,
            scaled by the decoder's sensitivity) and entropy-code them in ``.latok`` files (format
            version 3); ``0`` keeps exact values in ``storage_dtype``; ``None`` (default): the backend's
            ``default_value_step``.
        fill: default fill for :meth:`decode`: ``auto`` (the default: guarded lit where possible,
            else hold), ``zero``, ``hold``, ``interp``, ``lit`` or a callable
            (see :mod:`latok.codec.restoration`).
        inpainter: a checkpoint directory or model for ``lit`` (default: ``checkpoints/<backend>-lit-xs``).
        stream_inpainter: the causal checkpoint or model for ``lit`` in :meth:`decode_stream`
            (default: ``checkpoints/<backend>-lit-xs-causal``).
        lit_guard: when an inpainter is given or shipped for the backend, :meth:`tokenize` runs it
            once and records per latent frame whether it beats hold there (the encoder has the
            true latent; the decoder does not).  ``fill="lit"`` then falls back to hold on the
            frames where it would not: one bit per latent frame in the ``.latok`` header.
        lit_guard_margin: lit must cut hold's latent error on a frame by this fraction to be picked.
        pixel_guard: decide the lit guard on decoded pixels instead: every latent frame where lit's
            latent error is below hold's is decoded with both fills, and keeps lit only where its
            pixels are closer to the input video (the margin is then not used).  The decoded clip
            is then never further from the input than hold's, on any frame.  Costs up to two extra
            frame decodes per such frame at encode; decoding is unchanged.  Needs the video (so
            :meth:`encode`, or :meth:`tokenize` with ``video``) and a per-frame backend (taef2).
        motion: ``"none"`` (default) compares positions in place; ``"global"`` estimates one translation
            per latent frame from the latents (:mod:`latok.codec.motion`), compares against the warped
            reference and stores the translations (format version 2); ``"block"`` also gives each 4x4
            block of latent pixels its own vector where that lowers its mismatch.  hold, interp, the
            inpainter's inputs and the lit guard then all follow the motion.
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
        stream_inpainter=None,
        lit_guard: bool = True,
        lit_guard_margin: float = LIT_GUARD_MARGIN,
        pixel_guard: bool = False,
        motion: str = "block",
        value_step: float | None = None,
        **vae_options,
    ):
        check_rule(tau, target_usage, reference, keyframe_interval)  # before loading anything
        if value_step is not None:
            channel_steps(value_step, None, 1)
        if motion not in MOTIONS:
            raise InvalidInputError(f"motion must be one of {', '.join(MOTIONS)}, got {motion!r}")
        if tau is not None and tau > MAX_TAU:
            raise InvalidInputError(f"tau must be at most {MAX_TAU:g} (a .latok header holds no larger), got {tau}")
        dtype_name(storage_dtype)
        self.vae = load_vae(vae, **vae_options) if isinstance(vae, str) else vae
        self.tau = tau
        self.target_usage = target_usage
        self.reference = reference
        self.keyframe_interval = keyframe_interval
        self.storage_dtype = storage_dtype
        self.fill = fill or restoration.DEFAULT_FILL
        self.inpainters = Inpainters(self.vae.name, self.vae.latent_channels, self.vae.device, inpainter, stream_inpainter)
        self.lit_guard = lit_guard
        if not 0.0 <= lit_guard_margin < 1.0:
            raise InvalidInputError(f"lit_guard_margin must be in [0, 1), got {lit_guard_margin}")
        self.lit_guard_margin = lit_guard_margin
        if pixel_guard:
            restoration.check_per_frame(self.vae)  # fail at construction, not after the encode
        self.pixel_guard = pixel_guard
        self.motion = motion
        self.value_step = self.vae.default_value_step if value_step is None else value_step
        self.value_steps = channel_steps(self.value_step, self.vae.value_sensitivity, self.vae.latent_channels)

    @property
    def default_tau(self) -> float | None:
        """The backend's tau calibrated for this tokenizer's motion (``None`` if it has none)."""
        return getattr(self.vae, "default_taus", {}).get(self.motion, getattr(self.vae, "default_tau", None))

    def resolve_tau(
        self, latent: torch.Tensor | None = None, tau: float | None = None, target_usage: float | None = None, motion: torch.Tensor | None = None
    ) -> float:
        """The one place tau is settled: ``tau`` or ``target_usage`` if given (for ``latent`` and its
        ``motion``), else the tokenizer's own setting, else the backend's calibrated default."""
        if tau is None and target_usage is None:
            tau, target_usage = self.tau, self.target_usage
        return resolve_tau(latent, tau, target_usage, self.default_tau, self.vae.name, self.reference, self.keyframe_interval, motion)

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
        return self.tokenize(self.vae.encode(video), source, tau=tau, target_usage=target_usage, video=video)

    def tokenize(
        self,
        latent: torch.Tensor,
        source: SourceInfo,
        tau: float | None = None,
        target_usage: float | None = None,
        lit_guard: bool | None = None,
        video: torch.Tensor | None = None,
    ) -> AdaptiveLatent:
        """Mask a dense ``(1, C, t, h, w)`` latent and keep the surviving vectors
        (and, unless ``lit_guard`` or the tokenizer's setting says no, :meth:`guard_lit` them;
        ``video``, the ``(1, 3, T, H, W)`` input in ``[-1, 1]``, is needed by the pixel guard)."""
        if tau is None and target_usage is None:
            tau, target_usage = self.tau, self.target_usage
        motion = estimate_motion(latent, model=self.motion) if self.motion != "none" else None
        tau = self.resolve_tau(latent, tau, target_usage, motion)
        mask = redundancy_mask(latent, tau, self.reference, self.keyframe_interval, motion=motion)
        adaptive = self._adaptive(latent, mask.keep, tau, source, target_usage, motion)
        return self.guard_lit(adaptive, latent, video) if (self.lit_guard if lit_guard is None else lit_guard) else adaptive

    def guard_lit(self, adaptive: AdaptiveLatent, latent: torch.Tensor, video: torch.Tensor | None = None) -> AdaptiveLatent:
        """``adaptive`` with its lit guard: per latent frame, does the inpainter restore the
        dropped positions closer to ``latent`` (the truth) than hold does, by at least
        :attr:`lit_guard_margin` of hold's error?

        Errors are squared errors in the inpainter's decoder metric when it has one (about the
        decoded pixel error), else in plain latent units, and are decided on the stored
        (rounded) values, exactly as a decoder will see them.  With :attr:`pixel_guard`, the
        frames where lit wins at all are decided again on decoded pixels against ``video``
        (``(1, 3, T, H, W)`` in ``[-1, 1]``).  Returned unchanged when the backend has no inpainter."""
        if not self.inpainters.available:
            return adaptive
        if self.pixel_guard and video is None:
            raise InvalidInputError("the pixel guard needs the input video: use encode(), or tokenize(..., video=video)")
        return restoration.decide_lit_guard(
            adaptive, latent, self.inpainters, self.vae, video if self.pixel_guard else None, self.lit_guard_margin
        )

    def _adaptive(
        self, latent: torch.Tensor, keep: torch.Tensor, tau: float, source: SourceInfo, target_usage: float | None, motion: torch.Tensor | None = None
    ) -> AdaptiveLatent:
        return AdaptiveLatent.from_dense(
            latent,
            keep,
            dtype=self.storage_dtype,
            value_step=self.value_steps,
            backend=self.vae.name,
            backend_config=backend_config_hash(self.vae),
            tau=tau,
            source=source,
            target_usage=target_usage,
            reference=self.reference,
            keyframe_interval=self.keyframe_interval,
            motion=None if motion is None else motion.float().cpu(),
        )

    def from_pipeline_latents(
        self, name: str, latents: torch.Tensor, fps: float = 24.0, scheduler=None, latent_shape: tuple[int, int, int] | None = None
    ) -> AdaptiveLatent:
        """Tokens of a diffusers pipeline's ``output_type="latent"`` result, without decoding to pixels.

        Args:
            name: the pipeline (:mod:`latok.codec.pipelines`); this tokenizer must run its VAE backend.
            latents: one clip's latents as the pipeline returns them.
            fps: frame rate to record.
            scheduler: the pipeline's scheduler, for the scale of its final latents (Cosmos; default: shipped).
            latent_shape: ``(F, h, w)`` of LTX's packed latents.
        """
        from latok.codec.pipelines import check_backend, from_pipeline

        check_backend(name, self.vae.name)
        latent = from_pipeline(name, latents, scheduler, latent_shape).float()
        if latent.shape[0] != 1 or latent.shape[1] != self.vae.latent_channels:
            raise InvalidInputError(f"one clip of {self.vae.latent_channels}-channel latents expected, got {tuple(latent.shape)}")
        frames, height, width = self.vae.decoded_size(latent.shape)
        return self.tokenize(latent, SourceInfo(frames=frames, height=height, width=width, fps=fps), lit_guard=False)

    # -- decode ---------------------------------------------------------------------------

    @property
    def inpainter(self):
        """The Latent Inpainting Transformer behind ``fill="lit"`` (loaded on first use)."""
        return self.inpainters.model

    @property
    def stream_inpainter(self):
        """The causal inpainter behind ``fill="lit"`` in :meth:`decode_stream` (loaded on first use)."""
        return self.inpainters.stream_model

    def resolve(self, adaptive: AdaptiveLatent, fill: str | Fill | None = None) -> NamedFill:
        """The fill that restores ``adaptive`` (default: the tokenizer's), resolved once:
        ``auto`` becomes ``lit`` or ``hold``, ``lit`` carries the tokens' tau and lit guard.
        Its ``name`` is what reports call it."""
        return restoration.resolve(adaptive, fill or self.fill, self.inpainters)

    def restore(self, adaptive: AdaptiveLatent, fill: str | Fill | None = None) -> torch.Tensor:
        """The full ``(1, C, t, h, w)`` latent with dropped positions filled."""
        self._check_backend(adaptive)
        return adaptive.dense(self.resolve(adaptive, fill))

    def decode(self, adaptive: AdaptiveLatent, fill: str | Fill | None = None) -> torch.Tensor:
        """``(1, 3, T, H, W)`` float32 in ``[-1, 1]`` at the encoded video's size."""
        source = adaptive.source
        return self.vae.decode(self.restore(adaptive, fill), size=(source.frames, source.height, source.width))

    def _check_backend(self, adaptive: AdaptiveLatent) -> None:
        self.check_backend(adaptive.backend, adaptive.backend_config)

    def check_backend(self, backend: str, config: str) -> None:
        """Refuse tokens of another backend or backend config (a header's ``backend``/``backend_config``),
        e.g. before a file's clip is read."""
        if backend != self.vae.name or config != backend_config_hash(self.vae):
            raise InvalidInputError(
                f"tokens come from backend {backend!r} ({config}); this tokenizer "
                f"runs {self.vae.name!r} ({backend_config_hash(self.vae)})"
            )

    # -- streams ---------------------------------------------------------------------------

    def encode_stream(
        self,
        chunks: Iterable[torch.Tensor | Clip],
        path: str | os.PathLike,
        tau: float | None = None,
        fps: float | None = None,
        carry_selection: bool = True,
    ) -> StreamSummary:
        """Encode a video of any length chunk by chunk into a ``.latok`` file, written as it goes.

        Args:
            chunks: consecutive pieces of one video, each ``(1, 3, k, H, W)`` in ``[-1, 1]``
                or a :class:`latok.io.Clip` (e.g. from :func:`latok.io.stream_clip`).
            path: the ``.latok`` file; it appears only when the stream ends without error.
            tau: masking threshold (default: the tokenizer's, else the backend's calibrated one).
                Streams need one fixed tau: a target usage would pick it per chunk.
            fps: frame rate to record when chunks are tensors (default 24).
            carry_selection: carry the selection cache C_sel (each position's last-kept
                reference) across chunks, so only the stream's first frame is forced and the
                mask equals the offline one.  ``False`` restarts masking at every chunk (for
                ablations: every chunk then starts with a fully kept frame).

        Memory stays that of one chunk however long the stream is.
        """
        if self.vae.temporal_ratio != 1:
            raise InvalidInputError(
                f"streaming needs a per-frame backend; {self.vae.name} compresses {self.vae.temporal_ratio} frames per latent frame"
            )
        if tau is None and self.tau is None and self.target_usage is not None:
            raise InvalidInputError("streaming needs a fixed tau; a target usage would pick a different tau per chunk")
        tau = self.resolve_tau(tau=tau if tau is not None else self.tau)
        writer, state, first, before = None, None, None, None
        usage: list[float] = []
        try:
            for chunk in chunks:
                video, source = source_info(chunk, fps)
                if first is None:
                    first = source
                elif (source.height, source.width) != (first.height, first.width):
                    raise InvalidInputError(f"stream chunks must keep one frame size: {first.width}x{first.height}, then {source.width}x{source.height}")
                latent = self.vae.encode(video)
                motion = None
                if self.motion != "none":  # the frame before the chunk is all the estimate carries across
                    motion = estimate_motion(latent, previous=before if carry_selection else None, model=self.motion)
                    before = latent[:, :, -1]
                mask = redundancy_mask(latent, tau, self.reference, self.keyframe_interval, state if carry_selection else None, motion=motion)
                state = mask.state
                adaptive = self._adaptive(latent, mask.keep, tau, replace(first, frames=None), None, motion)
                if writer is None:
                    header = header_of(adaptive, chunk_frames=latent.shape[2])
                    header["shape"][2] = None
                    writer = LatokWriter(path, header)
                writer.write_chunk(adaptive.keep, adaptive.values, video_frames=source.frames, motion=adaptive.motion)
                usage += mask.usage_per_frame[0].tolist()
            if writer is None:
                raise InvalidInputError("the stream holds no frames")
            writer.close()
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        return StreamSummary(path=Path(path), frames=writer.header["source"]["frames"], shape=tuple(writer.header["shape"]),
                             tokens=writer.tokens, usage_per_frame=usage, bytes=Path(path).stat().st_size)  # fmt: skip

    def decode_stream(
        self,
        path: str | os.PathLike,
        fill: str | Fill | None = None,
        context_frames: int = STREAM_CONTEXT_FRAMES,
    ) -> Iterator[torch.Tensor]:
        """Decode a ``.latok`` file chunk by chunk; yields ``(1, 3, k, H, W)`` video pieces in order.

        The fill cache C_fill carries the last ``context_frames`` restored latent frames into
        the next chunk: they are the fill's temporal context (marked kept), so ``hold`` continues
        exactly as offline, and ``lit`` runs the causal :attr:`stream_inpainter` over
        ``[C_fill, chunk]`` (unguarded: the default ``auto`` is ``hold`` here).  ``interp``
        cannot look past the chunk and holds there instead.
        """
        if context_frames < 1:
            raise InvalidInputError(f"context frames must be >= 1, got {context_frames}")
        with LatokReader(path) as reader:
            header = reader.header
            self.check_backend(header["backend"], str(header["backend_config"]))
            fill = self.resolve_stream(header, fill)
            _, channels, _, height, width = header["shape"]
            source = header["source"]
            context = None  # C_fill: (1, C, <=K, h, w) restored latents
            done = 0
            for keep, values, motion in reader.chunks():
                sparse = torch.zeros(1, keep.shape[1], height, width, channels)
                sparse[keep] = values.float()
                sparse = sparse.permute(0, 4, 1, 2, 3)  # (1, C, k, h, w)
                if context is None:
                    restored = fill(sparse, keep, motion)
                else:
                    known = torch.ones(1, context.shape[2], height, width, dtype=torch.bool)
                    if motion is not None:  # context frames are kept: their translations never move anything
                        motion = torch.cat([motion.new_zeros(1, context.shape[2], *motion.shape[2:]), motion], dim=1)
                    restored = fill(torch.cat([context, sparse], dim=2), torch.cat([known, keep], dim=1), motion)[:, :, context.shape[2] :]
                context = restored if context is None else torch.cat([context, restored], dim=2)
                context = context[:, :, -context_frames:]
                frames = min(keep.shape[1], source["frames"] - done)
                done += frames
                yield self.vae.decode(restored, size=(frames, source["height"], source["width"]))

    def resolve_stream(self, header: dict, fill: str | Fill | None = None) -> NamedFill:
        """The fill :meth:`decode_stream` restores the stream of ``header`` with (the streaming rule)."""
        return restoration.resolve_stream(float(header["tau"]), header["reference"], fill or self.fill, self.inpainters, header["motion"] is not None)

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


@dataclass(frozen=True)
class StreamSummary:
    """What :meth:`LatentTokenizer.encode_stream` wrote.

    Attributes:
        path: the ``.latok`` file.
        frames: video frames encoded.
        shape: ``(1, C, t, h, w)`` of the whole latent.
        tokens: kept latent vectors.
        usage_per_frame: kept fraction of every latent frame, in order.
        bytes: file size.
    """

    path: Path
    frames: int
    shape: tuple[int, int, int, int, int]
    tokens: int
    usage_per_frame: list[float]
    bytes: int

    @property
    def token_usage(self) -> float:
        _, _, frames, height, width = self.shape
        return self.tokens / (frames * height * width)

    def as_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path), "token_usage": self.token_usage}
