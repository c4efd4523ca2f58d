"""The keep-mask coders: raw bits (MASK codec 0), zlib of them (1), and context coding (2, format version 3).

A position tends to be kept where it, or its neighbours, were kept in the frame before, so each
keep bit is coded with one of ten contexts taken from the previous latent frame only: was the
position itself kept (2) x how many of its four neighbours were (0..4).  A chunk sends the
(dropped, kept) count of every context, then the bits, frame by frame and context by context,
range coded with ``constriction``.  The first frame of a file is fully kept and costs no bits.
Using only the previous frame keeps coding vectorised: one coder call per chunk to encode, one per frame to decode.

Payload after the MASK head::

    counts   CONTEXTS x (dropped u32, kept u32)
    range    the range coder's u32 words, little-endian, to the end of the record
"""

from __future__ import annotations

import struct

import numpy as np

import zlib

from latok.codec.format.coders import register_mask_coder
from latok.codec.format.coders.values import guarded
from latok.errors import LatokFormatError

CONTEXTS = 10
COUNTS = struct.Struct(f"<{2 * CONTEXTS}I")


def _contexts(previous: np.ndarray) -> np.ndarray:
    """``(..., h, w)`` previous keep -> the context of every position of the frame after it (same shape)."""
    padded = np.pad(previous, [(0, 0)] * (previous.ndim - 2) + [(1, 1), (1, 1)]).astype(np.int8)
    neighbours = padded[..., :-2, 1:-1] + padded[..., 2:, 1:-1] + padded[..., 1:-1, :-2] + padded[..., 1:-1, 2:]
    return previous.astype(np.int8) * 5 + neighbours


def _categorical():
    import constriction

    return constriction.stream.model.Categorical(perfect=False)  # a family: one (dropped, kept) count pair per symbol


def declared_kept(payload: bytes, frames: int, positions: int, first: bool) -> int:
    """The kept positions a context-coded payload declares for ``frames`` latent frames of ``positions`` each,
    without decoding it (``first``: the chunk starts the file, whose fully kept frame 0 costs no bits).

    Raises:
        LatokFormatError: the payload's length is malformed or its counts do not cover its frames.
    """
    if len(payload) < COUNTS.size or (len(payload) - COUNTS.size) % 4:
        raise LatokFormatError("context-coded MASK record has a malformed length")
    counts = np.array(COUNTS.unpack_from(payload), dtype=np.int64).reshape(CONTEXTS, 2)
    if int(counts.sum()) != (frames - first) * positions:
        raise LatokFormatError("context-coded MASK record counts do not cover its frames")
    return int(counts[:, 1].sum()) + first * positions


def _packed(keep: np.ndarray) -> bytes:
    return np.packbits(keep.reshape(-1), bitorder="little").tobytes()


@register_mask_coder
class RawMasks:
    """One bit per position in ``(t, y, x)`` order, little bit order."""

    byte, since_version = 0, 1

    @staticmethod
    def encode(keep: np.ndarray, previous: np.ndarray | None) -> bytes:
        return _packed(keep)

    @staticmethod
    def decode(data: bytes, frames: int, height: int, width: int, previous: np.ndarray | None) -> bytes:
        return data

    @staticmethod
    def declared_kept(data: bytes, frames: int, positions: int, first: bool) -> None:
        return None  # the bits are the count: cheap to read


@register_mask_coder
class ZlibMasks(RawMasks):
    """The raw bits, zlib-compressed."""

    byte, since_version = 1, 1

    @staticmethod
    def encode(keep: np.ndarray, previous: np.ndarray | None) -> bytes:
        return zlib.compress(_packed(keep), 9)

    @staticmethod
    def decode(data: bytes, frames: int, height: int, width: int, previous: np.ndarray | None) -> bytes:
        expected = (frames * height * width + 7) // 8
        inflater = zlib.decompressobj()
        try:
            bits = inflater.decompress(data, expected + 1)  # never more than the chunk declares
        except zlib.error as error:
            raise LatokFormatError(f"MASK record does not inflate ({error})") from None
        if not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
            raise LatokFormatError("MASK record does not inflate to exactly its declared bits")
        return bits


@register_mask_coder
class ContextMasks:
    """Range coding with ten contexts from the previous latent frame (this module's docstring)."""

    byte, since_version = 2, 3

    @staticmethod
    def encode(keep: np.ndarray, previous: np.ndarray | None) -> bytes:
        """One coder call for the whole chunk."""
        import constriction

        first = int(previous is None)  # the file's frame 0 is fully kept and costs no bits
        before = keep[:-1] if first else np.concatenate([previous[None], keep[:-1]])  # each coded frame's previous
        contexts = _contexts(before).reshape(before.shape[0], keep[0].size)  # (frames coded, h*w)
        bits = keep[first:].reshape(contexts.shape).astype(np.int64)
        counts = np.zeros((CONTEXTS, 2), dtype=np.int64)
        np.add.at(counts, (contexts.ravel(), bits.ravel()), 1)
        # coding order: frame by frame, and within a frame context by context, raster order within a context
        order = np.argsort(contexts + CONTEXTS * np.arange(contexts.shape[0])[:, None], axis=None, kind="stable")
        symbols = bits.ravel()[order]
        encoder = constriction.stream.queue.RangeEncoder()
        if symbols.size:
            encoder.encode(symbols.astype(np.int32), _categorical(), counts[contexts.ravel()[order]].astype(np.float64))
        return COUNTS.pack(*counts.ravel().tolist()) + encoder.get_compressed().astype("<u4").tobytes()

    @staticmethod
    def decode(data: bytes, frames: int, height: int, width: int, previous: np.ndarray | None) -> bytes:
        """One coder call per frame.

        Raises:
            LatokFormatError: the counts do not match the frames, or the bits do not decode exactly.
        """
        import constriction

        first = int(previous is None)
        declared_kept(data, frames, height * width, first=bool(first))
        counts = np.array(COUNTS.unpack_from(data), dtype=np.int64).reshape(CONTEXTS, 2)
        probabilities = counts.astype(np.float64)
        decoder = guarded(constriction.stream.queue.RangeDecoder, np.frombuffer(data, dtype="<u4", offset=COUNTS.size).astype(np.uint32))
        model = _categorical()
        keep = np.zeros((frames, height * width), dtype=bool)
        last = None if first else previous.reshape(-1)
        for t in range(frames):
            if last is None:
                keep[t] = True
            else:
                contexts = _contexts(last.reshape(height, width)).ravel()
                order = np.argsort(contexts, kind="stable")
                keep[t, order] = guarded(decoder.decode, model, probabilities[contexts[order]])
            last = keep[t]
        before = keep[:-1] if first else np.concatenate([previous.reshape(1, -1), keep[:-1]])
        contexts = _contexts(before.reshape(-1, height, width)).ravel()
        seen = np.bincount(contexts * 2 + keep[first:].ravel(), minlength=2 * CONTEXTS).reshape(CONTEXTS, 2)
        if not np.array_equal(seen, counts) or not guarded(decoder.maybe_exhausted):
            raise LatokFormatError("context-coded MASK record does not decode to its declared counts")
        return _packed(keep)

    declared_kept = staticmethod(declared_kept)
