"""``latok bench``: speed and quality of token allocators, like for like, in one run.

Every allocator runs the whole pipeline on the same clips with the same frozen VAE
and the same fill: encode, choose positions, fill, decode.  Only the choice of
positions differs.  Per allocator: wall seconds per clip (a warm-up pipeline first,
then the median over ``repeats`` of each clip, ``torch.cuda.synchronize()`` on GPU),
encoder / decoder / inpainter passes, token usage, PSNR, SSIM and LPIPS.

``matched_usage``: the rate-targeted baselines (infotok, rlt, fixed) get latok's
usage on each clip, so quality compares at equal token counts.

``progress``: a JSON file that holds every finished clip's rows, rewritten after each
clip; a rerun with the same settings continues after the last finished clip (the first
clip a process runs is preceded by its own warm-up).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from latok._fs import atomic_path
from latok.codec.restore.resolve import fill_for_mask
from latok.evaluation.baselines import AllocationContext, get_allocator
from latok.evaluation.datasets import EvalClip

RATE_TARGETED = ("infotok", "rlt", "fixed")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_pipeline(tokenizer, video: torch.Tensor, allocator, fill: str, target_usage: float | None):
    """encode -> allocate -> fill -> decode; returns (reconstruction, allocation, seconds by stage)."""
    vae = tokenizer.vae
    device = vae.device
    fill_fn = fill_for_mask(fill, tokenizer.inpainters)
    seconds = {}
    _sync(device)
    start = time.perf_counter()
    latent = vae.encode(video)
    _sync(device)
    seconds["encode"] = time.perf_counter() - start
    size = video.shape[-3:]

    def decode(z: torch.Tensor, frames: slice) -> torch.Tensor:  # latent frames `frames` of z (per-frame backends)
        return vae.decode(z[:, :, frames], size=(frames.stop - frames.start, *size[1:]))

    context = AllocationContext(
        video=video, latent=latent, decode=decode, fill=fill_fn, fill_is_model=fill_fn.uses_model,
        target_usage=target_usage, temporal_ratio=vae.temporal_ratio, default_tau=tokenizer.default_tau,
        value_steps=tokenizer.value_steps,
    )  # fmt: skip
    start = time.perf_counter()
    allocation = allocator.allocate(context)
    _sync(device)
    seconds["allocate"] = time.perf_counter() - start
    start = time.perf_counter()
    keep = allocation.keep
    sparse = latent * keep.unsqueeze(1)
    tau = allocation.info.get("tau") if allocator.name == "latok" else None  # bounds lit where latok's rule made the mask
    dense = fill_for_mask(fill, tokenizer.inpainters, tau)(sparse, keep, allocation.motion)
    _sync(device)
    seconds["fill"] = time.perf_counter() - start
    start = time.perf_counter()
    reconstruction = vae.decode(dense, size=size)
    _sync(device)
    seconds["decode"] = time.perf_counter() - start
    return reconstruction, allocation, seconds


def bench(
    tokenizer,
    clips: list[EvalClip],
    allocators: list[str],
    fill: str = "hold",
    matched_usage: bool = False,
    repeats: int = 1,
    lpips: bool = True,
    latok_tau: float | None = None,
    progress: Path | None = None,
) -> dict:
    """Run every allocator on every clip; returns the bench.json dictionary."""
    from latok.codec.streams import source_info
    from latok.evaluation.metrics import ReferenceScorer

    if "latok" not in allocators:
        allocators = ["latok", *allocators]
    tau = tokenizer.resolve_tau(tau=latok_tau if latok_tau is not None else tokenizer.default_tau)  # one fixed rule for every clip
    rule = {"tau": tau, "reference": tokenizer.settings.reference, "motion": tokenizer.settings.motion}  # the tokenizer's own rule
    policies = {name: get_allocator(name, **rule) if name == "latok" else get_allocator(name) for name in allocators}
    settings = {"allocators": allocators, "fill": fill, "matched_usage": matched_usage, "repeats": repeats,
                "lpips": lpips, "tau": tau, "motion": tokenizer.settings.motion, "backend": tokenizer.vae.name, "device": _device_name(tokenizer.vae.device),
                "clips": [c.name for c in clips]}  # fmt: skip
    done = _load_progress(progress, settings)
    per_clip = {name: [done[c.name][name] for c in clips if c.name in done] for name in allocators}
    warmed = False
    for clip in tqdm(clips, desc="bench", unit="clip", initial=len(done), total=len(clips)):
        if clip.name in done:
            continue
        video, _ = source_info(clip.load())
        video = video.to(tokenizer.vae.device)
        scorer = ReferenceScorer(video, lpips=lpips)
        latok_usage = None
        for name in allocators:
            target = latok_usage if matched_usage and name in RATE_TARGETED else None
            if not warmed:
                run_pipeline(tokenizer, video, policies[name], fill, target)  # untimed: caches, allocator, threads
            timings = []
            for _ in range(repeats):
                reconstruction, allocation, seconds = run_pipeline(tokenizer, video, policies[name], fill, target)
                timings.append(sum(seconds.values()))
            if name == "latok":
                latok_usage = allocation.usage
            per_clip[name].append({
                "clip": clip.name, "seconds": statistics.median(timings), "stages": seconds,
                "encoder_passes": allocation.passes.encoder, "decoder_passes": allocation.passes.decoder,
                "inpainter_passes": allocation.passes.inpainter, "token_usage": allocation.usage,
                **scorer(reconstruction),
            })  # fmt: skip
        warmed = True
        if progress is not None:
            done[clip.name] = {name: per_clip[name][-1] for name in allocators}
            with atomic_path(progress) as tmp:
                tmp.write_text(json.dumps({"settings": settings, "clips": done}, indent=1) + "\n")
    return _summary(tokenizer, clips, allocators, per_clip, fill, matched_usage, repeats)


def _summary(tokenizer, clips: list[EvalClip], allocators: list[str], per_clip: dict, fill: str, matched_usage: bool, repeats: int) -> dict:
    """The bench.json dictionary from every allocator's per-clip rows."""
    runs = []
    for name in allocators:
        rows = per_clip[name]
        mean = lambda key: statistics.mean(r[key] for r in rows) if all(r[key] is not None for r in rows) else None  # noqa: E731
        runs.append({
            "allocator": name, "seconds_per_clip": mean("seconds"),
            "encoder_passes": mean("encoder_passes"), "decoder_passes": mean("decoder_passes"),
            "inpainter_passes": mean("inpainter_passes"), "token_usage": mean("token_usage"),
            "psnr": mean("psnr"), "ssim": mean("ssim"), "lpips": mean("lpips"),
            "stage_seconds": {s: statistics.mean(r["stages"][s] for r in rows) for s in rows[0]["stages"]},
            "clips": rows,
        })  # fmt: skip
    latok = next(r for r in runs if r["allocator"] == "latok")
    stages = latok["stage_seconds"]
    encode, decode, inpaint = stages["encode"], stages["decode"], stages["fill"]
    return {
        "device": _device_name(tokenizer.vae.device),
        "backend": tokenizer.vae.name,
        "fill": fill,
        "matched_usage": matched_usage,
        "repeats": repeats,
        "clips": [c.name for c in clips],
        "runs": runs,
        "speedup_vs_latok": {r["allocator"]: r["seconds_per_clip"] / latok["seconds_per_clip"] for r in runs if r["allocator"] != "latok"},
        "infotok_bound": {
            "formula": "(E + 2D) / (E + D + L)", "E": encode, "D": decode, "L": inpaint,
            "value": (encode + 2 * decode) / (encode + decode + inpaint),
        },
    }  # fmt: skip


