"""Should the rule measure change in the decoder's metric?  Weighted against unweighted, at equal usage.

The rule drops a position when ``mean_c |z_c - ref_c| < tau``.  Latent channels matter very unequally to the
decoder (latok.vae.taesd.TAEF2.value_sensitivity: 0.63 to 3.8, geometric mean 1), so a change in a channel the
decoder barely sees costs as much as one it shows.  The weighted rule uses ``mean_c s_c |z_c - ref_c|`` (s: the
decoder sensitivity, a property of the frozen decoder; no parameter is fitted), which is the plain rule on the
latent scaled by s per channel.  Both at the same usages (tau picked per clip), block motion estimated on the
unscaled latent, the default decode (guarded inpainter); decoded PSNR on the pool validation split.

Usage:
    python eval/weighted_rule_val.py
writes eval/results/weighted_rule_val.{json,md}
"""

from __future__ import annotations

import statistics

import torch
from tqdm import tqdm

from latok.codec.rule.masking import redundancy_mask, tau_for_usage
from latok.codec.rule.motion import estimate_motion
from latok.codec.tokenizer import LatentTokenizer, source_info
from latok.evaluation.metrics import psnr
from latok.io import frames_to_video
from latok.training.data import read_samples

from harness import ROOT, write_results

USAGES = (0.3, 0.5, 0.7)
RULES = ("unweighted", "weighted")


def main() -> None:
    tokenizer = LatentTokenizer("taef2")
    weights = torch.tensor(tokenizer.vae.value_sensitivity).view(1, -1, 1, 1, 1)
    rows = []
    for sample in tqdm(read_samples(ROOT / "data" / "latents" / "pool" / "val"), desc="clips"):
        latent = torch.from_numpy(sample["latent.npy"]).float().unsqueeze(0)  # (1, C, t, h, w)
        video, source = source_info(frames_to_video(sample["video.npy"]))
        motion = estimate_motion(latent, "block")
        row = {"clip": sample["json"]["name"]}
        for usage in USAGES:
            for rule in RULES:
                measured = latent * weights if rule == "weighted" else latent
                tau = tau_for_usage(measured, usage, motion=motion)
                keep = redundancy_mask(measured, tau, motion=motion).keep
                adaptive = tokenizer.guard_lit(tokenizer.tokens(latent, keep, tau, source, usage, motion), latent)
                decoded = tokenizer.vae.decode(tokenizer.restore(adaptive), size=video.shape[-3:])
                row[f"{usage:g}/{rule}"] = {"usage": adaptive.token_usage, "psnr": psnr(decoded, video)}
        rows.append(row)
    means = {f"{u:g}/{r}": {k: statistics.mean(row[f"{u:g}/{r}"][k] for row in rows) for k in ("usage", "psnr")} for u in USAGES for r in RULES}
    lines = ["# The rule in the decoder's metric, pool validation split", "",
             "`python eval/weighted_rule_val.py`: 18 clips of eval/splits/pool_val.txt, block motion, the default decode; "
             "mean decoded PSNR (dB) and token usage at each target usage.", "",
             "| usage | unweighted | weighted | weighted - unweighted | clips weighted wins |", "|---|---|---|---|---|"]  # fmt: skip
    for u in USAGES:
        a, b = means[f"{u:g}/unweighted"], means[f"{u:g}/weighted"]
        wins = sum(row[f"{u:g}/weighted"]["psnr"] > row[f"{u:g}/unweighted"]["psnr"] for row in rows)
        lines.append(f"| {u:g} | {a['psnr']:.2f} ({a['usage']:.1%}) | {b['psnr']:.2f} ({b['usage']:.1%}) | {b['psnr'] - a['psnr']:+.3f} | {wins}/{len(rows)} |")
    write_results("weighted_rule_val", {"command": "python eval/weighted_rule_val.py", "means": means, "rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
