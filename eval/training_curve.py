"""The training curve of a taef2 inpainter: every cycle of its training chain, end to end.

Reads the CSV logs LightningCLI wrote to eval/results/train/<run>/version_*/metrics.csv and plots,
against cumulative optimiser steps, the training loss (per-clip error on dropped positions over
hold's, smoothed) and the validation PSNR gain over hold at usage 0.5 (unguarded lit). Each cycle
starts from the export of the one before it: the validation step with the best gain
(latok.training.train.SavePretrained), marked on the curve.

Chains: ``shipped`` (checkpoints/taef2-lit-xs one run on the training pool, validated
on eval/splits/pool_val.txt with the motion-compensated rule; eval/train_shipped.sh) and ``previous``
(the seven-stage chain before it, validated on DAVIS soapbox, libby, goat; eval/train_previous.sh).

Usage:
    python eval/training_curve.py [--chain shipped|previous|pooled|pixels] [--out eval/results/train]
writes OUT/training_curve.{png,md} (``previous``: OUT/training_curve_previous.{png,md})
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / "eval" / "results" / "train"
# The runs of each chain, in order (configs/<run>.yaml or configs/history/<run>.yaml), and its recipe.
CHAINS = {
    "shipped": ("taef2_lit-xs-pool",),
    "pooled": ("taef2_lit-xs-pool", "taef2_lit-xs-pool-pooled"),
    "pixels": ("taef2_lit-xs-pool", "taef2_lit-xs-pool-pixels"),
    "matched": ("taef2_lit-xs-pool", "taef2_lit-xs-pool-matched"),
    "previous": (
        "taef2_lit-xs",
        "taef2_lit-xs-continued",
        "taef2_lit-xs-decoder",
        "taef2_lit-xs-decoder-2",
        "taef2_lit-xs-decoder-3",
        "taef2_lit-xs-decoder-4",
        "taef2_lit-xs-decoder-5",
    ),
}
RECIPES = {"shipped": "eval/train_shipped.sh", "previous": "eval/train_previous.sh", "pooled": "eval/train_pooled.sh",
           "pixels": "eval/finetune.sh", "matched": "eval/finetune.sh"}  # the script that replays the chain's runs
RECIPE_ARGUMENTS = {"pixels": " taef2_lit-xs-pool-pixels", "matched": " taef2_lit-xs-pool-matched"}
VALIDATION = {
    "shipped": "the 18 clips of eval/splits/pool_val.txt (240p, 17 frames), motion-compensated rule and fills",
    "previous": "DAVIS soapbox, libby and goat (240p, 17 frames)",
    "pooled": "the 18 clips of eval/splits/pool_val.txt (240p, 17 frames), motion-compensated rule and fills",
    "pixels": "the 18 clips of eval/splits/pool_val.txt (240p, 17 frames), motion-compensated rule and fills",
    "matched": "the 18 clips of eval/splits/pool_val.txt (240p, 17 frames), block motion, the rule in the decoder's metric",
}
TITLES = {"shipped": "checkpoints/taef2-lit-xs", "previous": "the inpainter shipped before the pool-trained one",
          "pooled": "checkpoints/taef2-lit-xs fine-tuned with the pooled loss ratio (not shipped)",
          "pixels": "checkpoints/taef2-lit-xs fine-tuned with the loss through the frozen decoder",
          "matched": "checkpoints/taef2-lit-xs fine-tuned on crops masked as the encoder masks"}
GAIN, LOSS = "val/psnr_gain_over_hold", "train/loss"
SMOOTH = 20  # logged training points averaged per plotted point


def read_log(run: str) -> list[dict[str, str]]:
    """The rows of ``run``'s newest ``metrics.csv``."""
    logs = sorted((LOGS / run).glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not logs:
        raise FileNotFoundError(f"no training log for {run} under {LOGS / run}")
    with logs[-1].open(newline="") as handle:
        return list(csv.DictReader(handle))


def series(rows: list[dict[str, str]], key: str) -> list[tuple[int, float]]:
    return [(int(row["step"]), float(row[key])) for row in rows if row.get(key)]


def smooth(points: list[tuple[int, float]], window: int) -> list[tuple[float, float]]:
    chunks = [points[i : i + window] for i in range(0, len(points), window)]
    return [(sum(s for s, _ in c) / len(c), sum(v for _, v in c) / len(c)) for c in chunks]


def loss_against_gain(runs: tuple[str, ...], window: int = 400) -> list[str]:
    """Markdown: per run, the validation latent loss against hold by step (decoder metric, mean of per-clip ratios),
    and per ``window`` training steps the logged loss and the pooled ratio (mean error over mean hold error)."""
    lines = ["", "What the loss saw: validation latent loss / hold's by step; in training, per "
             f"{window} steps, the logged loss and the pooled ratio mean(train/mse) / mean(train/hold_mse).", "",
             "| cycle | val latent loss / hold's by step | train steps: logged loss, pooled ratio |", "|---|---|---|"]  # fmt: skip
    for run in runs:
        rows = read_log(run)
        ratio = ", ".join(f"{s + 1}: {v:.2f}" for s, v in series(rows, "val/latent_loss_vs_hold"))
        windows = {}
        for row in rows:
            if row.get(LOSS) and row.get("train/mse") and row.get("train/hold_mse"):
                windows.setdefault(int(row["step"]) // window, []).append((float(row[LOSS]), float(row["train/mse"]), float(row["train/hold_mse"])))
        cells = "; ".join(f"{w * window}–{(w + 1) * window}: {statistics.mean(v[0] for v in vs):.2f}, "
                          f"{statistics.mean(v[1] for v in vs) / statistics.mean(v[2] for v in vs):.2f}" for w, vs in sorted(windows.items()))  # fmt: skip
        lines.append(f"| {run} | {ratio or '–'} | {cells} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=LOGS)
    parser.add_argument("--chain", choices=tuple(CHAINS), default="shipped")
    args = parser.parse_args(argv)
    out, chain = args.out, args.chain
    out.mkdir(parents=True, exist_ok=True)
    figure, (loss_axis, gain_axis) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    lines = [
        f"# Training curve: {TITLES[chain]} ({RECIPES[chain]}{RECIPE_ARGUMENTS.get(chain, '')})",
        "",
        f"Validation: PSNR gain of unguarded lit over hold on {VALIDATION[chain]}, usage 0.5,",
        "logged by Lightning during training. Each cycle starts from the previous cycle's export.",
        "",
        "| cycle (configs/[history/]…yaml) | steps | validation gain by step (dB) | export: step, gain |",
        "|---|---|---|---|",
    ]
    offset = 0
    for run in CHAINS[chain]:
        rows = read_log(run)
        losses, gains = series(rows, LOSS), series(rows, GAIN)
        last = max(step for step, _ in losses + gains)
        loss_axis.plot([offset + s for s, _ in smooth(losses, SMOOTH)], [v for _, v in smooth(losses, SMOOTH)], label=run)
        if gains:
            best_step, best_gain = max(gains, key=lambda point: point[1])  # first of equal maxima, like SavePretrained
            gain_axis.plot([offset + s for s, _ in gains], [v for _, v in gains], "o-", markersize=3)
            gain_axis.plot([offset + best_step], [best_gain], "k*", markersize=9)
            by_step = ", ".join(f"{s + 1}: {v:+.2f}" for s, v in gains)
            lines.append(f"| {run} | {last + 1} | {by_step} | {best_step + 1}, {best_gain:+.2f} |")
        else:
            lines.append(f"| {run} | {last + 1} | (no validation logged) | last step |")
        offset += last + 1
    lines += loss_against_gain(CHAINS[chain])
    loss_axis.set_ylabel("train loss (error / hold's)")
    loss_axis.legend(fontsize=7, ncol=2)
    gain_axis.set_ylabel("val PSNR gain over hold (dB)")
    gain_axis.axhline(1.5, color="grey", linestyle="--", linewidth=0.8)
    gain_axis.set_xlabel("optimiser steps, all cycles end to end (★ = export the next cycle starts from)")
    figure.tight_layout()
    stem = "training_curve" if chain == "shipped" else f"training_curve_{chain}"
    png, md = out / f"{stem}.png", out / f"{stem}.md"
    partial = png.with_suffix(".partial.png")
    figure.savefig(partial, dpi=110)
    partial.replace(png)
    lines += ["", f"![curve]({png.name})", "", f"Command: `python eval/training_curve.py{'' if chain == 'shipped' else ' --chain ' + chain}`", ""]
    partial_md = md.with_suffix(".partial.md")
    partial_md.write_text("\n".join(lines))
    partial_md.replace(md)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, KeyError, ValueError) as error:
        sys.exit(f"error: {error}")
