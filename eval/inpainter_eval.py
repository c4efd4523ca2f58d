"""Does the Latent Inpainting Transformer beat hold (and interp)? Decoded pixels on whole clips.

DAVIS-240p, 17 frames from frame 0:
- validation sequences (soapbox, libby, goat; never trained on) at --target-usage 0.5:
  PSNR and SSIM of hold, interp and lit, and lit's gains;
- tokenbench-mini at the backend's default tau: lit vs hold per clip (never worse?);
- inpainter seconds vs taef2 encode + decode seconds on the same clip, on this CPU.

``lit`` is the model alone, on every frame; ``lit+guard`` is what the codec decodes by
default: lit on the latent frames where the encoder's lit guard saw it beat hold, hold on
the others (LatentTokenizer.guard_lit); ``lit+pixel guard`` is the opt-in ``--pixel-guard``: the
encoder decodes the frames where lit wins in latent error with both fills and keeps lit only where its
pixels are closer to the input (extra frame decodes at encode, none at decode).

Usage:
    python eval/inpainter_eval.py [--checkpoint checkpoints/taef2-lit-xs]
writes eval/results/inpainter_eval_<checkpoint name>.{json,md}
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from latok.codec.restore.resolve import default_inpainter_path
from latok.codec.tokenizer import LatentTokenizer, source_info
from latok.evaluation.metrics import psnr, ssim
from latok.io import load_clip

from harness import ROOT, clip_set, davis_clip

VALIDATION = ("soapbox", "libby", "goat")
FILLS = ("hold", "interp", "lit", "guarded", "pixel")  # guarded: lit + the encoder's lit guard; pixel: + --pixel-guard
GUARDED = ("lit", "guarded", "pixel")


def flags(frames) -> str:
    return "".join("1" if f else "0" for f in frames)


def scores(tokenizer: LatentTokenizer, pixel: LatentTokenizer, clip, latent: torch.Tensor, **rate) -> dict:
    video, source = source_info(clip)
    guarded = tokenizer.tokenize(latent, source, lit_guard=True, **rate)
    pixel_guarded = pixel.tokenize(latent, source, lit_guard=True, video=video, **rate)
    unguarded = guarded.without_lit_guard()
    row = {"usage": guarded.token_usage, "tau": guarded.tau, "lit_frames": flags(guarded.lit_frames),
           "pixel_lit_frames": flags(pixel_guarded.lit_frames)}  # fmt: skip
    for fill in FILLS:
        tokens = {"guarded": guarded, "pixel": pixel_guarded}.get(fill, unguarded)
        decoded = tokenizer.decode(tokens, fill="lit" if fill in ("guarded", "pixel") else fill)
        row[f"psnr_{fill}"] = psnr(decoded, video)
        row[f"ssim_{fill}"] = ssim(decoded, video)
    return row


def timing(tokenizer: LatentTokenizer, pixel: LatentTokenizer, clip, repeats: int = 3) -> dict:
    video, source = source_info(clip)
    tokenizer.inpainter  # load before timing
    samples = {"encode": [], "guard": [], "pixel_guard": [], "inpaint": [], "decode": []}
    for _ in range(repeats):
        start = time.perf_counter()
        latent = tokenizer.vae.encode(video)
        samples["encode"].append(time.perf_counter() - start)
        adaptive = tokenizer.tokenize(latent, source, target_usage=0.5, lit_guard=False)
        start = time.perf_counter()
        adaptive = tokenizer.guard_lit(adaptive, latent)
        samples["guard"].append(time.perf_counter() - start)
        start = time.perf_counter()
        pixel.guard_lit(adaptive, latent, video)
        samples["pixel_guard"].append(time.perf_counter() - start)
        start = time.perf_counter()
        dense = tokenizer.restore(adaptive, "lit")
        samples["inpaint"].append(time.perf_counter() - start)
        start = time.perf_counter()
        tokenizer.vae.decode(dense, size=video.shape[-3:])
        samples["decode"].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in samples.items()}
    median["inpaint_over_vae"] = median["inpaint"] / (median["encode"] + median["decode"])
    median["guard_and_inpaint_over_vae"] = (median["guard"] + median["inpaint"]) / (median["encode"] + median["decode"])
    median["pixel_guard_over_encode"] = median["pixel_guard"] / median["encode"]
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(default_inpainter_path("taef2")))
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--target-usage", type=float, default=0.5)
    args = parser.parse_args()

    tokenizer = LatentTokenizer("taef2", inpainter=args.checkpoint)
    pixel = LatentTokenizer(tokenizer.vae, inpainter=tokenizer.inpainter, pixel_guard=True)
    validation = []
    for name in tqdm(VALIDATION, desc="validation"):
        clip = load_clip(davis_clip(name).path, frames=args.frames, height=240)
        latent = tokenizer.vae.encode(clip.video)
        validation.append({"clip": f"davis/{name}", **scores(tokenizer, pixel, clip, latent, target_usage=args.target_usage)})
    tokenbench = []
    for item in tqdm(clip_set("tokenbench"), desc="tokenbench"):
        clip = load_clip(item.path, frames=args.frames, height=240)
        latent = tokenizer.vae.encode(clip.video)
        tokenbench.append({"clip": item.name, **scores(tokenizer, pixel, clip, latent)})
    speed = timing(tokenizer, pixel, load_clip(davis_clip("blackswan").path, frames=args.frames, height=240))

    mean = {key: statistics.mean(r[key] for r in validation) for key in validation[0] if key.startswith(("psnr", "ssim"))}
    checks = {"val_mean_ssim": {fill: mean[f"ssim_{fill}"] for fill in FILLS}, "pass": {}}
    for fill in GUARDED:
        gain = mean[f"psnr_{fill}"] - mean["psnr_hold"]
        over_best = statistics.mean(r[f"psnr_{fill}"] - max(r["psnr_hold"], r["psnr_interp"]) for r in validation)
        worst = min(r[f"psnr_{fill}"] - r["psnr_hold"] for r in tokenbench)
        checks[fill] = {
            "val_mean_gain_over_hold_db": gain,
            "val_mean_gain_over_best_simple_db": over_best,
            "tokenbench_worst_minus_hold_db": worst,
            "tokenbench_mean_minus_hold_db": statistics.mean(r[f"psnr_{fill}"] - r["psnr_hold"] for r in tokenbench),
        }
        checks["pass"][fill] = {
            "gain_over_hold_ge_1.5dB": gain >= 1.5,
            "gain_over_best_simple_ge_0.5dB": over_best >= 0.5,
            "tokenbench_never_worse": worst >= 0.0,
        }
    checks["inpaint_over_vae"] = speed["inpaint_over_vae"]
    checks["guard_and_inpaint_over_vae"] = speed["guard_and_inpaint_over_vae"]
    checks["pass"]["inpaint_le_10pct_of_vae"] = speed["guard_and_inpaint_over_vae"] <= 0.10
    checks["pixel_guard_over_encode"] = speed["pixel_guard_over_encode"]
    model = tokenizer.inpainter
    metric = model.decoder_metric.diagonal() if model.config.decoder_metric else None
    result = {
        "what": "lit vs hold vs interp, decoded PSNR/SSIM on whole 17-frame DAVIS-240p / tokenbench-mini clips",
        "command": "python eval/inpainter_eval.py" + ("" if args.checkpoint == str(default_inpainter_path("taef2")) else f" --checkpoint {args.checkpoint}"),
        "checkpoint": args.checkpoint,
        "parameters": model.num_parameters,
        "fingerprint": model.fingerprint,
        "decoder_metric_diagonal": None if metric is None else {"min": float(metric.min()), "max": float(metric.max())},
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
        "`lit`: the model on every frame. `lit+guard`: the codec's default decode, lit only on the latent frames",
        "where the encoder saw it beat hold (lit guard string: 1 = lit, 0 = hold, one per latent frame).",
        "`+pixel`: lit with the opt-in pixel guard (`--pixel-guard`), decided on decoded frames at encode.",
        "",
        f"Validation (DAVIS-240p, 17 frames, target usage {result['target_usage']}):",
        "",
        "| clip | usage | PSNR hold | PSNR interp | PSNR lit | PSNR lit+guard | PSNR +pixel | SSIM hold | SSIM interp | SSIM lit "
        "| SSIM lit+guard | SSIM +pixel | guard | pixel guard |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["validation"]:
        lines.append(
            f"| {r['clip']} | {r['usage']:.1%} | {r['psnr_hold']:.2f} | {r['psnr_interp']:.2f} | {r['psnr_lit']:.2f} | "
            f"{r['psnr_guarded']:.2f} | {r['psnr_pixel']:.2f} | {r['ssim_hold']:.4f} | {r['ssim_interp']:.4f} | "
            f"{r['ssim_lit']:.4f} | {r['ssim_guarded']:.4f} | {r['ssim_pixel']:.4f} | `{r['lit_frames']}` | `{r['pixel_lit_frames']}` |"
        )
    lines += ["", f"tokenbench-mini at the default tau ({result['default_tau']}):", "",
              "| clip | usage | PSNR hold | PSNR interp | PSNR lit | PSNR lit+guard | PSNR +pixel | lit − hold "
              "| lit+guard − hold | +pixel − hold | guard | pixel guard |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in result["tokenbench"]:
        lines.append(
            f"| {r['clip']} | {r['usage']:.1%} | {r['psnr_hold']:.2f} | {r['psnr_interp']:.2f} | {r['psnr_lit']:.2f} | "
            f"{r['psnr_guarded']:.2f} | {r['psnr_pixel']:.2f} | {r['psnr_lit'] - r['psnr_hold']:+.3f} | "
            f"{r['psnr_guarded'] - r['psnr_hold']:+.3f} | {r['psnr_pixel'] - r['psnr_hold']:+.3f} | "
            f"`{r['lit_frames']}` | `{r['pixel_lit_frames']}` |"
        )
    c, t = result["checks"], result["timing_blackswan"]
    lines += ["", "| check (target) | lit | lit+guard | lit+pixel guard |", "|---|---|---|---|"]
    for key, label in (
        ("val_mean_gain_over_hold_db", "validation mean − hold (≥ +1.5 dB)"),
        ("val_mean_gain_over_best_simple_db", "validation mean − max(hold, interp) (≥ +0.5 dB)"),
        ("tokenbench_worst_minus_hold_db", "tokenbench worst clip − hold (≥ 0 dB)"),
        ("tokenbench_mean_minus_hold_db", "tokenbench mean − hold"),
    ):
        lines.append(f"| {label} | {c['lit'][key]:+.3f} | {c['guarded'][key]:+.3f} | {c['pixel'][key]:+.3f} |")
    lines += [
        "",
        f"- speed: guard {t['guard']:.2f} s (at encode) + lit {t['inpaint']:.2f} s (at decode) vs taef2 encode {t['encode']:.2f} s "
        f"+ decode {t['decode']:.2f} s on blackswan: {c['guard_and_inpaint_over_vae']:.1%} "
        f"(lit alone {c['inpaint_over_vae']:.1%}; target ≤ 10%), {result['device']}",
        f"- the pixel guard instead of the guard: {t['pixel_guard']:.2f} s at encode on blackswan at usage 0.5 "
        f"({c['pixel_guard_over_encode']:.0%} of the taef2 encode; decoding unchanged)",
        f"- errors (training loss, guard) measured in {metric_note(result['decoder_metric_diagonal'])}",
        "",
        f"Command: `{result['command']}`",
    ]
    return "\n".join(lines) + "\n"


def metric_note(diagonal: dict | None) -> str:
    if diagonal is None:
        return "plain latent units (no decoder metric)"
    return (f"the decoder metric: per-channel pixel sensitivity {diagonal['min']:.3g} to {diagonal['max']:.3g} "
            f"({diagonal['max'] / diagonal['min']:.0f}x apart)")  # fmt: skip


if __name__ == "__main__":
    main()
