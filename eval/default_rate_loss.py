"""What does each fill lose at the default rate?  Per fill of a `latok eval` folder run with `--taus 0,default`:
the PSNR each clip loses at the default rate against all tokens, its mean, spread and range.

Separates the quality target's prediction (which models motion-compensated hold, fill `hold`) from what the
inpainter adds (fill `lit`).  What was run:

    latok eval --dataset tokenbench --root ../shared/data/tokenbench-mini --taus 0,default --fills hold,lit \\
        --no-lpips --no-videos --out eval/results/default_rate_fills_tokenbench
    python eval/default_rate_loss.py eval/results/default_rate_fills_tokenbench   # -> its loss.{json,md}
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def main(folder: str) -> None:
    out = Path(folder)
    results = json.loads((out / "results.json").read_text())
    runs = {(run["rate"], run["fill"]): run for run in results["runs"]}
    fills = [fill for rate, fill in runs if rate == "tau=default"]
    full = {clip["name"]: clip["psnr"] for clip in runs[("tau=0", fills[0])]["clips"]}
    table = {}
    for fill in fills:
        clips = runs[("tau=default", fill)]["clips"]
        loss = {clip["name"]: full[clip["name"]] - clip["psnr"] for clip in clips}
        table[fill] = {"mean_db": statistics.mean(loss.values()), "std_db": statistics.pstdev(loss.values()),
                       "min_db": min(loss.values()), "max_db": max(loss.values()),
                       "usage": statistics.mean(clip["token_usage"] for clip in clips), "clips": loss}  # fmt: skip
    lines = [f"# Loss at the default rate, per fill: {results.get('description', out)}", "",
             f"`python eval/default_rate_loss.py {out}`: PSNR at `tau=default` against `tau=0`, per clip.", "",
             "| fill | mean usage | mean loss (dB) | std | min..max |", "|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {fill} | {row['usage']:.1%} | {row['mean_db']:.2f} | {row['std_db']:.2f} | {row['min_db']:.2f}..{row['max_db']:.2f} |"
              for fill, row in table.items()]  # fmt: skip
    lines += ["", "| clip | " + " | ".join(fills) + " |", "|---|" + "---|" * len(fills)]
    lines += [f"| {name} | " + " | ".join(f"{table[fill]['clips'][name]:.2f}" for fill in fills) + " |" for name in full]
    (out / "loss.json").write_text(json.dumps(table, indent=1) + "\n")
    (out / "loss.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "eval/results/default_rate_fills_tokenbench")
