"""Which interpolation the motion-compensated references warp with, chosen on the pool validation split.

For every clip of eval/splits/pool_val.txt (cached taef2 latents, eval/prepare_pool_data.sh) and global and
block motion: the motion-compensated rule at usage 0.5, then the motion-compensated hold with the previous
restored frame warped by grid_sample's nearest, bilinear or bicubic interpolation; the error on dropped
positions is measured in the decoder's metric (the squared error it causes in decoded pixels, about;
:meth:`latok.VideoAutoencoder.decoder_metric`, as estimated on the pool's training clips and saved with the
inpainter trained there), reported in dB relative to bilinear.  No decoding.

Usage:
    python eval/warp_modes_val.py
writes eval/results/warp_modes_val.{json,md}
"""

from __future__ import annotations

import math
import statistics

import torch

from latok.codec.restore.inpainter import InpaintingTransformer
from latok.codec.rule.masking import redundancy_mask, tau_for_usage
from latok.codec.rule.motion import estimate_motion, warp
from latok.training.data import read_samples

from harness import ROOT, write_results

MODES = ("nearest", "bilinear", "bicubic")


def held(latent: torch.Tensor, keep: torch.Tensor, motion: torch.Tensor, mode: str) -> torch.Tensor:
    """latok.codec.restore.fills.motion_hold_fill with ``mode`` interpolation."""
    restored = [latent[:, :, 0]]
    for t in range(1, latent.shape[2]):
        restored.append(torch.where(keep[:, t].unsqueeze(1), latent[:, :, t], warp(restored[-1], motion[:, t], mode)))
    return torch.stack(restored, dim=2)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inpainter", default=str(ROOT / "data" / "train_out" / "taef2-lit-xs-pool"), help="checkpoint holding the decoder metric")
    args = parser.parse_args()
    samples = read_samples(ROOT / "data" / "latents" / "pool" / "val")
    factor = torch.linalg.cholesky(InpaintingTransformer.from_pretrained(args.inpainter).decoder_metric.float())  # G = L L^T
    rows = []
    for sample in samples:
        latent = torch.from_numpy(sample["latent.npy"]).float().unsqueeze(0)
        row = {"clip": sample["json"]["name"]}
        for model in ("global", "block"):
            motion = estimate_motion(latent, model=model)
            keep = redundancy_mask(latent, tau_for_usage(latent, 0.5, motion=motion), motion=motion).keep
            sparse = latent * keep.unsqueeze(1)
            for mode in MODES:
                difference = (held(sparse, keep, motion, mode) - latent) * (~keep).unsqueeze(1)
                row[f"{model}/{mode}"] = float(torch.einsum("bcthw,cd->bdthw", difference, factor).pow(2).sum())
        rows.append(row)
    report = {"command": "python eval/warp_modes_val.py", "split": "eval/splits/pool_val.txt", "rows": rows}
    lines = ["# Warping interpolation of the motion-compensated hold, pool validation split", "",
             "`python eval/warp_modes_val.py`: decoder-metric error of the MC hold on dropped positions at usage 0.5, "
             "in dB against bilinear (negative: less error); mean over the 18 clips.", "",
             "| motion | " + " | ".join(MODES) + " |", "|---|" + "---|" * len(MODES)]  # fmt: skip
    for model in ("global", "block"):
        cells = [statistics.mean(10 * math.log10(r[f"{model}/{mode}"] / r[f"{model}/bilinear"]) for r in rows) for mode in MODES]
        report[model] = dict(zip(MODES, cells))
        lines.append(f"| {model} | " + " | ".join(f"{c:+.2f} dB" for c in cells) + " |")
    write_results("warp_modes_val", report, "\n".join(lines))


if __name__ == "__main__":
    main()
