"""Quantised, entropy-coded ``.latok`` files against today's exact fp16 files.

Every clip is masked once per rate (the backend's default tau, and usage 0.5), then written with
each value step (``0`` is the exact fp16 file) and decoded with the default fill, exactly as
``latok encode --value-step S`` / ``latok decode`` would.  Latents come from ``latok cache-latents``
shards with frames (``--with-video``), so nothing is re-encoded; the masks, the lit guard and the
decode all run on them.

    # choose the default step on the pool validation split
    python eval/value_coding.py --stage val --steps 0,0.1,0.2,0.3
    # report at the chosen default on DAVIS and tokenbench-mini (+ the surveillance clip)
    python eval/value_coding.py --stage report

Shards: ``eval/prepare_pool_data.sh`` (val) and ``eval/prepare_report_data.sh`` (report).
Writes ``eval/results/value_coding_<stage>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

from latok import LatentTokenizer
from latok.codec.format.coders.values import ValueCoder
from latok.codec.format.reader import load_latok
from latok.codec.quantise import channel_steps, quantise
from latok.codec.tokens import SourceInfo
from latok.evaluation.metrics import psnr
from latok.training.data import read_samples
from latok.vae import load_vae

sys.path.insert(0, str(Path(__file__).parent))
from x264_reference import bpp_at, x264_curve  # noqa: E402

RESULTS = Path("eval/results")
SHARDS = {"val": {"pool-val": "data/latents/pool/val"},
          "report": {"davis": "data/latents/report/davis", "tokenbench": "data/latents/report/tokenbench",
                     "clips": "data/latents/report/clips"}}  # fmt: skip
RATES = {"default": None, "usage 0.5": 0.5}
LOSS_BUDGET = 0.04  # dB below the fp16 file, mean over the validation split at each rate: the default is the largest step within it (0.05 target, 0.01 margin)


def _video(sample: dict) -> torch.Tensor:
    frames = torch.from_numpy(sample["video.npy"]).permute(3, 0, 1, 2)[None].float()
    return frames / 127.5 - 1.0


def _run(tokenizer: LatentTokenizer, latent: torch.Tensor, video: torch.Tensor, source: SourceInfo, usage: float | None) -> dict:
    adaptive = tokenizer.tokenize(latent, source, target_usage=usage, video=video)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.latok"
        start = time.perf_counter()
        tokenizer.save(adaptive, path)
        written = time.perf_counter()
        loaded = load_latok(path)
        read = time.perf_counter()
        size = path.stat().st_size
    assert torch.equal(loaded.values, adaptive.values) and torch.equal(loaded.keep, adaptive.keep)
    sizes = _coder_sizes(adaptive) if adaptive.value_step is not None else {}
    start_decode = time.perf_counter()
    decoded = tokenizer.decode(loaded)
    decode_seconds = time.perf_counter() - start_decode
    frames, height, width = video.shape[-3:]
    return {"usage": adaptive.token_usage, "bytes": size, "bpp": size * 8 / (frames * height * width),
            "bits_per_value": size * 8 / (adaptive.num_tokens * latent.shape[1]),
            "psnr": psnr(decoded, video), "write_s": written - start, "read_s": read - written, "decode_s": decode_seconds, **sizes}  # fmt: skip


def _coder_sizes(adaptive) -> dict:
    """Bytes of the clip's quantised values (as one chunk) range coded as latok does, and with zstd (level 19)
    over the same residuals, zigzag-folded, channel-major, split into byte planes."""
    import numpy as np
    import zstandard

    _, channels, _, height, width = adaptive.shape
    codes = quantise(adaptive.values, adaptive.value_step)
    ranged = len(ValueCoder(channels, height, width).encode(adaptive.keep, codes))
    _, streams = ValueCoder(channels, height, width).residual_streams(adaptive.keep[0].numpy(), codes.numpy().astype(np.int64))
    folded = np.concatenate([np.where(r < 0, -2 * r - 1, 2 * r).T.ravel() for r in streams])
    wide = folded.astype(np.uint32)
    planes = b"".join(((wide >> shift) & 0xFF).astype(np.uint8).tobytes() for shift in (0, 8, 16, 24) if (wide >> shift).any() or shift == 0)
    return {"values_range_bytes": ranged, "values_zstd_bytes": len(zstandard.ZstdCompressor(level=19).compress(planes))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=sorted(SHARDS), required=True)
    parser.add_argument("--steps", default=None, help="comma-separated value steps; 0 is the exact fp16 file (default: 0 and the backend's default)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N clips of each set (after --stride)")
    parser.add_argument("--stride", type=int, default=1, help="every n-th clip of each set")
    parser.add_argument("--rows", default=None, help="rebuild the outputs from a run's printed JSON rows (its log) instead of measuring")
    parser.add_argument("--resume", default=None, help="a killed run's log: keep its rows, measure only the rest")
    parser.add_argument("--name", default=None, help="output name under eval/results (default: value_coding_<stage>)")
    args = parser.parse_args()
    vae = load_vae("taef2")
    steps = [0.0, vae.default_value_step] if args.steps is None else args.steps.split(",")
    tokenizers = {}
    for step in steps:  # "u0.1": the same step on every channel, ignoring the decoder's sensitivity
        tokenizers[step] = LatentTokenizer(vae, value_step=float(str(step).lstrip("u")))
        if str(step).startswith("u"):
            tokenizers[step].value_steps = channel_steps(float(step[1:]), None, vae.latent_channels)
    rows, curves = [], _x264_curves() if args.stage == "report" else {}
    if args.rows or args.resume:
        rows = [json.loads(line) for line in Path(args.rows or args.resume).read_text().splitlines() if line.startswith("{")]
    done = {(r["set"], r["clip"]) for r in rows if sum(q["clip"] == r["clip"] for q in rows) == len(RATES) * len(steps)}
    rows = [r for r in rows if (r["set"], r["clip"]) in done]
    for name, shards in ({} if args.rows else SHARDS[args.stage]).items():
        samples = read_samples(shards)[:: args.stride][: args.limit]
        for sample in samples:
            if (name, sample["__key__"]) in done:
                continue
            latent = torch.from_numpy(sample["latent.npy"].astype("float32"))[None]
            video = _video(sample)
            source = SourceInfo(frames=video.shape[2], height=video.shape[3], width=video.shape[4], fps=float(sample["json"].get("fps") or 24.0))
            encode_seconds = None
            if args.stage == "report":  # the taef2 encode the coding is weighed against (the latents themselves come from the shard)
                start = time.perf_counter()
                vae.decode(vae.encode(video), size=video.shape[-3:])
                encode_seconds = time.perf_counter() - start  # taef2's encode plus decode
            if args.stage == "report" and sample["__key__"] not in curves:  # not in x264_reference.json: the surveillance clip
                curves[sample["__key__"]] = x264_curve(video, source.fps)
            for rate, usage in RATES.items():
                for step in steps:
                    row = {"set": name, "clip": sample["__key__"], "rate": rate, "step": step, "taef2_s": encode_seconds,
                           **_run(tokenizers[step], latent, video, source, usage)}  # fmt: skip
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    summary = summarise(rows, steps)
    versus = x264_rows(rows, curves, steps[-1]) if curves else []
    out = RESULTS / (args.name or f"value_coding_{args.stage}")
    command = "python eval/value_coding.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items() if v is not None and k not in ("rows", "name", "resume"))
    out.with_suffix(".json").write_text(json.dumps({"command": command, "device": "cpu", "summary": summary, "x264": versus, "rows": rows}, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(command, summary, rows, steps, versus))
    print(out.with_suffix(".md").read_text())


def summarise(rows: list[dict], steps: list[float]) -> list[dict]:
    """Per set, rate and step: mean bytes ratio to the fp16 file, mean PSNR change, bits per value."""
    out = []
    for name in dict.fromkeys(r["set"] for r in rows):
        for rate in RATES:
            base = {r["clip"]: r for r in rows if r["set"] == name and r["rate"] == rate and float(str(r["step"]).lstrip("u")) == 0}
            for step in steps:
                mine = [r for r in rows if r["set"] == name and r["rate"] == rate and r["step"] == step]
                if not mine or not base:
                    continue
                ratios = [base[r["clip"]]["bytes"] / r["bytes"] for r in mine]
                losses = [r["psnr"] - base[r["clip"]]["psnr"] for r in mine]
                coding = sum(r["write_s"] + r["read_s"] for r in mine) - sum(base[r["clip"]]["write_s"] + base[r["clip"]]["read_s"] for r in mine)
                out.append({"set": name, "rate": rate, "step": step, "clips": len(mine),
                            "smaller_mean": sum(ratios) / len(ratios), "smaller_geomean": math.exp(sum(map(math.log, ratios)) / len(ratios)),
                            "psnr_change_mean": sum(losses) / len(losses), "psnr_change_worst": min(losses),
                            "bits_per_value": sum(r["bytes"] * 8 for r in mine) / sum(r["bytes"] * 8 / r["bits_per_value"] for r in mine),
                            "bpp_mean": sum(r["bpp"] for r in mine) / len(mine),
                            "coding_seconds_per_clip": coding / len(mine), "decode_seconds_per_clip": sum(r["decode_s"] for r in mine) / len(mine),
                            "taef2_seconds_per_clip": None if mine[0].get("taef2_s") is None else sum(r["taef2_s"] for r in mine) / len(mine)})  # fmt: skip
    return out


def _x264_curves() -> dict[str, list]:
    """Each clip's x264 (bpp, PSNR) points from eval/results/x264_reference.json (same frames, 240p)."""
    reference = json.loads((RESULTS / "x264_reference.json").read_text())
    return {row["clip"].split("/", 1)[1]: row["x264_curve"] for row in reference["rows"]}


