"""Hostile inputs (issue 17): nothing latok reads can run code, exhaust memory, crash it or destroy data.

Every CLI case checks the whole contract: exactly one ``latok: error: ...`` line, exit status 2,
no output and no temporary file, and inputs left byte-for-byte as they were.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    PEAK_BYTES,
    ROOT,
    WEIGHTS,
    edit_header,
    forge,
    header_of_file,
    needs_weights,
    npy_bytes,
    refused,
    run_measured,
    snapshot,
    tar_file,
)

from latok.cli import main
from latok.errors import ShardFormatError
from latok.training.data import read_samples, write_shard


class _Payload:
    """Unpickling this writes the file named by ``marker``: the side effect a test can look for."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("member", ["clip0.pyd", "clip0.pickle", "clip0.pth", "clip0.latent.npy"])
def test_a_pickle_in_a_training_shard_never_runs(tmp_path, member):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(str(marker)))
    if member.endswith(".npy"):  # an object array: np.load would unpickle it if allowed
        payload = npy_bytes(np.array([_Payload(str(marker))], dtype=object))
    shards = tmp_path / "shards"
    shards.mkdir()
    members = {"clip0.json": b'{"name": "clip0"}', member: payload}
    if not member.endswith(".npy"):
        members["clip0.latent.npy"] = npy_bytes(np.zeros((2, 1, 2, 2), np.float16))
    tar_file(shards / "s.tar", members)
    with pytest.raises(ShardFormatError, match=r"s\.tar: member clip0\.") as info:
        read_samples(shards)
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_shard_members_latok_writes_still_read(tmp_path):
    write_shard(tmp_path / "a.tar", "clip", torch.zeros(4, 2, 3, 5), {"name": "clip"}, np.zeros((2, 24, 40, 3), np.uint8))
    (sample,) = read_samples(tmp_path)
    assert sample["latent.npy"].dtype == np.float16 and sample["latent.npy"].shape == (4, 2, 3, 5)
    assert sample["json"] == {"name": "clip"} and sample["video.npy"].shape == (2, 24, 40, 3)


def test_training_crops_refuse_a_pickle_too(tmp_path):
    from latok.training.data import CropDataset

    marker = tmp_path / "pwned"
    tar_file(tmp_path / "s.tar", {"c.latent.npy": npy_bytes(np.zeros((2, 3, 4, 4), np.float16)), "c.json": b"{}",
                              "c.pyd": pickle.dumps(_Payload(str(marker)))})  # fmt: skip
    dataset = CropDataset([str(tmp_path / "s.tar")], (2, 2, 2), 1, (0.2, 0.8), 0.0, seed=0)
    with pytest.raises(ShardFormatError, match="c.pyd"):
        next(iter(dataset))
    assert not marker.exists()



@needs_weights
@pytest.mark.parametrize("workers", [0, 1])
def test_latok_train_on_a_poisoned_shard_is_one_error_and_runs_nothing(tmp_path, capsys, monkeypatch, workers):
    marker = tmp_path / "pwned"
    for split, frames in (("train", 9), ("val", 5)):
        (tmp_path / split).mkdir()
        latent = np.random.default_rng(0).standard_normal((32, frames, 4, 6)).astype(np.float16)
        members = {"c.latent.npy": npy_bytes(latent), "c.json": b'{"name": "c"}', "c.pyd": pickle.dumps(_Payload(str(marker)))}
        if split == "val":
            members["c.video.npy"] = npy_bytes(np.zeros((frames, 32, 48, 3), np.uint8))
        tar_file(tmp_path / split / "c.tar", members)
    monkeypatch.chdir(tmp_path)
    argv = ["train", "fit", "--config", str(ROOT / "configs" / "taef2_lit-xs.yaml"), "--trainer.fast_dev_run", "1",
            "--trainer.logger", "false", "--data.train_dir", str(tmp_path / "train"), "--data.val_dir", str(tmp_path / "val"),
            "--data.crop", "[5, 4, 4]", "--data.batch_size", "2", "--data.num_workers", str(workers),
            "--model.loss", "latent"]  # fmt: skip  # latent: the training loader, not the metric estimate, meets the shard first
    assert main(argv) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.match(r"latok: error: .*c\.tar: member c\.pyd is not a member latok reads", last), last
    assert not marker.exists()


