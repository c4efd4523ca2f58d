"""The .latok container: exact round trip, determinism, size, and robustness to damage."""

from __future__ import annotations

import io
import struct
import zlib

from dataclasses import replace

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latok.codec.format.reader import LatokReader, load_latok
from latok.codec.format.writer import FORMAT_VERSION, MAGIC, LatokWriter, header_of, save_latok
from latok.codec.rule.masking import redundancy_mask
from latok.codec.tokens import AdaptiveLatent, SourceInfo
from latok.errors import InvalidInputError, LatokFormatError


def make_adaptive(seed: int = 0, frames: int = 9, dtype=torch.float16, tau: float = 0.3) -> AdaptiveLatent:
    generator = torch.Generator().manual_seed(seed)
    latent = (torch.randn(1, 32, frames, 6, 10, generator=generator) * 0.4).cumsum(dim=2)  # taef2's 32 channels
    keep = redundancy_mask(latent, tau).keep
    return AdaptiveLatent.from_dense(
        latent, keep, dtype=dtype, backend="taef2", backend_config="abc123", tau=tau,
        source=SourceInfo(frames=frames, height=48, width=80, fps=25.0, source_size=(96, 160), crop=(0, 0, 48, 80)),
    )  # fmt: skip


def assert_same(a: AdaptiveLatent, b: AdaptiveLatent) -> None:
    assert torch.equal(a.keep, b.keep)
    assert a.values.dtype == b.values.dtype
    assert torch.equal(a.values.view(torch.uint8), b.values.view(torch.uint8))  # bit-exact, NaN-safe
    assert (a.shape, a.backend, a.backend_config, a.tau, a.source) == (b.shape, b.backend, b.backend_config, b.tau, b.source)
    assert (a.lit_frames, a.lit_model) == (b.lit_frames, b.lit_model)


def test_lit_guard_round_trips(tmp_path):
    from dataclasses import replace

    adaptive = make_adaptive(frames=9)
    guarded = replace(adaptive, lit_frames=(True, False, True, True, False, False, True, True, False), lit_model="0123456789abcdef")
    assert_same(load_latok(save_latok(guarded, tmp_path / "g.latok", chunk_frames=4)), guarded)
    assert load_latok(save_latok(adaptive, tmp_path / "u.latok")).lit_frames is None
    with pytest.raises(InvalidInputError, match="one flag per latent frame"):
        replace(adaptive, lit_frames=(True,) * 8, lit_model="x")
    with pytest.raises(InvalidInputError, match="one flag per latent frame"):
        replace(adaptive, lit_frames=(True,) * 9)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("chunk_frames", [1, 4, 16])
def test_round_trip_is_bit_exact(tmp_path, dtype, chunk_frames):
    adaptive = make_adaptive(dtype=dtype)
    assert 0.0 < adaptive.token_usage < 1.0
    path = save_latok(adaptive, tmp_path / "a.latok", chunk_frames=chunk_frames)
    assert_same(load_latok(path), adaptive)


@given(seed=st.integers(0, 1000), tau=st.floats(0.0, 2.0))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_round_trip_property(tmp_path, seed, tau):
    adaptive = make_adaptive(seed, tau=tau)
    assert_same(load_latok(save_latok(adaptive, tmp_path / "p.latok", chunk_frames=3)), adaptive)


def test_writes_are_deterministic(tmp_path):
    a = save_latok(make_adaptive(5), tmp_path / "a.latok").read_bytes()
    b = save_latok(make_adaptive(5), tmp_path / "b.latok").read_bytes()
    assert a == b and a.startswith(MAGIC)


def test_size_is_values_plus_mask_plus_header(tmp_path):
    adaptive = make_adaptive(frames=40, tau=0.2)
    size = save_latok(adaptive, tmp_path / "a.latok").stat().st_size
    values = adaptive.num_tokens * adaptive.shape[1] * 2
    mask_bits = adaptive.keep.numel() / 8
    assert values < size < values + mask_bits + 1200  # header + per-chunk records stay small


