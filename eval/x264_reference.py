"""x264's bits per pixel at latok's PSNR, per clip (the reference point for the value coding; measured, never assumed).

Every clip of the 14 shared DAVIS sequences and tokenbench-mini, under latok's protocol (240p, 17 frames from
frame 0), is encoded with PyAV's libx264 (preset medium, yuv420p, the settings latok.io.write_video uses, with the macroblock-tree rate control it turns off for reproducible files) at
CRFs from 14 to 46, decoded and scored with latok's PSNR (one MSE over the clip, 8-bit levels). Each clip's
x264 bpp at latok's PSNR is interpolated linearly in log bpp between the CRFs that bracket it; latok's PSNR and
bpp come from an eval's results.json (default: the default decode at the default tau,
eval/results/shipped_{set}_block, eval/run_shipped_defaults.sh), so the ratio is latok's file size over x264's at the
same quality, today's fp16 values included.

Usage:
    python eval/x264_reference.py [--rate tau=default]
writes eval/results/x264_reference.{json,md}
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
from pathlib import Path

import torch

from latok.evaluation.metrics import psnr
from latok.io import load_clip, write_video

from harness import RESULTS, clip_set

CRFS = (14, 18, 22, 26, 30, 34, 38, 42, 46)
SETS = ("davis", "tokenbench")


def x264_curve(video: torch.Tensor, fps: float) -> list[tuple[float, float]]:
    """``(bpp, PSNR)`` of ``video`` encoded at every CRF."""
    frames, height, width = video.shape[-3:]
    points = []
    with tempfile.TemporaryDirectory() as tmp:
        for crf in CRFS:
            path = write_video(Path(tmp) / f"crf{crf}.mp4", video, fps=fps, crf=crf, reproducible=False)  # x264 at its best
            bpp = path.stat().st_size * 8 / (frames * height * width)
            points.append((bpp, psnr(load_clip(path, height=None).video, video)))
    return points


def bpp_at(points: list[tuple[float, float]], target: float) -> tuple[float | None, str]:
    """x264's bpp at PSNR ``target`` (linear in log bpp between bracketing CRFs), or None and why."""
    ordered = sorted(points, key=lambda p: p[1])
    if target < ordered[0][1]:
        return None, f"below x264's lowest PSNR ({ordered[0][1]:.2f} dB at {ordered[0][0]:.3f} bpp)"
    if target > ordered[-1][1]:
        return None, f"above x264's highest PSNR ({ordered[-1][1]:.2f} dB)"
    for (b0, p0), (b1, p1) in zip(ordered, ordered[1:]):
        if p0 <= target <= p1:
            weight = 0.0 if p1 == p0 else (target - p0) / (p1 - p0)
            return math.exp(math.log(b0) + weight * (math.log(b1) - math.log(b0))), ""
    return None, "not bracketed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", default="tau=default", help="latok's run in the results (default: %(default)s)")
    parser.add_argument("--results", default="shipped_{set}_block", help="eval folder under eval/results, {set} = davis|tokenbench")
    args = parser.parse_args()
    rows = []
    for name in SETS:
        results = json.loads((RESULTS / args.results.format(set=name) / "results.json").read_text())
        run = next(r for r in results["runs"] if r["rate"] == args.rate and r["fill"] == "lit")
        latok = {clip["name"]: clip for clip in run["clips"]}
        for clip in clip_set(name):
            loaded = clip.load()
            points = x264_curve(loaded.video, loaded.fps)
            ours = latok[clip.name]
            x264, why = bpp_at(points, ours["psnr"])
            rows.append({"set": name, "clip": clip.name, "latok_psnr": ours["psnr"], "latok_bpp": ours["bpp"], "latok_usage": ours["token_usage"],
                         "x264_bpp": x264, "ratio": None if x264 is None else ours["bpp"] / x264, "note": why, "x264_curve": points})  # fmt: skip
            print(f"{clip.name}: latok {ours['bpp']:.3f} bpp at {ours['psnr']:.2f} dB; x264 {x264 if x264 is None else round(x264, 4)} {why}")
    report = {
        "command": "python eval/x264_reference.py" + ("" if args.rate == "tau=default" else f" --rate {args.rate}"),
        "device": f"cpu, {os.cpu_count()} cores",
        "setting": f"240p, 17 frames from frame 0; x264 preset medium, yuv420p, CRF {CRFS[0]}-{CRFS[-1]}; latok: {args.results} {args.rate}, fill lit",
        "rows": rows,
    }
    (RESULTS / "x264_reference.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = ["# x264's bpp at latok's PSNR", "", f"`{report['command']}`; {report['setting']}.", "",
             "| clip | latok usage | latok PSNR | latok bpp | x264 bpp at that PSNR | latok / x264 |", "|---|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        x264 = f"{row['x264_bpp']:.4f}" if row["x264_bpp"] is not None else row["note"]
        ratio = f"{row['ratio']:.0f}×" if row["ratio"] is not None else "–"
        lines.append(f"| {row['clip']} | {row['latok_usage']:.1%} | {row['latok_psnr']:.2f} | {row['latok_bpp']:.3f} | {x264} | {ratio} |")
    for name in SETS:
        ratios = [r["ratio"] for r in rows if r["set"] == name and r["ratio"] is not None]
        if ratios:
            lines.append(f"| **{name}: geometric mean** | | | | | **{math.exp(statistics.mean(math.log(r) for r in ratios)):.0f}×** |")
    (RESULTS / "x264_reference.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
