"""The `latok` command line: demo outputs, backends listing, one-line errors, light start-up."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, needs_weights

from latok.cli import main
from latok.evaluation.metrics import psnr
from latok.io import frames_to_video, load_clip
from latok.sample import sample_frames


@needs_weights
def test_demo_on_builtin_sample_writes_outputs(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--frames", "5", "--height", "64"]) == 0
    printed = capsys.readouterr().out
    assert "PSNR" in printed and "usage" in printed and "kbps" in printed and "motion block" in printed  # the default motion
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["motion"] == "block"
    assert metrics["frames"] == 5 and (metrics["height"], metrics["width"]) == (64, 112)
    assert metrics["latent_shape"] == [1, 32, 5, 8, 14]
    assert 0.2 < metrics["token_usage"] < 0.9  # the static background is dropped
    assert metrics["bytes"] == (out / "clip.latok").stat().st_size
    assert metrics["psnr"] > 25.0
    reconstruction = load_clip(out / "reconstruction.mp4")
    assert reconstruction.video.shape == (1, 3, 5, 64, 112)
    assert reconstruction.fps == pytest.approx(24.0)
    assert load_clip(out / "side_by_side.mp4").video.shape[-1] == 3 * 112
    page = (out / "clip.html").read_text()  # latok view of clip.latok, named as the user sees it
    assert "latok view: clip.latok" in page and page.count('alt="keep mask of latent frame') == 5 and ".latok-" not in page
    source = frames_to_video(sample_frames(frames=5, height=64, width=112))
    assert abs(psnr(reconstruction.video, source) - metrics["psnr"]) < 1.0


@needs_weights
def test_demo_on_a_file(tmp_path, capsys):
    from latok.io import write_video

    source = write_video(tmp_path / "in.mp4", sample_frames(frames=3, height=48, width=80), fps=10)
    assert main(["demo", str(source), "-o", str(tmp_path / "out"), "--height", "48"]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["input"] == str(source) and metrics["frames"] == 3 and metrics["fps"] == pytest.approx(10.0)


def test_demo_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    out = tmp_path / "out"
    assert main(["demo", str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("latok: error:") and str(bad) in err
    assert not out.exists()


def test_demo_missing_weights_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LATOK_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("LATOK_CACHE_DIR", str(tmp_path))
    assert main(["demo", "-o", str(tmp_path / "out"), "--frames", "2", "--height", "32"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "taef2_encoder.pth" in err
    assert not (tmp_path / "out" / "reconstruction.mp4").exists()


def test_backends_lists_geometry_and_weights(capsys):
    assert main(["backends", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["taef2"]["latent_channels"] == 32 and rows["taef2"]["spatial_ratio"] == 8
    assert rows["ltx-video"]["latent_channels"] == 128 and rows["ltx-video"]["temporal_ratio"] == 8
    from latok.vae import vae_class

    for name, row in rows.items():  # what this machine has, whatever its hub cache holds
        assert row["weights_available"] is vae_class(name).weights_available()


def test_help_and_import_stay_light():
    code = "import sys, latok, latok.cli; latok.cli.build_parser(); print(sorted(m for m in ('torch', 'diffusers', 'lightning') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"
    assert subprocess.run([sys.executable, "-m", "latok.cli", "--help"], capture_output=True, cwd=ROOT).returncode == 0


def test_sample_clip_is_deterministic_and_has_all_three_motions():
    a, b = sample_frames(frames=4), sample_frames(frames=4)
    assert a.shape == (4, 240, 416, 3) and a.dtype.name == "uint8"
    assert (a == b).all()
    change = (a[1].astype(int) - a[0].astype(int)).__abs__().sum(-1) > 0
    assert change[:120, 208:].mean() > 0.5  # the panning quarter moves almost everywhere
    assert change[120:, 208:].mean() < 0.05  # the static background does not
    assert 0.0 < change[120:, :208].mean() < 0.5  # the disc moves through the lower left