def test_chunks_stream_in_order(tmp_path):
    adaptive = make_adaptive(frames=10)
    path = save_latok(adaptive, tmp_path / "a.latok", chunk_frames=4)
    with LatokReader(path) as reader:
        sizes = [chunk.keep.shape[1] for chunk in reader.chunks()]
    assert sizes == [4, 4, 2]


def test_incremental_writer_and_atomicity(tmp_path):
    adaptive = make_adaptive(frames=6)
    path = tmp_path / "w.latok"
    with pytest.raises(InvalidInputError, match="covered 3 of 6"):
        with LatokWriter(path, header_of(adaptive, 3)) as writer:
            count = int(adaptive.keep[:, :3].sum())
            writer.write_chunk(adaptive.keep[:, :3], adaptive.values[:count])
    assert list(tmp_path.iterdir()) == []  # nothing partial left behind
    with pytest.raises(RuntimeError):
        with LatokWriter(path, header_of(adaptive, 3)):
            raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []


def test_batches_are_refused(tmp_path):
    latent = torch.randn(2, 4, 3, 2, 2)
    batch = AdaptiveLatent.from_dense(latent, torch.ones(2, 3, 2, 2, dtype=torch.bool), backend="x",
                                      backend_config="y", tau=0.0, source=SourceInfo(3, 16, 16))
    with pytest.raises(InvalidInputError, match="one clip"):
        save_latok(batch, tmp_path / "b.latok")


# -- damage ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def valid_bytes(tmp_path_factory) -> bytes:
    return save_latok(make_adaptive(frames=5), tmp_path_factory.mktemp("v") / "v.latok", chunk_frames=2).read_bytes()


def read_bytes(tmp_path, data: bytes, name: str = "x.latok") -> AdaptiveLatent:
    path = tmp_path / name
    path.write_bytes(data)
    return load_latok(path)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: b"NOTLATOK" + d[8:], "wrong magic"),
        (lambda d: d[:8] + struct.pack("<H", FORMAT_VERSION + 1) + d[10:], "unsupported .latok format version 4"),
        (lambda d: d[:-1], "truncated"),
        (lambda d: d[: len(d) // 2], "truncated"),
        (lambda d: d[:5], "truncated"),
        (lambda d: b"", "truncated"),
        (lambda d: d + b"\x00", "trailing bytes"),
        (lambda d: d[:40] + bytes([d[40] ^ 1]) + d[41:], "checksum mismatch"),
    ],
)
def test_damage_is_reported(tmp_path, valid_bytes, damage, message):
    with pytest.raises(LatokFormatError, match=message) as info:
        read_bytes(tmp_path, damage(valid_bytes))
    assert "\n" not in str(info.value)


def test_huge_claimed_length_does_not_allocate(tmp_path, valid_bytes):
    header_at = 12  # preamble is 12 bytes; the HEAD record's length field follows its tag
    data = valid_bytes[: header_at + 4] + struct.pack("<I", 0xFFFFFFF0) + valid_bytes[header_at + 8 :]
    with pytest.raises(LatokFormatError, match="more than the"):
        read_bytes(tmp_path, data)


def forge_header(valid_bytes: bytes, **changes) -> bytes:
    """``valid_bytes`` with its HEAD record's JSON changed (and a matching checksum)."""
    import json

    _, length = struct.unpack_from("<4sI", valid_bytes, 12)
    header = {**json.loads(valid_bytes[20 : 20 + length]), **changes}
    payload = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    head = struct.pack("<4sI", b"HEAD", len(payload))
    return valid_bytes[:12] + head + payload + struct.pack("<I", zlib.crc32(head + payload)) + valid_bytes[20 + length + 4 :]


def test_valid_crc_but_absurd_shape_is_refused(tmp_path, valid_bytes):
    with pytest.raises(LatokFormatError, match="exceeds the supported size"):
        read_bytes(tmp_path, forge_header(valid_bytes, shape=[1, 8, 1 << 14, 1 << 14, 1 << 14]))


