"""Quantised kept values and their entropy coding (``.latok`` format version 3).

**Quantisation.** ``--value-step S`` puts channel ``c`` of every kept vector on a uniform grid of
step ``s_c = S / sensitivity_c`` in latok's normalised space, where ``sensitivity_c`` is how much the
decoder's pixels move per unit of that channel (``VideoAutoencoder.value_sensitivity``, measured by
``eval/decoder_sensitivity.py`` from :meth:`~latok.vae.base.VideoAutoencoder.decoder_metric`, geometric
mean 1).  Equal pixel error per channel is what minimises the total error at a given rate, so a
channel the decoder barely sees takes a coarser step.  A value is stored as its integer code
``q = round(v / s_c)`` and restored as exactly ``float32(q) * float32(s_c)``: one IEEE multiply, the same
on every machine.  ``S = 0`` keeps the storage dtype's exact values (format versions 1 and 2).

**Prediction.** Each code is coded as its residual against a prediction the decoder has too:

- latent frame 0 of the file (always fully kept): the code before it in raster order, per channel;
- any later kept position: the last code kept at that position (the rule's ``last-kept`` reference).

Both predictions are integer sums, so the decoder inverts them exactly with cumulative sums.  A
motion-compensated prediction saves 1 % (nearest-integer shift) to 4 % (quarter-pel bilinear, which
would need integer-exact warping to stay deterministic) on the pool validation split and is not used
(``eval/value_coding_probes.py``).

**Entropy coding.** Residuals are zigzag-folded (0, -1, 1, -2, ...); folds below :data:`DIRECT`
are symbols of their own, larger ones a bucket symbol per power of two plus the low bits, coded
uniformly.  Every (context, channel) stream has a static categorical model from its own histogram,
where the context is intra (frame 0) or temporal.  Temporal contexts can be split by how many frames
ago the position was last kept (:data:`STALENESS`); on the pool validation split such splits change the
values' bytes by −0.15 % to +0.05 %, tables included (``eval/value_coding_probes.py``), so one temporal
context is used.  Each table is sent with the chunk as one log-scale byte per symbol
(:func:`count_code`).  The symbols are range coded with ``constriction``.  A chunk's payload::

    tables   u32 length | zlib( per stream: symbols u8, then one count code u8 per symbol )
    range    the range coder's u32 words, little-endian, to the end of the record

Decoding checks everything it can against what the mask declares: symbol counts, alphabet sizes,
the coder ending exactly at its data, and codes within :data:`MAX_CODE`.  Every failure is a
:class:`~latok.errors.LatokFormatError`.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

import numpy as np
import torch

from latok.codec.quantise import MAX_CODE, MAX_STEP, MIN_STEP, dequantise, quantise, within_code_bound
from latok.errors import InvalidInputError, LatokFormatError

MAX_CHUNK_VALUES = 1 << 21  # kept values (vectors x C) of one QVAL record: bounds what a small file can make the reader decode
DIRECT = 64  # folds below this are their own symbol
BUCKETS = 23  # buckets for folds in [2**(6+b), 2**(7+b)), b < BUCKETS: folds below 2**29
ALPHABET = DIRECT + BUCKETS
STALENESS = (1,)  # temporal contexts by frames since the position was last kept: one (finer ones do not pay, below)
STREAMS = 1 + len(STALENESS)  # with the intra stream
TABLE_HEAD = struct.Struct("<I")
# count codes: 0 = absent, k >= 1 stands for round(2 ** ((k - 1) / 8)); counts are scaled to at most 2**31 first
_COUNT_TABLE = np.array([0] + [round(2 ** ((k - 1) / 8)) for k in range(1, 256)], dtype=np.float64)


# -- residual symbols ----------------------------------------------------------------------


def _fold(residual: np.ndarray) -> np.ndarray:
    residual = residual.astype(np.int64)
    return np.where(residual < 0, -2 * residual - 1, 2 * residual)


def _unfold(fold: np.ndarray) -> np.ndarray:
    return np.where(fold & 1, -((fold + 1) >> 1), fold >> 1)


def _symbols(fold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Folds -> (symbol, low bits below the bucket's leading one)."""
    big = fold >= DIRECT
    bucket = np.zeros_like(fold)
    bucket[big] = np.floor(np.log2(fold[big].astype(np.float64))).astype(np.int64) - 6
    # log2 of an integer near a power of two may round either way: settle it exactly
    bucket[big] += (fold[big] >= (np.int64(1) << (bucket[big] + 7))).astype(np.int64)
    bucket[big] -= (fold[big] < (np.int64(1) << (bucket[big] + 6))).astype(np.int64)
    symbol = np.where(big, DIRECT + bucket, fold)
    low = np.where(big, fold - (np.int64(1) << (bucket + 6)), 0)
    return symbol.astype(np.int32), low


