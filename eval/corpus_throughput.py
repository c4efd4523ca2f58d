"""How fast does a corpus encode, against a plain loop of `latok encode` and against `latok cache-latents`?

The same clips (the first N of eval/splits/pool_val.txt; timing only, nothing is chosen here), the same
options (taef2, 17 frames at 240p, the default codec settings), one after another on this machine:

- ``corpus``: ``latok corpus encode LIST --out DIR --workers 2`` (embedded local Ray);
- ``loop``: one ``latok encode CLIP -o OUT`` process per clip, one after another;
- ``cache``: ``latok cache-latents --inputs CLIP... --out DIR`` (one process, latents only, no codec).

Each is timed from launch to exit; peak memory is the largest sum over the command's session (the driver,
Ray's processes and workers) of PSS and of RSS, sampled every 0.2 s.

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


def session_memory(session: int) -> dict[str, tuple[int, int]]:
    """``{process: (resident bytes, proportional bytes)}`` of every process in ``session``.  Proportional set
    size (PSS) splits each shared page among the processes mapping it, so its sum is the memory the command
    really holds; summed RSS counts torch's libraries and Ray's object store once per process."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            if int(fields[3]) != session:  # field 6 of stat: the session id
                continue
            with open(f"/proc/{entry}/cmdline") as handle:
                name = _role(handle.read().replace("\0", " "))
            values = {}
            for path in (f"/proc/{entry}/status", f"/proc/{entry}/smaps_rollup"):
                with open(path) as handle:
                    values.update(line.split()[:2] for line in handle if line.startswith(("VmRSS:", "Pss:")))
            rss, pss = int(values["VmRSS:"]) * 1024, int(values["Pss:"]) * 1024
            old = found.get(name, (0, 0))
            found[name] = (old[0] + rss, old[1] + pss)
        except (OSError, IndexError, ValueError, KeyError):
            continue
    return found


def _role(command: str) -> str:
    """A process's part: the latok command, an encoder actor, a read task, or Ray's own machinery."""
    if "latok.cli" in command:
        return "latok (driver)"
    if "Encoder" in command:
        return "encoder actors"
    if "ray::IDLE" in command or "_read_stage" in command or "ReadStage" in command or "Map(_read" in command:
        return "read tasks"
    return "Ray's own processes"


def measured(argv: list[str]) -> tuple[float, int, int, dict]:
    """Wall seconds, peak summed RSS, peak summed PSS and the PSS by part at that peak, of one command (which must succeed)."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    peak_rss, peak_pss, parts = 0, 0, {}
    while process.poll() is None:
        found = session_memory(process.pid)
        peak_rss = max(peak_rss, sum(r for r, _ in found.values()))
        if sum(p for _, p in found.values()) > peak_pss:
            peak_pss, parts = sum(p for _, p in found.values()), {name: p for name, (_, p) in found.items()}
        time.sleep(0.2)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:6])}... failed: {process.stderr.read().decode()[-500:]}")
    return time.perf_counter() - start, peak_rss, peak_pss, parts


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
        start, loop = time.perf_counter(), (0, 0, 0, {})
        for index, clip in enumerate(clips):
            one = measured([*LATOK, "encode", clip, "-o", f"{tmp}/loop{index}.latok", *OPTIONS])
            loop = max(loop, one, key=lambda run: run[2])
        rows["loop"] = (time.perf_counter() - start, *loop[1:])
        rows["cache"] = measured([*LATOK, "cache-latents", "--inputs", *clips, "--out", f"{tmp}/cache", *OPTIONS])
    mib = 2**20
    table = {name: {"seconds": s, "clips_per_s": len(clips) / s, "peak_rss_mib": r / mib, "peak_pss_mib": p / mib,
                    "pss_by_part_mib": {k: v / mib for k, v in parts.items()}} for name, (s, r, p, parts) in rows.items()}  # fmt: skip
    overhead = table["corpus"]["seconds"] / table["loop"]["seconds"] - 1
    result = {
        "command": "python eval/corpus_throughput.py" + (f" --clips {args.clips}" if args.clips != 8 else ""),
        "machine": f"{os.cpu_count()} cores", "clips": len(clips), "options": "taef2, 17 frames at 240p, default codec settings",
        "runs": table, "corpus_vs_loop": overhead,
    }  # fmt: skip
    lines = [
        "# Corpus encode against a loop of `latok encode` and against `cache-latents`", "",
        f"`{result['command']}` on {result['machine']}; {len(clips)} clips of eval/splits/pool_val.txt, {result['options']}; "
        "one run each, back to back. Peak memory summed over the command's processes: PSS (each shared page split "
        "among the processes that map it: the memory really held) and RSS (shared libraries counted once per process).", "",
        "| command | seconds | clips/s | peak PSS MiB | peak RSS MiB |", "|---|---|---|---|---|",
    ]  # fmt: skip
    labels = {"corpus": "`latok corpus encode --workers 2` (local Ray)", "loop": "a loop of `latok encode`", "cache": "`latok cache-latents` (latents only)"}
    lines += [f"| {labels[name]} | {row['seconds']:.1f} | {row['clips_per_s']:.3f} | {row['peak_pss_mib']:.0f} | {row['peak_rss_mib']:.0f} |"
              for name, row in table.items()]  # fmt: skip
    lines += ["", f"Corpus encode against the loop: {overhead:+.1%} wall time (target: Ray's overhead ≤ +10 %).", "",
              "Where the corpus encode's memory goes, at its peak (PSS, MiB): " + ", ".join(
                  f"{name} {value:.0f}" for name, value in sorted(table["corpus"]["pss_by_part_mib"].items(), key=lambda kv: -kv[1])) + "."]  # fmt: skip
    write_results("corpus_throughput", result, "\n".join(lines))


if __name__ == "__main__":
    main()