@pytest.mark.parametrize(
    "guard",
    [
        {"lit_frames": "1011", "lit_model": "abc"},  # 4 flags for 5 latent frames
        {"lit_frames": "10x11", "lit_model": "abc"},
        {"lit_frames": "10111"},  # no model
        {"lit_frames": [1, 0, 1, 1, 1], "lit_model": "abc"},
        {"lit_model": "abc"},
    ],
)
def test_malformed_lit_guard_is_refused(tmp_path, valid_bytes, guard):
    with pytest.raises(LatokFormatError, match="lit guard|lit_frames|lit_model"):
        read_bytes(tmp_path, forge_header(valid_bytes, **guard))
    assert read_bytes(tmp_path, forge_header(valid_bytes, lit_frames="10110", lit_model="abc")).lit_frames == (True, False, True, True, False)


def weights_text(codes: list[int]) -> str:
    from latok.codec.format.header import encode_lit_weights

    return encode_lit_weights(bytes(codes))


# the valid_bytes clip: 5 latent frames of 6 x 10, so squares of 4 make a (5, 2, 3) grid: 30 codes
WEIGHTS = [0] * 6 + [3, 0, 16, 8, 1, 0] + [0] * 6 + [2] * 6 + [0, 0, 0, 0, 0, 9]


def test_lit_weights_round_trip_and_files_without_them_keep_their_bytes(tmp_path):
    adaptive = make_adaptive(frames=5)
    codes = torch.tensor(WEIGHTS, dtype=torch.uint8).view(5, 2, 3)
    weighted = replace(adaptive, lit_frames=(False, True, False, True, True), lit_model="abc", lit_weights=codes, lit_tile=4)
    loaded = load_latok(save_latok(weighted, tmp_path / "w.latok", chunk_frames=2))
    assert_same(loaded, weighted)
    assert loaded.lit_tile == 4 and torch.equal(loaded.lit_weights, codes)
    field = loaded.lit_guard()
    assert field.shape == (1, 1, 5, 6, 10) and field[0, 0, 1, 3, 3] == 3 / 8 and field[0, 0, 1, 0, 8] == 2.0 and field[0, 0, 1, 5, 0] == 1.0 and field[0, 0, 4, 5, 9] == 9 / 8
    flagged = replace(adaptive, lit_frames=(False, True, False, True, True), lit_model="abc")
    assert b"lit_weights" not in save_latok(flagged, tmp_path / "f.latok").read_bytes()  # one flag a frame: as before
    with pytest.raises(InvalidInputError, match="flag exactly the frames"):
        replace(weighted, lit_frames=(True, True, False, True, True))
    with pytest.raises(InvalidInputError, match="uint8 codes"):
        replace(weighted, lit_weights=codes[:, :1])
    with pytest.raises(InvalidInputError, match="uint8 codes"):
        replace(weighted, lit_weights=codes.clone().fill_(17))
    with pytest.raises(InvalidInputError, match="tile size"):
        replace(weighted, lit_tile=None)
    assert weighted.without_lit_guard().lit_guard() is None


@pytest.mark.parametrize(
    "guard",
    [
        {"lit_weights": weights_text(WEIGHTS[:29]), "lit_tile": 4},  # one code short
        {"lit_weights": weights_text(WEIGHTS + [0]), "lit_tile": 4},  # one code over
        {"lit_weights": weights_text([17] + WEIGHTS[1:]), "lit_tile": 4},  # a weight above 2
        {"lit_weights": "not base64!", "lit_tile": 4},
        {"lit_weights": "AAAA", "lit_tile": 4},  # base64, not zlib
        {"lit_weights": weights_text(WEIGHTS)},  # no tile
        {"lit_tile": 4},  # no weights
        {"lit_weights": weights_text(WEIGHTS), "lit_tile": 0},
        {"lit_weights": weights_text(WEIGHTS), "lit_tile": 5},  # the codes of another grid
        {"lit_weights": weights_text(WEIGHTS), "lit_tile": 4, "lit_frames": "11011"},  # flags that disagree
        {"lit_weights": weights_text(WEIGHTS), "lit_tile": 4, "lit_frames": None, "lit_model": None},  # no guard
        {"lit_weights": weights_text(WEIGHTS), "lit_tile": 1 << 15},  # a tile larger than the frame is allowed, but not these codes
    ],
)
def test_malformed_lit_weights_are_refused(tmp_path, valid_bytes, guard):
    guard = {"lit_frames": "01011", "lit_model": "abc", **guard}
    with pytest.raises(LatokFormatError, match="lit guard|lit_weights|lit_tile"):
        read_bytes(tmp_path, forge_header(valid_bytes, **guard))
    good = read_bytes(tmp_path, forge_header(valid_bytes, lit_frames="01011", lit_model="abc", lit_weights=weights_text(WEIGHTS), lit_tile=4))
    assert good.lit_weights.view(-1).tolist() == WEIGHTS


