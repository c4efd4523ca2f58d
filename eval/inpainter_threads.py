"""Does the inpainter stall on a busy machine, as the motion search did?  Its encode-side guard and decode-side
fill on one shared DAVIS sequence (blackswan, 17 frames 240p, default settings; timing only), with one and two
torch threads, idle and beside two CPU-burning processes; median of 3.

    python eval/inpainter_threads.py    # -> eval/results/inpainter_threads.{json,md}
"""

from __future__ import annotations

import os
import statistics
import time

import torch

from latok import LatentTokenizer
from latok.codec.streams import source_info

from harness import davis_clip, write_results
from precision_speed import burners


def main() -> None:
    tokenizer = LatentTokenizer("taef2")
    tokenizer.vae.progress = False
    clip = davis_clip("blackswan").load()
    video, _ = source_info(clip)
    latent = tokenizer.vae.encode(video)
    adaptive = tokenizer.encode(clip)
    tokenizer.restore(adaptive)  # loads the inpainter

    def guard_and_fill() -> float:
        start = time.perf_counter()
        tokenizer.guard_lit(adaptive, latent)
        tokenizer.restore(adaptive)
        return time.perf_counter() - start

    rows = []
    for condition, count in (("idle", 0), ("beside two CPU burners", 2)):
        with burners(count):
            for threads in (1, 2):
                torch.set_num_threads(threads)
                rows.append({"condition": condition, "threads": threads, "seconds": statistics.median(guard_and_fill() for _ in range(3))})
    result = {"command": "python eval/inpainter_threads.py", "machine": f"{os.cpu_count()} cores, torch {torch.__version__}", "rows": rows}
    lines = ["# The inpainter (lit guard + fill) by thread count", "", f"`{result['command']}` on {result['machine']}; blackswan, 17 frames 240p, median of 3.", "",
             "| condition | threads | seconds |", "|---|---|---|"] + [f"| {r['condition']} | {r['threads']} | {r['seconds']:.2f} |" for r in rows]  # fmt: skip
    write_results("inpainter_threads", result, "\n".join(lines))


if __name__ == "__main__":
    main()