def _load_progress(path: Path | None, settings: dict) -> dict:
    """Finished clips from an earlier run with the same settings (else none)."""
    if path is None or not path.is_file():
        return {}
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return saved["clips"] if saved.get("settings") == settings else {}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import os

    return f"cpu, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def markdown(result: dict, command: str) -> str:
    lines = [
        f"# latok bench: {result['backend']}, fill {result['fill']}, {len(result['clips'])} clips"
        + (", matched usage" if result["matched_usage"] else ""),
        "",
        f"Device: {result['device']}. Median of {result['repeats']} timed run(s) per clip after a warm-up; "
        "seconds cover encode + allocate + fill + decode.",
        "",
        "| allocator | s/clip | × latok | enc | dec | inpaint | usage | PSNR | SSIM | LPIPS |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        ratio = 1.0 if run["allocator"] == "latok" else result["speedup_vs_latok"][run["allocator"]]
        lpips = "–" if run["lpips"] is None else f"{run['lpips']:.4f}"
        lines.append(
            f"| {run['allocator']} | {run['seconds_per_clip']:.2f} | {ratio:.2f} | {run['encoder_passes']:.0f} | "
            f"{run['decoder_passes']:.2f} | {run['inpainter_passes']:.2f} | {run['token_usage']:.1%} | "
            f"{run['psnr']:.2f} | {run['ssim']:.4f} | {lpips} |"
        )
    bound = result["infotok_bound"]
    lines += [
        "",
        f"InfoTok bound (E + 2D) / (E + D + L) from latok's measured stages: E {bound['E']:.2f} s, "
        f"D {bound['D']:.2f} s, L {bound['L']:.3f} s → {bound['value']:.2f}×"
        + (f" (measured: {result['speedup_vs_latok']['infotok']:.2f}×)" if "infotok" in result["speedup_vs_latok"] else ""),
        "",
        f"Command: `{command}`",
    ]
    return "\n".join(lines) + "\n"


PROGRESS_NAME = "bench_progress.json"


def write(result: dict, out: Path, command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "bench.json") as tmp:
        tmp.write_text(json.dumps({**result, "command": command}, indent=1) + "\n")
    with atomic_path(out / "bench.md") as tmp:
        tmp.write_text(markdown(result, command))
