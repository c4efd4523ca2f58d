"""The motion coders: float32 translations (MOTN codec 0) and zlib of int16 quarter-pel codes (1, format version 3)."""

from __future__ import annotations

import math
import zlib

import numpy as np

from latok.codec.format.coders import register_motion_coder
from latok.errors import LatokFormatError


@register_motion_coder
class FloatMotion:
    """Little-endian float32, as format version 2 stored every translation."""

    byte, since_version = 0, 2

    @staticmethod
    def encode(vectors: np.ndarray) -> bytes:
        return vectors.astype("<f4").tobytes()

    @staticmethod
    def decode(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
        if len(data) != 4 * math.prod(shape):
            raise LatokFormatError(f"MOTN record holds {len(data)} bytes, not {shape} float32 translations")
        return np.frombuffer(data, dtype="<f4").astype(np.float32)


@register_motion_coder
class QuarterMotion:
    """Translations on the quarter-pel grid (what the motion models estimate) as zlib-compressed int16 codes."""

    byte, since_version = 1, 3

    @staticmethod
    def encode(vectors: np.ndarray) -> bytes | None:
        quarters = vectors * 4
        if not np.array_equal(quarters, np.round(quarters)) or np.abs(quarters).max(initial=0) >= 1 << 15:
            return None
        return zlib.compress(quarters.astype("<i2").tobytes(), 9)

    @staticmethod
    def decode(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
        size = 2 * math.prod(shape)
        inflater = zlib.decompressobj()
        try:
            codes = inflater.decompress(data, size + 1)
        except zlib.error as error:
            raise LatokFormatError(f"MOTN record does not inflate ({error})") from None
        if not inflater.eof or inflater.unconsumed_tail or inflater.unused_data or len(codes) != size:
            raise LatokFormatError(f"MOTN record does not inflate to {shape} quarter-pel codes")
        return np.frombuffer(codes, dtype="<i2").astype(np.float32) / 4