def chunk_weighted_bytes(tmp_path, codes: torch.Tensor = torch.tensor(WEIGHTS, dtype=torch.uint8).view(5, 2, 3)) -> bytes:
    """The valid_bytes clip as a stream writes it with lit weights per chunk (chunks of 2, 2 and 1 latent frames)."""
    adaptive = make_adaptive(frames=5)
    header = {**header_of(adaptive, 2), "lit_model": "abc", "lit_tile": 4}
    counts = adaptive.keep.sum(dim=(0, 2, 3)).tolist()
    with LatokWriter(tmp_path / "c.latok", header) as writer:
        for t in range(0, 5, 2):
            start, count = int(sum(counts[:t])), int(sum(counts[t : t + 2]))
            writer.write_chunk(adaptive.keep[:, t : t + 2], adaptive.values[start : start + count], lit_weights=codes[t : t + 2])
    return (tmp_path / "c.latok").read_bytes()


def with_record(data: bytes, tag: bytes, index: int, payload: bytes | None) -> bytes:
    """``data`` with the ``index``-th ``tag`` record's payload replaced (checksum recomputed), or dropped (``None``)."""
    offset, seen = 12, 0
    while offset < len(data):
        found, length = struct.unpack_from("<4sI", data, offset)
        end = offset + 8 + length + 4
        if found == tag and seen == index:
            if payload is None:
                return data[:offset] + data[end:]
            head = struct.pack("<4sI", tag, len(payload))
            return data[:offset] + head + payload + struct.pack("<I", zlib.crc32(head + payload)) + data[end:]
        seen += found == tag
        offset = end
    raise AssertionError(f"no record {tag!r} #{index}")


def test_stream_lit_weights_per_chunk_round_trip(tmp_path):
    from latok.evaluation.reports import file_info

    data = chunk_weighted_bytes(tmp_path)
    assert data.count(b"LITW") == 3
    with LatokReader(tmp_path / "c.latok") as reader:
        assert reader.header["lit_frames"] is None and reader.header["lit_tile"] == 4
        parts = list(reader.chunks())
    assert [tuple(part.lit_weights.shape) for part in parts] == [(2, 2, 3), (2, 2, 3), (1, 2, 3)]
    assert torch.cat([part.lit_weights for part in parts]).view(-1).tolist() == WEIGHTS
    loaded = load_latok(tmp_path / "c.latok")  # the whole clip: the chunks' weights joined
    assert loaded.lit_weights.view(-1).tolist() == WEIGHTS and loaded.lit_frames == (False, True, False, True, True)
    info = file_info(tmp_path / "c.latok")
    assert info["lit_guard"]["per_chunk"] and info["lit_guard"]["lit_frames"] == 3 and sum(info["bytes_by_part"].values()) == len(data)
    adaptive = make_adaptive(frames=5)
    count = int(adaptive.keep[:, :2].sum())
    with pytest.raises(InvalidInputError, match="chunk lit weights"):  # the header promised them
        with LatokWriter(tmp_path / "w.latok", {**header_of(adaptive, 2), "lit_model": "abc", "lit_tile": 4}) as writer:
            writer.write_chunk(adaptive.keep[:, :2], adaptive.values[:count])
    with pytest.raises(InvalidInputError, match="chunk lit weights"):  # it did not
        with LatokWriter(tmp_path / "w.latok", header_of(adaptive, 2)) as writer:
            writer.write_chunk(adaptive.keep[:, :2], adaptive.values[:count], lit_weights=torch.zeros(2, 2, 3, dtype=torch.uint8))
    with pytest.raises(InvalidInputError, match="uint8 codes"):
        with LatokWriter(tmp_path / "w.latok", {**header_of(adaptive, 2), "lit_model": "abc", "lit_tile": 4}) as writer:
            writer.write_chunk(adaptive.keep[:, :2], adaptive.values[:count], lit_weights=torch.full((2, 2, 3), 17, dtype=torch.uint8))
    assert not (tmp_path / "w.latok").exists()