def x264_rows(rows: list[dict], curves: dict, step) -> list[dict]:
    """Per clip at the default tau: latok's bpp (fp16 and coded at ``step``) against x264's bpp at the coded file's PSNR."""
    out = []
    for row in rows:
        if row["rate"] != "default" or row["step"] != step:
            continue
        exact = next(r for r in rows if r["clip"] == row["clip"] and r["rate"] == "default" and float(str(r["step"]).lstrip("u")) == 0)
        bpp, note = bpp_at(curves[row["clip"]], row["psnr"]) if row["clip"] in curves else (None, "no x264 curve")
        out.append({"set": row["set"], "clip": row["clip"], "usage": row["usage"], "psnr": row["psnr"], "bpp_fp16": exact["bpp"],
                    "bpp": row["bpp"], "x264_bpp": bpp, "ratio": None if bpp is None else row["bpp"] / bpp, "note": note})  # fmt: skip
    return out


def markdown(command: str, summary: list[dict], rows: list[dict], steps: list[float], versus: list[dict] = ()) -> str:
    lines = [f"# Quantised, entropy-coded .latok files against exact fp16 files\n\n`{command}`; taef2, CPU, default fill (guarded lit).\n",
             "| set | rate | step | clips | smaller (mean) | smaller (geomean) | PSNR change mean | worst clip | bits/value | bpp | coding time / (taef2 encode + decode) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for s in summary:
        share = "–"
        if s["taef2_seconds_per_clip"]:
            share = f"{s['coding_seconds_per_clip'] / s['taef2_seconds_per_clip']:.2%}"
        lines.append(f"| {s['set']} | {s['rate']} | {s['step']} | {s['clips']} | {s['smaller_mean']:.2f}× | {s['smaller_geomean']:.2f}× | "
                     f"{s['psnr_change_mean']:+.3f} dB | {s['psnr_change_worst']:+.3f} dB | {s['bits_per_value']:.2f} | {s['bpp_mean']:.3f} | {share} |")  # fmt: skip
    if versus:
        lines += ["", "## Against x264 at the same PSNR (default tau; x264 preset medium, CRF 14-46, eval/x264_reference.py)", "",
                  "| set | clip | usage | PSNR | fp16 bpp | coded bpp | x264 bpp | coded / x264 |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for v in versus:
            ratio = f"{v['ratio']:.1f}×" if v["ratio"] is not None else v["note"]
            x264 = f"{v['x264_bpp']:.4f}" if v["x264_bpp"] is not None else "–"
            lines.append(f"| {v['set']} | {v['clip']} | {v['usage']:.1%} | {v['psnr']:.2f} | {v['bpp_fp16']:.3f} | {v['bpp']:.3f} | {x264} | {ratio} |")
        for name in dict.fromkeys(v["set"] for v in versus):
            ratios = [v["ratio"] for v in versus if v["set"] == name and v["ratio"] is not None]
            if ratios:
                lines.append(f"| **{name}: geometric mean** | | | | | | | **{math.exp(sum(map(math.log, ratios)) / len(ratios)):.1f}×** |")
    steps_in_budget = {s["step"] for s in summary} - {s["step"] for s in summary if s["psnr_change_mean"] < -LOSS_BUDGET}
    sensitivity_scaled = [step for step in steps_in_budget if not str(step).startswith("u") and float(step) > 0]
    if sensitivity_scaled:
        lines += ["", f"Largest sensitivity-scaled step within {LOSS_BUDGET} dB of the fp16 file (mean, every set and rate): "
                  f"**{max(sensitivity_scaled, key=float)}**."]  # fmt: skip
    lines += ["", "Per clip (PSNR in dB):", "", "| set | clip | rate | step | usage | bpp | bits/value | PSNR |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['set']} | {r['clip']} | {r['rate']} | {r['step']} | {r['usage']:.1%} | {r['bpp']:.3f} | {r['bits_per_value']:.2f} | {r['psnr']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
