"""Can the encoder predict what a tau will cost, and does a quality target beat a fixed tau?

The quality target (latok.codec.restore.quality) picks, per clip, the largest tau whose predicted PSNR loss
against the full-rate decode stays within a budget D.  The prediction maps the weighted error of the
motion-compensated hold against the true latent (channels weighted by the decoder's sensitivity squared) to
decibels lost by the default decode (the guarded inpainter).  Three steps, each on its own split:

    collect   per clip and tau of a grid: that error (of hold and of the default decode), token usage, and the
              measured loss of the default decode (decoded PSNR against the source, minus the full rate's), with
              the per-frame MSEs behind it and two latent statistics;
              --set calibration: every 4th clip of eval/splits/pool_train.txt (41; cached by
              PARTS=calibration eval/prepare_pool_data.sh), --set val: eval/splits/pool_val.txt (18)
    fit       fit loss = scale * error^exponent in log-log on the calibration clips (the scale then unbiased where
              targets are set: mean measured = mean predicted over predictions of 0.1-2 dB); check the prediction on the
              validation clips (predicted against measured loss, per clip and tau); and the same error normalised
              by the clip's full-rate error or a latent stand-in for it, as alternatives
    check     on the validation clips: tokenize with --target-quality D for each D, with and without the encoder's
              check of its prediction on decoded frames, and compare usage and the per-clip spread of loss with the
              fixed tau that gives the same mean loss (interpolated on the grid)

Every step reads and writes with block motion and the shipped inpainter (the defaults).  DAVIS and
tokenbench-mini are not read: they are reported with `latok eval --target-quality` (eval/run_quality_target.sh).

Usage:
    python eval/quality_target.py collect --set calibration
    python eval/quality_target.py collect --set val
    python eval/quality_target.py fit
    python eval/quality_target.py check --targets 0.25,0.5,1 [--check-frames 0,4] [--check-floors 0.25,0.5]
writes data/quality_target/<set>/*.json (per clip, resumable), eval/results/quality_target_fit.{json,md},
eval/results/quality_target_val.{json,md} (with --check-floors: quality_target_val_floors.{json,md})
"""

from __future__ import annotations

import argparse
import json
import math
import statistics

import torch
from tqdm import tqdm

from latok.codec.restore import quality
from latok.codec.restore.quality import QualityCalibration, weighted_error
from latok.codec.tokenizer import LatentTokenizer, source_info
from latok.evaluation.metrics import psnr
from latok.io import frames_to_video, to_8bit_levels
from latok.training.data import read_samples

from harness import ROOT, write_results

TAUS = (0.04, 0.08, 0.15, 0.25, 0.4)
SHARDS = {"calibration": ROOT / "data" / "latents" / "pool" / "calibration", "val": ROOT / "data" / "latents" / "pool" / "val"}
WORK = ROOT / "data" / "quality_target"


def clips(name: str):
    for sample in read_samples(SHARDS[name]):
        latent = torch.from_numpy(sample["latent.npy"]).float().unsqueeze(0)  # (1, C, t, h, w)
        yield sample["json"]["name"], latent, *source_info(frames_to_video(sample["video.npy"]))


def collect(tokenizer: LatentTokenizer, name: str) -> None:
    out = WORK / name
    out.mkdir(parents=True, exist_ok=True)
    sensitivity = tokenizer.vae.value_sensitivity
    for clip, latent, video, source in tqdm(list(clips(name)), desc=f"collect {name}"):
        target = out / f"{clip.replace('/', '__')}.json"
        if target.exists():
            continue
        size = video.shape[-3:]
        full_frames = frame_mse(tokenizer.vae.decode(latent, size=size), video)
        full = mse_psnr(statistics.mean(full_frames))
        rows = []
        for tau in TAUS:
            adaptive = tokenizer.tokenize(latent, source, tau=tau)
            hold = tokenizer.restore(adaptive, "hold")
            restored = tokenizer.restore(adaptive)  # the default decode
            frames = frame_mse(tokenizer.vae.decode(restored, size=size), video)
            rows.append({"tau": tau, "usage": adaptive.token_usage, "error_hold": weighted_error(hold, latent, sensitivity),
                         "error_default": weighted_error(restored, latent, sensitivity), "loss_db": full - mse_psnr(statistics.mean(frames)),
                         "frame_mse": frames})  # fmt: skip
        record = {"clip": clip, "full_rate_psnr": full, "full_rate_frame_mse": full_frames, **latent_statistics(latent, sensitivity), "rows": rows}
        target.write_text(json.dumps(record, indent=1) + "\n")


