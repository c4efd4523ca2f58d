"""Choose the default tau and the default --motion on the training pool's validation split.

Reads the ``latok eval`` outputs that eval/run_shipped_defaults.sh writes for eval/splits/pool_val.txt (fill lit,
the default decode: the inpainter behind its lit guard), one folder per motion, and applies two rules:

* default motion: the one whose usage 0.3-0.9 curve is highest (Bjøntegaard-style mean PSNR difference,
  :mod:`latok.evaluation.rd`) — ``none`` unless another beats it by more than 0.05 dB;
* default tau, for no motion and for that motion (the motions whose tau grid was run): the largest tau on the grid whose mean PSNR loss against tau 0 on the
  split is at most 0.5 dB, and at most 0.75 dB in each domain (web, robot, ego/exo), so the
  13 web clips cannot hide a domain that loses.

DAVIS and tokenbench-mini are not read.  Writes eval/results/calibrate_pool.{json,md}.

Usage:
    python eval/calibrate_pool.py [--results eval/results] [--motions none,global,block]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from latok.evaluation import rd

ROOT = Path(__file__).resolve().parents[1]
LOSS_BUDGET_DB = 0.5
DOMAIN_BUDGET_DB = 0.75
MOTION_MARGIN_DB = 0.05


def domain(name: str, inputs: dict[str, str]) -> str:
    source = inputs.get(name, name)
    for kind in ("web", "robot"):
        if f"/{kind}/" in source:
            return kind
    return "ego/exo"


def tau_rows(results: dict, inputs: dict[str, str]) -> list[dict]:
    runs = {run["rate"]: run for run in results["runs"] if run["fill"] == "lit" and run["target_usage"] is None}
    if "tau=0" not in runs:  # the motion's tau grid was not run (only the chosen motion's is)
        return []
    full = {clip["name"]: clip["psnr"] for clip in runs["tau=0"]["clips"]}
    rows = []
    for rate, run in sorted(runs.items(), key=lambda item: item[1]["tau"]):
        if rate == "tau=0":
            continue
        losses = {clip["name"]: full[clip["name"]] - clip["psnr"] for clip in run["clips"]}
        by_domain: dict[str, list[float]] = {}
        for name, loss in losses.items():
            by_domain.setdefault(domain(name, inputs), []).append(loss)
        rows.append({
            "tau": run["tau"], "usage": run["summary"]["token_usage"], "psnr": run["summary"]["psnr"],
            "loss_db": statistics.mean(losses.values()), "loss_db_by_domain": {k: statistics.mean(v) for k, v in sorted(by_domain.items())},
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(ROOT / "eval" / "results"))
    parser.add_argument("--motions", default="none,global,block")
    parser.add_argument("--motion-only", action="store_true", help="print the chosen motion (the tau grid is run for it next)")
    args = parser.parse_args()
    results = {m: json.loads((Path(args.results) / f"val_pool_{m}" / "results.json").read_text()) for m in args.motions.split(",")}
    clip_files = Path(args.results, "val_pool_none", "clips")
    inputs = {}
    for path in clip_files.glob("*.json"):
        clip = json.loads(path.read_text())
        inputs[clip["name"]] = str(Path(clip["path"]).resolve())
    curves = {m: rd.curves(r, "lit")[0] for m, r in results.items()}
    versus_none = {m: rd.mean_psnr_difference(curves[m], curves["none"]) for m in results if m != "none"}
    motion = max(versus_none, key=versus_none.get) if versus_none and max(versus_none.values()) > MOTION_MARGIN_DB else "none"
    if args.motion_only:
        print(motion)
        return
    taus = {}
    for name, result in results.items():
        rows = tau_rows(result, inputs)
        fits = [r for r in rows if r["loss_db"] <= LOSS_BUDGET_DB and all(v <= DOMAIN_BUDGET_DB for v in r["loss_db_by_domain"].values())]
        if rows:
            taus[name] = max(r["tau"] for r in fits) if fits else None
    tau = taus.get(motion)
    report = {
        "command": "python eval/calibrate_pool.py" + ("" if args.motions == "none,global,block" else f" --motions {args.motions}"),
        "split": "eval/splits/pool_val.txt",
        "curves": {m: c for m, c in curves.items()},
        "delta_psnr_vs_none_db": versus_none,
        "motion": motion,
        "tau_rows": {m: tau_rows(r, inputs) for m, r in results.items()},
        "tau": tau,
        "taus": taus,
    }
    out = Path(args.results)
    (out / "calibrate_pool.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = ["# Default motion and tau, chosen on the pool validation split", "",
             f"`{report['command']}`; inputs: `eval/run_shipped_defaults.sh` (stage val) on the 18 clips of {report['split']}, "
             "fill lit (the default decode).", "",
             "## Motion: usage 0.3–0.9 curves against none (mean PSNR difference)", "", "| motion | ΔPSNR vs none (dB) |", "|---|---|"]  # fmt: skip
    lines += [f"| {m} | {d:+.2f} |" for m, d in versus_none.items()]
    lines += ["", f"Chosen: **{motion}** (another motion must beat none by more than {MOTION_MARGIN_DB} dB).", "",
              f"## tau: mean loss against tau 0 ≤ {LOSS_BUDGET_DB} dB, each domain ≤ {DOMAIN_BUDGET_DB} dB", "",
              "| motion | tau | usage | PSNR | loss (dB) | loss by domain (dB) |", "|---|---|---|---|---|---|"]  # fmt: skip
    for m, table in report["tau_rows"].items():
        for r in table:
            domains = ", ".join(f"{k} {v:.2f}" for k, v in r["loss_db_by_domain"].items())
            lines.append(f"| {m} | {r['tau']:g} | {r['usage']:.1%} | {r['psnr']:.2f} | {r['loss_db']:.2f} | {domains} |")
    lines += [""] + [f"Chosen for motion {m}: **tau = {t}**." if t is not None else f"motion {m}: no tau on the grid fits the budget." for m, t in taus.items()]
    (out / "calibrate_pool.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
