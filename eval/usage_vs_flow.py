"""Is latok's token usage a motion score?  Spearman correlation with Farneback optical flow on the pool.

Curation pipelines drop static clips by their mean optical-flow magnitude. For every clip of the shared
training pool (`pool_train` + `pool_val`, 180 clips; measuring only, nothing is chosen), at DESIGN.md's
protocol (17 frames from frame 0 at 240p):

- latok's token usage at the default settings (taef2, block motion, τ = 0.15; the lit guard off, which
  does not change the mask), and the seconds of the encode that gives it;
- OpenCV's Farneback flow between consecutive frames (grey, 240p, OpenCV's documented example
  parameters), its mean magnitude in pixels, and its seconds.

Resumable: clips already in the output are not measured again.

    python eval/usage_vs_flow.py    # -> eval/results/usage_vs_flow.{json,md}; needs opencv-python-headless (eval extra)
"""

from __future__ import annotations

import json
import os
import statistics
import time

import numpy as np
from tqdm import tqdm

from harness import RESULTS, ROOT, clip_set, write_results
from latok.codec.tokenizer import LatentTokenizer
from latok.io import video_to_frames

PARTIAL = RESULTS / "usage_vs_flow.partial.json"


def flow_magnitude(frames: np.ndarray) -> float:
    """Mean Farneback flow magnitude (pixels per frame) over consecutive pairs of ``(T, H, W, 3)`` uint8 frames."""
    import cv2

    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    means = []
    for before, after in zip(grey, grey[1:]):
        flow = cv2.calcOpticalFlowFarneback(before, after, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        means.append(float(np.linalg.norm(flow, axis=2).mean()))
    return statistics.mean(means)


def main() -> None:
    from scipy.stats import spearmanr

    os.environ.setdefault("LATOK_WEIGHTS_DIR", str(ROOT.parent / "shared" / "weights"))
    rows = json.loads(PARTIAL.read_text()) if PARTIAL.exists() else {}
    tokenizer = LatentTokenizer("taef2", lit_guard=False)
    tokenizer.vae.progress = False
    for clip in tqdm(clip_set("pool_train") + clip_set("pool_val"), desc="usage vs flow"):
        if clip.name in rows:
            continue
        loaded = clip.load()
        start = time.perf_counter()
        usage = tokenizer.encode(loaded).token_usage
        latok_s = time.perf_counter() - start
        frames = video_to_frames(loaded.video)
        start = time.perf_counter()
        flow = flow_magnitude(frames)
        rows[clip.name] = {"token_usage": usage, "flow": flow, "latok_s": latok_s, "flow_s": time.perf_counter() - start,
                           "domain": clip.name.split("/")[1]}  # fmt: skip
        PARTIAL.write_text(json.dumps(rows, indent=1))
    usage = [r["token_usage"] for r in rows.values()]
    flow = [r["flow"] for r in rows.values()]
    rho = spearmanr(usage, flow).statistic
    domains = {}
    for domain in sorted({r["domain"] for r in rows.values()}):
        chosen = [r for r in rows.values() if r["domain"] == domain]
        if len(chosen) >= 5:
            domains[domain] = {"clips": len(chosen), "spearman": spearmanr([r["token_usage"] for r in chosen], [r["flow"] for r in chosen]).statistic}
    result = {
        "command": "python eval/usage_vs_flow.py", "clips": len(rows), "spearman": rho, "by_domain": domains,
        "seconds_per_clip": {"latok_encode": statistics.mean(r["latok_s"] for r in rows.values()),
                             "farneback": statistics.mean(r["flow_s"] for r in rows.values())},
        "rows": rows,
    }  # fmt: skip
    lines = ["# Token usage against optical flow", "",
             f"`{result['command']}`: {len(rows)} pool clips, 17 frames at 240p, this CPU. Spearman ρ(token usage, mean Farneback "
             f"flow magnitude) = **{rho:.3f}**.", "", "| domain | clips | Spearman ρ |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {d} | {v['clips']} | {v['spearman']:.3f} |" for d, v in domains.items()]
    seconds = result["seconds_per_clip"]
    lines += ["", f"Seconds per clip: latok encode (taef2 + rule + motion) {seconds['latok_encode']:.2f}, Farneback {seconds['farneback']:.2f}."]
    write_results("usage_vs_flow", result, "\n".join(lines))
    PARTIAL.unlink()


if __name__ == "__main__":
    main()
