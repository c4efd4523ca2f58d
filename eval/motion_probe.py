"""Motion-compensated rule and hold against the plain ones.

Per clip (taef2, 240p, 17 frames from frame 0): one encode, one global translation per latent frame
(:func:`latok.codec.rule.motion.estimate_motion`), then at usage 0.5 with each reference, the plain rule +
hold against the motion-compensated rule + motion-compensated hold, both decoded and scored (PSNR),
and the same for interp, and for the shipped inpainter with its lit guard (decided against the
truth, as the encoder does; the model was trained without motion), plus the mean d of the two rules
and the time the motion estimate takes against the encode.

Usage:
    python eval/motion_probe.py [--clips blackswan,goat,...] [--usage 0.5]
writes eval/results/motion_probe.{json,md}
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from latok.codec.restore.fills import hold_fill, interp_fill, motion_hold_fill, motion_interp_fill
from latok.codec.restore.guard import decide_lit_guard
from latok.codec.restore.resolve import Inpainters, resolve
from latok.codec.rule.masking import redundancy_mask, tau_for_usage
from latok.codec.rule.motion import estimate_motion
from latok.codec.tokens import AdaptiveLatent, SourceInfo, backend_config_hash, scatter
from latok.evaluation.metrics import psnr
from latok.vae import load_vae

from harness import davis_clip, write_results

# the six sequences the probe reported (all shared DAVIS evaluation clips: nothing is tuned here)
CLIPS = "paragliding-launch,drift-straight,blackswan,goat,soapbox,car-roundabout"


def probe(vae, inpainters, name: str, usage: float) -> dict:
    video = davis_clip(name).load().video
    start = time.perf_counter()
    latent = vae.encode(video)
    encode_seconds = time.perf_counter() - start
    start = time.perf_counter()
    motion = estimate_motion(latent)
    motion_seconds = time.perf_counter() - start
    size = video.shape[-3:]
    row = {"clip": name, "encode_s": encode_seconds, "motion_s": motion_seconds,
           "mean_shift": motion[0, 1:].abs().mean(dim=0).tolist()}  # fmt: skip
    for reference in ("previous", "last-kept"):
        for label, frame_motion in (("plain", None), ("motion", motion)):
            tau = tau_for_usage(latent, usage, reference, motion=frame_motion)
            mask = redundancy_mask(latent, tau, reference, motion=frame_motion)
            sparse = latent * mask.keep.unsqueeze(1)
            if frame_motion is None:
                held, interpolated = hold_fill(sparse, mask.keep), interp_fill(sparse, mask.keep)
            else:
                held, interpolated = motion_hold_fill(sparse, mask.keep, frame_motion), motion_interp_fill(sparse, mask.keep, frame_motion)
            adaptive = AdaptiveLatent.from_dense(
                latent, mask.keep, backend="taef2", backend_config=backend_config_hash(vae), tau=tau, reference=reference,
                source=SourceInfo(*size, fps=24.0), motion=None if frame_motion is None else frame_motion.float(),
                motion_model=None if frame_motion is None else "global",
            )  # fmt: skip
            guarded = decide_lit_guard(adaptive, latent, inpainters)
            lit = resolve(guarded, "lit", inpainters)(scatter(guarded), guarded.keep, guarded.motion)
            free = torch.isfinite(mask.distance)
            row[f"{reference}/{label}"] = {
                "psnr_lit": psnr(vae.decode(lit, size=size), video),
                "lit_frames": sum(guarded.lit_frames),
                "usage": mask.usage,
                "tau": tau,
                "mean_d": float(mask.distance[free].mean()),
                "psnr": psnr(vae.decode(held, size=size), video),
                "psnr_interp": psnr(vae.decode(interpolated, size=size), video),
            }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", default=CLIPS)
    parser.add_argument("--usage", type=float, default=0.5)
    args = parser.parse_args()
    vae = load_vae("taef2")
    vae.progress = False
    inpainters = Inpainters("taef2", vae.latent_channels)  # the shipped checkpoint, trained without motion
    rows = [probe(vae, inpainters, name, args.usage) for name in args.clips.split(",")]
    report = {
        "command": "python eval/motion_probe.py" + ("" if args.clips == CLIPS else f" --clips {args.clips}") + f" --usage {args.usage}",
        "device": f"cpu, {os.cpu_count()} cores, {torch.get_num_threads()} threads",
        "setting": "taef2, DAVIS 480p -> 240p, 17 frames from frame 0, hold fills, global translation per latent frame",
        "rows": rows,
    }
    lines = [f"# Motion-compensated rule and hold at usage {args.usage}", "", f"`{report['command']}` on {report['device']}; {report['setting']}.", "",
             "| clip | mean shift (dy, dx) | ref | hold | MC hold | gain | interp | MC interp | gain | lit+guard | MC lit+guard | gain | mean d plain → MC |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        for reference in ("previous", "last-kept"):
            plain, moved = row[f"{reference}/plain"], row[f"{reference}/motion"]
            shift = ", ".join(f"{v:.2f}" for v in row["mean_shift"])
            lines.append(f"| {row['clip']} | {shift} | {reference} | {plain['psnr']:.2f} | {moved['psnr']:.2f} | "
                         f"{moved['psnr'] - plain['psnr']:+.2f} | {plain['psnr_interp']:.2f} | {moved['psnr_interp']:.2f} | "
                         f"{moved['psnr_interp'] - plain['psnr_interp']:+.2f} | {plain['psnr_lit']:.2f} | {moved['psnr_lit']:.2f} | "
                         f"{moved['psnr_lit'] - plain['psnr_lit']:+.2f} | {plain['mean_d']:.3f} → {moved['mean_d']:.3f} |")  # fmt: skip
    for reference in ("previous", "last-kept"):
        gains = [row[f"{reference}/motion"]["psnr"] - row[f"{reference}/plain"]["psnr"] for row in rows]
        interp_gains = [row[f"{reference}/motion"]["psnr_interp"] - row[f"{reference}/plain"]["psnr_interp"] for row in rows]
        lit_gains = [row[f"{reference}/motion"]["psnr_lit"] - row[f"{reference}/plain"]["psnr_lit"] for row in rows]
        lines.append(f"| **mean** | | {reference} | | | **{statistics.mean(gains):+.2f}** | | | **{statistics.mean(interp_gains):+.2f}** "
                     f"| | | **{statistics.mean(lit_gains):+.2f}** | |")  # fmt: skip
    share = statistics.mean(row["motion_s"] / row["encode_s"] for row in rows)
    lines += ["", f"Motion estimation costs {share:.1%} of the taef2 encode (mean over clips)."]
    write_results("motion_probe", report, "\n".join(lines))


if __name__ == "__main__":
    main()
