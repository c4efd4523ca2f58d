"""Streams: a video of any length, chunk by chunk, into a ``.latok`` file and back, with memory of one chunk.

The rule carries its selection cache C_sel across chunks (so the mask equals the offline one) and the
decoder its fill cache C_fill (the last restored latent frames, the fill's temporal context).  The encoder
replays the decoder's C_fill to fit each chunk's lit weights (the lit guard of :mod:`latok.codec.restore.guard`,
per chunk) against the true latent; they travel in a LITW record after the chunk.  With a quality target, each chunk
gets its own tau (:mod:`latok.codec.restore.quality`, searched over the caches it continues and checked on decoded
frames), in a TAUC record after the chunk; the decoder restores each chunk at its tau.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple, Protocol

import torch

from latok.codec.format.header import chunk_lit_weights
from latok.codec.format.reader import LatokReader
from latok.codec.format.writer import LatokWriter, header_of
from latok.codec.restore.fills import Fill, hold_fill, with_context
from latok.codec.restore.guard import lit_weight_codes
from latok.codec.restore.resolve import Inpainters, guarded
from latok.codec.rule.masking import MaskState, in_rule_metric, redundancy_mask
from latok.codec.rule.motion import estimate_motion
from latok.codec.tokens import AdaptiveLatent, SourceInfo, check_target_quality, scatter, weight_field
from latok.errors import InvalidInputError
from latok.io import Clip

class LatentTokenizer(Protocol):
    """What a stream needs of :class:`latok.codec.tokenizer.LatentTokenizer` (which calls these functions)."""

    vae: object
    settings: object
    inpainters: Inpainters
    rule_weights: tuple[float, ...] | None
    default_tau: float | None

    def resolve_tau(self, latent=None, tau=None, target_usage=None, motion=None, target_quality=None, state=None, context=None) -> float: ...
    def checked_tau(self, adaptive, latent, video, target_quality, motion=None, restored=None, state=None, context=None) -> float: ...
    def tokens(self, latent, keep, tau, source, target_usage, motion=None, target_quality=None): ...
    def check_backend(self, backend: str, config: str) -> None: ...
    def resolve_stream(self, header: dict, fill=None, guard=None, tau=None): ...


STREAM_CONTEXT_FRAMES = 4  # latent frames of C_fill: restored context carried into the next chunk


def encode_stream(
    tokenizer: LatentTokenizer,
    chunks: Iterable[torch.Tensor | Clip],
    path: str | os.PathLike,
    tau: float | None = None,
    fps: float | None = None,
    carry_selection: bool = True,
    target_quality: float | None = None,
) -> StreamSummary:
    """Encode a video of any length chunk by chunk into a ``.latok`` file, written as it goes.

    Args:
        chunks: consecutive pieces of one video, each ``(1, 3, k, H, W)`` in ``[-1, 1]``
            or a :class:`latok.io.Clip` (e.g. from :func:`latok.io.stream_clip`).
        path: the ``.latok`` file; it appears only when the stream ends without error.
        tau: a fixed masking threshold.
        fps: frame rate to record when chunks are tensors (default 24).
        carry_selection: carry the selection cache C_sel (each position's last-kept
            reference) across chunks, so only the stream's first frame is forced and the
            mask equals the offline one.  ``False`` restarts masking at every chunk (for
            ablations: every chunk then starts with a fully kept frame).
        target_quality: instead of ``tau``, a PSNR loss budget (dB against the full-rate decode): every chunk gets
            the largest tau whose restoration stays within it (:func:`~latok.codec.restore.quality.tau_for_quality`),
            masked and restored as the stream does it (C_sel carried in, over the decoder's C_fill), and checked on
            decoded frames as a clip is (``quality_check_frames``); each chunk's tau travels in a TAUC record.

    With neither, the settings' ``tau`` or ``target_quality``, else the backend's default quality target, as offline
    (else its calibrated tau).  A target usage
    would need the whole stream and is refused.  Where the backend has an inpainter and the settings keep the weighted
    lit guard (``lit_guard``, ``lit_tile`` > 0), every chunk also gets its lit weights, fitted as :func:`decode_stream`
    will restore it, over the restored context C_fill the encoder replays.  Memory stays that of one chunk however
    long the stream is.
    """
    tau, target_quality = stream_rate(tokenizer, tau, target_quality)
    tile = tokenizer.settings.lit_tile if tokenizer.settings.lit_guard and tokenizer.inpainters.available else 0
    writer, state, first, before, context = None, None, None, None, None
    usage: list[float] = []
    try:
        for chunk in chunks:
            video, source = source_info(chunk, fps)
            if first is None:
                first = replace(source, frames=None)
            elif (source.height, source.width) != (first.height, first.width):
                raise InvalidInputError(f"stream chunks must keep one frame size: {first.width}x{first.height}, then {source.width}x{source.height}")
            latent = tokenizer.vae.encode(video)
            motion = estimate_motion(latent, tokenizer.settings.motion, before if carry_selection else None)  # None without a model
            before = latent[:, :, -1]  # the frame before the next chunk is all the estimate carries across
            coded = code_chunk(tokenizer, latent, video, first, motion, state if carry_selection else None, context, tau, target_quality, tile)
            state, context = coded.state, coded.context
            if writer is None:
                writer = LatokWriter(path, stream_header(tokenizer, coded.adaptive, latent.shape[2], tile))
            adaptive = coded.adaptive
            writer.write_chunk(adaptive.keep, adaptive.values, video_frames=source.frames, motion=adaptive.motion, lit_weights=coded.codes,
                               tau=adaptive.tau if target_quality is not None else None)  # fmt: skip
            usage += adaptive.keep.float().mean(dim=(-2, -1))[0].tolist()
        if writer is None:
            raise InvalidInputError("the stream holds no frames")
        writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return StreamSummary(path=Path(path), frames=writer.header["source"]["frames"], shape=tuple(writer.header["shape"]),
                         tokens=writer.tokens, usage_per_frame=usage, bytes=Path(path).stat().st_size)  # fmt: skip


def stream_rate(tokenizer: LatentTokenizer, tau: float | None, target_quality: float | None) -> tuple[float | None, float | None]:
    """``(tau, target_quality)`` of a stream, exactly one set: the one given, else the settings', else the backend's
    default quality target (as offline; on the pool validation split, a target per chunk kept fewer tokens than the
    fixed tau with the same mean loss, at half its per-clip spread: eval/results/stream_eval.md), else its calibrated
    tau.  A target usage is refused: it would need the whole stream."""
    settings = tokenizer.settings
    if tokenizer.vae.temporal_ratio != 1:
        raise InvalidInputError(
            f"streaming needs a per-frame backend; {tokenizer.vae.name} compresses {tokenizer.vae.temporal_ratio} frames per latent frame"
        )
    if tau is not None and target_quality is not None:
        raise InvalidInputError("give a stream tau or a target quality, not both")
    if tau is None and target_quality is None:
        if settings.target_usage is not None:
            raise InvalidInputError("streaming takes a fixed tau or a target quality per chunk; a target usage would need the whole stream")
        tau, target_quality = settings.tau, settings.target_quality
        if tau is None and target_quality is None:  # the backend's quality target, as offline, else its calibrated tau
            target_quality = tokenizer.default_target_quality
            tau = tokenizer.default_tau if target_quality is None else None
    if target_quality is not None:
        check_target_quality(target_quality)
        if tokenizer.vae.quality_calibration is None:
            raise InvalidInputError(f"backend {tokenizer.vae.name} has no quality calibration; pass tau")
        return None, target_quality
    return tokenizer.resolve_tau(tau=tau), None


class CodedChunk(NamedTuple):
    """One stream chunk as :func:`code_chunk` coded it: its tokens, lit weight codes (or ``None``), and the caches
    the next chunk takes: C_sel (the rule's :class:`MaskState`) and C_fill (restored latents, or ``None`` untracked)."""

    adaptive: AdaptiveLatent
    codes: torch.Tensor | None
    state: MaskState
    context: torch.Tensor | None


def code_chunk(tokenizer: LatentTokenizer, latent: torch.Tensor, video: torch.Tensor, source: SourceInfo, motion: torch.Tensor | None,
               state: MaskState | None, context: torch.Tensor | None, tau: float | None, target_quality: float | None,
               tile: int) -> CodedChunk:  # fmt: skip
    """Mask a chunk's ``latent`` at ``tau``, or at the tau a ``target_quality`` picks for it over the caches it
    continues (C_sel ``state``, C_fill ``context``), and restore it as :func:`decode_stream` will (to fit its lit
    weights, check the target on decoded frames, and carry C_fill on)."""
    s = tokenizer.settings
    measured = in_rule_metric(latent.float(), tokenizer.rule_weights)  # what the rule compares
    caches = {"state": state, "context": context}

    def coded(tau: float) -> tuple[CodedChunk, torch.Tensor | None]:
        mask = redundancy_mask(measured, tau, s.reference, s.keyframe_interval, state, motion=motion)
        adaptive = tokenizer.tokens(latent, mask.keep, tau, source, None, motion, target_quality)
        codes, restored = restore_chunk(tokenizer.inpainters, adaptive, latent, context, tile) if tile or target_quality is not None else (None, None)
        kept = None if restored is None else torch.cat([c for c in (context, restored) if c is not None], dim=2)[:, :, -STREAM_CONTEXT_FRAMES:]
        return CodedChunk(adaptive, codes, mask.state, kept), restored

    if target_quality is None:
        return coded(tau)[0]
    result, restored = coded(tokenizer.resolve_tau(latent, motion=motion, target_quality=target_quality, **caches))
    if s.quality_check_frames and result.adaptive.tau > 0:
        checked = tokenizer.checked_tau(result.adaptive, latent, video, target_quality, motion, restored, **caches)
        if checked != result.adaptive.tau:
            result = coded(checked)[0]
    return result


def stream_header(tokenizer: LatentTokenizer, adaptive: AdaptiveLatent, chunk_frames: int, tile: int) -> dict:
    """The HEAD of an open-ended stream whose first chunk is ``adaptive``: frame counts (and a tau per chunk, with a
    target quality) filled in on close, and the inpainter the lit weights per chunk were fitted with."""
    header = header_of(adaptive, chunk_frames=chunk_frames)
    header["shape"][2] = None
    if adaptive.target_quality is not None:
        header["chunk_tau"] = True
    if tile:
        header.update(lit_model=tokenizer.inpainters.model.fingerprint, lit_tile=tile)
    return header


def decode_stream(
    tokenizer: LatentTokenizer,
    path: str | os.PathLike,
    fill: str | Fill | None = None,
    context_frames: int = STREAM_CONTEXT_FRAMES,
) -> Iterator[torch.Tensor]:
    """Decode a ``.latok`` file chunk by chunk; yields ``(1, 3, k, H, W)`` video pieces in order.

    The fill cache C_fill carries the last ``context_frames`` restored latent frames into
    the next chunk: they are the fill's temporal context (marked kept), so ``hold`` continues
    exactly as offline, and ``lit`` runs the inpainter over ``[C_fill, chunk]`` (the chunk's
    future in view, not the next chunk's), behind the chunk's lit weights where the stream carries them
    from this inpainter (:func:`stream_guard_matches`; fitted with the default ``context_frames``), else unguarded,
    and with the chunk's own tau where the stream has one per chunk (a target quality's).
    The default ``auto`` is this ``lit`` where the backend has an inpainter, else ``hold``.  ``interp``
    cannot look past the chunk and holds there instead.
    """
    if context_frames < 1:
        raise InvalidInputError(f"context frames must be >= 1, got {context_frames}")
    with LatokReader(path) as reader:
        header = reader.header
        tokenizer.check_backend(header["backend"], str(header["backend_config"]))
        chosen = tokenizer.resolve_stream(header, fill)
        weighted = chosen.uses_model and not callable(fill) and stream_guard_matches(header, tokenizer.inpainters)
        _, channels, _, height, width = header["shape"]
        source = header["source"]
        context = None  # C_fill: (1, C, <=K, h, w) restored latents
        done = 0
        for keep, values, motion, codes, tau in reader.chunks():
            sparse = torch.zeros(1, keep.shape[1], height, width, channels)
            sparse[keep] = values.float()
            sparse = sparse.permute(0, 4, 1, 2, 3)  # (1, C, k, h, w)
            latent, known, motion, n = with_context(context, sparse, keep, motion)
            guard = context_guard(codes, header["lit_tile"], n, height, width) if weighted else None
            step = tokenizer.resolve_stream(header, fill, guard, tau) if weighted or tau is not None else chosen
            restored = step(latent, known, motion)[:, :, n:]
            context = restored if context is None else torch.cat([context, restored], dim=2)
            context = context[:, :, -context_frames:]
            frames = min(keep.shape[1], source["frames"] - done)
            done += frames
            yield tokenizer.vae.decode(restored, size=(frames, source["height"], source["width"]))


def context_guard(codes: torch.Tensor, tile: int, context_frames: int, height: int, width: int) -> torch.Tensor:
    """A chunk's lit weights ``(k, gh, gw)`` as the guard ``(1, 1, n + k, h, w)`` over ``[C_fill, chunk]``: 0 (hold, the
    kept context) on the ``n`` context frames."""
    field = weight_field(codes, tile, height, width)
    return torch.cat([field.new_zeros(1, 1, context_frames, *field.shape[3:]), field], dim=2)


def restore_chunk(inpainters: Inpainters, adaptive: AdaptiveLatent, latent: torch.Tensor, context: torch.Tensor | None,
                  tile: int) -> tuple[torch.Tensor | None, torch.Tensor]:  # fmt: skip
    """A stream chunk restored as :func:`decode_stream`'s default will restore it over ``[C_fill, chunk]``, ``(1, C, k, h, w)``:
    the next chunk's context.  With ``tile``, its lit weight codes ``(k, gh, gw)``
    (:func:`~latok.codec.restore.guard.lit_weight_codes`), fitted against its true ``latent`` on that restoration, come
    first, and the restoration is the guarded one they give; without, ``None`` and the unguarded lit (or, without an
    inpainter, the hold)."""
    inputs, known, motion, n = with_context(context, scatter(adaptive), adaptive.keep, adaptive.motion)
    hold = hold_fill(inputs, known, motion)[:, :, n:]
    if not inpainters.available:
        return None, hold
    model = inpainters.model
    lit = inpainters.run(inputs, known, adaptive.tau, adaptive.reference, model=model, motion=motion, weights=adaptive.rule_weights)[:, :, n:]
    if not tile:
        return None, lit
    codes = lit_weight_codes(model, lit, hold, latent.float().cpu(), adaptive.keep, tile)
    return codes, guarded(lit, hold, weight_field(codes, tile, *adaptive.keep.shape[2:]))


def stream_guard_matches(header: dict, inpainters: Inpainters) -> bool:
    """Does the stream of ``header`` carry lit weights per chunk decided with the inpainter that would run now?"""
    return chunk_lit_weights(header) and inpainters.available and header["lit_model"] == inpainters.model.fingerprint


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