def frame_mse(video: torch.Tensor, reference: torch.Tensor) -> list[float]:
    """Per frame, the MSE on the 8-bit scale of ``psnr`` (whose clip MSE is their mean)."""
    return to_8bit_levels(video).sub(to_8bit_levels(reference)).pow(2).mean(dim=(0, 1, 3, 4)).tolist()


def mse_psnr(mse: float) -> float:
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def latent_statistics(latent: torch.Tensor, sensitivity) -> dict:
    """Latent-only candidates for what the full-rate decode's error scales with: the decoder-weighted spatial
    gradient energy and variance of the clip's latent."""
    weight = torch.tensor(sensitivity, dtype=torch.float32).pow(2).view(1, -1, 1, 1, 1)
    x = latent.float()
    gradient = (x[..., 1:, :] - x[..., :-1, :]).pow(2).mul(weight).sum(1).mean() + (x[..., 1:] - x[..., :-1]).pow(2).mul(weight).sum(1).mean()
    variance = x.var(dim=(2, 3, 4), keepdim=True).mul(weight).sum()
    return {"latent_gradient": float(gradient), "latent_variance": float(variance)}


def load(name: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((WORK / name).glob("*.json"))]


def fit_log_log(points: list[tuple[float, float]]) -> QualityCalibration:
    """Least squares of log loss on log error."""
    xs, ys = [math.log(e) for e, _ in points], [math.log(l) for _, l in points]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return QualityCalibration(scale=math.exp(my - slope * mx), exponent=slope)


def unbiased(model: QualityCalibration, rows: list[dict], key: str, working: tuple[float, float] = (0.1, 2.0)) -> QualityCalibration:
    """``model`` rescaled so that, over the rows it predicts within the ``working`` range of targets (dB), the mean
    measured loss equals the mean prediction: a least-squares fit in log-log predicts the geometric mean, and a
    target is met on the arithmetic one."""
    pairs = [(model.loss_db(r[key]), r["loss_db"]) for r in rows if working[0] <= model.loss_db(r[key]) <= working[1]]
    factor = sum(m for _, m in pairs) / sum(p for p, _ in pairs)
    return QualityCalibration(scale=model.scale * factor, exponent=model.exponent)


def usable(rows: list[dict], key: str) -> list[tuple[float, float]]:
    """(error, loss) pairs the log-log fit can take: both positive (a clip at tau that drops nothing loses nothing)."""
    return [(r[key], r["loss_db"]) for r in rows if r[key] > 0 and r["loss_db"] > 0.005]


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(v):
        order = sorted(range(len(v)), key=v.__getitem__)
        out = [0.0] * len(v)
        for rank, i in enumerate(order):
            out[i] = float(rank)
        return out

    ra, rb = ranks(a), ranks(b)
    return statistics.correlation(ra, rb)


