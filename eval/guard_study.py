"""How strict should the lit guard be?  Per-frame latent and pixel errors of hold and lit.

The guard decides per latent frame, from latent error alone (the encoder has no decoded
pixels), whether lit beats hold.  Latent error is measured in the inpainter's decoder
metric when it has one (about the decoded pixel error).  Latent and pixel error still do
not agree exactly, so where
lit wins by a hair in latent space it can lose by a hair in pixels.  A margin m makes the
guard pick lit only when its latent error is below (1 - m) x hold's.

taef2 decodes every frame on its own, so a clip's PSNR under any per-frame choice follows
from the per-frame pixel errors of hold and of lit: this script decodes each clip twice per
rate and scores every margin without decoding again.  Hold and lit are the shipped defaults'
(block motion, references composed along it, the rule in the decoder metric).

- ``--set pool_val`` (default): the margin is chosen here, on the training pool's validation
  split (eval/splits/pool_val.txt, 18 clips, 17 frames at 240p, cached by
  ``PARTS=val eval/prepare_pool_data.sh``), at the default rate and at usage 0.3, 0.5 and 0.8.
- ``--set tokenbench``: the tokenbench-mini evaluation clips at the default rate and usage 0.5,
  to report what the chosen margin does on clips that chose nothing.

Usage:
    python eval/guard_study.py [--set pool_val|tokenbench] [--checkpoint DIR]
writes eval/results/guard_study_<set>.{json,md}
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from tqdm import tqdm

from latok.codec.restore.guard import LIT_GUARD_MARGIN
from latok.codec.restore.resolve import default_inpainter_path
from latok.codec.tokenizer import LatentTokenizer, source_info
from latok.io import frames_to_video, load_clip, to_8bit_levels
from latok.training.data import read_samples

from harness import ROOT, clip_set

MARGINS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
WORST_ALLOWED_DB = -0.1  # the chosen margin: the best mean gain among those whose worst clip loses at most this
POOL_VAL = ROOT / "data" / "latents" / "pool" / "val"


def clip_sets(name: str, frames: int):
    """(name, load, {rate label: tokenize arguments}) per clip; ``load()`` gives the clip's latent, video and source."""
    if name == "tokenbench":

        def encoder(path: Path):
            def load(tokenizer: LatentTokenizer):
                video, source = source_info(load_clip(path, frames=frames, height=240))
                return tokenizer.vae.encode(video), video, source

            return load

        rates = {"default": {}, "usage0.5": {"target_usage": 0.5}}
        return [(c.name, encoder(c.path), rates) for c in clip_set("tokenbench")]
    if not POOL_VAL.is_dir():
        raise SystemExit(f"{POOL_VAL} is missing: run PARTS=val eval/prepare_pool_data.sh first")

    def cached(sample: dict):
        def load(tokenizer: LatentTokenizer):
            video, source = source_info(frames_to_video(sample["video.npy"]))
            return torch.from_numpy(sample["latent.npy"]).float().unsqueeze(0), video, source

        return load

    rates = {"default": {}, **{f"usage{u:g}": {"target_usage": u} for u in (0.3, 0.5, 0.8)}}
    return [(sample["json"]["name"], cached(sample), rates) for sample in read_samples(POOL_VAL)]


def frame_errors(tokenizer: LatentTokenizer, load, rates: dict[str, dict]) -> dict[str, dict]:
    """Per rate and latent frame: latent squared error on dropped positions (in the inpainter's
    decoder metric when it has one, as the guard measures it) and decoded pixel squared error
    (8-bit scale, as latok.evaluation.metrics.psnr), for hold and for lit without a guard."""
    latent, video, source = load(tokenizer)
    reference = to_8bit_levels(video)
    rows = {}
    for label, rate in rates.items():
        adaptive = tokenizer.tokenize(latent, source, lit_guard=False, **rate)
        row = {"usage": adaptive.token_usage, "pixels_per_frame": video[0, :, 0].numel()}
        for fill in ("hold", "lit"):
            restored = tokenizer.restore(adaptive, fill)
            row[f"latent_{fill}"] = tokenizer.inpainter.error(restored, latent.float().cpu(), adaptive.keep)[0].tolist()
            decoded = tokenizer.vae.decode(restored, size=video.shape[-3:])
            row[f"pixel_{fill}"] = (to_8bit_levels(decoded) - reference).pow(2).sum(dim=(0, 1, 3, 4)).tolist()
        rows[label] = row
    return rows


