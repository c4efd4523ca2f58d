"""Evaluation datasets (DAVIS, TokenBench, folder) and `latok eval` on tiny fixtures made here."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import needs_weights
from PIL import Image

from latok.cli import main
from latok.errors import InvalidInputError, VideoNotFoundError
from latok.evaluation.datasets import ClipProtocol, davis, load_dataset, tokenbench, video_folder
from latok.io import write_video


def frames(count: int, height: int = 64, width: int = 96, seed: int = 0, moving: bool = True) -> np.ndarray:
    """``(T, H, W, 3)`` uint8: a smooth background with a square that moves (or not)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    background = np.stack([x * 255 / width, y * 255 / height, np.full_like(x, 128.0)], axis=-1)
    video = np.repeat(background[None], count, axis=0)
    for t in range(count):
        left = 10 + (6 * t if moving else 0)
        video[t, 20:40, left : left + 20] = rng.integers(0, 255, 3)
    return video.clip(0, 255).astype(np.uint8)


def make_davis(root, sequences=("alpha", "beta"), count: int = 6):
    (root / "ImageSets" / "2016").mkdir(parents=True)
    (root / "ImageSets" / "2016" / "val.txt").write_text("\n".join(sequences) + "\n")
    for index, name in enumerate(sequences):
        folder = root / "JPEGImages" / "480p" / name
        folder.mkdir(parents=True)
        for t, image in enumerate(frames(count, seed=index)):
            Image.fromarray(image).save(folder / f"{t:05d}.jpg", quality=95)
    return root


def test_davis_reads_the_official_layout(tmp_path):
    root = make_davis(tmp_path / "DAVIS")
    clips = davis(root, protocol=ClipProtocol(frames=4, height=None))
    assert [c.name for c in clips] == ["davis/alpha", "davis/beta"]
    clip = clips[1].load()
    assert clip.video.shape == (1, 3, 4, 64, 96) and clip.frames == 4
    assert davis(root)[0].protocol == ClipProtocol(frames=17, start=0, stride=1, height=240)  # the protocol
    (root / "ImageSets" / "2016" / "val.txt").write_text("alpha\ngamma\n")
    with pytest.raises(VideoNotFoundError, match="1 listed sequence.*missing, e.g. gamma"):
        davis(root)
    with pytest.raises(VideoNotFoundError, match="not a DAVIS root"):
        davis(root, split="train")


def test_davis_protocol_resizes_to_240p_with_width_a_multiple_of_16(tmp_path):
    root = make_davis(tmp_path / "DAVIS", sequences=("wide",), count=3)
    for t in range(3):  # replace with 854x480 frames, the DAVIS 480p size
        Image.fromarray(np.full((480, 854, 3), 40 * t, np.uint8)).save(root / "JPEGImages/480p/wide" / f"{t:05d}.jpg")
    clip = davis(root)[0].load()
    assert clip.video.shape == (1, 3, 3, 240, 416)


def test_tokenbench_finds_mp4s_recursively(tmp_path):
    write_video(tmp_path / "tb" / "robot" / "a.mp4", frames(5), fps=10)
    write_video(tmp_path / "tb" / "web_b.mp4", frames(5, seed=1), fps=10)
    (tmp_path / "tb" / "notes.txt").write_text("not a video")
    clips = tokenbench(tmp_path / "tb", ClipProtocol(frames=3, height=None))
    assert [c.name for c in clips] == ["tokenbench/robot/a", "tokenbench/web_b"]
    assert clips[0].load().video.shape == (1, 3, 3, 64, 96)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoNotFoundError, match="no .mp4 files"):
        tokenbench(tmp_path / "empty")
    with pytest.raises(VideoNotFoundError, match="no such directory"):
        tokenbench(tmp_path / "absent")


def test_folder_takes_videos_and_frame_folders(tmp_path):
    write_video(tmp_path / "mine" / "one.mp4", frames(4), fps=10)
    write_video(tmp_path / "mine" / "two", frames(4, seed=2))  # a PNG-frame folder
    (tmp_path / "mine" / "readme.md").write_text("#")
    clips = video_folder(tmp_path / "mine")
    assert [c.name for c in clips] == ["mine/one", "mine/two"]
    assert clips[1].load().frames == 4
    (tmp_path / "nothing").mkdir()
    with pytest.raises(VideoNotFoundError, match="no videos"):
        video_folder(tmp_path / "nothing")
    with pytest.raises(InvalidInputError, match="unknown dataset"):
        load_dataset("kinetics", tmp_path)


