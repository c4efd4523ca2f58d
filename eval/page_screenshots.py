"""What do the pages show?  The two HTML pages made the way a user makes them, checked in headless Chromium
(tests/pagecheck.py: no console error, videos ready and playing, seeking synced, tables sorting, plots sized)
at 1280x800 and 420x800, with screenshots for eval/README.md.

    1. `latok eval` on tokenbench-mini (12 clips, 17 frames, 240p) at two rates (the default, usage 0.5), the
       default decode (fill lit), no LPIPS: OUT/eval/report.html
    2. `latok demo` (the README's demo), then `latok view` of its clip.latok: OUT/demo.html
    3. `latok encode` of tokenbench-mini's robot_bridge_sweep, then `latok view --source`: OUT/robot.html

Usage:
    python eval/page_screenshots.py [--out data/pages]
writes eval/results/page_screenshots.{json,md} and eval/results/pages/*.jpg (JPEG, the top of each page)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from harness import DATA, RESULTS, ROOT, write_results

sys.path.insert(0, str(ROOT / "tests"))
from pagecheck import check_page  # noqa: E402

LATOK = str(Path(sys.executable).with_name("latok"))
os.environ.setdefault("LATOK_WEIGHTS_DIR", str(ROOT.parent / "shared" / "weights"))
SHOT_HEIGHT = {"wide": 1800, "narrow": 2400}  # the top of a full-page screenshot, in pixels


def run(*argv: str) -> float:
    started = time.perf_counter()
    subprocess.run([LATOK, *argv], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "data" / "pages"))
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    seconds = {
        "eval": run("eval", "--dataset", "tokenbench", "--root", str(DATA / "tokenbench-mini"), "--out", str(out / "eval"),
                    "--taus", "default", "--target-usage", "0.5", "--fills", "lit", "--no-lpips"),  # fmt: skip
        "demo": run("demo", "-o", str(out / "demo")),
    }
    seconds["view demo"] = run("view", str(out / "demo" / "clip.latok"), "-o", str(out / "demo.html"))
    robot = DATA / "tokenbench-mini" / "robot_bridge_sweep.mp4"
    run("encode", str(robot), "-o", str(out / "robot.latok"))
    seconds["view --source"] = run("view", str(out / "robot.latok"), "-o", str(out / "robot.html"), "--source", str(robot))
    pages = {"eval": out / "eval" / "report.html", "demo": out / "demo.html", "robot": out / "robot.html"}
    shots = RESULTS / "pages"
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    checks = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, page in pages.items():
            started = time.perf_counter()
            seen = check_page(page, Path(tmp), label)
            seen["check_seconds"] = time.perf_counter() - started
            for path in seen.pop("screenshots"):
                viewport = path.stem.split("-")[-1]
                image = Image.open(path).convert("RGB")
                image.crop((0, 0, image.width, min(image.height, SHOT_HEIGHT[viewport]))).save(shots / f"{path.stem}.jpg", quality=70)
            videos = [p for p in page.parent.rglob("*.mp4") if label == "eval" or p.parent.name == f"{page.stem}_files"]
            seen.update(page_bytes=page.stat().st_size, videos_bytes=sum(p.stat().st_size for p in videos), video_files=len(videos))
            checks[label] = seen
    rows = [f"| {label} | `{pages[label].relative_to(out)}` | {c['page_bytes'] / 1e3:.0f} kB | {c['video_files']} ({c['videos_bytes'] / 1e6:.1f} MB) | "
            f"{c['videos']} | {c['synced_groups']} | {c['sorted_tables']} | {c['plots_wide']} | {c['check_seconds']:.1f} s |"
            for label, c in checks.items()]  # fmt: skip
    markdown = "\n".join([
        "# The pages in a browser", "",
        f"`python eval/page_screenshots.py` (Chromium {chromium_version()}, headless, Playwright); every check passed at 1280×800 "
        "and 420×800. Seconds to make each: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) + ".", "",
        "| page | file | page size | videos | videos checked playing | synced groups | sorted tables | plots | check |",
        "|---|---|---|---|---|---|---|---|---|", *rows, "",
        "Screenshots (the top of each page): " + ", ".join(f"[{p.stem}](pages/{p.name})" for p in sorted(shots.glob("*.jpg"))),
    ])  # fmt: skip
    write_results("page_screenshots", {"seconds": seconds, "pages": {k: {**v} for k, v in checks.items()}}, markdown)


def chromium_version() -> str:
    from pagecheck import chromium_path

    return subprocess.run([chromium_path(), "--version"], capture_output=True, text=True).stdout.strip().split(" ")[1]


if __name__ == "__main__":
    main()
