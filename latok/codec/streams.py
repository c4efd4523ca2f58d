"""Streams: a video of any length, chunk by chunk, into a ``.latok`` file and back, with memory of one chunk.

The rule carries its selection cache C_sel across chunks (so the mask equals the offline one) and the
decoder its fill cache C_fill (the last restored latent frames, the fill's temporal context).  The encoder
replays the decoder's C_fill to fit each chunk's lit weights (the lit guard of :mod:`latok.codec.restore.guard`,
per chunk) against the true latent; they travel in a LITW record after the chunk.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import torch

from latok.codec.format.header import chunk_lit_weights
from latok.codec.format.reader import LatokReader
from latok.codec.format.writer import LatokWriter, header_of
from latok.codec.restore.fills import Fill, hold_fill
from latok.codec.restore.guard import lit_weight_codes
from latok.codec.restore.resolve import Inpainters, guarded
from latok.codec.rule.masking import in_rule_metric, redundancy_mask
from latok.codec.rule.motion import estimate_motion
from latok.codec.tokens import AdaptiveLatent, SourceInfo, scatter, weight_field
from latok.errors import InvalidInputError
from latok.io import Clip

class LatentTokenizer(Protocol):
    """What a stream needs of :class:`latok.codec.tokenizer.LatentTokenizer` (which calls these functions)."""

    vae: object
    settings: object
    inpainters: Inpainters
    rule_weights: tuple[float, ...] | None

    def resolve_tau(self, latent=None, tau=None, target_usage=None, motion=None) -> float: ...
    def tokens(self, latent, keep, tau, source, target_usage, motion=None): ...
    def check_backend(self, backend: str, config: str) -> None: ...
    def resolve_stream(self, header: dict, fill=None, guard=None): ...


STREAM_CONTEXT_FRAMES = 4  # latent frames of C_fill: restored context carried into the next chunk


def encode_stream(
    tokenizer: LatentTokenizer,
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

    Where the backend has an inpainter and the settings keep the weighted lit guard (``lit_guard``, ``lit_tile`` > 0),
    every chunk also gets its lit weights, fitted as :func:`decode_stream` will restore it, over the restored
    context C_fill the encoder replays.  Memory stays that of one chunk however long the stream is.
    """
    settings = tokenizer.settings
    if tokenizer.vae.temporal_ratio != 1:
        raise InvalidInputError(
            f"streaming needs a per-frame backend; {tokenizer.vae.name} compresses {tokenizer.vae.temporal_ratio} frames per latent frame"
        )
    if tau is None and settings.tau is None and settings.per_clip_rate:
        raise InvalidInputError("streaming needs a fixed tau; a target usage or quality would pick a different tau per chunk")
    tau = tau if tau is not None else settings.tau
    tau = tokenizer.resolve_tau(tau=tau if tau is not None else tokenizer.default_tau)  # a stream's default: the calibrated tau
    tile = settings.lit_tile if settings.lit_guard and tokenizer.inpainters.available else 0
    writer, state, first, before, context = None, None, None, None, None
    usage: list[float] = []
    try:
        for chunk in chunks:
            video, source = source_info(chunk, fps)
            if first is None:
                first = source
            elif (source.height, source.width) != (first.height, first.width):
                raise InvalidInputError(f"stream chunks must keep one frame size: {first.width}x{first.height}, then {source.width}x{source.height}")
            latent = tokenizer.vae.encode(video)
            motion = estimate_motion(latent, settings.motion, before if carry_selection else None)  # None without a model
            before = latent[:, :, -1]  # the frame before the next chunk is all the estimate carries across
            measured = in_rule_metric(latent.float(), tokenizer.rule_weights)  # what the rule compares
            mask = redundancy_mask(measured, tau, settings.reference, settings.keyframe_interval, state if carry_selection else None, motion=motion)
            state = mask.state
            adaptive = tokenizer.tokens(latent, mask.keep, tau, replace(first, frames=None), None, motion)
            codes = None
            if tile:
                codes, restored = weigh_chunk(tokenizer.inpainters, adaptive, latent, context, tile)
                context = torch.cat([c for c in (context, restored) if c is not None], dim=2)[:, :, -STREAM_CONTEXT_FRAMES:]
            if writer is None:
                header = header_of(adaptive, chunk_frames=latent.shape[2])
                header["shape"][2] = None
                if tile:
                    header.update(lit_model=tokenizer.inpainters.model.fingerprint, lit_tile=tile)
                writer = LatokWriter(path, header)
            writer.write_chunk(adaptive.keep, adaptive.values, video_frames=source.frames, motion=adaptive.motion, lit_weights=codes)
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
    from this inpainter (:func:`stream_guard_matches`; fitted with the default ``context_frames``), else unguarded.
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
        for keep, values, motion, codes in reader.chunks():
            sparse = torch.zeros(1, keep.shape[1], height, width, channels)
            sparse[keep] = values.float()
            sparse = sparse.permute(0, 4, 1, 2, 3)  # (1, C, k, h, w)
            latent, known, motion, n = with_context(context, sparse, keep, motion)
            step = tokenizer.resolve_stream(header, fill, guard=context_guard(codes, header["lit_tile"], n, height, width)) if weighted else chosen
            restored = step(latent, known, motion)[:, :, n:]
            context = restored if context is None else torch.cat([context, restored], dim=2)
            context = context[:, :, -context_frames:]
            frames = min(keep.shape[1], source["frames"] - done)
            done += frames
            yield tokenizer.vae.decode(restored, size=(frames, source["height"], source["width"]))


