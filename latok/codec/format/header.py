"""The ``.latok`` header: one explicit schema, checked in one place.

A HEAD record is JSON.  :func:`parse_header` is the only way a reader turns its bytes into a
dict: it refuses non-UTF-8 bytes, JSON's non-standard constants (``NaN``, ``Infinity``),
nesting beyond what the schema holds, missing or unknown keys, values of the wrong type,
non-finite or out-of-range numbers, unknown storage dtypes, references and backends, and
shapes larger than latok reads.  Every refusal is one :class:`~latok.errors.LatokFormatError`.

The size caps bound what a header may *declare*; the reader then bounds every allocation
by the bytes the file actually holds (see :mod:`latok.codec.format.writer`).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from latok.codec.rule.masking import MAX_TAU, REFERENCES
from latok.codec.rule.motion import NO_MOTION, motion_names  # what a file's MOTN records hold
from latok.codec.format.coders.values import MAX_CHUNK_VALUES
from latok.codec.quantise import MAX_STEP, MIN_STEP
from latok.codec.tokens import MAX_LIT_CODE, MAX_LIT_CODES, MAX_TARGET_DB
from latok.errors import LatokFormatError

MAX_HEADER_BYTES = 1 << 20
MAX_POSITIONS = 1 << 31  # latent positions t*h*w of one file
MAX_CHUNK_POSITIONS = 1 << 26  # latent positions of one MASK record: 8 MiB of bits, 64 MiB as bools
MAX_CHANNELS = 1 << 12
MAX_SIDE = 1 << 16  # pixels (or latent positions) per side
MAX_FRAMES = 1 << 31
MAX_TEXT = 256
MAX_FPS = 1e6  # containers report odd rates (time bases); refuse only the absurd
STORAGE_DTYPE_NAMES = ("float16", "bfloat16", "float32")

Check = Callable[[Any], bool]


def _integer(low: int, high: int) -> Check:
    return lambda v: type(v) is int and low <= v <= high


def _number(low: float, high: float, low_open: bool = False) -> Check:
    def check(v) -> bool:
        if type(v) not in (int, float):
            return False
        try:
            v = float(v)
        except OverflowError:  # an integer beyond float range (10**400)
            return False
        return math.isfinite(v) and (low < v if low_open else low <= v) and v <= high

    return check


def _text(max_length: int = MAX_TEXT) -> Check:
    return lambda v: type(v) is str and len(v) <= max_length


def _one_of(*choices: str) -> Check:
    return lambda v: type(v) is str and v in choices


def _integers(*ranges: tuple[int, int]) -> Check:
    return lambda v: type(v) is list and len(v) == len(ranges) and all(_integer(*r)(x) for x, r in zip(v, ranges))


def _optional(check: Check) -> Check:
    return lambda v: v is None or check(v)


def _backend(v) -> bool:
    from latok.vae import list_vaes

    return type(v) is str and v in list_vaes()


SOURCE_SCHEMA: dict[str, Check] = {
    "frames": _integer(1, MAX_FRAMES),
    "height": _integer(1, MAX_SIDE),
    "width": _integer(1, MAX_SIDE),
    "fps": _number(0.0, MAX_FPS, low_open=True),
    "source_size": _optional(_integers((1, MAX_SIDE), (1, MAX_SIDE))),
    "resized_size": _optional(_integers((1, MAX_SIDE), (1, MAX_SIDE))),
    "crop": _optional(_integers((0, MAX_SIDE), (0, MAX_SIDE), (1, MAX_SIDE), (1, MAX_SIDE))),
}

HEADER_SCHEMA: dict[str, Check] = {
    "backend": _backend,
    "backend_config": _text(),
    "chunk_frames": _integer(1, MAX_FRAMES),
    "chunk_tau": _optional(lambda v: v is True),  # a stream's tau per chunk, in TAUC records; "tau" is then their largest
    "dtype": _one_of(*STORAGE_DTYPE_NAMES),
    "keyframe_interval": _optional(_integer(1, MAX_FRAMES)),
    "lit_frames": _optional(lambda v: type(v) is str and len(v) <= MAX_FRAMES and set(v) <= {"0", "1"}),
    "lit_model": _optional(_text()),
    "lit_tile": _optional(_integer(1, MAX_SIDE)),
    "lit_weights": _optional(lambda v: type(v) is str and len(v) <= MAX_HEADER_BYTES),
    "reference": _one_of(*REFERENCES),
    "rule_metric": _optional(_one_of("decoder")),  # absent: "latent", the plain rule
    "shape": _integers((1, 1), (1, MAX_CHANNELS), (1, MAX_FRAMES), (1, MAX_SIDE), (1, MAX_SIDE)),
    "source": lambda v: type(v) is dict,  # its own schema below
    "motion": _optional(lambda v: type(v) is str and v != NO_MOTION and v in motion_names()),
    "precision": _optional(_one_of("fp32", "bf16", "fp16")),
    "target_quality": _optional(_number(0.0, MAX_TARGET_DB, low_open=True)),
    "target_usage": _optional(_number(0.0, 1.0)),
    "tau": _number(0.0, MAX_TAU),
    "value_step": _optional(lambda v: type(v) is list and 1 <= len(v) <= MAX_CHANNELS and all(_number(MIN_STEP, MAX_STEP)(s) for s in v)),
}
# absent in older files ("precision": not recorded; "rule_metric": the plain rule), and "chunk_tau" / "motion" / "target_quality" /
# "value_step" when unused, so files without them keep their bytes
OPTIONAL_KEYS = {"chunk_tau": None, "lit_frames": None, "lit_model": None, "lit_tile": None, "lit_weights": None, "motion": None, "precision": None, "rule_metric": None, "target_quality": None, "value_step": None}


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def parse_header(payload: bytes) -> dict:
    """HEAD record bytes -> the validated header dict (see :data:`HEADER_SCHEMA`).

    Raises:
        LatokFormatError: one line naming the first thing wrong.
    """
    try:
        header = json.loads(payload.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise LatokFormatError("malformed header (not UTF-8)") from None
    except RecursionError:
        raise LatokFormatError("malformed header (JSON nested too deeply)") from None
    except ValueError as error:
        raise LatokFormatError(f"malformed header ({str(error).splitlines()[0][:200]})") from None
    if type(header) is not dict:
        raise LatokFormatError("malformed header (not a JSON object)")
    header = {**OPTIONAL_KEYS, **header}
    _check_fields("", header, HEADER_SCHEMA)
    _check_fields("source.", header["source"], SOURCE_SCHEMA)
    _check_consistency(header)
    return header


def _check_fields(prefix: str, record: dict, schema: dict[str, Check]) -> None:
    unknown = sorted(set(record) - set(schema), key=str)
    if unknown:
        raise LatokFormatError(f"malformed header (unknown key {prefix}{str(unknown[0])[:64]!r})")
    for key, check in schema.items():
        if key not in record:
            raise LatokFormatError(f"malformed header (missing {prefix}{key})")
        if not check(record[key]):
            raise LatokFormatError(f"malformed header ({prefix}{key} = {_shown(record[key])} is not allowed)")


def _shown(value) -> str:
    text = json.dumps(value) if not isinstance(value, dict) else "an object"
    return text if len(text) <= 40 else text[:37] + "..."


def _check_consistency(header: dict) -> None:
    from latok.vae import vae_class

    _, _, frames, height, width = header["shape"]
    if frames * height * width > MAX_POSITIONS:
        raise LatokFormatError(f"latent shape {header['shape']} exceeds the supported size ({MAX_POSITIONS} positions)")
    if height * width * min(header["chunk_frames"], frames) > MAX_CHUNK_POSITIONS:
        raise LatokFormatError(f"chunks of {header['chunk_frames']} latent frames of {height}x{width} exceed the supported chunk size")
    guard, model = header["lit_frames"], header["lit_model"]
    if chunk_lit_weights(header):
        pass  # the weights come per chunk, in LITW records
    elif (guard is None) != (model is None) or (guard is not None and len(guard) != frames):
        raise LatokFormatError("malformed header (lit guard: lit_frames must be one 0/1 per latent frame, with lit_model)")
    elif header["lit_tile"] is not None or header["lit_weights"] is not None:
        codes = lit_weight_codes(header)
        if guard is None or "".join("1" if frame.any() else "0" for frame in codes) != guard:
            raise LatokFormatError("malformed header (lit guard: lit_frames must flag exactly the frames with a non-zero lit weight)")
    if header["chunk_tau"] and header["target_quality"] is None:
        raise LatokFormatError("malformed header (chunk_tau: a tau per chunk comes from a target quality, and target_quality is null)")
    steps = header["value_step"]
    if steps is not None and (len(steps) != header["shape"][1] or header["dtype"] != "float32"):
        raise LatokFormatError("malformed header (value_step needs one step per channel and dtype float32)")
    if steps is not None and height * width * min(header["chunk_frames"], frames) * len(steps) > MAX_CHUNK_VALUES:
        raise LatokFormatError(f"chunks of {header['chunk_frames']} latent frames of {height}x{width}x{len(steps)} quantised values exceed the supported chunk size")
    backend = vae_class(header["backend"])
    source = header["source"]
    decoded = (frames * backend.temporal_ratio, height * backend.spatial_ratio, width * backend.spatial_ratio)
    if any(s > d for s, d in zip((source["frames"], source["height"], source["width"]), decoded)):
        raise LatokFormatError(
            f"source video {source['frames']}x{source['height']}x{source['width']} is larger than "
            f"latent {header['shape'][2:]} decodes to with {header['backend']}"
        )
    if backend.fixed_geometry:
        expected = backend.expected_latent(source["frames"], source["height"], source["width"])
        if tuple(header["shape"][1:]) != expected:
            raise LatokFormatError(
                f"latent shape {header['shape'][1:]} is not what {header['backend']} makes of a "
                f"{source['frames']}x{source['height']}x{source['width']} video ({list(expected)})"
            )


def chunk_lit_weights(header: dict) -> bool:
    """Does the file carry its lit weights per chunk (a stream's: ``lit_model`` and ``lit_tile`` without
    ``lit_frames`` or ``lit_weights``), one LITW record after each chunk's values and motion?"""
    get = header.get
    return get("lit_model") is not None and get("lit_tile") is not None and get("lit_frames") is None and get("lit_weights") is None


