"""Should the encoder send, per latent frame, how far to trust the inpainter (a blend weight), not just whether?

The lit guard sends one bit per latent frame: lit or hold.  The encoder holds the true latent, so it
can instead send the weight ``a`` that brings ``hold + a (lit - hold)`` closest to the truth on the
frame's dropped positions, in the inpainter's decoder metric G (least squares:
``a = <lit - hold, truth - hold>_G / |lit - hold|_G^2``), quantised to ``1/STEPS`` and clipped to
``[0, 1]`` so the blend stays inside the rule's correction ball.  With ``interp`` as a third predictor,
``hold + a (lit - hold) + b (interp - hold)`` (two weights a frame, fitted jointly, the same grid,
``[-0.5, 1.5]``).  Codecs call this weighted multi-hypothesis prediction.

taef2 decodes every frame on its own, so each variant is decoded once per clip and rate, and the
clip PSNR of the guarded decode (margin ``LIT_GUARD_MARGIN``) comes from the per-frame pixel errors
of hold and lit.

- ``--set pool_val`` (default): chooses; 18 clips of eval/splits/pool_val.txt (cached by
  ``PARTS=val eval/prepare_pool_data.sh``) at the default rate's fixed tau and usage 0.3, 0.5, 0.8.

Usage:
    python eval/blend_study.py [--set pool_val]
writes eval/results/blend_study_<set>.{json,md}
"""

from __future__ import annotations

import argparse
import json
import tempfile
import zlib
from pathlib import Path

import torch
from tqdm import tqdm

from latok.codec.format.writer import save_latok
from latok.codec.restore.fills import interp_fill
from latok.codec.restore.guard import LIT_GUARD_MARGIN
from latok.codec.restore.resolve import default_inpainter_path
from latok.codec.tokenizer import LatentTokenizer
from latok.codec.tokens import scatter
from latok.io import to_8bit_levels

from guard_study import clip_psnr, clip_sets
from harness import ROOT

STEPS = 8  # the weights' grid: 1/8
DEFAULT_VARIANTS = "frame:1,frame+interp,frame:2,10:2,5:2"


def gram(model, x: torch.Tensor, y: torch.Tensor, keep: torch.Tensor, tile: int | None = None) -> torch.Tensor:
    """``(t,)`` inner products <x, y>_G over each latent frame's dropped positions; with ``tile``,
    ``(t, h / tile, w / tile)``, one per square of ``tile`` x ``tile`` positions (edges padded)."""
    drop = (~keep).unsqueeze(1).to(x)
    metric = model.decoder_metric.float().to(x) if model.config.decoder_metric else torch.eye(x.shape[1]).to(x)
    field = torch.einsum("bcthw,cd,bdthw->thw", x * drop, metric, y * drop)
    if tile is None:
        return field.sum(dim=(1, 2))
    return torch.nn.functional.avg_pool2d(field.unsqueeze(1), tile, ceil_mode=True, divisor_override=1).squeeze(1)


def tiled_weight(model, hold, lit, truth, keep, tile: int | None, top: float) -> torch.Tensor:
    """Least-squares weight of lit over hold per frame (or per tile), on the 1/STEPS grid in [0, top],
    as a ``(1, 1, t, h, w)`` field, and its codes."""
    d, e = lit - hold, truth - hold
    g, b = gram(model, d, d, keep, tile), gram(model, d, e, keep, tile)
    a = torch.where(g > 0, b / g.clamp_min(1e-12), torch.zeros_like(g))
    codes = (a * STEPS).round().clamp(0, top * STEPS).to(torch.uint8)
    a = codes.float() / STEPS
    if tile is None:
        return a.view(1, 1, -1, 1, 1), codes
    return a.repeat_interleave(tile, 1).repeat_interleave(tile, 2)[:, : hold.shape[-2], : hold.shape[-1]][None, None], codes