def count_code(counts: np.ndarray) -> np.ndarray:
    """Histogram -> one byte per symbol: 0 for absent, else the log-scale code of the count (scaled)."""
    counts = counts.astype(np.float64)
    top = counts.max(initial=0.0)
    if top > 2**31:
        counts = np.where(counts > 0, np.maximum(counts * (2**31 / top), 1.0), 0.0)
    codes = np.where(counts > 0, np.clip(np.round(8 * np.log2(np.maximum(counts, 1.0))) + 1, 1, 255), 0)
    return codes.astype(np.uint8)


def _model(codes: np.ndarray):
    import constriction

    return constriction.stream.model.Categorical(_COUNT_TABLE[codes], perfect=False)


LOW_PIECE = 16  # low bits are coded in uniform pieces of at most this many bits (the coder's precision)


def _encode_low(encoder, low: np.ndarray, bits: int) -> None:
    import constriction

    for shift in range(0, bits, LOW_PIECE):
        width = min(LOW_PIECE, bits - shift)
        encoder.encode(((low >> shift) & ((1 << width) - 1)).astype(np.int32), constriction.stream.model.Uniform(1 << width))


def _decode_low(decoder, size: int, bits: int) -> np.ndarray:
    import constriction

    low = np.zeros(size, dtype=np.int64)
    for shift in range(0, bits, LOW_PIECE):
        width = min(LOW_PIECE, bits - shift)
        low |= decoder.decode(constriction.stream.model.Uniform(1 << width), size).astype(np.int64) << shift
    return low


def guarded(call, *args):
    """A range-decoder call on untrusted data: whatever constriction raises (a Rust panic included) is a format error."""
    try:
        return call(*args)
    except BaseException as error:  # noqa: BLE001 - pyo3's PanicException derives from BaseException
        if isinstance(error, (KeyboardInterrupt, SystemExit, MemoryError)):
            raise
        raise LatokFormatError(f"range-coded data is invalid ({type(error).__name__})") from None


def _bounded(codes: np.ndarray) -> np.ndarray:
    if not within_code_bound(codes):
        raise LatokFormatError(f"a decoded value code exceeds {MAX_CODE}")
    return codes


# -- a chunk's residuals -------------------------------------------------------------------


