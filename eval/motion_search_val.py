"""How the block motion search trades speed for quality, chosen on the training pool's validation split.

For every clip of eval/splits/pool_val.txt (cached by eval/prepare_pool_data.sh: taef2 latents and frames,
240p, 17 frames), with the block motion of the code measured: the estimate's time (one thread, as
``estimate_motion`` runs it), the token usage at the stream's tau (0.15) under the default rule (the
decoder's metric), and at usage 0.5 the motion-compensated hold, decoded and scored against the frames
(PSNR) and in the latent (MSE weighted by the decoder's sensitivities, in dB).  DAVIS and tokenbench-mini are
not read: this chooses, they report.

``--label`` names the code measured, so the same script times and scores an older checkout (``PYTHONPATH=OLD
python eval/motion_search_val.py --label "every channel"``); ``--search-channels K`` sets the principal
channels the search uses (``latok.codec.rule.global_motion.SEARCH_CHANNELS``).  Each label's rows are kept,
and every label is compared with ``--reference``.

    python eval/motion_search_val.py --label "8 principal channels"   # -> eval/results/motion_search_val.{json,md}
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time

import torch

from latok.codec.restore.fills import motion_hold_fill
from latok.codec.rule import global_motion
from latok.codec.rule.masking import in_rule_metric, redundancy_mask, tau_for_usage
from latok.codec.rule.motion import estimate_motion
from latok.codec.tokens import rule_weights
from latok.evaluation.metrics import psnr
from latok.io import frames_to_video
from latok.training.data import read_samples
from latok.vae import load_vae

from harness import RESULTS, ROOT, write_results

STREAM_TAU = 0.15


def measure(vae, sample: dict, usage: float) -> dict:
    latent = torch.from_numpy(sample["latent.npy"]).float().unsqueeze(0)
    video = frames_to_video(sample["video.npy"])
    weights = rule_weights("decoder", vae.value_sensitivity)
    scaled = in_rule_metric(latent, weights)
    torch.set_num_threads(2)  # estimate_motion runs on one thread whatever this says
    seconds = []
    for _ in range(3):
        started = time.perf_counter()
        motion = estimate_motion(latent, model="block")
        seconds.append(time.perf_counter() - started)
    keep = redundancy_mask(scaled, tau_for_usage(scaled, usage, motion=motion), motion=motion).keep
    held = motion_hold_fill(latent * keep.unsqueeze(1), keep, motion)
    error = ((held - latent) * torch.tensor(weights).view(1, -1, 1, 1, 1)).pow(2).mean().item()
    return {"clip": sample["json"]["name"], "motion_s": statistics.median(seconds), "usage_stream_tau": redundancy_mask(scaled, STREAM_TAU, motion=motion).usage,
            "psnr_hold": psnr(vae.decode(held, size=video.shape[-3:]), video), "latent_error_db": 10 * math.log10(error)}  # fmt: skip


def markdown(result: dict, reference: str, usage: float) -> str:
    runs = result["runs"]
    base = {row["clip"]: row for row in runs[reference]["rows"]}
    lines = ["# Block motion search: speed against quality on the pool validation split", "",
             f"`{result['command']}` on {result['device']}; {result['split']}. Motion: the block model's estimate, median of 3, one "
             f"thread. Usage at tau {STREAM_TAU} under the decoder-metric rule; hold: the motion-compensated hold at usage {usage}, decoded "
             f"(PSNR) and in the latent (sensitivity-weighted MSE, dB, lower is better). Every label against **{reference}**.", "",
             "| search | motion ms / clip | speed-up | hold PSNR dB | Δ PSNR | worst clip Δ | clips worse by > 0.05 dB | latent error Δ dB | usage at tau 0.15 |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    reference_ms = statistics.mean(r["motion_s"] for r in base.values()) * 1e3
    for label, run in runs.items():
        rows = run["rows"]
        deltas = [r["psnr_hold"] - base[r["clip"]]["psnr_hold"] for r in rows]
        error = statistics.mean(r["latent_error_db"] - base[r["clip"]]["latent_error_db"] for r in rows)
        ms = statistics.mean(r["motion_s"] for r in rows) * 1e3
        lines.append(f"| {label} | {ms:.1f} | {reference_ms / ms:.2f}x | {statistics.mean(r['psnr_hold'] for r in rows):.3f} | {statistics.mean(deltas):+.3f} | "
                     f"{min(deltas):+.3f} | {sum(d < -0.05 for d in deltas)} of {len(rows)} | {error:+.3f} | {statistics.mean(r['usage_stream_tau'] for r in rows):.2%} |")  # fmt: skip
    lines += ["", "Per clip, hold PSNR (dB):", "", "| clip | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]
    for clip in base:
        cells = [next((f"{r['psnr_hold']:.2f}" for r in run["rows"] if r["clip"] == clip), "–") for run in runs.values()]
        lines.append(f"| {clip} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True, help="names the code measured")
    parser.add_argument("--search-channels", type=int, help="principal channels the search uses (default: the code's)")
    parser.add_argument("--reference", default="every channel, a frame at a time", help="the label every other is compared with")
    parser.add_argument("--val", default=str(ROOT / "data" / "latents" / "pool" / "val"))
    parser.add_argument("--usage", type=float, default=0.5)
    args = parser.parse_args()
    if args.search_channels is not None:
        global_motion.SEARCH_CHANNELS = args.search_channels
        global_motion.principal_channels.__defaults__ = (args.search_channels,)
    vae = load_vae("taef2")
    vae.progress = False
    path = RESULTS / "motion_search_val.json"
    result = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    result.update(command="python eval/motion_search_val.py --label LABEL [--search-channels K]", device=f"cpu, {os.cpu_count()} cores, torch {torch.__version__}",
                  split="eval/splits/pool_val.txt (18 clips of ../shared/data/train; selects, never reports)")  # fmt: skip
    result["runs"][args.label] = {"rows": [measure(vae, sample, args.usage) for sample in read_samples(args.val)]}
    reference = args.reference if args.reference in result["runs"] else args.label
    write_results("motion_search_val", result, markdown(result, reference, args.usage))


if __name__ == "__main__":
    main()
