"""Structure-aware fuzzing of the ``.latok`` reader, and the crafted files of the memory test (issue 17).

Byte-level fuzzing mostly hits a CRC.  This fuzzer parses a valid file, mutates the *parsed*
header (types, magnitudes, missing and extra keys, deep nesting, JSON's non-standard constants)
and the record fields and lengths (mask extents and codecs, value counts, zlib bombs, dropped and
repeated records), then re-seals every CRC, so each case reaches the validation behind it.

    python tests/fuzz_latok.py fuzz --cases 300 --seed 0   # prints a JSON summary; exit 1 on a failing case
    python tests/fuzz_latok.py craft DIR                   # writes the crafted files (each under 1 MB) into DIR
    python tests/fuzz_latok.py cli info,decode,export DIR  # those commands on every crafted file, in this process
    python tests/fuzz_latok.py twin REAL.latok OUT.latok     # REAL's geometry, every value a zero residual
    python tests/fuzz_latok.py latok decode X.latok -o Y.mp4  # one latok command, with this process's peak memory

A case fails when reading raises anything but :class:`~latok.errors.LatokFormatError` or takes
over 2 s; the test that runs this script checks the process's peak memory (``os.wait4``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import torch

from latok.codec.format.coders.masks import ContextMasks
from latok.codec.format.reader import LatokReader, load_latok
from latok.codec.format.writer import save_latok
from latok.codec.quantise import channel_steps
from latok.codec.rule.masking import redundancy_mask
from latok.codec.tokens import AdaptiveLatent, SourceInfo, backend_config_hash
from latok.errors import LatokFormatError
from latok.vae import vae_class

PREAMBLE = struct.Struct("<8sHH")
RECORD = struct.Struct("<4sI")
CASE_SECONDS = 2.0


def valid_file(frames: int = 6, chunk_frames: int = 2, motion: bool = False, value_step: float = 0.0) -> bytes:
    """A small valid file: format version 1, or version 2 with MOTN records when ``motion``, or version 3
    (quantised, range-coded QVAL records, context-coded masks) with a ``value_step``."""
    generator = torch.Generator().manual_seed(0)
    latent = (torch.randn(1, 32, frames, 6, 10, generator=generator) * 0.4).cumsum(dim=2)  # taef2's 32 channels
    vectors = torch.rand(1, frames, 2, generator=generator) * 2 - 1 if motion else None
    if vectors is not None and value_step:
        vectors = torch.round(vectors * 4) / 4  # quarter-pel, as latok's search finds: the coded MOTN form
    if vectors is not None:
        vectors[:, 0] = 0
    adaptive = AdaptiveLatent.from_dense(
        latent, redundancy_mask(latent, 0.3, motion=vectors).keep, backend="taef2", backend_config=backend_config_hash(vae_class("taef2")), tau=0.3,
        source=SourceInfo(frames=frames, height=48, width=80, fps=25.0, source_size=(96, 160), crop=(0, 0, 48, 80)),
        motion=vectors, motion_model=None if vectors is None else "global" if vectors.ndim == 3 else "block",
        value_step=channel_steps(value_step, None, 32),
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        return save_latok(adaptive, Path(tmp) / "v.latok", chunk_frames=chunk_frames).read_bytes()


def valid_stream_file(frames: int = 6, chunk_frames: int = 2, taus: bool = False) -> bytes:
    """A small valid file as a stream with lit weights writes it: quantised values, block motion, a LITW record per chunk
    (``taus``: and, as with a quality target, a TAUC record per chunk)."""
    from latok.codec.format.writer import LatokWriter, header_of

    _, header, _ = split(valid_file(frames, chunk_frames, motion=True, value_step=0.1))
    adaptive = load_latok(io.BytesIO(valid_file(frames, chunk_frames, motion=True, value_step=0.1)))
    codes = torch.arange(frames * 2 * 3, dtype=torch.uint8).remainder(17).view(frames, 2, 3)  # squares of 4 on 6 x 10
    counts = adaptive.keep.sum(dim=(0, 2, 3)).tolist()
    header = {**header_of(adaptive, chunk_frames), "lit_model": "0123456789abcdef", "lit_tile": 4}
    if taus:
        header.update(chunk_tau=True, target_quality=0.5, source={**header["source"], "frames": None})
        header["shape"][2] = None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.latok"
        with LatokWriter(path, header) as writer:
            for t in range(0, frames, chunk_frames):
                start, count = int(sum(counts[:t])), int(sum(counts[t : t + chunk_frames]))
                writer.write_chunk(adaptive.keep[:, t : t + chunk_frames], adaptive.values[start : start + count],
                                   motion=adaptive.motion[:, t : t + chunk_frames], lit_weights=codes[t : t + chunk_frames],
                                   video_frames=min(chunk_frames, frames - t) if taus else None, tau=0.05 * (1 + t) if taus else None)  # fmt: skip
        return path.read_bytes()


def split(data: bytes) -> tuple[bytes, dict, list[tuple[bytes, bytes]]]:
    """A valid file -> (preamble, header, [(tag, payload), ...] after HEAD)."""
    preamble, offset, records = data[: PREAMBLE.size], PREAMBLE.size, []
    while offset < len(data):
        tag, length = RECORD.unpack_from(data, offset)
        records.append((tag, data[offset + RECORD.size : offset + RECORD.size + length]))
        offset += RECORD.size + length + 4
    return preamble, json.loads(records[0][1]), records[1:]


def seal(tag: bytes, payload: bytes) -> bytes:
    head = RECORD.pack(tag, len(payload))
    return head + payload + struct.pack("<I", zlib.crc32(head + payload))


def join(preamble: bytes, header_text: str, records: list[tuple[bytes, bytes]]) -> bytes:
    return preamble + seal(b"HEAD", header_text.encode("utf-8", "surrogatepass")) + b"".join(seal(t, p) for t, p in records)


# -- header mutations --------------------------------------------------------------------------

RAW_VALUES = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" + "0" * 400, "-" + "9" * 5000]


def random_value(rng: random.Random, raw: list[str]):
    """A JSON value of a random type and magnitude; raw JSON text (not expressible in Python) goes via ``raw``."""
    kind = rng.randrange(12)
    if kind == 0:
        raw.append(rng.choice(RAW_VALUES))
        return f"@@RAW{len(raw) - 1}@@"
    if kind == 1:
        depth = rng.choice([10, 1000, 50_000])
        raw.append("[" * depth + "]" * depth if rng.random() < 0.5 else '{"a":' * depth + "1" + "}" * depth)
        return f"@@RAW{len(raw) - 1}@@"
    return [
        None, rng.choice([True, False]), rng.choice([0, -1, 1, 2, 7, 2**31, 2**32 + 1, 2**63, -(2**63)]),
        rng.choice([0.0, -0.0, 0.5, 1.5, 1e-300, 1e308, -3.0]), rng.choice(["", "x", "taef2", "float16", "last-kept", "é" * 300]),
        [rng.randint(-2, 2**20) for _ in range(rng.choice([0, 2, 4, 5, 6]))], {}, {"frames": 1},
        [1, 8, 2**20, 2**20, 2**20], "1" * rng.choice([1, 100, 100_000]),
    ][kind - 2]  # fmt: skip


def mutate_header(header: dict, rng: random.Random, raw: list[str]) -> dict:
    header = json.loads(json.dumps(header))
    for _ in range(rng.randint(1, 3)):
        target = header["source"] if rng.random() < 0.3 and isinstance(header.get("source"), dict) else header
        action = rng.random()
        if action < 0.15 and target:
            del target[rng.choice(sorted(target))]
        elif action < 0.25:
            target[rng.choice(["extra", "version", "__proto__", "shape2"])] = random_value(rng, raw)
        elif action < 0.45 and isinstance(header.get("shape"), list) and header["shape"]:
            header["shape"][rng.randrange(len(header["shape"]))] = random_value(rng, raw)
        elif target:
            target[rng.choice(sorted(target))] = random_value(rng, raw)
    return header


def header_text(header: dict, raw: list[str]) -> str:
    text = json.dumps(header, sort_keys=True, separators=(",", ":"))
    for index, value in enumerate(raw):
        text = text.replace(f'"@@RAW{index}@@"', value)
    return text


# -- record mutations --------------------------------------------------------------------------


def mutate_records(records: list[tuple[bytes, bytes]], rng: random.Random) -> list[tuple[bytes, bytes]]:
    records = list(records)
    for _ in range(rng.randint(1, 3)):
        index = rng.randrange(len(records))
        tag, payload = records[index]
        action = rng.randrange(10)
        if action == 0 and tag == b"MASK" and len(payload) >= 9:  # extent and codec fields
            t_start, t_count, codec = struct.unpack_from("<IIB", payload)
            field = rng.randrange(3)
            value = rng.choice([0, 1, 2, 3, 255, 2**16, 2**31, 2**32 - 1])
            t_start, t_count, codec = [value if i == field else v for i, v in enumerate((t_start, t_count, codec))]
            payload = struct.pack("<IIB", t_start, t_count, codec & 0xFF) + payload[9:]
        elif action == 1 and tag == b"LITW" and len(payload) >= 8:  # lit weights: a zlib bomb, the wrong count, codes above 16
            payload = payload[:8] + zlib.compress(bytes([rng.choice([0, 16, 17, 255])]) * rng.choice([1, 11, 12, 13, 1 << 20, 1 << 24]), 9)
        elif action == 1 and tag == b"MASK" and len(payload) >= 8:  # a zlib bomb, or bits that inflate to the wrong size
            size = rng.choice([1, 7, 8, 100, 1 << 20, 1 << 24])
            payload = payload[:8] + b"\x01" + zlib.compress(rng.choice([b"\x00", b"\xff"]) * size, 9)
        elif action == 2 and tag == b"VALS" and len(payload) >= 8:  # claimed count
            t_start, count = struct.unpack_from("<II", payload)
            count = rng.choice([0, count - 1, count + 1, 2**31, 2**32 - 1]) % 2**32
            payload = struct.pack("<II", t_start, count) + payload[8:]
        elif action == 3:  # lengths: cut or pad the payload
            payload = payload[: rng.randrange(len(payload) + 1)] if rng.random() < 0.5 else payload + bytes(rng.randint(1, 64))
        elif action == 2 and tag == b"MOTN" and len(payload) >= 8:  # translations: huge, non-finite, wrong extent
            value = rng.choice([float("nan"), float("inf"), 1e30, -1e3, 0.5])
            payload = payload[:8] + struct.pack("<f", value) * ((len(payload) - 8) // 4) if rng.random() < 0.7 else struct.pack("<II", rng.randrange(9), rng.randrange(9)) + payload[8:]
        elif action in (7, 8) and tag in (b"QVAL", b"MASK", b"MOTN", b"LITW") and len(payload) > 9:  # coded bytes: flip, zero or randomise a span
            data = bytearray(payload)
            start = rng.randrange(8, len(data))
            end = min(len(data), start + rng.choice([1, 4, 64]))
            for i in range(start, end):
                data[i] = (data[i] ^ (1 << rng.randrange(8))) if action == 7 else rng.choice([0, 255, rng.randrange(256)])
            payload = bytes(data)
        elif action == 4 and tag == b"END\x00":
            payload = struct.pack("<IQ", rng.choice([0, 1, 2**32 - 1]), rng.choice([0, 1, 2**64 - 1]))
        elif action == 5:
            del records[index]
            continue
        elif action == 6:
            records.insert(index, (tag, payload))
        else:
            tag = rng.choice([b"MASK", b"VALS", b"QVAL", b"MOTN", b"LITW", b"END\x00", b"HEAD", b"JUNK"])
        records[index] = (tag, payload)
    return records


def read(path: Path) -> None:
    """What ``latok info``, ``info --verify`` and ``latok decode``/``export`` do with a file before any model runs."""
    for decode in (False, True):
        with LatokReader(path) as reader:
            for _ in reader.records(decode=decode):
                pass
    load_latok(path)


def fuzz(cases: int, seed: int) -> dict:
    rng = random.Random(seed)
    bases = [split(valid_file()), split(valid_file(motion=True)), split(valid_file(motion=True, value_step=0.1)), split(valid_stream_file()),
             split(valid_stream_file(taus=True))]  # fmt: skip
    outcomes: dict[str, int] = {}
    slowest = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "case.latok"
        for case in range(cases):
            raw: list[str] = []
            preamble, header, records = bases[case % len(bases)]
            kind = rng.random()
            case_preamble, case_header, case_records = preamble, header, records
            if kind < 0.55:
                case_header = mutate_header(header, rng, raw)
            elif kind < 0.9:
                case_records = mutate_records(records, rng)
            else:
                case_preamble = preamble[:10] + struct.pack("<H", rng.randrange(1, 1 << 16))
            path.write_bytes(join(case_preamble, header_text(case_header, raw), case_records))
            start = time.perf_counter()
            try:
                read(path)
                outcome = "read"
            except LatokFormatError as error:
                outcome = type(error).__name__
            except Exception as error:  # noqa: BLE001 - this is what the fuzzer looks for
                return {"failed_case": case, "error": f"{type(error).__name__}: {str(error)[:300]}", "seed": seed}
            elapsed = time.perf_counter() - start
            slowest = max(slowest, elapsed)
            if elapsed > CASE_SECONDS:
                return {"failed_case": case, "error": f"took {elapsed:.2f} s", "seed": seed}
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return {"cases": cases, "seed": seed, "outcomes": outcomes, "slowest_s": round(slowest, 3)}


# -- crafted files for the memory test ---------------------------------------------------------


def craft(directory: Path) -> list[Path]:
    """Files under 1 MB that each try to make the reader allocate or work far beyond their size."""
    directory.mkdir(parents=True, exist_ok=True)
    preamble, header, records = split(valid_file())
    files = {}

    # 2^31 latent positions of 1x1 frames, frame 0 kept: valid, 32 zlib chunks of 2^26 bits
    tall = {**header, "shape": [1, 32, 1 << 31, 1, 1], "chunk_frames": 1 << 26, "lit_frames": None, "lit_model": None, "lit_tile": None, "lit_weights": None,
            "source": {**header["source"], "frames": 1 << 31, "height": 8, "width": 8, "source_size": None, "resized_size": None, "crop": None}}  # fmt: skip
    mask = zlib.compress(b"\x01" + bytes((1 << 23) - 1), 9)
    rest = zlib.compress(bytes(1 << 23), 9)
    chunks = []
    for index in range(32):
        chunks.append((b"MASK", struct.pack("<IIB", index << 26, 1 << 26, 1) + (mask if index == 0 else rest)))
        count = 1 if index == 0 else 0
        chunks.append((b"VALS", struct.pack("<II", index << 26, count) + bytes(64 * count)))
    files["tall_valid"] = join(preamble, json.dumps(tall), [*chunks, (b"END\x00", struct.pack("<IQ", 32, 1))])
    # the same with a VALS count that disagrees with its mask (caught after counting bits, before any bool)
    files["tall_count_mismatch"] = join(preamble, json.dumps(tall), [chunks[0], (b"VALS", struct.pack("<II", 0, 0)), *chunks[2:]])
    # a mask that inflates far past what its chunk declares
    bomb = (b"MASK", struct.pack("<IIB", 0, 2, 1) + zlib.compress(b"\xff" * (200 << 20), 9))
    files["zlib_bomb"] = join(preamble, json.dumps(header), [bomb, records[1], *records[2:]])
    # the header's shape holds strings (once built a 2 GB string)
    files["shape_strings"] = join(preamble, json.dumps({**header, "shape": ["1", "8", "9" * 200, "65536", "65536"]}), records)
    files["deep_json"] = join(preamble, '{"a":' * 50_000 + "1" + "}" * 50_000, records)
    files["huge_tau"] = join(preamble, json.dumps(header, separators=(",", ":")).replace('"tau":0.3', '"tau":1' + "0" * 400), records)
    # a raw (uncompressed) mask record claiming 2^26 positions
    wide = {**header, "shape": [1, 32, 4, 4096, 4096], "chunk_frames": 4, "lit_frames": None, "lit_model": None, "lit_tile": None, "lit_weights": None,
            "source": {**header["source"], "frames": 4, "height": 1 << 15, "width": 1 << 15}}  # fmt: skip
    wide_mask = (b"MASK", struct.pack("<IIB", 0, 4, 0) + b"\xff" * 1000)
    files["wide_raw_mask"] = join(preamble, json.dumps(wide), [wide_mask, (b"VALS", struct.pack("<II", 0, 8) + bytes(512)), records[-1]])
    # version 3: a chunk of MAX_CHUNK_VALUES quantised values that are all zero residuals (one-symbol tables, no
    # range-coded bits): a few hundred bytes that make the reader build the largest chunk it allows
    from latok.codec.format.coders.values import MAX_CHUNK_VALUES

    side = 128
    frames = MAX_CHUNK_VALUES // (32 * side * side)
    zeros = {**header, "shape": [1, 32, frames, side, side], "chunk_frames": frames, "lit_frames": None, "lit_model": None, "lit_tile": None, "lit_weights": None, "motion": None,
             "dtype": "float32", "value_step": [0.1] * 32,
             "source": {**header["source"], "frames": frames, "height": side * 8, "width": side * 8, "source_size": None, "crop": None}}  # fmt: skip
    tables = zlib.compress(bytes([1, 1]) * 2 * 32, 9)
    qval = struct.pack("<II", 0, frames * side * side) + struct.pack("<I", len(tables)) + tables
    all_kept = (b"MASK", struct.pack("<IIB", 0, frames, 1) + zlib.compress(b"\xff" * (frames * side * side // 8), 9))
    v3 = PREAMBLE.pack(b"LATOK\r\n\x1a", 3, 0)
    files["v3_zero_residual_chunk"] = join(v3, json.dumps(zeros), [all_kept, (b"QVAL", qval), (b"END\x00", struct.pack("<IQ", 1, 0))])
    files.update(crafted_v3(preamble, header))
    # a taef2 header with a channel count taef2 never makes, and a latent far larger than its 1-frame 8x8 source
    files["taef2_33_channels"] = join(preamble, json.dumps({**header, "shape": [1, 33, *header["shape"][2:]]}), records)
    big = {**header, "shape": [1, 32, 64, 64, 64], "lit_frames": None, "lit_model": None, "lit_tile": None, "lit_weights": None,
           "source": {**header["source"], "frames": 1, "height": 8, "width": 8, "source_size": None, "resized_size": None, "crop": None}}  # fmt: skip
    files["latent_larger_than_source"] = join(preamble, json.dumps(big), records)
    # a stream's lit weights that inflate far past the codes their chunk holds
    stream_preamble, stream_header, stream_records = split(valid_stream_file())
    litw = next(i for i, (tag, _) in enumerate(stream_records) if tag == b"LITW")
    weights_bomb = (b"LITW", stream_records[litw][1][:8] + zlib.compress(bytes(200 << 20), 9))
    files["lit_weights_bomb"] = join(stream_preamble, json.dumps(stream_header), [*stream_records[:litw], weights_bomb, *stream_records[litw + 1 :]])
    paths = []
    for name, data in files.items():
        assert len(data) < 1 << 20, (name, len(data))
        path = directory / f"{name}.latok"
        path.write_bytes(data)
        paths.append(path)
    return paths


def zero_chunk_records(t_start: int, t_count: int, positions: int, channels: int, context_mask: np.ndarray | None = None,
                       previous: np.ndarray | None = None) -> list[tuple[bytes, bytes]]:
    """MASK + QVAL records of a version-3 chunk whose kept values are all zero residuals (one-symbol tables, no bits):
    every position kept (a zlib mask), or ``context_mask`` (``(t_count, h, w)`` bool) context coded after ``previous``."""
    if context_mask is None:
        mask = (b"MASK", struct.pack("<IIB", t_start, t_count, 1) + zlib.compress(b"\xff" * (t_count * positions // 8), 9))
        count = t_count * positions
    else:
        mask = (b"MASK", struct.pack("<IIB", t_start, t_count, 2) + ContextMasks.encode(context_mask, previous))
        count = int(context_mask.sum())
    tables = zlib.compress(bytes([1, 1]) * 2 * channels, 9)
    return [mask, (b"QVAL", struct.pack("<II", t_start, count) + struct.pack("<I", len(tables)) + tables)]


def crafted_v3(preamble: bytes, header: dict) -> dict[str, bytes]:
    """Version-3 files that are small and valid but declare far more work than their bytes: what ``info`` must read
    in time proportional to its bytes, and what ``decode``/``export`` must weigh against the memory limit first."""
    v3 = PREAMBLE.pack(b"LATOK\r\n\x1a", 3, 0)
    base = {**header, "lit_frames": None, "lit_model": None, "lit_tile": None, "lit_weights": None, "motion": None, "dtype": "float32", "value_step": [0.1] * 32}
    files = {}
    # 2^19 latent frames of one position, context-coded masks: a decoder that loops per frame takes a minute
    frames, chunk = 1 << 19, 1 << 16
    tall = {**base, "shape": [1, 32, frames, 1, 1], "chunk_frames": chunk,
            "source": {**header["source"], "frames": frames, "height": 8, "width": 8, "source_size": None, "resized_size": None, "crop": None}}  # fmt: skip
    previous, records = None, []
    for t in range(0, frames, chunk):
        keep = np.zeros((chunk, 1, 1), dtype=bool)
        keep[0] = t == 0
        records += zero_chunk_records(t, chunk, 1, 32, keep, previous)
        previous = keep[-1]
    files["v3_context_mask_frames"] = join(v3, json.dumps(tall), [*records, (b"END\x00", struct.pack("<IQ", frames // chunk, 1))])
    # 200 chunks of 2^21 zero-residual values each (18 KB): a reader that decodes values in info takes half a minute
    chunks, chunk, side = 200, 1024, 8
    many = {**base, "shape": [1, 32, chunks * chunk, side, side], "chunk_frames": chunk,
            "source": {**header["source"], "frames": chunks * chunk, "height": side * 8, "width": side * 8, "source_size": None, "resized_size": None, "crop": None}}  # fmt: skip
    records = [r for index in range(chunks) for r in zero_chunk_records(index * chunk, chunk, side * side, 32)]
    files["v3_many_zero_chunks"] = join(v3, json.dumps(many), [*records, (b"END\x00", struct.pack("<IQ", chunks, chunks * chunk * side * side))])
    return files


def twin(real: Path, out: Path) -> dict:
    """Write ``out``: a version-3 file with ``real``'s header geometry whose every value is a zero residual
    (a few hundred bytes), the crafted twin of a real file of the same declared size."""
    with LatokReader(real) as reader:
        header = reader.header
    _, channels, frames, height, width = header["shape"]
    twin_header = {**header, "lit_frames": None, "lit_model": None, "lit_tile": None, "lit_weights": None, "motion": None, "chunk_frames": frames}
    records = zero_chunk_records(0, frames, height * width, channels)
    end = (b"END\x00", struct.pack("<IQ", 1, frames * height * width))
    out.write_bytes(join(PREAMBLE.pack(b"LATOK\r\n\x1a", 3, 0), json.dumps(twin_header), [*records, end]))
    return {"bytes": out.stat().st_size}


def run_cli(commands: list[str], directory: Path) -> dict:
    """``latok COMMAND FILE`` for every command and crafted file, in this one process."""
    from latok.cli import main

    runs = {}
    for command in commands:
        for path in sorted(directory.glob("*.latok")):
            argv = {"info": ["info", str(path)], "decode": ["decode", str(path), "-o", str(directory / "out.mp4")],
                    "export": ["export", str(path), "-o", str(directory / "out.safetensors")]}[command]  # fmt: skip
            start = time.perf_counter()
            stderr = io.StringIO()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
                code = main(argv)
            runs[f"{command} {path.name}"] = {"seconds": round(time.perf_counter() - start, 3), "exit": code, "stderr": stderr.getvalue()}
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("fuzz")
    run.add_argument("--cases", type=int, default=300)
    run.add_argument("--seed", type=int, default=0)
    crafted = commands.add_parser("craft")
    crafted.add_argument("directory", type=Path)
    cli = commands.add_parser("cli")
    cli.add_argument("cli_commands", help="comma-separated: info, decode, export")
    cli.add_argument("directory", type=Path)
    twin_of = commands.add_parser("twin", help="the crafted twin of a real file: same geometry, zero-residual values")
    twin_of.add_argument("real", type=Path)
    twin_of.add_argument("out", type=Path)
    one = commands.add_parser("latok", help="one latok command line, measured")
    one.add_argument("latok_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command == "fuzz":
        result = fuzz(args.cases, args.seed)
    elif args.command == "craft":
        result = {"files": {p.name: p.stat().st_size for p in craft(args.directory)}}
    elif args.command == "twin":
        result = twin(args.real, args.out)
    elif args.command == "latok":
        from latok.cli import main as latok

        stderr = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
            result = {"exit": latok(args.latok_args)}
        result["stderr"] = stderr.getvalue()
    else:
        result = run_cli(args.cli_commands.split(","), args.directory)
    result["peak_rss_bytes"] = peak_rss()
    print(json.dumps(result))
    return 1 if "failed_case" in result else 0


def peak_rss() -> int:
    """This process's peak resident memory since its exec (VmHWM), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


if __name__ == "__main__":
    sys.exit(main())
