"""How fast is latok in each precision, idle and beside other work, and where does a round trip's time go?

On one shared DAVIS sequence (blackswan; timing only), in one process, for ``--precision fp32`` and ``bf16``:

1. **The round trip** (what a user runs): ``LatentTokenizer.encode`` + save + load + ``decode`` at the default
   settings, 17 frames at 240p, split into its parts: autoencoder encode, motion, mask (rule and packing),
   inpainter (the lit guard at encode, the fill at decode), coding (writing and reading the ``.latok``
   bytes) and autoencoder decode.  The precisions alternate, ``--rounds`` times; medians are reported.
2. **The autoencoder alone**, frames per second each way at 240p (17 frames) and 480p (9 frames), and in bf16
   with ``channels_last`` off (latok's default is on) to see what the memory format gives.
3. ``torch.compile`` of TAEF2's encoder and decoder in bf16 (inductor, CPU): first-call time and speed.

Both 1 and 2 run idle and then beside two CPU-burning processes (``--busy`` adds them; this machine has
2 cores).  GPU rows need a device; they are marked missing when none was lent.

    python eval/precision_speed.py                # -> eval/results/precision_speed.{json,md}
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time

import torch

from latok import LatentTokenizer
from latok.codec.format.reader import load_latok
from latok.codec.format.writer import save_latok
from latok.codec.rule.masking import redundancy_mask
from latok.codec.rule.motion import estimate_motion
from latok.codec.streams import source_info
from latok.vae import load_vae
from latok.vae.precision import cpu_has_bf16

from harness import davis_clip, write_results
from latok.evaluation.datasets import ClipProtocol

PRECISIONS = ("fp32", "bf16")
PARTS = ("autoencoder encode", "motion", "mask", "inpainter", "coding", "autoencoder decode")


def round_trip(tokenizer: LatentTokenizer, clip) -> dict[str, float]:
    """One default round trip, each part timed (the same calls ``encode`` and ``decode`` make, in order)."""
    parts, s = dict.fromkeys(PARTS, 0.0), tokenizer.settings

    def timed(part, fn, *args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        parts[part] += time.perf_counter() - start
        return out

    video, source = source_info(clip)
    latent = timed("autoencoder encode", tokenizer.vae.encode, video)
    motion = timed("motion", estimate_motion, latent, s.motion)
    start = time.perf_counter()
    tau = tokenizer.resolve_tau(latent, None, None, motion)
    keep = redundancy_mask(latent, tau, s.reference, s.keyframe_interval, motion=motion).keep
    adaptive = tokenizer.tokens(latent, keep, tau, source, None, motion)
    parts["mask"] += time.perf_counter() - start
    adaptive = timed("inpainter", tokenizer.guard_lit, adaptive, latent, video)
    start = time.perf_counter()
    with _scratch() as path:
        save_latok(adaptive, path)
        adaptive = load_latok(path)
    parts["coding"] += time.perf_counter() - start
    restored = timed("inpainter", tokenizer.restore, adaptive)
    timed("autoencoder decode", tokenizer.vae.decode, restored, size=(source.frames, source.height, source.width))
    return parts


@contextlib.contextmanager
def _scratch():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp) / "clip.latok"


def autoencoder_fps(vae, video: torch.Tensor) -> tuple[float, float]:
    start = time.perf_counter()
    latent = vae.encode(video)
    encode = time.perf_counter() - start
    start = time.perf_counter()
    vae.decode(latent)
    return video.shape[2] / encode, video.shape[2] / (time.perf_counter() - start)


@contextlib.contextmanager
def burners(count: int):
    """``count`` processes spinning on the CPU for as long as the block runs."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def measure(condition: str, rounds: int, clips: dict) -> dict:
    tokenizers = {p: LatentTokenizer("taef2", precision=p) for p in PRECISIONS}
    vaes = {**{p: t.vae for p, t in tokenizers.items()}, "bf16, channels_last off": load_vae("taef2", precision="bf16", channels_last=False)}
    for vae in vaes.values():
        vae.progress = False
    round_trip(tokenizers["bf16"], clips["240p"])  # warm-up: the inpainter, oneDNN's kernels
    trips = {p: [] for p in PRECISIONS}
    fps = {(name, size): [] for name in vaes for size in clips}
    for _ in range(rounds):
        for precision in PRECISIONS:
            trips[precision].append(round_trip(tokenizers[precision], clips["240p"]))
        for name, vae in vaes.items():
            for size, clip in clips.items():
                fps[name, size].append(autoencoder_fps(vae, clip.video))
    result = {"condition": condition, "round_trip": {}, "autoencoder_fps": {}}
    for precision, samples in trips.items():
        parts = {part: statistics.median(s[part] for s in samples) for part in PARTS}
        result["round_trip"][precision] = {"seconds": statistics.median(sum(s.values()) for s in samples), "parts": parts}
    for (name, size), samples in fps.items():
        result["autoencoder_fps"].setdefault(name, {})[size] = {
            "encode": statistics.median(e for e, _ in samples), "decode": statistics.median(d for _, d in samples)}
    fp32, bf16 = (result["round_trip"][p]["seconds"] for p in PRECISIONS)
    result["round_trip_speedup"] = fp32 / bf16
    return result