@needs_weights
def test_eval_writes_results_reports_and_plots_and_resumes(tmp_path, capsys):
    root = tmp_path / "clips"
    write_video(root / "moving.mp4", frames(5, moving=True), fps=10)
    write_video(root / "still.mp4", frames(5, seed=3, moving=False), fps=10)
    out = tmp_path / "eval"
    argv = ["eval", "--dataset", "folder", "--root", str(root), "--out", str(out), "--frames", "5", "--height", "0",
            "--taus", "0,default", "--target-usage", "0.5", "--fills", "zero,hold"]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["clips_computed"] == 2
    runs = {(r["rate"], r["fill"]): r for r in results["runs"]}
    assert set(runs) == {(rate, fill) for rate in ("tau=0", "tau=default", "usage=0.5") for fill in ("zero", "hold")}
    for run in results["runs"]:
        assert set(run["summary"]) == {"psnr", "ssim", "lpips", "token_usage", "bpp"}
        assert all(v is not None for v in run["summary"].values())
        for clip in run["clips"]:
            assert {"name", "psnr", "ssim", "lpips", "token_usage", "bpp", "usage_per_frame"} <= set(clip)
            assert len(clip["usage_per_frame"]) == 5 and clip["usage_per_frame"][0] == 1.0
    full, half = runs[("tau=0", "hold")]["summary"], runs[("usage=0.5", "hold")]["summary"]
    assert full["token_usage"] == 1.0 and half["token_usage"] == pytest.approx(0.5, abs=0.02)
    assert runs[("tau=0", "zero")]["summary"] == full  # nothing dropped: every fill is the same
    assert half["bpp"] < full["bpp"] and half["lpips"] > full["lpips"]  # coded values: a kept token costs more at half usage
    assert results["value_step"] == 0.13
    assert runs[("usage=0.5", "hold")]["summary"]["psnr"] > runs[("usage=0.5", "zero")]["summary"]["psnr"]
    still = next(c for c in runs[("tau=default", "hold")]["clips"] if c["name"] == "clips/still")
    moving = next(c for c in runs[("tau=default", "hold")]["clips"] if c["name"] == "clips/moving")
    assert still["token_usage"] < moving["token_usage"]  # compression follows the content
    with open(out / "results.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 6 * 2
    assert "| usage=0.5 | per clip | hold |" in (out / "report.md").read_text()
    assert [line for line in (out / "report.md").read_text().splitlines() if line.startswith("| usage=0.5 | zero |")][0].count("worse on 2") >= 2
    for plot in ("rd_curve.png", "usage_over_time.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    before = (out / "clips" / "clips__moving.json").stat().st_mtime_ns
    assert main(argv) == 0  # resumed: nothing recomputed, same numbers
    again = json.loads((out / "results.json").read_text())
    assert again["clips_computed"] == 0 and again["runs"] == results["runs"]
    assert (out / "clips" / "clips__moving.json").stat().st_mtime_ns == before
    assert main([*argv[:-1], "hold,interp"]) == 0  # a new fill: only its runs are computed
    extended = json.loads((out / "results.json").read_text())
    assert extended["clips_computed"] == 2
    hold_runs = [r for r in extended["runs"] if r["fill"] == "hold"]
    assert hold_runs == [r for r in results["runs"] if r["fill"] == "hold"]
    assert main([*argv[:7], "--frames", "4", *argv[9:]]) == 0  # another protocol: start over
    assert all(len(c["usage_per_frame"]) == 4 for c in json.loads((out / "results.json").read_text())["runs"][0]["clips"])


@needs_weights
def test_eval_with_the_pixel_guard_is_never_worse_than_hold(tmp_path):
    root, out = tmp_path / "clips", tmp_path / "eval"
    write_video(root / "moving.mp4", frames(5, moving=True), fps=10)
    argv = ["eval", "--dataset", "folder", "--root", str(root), "--out", str(out), "--frames", "5", "--height", "0",
            "--taus", "default", "--target-usage", "0.5", "--fills", "hold,lit", "--no-lpips"]  # fmt: skip

    def lit_runs() -> list[dict]:
        return [run for run in json.loads((out / "clips" / "clips__moving.json").read_text())["runs"].values() if run["fill"] == "lit"]

    assert main(argv) == 0
    assert {run["lit_guard"] for run in lit_runs()} == {"latent"}
    assert main([*argv, "--pixel-guard"]) == 0  # another guard: the lit runs are recomputed
    results = json.loads((out / "results.json").read_text())
    assert results["clips_computed"] == 1 and results["lit_guard"] == "pixel" and "(pixel lit guard)" in (out / "report.md").read_text()
    assert {run["lit_guard"] for run in lit_runs()} == {"pixel"}
    for rate in ("tau=default", "usage=0.5"):
        psnr = {run["fill"]: run["clips"][0]["psnr"] for run in results["runs"] if run["rate"] == rate}
        assert psnr["lit"] >= psnr["hold"]
    assert main([*argv[:-2], "hold", "--no-lpips", "--pixel-guard"]) == 2  # no lit run to guard


def test_fills_against_hold_count_the_clips_where_they_lose():
    from latok.evaluation.evaluate import against_hold

    def run(fill, psnr, lpips):
        return {"fill": fill, "clips": [{"psnr": p, "ssim": 0.9, "lpips": q} for p, q in zip(psnr, lpips)]}

    by_rate = {"usage=0.5": [run("hold", [20.0, 30.0], [0.2, 0.1]), run("lit", [21.0, 29.5], [0.25, 0.05])]}
    row = against_hold(by_rate)[-1]
    assert row.startswith("| usage=0.5 | lit | +0.2500; worse on 1, at worst by 0.5000 | +0.0000; worse on 0")
    assert row.endswith("| +0.0000; worse on 1, at worst by 0.0500 |")  # LPIPS: lower is better
    assert against_hold({"tau=0": [run("lit", [20.0], [0.1])]}) == []  # nothing to compare with


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--fills", "hold,magic"], "unknown fill magic"),
        (["--taus", "0,big"], "'big' is not a number"),
        (["--target-usage", "1.5"], "must be in (0, 1]"),
        (["--root", "/nonexistent/davis"], "not a DAVIS root"),
        (["--compare-to", "/nonexistent"], "compares --target-usage curves"),
        (["--target-usage", "0.3,0.6", "--compare-to", "/nonexistent"], "is not a latok eval results.json"),
    ],
)
def test_eval_bad_arguments_are_one_line_errors(tmp_path, capsys, extra, message):
    argv = ["eval", "--dataset", "davis", "--root", str(tmp_path), "--out", str(tmp_path / "out"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("latok: error:") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "results.json").exists()


@needs_weights  # the tokenizer loads before the first clip is read
@pytest.mark.parametrize("command", ["eval", "bench"])
def test_a_corrupt_clip_or_missing_lpips_weights_is_one_line_and_no_results(tmp_path, capsys, monkeypatch, command):
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    out = tmp_path / "out"
    argv = [command, "--dataset", "folder", "--root", str(tmp_path / "clips"), "--out", str(out)]
    assert main([*argv, "--no-lpips"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("latok: error:") and "broken.mp4" in err[-1] and "Traceback" not in "\n".join(err)
    monkeypatch.setenv("LATOK_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    assert main(argv) == 2
    assert "LPIPS weights" in capsys.readouterr().err
    assert not (out / "results.json").exists() and not (out / "bench.json").exists()


def test_mean_psnr_difference_is_the_mean_gap_over_the_shared_usage_range():
    from latok.evaluation.rd import mean_psnr_difference

    lower = [(0.3, 20.0), (0.5, 22.0), (0.9, 26.0)]
    higher = [(u, p + 1.5) for u, p in lower]
    assert mean_psnr_difference(higher, lower) == pytest.approx(1.5)
    assert mean_psnr_difference(lower, higher) == pytest.approx(-1.5)
    assert mean_psnr_difference(list(reversed(higher)), lower) == pytest.approx(1.5)  # point order does not matter
    # only the overlap counts: a curve that is better only where the other has no points gains nothing there
    assert mean_psnr_difference([(0.5, 22.0), (0.9, 26.0), (0.95, 40.0)], lower) == pytest.approx(0.0, abs=1e-9)
    assert mean_psnr_difference([(0.1, 30.0), (0.2, 31.0)], lower) is None
    with pytest.raises(InvalidInputError, match="two points"):
        mean_psnr_difference([(0.5, 22.0)], lower)


@needs_weights
def test_eval_compares_curves_with_and_without_motion(tmp_path, capsys):
    """Two evals of a pan, without and with motion; the second writes the BD-style comparison, and the
    motion-compensated curve is above the plain one on a pan."""
    root = tmp_path / "clips"
    write_video(root / "pan.mp4", panned_frames(6), fps=10)
    common = ["eval", "--dataset", "folder", "--root", str(root), "--frames", "6", "--height", "0", "--taus", "0",
              "--target-usage", "0.4,0.7", "--fills", "hold", "--no-lpips"]  # fmt: skip
    assert main([*common, "--out", str(tmp_path / "plain"), "--motion", "none"]) == 0
    assert main([*common, "--out", str(tmp_path / "moving"), "--motion", "global", "--compare-to", str(tmp_path / "plain")]) == 0
    comparison = json.loads((tmp_path / "moving" / "comparison.json").read_text())
    row = comparison["fills"]["hold"]
    assert set(row["clips"]) == {"clips/pan"} and row["delta_psnr_db"] == pytest.approx(row["clips"]["clips/pan"])
    assert row["delta_psnr_db"] > 1.0 and row["clips_worse"] == 0
    assert "| hold |" in (tmp_path / "moving" / "comparison.md").read_text()
    (tmp_path / "flat").mkdir()  # a baseline without curves is refused before any work
    (tmp_path / "flat" / "results.json").write_text(json.dumps({"runs": [{"fill": "hold", "summary": {}, "target_usage": None}]}))
    assert main([*common, "--out", str(tmp_path / "never"), "--compare-to", str(tmp_path / "flat")]) == 2
    assert not (tmp_path / "never").exists()


def panned_frames(count: int) -> np.ndarray:
    """``(T, H, W, 3)`` uint8: a textured picture panning 8 pixels (one taef2 latent pixel) a frame."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, size=(12, 24, 3)).astype(np.uint8)
    picture = np.asarray(Image.fromarray(coarse).resize((384, 192), Image.BICUBIC))
    return np.stack([picture[32:160, 16 + 8 * t : 208 + 8 * t] for t in range(count)])
