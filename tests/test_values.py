"""Quantised values and the entropy-coded ``.latok`` format (version 3): exact round trips, the bytes
of exact files unchanged, old versions still read, every damaged record one clear error."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from latok.codec.format.coders.masks import ContextMasks
from latok.codec.format.coders.values import ValueCoder
from latok.codec.format.reader import LatokReader, load_latok
from latok.codec.format.writer import save_latok
from latok.codec.quantise import MAX_CODE, channel_steps, dequantise, quantise
from latok.codec.rule.masking import redundancy_mask
from latok.codec.tokens import AdaptiveLatent, SourceInfo
from latok.errors import InvalidInputError, LatokFormatError
from latok.evaluation.reports import file_info

FIXTURES = Path(__file__).parent / "fixtures"


def _latent(frames=7, channels=32, height=6, width=10, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(1, channels, frames, height, width, generator=generator) * 0.5).cumsum(dim=2)


def _adaptive(latent, step=0.1, sensitivity=None, motion=None, tau=0.3) -> AdaptiveLatent:
    keep = redundancy_mask(latent, tau, motion=motion).keep
    steps = channel_steps(step, sensitivity, latent.shape[1])
    return AdaptiveLatent.from_dense(latent, keep, value_step=steps, backend="taef2", backend_config="abc123", tau=tau,
                                     source=SourceInfo(frames=latent.shape[2], height=48, width=80), motion=motion,
                                     motion_model=None if motion is None else "global" if motion.ndim == 3 else "block")  # fmt: skip


def test_channel_steps_follow_the_decoders_sensitivity():
    assert channel_steps(0, None, 4) is None
    assert channel_steps(0.2, None, 3) == (0.2,) * 3
    steps = channel_steps(0.2, [2.0, 0.5], 2)
    assert steps == (0.1, 0.4)  # a channel the decoder sees twice as much takes half the step
    odd = channel_steps(0.1, [3.0], 1)[0]  # the shortest decimal of the float32 step
    assert np.float32(odd) == np.float32(0.1 / 3) and len(repr(odd)) <= 12
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(InvalidInputError, match="value step"):
            channel_steps(bad, None, 2)
    with pytest.raises(InvalidInputError, match="outside"):
        channel_steps(1e-6, None, 2)
    with pytest.raises(InvalidInputError, match="channels"):
        channel_steps(0.1, [1.0], 2)


def test_quantised_values_are_exactly_code_times_step_and_within_half_a_step():
    latent = _latent()
    adaptive = _adaptive(latent, 0.1, sensitivity=[1, 2, 0.5, 1, 1, 3, 1, 1] * 4)
    steps = torch.tensor(adaptive.value_step)
    truth = latent.permute(0, 2, 3, 4, 1)[adaptive.keep]
    assert adaptive.values.dtype == torch.float32
    assert torch.equal(adaptive.values, dequantise(quantise(truth, adaptive.value_step), adaptive.value_step))
    assert bool(((adaptive.values - truth).abs() <= steps / 2 + 1e-6).all())


@pytest.mark.parametrize("chunk_frames", [1, 3, 16])
@pytest.mark.parametrize("motion", [None, "global", "block"])
def test_quantised_files_hold_exactly_the_dequantised_values(tmp_path, chunk_frames, motion):
    latent = _latent(frames=9)
    vectors = None
    if motion == "global":
        vectors = torch.tensor([[[0.0, 0.0]] + [[0.25 * (t % 3), -0.5] for t in range(8)]])
    elif motion == "block":
        vectors = torch.zeros(1, 9, 2, 2, 3)
        vectors[:, 1:, 0, 1, 2] = 0.75
    adaptive = _adaptive(latent, 0.05, motion=vectors)
    path = save_latok(adaptive, tmp_path / "q.latok", chunk_frames=chunk_frames)
    back = load_latok(path)
    assert torch.equal(back.values, adaptive.values) and back.values.dtype == torch.float32
    assert torch.equal(back.keep, adaptive.keep) and back.value_step == adaptive.value_step
    assert (back.motion is None) == (vectors is None) and (vectors is None or torch.equal(back.motion, vectors))
    info = file_info(path)
    assert info["format_version"] == 3 and info["value_step"] == {"min": adaptive.value_step[0], "max": adaptive.value_step[0]}
    assert sum(info["bytes_by_part"].values()) == path.stat().st_size and info["bytes_by_part"]["end"] == 4 + 8 + 12


def test_a_quantised_chunk_that_keeps_nothing_reads(tmp_path):
    latent = _latent(frames=5)
    latent[:, :, 3:] = latent[:, :, 2:3]  # frames 3 and 4 repeat frame 2: their chunk keeps nothing
    adaptive = _adaptive(latent, tau=0.01)
    assert not adaptive.keep[:, 3:].any()
    back = load_latok(save_latok(adaptive, tmp_path / "z.latok", chunk_frames=3))
    assert torch.equal(back.values, adaptive.values) and torch.equal(back.keep, adaptive.keep)
    assert file_info(tmp_path / "z.latok")["chunks"] == 2


def test_motion_off_the_quarter_grid_is_stored_exactly(tmp_path):
    latent = _latent(frames=4)
    vectors = torch.tensor([[[0.0, 0.0], [0.3, -0.1], [1 / 3, 0.0], [0.0, 2.0]]])
    back = load_latok(save_latok(_adaptive(latent, motion=vectors), tmp_path / "m.latok"))
    assert torch.equal(back.motion, vectors)


def test_step_zero_keeps_exact_fp16_values_and_the_old_bytes(tmp_path):
    latent = _latent()
    keep = redundancy_mask(latent, 0.3).keep
    meta = dict(backend="taef2", backend_config="abc123", tau=0.3, source=SourceInfo(frames=7, height=48, width=80))
    exact = AdaptiveLatent.from_dense(latent, keep, **meta)
    assert exact.value_step is None and torch.equal(exact.values, latent.permute(0, 2, 3, 4, 1)[keep].half())
    data = save_latok(exact, tmp_path / "e.latok").read_bytes()
    assert struct.unpack_from("<H", data, 8)[0] == 1 and b"value_step" not in data and b"QVAL" not in data
    assert torch.equal(load_latok(tmp_path / "e.latok").values, exact.values)


@pytest.mark.parametrize("name, version", [("v1_hold.latok", 1), ("v2_block.latok", 2), ("v3_block.latok", 3)])
def test_every_format_version_still_reads(name, version):
    with LatokReader(FIXTURES / name) as reader:
        assert reader.version == version
    adaptive = load_latok(FIXTURES / name)
    assert adaptive.num_tokens > 0 and bool(adaptive.values.isfinite().all())
    assert (adaptive.value_step is not None) == (version == 3)
    assert (adaptive.motion_model == "block") == (version >= 2)


def test_fixtures_still_decode_to_what_they_were_written_from():
    """v2/v3 fixtures were written from the same latent (tests/fixtures/make_fixtures.py): the quantised values
    lie within half a step of the exact fp16 ones, on the same mask."""
    exact, quantised = load_latok(FIXTURES / "v2_block.latok"), load_latok(FIXTURES / "v3_block.latok")
    assert torch.equal(exact.keep, quantised.keep) and torch.equal(exact.motion, quantised.motion)
    half = torch.tensor(quantised.value_step) / 2 + 1e-3  # fp16 rounding of the exact values
    assert bool(((quantised.values - exact.values.float()).abs() <= half).all())


def test_value_coder_round_trips_outliers_and_empty_chunks():
    rng = np.random.default_rng(0)
    channels, height, width = 3, 4, 5
    keep = torch.from_numpy(rng.random((1, 6, height, width)) < 0.3)
    keep[:, 0] = True
    keep[:, 3] = False  # a frame with nothing kept
    codes = torch.from_numpy(rng.integers(-5, 6, size=(int(keep.sum()), channels)).astype(np.int32))
    codes[2, 1], codes[-1, 0] = MAX_CODE, -MAX_CODE  # the widest buckets
    codes[:, 2] = 7  # a channel whose residuals after frame 0 are all zero: a one-symbol table, no coded bits
    writer, reader = ValueCoder(channels, height, width), ValueCoder(channels, height, width)
    start = 0
    for t0, t1 in ((0, 2), (2, 4), (4, 6)):
        chunk = keep[:, t0:t1]
        count = int(chunk.sum())
        payload = writer.encode(chunk, codes[start : start + count])
        assert torch.equal(reader.decode(chunk, payload), codes[start : start + count])
        start += count


def test_mask_coder_round_trips_across_chunks():
    rng = np.random.default_rng(1)
    keep = rng.random((9, 5, 7)) < 0.4
    keep[0] = True
    previous = None
    for t0 in range(0, 9, 4):
        chunk = keep[t0 : t0 + 4]
        bits = ContextMasks.decode(ContextMasks.encode(chunk, previous), len(chunk), 5, 7, previous)
        assert np.array_equal(np.unpackbits(np.frombuffer(bits, np.uint8), count=chunk.size, bitorder="little").reshape(chunk.shape), chunk)
        previous = chunk[-1]


def _records(data: bytes):
    offset, out = 12, []
    while offset < len(data):
        tag, length = struct.unpack_from("<4sI", data, offset)
        out.append((offset, tag, length))
        offset += 8 + length + 4
    return out


def _reseal(data: bytearray, offset: int, length: int) -> None:
    import zlib

    struct.pack_into("<I", data, offset + 8 + length, zlib.crc32(bytes(data[offset : offset + 8 + length])))


@pytest.mark.parametrize("tag", [b"QVAL", b"MASK", b"MOTN"])
def test_damaged_v3_records_with_valid_checksums_are_one_format_error(tmp_path, tag):
    latent = _latent(frames=9)
    vectors = torch.zeros(1, 9, 2, 2, 3)
    vectors[:, 1:, 1] = 0.5
    data = bytearray(save_latok(_adaptive(latent, motion=vectors, tau=0.6), tmp_path / "q.latok", chunk_frames=4).read_bytes())
    rng = np.random.default_rng(0)
    errors = 0
    for offset, found, length in _records(bytes(data)):
        if found != tag:
            continue
        for trial in range(40):
            damaged = bytearray(data)
            start = offset + 8 + (9 if tag != b"QVAL" else 8)  # past t_start, t_count (and codec)
            if start >= offset + 8 + length:
                continue
            position = int(rng.integers(start, offset + 8 + length))
            damaged[position] ^= 1 << int(rng.integers(8))
            _reseal(damaged, offset, length)
            path = tmp_path / "damaged.latok"
            path.write_bytes(bytes(damaged))
            try:
                back = load_latok(path)
            except LatokFormatError as error:
                assert str(error).startswith(str(path)) and "\n" not in str(error)
                errors += 1
            else:  # a flip the format cannot see (a range-coded symbol, a mask bit of equal count) reads as other valid values
                assert back.values.shape[1] == 32 and bool(back.values.isfinite().all())
    assert errors > 0


def test_a_header_claiming_quantised_values_without_them_is_refused(tmp_path):
    latent = _latent()
    exact = save_latok(AdaptiveLatent.from_dense(latent, redundancy_mask(latent, 0.3).keep, backend="taef2", backend_config="abc123",
                                                 tau=0.3, source=SourceInfo(frames=7, height=48, width=80)), tmp_path / "e.latok")  # fmt: skip
    data = bytearray(exact.read_bytes())
    struct.pack_into("<H", data, 8, 3)
    (tmp_path / "v3.latok").write_bytes(bytes(data))
    with pytest.raises(LatokFormatError, match="must carry quantised values"):
        load_latok(tmp_path / "v3.latok")


def test_coded_training_shards_hold_the_dequantised_latent_and_are_smaller(tmp_path):
    from latok.training.data import read_samples, write_shard

    latent = _latent(frames=9, channels=32, height=12, width=20)[0]
    steps = channel_steps(0.02, None, 32)
    (tmp_path / "fp16").mkdir()
    write_shard(tmp_path / "fp16" / "a.tar", "a", latent, {"name": "a"})
    (tmp_path / "coded").mkdir()
    write_shard(tmp_path / "coded" / "a.tar", "a", latent, {"name": "a"}, value_steps=steps)
    exact, coded = read_samples(tmp_path / "fp16")[0]["latent.npy"], read_samples(tmp_path / "coded")[0]["latent.npy"]
    flat = latent.permute(1, 2, 3, 0).reshape(-1, 32)
    expected = dequantise(quantise(flat, steps), steps).reshape(9, 12, 20, 32).permute(3, 0, 1, 2)
    assert exact.dtype == np.float16 and np.array_equal(coded, expected.numpy())
    assert (tmp_path / "coded" / "a.tar").stat().st_size < (tmp_path / "fp16" / "a.tar").stat().st_size


@pytest.mark.parametrize("damage", ["magic", "header", "truncate", "flip", "trailing"])
def test_a_damaged_coded_shard_member_is_one_shard_error(tmp_path, damage):
    import io
    import tarfile

    from latok.codec.format.coders.values import encode_dense
    from latok.errors import ShardFormatError
    from latok.training.data import read_samples

    data = bytearray(encode_dense(_latent(frames=5)[0], channel_steps(0.05, None, 32)))
    if damage == "magic":
        data[:4] = b"NOPE"
    elif damage == "header":
        data[8:20] = b"{" * 12
    elif damage == "truncate":
        data = data[: len(data) - 7]
    elif damage == "flip":
        data[-9] ^= 0x10
    else:
        data += b"\0"
    with tarfile.open(tmp_path / "bad.tar", "w") as tar:
        for name, payload in (("a.latent.lqv", bytes(data)), ("a.json", b'{"name": "a"}')):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    try:
        samples = read_samples(tmp_path)
    except ShardFormatError as error:
        assert "latent.lqv" in str(error) and "\n" not in str(error)
    else:  # a flipped range-coded bit can decode to other valid values
        assert damage == "flip" and samples[0]["latent.npy"].shape == (8, 5, 6, 10)


def test_the_count_table_is_exact_integers_on_this_machine():
    """Encoder and decoder must build identical models: the log-scale count table is float pow rounded, so
    check every entry against exact decimal arithmetic (a platform whose pow differs would fail here)."""
    from decimal import Decimal, getcontext

    from latok.codec.format.coders.values import _COUNT_TABLE

    getcontext().prec = 50
    assert _COUNT_TABLE[0] == 0
    for code in range(1, 256):
        exact = (Decimal(2) ** (Decimal(code - 1) / Decimal(8))).to_integral_value()
        assert _COUNT_TABLE[code] == int(exact), code
