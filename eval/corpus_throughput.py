"""How fast does a corpus encode, against a plain loop of `latok encode` and against `latok cache-latents`?

The same clips (the first N of eval/splits/pool_val.txt; timing only, nothing is chosen here), the same
options (taef2, 17 frames at 240p, the default codec settings), one after another on this machine:

- ``corpus``: ``latok corpus encode LIST --out DIR --workers 2`` (embedded local Ray);
- ``loop``: one ``latok encode CLIP -o OUT`` process per clip, one after another;
- ``cache``: ``latok cache-latents --inputs CLIP... --out DIR`` (one process, latents only, no codec).

Each is timed from launch to exit; peak memory is the largest sum of resident memory over the process's
session (the driver, Ray's processes and workers), sampled every 0.2 s.

    python eval/corpus_throughput.py [--clips 8]    # -> eval/results/corpus_throughput.{json,md}
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import ROOT, clip_set, write_results

LATOK = [sys.executable, "-m", "latok.cli"]
OPTIONS = ["--frames", "17", "--height", "240"]


def session_rss(session: int) -> int:
    """Resident bytes of every process in ``session``."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            if int(fields[3]) != session:  # field 6 of stat: the session id
                continue
            with open(f"/proc/{entry}/status") as handle:
                total += next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmRSS:"))
        except (OSError, StopIteration, IndexError, ValueError):
            continue
    return total


def measured(argv: list[str]) -> tuple[float, int]:
    """Wall seconds and peak session memory of one command (which must succeed)."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    peak = 0
    while process.poll() is None:
        peak = max(peak, session_rss(process.pid))
        time.sleep(0.2)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:6])}... failed: {process.stderr.read().decode()[-500:]}")
    return time.perf_counter() - start, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8)
    args = parser.parse_args()
    os.environ.setdefault("LATOK_WEIGHTS_DIR", str(ROOT.parent / "shared" / "weights"))
    clips = [str(c.path) for c in clip_set("pool_val")[: args.clips]]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "clips.txt"
        listing.write_text("\n".join(clips) + "\n")
        rows["corpus"] = measured([*LATOK, "corpus", "encode", str(listing), "--out", f"{tmp}/corpus", "--workers", "2", "--no-progress", *OPTIONS])
        start, peak = time.perf_counter(), 0
        for index, clip in enumerate(clips):
            _, clip_peak = measured([*LATOK, "encode", clip, "-o", f"{tmp}/loop{index}.latok", *OPTIONS])
            peak = max(peak, clip_peak)
        rows["loop"] = (time.perf_counter() - start, peak)
        rows["cache"] = measured([*LATOK, "cache-latents", "--inputs", *clips, "--out", f"{tmp}/cache", *OPTIONS])
    table = {name: {"seconds": s, "clips_per_s": len(clips) / s, "peak_mib": p / 2**20} for name, (s, p) in rows.items()}
    overhead = table["corpus"]["seconds"] / table["loop"]["seconds"] - 1
    result = {
        "command": "python eval/corpus_throughput.py" + (f" --clips {args.clips}" if args.clips != 8 else ""),
        "machine": f"{os.cpu_count()} cores", "clips": len(clips), "options": "taef2, 17 frames at 240p, default codec settings",
        "runs": table, "corpus_vs_loop": overhead,
    }  # fmt: skip
    lines = [
        "# Corpus encode against a loop of `latok encode` and against `cache-latents`", "",
        f"`{result['command']}` on {result['machine']}; {len(clips)} clips of eval/splits/pool_val.txt, {result['options']}; "
        "one run each, back to back; peak = largest resident memory summed over the command's processes.", "",
        "| command | seconds | clips/s | peak MiB |", "|---|---|---|---|",
    ]  # fmt: skip
    labels = {"corpus": "`latok corpus encode --workers 2` (local Ray)", "loop": "a loop of `latok encode`", "cache": "`latok cache-latents` (latents only)"}
    lines += [f"| {labels[name]} | {row['seconds']:.1f} | {row['clips_per_s']:.3f} | {row['peak_mib']:.0f} |" for name, row in table.items()]
    lines += ["", f"Corpus encode against the loop: {overhead:+.1%} wall time (target: Ray's overhead ≤ +10 %)."]
    write_results("corpus_throughput", result, "\n".join(lines))


if __name__ == "__main__":
    main()
