"""Entropy coders of a ``.latok`` file's records, registered by the codec byte that names them.

A record that can be stored more than one way (a chunk's keep mask, its motion) carries a codec byte;
each way is a coder registered under that byte, with the first format version that knows it.  The
writer asks every coder its version allows and keeps the smallest payload (ties: the lower byte); the reader looks the byte up and fails
with one line on a byte it does not know.  A new coder is one class plus one ``register_*`` call.
"""

from __future__ import annotations

from typing import ClassVar, Protocol

import numpy as np

from latok.errors import LatokFormatError


class MaskCoding(Protocol):
    """One way to store a chunk's ``(k, h, w)`` bool keep mask.

    ``previous`` is the ``(h, w)`` keep of the latent frame before the chunk, ``None`` for the file's first.
    """

    byte: ClassVar[int]
    since_version: ClassVar[int]

    def encode(self, keep: np.ndarray, previous: np.ndarray | None) -> bytes: ...

    def decode(self, data: bytes, frames: int, height: int, width: int, previous: np.ndarray | None) -> bytes:
        """The keep bits, bit-packed little-endian in ``(t, y, x)`` order (the reader checks their length and count).

        Raises:
            LatokFormatError: the payload does not decode.
        """

    def declared_kept(self, data: bytes, frames: int, positions: int, first: bool) -> int | None:
        """The kept positions the payload declares without decoding it; ``None``: decode to know."""


class MotionCoding(Protocol):
    """One way to store a chunk's float32 translations (any shape; the header fixes it)."""

    byte: ClassVar[int]
    since_version: ClassVar[int]

    def encode(self, vectors: np.ndarray) -> bytes | None:
        """The payload, or ``None`` where this coder cannot hold ``vectors`` exactly."""

    def decode(self, data: bytes, shape: tuple[int, ...]) -> np.ndarray:
        """Raises:
        LatokFormatError: the payload does not hold ``shape`` translations."""


_MASKS: dict[int, MaskCoding] = {}
_MOTION: dict[int, MotionCoding] = {}


def _register(registry: dict, coder):
    if not 0 <= coder.byte <= 255 or coder.byte in registry:
        raise ValueError(f"codec byte {coder.byte} is taken or not a byte")
    registry[coder.byte] = coder
    return coder


def register_mask_coder(coder: MaskCoding) -> MaskCoding:
    return _register(_MASKS, coder)


def register_motion_coder(coder: MotionCoding) -> MotionCoding:
    return _register(_MOTION, coder)


def _builtin() -> None:
    from latok.codec.format.coders import masks, motion  # noqa: F401  (their coders register on import)


def _smallest(registry: dict, version: int, encode) -> tuple[int, bytes]:
    _builtin()
    payloads = ((byte, encode(registry[byte])) for byte in sorted(registry) if registry[byte].since_version <= version)
    return min(((byte, data) for byte, data in payloads if data is not None), key=lambda pair: len(pair[1]))


def encode_mask(keep: np.ndarray, previous: np.ndarray | None, version: int) -> tuple[int, bytes]:
    """``(codec byte, payload)``: the smallest coding of a chunk's keep that a file of ``version`` may use."""
    return _smallest(_MASKS, version, lambda coder: coder.encode(keep, previous))


def encode_motion(vectors: np.ndarray, version: int) -> tuple[int, bytes]:
    """``(codec byte, payload)``: the smallest exact coding of a chunk's translations in a file of ``version``."""
    return _smallest(_MOTION, version, lambda coder: coder.encode(vectors))


def _lookup(registry: dict, kind: str, byte: int, version: int):
    _builtin()
    coder = registry.get(byte)
    if coder is None:
        raise LatokFormatError(f"unknown {kind} codec {byte}")
    if coder.since_version > version:
        raise LatokFormatError(f"{kind} codec {byte} is not used in format version {version}")
    return coder


def mask_coder(byte: int, version: int) -> MaskCoding:
    """The coder of mask codec ``byte`` in a file of ``version``.

    Raises:
        LatokFormatError: no such codec, or not in that version.
    """
    return _lookup(_MASKS, "mask", byte, version)


def motion_coder(byte: int, version: int) -> MotionCoding:
    """The coder of motion codec ``byte`` in a file of ``version`` (see :func:`mask_coder`)."""
    return _lookup(_MOTION, "motion", byte, version)
