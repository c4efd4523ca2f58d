"""Does the inpainter restore better when it attends over windows of the size it trained on?

It trains on crops of 17 latent frames x 16 x 16 positions (8 x 8 tokens) and restores 240p frames of 15 x 26 tokens,
and clips of any length; rotary embeddings let it run at any size, but attention then meets distances and numbers of
keys it never saw.  ``latok.codec.restore.windows.in_windows`` runs it over half-overlapping windows instead, blended.
Measured on pool_val only (it selects), in the decoder metric the inpainter trains in: the default decode's error on
dropped positions (the weighted lit guard's weights fitted to the windowed model, as the encoder would) over
motion-compensated hold's, at usage 0.3 and 0.5, block motion:

    spatial    the 17-frame clips (data/latents/pool/val), windows of 8, 12, 16 tokens a side
    temporal   the first 50 frames at 240p of every clip with 50+ (latents cached in data/lit_windows/), windows of
               12, 17, 20, 25 latent frames

Usage:
    python eval/lit_windows.py
writes eval/results/lit_windows.{json,md}
"""

from __future__ import annotations

import statistics

import torch
from tqdm import tqdm

from latok.codec.restore import resolve
from latok.codec.tokenizer import LatentTokenizer, source_info
from latok.io import load_clip

from harness import ROOT, clip_set, write_results
from quality_target import clips as pool_latents

USAGES = (0.3, 0.5)
SPATIAL = {"whole frame": None, "8 tokens": (None, 8), "12 tokens": (None, 12), "16 tokens": (None, 16)}
TEMPORAL = {"whole clip": None, "12 frames": (12, None), "17 frames": (17, None), "20 frames": (20, None), "25 frames": (25, None)}
LONG_FRAMES = 50
CACHE = ROOT / "data" / "lit_windows"


def long_latents(tokenizer: LatentTokenizer):
    CACHE.mkdir(parents=True, exist_ok=True)
    for clip in clip_set("pool_val"):
        cached = CACHE / f"{clip.path.stem}.pt"
        if not cached.exists():
            video = load_clip(clip.path, frames=LONG_FRAMES, height=240)
            if video.frames < LONG_FRAMES:
                continue
            torch.save({"latent": tokenizer.vae.encode(video.video), "source": source_info(video)[1]}, cached)
        record = torch.load(cached, weights_only=False)
        yield clip.path.stem, record["latent"], record["source"]


def ratios(tokenizer: LatentTokenizer, latent: torch.Tensor, source, variants: dict) -> dict:
    """Per usage and variant: the default decode's decoder-metric error on dropped positions over hold's."""
    model, out = tokenizer.inpainter, {}
    for usage in USAGES:
        for name, window in variants.items():
            resolve.LIT_WINDOW = window
            adaptive = tokenizer.tokenize(latent, source, target_usage=usage)
            errors = [model.error(tokenizer.restore(adaptive, fill), latent.float(), adaptive.keep).sum().item() for fill in ("auto", "hold")]
            out[f"{usage:g}/{name}"] = errors[0] / errors[1]
    resolve.LIT_WINDOW = None
    return out


def main() -> None:
    tokenizer = LatentTokenizer("taef2")
    parts = {"spatial": ([(name, latent, source) for name, latent, _, source in pool_latents("val")], SPATIAL),
             "temporal": (list(long_latents(tokenizer)), TEMPORAL)}  # fmt: skip
    result = {"command": "python eval/lit_windows.py", "device": "cpu", "usages": USAGES}
    lines = ["# Inpainting in windows of the trained size, pool validation split", "",
             f"`python eval/lit_windows.py` (CPU): the default decode's error on dropped positions in the decoder metric over "
             "motion-compensated hold's (lower is better; the weighted lit guard fitted to each variant), block motion.", "",
             "| part | clips | usage | " + " | ".join(["variant: mean ratio (geometric)"]) + " |", "|---|---|---|---|"]  # fmt: skip
    for part, (clips, variants) in parts.items():
        rows = [{"clip": name, **ratios(tokenizer, latent, source, variants)} for name, latent, source in tqdm(clips, desc=part)]
        result[part] = rows
        for usage in USAGES:
            cells = [f"{name}: {statistics.mean(r[f'{usage:g}/{name}'] for r in rows):.4f} "
                     f"({statistics.geometric_mean(r[f'{usage:g}/{name}'] for r in rows):.4f})" for name in variants]  # fmt: skip
            lines.append(f"| {part} | {len(rows)} | {usage:g} | " + "; ".join(cells) + " |")
    write_results("lit_windows", result, "\n".join(lines))


if __name__ == "__main__":
    main()
