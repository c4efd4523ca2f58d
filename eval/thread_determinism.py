"""How far the ``.latok`` bytes depend on the CPU thread count.

Encodes the same clips with ``latok encode`` once per thread count, each in its own process
(``OMP_NUM_THREADS`` and ``torch.set_num_threads`` both follow it). It reports whether the
files are byte-identical and, if not, how many keep bits and fp16 values differ and by how much.

Usage:
    python eval/thread_determinism.py [--threads 1,2] [--frames 9]
writes eval/results/thread_determinism.json
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from latok.codec.format.reader import load_latok

from harness import ROOT, write_results

DATA = ROOT.parent / "shared" / "data"
CLIPS = [DATA / "davis" / "JPEGImages" / "480p" / "blackswan", DATA / "clips" / "surveillance_vtest.avi"]


def encode(clip: Path, out: Path, threads: int, frames: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    code = f"import sys, torch; torch.set_num_threads({threads}); from latok.cli import main; sys.exit(main(sys.argv[1:]))"
    argv = [sys.executable, "-c", code, "encode", str(clip), "-o", str(out), "--frames", str(frames), "--no-lit-guard"]
    subprocess.run(argv, env=env, check=True, capture_output=True)


def compare(a: Path, b: Path) -> dict:
    first, second = load_latok(a), load_latok(b)
    same_keep = torch.equal(first.keep, second.keep)
    result = {"bytes_identical": a.read_bytes() == b.read_bytes(), "keep_identical": same_keep, "values": first.values.numel()}
    if same_keep:
        ulps = (first.values.view(torch.int16).int() - second.values.view(torch.int16).int()).abs()
        difference = (first.values.float() - second.values.float()).abs()
        result.update(values_differing=int((ulps > 0).sum()), max_abs_difference=float(difference.max()),
                      max_relative_difference=float((difference / first.values.float().abs().clamp_min(1e-3)).max()),
                      value_std=float(first.values.float().std()))  # fmt: skip
    else:
        result["keep_bits_differing"] = int((first.keep != second.keep).sum())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--frames", type=int, default=9)
    args = parser.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for clip in CLIPS:
            paths = [Path(tmp) / f"{clip.stem}-{n}.latok" for n in counts]
            for n, path in zip(counts, paths):
                encode(clip, path, n, args.frames)
            for n, path in zip(counts[1:], paths[1:]):
                rows.append({"clip": clip.name, "threads": [counts[0], n], **compare(paths[0], path)})
    report = {
        "command": f"python eval/thread_determinism.py --threads {args.threads} --frames {args.frames}",
        "device": f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), torch {torch.__version__}",
        "setting": f"taef2, 240p, {args.frames} frames, default tau, no lit guard",
        "rows": rows,
    }
    write_results("thread_determinism", report)


if __name__ == "__main__":
    main()