LITW = struct.Struct("<II")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: with_record(d, b"LITW", 1, None), "expected a LITW record"),  # missing
        (lambda d: with_record(d, b"LITW", 0, LITW.pack(1, 2) + zlib.compress(bytes(12))), "expected a LITW record"),  # wrong frames
        (lambda d: with_record(d, b"LITW", 0, LITW.pack(0, 2) + zlib.compress(bytes(11))), "must hold 12 codes"),
        (lambda d: with_record(d, b"LITW", 0, LITW.pack(0, 2) + zlib.compress(bytes(13))), "must hold 12 codes"),
        (lambda d: with_record(d, b"LITW", 0, LITW.pack(0, 2) + zlib.compress(bytes(1 << 20))), "must hold 12 codes"),  # a zlib bomb
        (lambda d: with_record(d, b"LITW", 0, LITW.pack(0, 2) + zlib.compress(bytes([17] * 12))), "code above 16"),
        (lambda d: with_record(d, b"LITW", 0, LITW.pack(0, 2) + b"not zlib"), "not zlib data"),
        (lambda d: with_record(d, b"LITW", 0, LITW.pack(0, 2) + zlib.compress(bytes(12)) + b"x"), "must hold 12 codes"),  # trailing bytes
        (lambda d: with_record(d, b"LITW", 2, b"\x04\x00"), "expected a LITW record"),  # too short for its head
        (lambda d: forge_header(d, lit_model=None, lit_tile=None), "expected a MASK or END record, found b'LITW'"),  # records not promised
        (lambda d: forge_header(d, lit_tile=None), "lit guard"),
        (lambda d: forge_header(d, lit_model=None), "lit_weights and lit_tile come together"),
    ],
)
def test_malformed_stream_lit_weights_are_refused(tmp_path, damage, message):
    refused_by_both_reads(tmp_path, damage(chunk_weighted_bytes(tmp_path)), message)


def refused_by_both_reads(tmp_path, data: bytes, message: str) -> None:
    """``data`` is one :class:`LatokFormatError` matching ``message``, read whole and read for its structure only."""
    from latok.evaluation.reports import file_info

    with pytest.raises(LatokFormatError, match=message):
        read_bytes(tmp_path, data)
    (tmp_path / "x.latok").write_bytes(data)
    with pytest.raises(LatokFormatError, match=message):
        file_info(tmp_path / "x.latok")


def test_weights_per_chunk_need_the_model_and_the_tile(tmp_path, valid_bytes):
    with pytest.raises(LatokFormatError, match="expected a LITW record"):  # a valid header that promises LITW records
        read_bytes(tmp_path, forge_header(valid_bytes, lit_model="abc", lit_tile=4))
    with pytest.raises(LatokFormatError, match="lit guard"):
        read_bytes(tmp_path, forge_header(valid_bytes, lit_model="abc"))


