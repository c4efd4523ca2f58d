"""Reading ``.latok`` files (the layout is in :mod:`latok.codec.format.writer`), with memory bounded by the file.

:class:`LatokReader` validates as it goes and yields one chunk at a time, still packed
(:meth:`LatokReader.records`) or as tensors (:meth:`LatokReader.chunks`); :func:`load_latok` reads a
whole clip after checking that holding and decoding it fits :func:`whole_clip_limit`.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from latok.codec.format.writer import (
    CRC,
    END_RECORD,
    FORMAT_VERSION,
    MAGIC,
    MASK_HEAD,
    MOTN_HEAD,
    MOTN_HEAD_V3,
    LITW_HEAD,
    TAUC_RECORD,
    PREAMBLE,
    RECORD,
    VALS_HEAD,
    VERSIONS,
)
from latok.codec.format.header import MAX_HEADER_BYTES, chunk_lit_weights, inflate_lit_weights, lit_grid, lit_weight_codes, parse_header
from latok.codec.format.coders import mask_coder, motion_coder
from latok.codec.rule.motion import motion_shape
from latok.codec.tokens import MAX_LIT_CODES, STORAGE_DTYPES, AdaptiveLatent, SourceInfo
from latok.codec.format.coders.values import TABLE_HEAD, ValueCoder
from latok.codec.quantise import dequantise
from latok.errors import ClipTooLargeError, InvalidInputError, LatokFormatError


@dataclass(frozen=True)
class Chunk:
    """One validated MASK + VALS pair, still packed: what the file holds, nothing inflated to bools.

    Attributes:
        t_start, t_count: the latent frames it covers.
        mask_bits: the keep bits, ``t_count * h * w`` of them, little bit order (``(t_count*h*w + 7) // 8`` bytes).
        values: the kept vectors' raw bytes in the storage dtype (``count * C * itemsize``); in a file of
            quantised values (version 3), the dequantised float32 values.
        count: kept vectors, equal to the number of set bits.
        mask_bytes, values_bytes, motion_bytes: bytes the records take in the file (record framing included).
        motion: float32 translations of the chunk's latent frames, ``(1, t_count, 2)`` or per block ``(1, t_count, 2, gh, gw)``, or ``None``.
        lit_weights, lit_bytes: a stream's lit weight codes for the chunk, uint8 ``(t_count, gh, gw)``, and the bytes
            their LITW record takes; ``None`` and 0 in a file without weights per chunk.
        tau, tau_bytes: a stream's tau for the chunk (the header has ``chunk_tau``) and the bytes its TAUC record takes;
            ``None`` and 0 in a file with one tau.
    """

    t_start: int
    t_count: int
    mask_bits: bytes
    values: bytes | memoryview
    count: int
    mask_bytes: int
    values_bytes: int
    motion: torch.Tensor | None = None
    motion_bytes: int = 0
    lit_weights: torch.Tensor | None = None
    lit_bytes: int = 0
    tau: float | None = None
    tau_bytes: int = 0


class ChunkTensors(NamedTuple):
    """One chunk as tensors (:meth:`LatokReader.chunks`): ``keep`` ``(1, k, h, w)`` bool, ``values`` ``(n, C)`` in the
    storage dtype, ``motion`` ``(1, k, 2[, gh, gw])`` float32 or ``None``, ``lit_weights`` uint8 ``(k, gh, gw)`` or ``None``,
    ``tau`` the chunk's own (a stream with a tau per chunk) or ``None`` (the header's)."""

    keep: torch.Tensor
    values: torch.Tensor
    motion: torch.Tensor | None
    lit_weights: torch.Tensor | None
    tau: float | None = None


class LatokReader:
    """Read a ``.latok`` file incrementally: :attr:`header`, then :meth:`chunks` (or :meth:`records`).

    Memory stays bounded by what the file holds: a record is read only after its length is
    checked against the bytes present, a mask inflates to at most the bits its chunk declares
    (capped by :data:`~latok.codec.format.header.MAX_CHUNK_POSITIONS`), and its set bits are counted and
    matched against the values present before any bool tensor is built.
    """

    def __init__(self, path: str | os.PathLike | BinaryIO, name: str | None = None):
        """``path``: a file name, or an open seekable binary file (e.g. a tar member; named ``name`` in errors)."""
        self._owned = not hasattr(path, "read")
        self.path = Path(path) if self._owned else Path(name or getattr(path, "name", "<stream>"))
        if self._owned:
            try:
                self._file = open(self.path, "rb")
            except FileNotFoundError:
                raise LatokFormatError(f"{self.path}: no such file") from None
            except OSError as error:
                raise LatokFormatError(f"{self.path}: cannot open ({error.strerror})") from None
        else:
            self._file = path
        start = self._file.tell()
        self._end = self._file.seek(0, os.SEEK_END)
        self._size = self._end - start
        self._file.seek(start)
        preamble = self._read_exact(PREAMBLE.size, "file preamble")
        magic, version, flags = PREAMBLE.unpack(preamble)
        if magic != MAGIC:
            self._fail("not a .latok file (wrong magic bytes)")
        if version not in VERSIONS:
            self._fail(f"unsupported .latok format version {version} (this latok reads versions {', '.join(map(str, VERSIONS))})")
        self.version = version
        if flags != 0:  # reserved: exactly 0 is valid, so any damage to them is caught
            self._fail(f"reserved preamble flags are {flags:#06x}, must be 0 in format version {FORMAT_VERSION}")
        tag, payload = self._read_record(limit=MAX_HEADER_BYTES)
        if tag != b"HEAD":
            self._fail(f"expected the HEAD record, found {tag!r}")
        self.header_bytes = PREAMBLE.size + RECORD.size + len(payload) + CRC.size
        try:
            self.header = parse_header(payload)
        except LatokFormatError as error:
            self._fail(str(error))
        if version == 1 and self.header["motion"] is not None:
            self._fail("a version-1 file cannot carry motion")
        if (version == 3) != (self.header["value_step"] is not None):
            self._fail(f"a version-{version} file {'must' if version == 3 else 'cannot'} carry quantised values (value_step)")

    @property
    def size(self) -> int:
        """Bytes in the file."""
        return self._size

    def close(self) -> None:
        if self._owned:
            self._file.close()

    def __enter__(self) -> LatokReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _fail(self, reason: str):
        self.close()
        raise LatokFormatError(f"{self.path}: {reason}")

    def _read_exact(self, size: int, what: str) -> bytes:
        if size > self._end - self._file.tell():
            self._fail(f"truncated: {what} needs {size} bytes, file ends first")
        data = self._file.read(size)
        if len(data) != size:
            self._fail(f"truncated while reading {what}")
        return data

    def _read_record(self, limit: int | None = None) -> tuple[bytes, bytes]:
        head = self._read_exact(RECORD.size, "record header")
        tag, length = RECORD.unpack(head)
        if limit is not None and length > limit:
            self._fail(f"{tag!r} record claims {length} bytes, more than the {limit} allowed")
        payload = self._read_exact(length, f"{tag!r} record")
        (crc,) = CRC.unpack(self._read_exact(CRC.size, "record checksum"))
        if zlib.crc32(head + payload) != crc:
            self._fail(f"checksum mismatch in {tag!r} record (file corrupt)")
        return tag, payload

    def records(self, decode: bool = True) -> Iterator[Chunk]:
        """Yield each chunk's validated, still-packed :class:`Chunk`; the END record is checked last.

        ``decode=False`` reads the file's structure only, in time proportional to its bytes: framing,
        checksums, order, extents and the kept counts the records declare (a context-coded mask's
        counts, a zlib or raw mask's set bits), but no range-coded mask or value is decoded, and the
        chunks carry ``mask_bits`` and ``values`` of ``None``.
        """
        _, channels, frames, height, width = self.header["shape"]
        itemsize = STORAGE_DTYPES[self.header["dtype"]].itemsize
        chunk_frames = self.header["chunk_frames"]
        t_expected, tokens, chunks = 0, 0, 0
        steps = self.header["value_step"]
        value_coder = None if steps is None or not decode else ValueCoder(channels, height, width)
        self._previous_keep = None  # (h, w) keep of the latent frame before the chunk: the context coder's context
        values_tag = b"VALS" if steps is None else b"QVAL"
        largest = None  # of the chunks' taus
        while True:
            tag, payload = self._read_record()
            if tag == b"END\x00":
                break
            if tag != b"MASK":
                self._fail(f"expected a MASK or END record, found {tag!r}")
            mask_bytes = len(payload) + RECORD.size + CRC.size
            tag, values = self._read_record()
            if tag != values_tag or len(values) < VALS_HEAD.size:
                self._fail(f"expected a {values_tag.decode()} record after MASK, found {tag!r}")
            t_start, count = VALS_HEAD.unpack_from(values)
            exact_size = steps is not None or len(values) - VALS_HEAD.size == count * channels * itemsize
            if t_start != t_expected or not exact_size:
                self._fail(f"{values_tag.decode()} record at latent frame {t_start} does not match its mask")
            t_count, bits = self._parse_mask(payload, t_expected, frames, height, width, chunk_frames, count, decode)
            values_bytes = len(values) + RECORD.size + CRC.size
            if not decode:
                data = None
                if steps is not None and (len(values) < VALS_HEAD.size + TABLE_HEAD.size or TABLE_HEAD.unpack_from(values, VALS_HEAD.size)[0] > len(values) - VALS_HEAD.size - TABLE_HEAD.size):
                    self._fail("QVAL record: value tables run past the record")
            elif value_coder is not None:
                data = self._decode_values(value_coder, bits, t_count, height, width, memoryview(values)[VALS_HEAD.size :], steps)
            else:
                data = values[VALS_HEAD.size :]
            del values
            before = self._file.tell()
            motion = self._read_motion(t_start, t_count, height, width) if self.header["motion"] is not None else None
            after = self._file.tell()
            weights = self._read_lit_weights(t_start, t_count, height, width) if chunk_lit_weights(self.header) else None
            before_tau = self._file.tell()
            tau = self._read_chunk_tau(t_start, t_count) if self.header["chunk_tau"] else None
            largest = tau if largest is None else max(largest, tau)
            yield Chunk(t_start, t_count, bits, data, count, mask_bytes, values_bytes, motion, after - before, weights, before_tau - after,
                        tau, self._file.tell() - before_tau)  # fmt: skip
            t_expected += t_count
            tokens += count
            chunks += 1
        if len(payload) != END_RECORD.size or END_RECORD.unpack(payload) != (chunks, tokens) or t_expected != frames:
            self._fail(f"END record does not match the {chunks} chunks read ({t_expected} of {frames} latent frames)")
        if self._file.tell() != self._end:
            self._fail("trailing bytes after the END record")
        if self.header["chunk_tau"] and largest != self.header["tau"]:
            self._fail(f"the header's tau {self.header['tau']} is not the largest of its chunks' ({largest})")

    def _decode_values(self, coder: ValueCoder, bits: bytes, t_count: int, height: int, width: int, payload, steps) -> memoryview:
        positions = t_count * height * width
        keep = np.unpackbits(np.frombuffer(bits, dtype=np.uint8), count=positions, bitorder="little").view(np.bool_)
        try:
            codes = coder.decode(torch.from_numpy(keep.reshape(1, t_count, height, width)), payload)
        except LatokFormatError as error:
            self._fail(f"QVAL record: {error}")
        if not codes.numel():  # a chunk that keeps nothing
            return memoryview(b"")
        return memoryview(dequantise(codes, steps).numpy()).cast("B")  # no copy: the chunk's only float32 array

    def _read_motion(self, t_start: int, t_count: int, height: int, width: int) -> torch.Tensor:
        shape = motion_shape(1, t_count, height, width, self.header["motion"])
        tag, payload = self._read_record()
        head = MOTN_HEAD if self.version < 3 else MOTN_HEAD_V3
        found = f"expected a MOTN record of {shape} for latent frames {t_start}..{t_start + t_count}, found {tag!r} of {len(payload)} bytes"
        if tag != b"MOTN" or len(payload) < head.size or head.unpack_from(payload)[:2] != (t_start, t_count):
            self._fail(found)
        try:
            coder = motion_coder(0 if self.version < 3 else head.unpack_from(payload)[2], self.version)  # version 2: float32
            vectors = coder.decode(payload[head.size :], shape)
        except LatokFormatError as error:
            self._fail(str(error))
        if not np.isfinite(vectors).all() or np.abs(vectors).max(initial=0.0) > max(height, width):
            self._fail(f"MOTN record at latent frame {t_start} holds a translation that is not finite or exceeds the frame")
        return torch.from_numpy(vectors.copy()).view(shape)

    def _read_lit_weights(self, t_start: int, t_count: int, height: int, width: int) -> torch.Tensor:
        tile = self.header["lit_tile"]
        grid = lit_grid(t_count, height, width, tile)
        tag, payload = self._read_record()
        if tag != b"LITW" or len(payload) < LITW_HEAD.size or LITW_HEAD.unpack_from(payload) != (t_start, t_count):
            self._fail(f"expected a LITW record of lit weights for latent frames {t_start}..{t_start + t_count}, found {tag!r} of {len(payload)} bytes")
        try:
            codes = inflate_lit_weights(payload[LITW_HEAD.size :], grid, tile)
        except LatokFormatError as error:
            self._fail(f"LITW record at latent frame {t_start}: lit_weights {error}")
        return torch.from_numpy(codes.copy())

    def _read_chunk_tau(self, t_start: int, t_count: int) -> float:
        tag, payload = self._read_record()
        if tag != b"TAUC" or len(payload) != TAUC_RECORD.size or TAUC_RECORD.unpack(payload)[:2] != (t_start, t_count):
            self._fail(f"expected a TAUC record of the tau of latent frames {t_start}..{t_start + t_count}, found {tag!r} of {len(payload)} bytes")
        tau = TAUC_RECORD.unpack(payload)[2]
        if not 0.0 <= tau <= self.header["tau"]:  # NaN fails too
            self._fail(f"TAUC record at latent frame {t_start}: tau {tau} is not in [0, the header's {self.header['tau']}]")
        return tau

    def chunks(self) -> Iterator[ChunkTensors]:
        """Yield each chunk as :class:`ChunkTensors` (keep, values, motion, lit weights), validating as it goes."""
        _, channels, _, height, width = self.header["shape"]
        dtype = STORAGE_DTYPES[self.header["dtype"]]
        for chunk in self.records():
            positions = chunk.t_count * height * width
            bits = np.unpackbits(np.frombuffer(chunk.mask_bits, dtype=np.uint8), count=positions, bitorder="little")
            keep = torch.from_numpy(bits.view(np.bool_)).view(1, chunk.t_count, height, width)
            if chunk.count:
                data = chunk.values if isinstance(chunk.values, memoryview) else bytearray(chunk.values)  # decoded (v3): already ours
                values = torch.frombuffer(data, dtype=dtype).view(chunk.count, channels)
            else:
                values = torch.empty(0, channels, dtype=dtype)
            yield ChunkTensors(keep, values, chunk.motion, chunk.lit_weights, chunk.tau)

    def _parse_mask(
        self, payload: bytes, t_expected: int, frames: int, height: int, width: int, chunk_frames: int, count: int, decode: bool = True
    ) -> tuple[int, bytes | None]:
        """Check a MASK record against the header and the VALS count; return ``(t_count, packed bits)``
        (``None`` for a context-coded mask when not ``decode``: its declared counts are checked instead)."""
        if len(payload) < MASK_HEAD.size:
            self._fail("MASK record too short")
        t_start, t_count, codec = MASK_HEAD.unpack_from(payload)
        if t_start != t_expected or t_count < 1 or t_start + t_count > frames or t_count > chunk_frames:
            self._fail(
                f"MASK record covers latent frames {t_start}..{t_start + t_count}, expected to start at "
                f"{t_expected} and cover 1..{chunk_frames} of {frames}"
            )
        positions = t_count * height * width  # <= MAX_CHUNK_POSITIONS, checked with the header
        expected = (positions + 7) // 8
        data = payload[MASK_HEAD.size :]
        try:
            coder = mask_coder(codec, self.version)
            kept = None if decode else coder.declared_kept(data, t_count, height * width, first=t_start == 0)
            if kept is None:
                data = coder.decode(data, t_count, height, width, self._previous_keep)
        except LatokFormatError as error:
            self._fail(str(error) if str(error).startswith("MASK") else f"MASK record: {error}")
        if kept is not None:  # counted, not decoded: the next chunk's context is not needed either
            if kept != count:
                self._fail(f"MASK record at latent frame {t_start} keeps a different number of positions than its QVAL record holds")
            return t_count, None
        if len(data) != expected:
            self._fail(f"MASK record holds {len(data)} bytes, expected {expected}")
        packed = np.frombuffer(data, dtype=np.uint8)
        if decode and self.version >= 3:  # the next chunk's context: its last frame's bits only
            start = positions - height * width
            last = np.unpackbits(packed[start // 8 :], bitorder="little")[start % 8 : start % 8 + height * width]
            self._previous_keep = last.view(np.bool_).reshape(height, width)
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


# What a whole-clip decode or export holds per latent position and per rendered pixel, beyond the fixed cost of
# the models.  Measured with tests/fuzz_latok.py's `latok` command on blackswan at 240p, 17 against 50 frames:
# export (lit) grew by 4.6 MB per latent frame (2,970 bytes per position), decode with lit by 5.2 MB, with hold by 2.4 MB.
LATENT_COPIES = 4  # float32 latents alive at once (values, restored, fill work, output)
INPAINTER_BYTES = 3072  # the inpainter's activations per latent position
VIDEO_COPIES = 3  # float32 decoded videos alive at once (decoder output, crop, conversion for the writer)


def whole_clip_bytes(header: dict) -> int:
    """Memory a whole-clip load and decode of ``header``'s clip takes beyond the models themselves, from the
    header alone: its keep mask, the float32 latents restoration holds, the inpainter's activations, and the
    float32 video the decoder renders, at the size the *latent* decodes to (never less than the declared source)."""
    from latok.vae import vae_class

    _, channels, frames, height, width = header["shape"]
    backend, source = vae_class(header["backend"]), header["source"]
    rendered = ((frames - 1) * backend.temporal_ratio + 1) * height * backend.spatial_ratio * width * backend.spatial_ratio
    pixels = max(rendered, source["frames"] * source["height"] * source["width"])
    return frames * height * width * (1 + 4 * channels * LATENT_COPIES + INPAINTER_BYTES) + pixels * 3 * 4 * VIDEO_COPIES


def _lit_guard(header: dict, parts: list[ChunkTensors]) -> dict:
    """The clip's lit guard fields for :class:`AdaptiveLatent`: the header's, or a stream's weights per chunk joined
    into one clip's (where they fit ``MAX_LIT_CODES``; else none)."""
    if chunk_lit_weights(header):
        codes = torch.cat([part.lit_weights for part in parts])
        if codes.numel() > MAX_LIT_CODES:
            return {}
        frames = tuple((codes > 0).flatten(1).any(1).tolist())
        return {"lit_frames": frames, "lit_model": header["lit_model"], "lit_weights": codes, "lit_tile": header["lit_tile"]}
    return {
        "lit_frames": None if header["lit_frames"] is None else tuple(c == "1" for c in header["lit_frames"]),
        "lit_model": header["lit_model"],
        "lit_weights": None if header["lit_weights"] is None else torch.from_numpy(lit_weight_codes(header).copy()),
        "lit_tile": header["lit_tile"],
    }


def load_latok(path: str | os.PathLike | BinaryIO, name: str | None = None) -> AdaptiveLatent:
    """Read a whole ``.latok`` file (a path, or an open seekable binary file named ``name``) into an :class:`AdaptiveLatent`.

    A stream's lit weights per chunk become one clip's lit guard, and its tau per chunk the largest (the header's: a
    bound on every chunk's dropped changes); both were fitted to the chunked decode, so
    :meth:`~latok.LatentTokenizer.decode_stream` restores such a file best (``latok decode`` uses it for them).

    Raises:
        LatokFormatError: the file is missing, truncated, corrupt or malformed.
        ClipTooLargeError: the clip it declares needs more memory than :func:`whole_clip_limit`
            to hold and decode at once (decode it with :meth:`~latok.LatentTokenizer.decode_stream`).
    """
    with LatokReader(path, name) as reader:
        path = reader.path
        header = reader.header
        needed, limit = whole_clip_bytes(header), whole_clip_limit()
        if needed > limit:
            raise ClipTooLargeError(
                f"{path}: its {header['source']['frames']}-frame clip needs about {needed / (1 << 30):.1f} GiB to decode "
                f"at once, over the {limit / (1 << 30):.1f} GiB limit ({MEMORY_LIMIT_ENV}); decode it with --stream"
            )
        parts = list(reader.chunks())
    keep = torch.cat([part.keep for part in parts], dim=1)
    values = torch.cat([part.values for part in parts])
    motion = None if header["motion"] is None else torch.cat([part.motion for part in parts], dim=1)
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
            **_lit_guard(header, parts),
            motion=motion,
            motion_model=header["motion"],
            precision=header["precision"],
            target_quality=header["target_quality"],
            rule_metric=header["rule_metric"] or "latent",
            value_step=None if header["value_step"] is None else tuple(float(s) for s in header["value_step"]),
        )
    except InvalidInputError as error:
        raise LatokFormatError(f"{path}: inconsistent contents ({error})") from None