def encode_lit_weights(codes: bytes) -> str:
    """The header's ``lit_weights``: uint8 codes in ``(t, gh, gw)`` order, zlib-compressed, base64."""
    return base64.b64encode(zlib.compress(codes, 9)).decode("ascii")


def lit_weight_codes(header: dict) -> np.ndarray:
    """The lit guard's weight codes of a header with ``lit_weights``, uint8 ``(t, gh, gw)``, checked: exactly
    that many codes, each at most :data:`~latok.codec.tokens.MAX_LIT_CODE`, inflated no further than that."""
    _, _, frames, height, width = header["shape"]
    tile, text = header["lit_tile"], header["lit_weights"]
    if tile is None or text is None:
        raise LatokFormatError("malformed header (lit_weights and lit_tile come together)")
    grid = lit_grid(frames, height, width, tile)
    if grid[0] * grid[1] * grid[2] > MAX_LIT_CODES:
        raise LatokFormatError(f"malformed header (lit_weights of {grid[0] * grid[1] * grid[2]} codes exceed the {MAX_LIT_CODES} a clip carries)")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise LatokFormatError("malformed header (lit_weights is not base64 of zlib data)") from None
    try:
        return inflate_lit_weights(data, grid, tile)
    except LatokFormatError as error:
        raise LatokFormatError(f"malformed header (lit_weights {error})") from None


def lit_grid(frames: int, height: int, width: int, tile: int) -> tuple[int, int, int]:
    """``(t, gh, gw)``: one lit weight per latent frame and ``tile`` x ``tile`` square."""
    return frames, -(-height // tile), -(-width // tile)


def inflate_lit_weights(data: bytes, grid: tuple[int, int, int], tile: int) -> np.ndarray:
    """zlib-compressed uint8 weight codes -> ``grid``, inflated no further than its codes, each at most
    :data:`~latok.codec.tokens.MAX_LIT_CODE` (else a :class:`LatokFormatError` completing "lit_weights ...")."""
    expected = grid[0] * grid[1] * grid[2]
    try:
        inflater = zlib.decompressobj()
        codes = inflater.decompress(data, expected + 1)
        complete = inflater.eof and not inflater.unused_data
    except zlib.error:
        raise LatokFormatError("is not zlib data") from None
    if len(codes) != expected or not complete:
        raise LatokFormatError(f"must hold {expected} codes, one per latent frame and {tile}x{tile} square")
    array = np.frombuffer(codes, dtype=np.uint8).reshape(grid)
    if int(array.max()) > MAX_LIT_CODE:
        raise LatokFormatError(f"holds a code above {MAX_LIT_CODE}")
    return array