# -- the CLI contract: one line, exit 2, nothing written, nothing changed ----------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["encode", "{w}/in.mp4", "-o", "{w}/in.mp4"],
        ["encode", "{w}/in.mp4", "-o", "{w}/hard.mp4"],
        ["encode", "{w}/in.mp4", "-o", "{w}/soft.mp4"],
        ["encode", "{w}/soft.mp4", "-o", "{w}/in.mp4"],
        ["encode", "{w}/in.mp4", "-o", "{w}/sub/../in.mp4"],
        ["roundtrip", "{w}/in.mp4", "-o", "{w}/in.mp4", "--json", "{w}/m.json"],
        ["roundtrip", "{w}/in.mp4", "-o", "{w}/r.mp4", "--json", "{w}/hard.mp4"],
        ["roundtrip", "{w}/in.mp4", "-o", "{w}/r.mp4", "--json", "{w}/m.json", "--viz", "{w}/r.mp4"],
        ["roundtrip", "{w}/in.mp4", "-o", "{w}/r.mp4", "--json", "{w}/m.json", "--latok", "{w}/soft.mp4"],
        ["export", "{w}/clip.latok", "-o", "{w}/same.safetensors"],
        ["decode", "{w}/clip.latok", "-o", "{w}/clip-link.mp4"],
        ["demo", "{w}/in.mp4", "-o", "{w}"],
    ],
)
def test_an_output_that_is_an_input_is_refused_before_any_work(work, capsys, argv):
    os.link(work / "in.mp4", work / "hard.mp4")
    (work / "soft.mp4").symlink_to(work / "in.mp4")
    (work / "sub").mkdir()
    (work / "same.safetensors").write_bytes((work / "clip.latok").read_bytes())
    (work / "clip-link.mp4").symlink_to(work / "clip.latok")
    argv = [a.format(w=work) for a in argv]
    if argv[0] == "export":
        argv[1] = str(work / "same.safetensors")
    if argv[0] == "demo":  # the demo's .latok output is the input
        (work / "clip.latok").unlink()
        (work / "clip.latok").symlink_to(work / "in.mp4")
    refused(argv, capsys, work, r"is the input|is also")


@pytest.mark.parametrize(
    "argv, match",
    [
        (["encode", "{w}/in.mp4", "-o", "{w}/adir"], "is a directory"),
        (["encode", "{w}/in.mp4", "-o", "{w}/afile/x.latok"], "afile is not a directory"),
        (["encode", "{w}/in.mp4", "-o", "/sys/latok-test/x.latok"], "cannot write in /sys"),
        (["decode", "{w}/clip.latok", "-o", "/sys/latok-test/x.mp4"], "cannot write in /sys"),
        (["decode", "{w}/clip.latok", "-o", "/sys/latok-test/frames"], "cannot write in /sys"),
        (["decode", "{w}/clip.latok", "-o", "{w}/adir.mp4"], "is a directory"),
        (["export", "{w}/clip.latok", "-o", "/sys/latok-test/x.safetensors"], "cannot write in /sys"),
        (["export", "{w}/clip.latok", "-o", "{w}/adir.safetensors"], "is a directory"),
        (["roundtrip", "{w}/in.mp4", "-o", "{w}/r.mp4", "--json", "{w}/adir"], "--json .*is a directory"),
        (["demo", "-o", "{w}/afile"], "is not a directory"),
        (["demo", "--frames", "0", "-o", "{w}/d"], "frames must be >= 1"),
        (["demo", "--height", "7", "-o", "{w}/d"], "height must be >= 8"),
        (["demo", "--height", "-16", "-o", "{w}/d"], "height must be >= 8"),
        (["demo", "--height", "0", "-o", "{w}/d"], "needs a --height"),
        (["encode", "{w}/in.mp4", "-o", "{w}/o.latok", "--tau", "nan"], "tau must be a finite number"),
        (["encode", "{w}/in.mp4", "-o", "{w}/o.latok", "--tau", "1e9"], "tau must be at most"),
        (["encode", "{w}/in.mp4", "-o", "{w}/o.latok", "--target-usage", "2"], "target usage must be in"),
        (["encode", "{w}/in.mp4", "-o", "{w}/o.latok", "--target-quality", "-1"], "target quality is a PSNR loss"),
        (["encode", "{w}/in.mp4", "-o", "{w}/o.latok", "--target-quality", "nan"], "target quality is a PSNR loss"),
        (["encode", "{w}/in.mp4", "-o", "{w}/o.latok", "--device", "nonsense"], "is not a torch device"),
        (["encode", "{w}/in.mp4", "-o", "{w}/o.latok", "--value-step", "-1"], "value step must be a finite number"),
        (["encode", "{w}/in.mp4", "-o", "{w}/o.latok", "--value-step", "nan"], "value step must be a finite number"),
        (["encode", "{w}/in.mp4", "-o", "{w}/o.latok", "--value-step", "1e-9"], "outside"),
        (["cache-latents", "--inputs", "{w}/in.mp4", "--out", "{w}/shards", "--value-step", "-2"], "value step must be a finite number"),
        (["roundtrip", "{w}/in.mp4", "-o", "{w}/r.mp4", "--json", "{w}/m.json", "--keyframe-interval", "0"], "keyframe interval"),
    ],
)
def test_unwritable_outputs_and_bad_options_fail_before_any_work(work, capsys, argv, match):
    if Path("/sys").is_dir() and os.access("/sys", os.W_OK):
        try:
            (Path("/sys") / ".latok-probe").touch()
            pytest.skip("/sys is writable here: no unwritable directory to test with")
        except OSError:
            pass
    (work / "adir").mkdir()
    (work / "adir.mp4").mkdir()
    (work / "adir.safetensors").mkdir()
    (work / "afile").write_text("x")
    refused([a.format(w=work) for a in argv], capsys, work, match)