def clip_psnr(pixel_error: list[float], pixels_per_frame: int) -> float:
    mse = sum(pixel_error) / (len(pixel_error) * pixels_per_frame)
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def pixel_guarded_gain(row: dict) -> float:
    """PSNR(lit with the pixel guard) - PSNR(hold): on the frames where lit's latent error is below
    hold's, whichever of the two decodes closer to the input (LatentTokenizer(pixel_guard=True))."""
    chosen = [min(lit, hold) if latent_lit < latent_hold else hold
              for lit, hold, latent_lit, latent_hold in zip(row["pixel_lit"], row["pixel_hold"], row["latent_lit"], row["latent_hold"])]  # fmt: skip
    return clip_psnr(chosen, row["pixels_per_frame"]) - clip_psnr(row["pixel_hold"], row["pixels_per_frame"])


def guarded_gain(row: dict, margin: float) -> float:
    """PSNR(lit with a guard of this margin) - PSNR(hold) for one clip, in dB."""
    chosen = [lit if latent_lit <= (1 - margin) * latent_hold else hold
              for lit, hold, latent_lit, latent_hold in zip(row["pixel_lit"], row["pixel_hold"], row["latent_lit"], row["latent_hold"])]  # fmt: skip
    return clip_psnr(chosen, row["pixels_per_frame"]) - clip_psnr(row["pixel_hold"], row["pixels_per_frame"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", choices=("pool_val", "tokenbench"), default="pool_val")
    parser.add_argument("--checkpoint", default=str(default_inpainter_path("taef2")))
    parser.add_argument("--frames", type=int, default=17)
    args = parser.parse_args()

    tokenizer = LatentTokenizer("taef2", inpainter=args.checkpoint)
    if tokenizer.vae.temporal_ratio != 1:
        raise SystemExit("the per-frame accounting needs a per-frame backend")
    out = ROOT / "eval" / "results" / f"guard_study_{args.set}"
    rows = {}
    if out.with_suffix(".json").is_file():  # resume: keep clips measured with this checkpoint
        previous = json.loads(out.with_suffix(".json").read_text())
        if previous.get("inpainter") == tokenizer.inpainter.fingerprint:
            rows = previous["clips"]
    for name, load, rates in tqdm(clip_sets(args.set, args.frames), desc=f"guard study ({args.set})"):
        if all(f"{name}@{label}" in rows for label in rates):
            continue
        for label, row in frame_errors(tokenizer, load, rates).items():
            rows[f"{name}@{label}"] = row
        result = study(args, tokenizer, rows)
        out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")  # after every clip: resumable
    result = study(args, tokenizer, rows)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def study(args: argparse.Namespace, tokenizer: LatentTokenizer, rows: dict) -> dict:
    summary = summarise(rows)
    return {
        "what": "per-frame latent/pixel errors of hold and unguarded lit; clip PSNR gain of guarded lit per margin",
        "command": f"python eval/guard_study.py --set {args.set}",
        "checkpoint": args.checkpoint,
        "inpainter": tokenizer.inpainter.fingerprint,
        "decoder_metric": tokenizer.inpainter.config.decoder_metric,
        "frames": args.frames,
        "margins": summary,
        "pixel_guard": pixel_summary(rows),
        "chosen_margin": choose(summary),
        "clips": rows,
    }


def summarise(rows: dict) -> list[dict]:
    summary = []
    for margin in (*MARGINS, math.inf):  # inf: never lit (hold)
        gains = [guarded_gain(row, margin) if math.isfinite(margin) else 0.0 for row in rows.values()]
        unguarded = [clip_psnr(r["pixel_lit"], r["pixels_per_frame"]) - clip_psnr(r["pixel_hold"], r["pixels_per_frame"]) for r in rows.values()]
        finite = [g for g in gains if math.isfinite(g)]
        summary.append({
            "margin": margin if math.isfinite(margin) else None,
            "worst_gain_db": min(finite) if finite else 0.0,
            "mean_gain_db": sum(finite) / len(finite) if finite else 0.0,
            "clips_worse_than_hold": sum(g < 0 for g in finite),
            "unguarded_worst_gain_db": min(unguarded),
            "unguarded_mean_gain_db": sum(unguarded) / len(unguarded),
        })  # fmt: skip
    return summary


def pixel_summary(rows: dict) -> dict:
    gains = [pixel_guarded_gain(row) for row in rows.values()]
    return {"worst_gain_db": min(gains), "mean_gain_db": sum(gains) / len(gains), "clips_worse_than_hold": sum(g < 0 for g in gains)}


def choose(summary: list[dict]) -> float:
    """The margin with the best mean gain among those whose worst clip loses at most WORST_ALLOWED_DB."""
    allowed = [row for row in summary if row["margin"] is not None and row["worst_gain_db"] >= WORST_ALLOWED_DB]
    return max(allowed, key=lambda row: row["mean_gain_db"])["margin"] if allowed else max(MARGINS)


def markdown(result: dict) -> str:
    lines = [
        f"# Lit guard margin study: {len(result['clips'])} clip x rate cases, inpainter {result['inpainter']}",
        "",
        "Guarded lit picks lit on a latent frame when its latent error on the dropped positions (in the inpainter's",
        f"decoder metric: {'yes' if result.get('decoder_metric') else 'no'}) is at most",
        "(1 − margin) × hold's. Gains are clip PSNR(guarded lit) − PSNR(hold) from the per-frame pixel errors.",
        "",
        "| margin | worst clip gain (dB) | mean gain (dB) | clips worse than hold |",
        "|---|---|---|---|",
    ]
    for row in result["margins"]:
        label = "hold (never lit)" if row["margin"] is None else f"{row['margin']:g}"
        lines.append(f"| {label} | {row['worst_gain_db']:+.3f} | {row['mean_gain_db']:+.3f} | {row['clips_worse_than_hold']} |")
    pixel = result["pixel_guard"]
    lines.append(f"| pixel guard (`--pixel-guard`) | {pixel['worst_gain_db']:+.3f} | {pixel['mean_gain_db']:+.3f} | "
                 f"{pixel['clips_worse_than_hold']} |")
    lines += by_rate(result["clips"])
    first = result["margins"][0]
    lines += [
        "",
        "The pixel guard decodes, at encode, the frames where lit's latent error is below hold's with both fills",
        "and keeps whichever is closer to the input; its row follows from the same per-frame pixel errors.",
        "",
        f"Unguarded lit: worst {first['unguarded_worst_gain_db']:+.3f} dB, mean {first['unguarded_mean_gain_db']:+.3f} dB.",
        "",
        f"Chosen margin (best mean gain among margins whose worst clip loses at most {-WORST_ALLOWED_DB:g} dB): "
        f"**{result['chosen_margin']:g}** (latok.codec.restore.guard.LIT_GUARD_MARGIN).",
        "",
        *disagreements(result["clips"], LIT_GUARD_MARGIN),
        f"Command: `{result['command']}`",
    ]
    return "\n".join(lines) + "\n"


def by_rate(rows: dict) -> list[str]:
    """Markdown lines: the mean gain of each margin at each rate (the cases' ``@`` label)."""
    labels = sorted({name.rsplit("@", 1)[1] for name in rows})
    lines = ["", "Mean gain over hold (dB) at each rate:", "", "| margin | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for margin in MARGINS:
        cells = []
        for label in labels:
            gains = [guarded_gain(row, margin) for name, row in rows.items() if name.endswith(f"@{label}")]
            cells.append(f"{sum(gains) / len(gains):+.3f}")
        lines.append(f"| {margin:g} | " + " | ".join(cells) + " |")
    return lines


def disagreements(rows: dict, margin: float) -> list[str]:
    """Markdown lines: the frames where a guard of this margin picks lit, whose decoded pixels are
    further from the input than hold's (where latent and pixel error disagree)."""
    lines = [f"Frames where the guard at margin {margin:g} picks lit and the decoded frame is further from the input "
             "than hold's:", "", "| case | latent frame | lit / hold latent error | lit / hold pixel error |", "|---|---|---|---|"]  # fmt: skip
    found = 0
    for name, row in rows.items():
        for t, (lit, hold, latent_lit, latent_hold) in enumerate(
            zip(row["pixel_lit"], row["pixel_hold"], row["latent_lit"], row["latent_hold"])
        ):
            if latent_hold > 0 and latent_lit <= (1 - margin) * latent_hold and lit > hold:
                lines.append(f"| {name} | {t} | {latent_lit / latent_hold:.3f} | {lit / hold:.4f} |")
                found += 1
    return [*lines, *([] if found else ["| none | | | |"]), ""]


if __name__ == "__main__":
    main()