def with_context(context: torch.Tensor | None, sparse: torch.Tensor, keep: torch.Tensor, motion: torch.Tensor | None):
    """``(latent, keep, motion, n)``: a chunk's sparse ``(1, C, k, h, w)`` latent with the ``n`` restored frames of
    C_fill before it, marked kept (their translations zero: kept frames never move anything), as a fill takes them."""
    if context is None:
        return sparse, keep, motion, 0
    _, _, n, height, width = context.shape
    known = torch.ones(1, n, height, width, dtype=torch.bool)
    if motion is not None:
        motion = torch.cat([motion.new_zeros(1, n, *motion.shape[2:]), motion], dim=1)
    return torch.cat([context, sparse], dim=2), torch.cat([known, keep], dim=1), motion, n


def context_guard(codes: torch.Tensor, tile: int, context_frames: int, height: int, width: int) -> torch.Tensor:
    """A chunk's lit weights ``(k, gh, gw)`` as the guard ``(1, 1, n + k, h, w)`` over ``[C_fill, chunk]``: 0 (hold, the
    kept context) on the ``n`` context frames."""
    field = weight_field(codes, tile, height, width)
    return torch.cat([field.new_zeros(1, 1, context_frames, *field.shape[3:]), field], dim=2)


def weigh_chunk(inpainters: Inpainters, adaptive: AdaptiveLatent, latent: torch.Tensor, context: torch.Tensor | None,
                tile: int) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """A stream chunk's lit weight codes ``(k, gh, gw)`` (:func:`~latok.codec.restore.guard.lit_weight_codes`) against its
    true ``latent``, fitted on the restoration :func:`decode_stream` will run (the inpainter over ``[C_fill, chunk]``), and
    the guarded restoration ``(1, C, k, h, w)`` they give: the next chunk's context."""
    model = inpainters.model
    inputs, known, motion, n = with_context(context, scatter(adaptive), adaptive.keep, adaptive.motion)
    lit = inpainters.run(inputs, known, adaptive.tau, adaptive.reference, model=model, motion=motion, weights=adaptive.rule_weights)
    hold = hold_fill(inputs, known, motion)
    lit, hold = lit[:, :, n:], hold[:, :, n:]
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
