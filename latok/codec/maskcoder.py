"""Context coding of keep masks (MASK codec 2, ``.latok`` format version 3).

A position tends to be kept where it, or its neighbours, were kept in the frame before, so each
keep bit is coded with one of ten contexts taken from the previous latent frame only: was the
position itself kept (2) x how many of its four neighbours were (0..4).  A chunk sends the
(dropped, kept) count of every context, then the bits, frame by frame and context by context,
range coded with ``constriction``.  The first frame of a file is fully kept and costs no bits.
Using only the previous frame keeps decoding vectorised: one call per frame and context.

Payload after the MASK head::

    counts   CONTEXTS x (dropped u32, kept u32)
    range    the range coder's u32 words, little-endian, to the end of the record
"""

from __future__ import annotations

import struct

import numpy as np

from latok.codec.values import guarded
from latok.errors import LatokFormatError

CONTEXTS = 10
COUNTS = struct.Struct(f"<{2 * CONTEXTS}I")


def _contexts(previous: np.ndarray) -> np.ndarray:
    padded = np.pad(previous, 1).astype(np.int8)
    neighbours = padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]
    return previous.astype(np.int8) * 5 + neighbours


def _model(counts: np.ndarray):
    import constriction

    return constriction.stream.model.Categorical(counts.astype(np.float64), perfect=False)


class MaskCoder:
    """Codes the keep masks of consecutive chunks of one file; carries the previous frame's mask between chunks."""

    def __init__(self, height: int, width: int):
        self.height, self.width = height, width
        self._previous: np.ndarray | None = None

    def _frames(self, keep: np.ndarray):
        """``(t, previous mask or None, contexts or None)`` for each frame of a chunk, in coding order."""
        previous = self._previous
        for t in range(keep.shape[0]):
            yield t, previous, None if previous is None else _contexts(previous)
            previous = keep[t]

    def advance(self, keep: np.ndarray) -> None:
        """Take a chunk's ``(k, h, w)`` keep as read some other way (a zlib-packed MASK record)."""
        self._previous = keep[-1].copy()

    def encode(self, keep: np.ndarray) -> bytes:
        """A chunk's ``(k, h, w)`` bool keep -> its payload."""
        import constriction

        counts = np.zeros((CONTEXTS, 2), dtype=np.int64)
        for t, previous, contexts in self._frames(keep):
            if contexts is not None:
                np.add.at(counts, (contexts.ravel(), keep[t].ravel().astype(np.int64)), 1)
        encoder = constriction.stream.queue.RangeEncoder()
        for t, previous, contexts in self._frames(keep):
            if contexts is None:
                continue
            for context in np.flatnonzero(counts.sum(axis=1)):
                bits = keep[t][contexts == context]
                if len(bits):
                    encoder.encode(bits.astype(np.int32), _model(counts[context]))
        self._previous = keep[-1].copy()
        return COUNTS.pack(*counts.ravel().tolist()) + encoder.get_compressed().astype("<u4").tobytes()

    def decode(self, frames: int, payload: bytes) -> np.ndarray:
        """``frames`` latent frames' payload -> their ``(frames, h, w)`` bool keep.

        Raises:
            LatokFormatError: the counts do not match the frames, or the bits do not decode exactly.
        """
        import constriction

        if len(payload) < COUNTS.size or (len(payload) - COUNTS.size) % 4:
            raise LatokFormatError("context-coded MASK record has a malformed length")
        counts = np.array(COUNTS.unpack_from(payload), dtype=np.int64).reshape(CONTEXTS, 2)
        coded_frames = frames - (self._previous is None)
        if int(counts.sum()) != coded_frames * self.height * self.width:
            raise LatokFormatError("context-coded MASK record counts do not cover its frames")
        decoder = guarded(constriction.stream.queue.RangeDecoder, np.frombuffer(payload, dtype="<u4", offset=COUNTS.size).astype(np.uint32))
        keep = np.zeros((frames, self.height, self.width), dtype=bool)
        seen = np.zeros_like(counts)
        for t, previous, contexts in self._frames(keep):
            if contexts is None:
                keep[t] = True
                continue
            frame = np.zeros((self.height, self.width), dtype=bool)
            for context in np.flatnonzero(counts.sum(axis=1)):
                where = contexts == context
                size = int(where.sum())
                if size:
                    bits = guarded(decoder.decode, _model(counts[context]), size)
                    frame[where] = bits.astype(bool)
                    seen[context] += np.bincount(bits, minlength=2)[:2]
            keep[t] = frame  # _frames reads keep[t] as the next frame's previous
        if not np.array_equal(seen, counts) or not guarded(decoder.maybe_exhausted):
            raise LatokFormatError("context-coded MASK record does not decode to its declared counts")
        self._previous = keep[-1].copy()
        return keep
