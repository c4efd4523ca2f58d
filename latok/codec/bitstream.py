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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from latok._fs import AtomicWriter, atomic_path
from latok.codec.header import MAX_CHUNK_POSITIONS, MAX_HEADER_BYTES, parse_header
from latok.codec.tokens import STORAGE_DTYPES, AdaptiveLatent, SourceInfo, dtype_name
from latok.errors import ClipTooLargeError, InvalidInputError, LatokFormatError

MAGIC = b"LATOK\r\n\x1a"
FORMAT_VERSION = 1
_PREAMBLE = struct.Struct("<8sHH")
_RECORD = struct.Struct("<4sI")
_CRC = struct.Struct("<I")
_MASK_HEAD = struct.Struct("<IIB")
_VALS_HEAD = struct.Struct("<II")
_END = struct.Struct("<IQ")
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
        _, _, frames, height, width = header["shape"]
        if height * width * min(header["chunk_frames"], frames or header["chunk_frames"]) > MAX_CHUNK_POSITIONS:
            raise InvalidInputError(
                f"chunks of {header['chunk_frames']} latent frames of {height}x{width} exceed the "
                f"{MAX_CHUNK_POSITIONS} positions a chunk may hold; use shorter chunks"
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
        self._file = open(self._tmp, "wb")
        self._file.write(_PREAMBLE.pack(MAGIC, FORMAT_VERSION, 0))
        self._file.write(_record(b"HEAD", _header_payload(self._with_counts(_UNKNOWN, _UNKNOWN))))

    @staticmethod
    def _check_header(header: dict) -> None:
        """latok never writes a header its reader would refuse."""
        try:
            parse_header(_header_payload(header))
        except LatokFormatError as error:
            raise InvalidInputError(f"cannot write this clip: {error}") from None

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
        if t_count > self.header["chunk_frames"]:
            raise InvalidInputError(f"a chunk covers {t_count} latent frames, more than the header's {self.header['chunk_frames']}")
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
            try:
                self._check_header(self.header)
            except InvalidInputError:
                self.abort()
                raise
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


@dataclass(frozen=True)
class Chunk:
    """One validated MASK + VALS pair, still packed: what the file holds, nothing inflated to bools.

    Attributes:
        t_start, t_count: the latent frames it covers.
        mask_bits: the keep bits, ``t_count * h * w`` of them, little bit order (``(t_count*h*w + 7) // 8`` bytes).
        values: the kept vectors' raw bytes in the storage dtype (``count * C * itemsize``).
        count: kept vectors, equal to the number of set bits.
        mask_bytes, values_bytes: bytes the two records take in the file (record framing included).
    """

    t_start: int
    t_count: int
    mask_bits: bytes
    values: bytes
    count: int
    mask_bytes: int
    values_bytes: int


def encoded_size(adaptive: AdaptiveLatent, chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> int:
    """Bytes ``adaptive`` takes as a ``.latok`` file (written once to a temporary folder)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return save_latok(adaptive, Path(tmp) / "clip.latok", chunk_frames).stat().st_size


def bitrate(size: int, frames: int, height: int, width: int, fps: float) -> dict[str, float]:
    """``{"bpp", "kbps"}`` of ``size`` bytes for a ``frames`` x ``height`` x ``width`` video at ``fps``."""
    return {"bpp": size * 8 / (frames * height * width), "kbps": size * 8 / (frames / fps) / 1000}


class LatokReader:
    """Read a ``.latok`` file incrementally: :attr:`header`, then :meth:`chunks` (or :meth:`records`).

    Memory stays bounded by what the file holds: a record is read only after its length is
    checked against the bytes present, a mask inflates to at most the bits its chunk declares
    (capped by :data:`~latok.codec.header.MAX_CHUNK_POSITIONS`), and its set bits are counted and
    matched against the values present before any bool tensor is built.
    """

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
        magic, version, flags = _PREAMBLE.unpack(preamble)
        if magic != MAGIC:
            self._fail("not a .latok file (wrong magic bytes)")
        if version != FORMAT_VERSION:
            self._fail(f"unsupported .latok format version {version} (this latok reads version {FORMAT_VERSION})")
        if flags != 0:  # reserved: exactly 0 is valid, so any damage to them is caught
            self._fail(f"reserved preamble flags are {flags:#06x}, must be 0 in format version {FORMAT_VERSION}")
        tag, payload = self._read_record(limit=MAX_HEADER_BYTES)
        if tag != b"HEAD":
            self._fail(f"expected the HEAD record, found {tag!r}")
        self.header_bytes = _PREAMBLE.size + _RECORD.size + len(payload) + _CRC.size
        try:
            self.header = parse_header(payload)
        except LatokFormatError as error:
            self._fail(str(error))

    @property
    def size(self) -> int:
        """Bytes in the file."""
        return self._size

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

    def records(self) -> Iterator[Chunk]:
        """Yield each chunk's validated, still-packed :class:`Chunk`; the END record is checked last."""
        _, channels, frames, height, width = self.header["shape"]
        itemsize = STORAGE_DTYPES[self.header["dtype"]].itemsize
        chunk_frames = self.header["chunk_frames"]
        t_expected, tokens, chunks = 0, 0, 0
        while True:
            tag, payload = self._read_record()
            if tag == b"END\x00":
                break
            if tag != b"MASK":
                self._fail(f"expected a MASK or END record, found {tag!r}")
            mask_bytes = len(payload) + _RECORD.size + _CRC.size
            tag, values = self._read_record()
            if tag != b"VALS" or len(values) < _VALS_HEAD.size:
                self._fail(f"expected a VALS record after MASK, found {tag!r}")
            t_start, count = _VALS_HEAD.unpack_from(values)
            if t_start != t_expected or len(values) - _VALS_HEAD.size != count * channels * itemsize:
                self._fail(f"VALS record at latent frame {t_start} does not match its mask")
            t_count, bits = self._parse_mask(payload, t_expected, frames, height, width, chunk_frames, count)
            yield Chunk(t_start, t_count, bits, values[_VALS_HEAD.size :], count, mask_bytes, len(values) + _RECORD.size + _CRC.size)
            t_expected += t_count
            tokens += count
            chunks += 1
        if len(payload) != _END.size or _END.unpack(payload) != (chunks, tokens) or t_expected != frames:
            self._fail(f"END record does not match the {chunks} chunks read ({t_expected} of {frames} latent frames)")
        if self._file.tell() != self._size:
            self._fail("trailing bytes after the END record")

    def chunks(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(keep (1, k, h, w) bool, values (n, C))`` per chunk, validating as it goes."""
        _, channels, _, height, width = self.header["shape"]
        dtype = STORAGE_DTYPES[self.header["dtype"]]
        for chunk in self.records():
            positions = chunk.t_count * height * width
            bits = np.unpackbits(np.frombuffer(chunk.mask_bits, dtype=np.uint8), count=positions, bitorder="little")
            keep = torch.from_numpy(bits.view(np.bool_)).view(1, chunk.t_count, height, width)
            if chunk.count:
                values = torch.frombuffer(bytearray(chunk.values), dtype=dtype).view(chunk.count, channels)
            else:
                values = torch.empty(0, channels, dtype=dtype)
            yield keep, values

    def _parse_mask(
        self, payload: bytes, t_expected: int, frames: int, height: int, width: int, chunk_frames: int, count: int
    ) -> tuple[int, bytes]:
        """Check a MASK record against the header and the VALS count; return ``(t_count, packed bits)``."""
        if len(payload) < _MASK_HEAD.size:
            self._fail("MASK record too short")
        t_start, t_count, codec = _MASK_HEAD.unpack_from(payload)
        if t_start != t_expected or t_count < 1 or t_start + t_count > frames or t_count > chunk_frames:
            self._fail(
                f"MASK record covers latent frames {t_start}..{t_start + t_count}, expected to start at "
                f"{t_expected} and cover 1..{chunk_frames} of {frames}"
            )
        positions = t_count * height * width  # <= MAX_CHUNK_POSITIONS, checked with the header
        expected = (positions + 7) // 8
        data = payload[_MASK_HEAD.size :]
        if codec == MASK_ZLIB:
            inflater = zlib.decompressobj()
            try:
                data = inflater.decompress(data, expected + 1)  # never more than the chunk declares
            except zlib.error as error:
                self._fail(f"MASK record does not inflate ({error})")
            if not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
                self._fail("MASK record does not inflate to exactly its declared bits")
        elif codec != MASK_RAW:
            self._fail(f"unknown mask codec {codec}")
        if len(data) != expected:
            self._fail(f"MASK record holds {len(data)} bytes, expected {expected}")
        packed = np.frombuffer(data, dtype=np.uint8)
        spare = expected * 8 - positions
        if spare and packed[-1] >> (8 - spare):
            self._fail("MASK record sets bits past its last position")
        if int(np.bitwise_count(packed).sum(dtype=np.int64)) != count:
            self._fail(f"MASK record at latent frame {t_start} keeps a different number of positions than its VALS record holds")
        if t_start == 0 and not _all_set(packed, height * width):
            self._fail("latent frame 0 must be fully kept")
        return t_count, data


def _all_set(packed: np.ndarray, bits: int) -> bool:
    """Are the first ``bits`` bits (little bit order) of ``packed`` all 1?"""
    whole, rest = divmod(bits, 8)
    return bool((packed[:whole] == 0xFF).all()) and (not rest or (packed[whole] & ((1 << rest) - 1)) == (1 << rest) - 1)


MEMORY_LIMIT_ENV = "LATOK_MAX_MEMORY_GB"


def whole_clip_limit() -> int:
    """Bytes a whole-clip load may plan for: ``$LATOK_MAX_MEMORY_GB``, else half the machine's memory."""
    value = os.environ.get(MEMORY_LIMIT_ENV)
    if value:
        try:
            gigabytes = float(value)
        except ValueError:
            raise InvalidInputError(f"{MEMORY_LIMIT_ENV}={value!r} is not a number of GiB") from None
        if not 0 < gigabytes < 1 << 20:
            raise InvalidInputError(f"{MEMORY_LIMIT_ENV}={value!r} must be a positive number of GiB")
        return int(gigabytes * (1 << 30))
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):  # not POSIX: assume a modest machine
        return 8 << 30


def whole_clip_bytes(header: dict) -> int:
    """Memory a whole-clip load and decode of ``header``'s clip needs at least: its keep mask,
    its restored float32 latent, and its decoded float32 video."""
    _, channels, frames, height, width = header["shape"]
    source = header["source"]
    positions = frames * height * width
    return positions * (1 + 4 * channels) + source["frames"] * source["height"] * source["width"] * 3 * 4


def load_latok(path: str | os.PathLike) -> AdaptiveLatent:
    """Read a whole ``.latok`` file into an :class:`AdaptiveLatent`.

    Raises:
        LatokFormatError: the file is missing, truncated, corrupt or malformed.
        ClipTooLargeError: the clip it declares needs more memory than :func:`whole_clip_limit`
            to hold and decode at once (decode it with :meth:`~latok.LatentTokenizer.decode_stream`).
    """
    with LatokReader(path) as reader:
        header = reader.header
        needed, limit = whole_clip_bytes(header), whole_clip_limit()
        if needed > limit:
            raise ClipTooLargeError(
                f"{path}: its {header['source']['frames']}-frame clip needs about {needed / (1 << 30):.1f} GiB to decode "
                f"at once, over the {limit / (1 << 30):.1f} GiB limit ({MEMORY_LIMIT_ENV}); decode it with --stream"
            )
        parts = list(reader.chunks())
    keep = torch.cat([k for k, _ in parts], dim=1)
    values = torch.cat([v for _, v in parts])
    source = dict(header["source"])
    for key in ("source_size", "resized_size", "crop"):
        if source[key] is not None:
            source[key] = tuple(source[key])
    try:
        return AdaptiveLatent(
            values=values,
            keep=keep,
            shape=tuple(header["shape"]),
            backend=header["backend"],
            backend_config=header["backend_config"],
            tau=float(header["tau"]),
            source=SourceInfo(**source),
            target_usage=header["target_usage"],
            reference=header["reference"],
            keyframe_interval=header["keyframe_interval"],
            lit_frames=None if header["lit_frames"] is None else tuple(c == "1" for c in header["lit_frames"]),
            lit_model=header["lit_model"],
        )
    except InvalidInputError as error:
        raise LatokFormatError(f"{path}: inconsistent contents ({error})") from None