BAD_HEADERS = [
    ("tau", "=1" + "0" * 400), ("tau", "=Infinity"), ("tau", "=NaN"), ("tau", -1), ("tau", "0.1"),
    ("shape.2", "=Infinity"), ("shape.2", 1.5), ("shape.3", "6"), ("shape.0", 2), ("shape.1", 0),
    ("chunk_frames", "=Infinity"), ("chunk_frames", 0), ("dtype", ["float16"]), ("dtype", "int8"),
    ("backend", "nonesuch"), ("backend", 3), ("reference", "next"),
    ("backend_config", ...), ("keyframe_interval", ...), ("target_usage", ...), ("target_usage", 2.0),
    ("target_quality", 0), ("target_quality", -1.0), ("target_quality", "0.5"), ("target_quality", "=Infinity"),
    ("rule_metric", "latent"), ("rule_metric", "pixels"), ("rule_metric", ["decoder"]),
    ("lit_tile", 0), ("lit_tile", 4), ("lit_weights", "AAAA"), ("lit_weights", 7), ("lit_model", "abc"),
    ("chunk_tau", True), ("chunk_tau", 1), ("chunk_tau", False),
    ("source.fps", 0), ("source.fps", "=NaN"), ("source.fps", "=Infinity"), ("source.frames", 0),
    ("source.crop", [0, 0, "=Infinity", 48]), ("source.crop", "=[0,0,Infinity,48]"), ("source.height", 10**6),
    ("source.frames", 1000), ("extra_key", 1), ("source", "=" + "[" * 50_000 + "]" * 50_000),
    ("motion", "local"), ("motion", 1), ("motion", "global"),  # the last: a version-1 file cannot carry motion
]


@pytest.mark.parametrize("command", ["info", "decode", "export"])
@pytest.mark.parametrize("field, value", BAD_HEADERS, ids=[f"{f}={str(v)[:12]}" for f, v in BAD_HEADERS])
def test_headers_with_a_valid_crc_but_bad_values_are_one_error(work, capsys, command, field, value):
    data = (work / "clip.latok").read_bytes()
    (work / "bad.latok").write_bytes(forge(data, edit_header(header_of_file(data), field, value)))
    argv = {"info": ["info", work / "bad.latok"], "decode": ["decode", work / "bad.latok", "-o", work / "o.mp4"],
            "export": ["export", work / "bad.latok", "-o", work / "o.safetensors"]}[command]  # fmt: skip
    refused(argv, capsys, work, "bad.latok: .*(malformed header|exceeds|larger than|cannot carry motion)")


