"""The HTML pages: latok eval's report.html and latok view's page, opened in a real headless Chromium
(tests/pagecheck.py), and what they must never do: run markup from their inputs, or leave a page behind a
bad input."""

from __future__ import annotations

import json
import os
import shutil
from html import unescape

import pytest
from conftest import BLACKSWAN, DATA, needs_data, needs_weights
from pagecheck import check_page, chromium_path

from latok.cli import main

XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def browser():
    """The system Chromium, or a skip; ``LATOK_REQUIRE_BROWSER=1`` (set by .ci/run) makes a missing one a failure."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        playwright = False
    else:
        playwright = True
    if chromium_path() is None or not playwright:
        if os.environ.get("LATOK_REQUIRE_BROWSER") == "1":
            pytest.fail("LATOK_REQUIRE_BROWSER=1, but chromium or playwright is missing (apt-get install chromium)")
        pytest.skip("no chromium (Debian: apt-get install chromium) or playwright")
    return chromium_path()


@pytest.fixture(scope="module")
def eval_folder(tmp_path_factory):
    """latok eval at two rates over two clips, one of them named like markup."""
    if not (DATA / "tokenbench-mini").is_dir():
        pytest.skip("shared tokenbench-mini not found")
    root = tmp_path_factory.mktemp("clips")
    source = DATA / "tokenbench-mini" / "robot_bridge_sweep.mp4"
    shutil.copy(source, root / "robot_bridge_sweep.mp4")
    shutil.copy(DATA / "tokenbench-mini" / "drive_udacity_solidwhiteright.mp4", root / f"{XSS}.mp4")
    out = tmp_path_factory.mktemp("eval")
    argv = ["eval", "--dataset", "folder", "--root", str(root), "--out", str(out), "--frames", "9", "--height", "96",
            "--taus", "default", "--target-usage", "0.4", "--fills", "hold,interp", "--no-lpips"]  # fmt: skip
    assert main(argv) == 0
    return out, argv


@needs_weights
def test_eval_report_opens_plays_syncs_and_sorts_in_chromium(browser, eval_folder, tmp_path):
    out, argv = eval_folder
    page = out / "report.html"
    html = page.read_text()
    assert XSS not in html and "&lt;img src=x onerror=alert(1)&gt;" in html  # the clip name is text, not markup
    seen = check_page(page, tmp_path / "screenshots", "eval")
    assert seen["videos"] == 2 * 3 and seen["synced_groups"] == 2 and seen["sorted_tables"] == 2
    assert all(path.stat().st_size > 10_000 for path in seen["screenshots"])
    assert seen["overflow_narrow"] <= 0  # at 420 px nothing sticks out sideways: wide tables scroll in their box
    videos = sorted((out / "videos").rglob("*.mp4"))
    assert len(videos) == 2 * (1 + 2 * 2 * 2)  # per clip: the original, and per rate and fill a reconstruction and an overlay
    for video in videos:  # the index (moov) before the frames (mdat): a browser plays while loading
        head = video.read_bytes()[:4096]
        assert 0 <= head.find(b"moov") < max(head.find(b"mdat"), 0) or b"mdat" not in head, video
    pages = page.stat().st_size
    assert pages < 300_000, f"report.html is {pages} bytes"


@needs_weights
def test_an_eval_folder_missing_a_video_still_renders_with_the_panel_marked(browser, eval_folder, tmp_path):
    out, argv = eval_folder
    copy = tmp_path / "eval"
    shutil.copytree(out, copy)
    missing = next((copy / "videos").glob("*robot*/usage=0.4.hold.mp4"))
    missing.unlink()
    assert main([*argv[:argv.index("--out") + 1], str(copy), *argv[argv.index("--out") + 2:]]) == 0  # nothing recomputed
    assert not missing.exists()
    html = (copy / "report.html").read_text()
    assert "video missing: " in html
    check_page(copy / "report.html", tmp_path / "screenshots", "eval-missing")  # still no console error, the rest plays


@needs_weights
@needs_data
def test_view_of_the_demo_file_and_of_a_file_with_its_source(browser, tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "demo"), "--frames", "9", "--height", "128"]) == 0
    page = tmp_path / "demo.html"
    assert main(["view", str(tmp_path / "demo" / "clip.latok"), "-o", str(page)]) == 0
    html = page.read_text()
    assert "Keep mask per latent frame" in html and html.count('alt="keep mask of latent frame') == 9
    seen = check_page(page, tmp_path / "screenshots", "view-demo")
    assert seen["videos"] == 0 and seen["plots_wide"] >= 2
    latok = tmp_path / "b.latok"
    assert main(["encode", str(BLACKSWAN), "-o", str(latok), "--frames", "9", "--height", "96"]) == 0
    page = tmp_path / "b.html"
    capsys.readouterr()
    assert main(["view", str(latok), "-o", str(page), "--source", str(BLACKSWAN), "--fill", "hold"]) == 0
    assert (tmp_path / "b_files" / "decoded.mp4").is_file() and (tmp_path / "b_files" / "source.mp4").is_file()
    html = page.read_text()
    assert "<line " in html  # block motion drawn as arrows
    seen = check_page(page, tmp_path / "screenshots", "view-source")
    assert seen["videos"] == 2 and seen["synced_groups"] == 1


@needs_weights
@needs_data
def test_view_refuses_bad_input_with_one_line_and_no_page(tmp_path, capsys):
    latok = tmp_path / "b.latok"
    assert main(["encode", str(BLACKSWAN), "-o", str(latok), "--frames", "3", "--height", "64"]) == 0
    damaged = tmp_path / "damaged.latok"
    damaged.write_bytes(latok.read_bytes()[:-40])
    other = DATA / "tokenbench-mini" / "robot_bridge_sweep.mp4"
    capsys.readouterr()
    cases = [
        ["view", str(damaged), "-o", str(tmp_path / "p.html")],
        ["view", str(tmp_path / "absent.latok"), "-o", str(tmp_path / "p.html")],
        ["view", str(latok), "-o", str(tmp_path / "p.pdf")],
        ["view", str(latok), "-o", str(tmp_path / "p.html"), "--source", str(other)],  # not the file's source
        ["view", str(latok), "-o", str(tmp_path / "p.html"), "--source", str(tmp_path / "absent.mp4")],
        ["view", str(latok), "-o", str(tmp_path / "p.html"), "--source", str(BLACKSWAN), "--weights", str(tmp_path / "none.pth")],  # missing weights
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("latok: error: ") and "\n" not in err and "Traceback" not in err, (argv, err)
        assert "cannot write" not in err, (argv, err)  # an input's fault is named as the input's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.latok", "damaged.latok"]  # no page, no p_files/


def test_page_data_cannot_close_its_script_or_attribute(tmp_path):
    """Names reach the page as text, inside attributes and inside the script's JSON: all escaped."""
    from latok.evaluation.pages import eval_page

    name = "</script><script>alert(1)</script>' onmouseover='alert(2)"
    clip = {"name": name, "tau": 0.1, "token_usage": 0.5, "psnr": 30.0, "ssim": 0.9, "lpips": None, "bpp": 0.1, "usage_per_frame": [1.0, 0.5]}
    results = {"backend": "taef2", "inpainter": None, "motion": "block", "device": "cpu", "protocol": {"frames": 2},
               "description": f"folder: 1 clips from {name}", "command": f"latok eval --root '{name}'", "settings_fingerprint": "x",
               "runs": [{"rate": r, "fill": "hold", "tau": 0.1, "target_usage": None, "summary": {**clip}, "clips": [clip]}
                        for r in ("tau=0.1", "usage=0.5")]}  # fmt: skip
    html = eval_page(results, tmp_path)
    assert "<script>alert" not in html and "onmouseover='alert" not in html and "</script><script>" not in html
    assert html.count("<script>") == 1
    runs = json.loads(unescape(html.split("data-runs='")[1].split("'")[0]))  # the attribute holds the runs, intact
    assert sorted(runs) == ["tau=0.1", "usage=0.5"] and runs["tau=0.1"]["hold"]["psnr"] == 30.0


