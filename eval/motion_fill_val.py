"""How should the motion-compensated references follow block motion?  Chosen on the pool validation split.

For every clip of eval/splits/pool_val.txt (cached taef2 latents and frames, eval/prepare_pool_data.sh), with block
motion: the rule at usage 0.5 and at the default tau, restored by the motion-compensated hold, the
motion-compensated interp and the default decode (the guarded inpainter), decoded, and scored in PSNR against the
source frames and against the full-rate decode (the loss the rule and its fill cost).

The variants are the latok this script imports, so one script measures each version of the references:
    composed     the chain composed since a value was kept, sampled once (latok.codec.rule.chain)
    overlapped   the same, with each pixel's vector blended between the four nearest block centres
    rewarped     the previous restored frame warped at every frame (run on the commit before the chain,
                 e.g. PYTHONPATH=<worktree of 05c1c7e>)

Usage:
    python eval/motion_fill_val.py --label composed
    python eval/motion_fill_val.py --label overlapped --overlapped
    PYTHONPATH=/tmp/latok-rewarped python eval/motion_fill_val.py --label rewarped
    python eval/motion_fill_val.py --compare rewarped,composed,overlapped
writes eval/results/motion_fill_val_<label>.json, and with --compare eval/results/motion_fill_val.{json,md}
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess

import torch
from tqdm import tqdm

import latok
from latok.codec.tokenizer import LatentTokenizer, source_info
from latok.evaluation.metrics import psnr
from latok.io import frames_to_video
from latok.training.data import read_samples

from harness import RESULTS, ROOT, write_results

FILLS = ("hold", "interp", "auto")
RATES = {"usage0.5": {"target_usage": 0.5}, "default": {}}


def measure(label: str) -> dict:
    tokenizer = LatentTokenizer("taef2", motion="block")
    rows = []
    for sample in tqdm(read_samples(ROOT / "data" / "latents" / "pool" / "val"), desc=label):
        latent = torch.from_numpy(sample["latent.npy"]).float().unsqueeze(0)  # (1, C, t, h, w)
        video, source = source_info(frames_to_video(sample["video.npy"]))
        size = video.shape[-3:]
        full = tokenizer.vae.decode(latent, size=size)
        row = {"clip": sample["json"]["name"], "full_rate_psnr": psnr(full, video)}
        for rate, arguments in RATES.items():
            adaptive = tokenizer.tokenize(latent, source, **arguments)
            row[f"{rate}/usage"] = adaptive.token_usage
            for fill in FILLS:
                decoded = tokenizer.vae.decode(tokenizer.restore(adaptive, fill), size=size)
                row[f"{rate}/{fill}/psnr"] = psnr(decoded, video)
                row[f"{rate}/{fill}/loss_db"] = row["full_rate_psnr"] - row[f"{rate}/{fill}/psnr"]
        rows.append(row)
    commit = subprocess.run(["git", "-C", str(latok.__path__[0]), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"label": label, "latok": latok.__path__[0], "commit": commit, "split": "eval/splits/pool_val.txt", "rows": rows}


def compare(labels: list[str]) -> None:
    runs = {label: json.loads((RESULTS / f"motion_fill_val_{label}.json").read_text()) for label in labels}
    keys = [k for k in runs[labels[0]]["rows"][0] if k != "clip"]
    means = {label: {k: statistics.mean(r[k] for r in run["rows"]) for k in keys} for label, run in runs.items()}
    lines = ["# Motion-compensated references, pool validation split (18 clips, block motion)", "",
             "`python eval/motion_fill_val.py --compare " + ",".join(labels) + "`: mean decoded PSNR (dB) per fill, "
             "and token usage; `auto` is the default decode (the guarded inpainter).  Choosing split only.", "",
             "| references | " + " | ".join(f"{rate} {fill}" for rate in RATES for fill in FILLS) + " | usage at default tau |",
             "|---|" + "---|" * (len(RATES) * len(FILLS) + 1)]  # fmt: skip
    for label in labels:
        cells = [f"{means[label][f'{rate}/{fill}/psnr']:.2f}" for rate in RATES for fill in FILLS]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {means[label]['default/usage']:.1%} |")
    base = labels[0]
    lines += ["", f"Per clip, usage 0.5, default decode, against {base} (dB):", "",
              "| clip | " + " | ".join(labels[1:]) + " |", "|---|" + "---|" * (len(labels) - 1)]  # fmt: skip
    for index, row in enumerate(runs[base]["rows"]):
        cells = [f"{runs[label]['rows'][index]['usage0.5/auto/psnr'] - row['usage0.5/auto/psnr']:+.2f}" for label in labels[1:]]
        lines.append(f"| {row['clip']} | " + " | ".join(cells) + " |")
    write_results("motion_fill_val", {"command": f"python eval/motion_fill_val.py --compare {','.join(labels)}", "means": means,
                                      "runs": {label: run["commit"] for label, run in runs.items()}}, "\n".join(lines))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", help="name of this run's references")
    parser.add_argument("--overlapped", action="store_true", help="blend block vectors between block centres")
    parser.add_argument("--compare", help="comma-separated labels already measured; the first is the baseline")
    args = parser.parse_args()
    if args.compare:
        compare(args.compare.split(","))
        return
    if args.overlapped:
        from latok.codec.rule import chain

        chain.OVERLAPPED_BLOCKS = True
    result = measure(args.label)
    (RESULTS / f"motion_fill_val_{args.label}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: statistics.mean(r[k] for r in result["rows"]) for k in result["rows"][0] if k != "clip"}, indent=1))


if __name__ == "__main__":
    main()