def test_rule_metric_round_trips_and_old_files_read_as_the_plain_rule(tmp_path, valid_bytes):
    from dataclasses import replace

    from latok.vae.taesd import TAEF2

    plain = make_adaptive()
    weighted = replace(plain, rule_metric="decoder")
    assert weighted.rule_weights is not None and len(weighted.rule_weights) == 32 and plain.rule_weights is None
    assert load_latok(save_latok(weighted, tmp_path / "w.latok")).rule_metric == "decoder"
    assert b"rule_metric" not in save_latok(plain, tmp_path / "p.latok").read_bytes()  # absent: the plain rule's bytes as before
    assert load_latok(tmp_path / "p.latok").rule_metric == "latent"
    assert weighted.rule_weights[TAEF2.value_sensitivity.index(max(TAEF2.value_sensitivity))] == max(weighted.rule_weights)
    for bad in ("latent", "pixels", 1):  # "latent" is written as absence, so a file that says it is malformed too
        with pytest.raises(LatokFormatError, match="rule_metric"):
            read_bytes(tmp_path, forge_header(valid_bytes, rule_metric=bad))
    with pytest.raises(InvalidInputError, match="rule metric"):
        replace(plain, rule_metric="pixels")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(LatokFormatError, match="no such file"):
        load_latok(tmp_path / "none.latok")
    with pytest.raises(LatokFormatError):
        load_latok(tmp_path)


@given(data=st.data())
@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzz_mutations_raise_format_error_or_read_identically(tmp_path, valid_bytes, data):
    """Flip bits, overwrite, insert, delete, truncate: the reader either returns the original
    contents or raises LatokFormatError. Never another exception, never a hang."""
    original = load_latok_bytes(tmp_path, valid_bytes)
    mutated = bytearray(valid_bytes)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        kind = data.draw(st.sampled_from(["flip", "byte", "insert", "delete", "truncate"]), label="kind")
        at = data.draw(st.integers(0, max(len(mutated) - 1, 0)), label="at")
        if kind == "flip" and mutated:
            mutated[at] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        elif kind == "byte" and mutated:
            mutated[at] = data.draw(st.integers(0, 255), label="value")
        elif kind == "insert":
            mutated[at:at] = data.draw(st.binary(min_size=1, max_size=16), label="inserted")
        elif kind == "delete":
            del mutated[at : at + data.draw(st.integers(1, 16), label="length")]
        else:
            del mutated[at:]
    try:
        result = read_bytes(tmp_path, bytes(mutated), "fuzz.latok")
    except LatokFormatError:
        return
    assert bytes(mutated) == valid_bytes or result_equal(result, original)


def load_latok_bytes(tmp_path, data: bytes) -> AdaptiveLatent:
    return read_bytes(tmp_path, data, "original.latok")


def result_equal(a: AdaptiveLatent, b: AdaptiveLatent) -> bool:
    try:
        assert_same(a, b)
        return True
    except AssertionError:
        return False


def test_a_tar_member_reads_in_place_and_is_named_in_errors(tmp_path, valid_bytes):
    import io
    import tarfile

    path = tmp_path / "x.latok"
    path.write_bytes(valid_bytes)
    shard = tmp_path / "shard.tar"
    with tarfile.open(shard, "w") as tar:
        for name, data in (("before.txt", b"x" * 700), ("clip.latok", valid_bytes), ("cut.latok", valid_bytes[:-9])):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with tarfile.open(shard) as tar:
        assert_same(load_latok(tar.extractfile("clip.latok"), name="shard.tar:clip.latok"), load_latok(path))
        with pytest.raises(LatokFormatError, match=r"^shard\.tar:cut\.latok: truncated"):
            load_latok(tar.extractfile("cut.latok"), name="shard.tar:cut.latok")


TAUS = (0.25, 0.5, 0.125)
TAUC = struct.Struct("<IId")


def chunk_tau_bytes(tmp_path, taus=TAUS) -> bytes:
    """The valid_bytes clip as a stream with a quality target writes it: open-ended, a tau per chunk (chunks of 2, 2, 1)."""
    adaptive = make_adaptive(frames=5)
    counts = adaptive.keep.sum(dim=(0, 2, 3)).tolist()
    with LatokWriter(tmp_path / "t.latok", chunk_tau_header(adaptive)) as writer:
        for tau, t in zip(taus, range(0, 5, 2)):
            start, count = int(sum(counts[:t])), int(sum(counts[t : t + 2]))
            writer.write_chunk(adaptive.keep[:, t : t + 2], adaptive.values[start : start + count], video_frames=min(2, 5 - t), tau=tau)
    return (tmp_path / "t.latok").read_bytes()


