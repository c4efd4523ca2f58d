"""The ``.latok`` container: one adaptively tokenized clip per file.

Layout (all integers little-endian)::

    magic    8 bytes   b"LATOK\\r\\n\\x1a"
    version  u16       FORMAT_VERSION
    flags    u16       0 (reserved)
    records  ...       each: tag (4 bytes) | length u32 | payload | crc32 u32 of tag+length+payload

    HEAD  JSON header (sorted keys): backend, tau, shapes, storage dtype, source framing, chunking,
          and the lit guard (``lit_frames``: one "0"/"1" per latent frame, ``lit_model``), or nulls; a weighted guard adds
          ``lit_tile`` and ``lit_weights`` (uint8 codes per latent frame and lit_tile x lit_tile square, zlib, base64);
          in version 2, ``motion`` ("global" or "block") when the rule was motion-compensated
    MASK  one per chunk: t_start u32, t_count u32, codec u8 (0 raw, 1 zlib: keep bits bit-packed, one bit
          per position in (t, y, x) order, little bit order; 2, version 3: context coded), the smallest of the
          mask coders registered in :mod:`latok.codec.format.coders` (:mod:`~latok.codec.format.coders.masks`)
    VALS  one per chunk: t_start u32, count u32, the chunk's kept vectors (count x C, storage dtype)
    QVAL  version 3, in place of VALS: t_start u32, count u32, the kept vectors' quantisation codes,
          predicted and range coded (:mod:`latok.codec.format.coders.values`); HEAD's ``value_step`` holds the steps
    MOTN  version 2 with motion, one per chunk: t_start u32, t_count u32, (dy, dx) float32 per latent frame
          ("global"), or per latent frame and block of a ceil(h/4) x ceil(w/4) grid in (t, 2, gy, gx) order ("block");
          version 3 adds a codec u8 after t_count: 0 float32 as before, 1 zlib of int16 quarter-pel codes
          (what latok's motion search finds), the smallest exact one (:mod:`~latok.codec.format.coders.motion`)
    LITW  a stream's lit weights (HEAD has ``lit_model`` and ``lit_tile`` but no ``lit_frames``), one per chunk after its
          values and motion: t_start u32, t_count u32, zlib of the uint8 codes per latent frame and lit_tile x lit_tile
          square, in (t, gy, gx) order
    TAUC  a stream's tau per chunk (HEAD has ``chunk_tau``; its ``tau`` is then the largest), one per chunk after
          all its other records: t_start u32, t_count u32, tau float64
    END   chunk count u32, total kept vectors u64

A file with quantised values (``value_step``) is version 3, with context-coded masks.  Files of exact
values are written as before: version 2 with motion, else version 1, byte for byte what earlier
latok wrote.  Readers take all three versions.

Chunks cover ``chunk_frames`` latent frames each, so a long video can be
written and read incrementally (:class:`LatokWriter`, :class:`LatokReader`).
A stream of unknown length is written with placeholder frame counts in HEAD; the
writer owns its temp file until :meth:`LatokWriter.close`, where it rewrites HEAD
in place (same length, space-padded JSON) with the counts it saw.  Readers only
ever see complete files.
Writes are atomic and deterministic.  Reading is :mod:`latok.codec.format.reader`: every malformed
input raises :class:`~latok.errors.LatokFormatError`, and lengths are checked against the bytes
actually present before anything is allocated.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import asdict
from pathlib import Path

import torch

from latok._fs import AtomicWriter, OutputFile, atomic_path
from latok.codec.format.header import MAX_CHUNK_POSITIONS, chunk_lit_weights, encode_lit_weights, lit_grid, parse_header
from latok.codec.format.coders import encode_mask, encode_motion
from latok.codec.rule.masking import MAX_TAU
from latok.codec.rule.motion import motion_shape
from latok.codec.format.coders.values import MAX_CHUNK_VALUES, ValueCoder
from latok.codec.quantise import codes_of
from latok.codec.tokens import MAX_LIT_CODE, STORAGE_DTYPES, AdaptiveLatent, dtype_name
from latok.errors import InvalidInputError, LatokFormatError, OutputError

MAGIC = b"LATOK\r\n\x1a"
FORMAT_VERSION = 3  # the newest version written (quantised values); 2: exact values with motion; 1: neither
VERSIONS = (1, 2, 3)
PREAMBLE = struct.Struct("<8sHH")
RECORD = struct.Struct("<4sI")
CRC = struct.Struct("<I")
MASK_HEAD = struct.Struct("<IIB")
VALS_HEAD = struct.Struct("<II")
END_RECORD = struct.Struct("<IQ")
MOTN_HEAD = struct.Struct("<II")
MOTN_HEAD_V3 = struct.Struct("<IIB")
LITW_HEAD = struct.Struct("<II")
TAUC_RECORD = struct.Struct("<IId")
DEFAULT_CHUNK_FRAMES = 16


def _record(tag: bytes, payload: bytes) -> bytes:
    head = RECORD.pack(tag, len(payload))
    return head + payload + CRC.pack(zlib.crc32(head + payload))


def header_of(adaptive: AdaptiveLatent, chunk_frames: int) -> dict:
    return {
        "backend": adaptive.backend,
        "backend_config": adaptive.backend_config,
        "chunk_frames": chunk_frames,
        "dtype": dtype_name(adaptive.storage_dtype),
        "keyframe_interval": adaptive.keyframe_interval,
        "lit_frames": None if adaptive.lit_frames is None else "".join("1" if f else "0" for f in adaptive.lit_frames),
        "lit_model": adaptive.lit_model,
        **({"lit_tile": adaptive.lit_tile, "lit_weights": encode_lit_weights(adaptive.lit_weights.numpy().tobytes())}
           if adaptive.lit_weights is not None else {}),  # absent: the guard is lit_frames alone
        **({"motion": adaptive.motion_model} if adaptive.motion is not None else {}),  # absent, not null: version-1 bytes stay as they were
        **({"precision": adaptive.precision} if adaptive.precision is not None else {}),
        "reference": adaptive.reference,
        **({"rule_metric": adaptive.rule_metric} if adaptive.rule_metric != "latent" else {}),  # absent: the plain rule
        "shape": list(adaptive.shape),
        "source": asdict(adaptive.source),
        **({"target_quality": adaptive.target_quality} if adaptive.target_quality is not None else {}),
        "target_usage": adaptive.target_usage,
        "tau": adaptive.tau,
        **({"value_step": list(adaptive.value_step)} if adaptive.value_step is not None else {}),  # absent: exact values
    }


_UNKNOWN = 0xFFFFFFFF  # placeholder frame count of an open-ended stream (as wide as any real count)
_UNKNOWN_TAU = 2.2250738585072014e-308  # placeholder tau of a stream with a tau per chunk: as long in JSON as any float >= 0


def _header_payload(header: dict, length: int | None = None) -> bytes:
    payload = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return payload if length is None else payload.ljust(length)


class LatokWriter(AtomicWriter):
    """Write a ``.latok`` file chunk by chunk; the file appears at ``path`` only on :meth:`close`.

    Use as a context manager.  ``header`` is :func:`header_of`'s dict; chunks must
    arrive in order and cover ``chunk_frames`` latent frames each (the last may be shorter).
    For a stream of unknown length set ``header["shape"][2]`` and ``header["source"]["frames"]``
    to ``None`` and pass each chunk's ``video_frames``: the counts are filled in on close.
    """

    def __init__(self, path: str | os.PathLike, header: dict):
        self.path = Path(path)
        self.header = header
        self.open_ended = header["shape"][2] is None
        if self.open_ended != (header["source"]["frames"] is None):
            raise InvalidInputError("an open-ended stream leaves both the latent and the video frame counts unset")
        _, _, frames, height, width = header["shape"]
        if height * width * min(header["chunk_frames"], frames or header["chunk_frames"]) > MAX_CHUNK_POSITIONS:
            raise InvalidInputError(
                f"chunks of {header['chunk_frames']} latent frames of {height}x{width} exceed the "
                f"{MAX_CHUNK_POSITIONS} positions a chunk may hold; use shorter chunks"
            )
        steps = header.get("value_step")
        if steps is not None and height * width * min(header["chunk_frames"], frames or header["chunk_frames"]) * len(steps) > MAX_CHUNK_VALUES:
            raise InvalidInputError(
                f"chunks of {header['chunk_frames']} latent frames of {height}x{width}x{len(steps)} exceed the "
                f"{MAX_CHUNK_VALUES} quantised values a chunk may hold; use shorter chunks, or exact values (--value-step 0)"
            )
        if not self.open_ended:
            self._check_header(header)
        self._frames_written = 0
        self._video_frames = 0
        self._chunks = 0
        self._tokens = 0
        self._finished = False
        self._context = atomic_path(self.path)
        self._tmp = self._context.__enter__()
        self._file = OutputFile(self._tmp, self.path)
        self.motion = header.get("motion") is not None
        self.motion_model = header.get("motion")
        self.value_step = header.get("value_step")
        self.lit_tile = header["lit_tile"] if chunk_lit_weights(header) else None
        self.chunk_tau = bool(header.get("chunk_tau"))
        self._largest_tau = None  # of the chunks written, with a tau per chunk: the header's tau on close
        self.version = 3 if self.value_step is not None else 2 if self.motion else 1
        if self.value_step is not None:
            _, channels, _, height, width = header["shape"]
            self._values = ValueCoder(channels, height, width)
        self._previous_keep = None  # (h, w) keep of the last frame written: the context mask coder's context
        self._file.write(PREAMBLE.pack(MAGIC, self.version, 0))
        self._file.write(_record(b"HEAD", _header_payload(self._with_counts(_UNKNOWN, _UNKNOWN))))

    @staticmethod
    def _check_header(header: dict) -> None:
        """latok never writes a header its reader would refuse."""
        try:
            parse_header(_header_payload(header))
        except LatokFormatError as error:
            raise InvalidInputError(f"cannot write this clip: {error}") from None

    def _with_counts(self, latent_frames: int, video_frames: int, tau: float = _UNKNOWN_TAU) -> dict:
        if not self.open_ended:
            return self.header
        shape = list(self.header["shape"])
        shape[2] = latent_frames
        taus = {"tau": tau} if self.chunk_tau else {}
        return {**self.header, **taus, "shape": shape, "source": {**self.header["source"], "frames": video_frames}}

    def write_chunk(self, keep: torch.Tensor, values: torch.Tensor, video_frames: int | None = None, motion: torch.Tensor | None = None,
                    lit_weights: torch.Tensor | None = None, tau: float | None = None) -> None:  # fmt: skip
        """``keep``: ``(1, k, h, w)`` bool; ``values``: ``(keep.sum(), C)`` in the storage dtype;
        ``video_frames``: frames of video the chunk covers (open-ended streams only);
        ``motion``: float32 translations, ``(1, k, 2)`` or per block ``(1, k, 2, gh, gw)`` as the header's
        ``motion`` says, exactly when it has one.  With the header's ``value_step``, values are float32 and
        exactly on its grid (:func:`latok.codec.format.coders.values.quantise`).  ``lit_weights``: the chunk's
        uint8 codes ``(k, ceil(h / lit_tile), ceil(w / lit_tile))``, exactly when the header carries weights per chunk.
        ``tau``: the chunk's masking threshold, exactly when the header has ``chunk_tau`` (an open-ended stream's)."""
        _, channels, frames, height, width = self.header["shape"]
        if self.open_ended:
            if video_frames is None or video_frames < 1:
                raise InvalidInputError("chunks of an open-ended stream must say how many video frames they cover")
            frames = _UNKNOWN
        if keep.shape[0] != 1 or keep.shape[2:] != (height, width) or keep.dtype != torch.bool:
            raise InvalidInputError(f"chunk keep must be bool (1, k, {height}, {width}), got {keep.dtype} {tuple(keep.shape)}")
        if values.shape != (int(keep.sum()), channels) or values.dtype != STORAGE_DTYPES[self.header["dtype"]]:
            raise InvalidInputError(f"chunk values must be ({int(keep.sum())}, {channels}) {self.header['dtype']}")
        t_start, t_count = self._frames_written, keep.shape[1]
        if t_count > self.header["chunk_frames"]:
            raise InvalidInputError(f"a chunk covers {t_count} latent frames, more than the header's {self.header['chunk_frames']}")
        if t_start + t_count > frames:
            raise InvalidInputError(f"chunks cover {t_start + t_count} latent frames, more than the header's {frames}")
        expected = motion_shape(1, t_count, height, width, self.motion_model) if self.motion else None
        if (motion is not None) != self.motion or (motion is not None and (tuple(motion.shape) != expected or not bool(motion.isfinite().all()))):
            raise InvalidInputError(f"chunk motion must be finite {expected or ''} exactly when the header says motion")
        if self.value_step is not None and t_start == 0 and not bool(keep[0, 0].all()):
            raise InvalidInputError("latent frame 0 must be fully kept")
        self._check_lit_weights(lit_weights, t_count, height, width)
        if (tau is not None) != self.chunk_tau or (tau is not None and not (self.open_ended and 0.0 <= tau <= MAX_TAU)):
            raise InvalidInputError(f"a chunk's tau (0..{MAX_TAU:g}) comes exactly when the header of an open-ended stream has chunk_tau")
        bits = keep[0].numpy()
        codec, data = encode_mask(bits, self._previous_keep, self.version)
        self._previous_keep = bits[-1].copy()
        self._file.write(_record(b"MASK", MASK_HEAD.pack(t_start, t_count, codec) + data))
        if self.value_step is not None:
            codes = codes_of(values, self.value_step)
            self._file.write(_record(b"QVAL", VALS_HEAD.pack(t_start, values.shape[0]) + self._values.encode(keep, codes)))
        else:
            raw = values.contiguous().view(torch.uint8).numpy().tobytes()
            self._file.write(_record(b"VALS", VALS_HEAD.pack(t_start, values.shape[0]) + raw))
        if motion is not None:
            codec, data = encode_motion(motion.detach().to(torch.float32).contiguous().cpu().numpy(), self.version)
            head = MOTN_HEAD.pack(t_start, t_count) if self.version < 3 else MOTN_HEAD_V3.pack(t_start, t_count, codec)  # v2: float32 only
            self._file.write(_record(b"MOTN", head + data))
        if lit_weights is not None:
            self._file.write(_record(b"LITW", LITW_HEAD.pack(t_start, t_count) + zlib.compress(lit_weights.numpy().tobytes(), 9)))
        if tau is not None:
            self._file.write(_record(b"TAUC", TAUC_RECORD.pack(t_start, t_count, tau)))
            self._largest_tau = max(tau, self._largest_tau or 0.0)
        self._frames_written += t_count
        self._video_frames += video_frames or 0
        self._chunks += 1
        self._tokens += values.shape[0]

    def _check_lit_weights(self, codes: torch.Tensor | None, t_count: int, height: int, width: int) -> None:
        if (codes is not None) != (self.lit_tile is not None):
            raise InvalidInputError("chunk lit weights come exactly when the header carries them per chunk (lit_model and lit_tile, no lit_frames)")
        if codes is not None:
            grid = lit_grid(t_count, height, width, self.lit_tile)
            if codes.dtype != torch.uint8 or tuple(codes.shape) != grid or int(codes.max()) > MAX_LIT_CODE:
                raise InvalidInputError(f"chunk lit weights must be uint8 codes {grid} of at most {MAX_LIT_CODE}, got {codes.dtype} {tuple(codes.shape)}")

    @property
    def tokens(self) -> int:
        """Kept vectors written so far."""
        return self._tokens

    def close(self) -> None:
        expected = self._frames_written if self.open_ended else self.header["shape"][2]
        if self._frames_written != expected or not self._frames_written:
            self.abort()
            raise InvalidInputError(f"chunks covered {self._frames_written} of {expected} latent frames")
        self._file.write(_record(b"END\x00", END_RECORD.pack(self._chunks, self._tokens)))
        if self.open_ended:  # the counts are known now: rewrite HEAD in place, same length
            length = len(_header_payload(self._with_counts(_UNKNOWN, _UNKNOWN)))
            self.header = self._with_counts(self._frames_written, self._video_frames, self._largest_tau)
            try:
                self._check_header(self.header)
            except InvalidInputError:
                self.abort()
                raise
            self._file.seek(PREAMBLE.size)
            self._file.write(_record(b"HEAD", _header_payload(self.header, length)))
        self._file.close()
        self._finished = True
        self._context.__exit__(None, None, None)

    def abort(self) -> None:
        """Discard the file (idempotent; a no-op after a successful :meth:`close`)."""
        if self._finished:
            return
        self._finished = True
        try:
            self._file.close()
        except OutputError:  # flushing what was buffered failed too (a full disk): the temp file goes all the same
            pass
        self._context.__exit__(RuntimeError, RuntimeError("aborted"), None)


def save_latok(adaptive: AdaptiveLatent, path: str | os.PathLike, chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> Path:
    """Write ``adaptive`` (one clip, B = 1) to ``path`` atomically; returns the path."""
    if adaptive.shape[0] != 1:
        raise InvalidInputError(f"a .latok file holds one clip; got a batch of {adaptive.shape[0]}")
    if chunk_frames < 1:
        raise InvalidInputError(f"chunk_frames must be >= 1, got {chunk_frames}")
    if adaptive.value_step is not None:  # quantised chunks hold at most MAX_CHUNK_VALUES values
        _, channels, _, height, width = adaptive.shape
        chunk_frames = max(1, min(chunk_frames, MAX_CHUNK_VALUES // (channels * height * width)))
    counts = adaptive.keep.sum(dim=(0, 2, 3)).tolist()  # kept vectors per latent frame
    with LatokWriter(path, header_of(adaptive, chunk_frames)) as writer:
        offset = 0
        for t in range(0, adaptive.shape[2], chunk_frames):
            count = int(sum(counts[t : t + chunk_frames]))
            motion = None if adaptive.motion is None else adaptive.motion[:, t : t + chunk_frames]
            writer.write_chunk(adaptive.keep[:, t : t + chunk_frames], adaptive.values[offset : offset + count], motion=motion)
            offset += count
    return Path(path)


def encoded_size(adaptive: AdaptiveLatent, chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> int:
    """Bytes ``adaptive`` takes as a ``.latok`` file (written once to a temporary folder)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return save_latok(adaptive, Path(tmp) / "clip.latok", chunk_frames).stat().st_size


def bitrate(size: int, frames: int, height: int, width: int, fps: float) -> dict[str, float]:
    """``{"bpp", "kbps"}`` of ``size`` bytes for a ``frames`` x ``height`` x ``width`` video at ``fps``."""
    return {"bpp": size * 8 / (frames * height * width), "kbps": size * 8 / (frames / fps) / 1000}
