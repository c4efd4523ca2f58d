"""Encode/decode throughput of TAEF2 at 240p: the bare torch modules against latok's adapter.

The bare module is TAEF2's encoder/decoder called directly on a (N, 3, H, W)
batch in [0, 1] inside ``torch.inference_mode``: the fastest anything built
on these weights can go.  The adapter is ``latok.load_vae("taef2")`` with its
input checks, padding, chunking and layout moves.  Both see the same frames.

What is swept (CPU knobs): channels-last memory format, frames per call
(batching), and the thread count.  Then the adapter at its default settings
and the bare module at the best swept settings run head to head, interleaved
round by round; the target is adapter >= 95% of the bare module's frames/s.

Usage:
    python eval/bench_vae.py                      # writes eval/results/bench_vae_<device>.json
    python eval/bench_vae.py --device cuda --output eval/results/bench_vae_cuda.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

from latok.evaluation.metrics import psnr
from latok.io import read_video
from latok.vae.taesd import TAEF2, TAEF2_DECODER, TAEF2_ENCODER, build_decoder, build_encoder, load_state
from latok.weights import resolve_weight

from harness import ROOT, davis_clip

DEFAULT_INPUT = davis_clip("blackswan").path


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bare_modules(device: torch.device, dtype: torch.dtype, channels_last: bool):
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    encoder = load_state(build_encoder(), resolve_weight(TAEF2_ENCODER))
    decoder = load_state(build_decoder(), resolve_weight(TAEF2_DECODER))
    return (
        encoder.to(device=device, dtype=dtype, memory_format=memory_format),
        decoder.to(device=device, dtype=dtype, memory_format=memory_format),
    )


def bare_runs(video, latent, device, dtype, channels_last: bool, batch: int):
    """(encode, decode) closures calling the bare modules on ``batch`` frames at a time."""
    encoder, decoder = bare_modules(device, dtype, channels_last)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    frames = video[0].transpose(0, 1).add(1).mul(0.5).to(device, dtype).contiguous(memory_format=memory_format)
    latents = latent[0].transpose(0, 1).to(device, dtype).contiguous(memory_format=memory_format)

    @torch.inference_mode()
    def run(module, x):
        for chunk in x.split(batch):
            module(chunk)

    return (lambda: run(encoder, frames)), (lambda: run(decoder, latents))


def adapter_runs(video, device, dtype, **options):
    """(encode, decode) closures through ``latok``'s adapter, its round-trip PSNR, and the adapter."""
    vae = TAEF2(device=device, dtype=dtype, **options)
    latent = vae.encode(video)
    quality = psnr(vae.decode(latent, size=video.shape[-3:]), video)
    return (lambda: vae.encode(video)), (lambda: vae.decode(latent, size=video.shape[-3:])), quality, vae


def measure(runs: dict, frames: int, repeats: int) -> dict:
    """Frames/s of each named closure: one warm-up, then ``repeats`` rounds run interleaved
    (A, B, A, B, ...) so that drift in machine load hits every contender alike; median per name."""
    for fn in runs.values():
        fn()
    samples = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            samples[name].append(seconds(fn))
    return {name: frames / statistics.median(times) for name, times in samples.items()}


def machine(device: torch.device) -> dict:
    info = {
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads_default": torch.get_num_threads(),
    }
    try:
        model = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo"], capture_output=True, text=True)
        info["cpu"] = model.stdout.split(":", 1)[-1].strip() or info["cpu"]
    except OSError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=str(DEFAULT_INPUT), help="clip to encode (default: DAVIS blackswan)")
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--repeats", type=int, default=5, help="rounds of the adapter-vs-bare head to head")
    parser.add_argument("--sweep-repeats", type=int, default=2, help="rounds per setting of the bare sweep")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 17], help="frames per call to sweep")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", default=None, help="JSON path (default: eval/results/bench_vae_<device>.json)")
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    output = Path(args.output or ROOT / "eval" / "results" / f"bench_vae_{device.type}.json")
    video = read_video(args.input, frames=args.frames, height=args.height)
    height, width = video.shape[-2:]
    latent = TAEF2(device=device, dtype=dtype).encode(video)
    all_threads = torch.get_num_threads()

    frames = video.shape[2]
    sweep = []
    for channels_last in (False, True):
        for batch in args.batches:
            encode, decode = bare_runs(video, latent, device, dtype, channels_last, batch)
            fps = measure({"encode_fps": encode, "decode_fps": decode}, frames, args.sweep_repeats)
            sweep.append({"threads": all_threads, "channels_last": channels_last, "batch": batch, **fps})
            print("bare", sweep[-1], flush=True)
    best = max(sweep, key=lambda r: r["encode_fps"] + r["decode_fps"])
    if device.type == "cpu" and all_threads > 1:
        torch.set_num_threads(1)
        encode, decode = bare_runs(video, latent, device, dtype, best["channels_last"], best["batch"])
        fps = measure({"encode_fps": encode, "decode_fps": decode}, frames, args.sweep_repeats)
        sweep.append({"threads": 1, "channels_last": best["channels_last"], "batch": best["batch"], **fps})
        print("bare", sweep[-1], flush=True)
        torch.set_num_threads(all_threads)

    # Head to head: bare at its best settings, adapter at its defaults; interleaved, more repeats.
    bare_encode, bare_decode = bare_runs(video, latent, device, dtype, best["channels_last"], best["batch"])
    adapter_encode, adapter_decode, quality, vae = adapter_runs(video, device, dtype)
    default_settings = {"channels_last": vae.channels_last, "batch": vae._frames_per_chunk(frames, height * width)}
    head_to_head = measure(
        {"bare_encode": bare_encode, "adapter_encode": adapter_encode,
         "bare_decode": bare_decode, "adapter_decode": adapter_decode},
        frames, args.repeats,
    )  # fmt: skip
    print("head to head", head_to_head, flush=True)

    result = {
        "what": "TAEF2 encode/decode frames/s at 240p: bare torch modules vs latok adapter",
        "command": "python eval/bench_vae.py" + (f" --device {args.device}" if args.device != "cpu" else ""),
        "machine": machine(device),
        "clip": {"input": os.path.relpath(args.input, ROOT), "frames": video.shape[2], "height": height, "width": width},
        "dtype": str(dtype),
        "repeats": {"head_to_head": args.repeats, "sweep": args.sweep_repeats},
        "bare_sweep": sweep,
        "bare_best_settings": {k: best[k] for k in ("threads", "channels_last", "batch")},
        "adapter_default_settings": default_settings,
        "head_to_head_fps": head_to_head,
        "adapter_vs_bare": {
            "encode": head_to_head["adapter_encode"] / head_to_head["bare_encode"],
            "decode": head_to_head["adapter_decode"] / head_to_head["bare_decode"],
        },
        "adapter_psnr_db": quality,
        "target": "adapter >= 0.95 x bare",
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("head_to_head_fps", "adapter_vs_bare")}, indent=2))
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