@pytest.mark.parametrize("flags", [1, 0x8000])
def test_reserved_flags_are_checked(work, capsys, flags):
    (work / "bad.latok").write_bytes(forge((work / "clip.latok").read_bytes(), flags=flags))
    refused(["info", work / "bad.latok"], capsys, work, "reserved preamble flags")


def test_info_is_strict_json_with_bytes_by_part(work, capsys):
    assert main(["info", str(work / "clip.latok")]) == 0
    info = json.loads(capsys.readouterr().out, parse_constant=lambda name: pytest.fail(f"info printed {name}"))
    parts = info["bytes_by_part"]
    assert sum(parts.values()) == info["bytes"] == (work / "clip.latok").stat().st_size
    assert parts["values"] > parts["masks"] and info["bits_per_kept_value"] > 16  # fp16 plus record framing


# -- weights -------------------------------------------------------------------------------------


@pytest.fixture
def weights_copy(tmp_path) -> Path:
    folder = tmp_path / "weights"
    folder.mkdir()
    for name in ("taef2_encoder.pth", "taef2_decoder.pth"):
        if not (WEIGHTS / name).is_file():
            pytest.skip(f"TAEF2 weights not found in {WEIGHTS}")
        (folder / name).write_bytes((WEIGHTS / name).read_bytes())
    return folder


@pytest.mark.parametrize("damage", ["truncated", "not a state dict", "pickled code"])
def test_damaged_taef2_weights_are_one_error(work, capsys, weights_copy, damage, monkeypatch):
    target = weights_copy / "taef2_encoder.pth"
    marker = work / "pwned"
    if damage == "truncated":
        target.write_bytes(target.read_bytes()[:5000])
    elif damage == "not a state dict":
        torch.save([torch.zeros(3)], target)
    else:
        target.write_bytes(pickle.dumps(_Payload(str(marker))))
    refused(["encode", work / "in.mp4", "-o", work / "o.latok", "--weights", weights_copy], capsys, work,
            r"taef2_encoder.pth: not a readable TAEF2 encoder state dict")  # fmt: skip
    assert not marker.exists()
    monkeypatch.setenv("LATOK_WEIGHTS_DIR", str(weights_copy))  # found, not given: checked against the published sha256
    refused(["encode", work / "in.mp4", "-o", work / "o.latok"], capsys, work, r"taef2_encoder.pth: sha256 .* is not the published")


def test_a_corrupt_lpips_file_fails_before_the_encode(work, capsys, weights_copy, monkeypatch):
    (weights_copy / "lpips_vgg16.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    monkeypatch.setenv("LATOK_WEIGHTS_DIR", str(weights_copy))
    refused(["roundtrip", work / "in.mp4", "-o", work / "r.mp4", "--json", work / "m.json", "--lpips"], capsys, work,
            "lpips_vgg16.safetensors: not a readable safetensors file")  # fmt: skip


def test_weights_forms_for_taef2(work, capsys, weights_copy):
    refused(["encode", work / "in.mp4", "-o", work / "o.latok", "--weights", weights_copy / "taef2_encoder.pth"], capsys, work,
            "taef2 has two weight files; pass the folder .* or both files")  # fmt: skip
    refused(["encode", work / "in.mp4", "-o", work / "o.latok", *["--weights", weights_copy] * 3], capsys, work, "got 3 paths")
    files = ["--weights", weights_copy / "taef2_encoder.pth", "--weights", weights_copy / "taef2_decoder.pth"]
    assert main([str(a) for a in ["encode", work / "in.mp4", "-o", work / "o.latok", "--no-lit-guard", "--height", "32", *files]]) == 0
    assert main([str(a) for a in ["decode", work / "o.latok", "-o", work / "o.mp4", "--fill", "hold", *files]]) == 0
    assert (work / "o.mp4").stat().st_size > 0


# -- all outputs or none ---------------------------------------------------------------------------


@needs_weights
def test_a_failing_roundtrip_leaves_none_of_its_outputs(work, capsys, monkeypatch):
    from latok.errors import OutputError
    from latok.evaluation import reports

    def fail(path, payload):
        raise OutputError(f"{path}: simulated failure after the video was written")

    monkeypatch.setattr(reports, "write_json", fail)
    before = snapshot(work)
    argv = ["roundtrip", work / "in.mp4", "-o", work / "r.mp4", "--json", work / "m.json", "--viz", work / "v.mp4",
            "--latok", work / "r.latok", "--height", "32", "--no-lit-guard", "--fill", "hold"]  # fmt: skip
    assert main([str(a) for a in argv]) == 2
    assert "simulated failure" in capsys.readouterr().err
    assert snapshot(work) == before


# -- frames ---------------------------------------------------------------------------------------


def test_16_bit_png_frames_are_scaled_not_saturated(tmp_path):
    from PIL import Image

    from latok.io import load_clip

    for index in range(2):
        Image.fromarray(np.full((16, 32), 0x8080, np.uint16)).save(tmp_path / f"{index:05d}.png")
    frames = (load_clip(tmp_path).video + 1) * 127.5  # (1, 3, T, H, W) in [0, 255]
    assert frames.round().unique().tolist() == [128.0]


# -- signals --------------------------------------------------------------------------------------


@needs_weights
def test_sigterm_during_encode_stream_leaves_nothing(tmp_path):
    from latok.io import write_video

    frames = np.random.default_rng(1).integers(0, 256, (240, 64, 96, 3), dtype=np.uint8)
    write_video(tmp_path / "long.mp4", frames, fps=24)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "LATOK_WEIGHTS_DIR": str(WEIGHTS), "LATOK_OFFLINE": "1"}
    argv = [sys.executable, "-m", "latok.cli", "encode", str(tmp_path / "long.mp4"), "-o", str(out / "s.latok"),
            "--stream", "--chunk", "2", "--height", "64"]  # fmt: skip
    process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not list(out.iterdir()) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)  # wait for the stream's temporary file: the encode is under way
    assert list(out.iterdir()), "the stream never started writing"
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert err.decode().strip().splitlines()[-1] == "latok: terminated"
    assert list(out.iterdir()) == []