def two_weights(model, hold, lit, interp, truth, keep) -> torch.Tensor:
    """Per frame, lit's and interp's weights over hold fitted jointly, quantised, as a ``(2, 1, 1, t, 1, 1)`` field."""
    d1, d2, e = lit - hold, interp - hold, truth - hold
    g11, g12, g22 = gram(model, d1, d1, keep), gram(model, d1, d2, keep), gram(model, d2, d2, keep)
    b1, b2 = gram(model, d1, e, keep), gram(model, d2, e, keep)
    matrix = torch.stack([torch.stack([g11, g12], -1), torch.stack([g12, g22], -1)], -2)  # (t, 2, 2)
    matrix = matrix + 1e-6 * matrix.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-12)[:, None, None] * torch.eye(2)
    two = torch.linalg.solve(matrix, torch.stack([b1, b2], -1))
    two = (two * STEPS).round().clamp(-STEPS // 2, 3 * STEPS // 2) / STEPS
    return two.T.reshape(2, 1, 1, -1, 1, 1)


def variant(spec: str, model, hold, lit, interp, truth, keep) -> tuple[torch.Tensor, bytes]:
    """The restored latent of a weight variant ``TILE:TOP`` (TILE ``frame`` or positions a side; weights
    on the grid in [0, TOP]) or ``frame+interp``, and its weights' codes, zlib-compressed (the side information)."""
    if spec == "frame+interp":
        a = two_weights(model, hold, lit, interp, truth, keep)
        codes = (a * STEPS).round().to(torch.int8)
        return hold + a[0] * (lit - hold) + a[1] * (interp - hold), zlib.compress(codes.numpy().tobytes(), 9)
    tile, top = spec.split(":")
    tile = None if tile == "frame" else int(tile)
    a, codes = tiled_weight(model, hold, lit, truth, keep, tile, float(top))
    return hold + a * (lit - hold), zlib.compress(codes.numpy().tobytes(), 9)


def measure(tokenizer: LatentTokenizer, load, rates: dict[str, dict], specs: list[str]) -> dict[str, dict]:
    latent, video, source = load(tokenizer)
    truth = latent.float().cpu()
    reference = to_8bit_levels(video)
    model = tokenizer.inpainter
    rows = {}
    for label, rate in rates.items():
        adaptive = tokenizer.tokenize(latent, source, lit_guard=False, **rate)
        keep = adaptive.keep
        hold = tokenizer.restore(adaptive, "hold")
        lit = tokenizer.restore(adaptive, "lit")
        interp = interp_fill(scatter(adaptive), keep, adaptive.motion)
        restored = {"hold": hold, "lit": lit}
        with tempfile.TemporaryDirectory() as folder:
            file_bytes = save_latok(adaptive, Path(folder) / "clip.latok").stat().st_size
        row = {"usage": adaptive.token_usage, "pixels_per_frame": video[0, :, 0].numel(), "file_bytes": file_bytes, "side_bytes": {}}
        for spec in specs:
            restored[spec], side = variant(spec, model, hold, lit, interp, truth, keep)
            row["side_bytes"][spec] = len(side)
        for name, value in restored.items():
            row[f"latent_{name}"] = model.error(value, truth, keep)[0].tolist()
            decoded = tokenizer.vae.decode(value, size=video.shape[-3:])
            row[f"pixel_{name}"] = (to_8bit_levels(decoded) - reference).pow(2).sum(dim=(0, 1, 3, 4)).tolist()
        rows[label] = row
    return rows


def gains(row: dict) -> dict[str, float]:
    """Clip PSNR of each decode minus hold's (the guarded one from per-frame errors)."""
    n = row["pixels_per_frame"]
    hold = clip_psnr(row["pixel_hold"], n)
    guarded = [lit if ll <= (1 - LIT_GUARD_MARGIN) * lh else h
               for lit, h, ll, lh in zip(row["pixel_lit"], row["pixel_hold"], row["latent_lit"], row["latent_hold"])]  # fmt: skip
    out = {"guarded": clip_psnr(guarded, n) - hold}
    out.update({v: clip_psnr(row[f"pixel_{v}"], n) - hold for v in row["side_bytes"]})
    out["lit"] = clip_psnr(row["pixel_lit"], n) - hold
    out["hold_psnr"] = hold
    return out


def summarise(rows: dict, specs: list[str]) -> dict:
    by_rate: dict[str, list[dict]] = {}
    for key, row in rows.items():
        by_rate.setdefault(key.rsplit("@", 1)[1], []).append({**gains(row), "row": row})
    summary = {}
    for rate, clips in sorted(by_rate.items()):
        summary[rate] = {
            "clips": len(clips),
            "hold_psnr": sum(c["hold_psnr"] for c in clips) / len(clips),
            **{v: {"mean_gain_db": sum(c[v] for c in clips) / len(clips), "worst_gain_db": min(c[v] for c in clips),
                   "over_guarded_worst_db": min(c[v] - c["guarded"] for c in clips),
                   "side_share": 0.0 if v in ("guarded", "lit") else
                   sum(c["row"]["side_bytes"][v] for c in clips) / sum(c["row"]["file_bytes"] for c in clips)}
               for v in ("guarded", "lit", *specs)},
        }  # fmt: skip
    return summary


def markdown(result: dict) -> str:
    specs = result["variants"]
    lines = [
        f"# Encoder-chosen weights on the inpainter's correction ({result['set']}, inpainter {result['inpainter']})",
        "",
        "Clip PSNR gain over motion-compensated hold (dB): mean over clips (worst clip). guarded: the shipped lit guard",
        f"(margin {LIT_GUARD_MARGIN}, one bit a frame). `TILE:TOP`: hold + a (lit − hold), one weight a per latent frame",
        f"(`frame`) or per TILE × TILE positions, on a 1/{STEPS} grid in [0, TOP]; `frame+interp` adds b (interp − hold).",
        "Weights are least squares in the inpainter's decoder metric against the true latent. Side: the weights' codes,",
        "zlib-compressed, as a share of the `.latok` file's bytes. vs guarded: the worst clip's gain over the guarded decode.",
        "",
        "| rate | clips | hold PSNR | guarded | lit | " + " | ".join(f"`{v}`" for v in specs) + " |",
        "|---|---|---|---|---|" + "---|" * len(specs),
    ]
    for rate, s in result["summary"].items():
        cells = [f"{s[v]['mean_gain_db']:+.3f} ({s[v]['worst_gain_db']:+.2f})" for v in ("guarded", "lit")]
        cells += [f"{s[v]['mean_gain_db']:+.3f} ({s[v]['worst_gain_db']:+.2f}); side {100 * s[v]['side_share']:.2f} %; "
                  f"vs guarded {s[v]['over_guarded_worst_db']:+.2f}" for v in specs]  # fmt: skip
        lines.append(f"| {rate} | {s['clips']} | {s['hold_psnr']:.2f} | " + " | ".join(cells) + " |")
    lines += ["", f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", choices=("pool_val",), default="pool_val")
    parser.add_argument("--checkpoint", default=str(default_inpainter_path("taef2")))
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma-separated TILE:TOP or frame+interp (default {DEFAULT_VARIANTS})")
    parser.add_argument("--label", default="", help="suffix of the output files")
    args = parser.parse_args()
    specs = args.variants.split(",")
    tokenizer = LatentTokenizer("taef2", inpainter=args.checkpoint)
    out = ROOT / "eval" / "results" / f"blend_study_{args.set}{args.label}"
    rows = {}
    if out.with_suffix(".json").is_file():
        previous = json.loads(out.with_suffix(".json").read_text())
        if previous.get("inpainter") == tokenizer.inpainter.fingerprint and previous.get("variants") == specs:
            rows = previous["clips"]

    def result() -> dict:
        command = f"python eval/blend_study.py --set {args.set} --variants {args.variants}" + (f" --label {args.label}" if args.label else "")
        return {"set": args.set, "command": command, "inpainter": tokenizer.inpainter.fingerprint,
                "steps": STEPS, "variants": specs, "summary": summarise(rows, specs), "clips": rows}  # fmt: skip

    for name, load, rates in tqdm(clip_sets(args.set, 17), desc=f"blend study ({args.set})"):
        if all(f"{name}@{label}" in rows for label in rates):
            continue
        for label, row in measure(tokenizer, load, rates, specs).items():
            rows[f"{name}@{label}"] = row
        out.with_suffix(".json").write_text(json.dumps(result(), indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result()))
    print(markdown(result()))


if __name__ == "__main__":
    main()
