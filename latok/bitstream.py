"""The ``.latok`` container: one adaptively tokenized clip per file.

Layout (all integers little-endian)::

    magic    8 bytes   b"LATOK\\r\\n\\x1a"
    version  u16       FORMAT_VERSION
    flags    u16       0 (reserved)
    records  ...       each: tag (4 bytes) | length u32 | payload | crc32 u32 of tag+length+payload

    HEAD  JSON header (sorted keys): backend, tau, shapes, storage dtype, source framing, chunking,
          and the lit guard (``lit_frames``: one "0"/"1" per latent frame, ``lit_model``), or nulls
    MASK  one per chunk: t_start u32, t_count u32, codec u8 (0 raw, 1 zlib), keep bits
          (bit-packed, one bit per position in (t, y, x) order, little bit order)
    VALS  one per chunk: t_start u32, count u32, the chunk's kept vectors (count x C, storage dtype)
    END   chunk count u32, total kept vectors u64

Chunks cover ``chunk_frames`` latent frames each, so a long video can be
written and read incrementally (:class:`LatokWriter`, :class:`LatokReader`).
A stream of unknown length is written with placeholder frame counts in HEAD; the
writer owns its temp file until :meth:`LatokWriter.close`, where it rewrites HEAD
in place (same length, space-padded JSON) with the counts it saw.  Readers only
ever see complete files.
Writes are atomic and deterministic.  Every malformed input raises
:class:`~latok.errors.LatokFormatError`; lengths are checked against the bytes
actually present before anything is allocated.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from latok._fs import AtomicWriter, atomic_path
from latok.errors import InvalidInputError, LatokFormatError
from latok.masking import REFERENCES
from latok.tokens import STORAGE_DTYPES, AdaptiveLatent, SourceInfo, dtype_name

MAGIC = b"LATOK\r\n\x1a"
FORMAT_VERSION = 1
_PREAMBLE = struct.Struct("<8sHH")
_RECORD = struct.Struct("<4sI")
_CRC = struct.Struct("<I")
_MASK_HEAD = struct.Struct("<IIB")
_VALS_HEAD = struct.Struct("<II")
_END = struct.Struct("<IQ")
MAX_HEADER_BYTES = 1 << 20
MAX_POSITIONS = 1 << 31  # refuse absurd shapes instead of allocating them
DEFAULT_CHUNK_FRAMES = 16
MASK_RAW, MASK_ZLIB = 0, 1


def _record(tag: bytes, payload: bytes) -> bytes:
    head = _RECORD.pack(tag, len(payload))
    return head + payload + _CRC.pack(zlib.crc32(head + payload))


def header_of(adaptive: AdaptiveLatent, chunk_frames: int) -> dict:
    return {
        "backend": adaptive.backend,
        "backend_config": adaptive.backend_config,
        "chunk_frames": chunk_frames,
        "dtype": dtype_name(adaptive.storage_dtype),
        "keyframe_interval": adaptive.keyframe_interval,
        "lit_frames": None if adaptive.lit_frames is None else "".join("1" if f else "0" for f in adaptive.lit_frames),
        "lit_model": adaptive.lit_model,
        "reference": adaptive.reference,
        "shape": list(adaptive.shape),
        "source": asdict(adaptive.source),
        "target_usage": adaptive.target_usage,
        "tau": adaptive.tau,
    }


_UNKNOWN = 0xFFFFFFFF  # placeholder frame count of an open-ended stream (as wide as any real count)


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
        self._frames_written = 0
        self._video_frames = 0
        self._chunks = 0
        self._tokens = 0
        self._finished = False
        self._context = atomic_path(self.path)
        self._tmp = self._context.__enter__()
        self._file = open(self._tmp, "wb")
        self._file.write(_PREAMBLE.pack(MAGIC, FORMAT_VERSION, 0))
        self._file.write(_record(b"HEAD", _header_payload(self._with_counts(_UNKNOWN, _UNKNOWN))))

    def _with_counts(self, latent_frames: int, video_frames: int) -> dict:
        if not self.open_ended:
            return self.header
        shape = list(self.header["shape"])
        shape[2] = latent_frames
        return {**self.header, "shape": shape, "source": {**self.header["source"], "frames": video_frames}}

    def write_chunk(self, keep: torch.Tensor, values: torch.Tensor, video_frames: int | None = None) -> None:
        """``keep``: ``(1, k, h, w)`` bool; ``values``: ``(keep.sum(), C)`` in the storage dtype;
        ``video_frames``: frames of video the chunk covers (open-ended streams only)."""
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
        if t_start + t_count > frames:
            raise InvalidInputError(f"chunks cover {t_start + t_count} latent frames, more than the header's {frames}")
        bits = np.packbits(keep.numpy().reshape(-1), bitorder="little").tobytes()
        packed = zlib.compress(bits, 9)
        codec, data = (MASK_ZLIB, packed) if len(packed) < len(bits) else (MASK_RAW, bits)
        self._file.write(_record(b"MASK", _MASK_HEAD.pack(t_start, t_count, codec) + data))
        raw = values.contiguous().view(torch.uint8).numpy().tobytes()
        self._file.write(_record(b"VALS", _VALS_HEAD.pack(t_start, values.shape[0]) + raw))
        self._frames_written += t_count
        self._video_frames += video_frames or 0
        self._chunks += 1
        self._tokens += values.shape[0]

    @property
    def tokens(self) -> int:
        """Kept vectors written so far."""
        return self._tokens

    def close(self) -> None:
        expected = self._frames_written if self.open_ended else self.header["shape"][2]
        if self._frames_written != expected or not self._frames_written:
            self.abort()
            raise InvalidInputError(f"chunks covered {self._frames_written} of {expected} latent frames")
        self._file.write(_record(b"END\x00", _END.pack(self._chunks, self._tokens)))
        if self.open_ended:  # the counts are known now: rewrite HEAD in place, same length
            length = len(_header_payload(self._with_counts(_UNKNOWN, _UNKNOWN)))
            self.header = self._with_counts(self._frames_written, self._video_frames)
            self._file.seek(_PREAMBLE.size)
            self._file.write(_record(b"HEAD", _header_payload(self.header, length)))
        self._file.close()
        self._finished = True
        self._context.__exit__(None, None, None)

    def abort(self) -> None:
        """Discard the file (idempotent; a no-op after a successful :meth:`close`)."""
        if self._finished:
            return
        self._finished = True
        self._file.close()
        self._context.__exit__(RuntimeError, RuntimeError("aborted"), None)


def save_latok(adaptive: AdaptiveLatent, path: str | os.PathLike, chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> Path:
    """Write ``adaptive`` (one clip, B = 1) to ``path`` atomically; returns the path."""
    if adaptive.shape[0] != 1:
        raise InvalidInputError(f"a .latok file holds one clip; got a batch of {adaptive.shape[0]}")
    if chunk_frames < 1:
        raise InvalidInputError(f"chunk_frames must be >= 1, got {chunk_frames}")
    counts = adaptive.keep.sum(dim=(0, 2, 3)).tolist()  # kept vectors per latent frame
    with LatokWriter(path, header_of(adaptive, chunk_frames)) as writer:
        offset = 0
        for t in range(0, adaptive.shape[2], chunk_frames):
            count = int(sum(counts[t : t + chunk_frames]))
            writer.write_chunk(adaptive.keep[:, t : t + chunk_frames], adaptive.values[offset : offset + count])
            offset += count
    return Path(path)


class LatokReader:
    """Read a ``.latok`` file incrementally: :attr:`header`, then :meth:`chunks`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self._file = open(self.path, "rb")
        except FileNotFoundError:
            raise LatokFormatError(f"{self.path}: no such file") from None
        except OSError as error:
            raise LatokFormatError(f"{self.path}: cannot open ({error.strerror})") from None
        self._size = os.fstat(self._file.fileno()).st_size
        preamble = self._read_exact(_PREAMBLE.size, "file preamble")
        magic, version, _ = _PREAMBLE.unpack(preamble)
        if magic != MAGIC:
            self._fail("not a .latok file (wrong magic bytes)")
        if version != FORMAT_VERSION:
            self._fail(f"unsupported .latok format version {version} (this latok reads version {FORMAT_VERSION})")
        tag, payload = self._read_record(limit=MAX_HEADER_BYTES)
        if tag != b"HEAD":
            self._fail(f"expected the HEAD record, found {tag!r}")
        self.header = self._parse_header(payload)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> LatokReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _fail(self, reason: str):
        self._file.close()
        raise LatokFormatError(f"{self.path}: {reason}")

    def _read_exact(self, size: int, what: str) -> bytes:
        if size > self._size - self._file.tell():
            self._fail(f"truncated: {what} needs {size} bytes, file ends first")
        data = self._file.read(size)
        if len(data) != size:
            self._fail(f"truncated while reading {what}")
        return data

    def _read_record(self, limit: int | None = None) -> tuple[bytes, bytes]:
        head = self._read_exact(_RECORD.size, "record header")
        tag, length = _RECORD.unpack(head)
        if limit is not None and length > limit:
            self._fail(f"{tag!r} record claims {length} bytes, more than the {limit} allowed")
        payload = self._read_exact(length, f"{tag!r} record")
        (crc,) = _CRC.unpack(self._read_exact(_CRC.size, "record checksum"))
        if zlib.crc32(head + payload) != crc:
            self._fail(f"checksum mismatch in {tag!r} record (file corrupt)")
        return tag, payload

    def _parse_header(self, payload: bytes) -> dict:
        try:
            header = json.loads(payload.decode())
            batch, channels, frames, height, width = (int(v) for v in header["shape"])
            dtype = header["dtype"]
            chunk_frames = int(header["chunk_frames"])
            SourceInfo(**header["source"])
            float(header["tau"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
            self._fail(f"malformed header ({type(error).__name__}: {error})")
        if dtype not in STORAGE_DTYPES:
            self._fail(f"unknown storage dtype {dtype!r}")
        interval, usage = header.get("keyframe_interval"), header.get("target_usage")
        if (
            header.get("reference") not in REFERENCES
            or not isinstance(header.get("backend"), str)
            or not (interval is None or (isinstance(interval, int) and interval >= 1))
            or not (usage is None or isinstance(usage, (int, float)))
        ):
            self._fail("malformed header (reference, backend, keyframe interval or target usage)")
        guard, model = header.get("lit_frames"), header.get("lit_model")
        if (guard is None) != (model is None) or not (
            guard is None or (isinstance(guard, str) and isinstance(model, str) and len(guard) == frames and set(guard) <= {"0", "1"})
        ):
            self._fail("malformed header (lit guard: lit_frames must be one 0/1 per latent frame, with lit_model)")
        if batch != 1 or min(channels, frames, height, width, chunk_frames) < 1:
            self._fail(f"invalid latent shape {header['shape']} or chunk size {chunk_frames}")
        if frames * height * width > MAX_POSITIONS or channels > 1 << 16:
            self._fail(f"latent shape {header['shape']} exceeds the supported size")
        return header

    def chunks(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(keep (1, k, h, w) bool, values (n, C))`` per chunk, validating as it goes."""
        _, channels, frames, height, width = self.header["shape"]
        dtype = STORAGE_DTYPES[self.header["dtype"]]
        itemsize = torch.empty((), dtype=dtype).element_size()
        t_expected, tokens, chunks = 0, 0, 0
        while True:
            tag, payload = self._read_record()
            if tag == b"END\x00":
                break
            if tag != b"MASK":
                self._fail(f"expected a MASK or END record, found {tag!r}")
            keep = self._parse_mask(payload, t_expected, frames, height, width)
            tag, payload = self._read_record()
            if tag != b"VALS" or len(payload) < _VALS_HEAD.size:
                self._fail(f"expected a VALS record after MASK, found {tag!r}")
            t_start, count = _VALS_HEAD.unpack_from(payload)
            if t_start != t_expected or count != int(keep.sum()) or len(payload) - _VALS_HEAD.size != count * channels * itemsize:
                self._fail(f"VALS record at latent frame {t_start} does not match its mask")
            raw = bytearray(payload[_VALS_HEAD.size :])
            values = torch.frombuffer(raw, dtype=dtype).view(count, channels) if count else torch.empty(0, channels, dtype=dtype)
            t_expected += keep.shape[1]
            tokens += count
            chunks += 1
            yield keep, values
        if len(payload) != _END.size or _END.unpack(payload) != (chunks, tokens) or t_expected != frames:
            self._fail(f"END record does not match the {chunks} chunks read ({t_expected} of {frames} latent frames)")
        if self._file.tell() != self._size:
            self._fail("trailing bytes after the END record")

    def _parse_mask(self, payload: bytes, t_expected: int, frames: int, height: int, width: int) -> torch.Tensor:
        if len(payload) < _MASK_HEAD.size:
            self._fail("MASK record too short")
        t_start, t_count, codec = _MASK_HEAD.unpack_from(payload)
        if t_start != t_expected or t_count < 1 or t_start + t_count > frames:
            self._fail(f"MASK record covers latent frames {t_start}..{t_start + t_count}, expected to start at {t_expected}")
        positions = t_count * height * width
        expected = (positions + 7) // 8
        data = payload[_MASK_HEAD.size :]
        if codec == MASK_ZLIB:
            inflater = zlib.decompressobj()
            try:
                data = inflater.decompress(data, expected + 1)
            except zlib.error as error:
                self._fail(f"MASK record does not inflate ({error})")
        elif codec != MASK_RAW:
            self._fail(f"unknown mask codec {codec}")
        if len(data) != expected:
            self._fail(f"MASK record holds {len(data)} bytes, expected {expected}")
        bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=positions, bitorder="little")
        keep = torch.from_numpy(bits.astype(bool)).view(1, t_count, height, width)
        if t_start == 0 and not bool(keep[:, 0].all()):
            self._fail("latent frame 0 must be fully kept")
        return keep


def load_latok(path: str | os.PathLike) -> AdaptiveLatent:
    """Read a whole ``.latok`` file into an :class:`AdaptiveLatent`."""
    with LatokReader(path) as reader:
        header = reader.header
        parts = list(reader.chunks())
    keep = torch.cat([k for k, _ in parts], dim=1)
    values = torch.cat([v for _, v in parts])
    source = header["source"]
    try:
        for key in ("source_size", "resized_size", "crop"):
            if source.get(key) is not None:
                source[key] = tuple(int(v) for v in source[key])
        return AdaptiveLatent(
            values=values,
            keep=keep,
            shape=tuple(header["shape"]),
            backend=header["backend"],
            backend_config=str(header["backend_config"]),
            tau=float(header["tau"]),
            source=SourceInfo(**source),
            target_usage=header["target_usage"],
            reference=header["reference"],
            keyframe_interval=header["keyframe_interval"],
            lit_frames=None if header.get("lit_frames") is None else tuple(c == "1" for c in header["lit_frames"]),
            lit_model=header.get("lit_model"),
        )
    except (InvalidInputError, TypeError, ValueError) as error:
        raise LatokFormatError(f"{path}: inconsistent contents ({error})") from None