def test_motion_arrows_and_keep_heatmap_follow_the_file():
    import numpy as np

    from latok.evaluation.pages import keep_heatmap, motion_arrows

    global_motion = np.array([[0.0, 0.0], [1.0, -2.0]], dtype=np.float32)  # (t, 2): dy, dx per latent frame
    frames = motion_arrows(global_motion, 8, 14, 3.0)
    assert frames[0] == [] and frames[1] == [{"x1": 7.0, "y1": 4.0, "x2": 1.0, "y2": 7.0}]
    block = np.zeros((2, 2, 2, 2), dtype=np.float32)  # (t, 2, gh, gw)
    block[1, 1, 0, 1] = 0.5  # frame 1, top-right block moves right
    assert motion_arrows(block, 8, 14, 3.0)[1] == [{"x1": 10.5, "y1": 2.0, "x2": 12.0, "y2": 2.0}]
    keep = np.ones((3, 2, 2), dtype=bool)
    keep[1:, 0, 0] = False
    uris = keep_heatmap(keep)
    assert len(uris) == 3 and all(u.startswith("data:image/png;base64,") for u in uris)
    from base64 import b64decode
    from io import BytesIO

    from PIL import Image

    pixels = [np.asarray(Image.open(BytesIO(b64decode(u.split(",")[1])))) for u in uris]
    assert (pixels[0] == pixels[0][0, 0]).all()  # all kept: one colour
    assert pixels[1][0, 0].tolist() != pixels[1][1, 1].tolist() and pixels[2][0, 0].sum() < pixels[1][0, 0].sum()  # older drops darker
