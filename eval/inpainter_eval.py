"""Does the Latent Inpainting Transformer beat hold (and interp)? Decoded pixels on whole clips.

DAVIS-240p, 17 frames from frame 0:
- validation sequences (soapbox, libby, goat; never trained on) at --target-usage 0.5:
  PSNR and SSIM of hold, interp and lit, and lit's gains;
- tokenbench-mini at the backend's default tau: lit vs hold per clip (never worse?);
- inpainter seconds vs taef2 encode + decode seconds on the same clip, on this CPU.

Usage:
    python eval/inpainter_eval.py [--checkpoint checkpoints/taef2-lit-xs]
writes eval/results/inpainter_eval_<checkpoint name>.{json,md}
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from tqdm import tqdm

from latok.codec import LatentTokenizer, default_inpainter_path, source_info
from latok.io import load_clip
from latok.metrics import psnr, ssim

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DAVIS = DATA / "davis" / "JPEGImages" / "480p"
VALIDATION = ("soapbox", "libby", "goat")
FILLS = ("hold", "interp", "lit")


def scores(tokenizer: LatentTokenizer, clip, latent: torch.Tensor, **rate) -> dict:
    video, source = source_info(clip)
    adaptive = tokenizer.tokenize(latent, source, **rate)
    row = {"usage": adaptive.token_usage, "tau": adaptive.tau}
    for fill in FILLS:
        decoded = tokenizer.decode(adaptive, fill=fill)
        row[f"psnr_{fill}"] = psnr(decoded, video)
        row[f"ssim_{fill}"] = ssim(decoded, video)
    return row


def timing(tokenizer: LatentTokenizer, clip, repeats: int = 3) -> dict:
    video, source = source_info(clip)
    tokenizer.inpainter  # load before timing
    samples = {"encode": [], "inpaint": [], "decode": []}
    for _ in range(repeats):
        start = time.perf_counter()
        latent = tokenizer.vae.encode(video)
        samples["encode"].append(time.perf_counter() - start)
        adaptive = tokenizer.tokenize(latent, source, target_usage=0.5)
        start = time.perf_counter()
        dense = tokenizer.restore(adaptive, "lit")
        samples["inpaint"].append(time.perf_counter() - start)
        start = time.perf_counter()
        tokenizer.vae.decode(dense, size=video.shape[-3:])
        samples["decode"].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in samples.items()}
    median["inpaint_over_vae"] = median["inpaint"] / (median["encode"] + median["decode"])
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(default_inpainter_path("taef2")))
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--target-usage", type=float, default=0.5)
    args = parser.parse_args()

    tokenizer = LatentTokenizer("taef2", inpainter=args.checkpoint)
    validation = []
    for name in tqdm(VALIDATION, desc="validation"):
        clip = load_clip(DAVIS / name, frames=args.frames, height=240)
        latent = tokenizer.vae.encode(clip.video)
        validation.append({"clip": f"davis/{name}", **scores(tokenizer, clip, latent, target_usage=args.target_usage)})
    tokenbench = []
    for path in tqdm(sorted((DATA / "tokenbench-mini").glob("*.mp4")), desc="tokenbench"):
        clip = load_clip(path, frames=args.frames, height=240)
        latent = tokenizer.vae.encode(clip.video)
        tokenbench.append({"clip": f"tokenbench/{path.stem}", **scores(tokenizer, clip, latent)})
    speed = timing(tokenizer, load_clip(DAVIS / "blackswan", frames=args.frames, height=240))

    mean = {key: statistics.mean(r[key] for r in validation) for key in validation[0] if key != "clip"}
    checks = {
        "val_mean_gain_over_hold_db": mean["psnr_lit"] - mean["psnr_hold"],
        "val_mean_gain_over_best_simple_db": statistics.mean(
            r["psnr_lit"] - max(r["psnr_hold"], r["psnr_interp"]) for r in validation),
        "val_mean_ssim": {fill: mean[f"ssim_{fill}"] for fill in FILLS},
        "tokenbench_worst_lit_minus_hold_db": min(r["psnr_lit"] - r["psnr_hold"] for r in tokenbench),
        "tokenbench_mean_lit_minus_hold_db": statistics.mean(r["psnr_lit"] - r["psnr_hold"] for r in tokenbench),
        "inpaint_over_vae": speed["inpaint_over_vae"],
    }  # fmt: skip
    checks["pass"] = {
        "gain_over_hold_ge_1.5dB": checks["val_mean_gain_over_hold_db"] >= 1.5,
        "gain_over_best_simple_ge_0.5dB": checks["val_mean_gain_over_best_simple_db"] >= 0.5,
        "tokenbench_never_worse": checks["tokenbench_worst_lit_minus_hold_db"] >= 0.0,
        "inpaint_le_10pct_of_vae": checks["inpaint_over_vae"] <= 0.10,
    }
    result = {
        "what": "lit vs hold vs interp, decoded PSNR/SSIM on whole 17-frame DAVIS-240p / tokenbench-mini clips",
        "command": "python eval/inpainter_eval.py" + ("" if args.checkpoint == str(default_inpainter_path("taef2")) else f" --checkpoint {args.checkpoint}"),
        "checkpoint": args.checkpoint,
        "parameters": tokenizer.inpainter.num_parameters,
        "device": "cpu, 2 cores" if not torch.cuda.is_available() else torch.cuda.get_device_name(),
        "target_usage": args.target_usage,
        "default_tau": tokenizer.vae.default_tau,
        "checks": checks,
        "validation": validation,
        "tokenbench": tokenbench,
        "timing_blackswan": speed,
    }
    out = ROOT / "eval" / "results" / f"inpainter_eval_{Path(args.checkpoint).name}"
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    lines = [
        f"# Inpainter evaluation: {result['checkpoint']} ({result['parameters']:,} parameters)",
        "",
        f"Validation (DAVIS-240p, 17 frames, target usage {result['target_usage']}):",
        "",
        "| clip | usage | PSNR hold | PSNR interp | PSNR lit | SSIM hold | SSIM interp | SSIM lit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["validation"]:
        lines.append(
            f"| {r['clip']} | {r['usage']:.1%} | {r['psnr_hold']:.2f} | {r['psnr_interp']:.2f} | {r['psnr_lit']:.2f} | "
            f"{r['ssim_hold']:.4f} | {r['ssim_interp']:.4f} | {r['ssim_lit']:.4f} |"
        )
    lines += ["", f"tokenbench-mini at the default tau ({result['default_tau']}):", "",
              "| clip | usage | PSNR hold | PSNR interp | PSNR lit | lit − hold |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in result["tokenbench"]:
        lines.append(
            f"| {r['clip']} | {r['usage']:.1%} | {r['psnr_hold']:.2f} | {r['psnr_interp']:.2f} | {r['psnr_lit']:.2f} | "
            f"{r['psnr_lit'] - r['psnr_hold']:+.2f} |"
        )
    c, t = result["checks"], result["timing_blackswan"]
    lines += [
        "",
        f"- validation mean lit − hold: {c['val_mean_gain_over_hold_db']:+.2f} dB (target ≥ +1.5)",
        f"- validation mean lit − max(hold, interp): {c['val_mean_gain_over_best_simple_db']:+.2f} dB (target ≥ +0.5)",
        f"- tokenbench worst lit − hold: {c['tokenbench_worst_lit_minus_hold_db']:+.2f} dB (target ≥ 0)",
        f"- inpainter {t['inpaint']:.2f} s vs taef2 encode {t['encode']:.2f} s + decode {t['decode']:.2f} s "
        f"on blackswan: {c['inpaint_over_vae']:.1%} (target ≤ 10%), {result['device']}",
        "",
        f"Command: `{result['command']}`",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
