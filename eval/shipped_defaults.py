"""The shipped defaults on the evaluation sets, against the previous defaults, target by target.

Reads (nothing is encoded here; `STAGE=report eval/run_shipped_defaults.sh` makes them):
  eval/results/rewarped_{set}_block/     the previous defaults: references re-warped every frame, fixed tau 0.15
  eval/results/shipped_{set}_block/      the defaults now: references composed along the motion, the rule in the
                                         decoder's metric, the 0.5 dB quality target, and comparison.json against the
                                         previous usage curves
  eval/results/training_free_davis_block/  motion-compensated hold and interp at usage 0.5 (DAVIS)
and writes eval/results/shipped_defaults.{json,md}: per set the Bjøntegaard-style difference of the usage 0.3-0.9
curves, the default decode at usage 0.5 (mean and per clip against the previous), the inpainter's gain over the best
training-free fill, and the loss against full rate (with its per-clip spread) and usage at the default rate.

Usage:
    python eval/shipped_defaults.py
"""

from __future__ import annotations

import json
import statistics

from harness import RESULTS, write_results

TARGETS = {
    "davis": {"curve_db": 0.7, "usage_05": 26.3, "usage_max": 0.85, "lit_over_free_db": 0.5},
    "tokenbench": {"curve_db": 0.3, "usage_05": 31.2, "usage_max": 0.42},
}
LOSS_MAX_DB, CLIP_DROP_MAX_DB = 0.5, 0.2


def runs(folder: str, fill: str = "lit") -> dict[str, dict]:
    results = json.loads((RESULTS / folder / "results.json").read_text())
    return {run["rate"]: run for run in results["runs"] if run["fill"] == fill}


