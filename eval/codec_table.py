"""Token usage vs quality of the temporal-L1 codec with hold fill, on every shared clip.

Two parts, both on the shared data at height 240 (DESIGN.md's protocol):

``--calibrate``: sweep tau on DAVIS + tokenbench-mini (17 frames from frame 0)
and pick the backend's default tau.  Rule: the largest tau on the grid whose
mean hold-fill PSNR loss against tau = 0 stays within 0.5 dB on DAVIS and on
tokenbench-mini, each.  Writes eval/results/calibrate_tau_<backend>.{json,md}
(``--reuse-sweep`` re-applies the rule to the saved sweep without decoding again).

default: for every shared clip (clips/, tokenbench-mini/) and every DAVIS
sequence, 33 frames from frame 0: usage, PSNR at tau = 0, PSNR with hold fill
at the default tau, .latok bytes and bpp, plus the issue's targets and the
.latok size against its expected size.  Writes
eval/results/codec_table_<backend>.{json,md}.

Latents are cached under eval/cache/ (git-ignored); the VAE runs once per clip.
The cost of masking + packing against the encode is timed by eval/bench_codec.py.

Usage:
    python eval/codec_table.py --calibrate
    python eval/codec_table.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from latok.codec.format.writer import save_latok
from latok.codec.tokenizer import LatentTokenizer, source_info
from latok.evaluation.metrics import psnr
from latok.io import load_clip

from harness import RESULTS, ROOT, clip_set

CACHE = ROOT / "eval" / "cache"
TAU_GRID = [0.05, 0.1, 0.15, 0.2, 0.3]
TABLE_FRAMES = 33
LOSS_BUDGET_DB = 0.5


def shared_clips(include_classic: bool) -> list[tuple[str, Path]]:
    sets = ("davis", "tokenbench", "classic") if include_classic else ("davis", "tokenbench")
    return [(clip.name, clip.path) for name in sets for clip in clip_set(name)]


def encoded(tokenizer: LatentTokenizer, name: str, path: Path, frames: int, height: int):
    """(clip, latent) with the latent cached on disk.

    A per-frame backend is encoded once at the table's length; shorter requests are
    slices of it (identical to encoding fewer frames, since frames are independent).
    """
    if tokenizer.vae.temporal_ratio == 1 and frames < TABLE_FRAMES:
        clip, latent = encoded(tokenizer, name, path, TABLE_FRAMES, height)
        if clip.frames >= frames:
            video = clip.video[:, :, :frames]
            return type(clip)(video, clip.fps, clip.source_size, clip.resized_size, clip.crop), latent[:, :, :frames]
    clip = load_clip(path, frames=frames, height=height)
    cache = CACHE / f"{tokenizer.vae.name}_{name.replace('/', '_')}_{frames}f_{height}p.safetensors"
    if cache.is_file():
        return clip, load_file(cache)["latent"]
    latent = tokenizer.vae.encode(clip.video)
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_file({"latent": latent.contiguous()}, cache)
    return clip, latent


def hold_psnr(tokenizer: LatentTokenizer, clip, latent: torch.Tensor, tau: float) -> tuple[float, float]:
    adaptive = tokenizer.tokenize(latent, source_info(clip)[1], tau=tau)
    video = tokenizer.decode(adaptive, fill="hold")
    return adaptive.token_usage, psnr(video, clip.video)


def calibrate(tokenizer: LatentTokenizer, frames: int, height: int) -> dict:
    rows = []
    for name, path in tqdm(shared_clips(include_classic=False), desc="calibrate"):
        clip, latent = encoded(tokenizer, name, path, frames, height)
        full = psnr(tokenizer.vae.decode(latent, size=clip.video.shape[-3:]), clip.video)
        row = {"clip": name, "psnr_tau0": full, "sweep": []}
        for tau in TAU_GRID:
            usage, quality = hold_psnr(tokenizer, clip, latent, tau)
            row["sweep"].append({"tau": tau, "usage": usage, "psnr": quality, "loss_db": full - quality})
        rows.append(row)
    return summarise(tokenizer.vae.name, frames, height, rows)


def summarise(backend: str, frames: int, height: int, rows: list[dict]) -> dict:
    """Mean curves per calibration set and the chosen tau (see LOSS_BUDGET_DB)."""
    sets = {"all": "", "davis": "davis/", "tokenbench": "tokenbench/"}
    curve = []
    for index, tau in enumerate(TAU_GRID):
        point = {"tau": tau}
        for label, prefix in sets.items():
            points = [row["sweep"][index] for row in rows if row["clip"].startswith(prefix)]
            point[f"{label}_mean_usage"] = statistics.mean(p["usage"] for p in points)
            point[f"{label}_mean_loss_db"] = statistics.mean(p["loss_db"] for p in points)
        curve.append(point)
    within = [p for p in curve if all(p[f"{label}_mean_loss_db"] <= LOSS_BUDGET_DB for label in sets)]
    chosen = max(within, key=lambda p: p["tau"])["tau"] if within else min(TAU_GRID)
    return {
        "what": "tau calibration: hold-fill usage and PSNR loss vs tau=0",
        "rule": f"largest grid tau whose mean hold-fill PSNR loss against tau=0 is <= {LOSS_BUDGET_DB} dB "
        "on DAVIS and on tokenbench-mini separately (a pooled mean lets DAVIS, which stays near full "
        "usage, hide the loss where tokens are actually dropped)",
        "command": "python eval/codec_table.py --calibrate",
        "backend": backend,
        "frames": frames,
        "height": height,
        "curve": curve,
        "chosen_tau": chosen,
        "clips": rows,
    }


def table(tokenizer: LatentTokenizer, frames: int, height: int) -> dict:
    tau = tokenizer.default_tau
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in tqdm(shared_clips(include_classic=True), desc="table"):
            clip, latent = encoded(tokenizer, name, path, frames, height)
            full = psnr(tokenizer.vae.decode(latent, size=clip.video.shape[-3:]), clip.video)
            adaptive = tokenizer.tokenize(latent, source_info(clip)[1], tau=tau)
            file = save_latok(adaptive, Path(tmp) / "clip.latok")
            quality = psnr(tokenizer.decode(adaptive, fill="hold"), clip.video)
            size = file.stat().st_size
            _, channels, t, h, w = adaptive.shape
            rows.append({
                "clip": name,
                "frames": clip.frames,
                "size": f"{clip.video.shape[-1]}x{clip.video.shape[-2]}",
                "usage": adaptive.token_usage,
                "psnr_tau0": full,
                "psnr_hold": quality,
                "loss_db": full - quality,
                "bytes": size,
                "bpp": size * 8 / (clip.frames * clip.video.shape[-2] * clip.video.shape[-1]),
                "kbps": size * 8 / (clip.frames / clip.fps) / 1000,
                "expected_bytes": adaptive.num_tokens * channels * 2 + t * h * w / 8,
            })  # fmt: skip
    robots = [r for r in rows if "robot_" in r["clip"]]
    vtest = next(r for r in rows if r["clip"] == "clips/surveillance_vtest")
    checks = {
        "vtest_usage": vtest["usage"],
        "vtest_loss_db": vtest["loss_db"],
        "vtest_pass": vtest["usage"] <= 0.35 and vtest["loss_db"] <= 0.5,
        "robot_mean_usage": statistics.mean(r["usage"] for r in robots),
        "robot_mean_loss_db": statistics.mean(r["loss_db"] for r in robots),
        "robot_pass": statistics.mean(r["usage"] for r in robots) <= 0.5
        and statistics.mean(r["loss_db"] for r in robots) <= 0.5,
        "max_size_error_vs_expected": max(abs(r["bytes"] / r["expected_bytes"] - 1) for r in rows),
    }
    return {
        "what": "hold-fill codec at the default tau on every shared clip",
        "command": "python eval/codec_table.py",
        "backend": tokenizer.vae.name,
        "tau": tau,
        "frames": frames,
        "height": height,
        "checks": checks,
        "clips": rows,
    }


def markdown(result: dict) -> str:
    if "curve" in result:
        lines = [
            f"# tau calibration ({result['backend']}, {result['frames']} frames, {result['height']}p)",
            "", f"Rule: {result['rule']}. Chosen: **tau = {result['chosen_tau']}**.", "",
            "| tau | usage (all) | loss dB (all) | usage DAVIS | loss dB DAVIS | usage tokenbench | loss dB tokenbench |",
            "|---|---|---|---|---|---|---|",
        ]  # fmt: skip
        for p in result["curve"]:
            lines.append(
                f"| {p['tau']} | {p['all_mean_usage']:.1%} | {p['all_mean_loss_db']:.2f} | "
                f"{p['davis_mean_usage']:.1%} | {p['davis_mean_loss_db']:.2f} | "
                f"{p['tokenbench_mean_usage']:.1%} | {p['tokenbench_mean_loss_db']:.2f} |"
            )
        return "\n".join(lines) + f"\n\nCommand: `{result['command']}`\n"
    c = result["checks"]
    lines = [
        f"# Codec table ({result['backend']}, hold fill, tau = {result['tau']}, {result['frames']} frames, {result['height']}p)",
        "",
        "| clip | size | usage | PSNR tau=0 | PSNR hold | loss (dB) | bytes | bpp | kbps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["clips"]:
        lines.append(
            f"| {r['clip']} | {r['size']} | {r['usage']:.1%} | {r['psnr_tau0']:.2f} | {r['psnr_hold']:.2f} | "
            f"{r['loss_db']:.2f} | {r['bytes']} | {r['bpp']:.3f} | {r['kbps']:.0f} |"
        )
    lines += [
        "",
        f"- surveillance_vtest: usage {c['vtest_usage']:.1%}, loss {c['vtest_loss_db']:.2f} dB "
        f"(target <= 35%, <= 0.5 dB): {'pass' if c['vtest_pass'] else 'MISS'}",
        f"- robot clips: mean usage {c['robot_mean_usage']:.1%}, mean loss {c['robot_mean_loss_db']:.2f} dB "
        f"(target <= 50%, <= 0.5 dB): {'pass' if c['robot_pass'] else 'MISS'}",
        "- masking + packing cost vs the VAE encode: see eval/results/bench_codec.json (`python eval/bench_codec.py`)",
        f"- .latok size vs values + mask bits, worst clip: {c['max_size_error_vs_expected']:.2%} off (target <= 2%)",
        "",
        f"Command: `{result['command']}`",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calibrate", action="store_true", help="sweep tau and pick the default")
    parser.add_argument("--backend", default="taef2")
    parser.add_argument("--frames", type=int, default=None, help="default: 17 to calibrate, 33 for the table")
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--reuse-sweep", action="store_true", help="with --calibrate: re-apply the rule to the saved sweep")
    args = parser.parse_args()
    tokenizer = LatentTokenizer(args.backend)
    if args.calibrate and args.reuse_sweep:
        saved = json.loads((RESULTS / f"calibrate_tau_{args.backend}.json").read_text())
        result = summarise(saved["backend"], saved["frames"], saved["height"], saved["clips"])
        stem = f"calibrate_tau_{args.backend}"
    elif args.calibrate:
        result = calibrate(tokenizer, args.frames or 17, args.height)
        stem = f"calibrate_tau_{args.backend}"
    else:
        result = table(tokenizer, args.frames or 33, args.height)
        stem = f"codec_table_{args.backend}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