# -- structure-aware fuzzing and crafted files, each in a process whose peak memory is measured -------

def test_structure_aware_fuzz(tmp_path):
    result, peak = run_measured(tmp_path, "fuzz", "--cases", "300", "--seed", "0")
    assert result["cases"] == 300 and result["slowest_s"] < 2.0 and peak < PEAK_BYTES, (result, peak)
    assert result["outcomes"].get("LatokFormatError", 0) > 200  # the mutations reach the validation, not just the CRC


@pytest.mark.slow
def test_structure_aware_fuzz_long(tmp_path):
    result, peak = run_measured(tmp_path, "fuzz", "--cases", "10000", "--seed", "1")
    assert result["cases"] == 10000 and result["slowest_s"] < 2.0 and peak < PEAK_BYTES, (result, peak)


WELL_FORMED = ("tall_valid", "v3_context_mask_frames", "v3_many_zero_chunks")  # valid files that declare huge clips


def test_crafted_files_stay_within_memory_and_time(tmp_path):
    """latok info, decode and export on every crafted file (each under 1 MB), in one process whose peak is measured.

    ``info`` reads a file's structure in time proportional to its bytes, whatever clip it declares; ``decode`` and
    ``export`` weigh the declared clip against the memory limit before any work (here 0.25 GiB)."""
    crafted = tmp_path / "crafted"
    files, _ = run_measured(tmp_path, "craft", str(crafted))
    assert files["files"] and max(files["files"].values()) < 1 << 20
    runs, peak = run_measured(tmp_path, "cli", "info,decode,export", str(crafted), env={"LATOK_MAX_MEMORY_GB": "0.25"})
    assert peak < PEAK_BYTES, f"latok info/decode/export peaked at {peak / 2**20:.0f} MiB"
    assert len(runs) == 3 * len(files["files"])
    for name, run in runs.items():
        assert run["seconds"] < 5.0, (name, run)
        lines = run["stderr"].strip().splitlines()
        if name in {f"info {n}.latok" for n in WELL_FORMED}:  # well-formed: info reads it in bounded memory and time
            assert run["exit"] == 0 and not lines
        elif name.split()[1] in {f"{n}.latok" for n in WELL_FORMED}:  # too large to decode at once: refused before any work
            assert run["exit"] == 2 and len(lines) == 1 and "decode it with --stream" in lines[0], (name, run)
        else:
            assert run["exit"] == 2 and len(lines) == 1 and lines[0].startswith("latok: error: "), (name, run)
    assert not [p for p in crafted.iterdir() if not p.name.endswith(".latok")]  # no output, no temp file
