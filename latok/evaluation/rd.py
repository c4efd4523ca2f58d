"""Rate-distortion curves of ``latok eval`` results and a Bjøntegaard-style comparison of two of them.

A curve is one fill's target-usage runs: mean token usage against mean PSNR (and one curve per clip).
:func:`mean_psnr_difference` is the Bjøntegaard delta PSNR with piecewise-linear interpolation in log
usage (the variant later BD work prefers to the cubic fit, which overshoots on few points): the mean
vertical gap between two curves over the usage range both cover.  Positive: the first curve is better.
"""

from __future__ import annotations

import math
import statistics

import numpy as np

from latok.errors import InvalidInputError

Curve = list[tuple[float, float]]  # (token usage, PSNR) points


def curves(results: dict, fill: str) -> tuple[Curve, dict[str, Curve]]:
    """The mean curve and each clip's curve of ``fill``'s target-usage runs in ``results`` (results.json)."""
    runs = [run for run in results["runs"] if run["fill"] == fill and run.get("target_usage") is not None]
    if len(runs) < 2:
        raise InvalidInputError(f"fill {fill}: a curve needs at least two --target-usage runs, found {len(runs)}")
    mean = [(run["summary"]["token_usage"], run["summary"]["psnr"]) for run in runs]
    clips: dict[str, Curve] = {}
    for run in runs:
        for clip in run["clips"]:
            clips.setdefault(clip["name"], []).append((clip["token_usage"], clip["psnr"]))
    return mean, clips


def mean_psnr_difference(a: Curve, b: Curve, samples: int = 256) -> float | None:
    """Mean PSNR of curve ``a`` minus curve ``b`` over the usage range both cover, linear in log usage;
    ``None`` when the ranges do not overlap."""
    xa, ya = _sorted(a)
    xb, yb = _sorted(b)
    low, high = max(xa[0], xb[0]), min(xa[-1], xb[-1])
    if not high > low:
        return None
    grid = np.linspace(low, high, samples)
    return float(np.mean(np.interp(grid, xa, ya) - np.interp(grid, xb, yb)))


def _sorted(curve: Curve) -> tuple[np.ndarray, np.ndarray]:
    points = sorted((math.log(u), p) for u, p in curve if u > 0 and p is not None and math.isfinite(p))
    if len(points) < 2:
        raise InvalidInputError(f"a curve needs two points with usage > 0, got {curve}")
    x, y = zip(*points)
    return np.asarray(x), np.asarray(y)


def compare(results_a: dict, results_b: dict, fills: list[str] | None = None) -> dict:
    """Per fill both have: the BD-style mean PSNR difference (a minus b) of the mean curves, of each
    clip's curves, and the usage range compared."""
    names_a = {run["fill"] for run in results_a["runs"] if run.get("target_usage") is not None}
    names_b = {run["fill"] for run in results_b["runs"] if run.get("target_usage") is not None}
    comparison = {}
    for fill in fills or sorted(names_a & names_b):
        mean_a, clips_a = curves(results_a, fill)
        mean_b, clips_b = curves(results_b, fill)
        per_clip = {name: mean_psnr_difference(clips_a[name], clips_b[name]) for name in clips_a if name in clips_b}
        known = [value for value in per_clip.values() if value is not None]
        comparison[fill] = {
            "delta_psnr_db": mean_psnr_difference(mean_a, mean_b),
            "usage_range": [max(min(u for u, _ in mean_a), min(u for u, _ in mean_b)), min(max(u for u, _ in mean_a), max(u for u, _ in mean_b))],
            "clip_mean_delta_psnr_db": statistics.mean(known) if known else None,
            "clips_worse": sum(value < 0 for value in known),
            "clips": per_clip,
        }
    if not comparison:
        raise InvalidInputError("the two results share no fill with --target-usage runs")
    return comparison


def markdown(comparison: dict, label_a: str, label_b: str) -> str:
    lines = [
        f"# Rate-distortion comparison: {label_a} against {label_b}",
        "",
        "Bjøntegaard-style mean PSNR difference (first minus second) over the token-usage range both curves cover, "
        "piecewise linear in log usage; computed on the mean curve and on each clip's curve.",
        "",
        "| fill | usage range | ΔPSNR, mean curve (dB) | mean of per-clip ΔPSNR (dB) | clips worse |",
        "|---|---|---|---|---|",
    ]
    for fill, row in comparison.items():
        low, high = row["usage_range"]
        delta = "–" if row["delta_psnr_db"] is None else f"{row['delta_psnr_db']:+.2f}"
        clip_mean = "–" if row["clip_mean_delta_psnr_db"] is None else f"{row['clip_mean_delta_psnr_db']:+.2f}"
        lines.append(f"| {fill} | {low:.1%}–{high:.1%} | {delta} | {clip_mean} | {row['clips_worse']} of {len(row['clips'])} |")
    for fill, row in comparison.items():
        lines += ["", f"## {fill}: per clip", "", "| clip | ΔPSNR (dB) |", "|---|---|"]
        lines += [f"| {name} | {'–' if value is None else f'{value:+.2f}'} |" for name, value in row["clips"].items()]
    return "\n".join(lines) + "\n"