def test_a_tau_per_chunk_round_trips(tmp_path):
    from latok.evaluation.reports import file_info

    data = chunk_tau_bytes(tmp_path)
    assert data.count(b"TAUC") == 3
    with LatokReader(tmp_path / "t.latok") as reader:
        assert reader.header["chunk_tau"] and reader.header["tau"] == 0.5  # the largest, written on close
        assert [part.tau for part in reader.chunks()] == list(TAUS)
    assert load_latok(tmp_path / "t.latok").tau == 0.5
    info = file_info(tmp_path / "t.latok")
    assert info["tau_per_chunk"] == {"min": 0.125, "mean": sum(TAUS) / 3, "max": 0.5}
    assert info["bytes_by_part"]["taus"] == 3 * (8 + TAUC.size + 4) and sum(info["bytes_by_part"].values()) == len(data)
    with LatokReader(io.BytesIO(valid_bytes_of(tmp_path)), "v.latok") as reader:  # files with one tau: none per chunk
        assert reader.header["chunk_tau"] is None and all(part.tau is None for part in reader.chunks())
    adaptive = make_adaptive(frames=5)
    count = int(adaptive.keep[:, :2].sum())
    for header, tau in ((header_of(adaptive, 2), 0.5), (chunk_tau_header(adaptive), None), (chunk_tau_header(adaptive), float("nan"))):
        with pytest.raises(InvalidInputError, match="chunk's tau"):
            with LatokWriter(tmp_path / "w.latok", header) as writer:
                writer.write_chunk(adaptive.keep[:, :2], adaptive.values[:count], video_frames=2, tau=tau)
    assert not (tmp_path / "w.latok").exists()


def chunk_tau_header(adaptive) -> dict:
    """An open-ended stream's header with a tau per chunk, from a quality target."""
    header = {**header_of(adaptive, 2), "chunk_tau": True, "target_quality": 0.5}
    header["shape"][2], header["source"] = None, {**header["source"], "frames": None}
    return header


def valid_bytes_of(tmp_path) -> bytes:
    save_latok(make_adaptive(frames=5), tmp_path / "v.latok", chunk_frames=2)
    return (tmp_path / "v.latok").read_bytes()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: with_record(d, b"TAUC", 1, None), "expected a TAUC record"),  # missing
        (lambda d: with_record(d, b"TAUC", 0, TAUC.pack(1, 2, 0.25)), "expected a TAUC record"),  # wrong frames
        (lambda d: with_record(d, b"TAUC", 0, TAUC.pack(0, 2, 0.25) + b"x"), "expected a TAUC record"),  # trailing bytes
        (lambda d: with_record(d, b"TAUC", 2, b"\x04\x00"), "expected a TAUC record"),  # too short
        (lambda d: with_record(d, b"TAUC", 0, TAUC.pack(0, 2, float("nan"))), "tau nan is not in"),
        (lambda d: with_record(d, b"TAUC", 0, TAUC.pack(0, 2, -0.25)), "tau -0.25 is not in"),
        (lambda d: with_record(d, b"TAUC", 0, TAUC.pack(0, 2, 0.75)), "tau 0.75 is not in"),  # above the header's
        (lambda d: with_record(d, b"TAUC", 1, TAUC.pack(2, 2, 0.375)), "not the largest of its chunks"),  # the header's is no chunk's
        (lambda d: forge_header(d, chunk_tau=None), "expected a MASK or END record, found b'TAUC'"),  # records not promised
        (lambda d: forge_header(d, target_quality=None), "a tau per chunk comes from a target quality"),
        (lambda d: forge_header(d, chunk_tau=False), "chunk_tau = false is not allowed"),
    ],
)
def test_a_malformed_tau_per_chunk_is_refused(tmp_path, damage, message):
    refused_by_both_reads(tmp_path, damage(chunk_tau_bytes(tmp_path)), message)


def test_a_header_that_promises_a_tau_per_chunk_needs_its_records(tmp_path, valid_bytes):
    with pytest.raises(LatokFormatError, match="expected a TAUC record"):
        read_bytes(tmp_path, forge_header(valid_bytes, chunk_tau=True, target_quality=0.5))