def fit() -> None:
    calibration, val = load("calibration"), load("val")
    report = {"command": "python eval/quality_target.py fit", "taus": TAUS, "calibration_clips": len(calibration), "val_clips": len(val), "fits": {}}
    lines = ["# Predicting the loss of a tau from the latent, before any decode", "",
             f"`python eval/quality_target.py fit`: loss = scale x error^exponent fitted in log-log on {len(calibration)} "
             f"calibration clips (every 4th of the pool's training split) x {len(TAUS)} taus, the scale then set so that the "
             f"mean measured loss equals the mean prediction where it predicts 0.1-2 dB; checked on the {len(val)} "
             "validation clips.  Error: the weighted squared error against the true latent (channels by the decoder's "
             "sensitivity squared) of the motion-compensated hold (what the encoder computes) or of the default decode "
             "(for comparison); loss: the default decode's PSNR against the source, below the full rate's.", "",
             "| error of | scale | exponent | val: mean abs error (dB) | val: median abs error (dB) | val: Spearman |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for key in ("error_hold", "error_default"):
        rows = [r for c in calibration for r in c["rows"]]
        model = unbiased(fit_log_log(usable(rows, key)), rows, key)
        pairs = [(model.loss_db(r[key]), r["loss_db"]) for c in val for r in c["rows"]]
        errors = [abs(p - m) for p, m in pairs]
        entry = {"scale": model.scale, "exponent": model.exponent, "val_mean_abs_db": statistics.mean(errors),
                 "val_median_abs_db": statistics.median(errors), "val_spearman": spearman(*zip(*pairs))}  # fmt: skip
        report["fits"][key] = entry
        lines.append(f"| {key.split('_')[1]} | {model.scale:.4g} | {model.exponent:.4f} | {entry['val_mean_abs_db']:.3f} | "
                     f"{entry['val_median_abs_db']:.3f} | {entry['val_spearman']:.3f} |")  # fmt: skip
    hold = report["fits"]["error_hold"]
    model = QualityCalibration(hold["scale"], hold["exponent"])
    lines += ["", "Per validation clip, hold-error fit: predicted / measured loss (dB) at each tau", "",
              "| clip | " + " | ".join(f"tau {t:g}" for t in TAUS) + " |", "|---|" + "---|" * len(TAUS)]  # fmt: skip
    for c in val:
        cells = [f"{model.loss_db(r['error_hold']):.2f} / {r['loss_db']:.2f}" for r in c["rows"]]
        lines.append(f"| {c['clip']} | " + " | ".join(cells) + " |")
    report["normalised"] = normalised_fits(calibration, val)
    lines += ["", "Does the loss scale with the clip's own full-rate error?  If a fill's added pixel error simply added to the",
              "autoencoder's, loss = 10 log10(1 + a x error^b / m) with m the clip's full-rate MSE (known only after a decode) or",
              "a latent-only stand-in for it; fitted the same way (least squares in log loss on the calibration clips):", "",
              "| normalised by | a | b | val: mean abs error (dB) | val: median abs error (dB) |", "|---|---|---|---|---|"]  # fmt: skip
    for name, entry in report["normalised"].items():
        lines.append(f"| {name} | {entry['a']:.4g} | {entry['b']:.3f} | {entry['val_mean_abs_db']:.3f} | {entry['val_median_abs_db']:.3f} |")
    best = min(report["normalised"], key=lambda name: report["normalised"][name]["val_mean_abs_db"])
    lines += ["", f"Best on the validation clips: {best}."]
    write_results("quality_target_fit", report, "\n".join(lines))


NORMALISERS = {
    "nothing (m = 1)": lambda clip: 1.0,
    "full-rate MSE (a decode)": lambda clip: statistics.mean(clip["full_rate_frame_mse"]),
    "full-rate MSE of frames 0, 8, 16": lambda clip: statistics.mean(clip["full_rate_frame_mse"][i] for i in (0, 8, 16)),
    "the latent's weighted spatial gradient": lambda clip: clip["latent_gradient"],
}


def normalised_fits(calibration: list[dict], val: list[dict]) -> dict:
    """Per normaliser m: loss = 10 log10(1 + a e^b / m) fitted by a grid over (log a, b) on the calibration
    clips' hold errors (least squares in log loss, losses over 0.03 dB), scored on the validation clips."""
    out = {}
    for name, normaliser in NORMALISERS.items():
        points = [(r["error_hold"], r["loss_db"], normaliser(c)) for c in calibration for r in c["rows"] if r["error_hold"] > 0 and r["loss_db"] > 0.03]

        def predict(a, b, error, m):
            return 10.0 * math.log10(1.0 + a * error**b / m)

        def cost(a, b):
            return sum((math.log(max(predict(a, b, e, m), 1e-9)) - math.log(loss)) ** 2 for e, loss, m in points)

        _, a, b = min((cost(math.exp(la / 10), b / 50), math.exp(la / 10), b / 50) for la in range(-150, 151, 3) for b in range(30, 81, 2))
        errors = [abs(predict(a, b, r["error_hold"], normaliser(c)) - r["loss_db"]) for c in val for r in c["rows"]]
        out[name] = {"a": a, "b": b, "val_mean_abs_db": statistics.mean(errors), "val_median_abs_db": statistics.median(errors)}
    return out


def interpolate(xs: list[float], ys: list[float], x: float) -> float:
    """Piecewise-linear y(x) for increasing xs, clamped at the ends."""
    if x <= xs[0]:
        return ys[0]
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 > x0 else y1
    return ys[-1]


def check(tokenizer: LatentTokenizer, targets: list[float], check_counts: list[int], floors: list[float] | None = None, name: str | None = None) -> None:
    """``floors``: compare these lower ends of the check's factor range too (how far one check may lower the map,
    so raise tau); ``None``: the shipped range only.  ``name``: the results' stem (default: quality_target_val, with
    floors quality_target_val_floors)."""
    grid = {c["clip"]: c for c in load("val")}
    shipped = quality.CHECK_FACTOR_RANGE
    variants = [(target, count, floor) for target in targets for count in check_counts for floor in (floors or [shipped[0]]) if count or floor == (floors or [shipped[0]])[0]]
    checking = {count: LatentTokenizer(tokenizer.vae, quality_check_frames=count) for count in check_counts}
    rows = []
    for clip, latent, video, source in tqdm(list(clips("val")), desc="check"):
        size = video.shape[-3:]
        full = grid[clip]["full_rate_psnr"]
        row = {"clip": clip}
        for target, count, floor in variants:
            quality.CHECK_FACTOR_RANGE = (floor, shipped[1])
            adaptive = checking[count].tokenize(latent, source, target_quality=target, video=video)
            measured = psnr(tokenizer.vae.decode(checking[count].restore(adaptive), size=size), video)
            row[label(target, count, floor if floors else None)] = {"tau": adaptive.tau, "usage": adaptive.token_usage, "loss_db": full - measured}
        quality.CHECK_FACTOR_RANGE = shipped
        rows.append(row)
    # the fixed tau with the same mean loss, on the grid: mean loss and usage over the clips at each tau
    mean_loss = [statistics.mean(grid[r["clip"]]["rows"][i]["loss_db"] for r in rows) for i in range(len(TAUS))]
    summary = {}
    command = f"python eval/quality_target.py check --targets {','.join(f'{t:g}' for t in targets)} --check-frames {','.join(map(str, check_counts))}"
    command += f" --check-floors {','.join(f'{f:g}' for f in floors)}" if floors else ""
    command += f" --name {name}" if name else ""
    lines = ["# Quality target against a fixed tau, pool validation split", "",
             f"`{command}`: {len(rows)} clips of eval/splits/pool_val.txt, the default decode.  Checked: the encoder decodes "
             "that many frames at the predicted tau, scales the map by measured over predicted loss and searches tau again "
             "(`quality_check_frames`; 0: the prediction alone), the scale moving by at most [floor, 4] (floor: the lowest "
             "factor, shown where several are compared).  Fixed tau: the tau of the grid (interpolated) whose mean loss "
             "equals the target's measured mean loss; its per-clip usage and loss are interpolated on each clip's grid.", "",
             "| target | checked frames (floor) | mean loss (dB) | loss spread: std (min..max) | mean usage | fixed tau at that mean loss | its usage | its spread: std (min..max) |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for target, count, floor in variants:
        key = label(target, count, floor if floors else None)
        losses, usages = [r[key]["loss_db"] for r in rows], [r[key]["usage"] for r in rows]
        loss = statistics.mean(losses)
        order = sorted(range(len(TAUS)), key=mean_loss.__getitem__)
        tau = interpolate([mean_loss[i] for i in order], [TAUS[i] for i in order], loss)
        fixed_losses = [interpolate(list(TAUS), [x["loss_db"] for x in grid[r["clip"]]["rows"]], tau) for r in rows]
        fixed_usages = [interpolate(list(TAUS), [x["usage"] for x in grid[r["clip"]]["rows"]], tau) for r in rows]
        summary[key] = {"mean_loss_db": loss, "loss_std_db": statistics.pstdev(losses), "loss_min_db": min(losses), "loss_max_db": max(losses),
                        "mean_usage": statistics.mean(usages), "fixed_tau": tau, "fixed_mean_usage": statistics.mean(fixed_usages),
                        "fixed_mean_loss_db": statistics.mean(fixed_losses), "fixed_loss_std_db": statistics.pstdev(fixed_losses),
                        "fixed_loss_min_db": min(fixed_losses), "fixed_loss_max_db": max(fixed_losses)}  # fmt: skip
        s = summary[key]
        lines.append(f"| {target:g} dB | {count}{f' ({floor:g})' if floors and count else ''} | {loss:.3f} | {s['loss_std_db']:.3f} ({s['loss_min_db']:.2f}..{s['loss_max_db']:.2f}) | "
                     f"{s['mean_usage']:.1%} | {tau:.3f} | {s['fixed_mean_usage']:.1%} | {s['fixed_loss_std_db']:.3f} "
                     f"({s['fixed_loss_min_db']:.2f}..{s['fixed_loss_max_db']:.2f}) |")  # fmt: skip
    keys = [label(target, count, floor if floors else None) for target, count, floor in variants]
    lines += ["", "Per clip: tau, usage and measured loss at each target (and checked frames)", "",
              "| clip | " + " | ".join(f"{k}: tau / usage / loss" for k in keys) + " |", "|---|" + "---|" * len(keys)]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['clip']} | " + " | ".join(f"{r[k]['tau']:.3f} / {r[k]['usage']:.1%} / {r[k]['loss_db']:.2f}" for k in keys) + " |")
    stem = name or "quality_target_val" + ("_floors" if floors else "")
    write_results(stem, {"command": command, "summary": summary, "rows": rows}, "\n".join(lines))


def label(target: float, count: int, floor: float | None = None) -> str:
    return f"{target:g} dB, {count} checked" + (f", floor {floor:g}" if floor is not None and count else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("collect", "fit", "check"))
    parser.add_argument("--set", choices=tuple(SHARDS), default="calibration")
    parser.add_argument("--targets", default="0.25,0.5,1")
    parser.add_argument("--check-frames", default="0,4", help="quality_check_frames values to compare (0: the prediction alone)")
    parser.add_argument("--check-floors", default=None, help="lower ends of the check's factor range to compare (default: the shipped one only)")
    parser.add_argument("--name", default=None, help="stem of the results in eval/results (default: quality_target_val[_floors])")
    args = parser.parse_args()
    if args.step == "fit":
        fit()
        return
    tokenizer = LatentTokenizer("taef2")
    if args.step == "collect":
        collect(tokenizer, args.set)
    else:
        floors = None if args.check_floors is None else [float(f) for f in args.check_floors.split(",")]
        check(tokenizer, [float(t) for t in args.targets.split(",")], [int(n) for n in args.check_frames.split(",")], floors, args.name)


if __name__ == "__main__":
    main()