def per_clip(run: dict, key: str = "psnr") -> dict[str, float]:
    return {clip["name"]: clip[key] for clip in run["clips"]}


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def main() -> None:
    summary = {"command": "python eval/shipped_defaults.py", "sets": {}}
    lines = ["# Shipped defaults on the evaluation sets, against the previous defaults", "",
             f"`{summary['command']}` after `STAGE=report eval/run_shipped_defaults.sh`. Now: block motion with references "
             "composed along the motion (one interpolation per held value), the rule measuring change in the decoder's metric "
             "(channels weighted by the decoder's sensitivity), the default rate a 0.5 dB quality target, the "
             "same inpainter (`checkpoints/taef2-lit-xs`). Previous: references re-warped every frame, the plain rule, fixed τ 0.15 "
             "(`eval/results/rewarped_*_block`). Both chosen on the pool validation split; DAVIS and tokenbench-mini only "
             "evaluate. Default decode = fill lit behind its lit guard.", ""]  # fmt: skip
    for name, targets in TARGETS.items():
        before, now = runs(f"rewarped_{name}_block"), runs(f"shipped_{name}_block")
        comparison = json.loads((RESULTS / f"shipped_{name}_block" / "comparison.json").read_text())["fills"]["lit"]
        old, new = per_clip(before["usage=0.5"]), per_clip(now["usage=0.5"])
        drops = {clip: new[clip] - old[clip] for clip in old}
        full, default = per_clip(now["tau=0"]), per_clip(now["tau=default"])
        losses = {clip: full[clip] - default[clip] for clip in full}
        usages = per_clip(now["tau=default"], "token_usage")
        previous_full, previous_default = per_clip(before["tau=0"]), per_clip(before["tau=default"])
        row = {
            "curve_delta_db": comparison["delta_psnr_db"], "curve_clips_worse": comparison["clips_worse"],
            "usage_05_previous": before["usage=0.5"]["summary"]["psnr"], "usage_05": now["usage=0.5"]["summary"]["psnr"],
            "worst_clip_vs_previous_db": min(drops.values()),
            "default_loss_db": statistics.mean(losses.values()), "default_loss_std_db": statistics.pstdev(losses.values()),
            "default_loss_min_db": min(losses.values()), "default_loss_max_db": max(losses.values()),
            "default_usage": now["tau=default"]["summary"]["token_usage"],
            "previous_default_loss_db": statistics.mean(previous_full[c] - previous_default[c] for c in previous_full),
            "previous_default_loss_std_db": statistics.pstdev([previous_full[c] - previous_default[c] for c in previous_full]),
            "previous_default_usage": before["tau=default"]["summary"]["token_usage"],
            "clips": {c: {"previous": old[c], "now": new[c], "loss_at_default": losses[c], "usage_at_default": usages[c]} for c in old},
        }  # fmt: skip
        met = {
            "curve": row["curve_delta_db"] >= targets["curve_db"],
            "usage_05": row["usage_05"] >= targets["usage_05"],
            "no_clip_drops": row["worst_clip_vs_previous_db"] >= -CLIP_DROP_MAX_DB,
            "loss_at_default": row["default_loss_db"] <= LOSS_MAX_DB,
            "usage_at_default": row["default_usage"] <= targets["usage_max"],
        }
        table = [f"| usage 0.3–0.9 curve against the previous (Bjøntegaard-style ΔPSNR) | | {row['curve_delta_db']:+.2f} dB ({row['curve_clips_worse']} clips worse) | ≥ +{targets['curve_db']} | {verdict(met['curve'])} |",
                 f"| default decode at usage 0.5 (dB) | {row['usage_05_previous']:.2f} | {row['usage_05']:.2f} | ≥ {targets['usage_05']} | {verdict(met['usage_05'])} |",
                 f"| worst clip against the previous at usage 0.5 (dB) | | {row['worst_clip_vs_previous_db']:+.2f} | ≥ −{CLIP_DROP_MAX_DB} | {verdict(met['no_clip_drops'])} |",
                 f"| loss against full rate at the default rate: mean, std (min..max) (dB) | {row['previous_default_loss_db']:.2f}, {row['previous_default_loss_std_db']:.2f} | "
                 f"{row['default_loss_db']:.2f}, {row['default_loss_std_db']:.2f} ({row['default_loss_min_db']:.2f}..{row['default_loss_max_db']:.2f}) | ≤ {LOSS_MAX_DB} | {verdict(met['loss_at_default'])} |",
                 f"| token usage at the default rate | {row['previous_default_usage']:.1%} | {row['default_usage']:.1%} | ≤ {targets['usage_max']:.0%} | {verdict(met['usage_at_default'])} |"]  # fmt: skip
        if "lit_over_free_db" in targets:
            free = {fill: per_clip(runs(f"training_free_{name}_block", fill)["usage=0.5"]) for fill in ("hold", "interp")}
            best = {c: max(free["hold"][c], free["interp"][c]) for c in new}
            row["best_training_free_usage_05"] = statistics.mean(best.values())
            row["hold_usage_05"], row["interp_usage_05"] = (statistics.mean(free[f].values()) for f in ("hold", "interp"))
            row["lit_over_best_free_db"] = statistics.mean(new[c] - best[c] for c in new)
            met["lit_over_free"] = row["lit_over_best_free_db"] >= targets["lit_over_free_db"]
            for c in new:
                row["clips"][c]["best_training_free"] = best[c]
            table.append(f"| default decode over the best of MC hold ({row['hold_usage_05']:.2f}) and MC interp ({row['interp_usage_05']:.2f}) per clip, usage 0.5 (dB) | "
                         f"| {row['lit_over_best_free_db']:+.2f} | ≥ +{targets['lit_over_free_db']} | {verdict(met['lit_over_free'])} |")  # fmt: skip
        row["met"] = met
        summary["sets"][name] = row
        lines += [f"## {name}", "", "| measure | previous | now | target | |", "|---|---|---|---|---|", *table, "",
                  "Per clip: default decode at usage 0.5 (dB), and at the default rate its loss against full rate and its usage:", "",
                  "| clip | previous | now | now − previous | loss at default (dB) | usage at default |", "|---|---|---|---|---|---|"]  # fmt: skip
        for clip, values in row["clips"].items():
            lines.append(f"| {clip} | {values['previous']:.2f} | {values['now']:.2f} | {values['now'] - values['previous']:+.2f} | "
                         f"{values['loss_at_default']:.2f} | {values['usage_at_default']:.1%} |")  # fmt: skip
        lines.append("")
    write_results("shipped_defaults", summary, "\n".join(lines))


if __name__ == "__main__":
    main()
