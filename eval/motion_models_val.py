"""Which motion model pays for itself, chosen on the training pool's validation split.

For every clip of eval/splits/pool_val.txt (cached by eval/prepare_pool_data.sh: taef2 latents and frames,
240p, 17 frames from frame 0) and each motion model (none, global, block): the token usage at fixed taus,
and at usage 0.5 the PSNR of the (motion-compensated) hold, decoded and scored against the frames, plus
the time the motion estimate takes.  DAVIS and tokenbench-mini are not read: this chooses, they report.

Usage:
    python eval/motion_models_val.py [--val data/latents/pool/val] [--usage 0.5] [--taus 0.15,0.3]
writes eval/results/motion_models_val.{json,md}
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from latok.codec.restore.fills import hold_fill, motion_hold_fill
from latok.codec.rule.masking import redundancy_mask, tau_for_usage
from latok.codec.rule.motion import estimate_motion
from latok.evaluation.metrics import psnr
from latok.io import frames_to_video
from latok.training.data import read_samples
from latok.vae import load_vae

from harness import ROOT, write_results

MODELS = ("none", "global", "block")


def measure(vae, sample: dict, usage: float, taus: list[float]) -> dict:
    latent = torch.from_numpy(sample["latent.npy"]).float().unsqueeze(0)
    video = frames_to_video(sample["video.npy"])
    size = video.shape[-3:]
    row = {"clip": sample["json"]["name"], "input": sample["json"]["input"]}
    for model in MODELS:
        started = time.perf_counter()
        motion = None if model == "none" else estimate_motion(latent, model=model)
        seconds = time.perf_counter() - started
        tau = tau_for_usage(latent, usage, motion=motion)
        keep = redundancy_mask(latent, tau, motion=motion).keep
        sparse = latent * keep.unsqueeze(1)
        held = hold_fill(sparse, keep) if motion is None else motion_hold_fill(sparse, keep, motion)
        row[model] = {
            "motion_s": seconds,
            "psnr_hold": psnr(vae.decode(held, size=size), video),
            "usage_at": {f"{t:g}": redundancy_mask(latent, t, motion=motion).usage for t in taus},
        }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--val", default=str(ROOT / "data" / "latents" / "pool" / "val"))
    parser.add_argument("--usage", type=float, default=0.5)
    parser.add_argument("--taus", default="0.15,0.3")
    args = parser.parse_args()
    taus = [float(t) for t in args.taus.split(",")]
    vae = load_vae("taef2")
    vae.progress = False
    rows = [measure(vae, sample, args.usage, taus) for sample in read_samples(args.val)]
    report = {
        "command": f"python eval/motion_models_val.py --usage {args.usage} --taus {args.taus}",
        "device": f"cpu, {os.cpu_count()} cores, {torch.get_num_threads()} threads",
        "split": "eval/splits/pool_val.txt (18 clips of ../shared/data/train; selects, never reports)",
        "rows": rows,
    }
    head = " | ".join(f"usage τ={t:g} {m}" for t in taus for m in MODELS)
    lines = [f"# Motion models on the pool validation split, usage {args.usage}", "", f"`{report['command']}` on {report['device']}; {report['split']}.", "",
             f"| clip | hold none | hold global | hold block | {head} |", "|---|---|---|---|" + "---|" * (len(taus) * len(MODELS))]  # fmt: skip
    for row in rows:
        usages = " | ".join(f"{row[m]['usage_at'][f'{t:g}']:.1%}" for t in taus for m in MODELS)
        lines.append(f"| {row['clip']} | " + " | ".join(f"{row[m]['psnr_hold']:.2f}" for m in MODELS) + f" | {usages} |")
    means = {m: statistics.mean(r[m]["psnr_hold"] for r in rows) for m in MODELS}
    usage_means = " | ".join(f"{statistics.mean(r[m]['usage_at'][f'{t:g}'] for r in rows):.1%}" for t in taus for m in MODELS)
    lines.append("| **mean** | " + " | ".join(f"**{means[m]:.2f}**" for m in MODELS) + f" | {usage_means} |")
    worse = sum(r["block"]["psnr_hold"] < r["global"]["psnr_hold"] - 0.05 for r in rows)
    lines += ["", f"block against global: {means['block'] - means['global']:+.2f} dB mean hold PSNR at usage {args.usage}; "
              f"worse by more than 0.05 dB on {worse} of {len(rows)} clips.",
              "Motion estimate per clip (s): " + ", ".join(f"{m} {statistics.mean(r[m]['motion_s'] for r in rows):.3f}" for m in MODELS[1:]) + "."]  # fmt: skip
    write_results("motion_models_val", report, "\n".join(lines))


if __name__ == "__main__":
    main()