class ValueCoder:
    """Codes the kept codes of consecutive chunks of one file; carries each position's last kept code
    (and when it was kept) between chunks.

    Args:
        channels, height, width: the latent's C, h, w.
    """

    def __init__(self, channels: int, height: int, width: int):
        self.channels, self.height, self.width = channels, height, width
        self._last = np.zeros((height * width, channels), dtype=np.int64)  # last kept code per position
        self._last_frame = np.zeros(height * width, dtype=np.int64)  # the latent frame it was kept in
        self._frames = 0  # latent frames coded so far

    def _layout(self, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, np.ndarray, np.ndarray]:
        """For a chunk's ``(k, h, w)`` keep: the kept entries' positions; the order that groups the
        temporal entries by position (time order within); how many leading entries are intra (frame 0
        of the file); where each position's run starts in that order; and each grouped entry's context."""
        flat = np.flatnonzero(keep.reshape(keep.shape[0], -1))
        area = self.height * self.width
        positions, frames = flat % area, flat // area + self._frames
        intra = area if self._frames == 0 else 0
        order = np.argsort(positions[intra:], kind="stable") + intra
        grouped_pos, grouped_frames = positions[order], frames[order]
        starts = np.flatnonzero(np.r_[True, grouped_pos[1:] != grouped_pos[:-1]]) if len(order) else np.zeros(0, dtype=np.int64)
        before = np.empty_like(grouped_frames)
        if len(order):
            before[1:] = grouped_frames[:-1]
            before[starts] = self._last_frame[grouped_pos[starts]] if intra == 0 else 0
        staleness = grouped_frames - before
        context = np.searchsorted(np.asarray(STALENESS), staleness, side="right")  # 1..len(STALENESS)
        return positions, order, intra, starts, context

    def _commit(self, keep: np.ndarray, positions: np.ndarray, codes: np.ndarray) -> None:
        frames = np.flatnonzero(keep.reshape(keep.shape[0], -1)) // (self.height * self.width) + self._frames
        self._last[positions] = codes  # later entries of a position overwrite earlier ones (time order)
        self._last_frame[positions] = frames
        self._frames += keep.shape[0]

    def residual_streams(self, keep: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """A chunk's ``(k, h, w)`` keep and ``(N, C)`` int64 codes -> (the entries' positions, the ``(n, C)``
        residuals of each stream: intra, then each temporal context), in coding order."""
        positions, order, intra, starts, context = self._layout(keep)
        first = codes[:intra]
        streams = [np.diff(first, axis=0, prepend=np.zeros((1, self.channels), dtype=np.int64))]
        last = self._last.copy()
        if intra:
            last[:] = first
        grouped = codes[order]
        previous = np.empty_like(grouped)
        if len(grouped):
            previous[1:] = grouped[:-1]
            previous[starts] = last[positions[order][starts]]
        temporal = grouped - previous
        return positions, streams + [temporal[context == k] for k in range(1, len(STALENESS) + 1)]

    def entry_bits(self, keep: torch.Tensor, codes: torch.Tensor) -> np.ndarray:
        """A chunk's ``(1, k, h, w)`` keep and ``(N, C)`` int32 codes -> ``(N,)`` float64: the bits :meth:`encode`
        spends on each kept entry, summed over channels: ``-log2`` of its residual symbol's probability under
        the chunk's own tables, plus its low bits (its surprise given its context; the tables and the range
        coder's final words are left out).  The coder's state does not move."""
        keep_np, codes_np = keep[0].numpy(), codes.numpy().astype(np.int64)
        _, order, intra, _, context = self._layout(keep_np)
        _, streams = self.residual_streams(keep_np, codes_np)
        entries = [np.arange(intra)] + [order[context == k] for k in range(1, len(STALENESS) + 1)]
        bits = np.zeros(len(codes_np))
        for channel in range(self.channels):
            for residuals, index in zip(streams, entries):
                symbols, _ = _symbols(_fold(residuals[:, channel]))
                counts = _COUNT_TABLE[count_code(np.bincount(symbols, minlength=ALPHABET))]
                if not len(symbols) or np.count_nonzero(counts) <= 1:  # one symbol: the table says it all
                    continue
                cost = -np.log2(counts[symbols] / counts.sum()) + np.maximum(symbols - DIRECT + 6, 0) * (symbols >= DIRECT)
                np.add.at(bits, index, cost)
        return bits

    def encode(self, keep: torch.Tensor, codes: torch.Tensor) -> bytes:
        """A chunk's ``(1, k, h, w)`` keep and ``(N, C)`` int32 codes -> its payload."""
        import constriction

        keep_np = keep[0].numpy()
        codes_np = codes.numpy().astype(np.int64)
        if self._frames == 0 and not keep_np[0].all():
            raise InvalidInputError("latent frame 0 must be fully kept")
        positions, streams = self.residual_streams(keep_np, codes_np)
        tables = bytearray()
        encoder = constriction.stream.queue.RangeEncoder()
        for channel in range(self.channels):  # channel-major, so a decoder holds one channel's residuals at a time
            for residuals in streams:
                symbols, low = _symbols(_fold(residuals[:, channel]))
                counts = np.bincount(symbols, minlength=ALPHABET)
                used = int(np.flatnonzero(counts).max(initial=-1)) + 1
                codes_u8 = count_code(counts[:used])
                tables += bytes([used]) + codes_u8.tobytes()
                if used <= 1:  # nothing, or only zero folds: the table says it all
                    continue
                encoder.encode(symbols, _model(codes_u8))
                for bucket in np.unique(symbols[symbols >= DIRECT]):
                    _encode_low(encoder, low[symbols == bucket], int(bucket) - DIRECT + 6)
        self._commit(keep_np, positions, codes_np)
        packed = zlib.compress(bytes(tables), 9)
        return TABLE_HEAD.pack(len(packed)) + packed + encoder.get_compressed().astype("<u4").tobytes()

    def decode(self, keep: torch.Tensor, payload: bytes) -> torch.Tensor:
        """A chunk's ``(1, k, h, w)`` keep (already validated) and payload -> its ``(N, C)`` int32 codes.

        Raises:
            LatokFormatError: the payload does not decode to exactly the entries ``keep`` declares.
        """
        import constriction

        keep_np = keep[0].numpy()
        positions, order, intra, starts, context = self._layout(keep_np)
        if len(payload) < TABLE_HEAD.size:
            raise LatokFormatError("value record too short")
        (length,) = TABLE_HEAD.unpack_from(payload)
        if length > len(payload) - TABLE_HEAD.size:
            raise LatokFormatError("value tables run past the record")
        expected = STREAMS * self.channels * (1 + ALPHABET)  # the largest tables a chunk can hold
        inflater = zlib.decompressobj()
        try:
            tables = inflater.decompress(payload[TABLE_HEAD.size : TABLE_HEAD.size + length], expected + 1)
        except zlib.error as error:
            raise LatokFormatError(f"value tables do not inflate ({error})") from None
        if not inflater.eof or inflater.unconsumed_tail or inflater.unused_data or len(tables) > expected:
            raise LatokFormatError("value tables do not inflate to a table per channel")
        words = payload[TABLE_HEAD.size + length :]
        if len(words) % 4:
            raise LatokFormatError("range-coded values are not whole 32-bit words")
        decoder = guarded(constriction.stream.queue.RangeDecoder, np.frombuffer(words, dtype="<u4").astype(np.uint32))
        sizes = [intra] + [int((context == k).sum()) for k in range(1, len(STALENESS) + 1)]
        codes = np.empty((len(positions), self.channels), dtype=np.int32)
        grouped_pos = positions[order]
        run_start = np.repeat(starts, np.diff(np.r_[starts, len(order)])) if len(order) else starts
        cursor = 0
        for channel in range(self.channels):
            streams = []
            for size in sizes:
                if cursor >= len(tables):
                    raise LatokFormatError("value tables end early")
                used = tables[cursor]
                codes_u8 = np.frombuffer(tables, dtype=np.uint8, count=used, offset=cursor + 1) if cursor + 1 + used <= len(tables) else None
                cursor += 1 + used
                if codes_u8 is None or used > ALPHABET:
                    raise LatokFormatError("value tables are malformed")
                streams.append(self._decode_stream(decoder, codes_u8, size))
            last = self._last[:, channel]
            if intra:
                first = np.cumsum(streams[0])
                codes[:intra, channel] = _bounded(first)
                last = first
            if len(order):
                temporal = np.empty(len(order), dtype=np.int64)
                for k, residuals in enumerate(streams[1:], start=1):
                    temporal[context == k] = residuals
                temporal[starts] += last[grouped_pos[starts]]  # each position's run continues its last kept code
                total = np.cumsum(temporal)
                codes[order, channel] = _bounded(total - np.where(run_start > 0, total[np.maximum(run_start - 1, 0)], 0))
        if cursor != len(tables):
            raise LatokFormatError("value tables hold more than the chunk's channels")
        if not guarded(decoder.maybe_exhausted):
            raise LatokFormatError("range-coded values run past the chunk's entries")
        self._commit(keep_np, positions, codes)
        return torch.from_numpy(codes)

    @staticmethod
    def _decode_stream(decoder, codes_u8: np.ndarray, size: int) -> np.ndarray:
        """One (context, channel) stream's ``size`` residuals, int64."""
        if not size:
            return np.zeros(0, dtype=np.int64)
        if not len(codes_u8) or not codes_u8[-1]:
            raise LatokFormatError("a value table has no symbols for the values it must code")
        if len(codes_u8) == 1:
            return np.zeros(size, dtype=np.int64)  # every residual is 0
        symbols = guarded(decoder.decode, _model(codes_u8), size).astype(np.int64)
        fold = symbols
        for bucket in np.unique(symbols[symbols >= DIRECT]):
            bits = int(bucket) - DIRECT + 6
            where = symbols == bucket
            fold = np.where(where, 0, fold)
            fold[where] = (np.int64(1) << bits) + guarded(_decode_low, decoder, int(where.sum()), bits)
        return _unfold(fold)


def position_bits(latent: torch.Tensor, steps: Sequence[float]) -> torch.Tensor:
    """``(1, C, t, h, w)`` latent -> ``(1, t, h, w)`` float32: each position's coded cost in bits when every
    position is kept, quantised with ``steps`` (:func:`channel_steps`) and coded by :class:`ValueCoder`:
    frame 0 against its raster neighbour, later frames against the same position one frame before.  A
    position that moved little costs few bits; one the coder did not expect costs many."""
    _, channels, frames, height, width = latent.shape
    keep = torch.ones(1, frames, height, width, dtype=torch.bool)
    codes = quantise(latent[0].permute(1, 2, 3, 0).reshape(-1, channels).cpu(), steps)  # (t*h*w, C), keep.nonzero() order
    bits = ValueCoder(channels, height, width).entry_bits(keep, codes)
    return torch.from_numpy(bits).float().view(1, frames, height, width)


# -- dense latents (training caches) -------------------------------------------------------

DENSE_MAGIC = b"LQV1"
DENSE_HEAD = struct.Struct("<4sI")  # magic, JSON length
MAX_DENSE_VALUES = 1 << 28  # a cached clip's C*t*h*w: what a shard member may make the reader build


def encode_dense(latent: torch.Tensor, steps: Sequence[float]) -> bytes:
    """A dense ``(C, t, h, w)`` latent -> its quantised, range-coded bytes (every position kept; frames in
    chunks of at most :data:`MAX_CHUNK_VALUES` values).  :func:`decode_dense` gives back exactly
    ``dequantise(quantise(latent))``."""
    import json

    channels, frames, height, width = latent.shape
    if len(steps) != channels or channels * frames * height * width > MAX_DENSE_VALUES:
        raise InvalidInputError(f"cannot code a ({channels}, {frames}, {height}, {width}) latent with {len(steps)} steps")
    chunk = max(1, MAX_CHUNK_VALUES // (channels * height * width))
    header = json.dumps({"shape": [channels, frames, height, width], "steps": list(steps), "chunk_frames": chunk}).encode()
    coder = ValueCoder(channels, height, width)
    parts = [DENSE_HEAD.pack(DENSE_MAGIC, len(header)), header]
    for start in range(0, frames, chunk):
        piece = latent[:, start : start + chunk]
        keep = torch.ones(1, *piece.shape[1:], dtype=torch.bool)
        payload = coder.encode(keep, quantise(piece.permute(1, 2, 3, 0).reshape(-1, channels), steps))
        parts += [TABLE_HEAD.pack(len(payload)), payload]
    return b"".join(parts)


def decode_dense(data: bytes) -> np.ndarray:
    """:func:`encode_dense`'s bytes -> the ``(C, t, h, w)`` float32 latent.

    Raises:
        LatokFormatError: the bytes are not a coded latent, or are damaged.
    """
    import json

    if len(data) < DENSE_HEAD.size or data[:4] != DENSE_MAGIC:
        raise LatokFormatError("not a latok coded latent")
    _, length = DENSE_HEAD.unpack_from(data)
    try:
        header = json.loads(data[DENSE_HEAD.size : DENSE_HEAD.size + length])
        shape, steps, chunk = header["shape"], [float(s) for s in header["steps"]], header["chunk_frames"]
        channels, frames, height, width = (int(v) for v in shape)
    except (ValueError, KeyError, TypeError) as error:
        raise LatokFormatError(f"coded latent header is malformed ({type(error).__name__})") from None
    sizes = (channels, frames, height, width, chunk)
    if not all(type(v) is int and v >= 1 for v in (*shape, chunk)) or len(steps) != channels or channels * frames * height * width > MAX_DENSE_VALUES:
        raise LatokFormatError(f"coded latent declares an unsupported shape {shape}")
    if chunk * channels * height * width > MAX_CHUNK_VALUES or not all(MIN_STEP <= s <= MAX_STEP for s in steps):
        raise LatokFormatError(f"coded latent declares unsupported chunks or steps {sizes}")
    coder = ValueCoder(channels, height, width)
    out = np.empty((frames, height, width, channels), dtype=np.float32)
    offset = DENSE_HEAD.size + length
    for start in range(0, frames, chunk):
        count = min(chunk, frames - start)
        if offset + TABLE_HEAD.size > len(data):
            raise LatokFormatError("coded latent is truncated")
        (size,) = TABLE_HEAD.unpack_from(data, offset)
        payload = data[offset + TABLE_HEAD.size : offset + TABLE_HEAD.size + size]
        if len(payload) != size:
            raise LatokFormatError("coded latent is truncated")
        codes = coder.decode(torch.ones(1, count, height, width, dtype=torch.bool), payload)
        out[start : start + count] = dequantise(codes, steps).numpy().reshape(count, height, width, channels)
        offset += TABLE_HEAD.size + size
    if offset != len(data):
        raise LatokFormatError("coded latent has trailing bytes")
    return out.transpose(3, 0, 1, 2)
