"""How far do decoded frames move between two CPU kernel sets?  The tolerance of tests/test_same_behaviour.py.

Float results depend on which kernels torch and oneDNN pick for a CPU.  This script runs the
same-behaviour workload (three shared clips, two rates, every fill: ``tests/test_same_behaviour.py``)
once per kernel set that this machine can be forced into — ATen's dispatch (``ATEN_CPU_CAPABILITY``)
and oneDNN's instruction set (``ONEDNN_MAX_CPU_ISA``) — each in its own process, and reports, against
the machine's own default kernels:

- whether every ``.latok`` file is byte-identical;
- the largest per-pixel difference of the decoded frames (values in [0, 1]), and of their 8x8 block means.

    python eval/kernel_tolerance.py   # -> eval/results/kernel_tolerance.json

These are kernel sets of one machine, not other machines.  oneDNN's direct convolutions, which taef2
runs, accumulate in the same order at every instruction set, so forcing the ISA changes nothing here;
one thread instead of two changes the reduction order, and ATen's own convolutions instead of oneDNN's
change the algorithm, as another CPU's kernel choice does.  The test's tolerance is twice the largest
per-pixel difference measured, applied to 8x8 block means.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from latok.codec.restore.resolve import restore

from harness import ROOT, write_results

KERNEL_SETS = {
    "default": {},
    "onednn-avx512-core": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
    "onednn-avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "aten-avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "aten-avx2+onednn-avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "mkl-avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "one-thread": {"OMP_NUM_THREADS": "1"},  # another reduction order: what another machine's kernels do to the sums
    "aten-convolutions": {"LATOK_KERNELS": "no-mkldnn"},  # another convolution algorithm (tests/test_same_behaviour.py --dump)
}


def latok_difference(a: np.ndarray, b: np.ndarray) -> dict:
    """What differs between two .latok files of one clip: header fields, keep positions, kept values."""
    from latok.codec.format.reader import LatokReader, load_latok

    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / "a.latok", Path(tmp) / "b.latok"]
        for path, data in zip(paths, (a, b)):
            path.write_bytes(data.tobytes())
        headers = []
        for path in paths:
            with LatokReader(path) as reader:
                headers.append(reader.header)
        first, second = (load_latok(p) for p in paths)
    both = (first.keep & second.keep)[0]
    dense = [restore(x, "hold")[0].permute(1, 2, 3, 0)[both] for x in (first, second)]
    return {
        "header_fields": {k: [headers[0][k], headers[1][k]] for k in headers[0] if headers[0][k] != headers[1][k]},
        "keep_positions_differing": int((first.keep != second.keep).sum()),
        "positions": int(first.keep.numel()),
        "max_kept_value_difference": float((dense[0] - dense[1]).abs().max()) if both.any() else 0.0,
        "kept_values_differing": int((dense[0] != dense[1]).sum()),
        "kept_values": int(dense[0].numel()),
    }


def main() -> None:
    outputs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, env in KERNEL_SETS.items():
            out = Path(tmp) / f"{name}.npz"
            subprocess.run([sys.executable, str(ROOT / "tests" / "test_same_behaviour.py"), "--dump", str(out)],
                           env={**os.environ, **env}, check=True)  # fmt: skip
            outputs[name] = dict(np.load(out))
    base = outputs["default"]
    rows = {}
    details = {}
    for name, run in outputs.items():
        if name == "default":
            continue
        latok = [k for k in base if k.endswith("/latok")]
        frames = [k for k in base if not k.endswith("/latok") and not k.endswith("/blocks")]
        blocks = [k for k in base if k.endswith("/blocks")]
        details[name] = {k.removesuffix("/latok"): latok_difference(base[k], run[k]) for k in latok if not np.array_equal(base[k], run[k])}
        rows[name] = {
            "env": KERNEL_SETS[name],
            "latok_bytes_identical": all(np.array_equal(base[k], run[k]) for k in latok),
            "max_pixel_difference": float(max(np.abs(base[k] - run[k]).max() for k in frames)),
            "max_block_mean_difference": float(max(np.abs(base[k] - run[k]).max() for k in blocks)),
            "frames_identical": all(np.array_equal(base[k], run[k]) for k in frames),
            "latok_differences": details[name],
        }
    result = {
        "machine": platform.processor() or platform.machine(),
        "command": "python eval/kernel_tolerance.py",
        "kernel_sets": rows,
        "largest_block_mean_difference": max(r["max_block_mean_difference"] for r in rows.values()),
        "largest_pixel_difference": max(r["max_pixel_difference"] for r in rows.values()),
        "largest_tau_relative_difference": max(
            [abs(a - b) / abs(a) for r in rows.values() for d in r["latok_differences"].values() for a, b in [d["header_fields"].get("tau", (1.0, 1.0))]],
            default=0.0,
        ),
    }
    write_results("kernel_tolerance", result)


if __name__ == "__main__":
    main()
