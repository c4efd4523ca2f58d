"""Cost of masking + packing against the VAE encode (target: <= 3%), on this machine.

One 33-frame DAVIS-240p clip (blackswan): per round, time the taef2 encode, the
temporal-L1 mask at the default tau and at --target-usage 0.5 (tau search by
bisection), and writing the .latok file; rounds are interleaved, medians reported.

Usage:
    python eval/bench_codec.py            # writes eval/results/bench_codec.json
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from latok.codec.format.writer import save_latok
from latok.codec.tokenizer import LatentTokenizer, source_info
from latok.io import load_clip

from harness import davis_clip, write_results

CLIP = davis_clip("blackswan").path
ROUNDS = 5


def main() -> None:
    tokenizer = LatentTokenizer("taef2")
    clip = load_clip(CLIP, frames=33, height=240)
    video, source = source_info(clip)
    samples = {"encode": [], "mask_default_tau": [], "mask_target_usage": [], "pack": []}
    with tempfile.TemporaryDirectory() as tmp:
        latent = tokenizer.vae.encode(video)  # warm-up
        for _ in range(ROUNDS):
            start = time.perf_counter()
            latent = tokenizer.vae.encode(video)
            samples["encode"].append(time.perf_counter() - start)
            start = time.perf_counter()
            adaptive = tokenizer.tokenize(latent, source)
            samples["mask_default_tau"].append(time.perf_counter() - start)
            start = time.perf_counter()
            tokenizer.tokenize(latent, source, target_usage=0.5)
            samples["mask_target_usage"].append(time.perf_counter() - start)
            start = time.perf_counter()
            save_latok(adaptive, Path(tmp) / "clip.latok")
            samples["pack"].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in samples.items()}
    result = {
        "what": "masking + packing time vs taef2 encode time, blackswan 33 frames 416x240",
        "command": "python eval/bench_codec.py",
        "device": f"cpu ({os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads)",
        "rounds": ROUNDS,
        "seconds_median": median,
        "mask_pack_over_encode_default_tau": (median["mask_default_tau"] + median["pack"]) / median["encode"],
        "mask_pack_over_encode_target_usage": (median["mask_target_usage"] + median["pack"]) / median["encode"],
        "target": "<= 0.03",
    }
    write_results("bench_codec", result)


if __name__ == "__main__":
    main()
