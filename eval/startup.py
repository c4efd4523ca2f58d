"""Start-up cost of ``import latok`` and ``latok --help`` (target: under 1 s).

``python -X importtime`` gives the cumulative import time of the ``latok``
package; ``latok --help`` is timed as a whole process (interpreter start
included).  Also records which heavy modules each one pulled in.

Usage:
    python eval/startup.py            # writes eval/results/startup.json
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from harness import write_results

HEAVY = ("torch", "diffusers", "lightning", "torchmetrics", "webdataset", "av", "numpy")
REPEATS = 7


def import_time_us(module: str) -> int:
    """Cumulative import time of ``module`` in microseconds, from ``-X importtime``."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True, text=True, check=True
    )
    for line in result.stderr.splitlines():
        match = re.match(rf"import time:\s+\d+ \|\s+(\d+) \| {re.escape(module)}$", line)
        if match:
            return int(match.group(1))
    raise RuntimeError(f"no importtime line for {module}")


def loaded_heavy_modules(code: str) -> list[str]:
    probe = f"{code}; import sys; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return [m for m in out.strip().split(",") if m]


def wall_seconds(command: list[str]) -> float:
    samples = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    latok_script = shutil.which("latok", path=str(Path(sys.executable).parent)) or "latok"
    result = {
        "what": "start-up cost of `import latok` and `latok --help`",
        "command": "python eval/startup.py",
        "python": sys.version.split()[0],
        "import_latok_cumulative_ms": statistics.median(import_time_us("latok") for _ in range(REPEATS)) / 1000,
        "import_torch_cumulative_ms": import_time_us("torch") / 1000,
        "latok_help_wall_s": wall_seconds([latok_script, "--help"]),
        "python_noop_wall_s": wall_seconds([sys.executable, "-c", "pass"]),
        "heavy_modules_after_import_latok": loaded_heavy_modules("import latok"),
        "heavy_modules_after_cli_parser": loaded_heavy_modules("import latok.cli; latok.cli.build_parser()"),
        "target_s": 1.0,
    }
    write_results("startup", result)


if __name__ == "__main__":
    main()
