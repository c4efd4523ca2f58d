"""What do small hostile `.latok` files cost?  Time and peak memory of `latok info`, `info --verify`, `decode` and
`export` on the crafted files of the hardening tests, and a crafted file against a real file of the same size.

Each command runs in its own process (``tests/fuzz_latok.py latok ...``), which reports its own peak RSS
(VmHWM); the seconds are the process's wall time, Python start and imports included (about 1.4 s here).
``decode``/``export`` run with the default memory limit (half this machine's RAM).

    LATOK_WEIGHTS_DIR=../shared/weights python eval/crafted_costs.py   # -> eval/results/crafted_costs.{json,md}
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import ROOT, davis_clip, write_results

FUZZER = ROOT / "tests" / "fuzz_latok.py"
DAVIS = davis_clip("blackswan").path
FILES = ("v3_context_mask_frames", "v3_many_zero_chunks", "tall_valid", "latent_larger_than_source", "taef2_33_channels")


def measured(*args: str) -> dict:
    """``tests/fuzz_latok.py ARGS`` in a fresh process: its JSON, with the wall seconds and peak MiB."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, str(FUZZER), *args], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    output = json.loads(result.stdout)
    output["wall_s"] = round(time.perf_counter() - start, 2)
    output["peak_mib"] = round(output.pop("peak_rss_bytes") / 2**20)
    return output


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sizes = measured("craft", str(folder / "crafted"))["files"]
        for name in FILES:
            path = folder / "crafted" / f"{name}.latok"
            for command in (["info"], ["info", "--verify"], ["decode", "-o", str(folder / "o.mp4")], ["export", "-o", str(folder / "o.safetensors")]):
                run = measured("latok", command[0], str(path), *command[1:])
                rows.append({"file": name, "bytes": sizes[f"{name}.latok"], "command": " ".join(c for c in command if not c.startswith(str(folder)) and c != "-o"),
                             "exit": run["exit"], "wall_s": run["wall_s"], "peak_mib": run["peak_mib"], "error": run["stderr"].strip()[-160:]})  # fmt: skip
        twins = []
        if DAVIS.is_dir():
            real, twin = folder / "real.latok", folder / "twin.latok"
            subprocess.run([sys.executable, "-m", "latok.cli", "encode", str(DAVIS), "-o", str(real), "--frames", "9", "--height", "64"], check=True, capture_output=True)
            measured("twin", str(real), str(twin))
            for name, path in (("real", real), ("crafted twin", twin)):
                for command in ("decode", "export"):
                    out = folder / f"{name.replace(' ', '_')}.{'mp4' if command == 'decode' else 'safetensors'}"
                    run = measured("latok", command, str(path), "-o", str(out))
                    twins.append({"file": name, "bytes": path.stat().st_size, "command": command, "exit": run["exit"], "peak_mib": run["peak_mib"]})
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "command": "python eval/crafted_costs.py", "crafted": rows, "real_against_twin": twins}
    lines = ["# Costs of crafted `.latok` files", "", f"`{result['command']}` on {result['machine']}; each command in its own process (wall seconds include ~1.4 s of start-up).", "",
             "| file | bytes | command | exit | wall s | peak MiB |", "|---|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {r['file']} | {r['bytes']} | `{r['command']}` | {r['exit']} | {r['wall_s']} | {r['peak_mib']} |" for r in rows]
    lines += ["", "A crafted file against a real file of the same declared size (blackswan, 9 frames at 64p):", "",
              "| file | bytes | command | exit | peak MiB |", "|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {r['file']} | {r['bytes']} | `{r['command']}` | {r['exit']} | {r['peak_mib']} |" for r in twins]
    write_results("crafted_costs", result, "\n".join(lines))


if __name__ == "__main__":
    main()