def compiled_bf16(clip) -> dict:
    """TAEF2 in bf16 under ``torch.compile`` (inductor): first call, then steady frames/s each way."""
    vae = load_vae("taef2", precision="bf16")
    vae.progress = False
    try:
        vae.encoder, vae.decoder = torch.compile(vae.encoder), torch.compile(vae.decoder)
        start = time.perf_counter()
        latent = vae.encode(clip.video)
        vae.decode(latent)
        first = time.perf_counter() - start
        samples = [autoencoder_fps(vae, clip.video) for _ in range(2)]
        encode, decode = statistics.median(e for e, _ in samples), statistics.median(d for _, d in samples)
    except Exception as error:  # noqa: BLE001 - a failed compile is a finding, reported as such
        return {"error": str(error).strip().splitlines()[0][:300]}
    return {"first_call_seconds": first, "encode_fps": encode, "decode_fps": decode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not cpu_has_bf16():
        raise SystemExit("this CPU has no native bf16 (AVX512-BF16 or AMX): nothing to compare")
    clips = {"240p": davis_clip("blackswan").load(),
             "480p": davis_clip("blackswan", ClipProtocol(frames=9, height=480)).load()}  # fmt: skip
    runs = [measure("idle", args.rounds, clips)]
    with burners(2):
        runs.append(measure("beside two CPU burners", args.rounds, clips))
    result = {
        "command": "python eval/precision_speed.py" + (f" --rounds {args.rounds}" if args.rounds != 3 else ""),
        "machine": f"{os.cpu_count()} cores, {_cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "clip": "davis/blackswan: 17 frames at 240p (round trip, 240p rows), 9 frames at 480p (480p rows)",
        "runs": runs, "compile_bf16_240p": compiled_bf16(clips["240p"]),
        "gpu": "missing: no device was lent to this session",
    }  # fmt: skip
    write_results("precision_speed", result, markdown(result))


def _cpu_name() -> str:
    with open("/proc/cpuinfo") as handle:
        return next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "unknown CPU")


def markdown(result: dict) -> str:
    lines = ["# Speed by precision", "", f"`{result['command']}` on {result['machine']}; {result['clip']}; medians.", ""]
    lines += ["## The default round trip (encode + save + load + decode)", "",
              "| condition | precision | seconds | " + " | ".join(PARTS) + " |", "|---|---|---|" + "---|" * len(PARTS)]  # fmt: skip
    for run in result["runs"]:
        for precision, trip in run["round_trip"].items():
            shares = " | ".join(f"{trip['parts'][p]:.2f} s ({trip['parts'][p] / trip['seconds']:.0%})" for p in PARTS)
            lines.append(f"| {run['condition']} | {precision} | {trip['seconds']:.2f} | {shares} |")
    lines += [""] + [f"- {run['condition']}: bf16 round trip {run['round_trip_speedup']:.2f}× faster than fp32 (target ≥ 1.8×)."
                     for run in result["runs"]]  # fmt: skip
    lines += ["", "## The autoencoder alone (frames/s)", "", "| condition | precision | 240p encode | 240p decode | 480p encode | 480p decode |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for run in result["runs"]:
        for name, sizes in run["autoencoder_fps"].items():
            cells = " | ".join(f"{sizes[s][way]:.2f}" for s in ("240p", "480p") for way in ("encode", "decode"))
            lines.append(f"| {run['condition']} | {name} | {cells} |")
    compiled = result["compile_bf16_240p"]
    lines += ["", "## torch.compile (bf16, 240p, idle)", ""]
    lines.append(f"Failed: {compiled['error']}" if "error" in compiled else
                 f"First call (compile + run) {compiled['first_call_seconds']:.1f} s; then {compiled['encode_fps']:.2f} frames/s "
                 f"encode, {compiled['decode_fps']:.2f} decode.")  # fmt: skip
    lines += ["", f"GPU: {result['gpu']}."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
