"""The shipped defaults on the evaluation sets: the default decode before and after the motion-compensated, pool-trained defaults.

Reads (nothing is encoded here):
  eval/results/eval_{davis,tokenbench}/          today's grids (shipped inpainter, no motion; eval/run_eval.sh)
  eval/results/shipped_{set}_none/               the new inpainter, no motion (eval/run_shipped_defaults.sh STAGE=report)
  eval/results/shipped_{set}_{motion}/           the new inpainter with the chosen motion, and its comparison.json
  eval/results/calibrate_pool.json                the motion and tau chosen on the pool validation split
and writes eval/results/shipped_defaults.{json,md}: per set, the default decode at usage 0.5 (mean and per clip,
against today's at the same usage), the loss against full rate and the usage at the new default tau, and the
Bjøntegaard-style difference of the usage 0.3-0.9 curves with and without motion.

Usage:
    python eval/shipped_defaults.py
"""

from __future__ import annotations

import json

from harness import RESULTS, write_results

SETS = {"davis": {"usage_05": 26.4, "usage_max": 0.80}, "tokenbench": {"usage_05": 31.3, "usage_max": 0.40}}
LOSS_MAX_DB, CLIP_LOSS_MAX_DB = 0.5, 0.1


def runs(folder: str) -> dict[str, dict]:
    results = json.loads((RESULTS / folder / "results.json").read_text())
    return {run["rate"]: run for run in results["runs"] if run["fill"] == "lit"}


def per_clip(run: dict) -> dict[str, dict]:
    return {clip["name"]: clip for clip in run["clips"]}


def main() -> None:
    chosen = json.loads((RESULTS / "calibrate_pool.json").read_text())
    motion = chosen["motion"]
    summary = {"command": "python eval/shipped_defaults.py", "motion": motion, "tau": chosen["tau"], "sets": {}}
    lines = ["# Shipped defaults on the evaluation sets", "",
             f"`{summary['command']}`. Default motion **{motion}** and tau **{chosen['tau']}**, both chosen on the pool validation "
             "split (`eval/results/calibrate_pool.md`); the new inpainter trained on the pool's training split only "
             "(`configs/taef2_lit-xs-pool.yaml`). DAVIS and tokenbench-mini only evaluate. Default decode = fill lit behind "
             "its lit guard. \"Today\" = the shipped inpainter without motion (`eval/results/eval_{davis,tokenbench}`).", ""]  # fmt: skip
    for name, targets in SETS.items():
        today = runs(f"eval_{name}")
        plain = runs(f"shipped_{name}_none")  # usage runs only
        new = runs(f"shipped_{name}_{motion}") if motion != "none" else plain
        comparison = json.loads((RESULTS / f"shipped_{name}_{motion}" / "comparison.json").read_text())["fills"]["lit"] if motion != "none" else None
        old_clips, new_clips, plain_clips = per_clip(today["usage=0.5"]), per_clip(new["usage=0.5"]), per_clip(plain["usage=0.5"])
        differences = {clip: new_clips[clip]["psnr"] - old_clips[clip]["psnr"] for clip in old_clips}
        full, default = new["tau=0"]["summary"], new["tau=default"]["summary"]
        row = {
            "usage_05_today": today["usage=0.5"]["summary"]["psnr"],
            "usage_05_new_no_motion": plain["usage=0.5"]["summary"]["psnr"],
            "usage_05_new": new["usage=0.5"]["summary"]["psnr"],
            "usage_05_target": targets["usage_05"],
            "full_rate_psnr": full["psnr"],
            "default_tau_psnr": default["psnr"],
            "default_tau_loss_db": full["psnr"] - default["psnr"],
            "default_tau_usage": default["token_usage"],
            "default_tau_usage_target": targets["usage_max"],
            "worst_clip_vs_today_db": min(differences.values()),
            "clips_worse_than_today_by_over_0.1_db": sorted(c for c, d in differences.items() if d < -CLIP_LOSS_MAX_DB),
            "curve_delta_psnr_db_motion_vs_none": None if comparison is None else comparison["delta_psnr_db"],
            "clips": {c: {"today": old_clips[c]["psnr"], "new_no_motion": plain_clips[c]["psnr"], "new": new_clips[c]["psnr"]} for c in old_clips},
        }
        row["met"] = {
            "usage_05": row["usage_05_new"] >= targets["usage_05"],
            "loss_at_default": row["default_tau_loss_db"] <= LOSS_MAX_DB,
            "usage_at_default": row["default_tau_usage"] <= targets["usage_max"],
            "no_clip_worse": not row["clips_worse_than_today_by_over_0.1_db"],
        }
        summary["sets"][name] = row
        verdict = lambda ok: "met" if ok else "**missed**"  # noqa: E731
        delta = "–" if row["curve_delta_psnr_db_motion_vs_none"] is None else f"{row['curve_delta_psnr_db_motion_vs_none']:+.2f} dB"
        lines += [f"## {name}", "",
                  "| measure | today | new | target | |", "|---|---|---|---|---|",
                  f"| default decode at usage 0.5 (dB) | {row['usage_05_today']:.2f} | {row['usage_05_new']:.2f} (no motion: {row['usage_05_new_no_motion']:.2f}) | ≥ {targets['usage_05']} | {verdict(row['met']['usage_05'])} |",
                  f"| loss against full rate at the default tau (dB) | | {row['default_tau_loss_db']:.2f} ({row['full_rate_psnr']:.2f} → {row['default_tau_psnr']:.2f}) | ≤ {LOSS_MAX_DB} | {verdict(row['met']['loss_at_default'])} |",
                  f"| token usage at the default tau | | {row['default_tau_usage']:.1%} | ≤ {targets['usage_max']:.0%} | {verdict(row['met']['usage_at_default'])} |",
                  f"| worst clip against today at usage 0.5 (dB) | | {row['worst_clip_vs_today_db']:+.2f} | ≥ −{CLIP_LOSS_MAX_DB} | {verdict(row['met']['no_clip_worse'])} |",
                  f"| usage 0.3–0.9 curve, {motion} against none (Bjøntegaard-style ΔPSNR) | | {delta} | | |",
                  "", "Per clip, default decode at usage 0.5 (dB):", "", "| clip | today | new, no motion | new | new − today |", "|---|---|---|---|---|"]  # fmt: skip
        for clip, values in row["clips"].items():
            lines.append(f"| {clip} | {values['today']:.2f} | {values['new_no_motion']:.2f} | {values['new']:.2f} | {values['new'] - values['today']:+.2f} |")
        lines.append("")
    write_results("shipped_defaults", summary, "\n".join(lines))


if __name__ == "__main__":
    main()
