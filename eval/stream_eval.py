"""Streaming codec: memory over length, streaming vs offline quality, usage at chunk boundaries.

Parts (run both by default; each rewrites its section of the outputs):

- ``memory``: peak resident memory of ``latok encode --stream`` and ``latok decode --stream``
  (each its own process, taef2 on CPU, 240p, chunks of 16) on a 600-frame input and on its
  first 60 frames; the input is the shared DAVIS sequences at 240p played one after another
  and written once to a temporary mp4.  For contrast, offline ``latok encode``/``decode`` at
  60 frames (the offline codec holds the whole clip in memory).
- ``speed``: ``decode_stream`` time with each fill (hold, lit: the stream default), and ``encode_stream`` time at the
  fixed tau with and without the lit weights per chunk and at the quality target per chunk, the first SPEED_FRAMES frames of DAVIS goat at 240p in chunks of 16, block motion,
  median of 3 after a warm-up (model loaded), interleaved, in this process; idle, then beside two CPU burners.
- ``quality``: every clip of ``--clips`` (DAVIS, or pool_val to select) with 50+ frames, first 50 frames at 240p,
  ``--motion`` block by default, at the stream's fixed tau (the calibrated one):
  offline (encode + decode with hold and the default, the guarded bidirectional lit) vs streaming
  (``encode_stream`` with chunks of 16, ``decode_stream`` with hold, unguarded lit (the same inpainter over each chunk
  and its restored context) and the default: that lit behind the lit weights the encoder fitted per chunk).  The stream
  file is also decoded offline (``load_latok``: the chunks' weights joined into one clip's guard), and the share of
  its bytes the weights take is recorded.  Without motion,
  also the usage per latent frame around the chunk boundaries with the selection cache C_sel and
  without it (each chunk masked afresh, as ``encode_stream(carry_selection=False)`` does;
  computed from the offline latents by the same ``redundancy_mask`` call, no second encode).
- ``target``: a quality target per stream chunk (``--target`` dB, default the backend's 0.5) against the stream's fixed
  tau (the calibrated one) and the offline quality target on the whole clip, on the same clips, frames, chunks and block
  motion: token usage and PSNR loss against the full-rate decode per clip (each chunk encoded once; every encode of the
  clip takes those latents).

Usage:
    python eval/stream_eval.py [--part memory|speed|quality|target|all] [--clips davis|pool_val] [--motion M] [--tau T] [--target D]
writes eval/results/stream_eval.{json,md}
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from tqdm import tqdm

from latok.codec.format.reader import LatokReader, load_latok
from latok.codec.rule.masking import redundancy_mask
from latok.evaluation.reports import file_info
from latok.codec.tokenizer import LatentTokenizer, source_info
from latok.evaluation.metrics import psnr
from latok.io import VideoWriter, load_clip, stream_clip

from harness import RESULTS as OUT
from harness import clip_set

DAVIS = [clip.path for clip in clip_set("davis")]
CHUNK = 16
LONG, SHORT = 600, 60
QUALITY_FRAMES = 50
SPEED_FRAMES = 48
BOUNDARY_WINDOW = 2  # latent frames either side of a boundary in the usage table

# Runs argv and prints the child's peak RSS in KiB (Linux ru_maxrss) and wall seconds.
_MEASURE = """
import resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - start, code)
"""


def measure(argv: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-c", _MEASURE, *argv], capture_output=True, text=True, check=True).stdout
    rss, seconds, code = out.split()
    if int(code):
        raise SystemExit(f"failed: {' '.join(argv)}")
    return {"peak_rss_mib": int(rss) / 1024, "seconds": float(seconds)}


def long_input(path: Path, frames: int, height: int = 240) -> Path:
    """The shared DAVIS sequences at ``height``, one after another, until ``frames`` frames."""
    written = 0
    with VideoWriter(path, fps=24.0, crf=12) as out:
        while written < frames:
            for sequence in DAVIS:
                for chunk in stream_clip(sequence, CHUNK, frames=frames - written, height=height):
                    out.write(chunk.video)
                    written += chunk.frames
                if written >= frames:
                    break
    return path


def memory_part(motion: str = "none", height: int = 240) -> dict:
    """Peak memory of streams of LONG and SHORT frames (and, without motion, offline at SHORT)."""
    latok = str(Path(sys.executable).parent / "latok")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = long_input(tmp / "long.mp4", LONG, height)
        cases = [("stream", LONG), ("stream", SHORT)] + ([("offline", SHORT)] if motion == "none" else [])
        for mode, frames in tqdm(cases, desc="memory"):
            tokens, video = tmp / f"{mode}{frames}.latok", tmp / f"{mode}{frames}.mp4"
            flags = ["--stream", "--chunk", str(CHUNK)] if mode == "stream" else []
            encode = measure([latok, "encode", str(source), "-o", str(tokens), "--frames", str(frames), "--height", str(height),
                              "--motion", motion, *flags])  # fmt: skip
            decode = measure([latok, "decode", str(tokens), "-o", str(video), *flags[:1]])
            rows.append({"mode": mode, "frames": frames, "encode": encode, "decode": decode,
                         "peak_rss_mib": max(encode["peak_rss_mib"], decode["peak_rss_mib"])})  # fmt: skip
    long_peak = next(r for r in rows if r["mode"] == "stream" and r["frames"] == LONG)["peak_rss_mib"]
    short_peak = next(r for r in rows if r["mode"] == "stream" and r["frames"] == SHORT)["peak_rss_mib"]
    return {"runs": rows, "stream_ratio_600_vs_60": long_peak / short_peak, "target_ratio": 1.15, "motion": motion, "height": height}


def quality_part(tau: float | None = None, clips: str = "davis", motion: str = "block") -> dict:
    """Offline (encode + decode: hold and the default guarded lit) against streaming (chunks of CHUNK; hold and
    lit) on the first QUALITY_FRAMES frames of every clip of ``clips`` with that many frames."""
    tokenizer = LatentTokenizer("taef2", motion=motion)
    tau = tokenizer.default_tau if tau is None else tau  # a stream's tau (a fixed one); offline encodes at the same
    tokenizer = LatentTokenizer(tokenizer.vae, tau=tau, motion=motion)
    tokenizer.inpainter  # loaded before the loop  # noqa: B018
    sequences = [c.path for c in clip_set(clips)] if clips != "davis" else [s for s in DAVIS if len(list(s.iterdir())) >= QUALITY_FRAMES]
    rows, with_sel, without_sel = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for sequence in tqdm(sequences, desc="quality"):
            clip = load_clip(sequence, frames=QUALITY_FRAMES, height=240)
            if clip.frames < QUALITY_FRAMES:
                continue
            latent = tokenizer.vae.encode(clip.video)  # offline: LatentTokenizer.encode, in its two steps
            adaptive = tokenizer.tokenize(latent, source_info(clip)[1])
            row = {"sequence": sequence.stem if sequence.is_file() else sequence.name, "usage_offline": adaptive.token_usage}
            for fill in ("hold", "auto"):
                row[f"psnr_offline_{fill}"] = psnr(tokenizer.decode(adaptive, fill=fill), clip.video)
            path = Path(tmp) / f"{row['sequence']}.latok"
            chunks = list(stream_clip(sequence, CHUNK, frames=QUALITY_FRAMES, height=240))
            summary = tokenizer.encode_stream(chunks, path)
            row["usage_stream"] = summary.token_usage
            if motion == "none":  # the usage a stream would have without the selection cache (each chunk masked afresh)
                restarted = torch.cat([redundancy_mask(c, summary_tau(path)).keep for c in latent.split(CHUNK, dim=2)], dim=1)
                without = restarted[0].float().mean(dim=(1, 2)).tolist()
                row["usage_stream_without_csel"] = statistics.mean(without)
                without_sel.append(without)
            with LatokReader(path) as reader:
                unguarded = tokenizer.resolve_stream(reader.header, "lit")  # a resolved fill: no chunk weights
            for name, fill in (("hold", "hold"), ("lit", unguarded), ("auto", None)):
                decoded = torch.cat(list(tokenizer.decode_stream(path, fill=fill)), dim=2)
                row[f"psnr_stream_{name}"] = psnr(decoded, clip.video)
            streamed = load_latok(path)
            row["psnr_stream_file_offline"] = psnr(tokenizer.decode(streamed), clip.video)
            info = file_info(path)
            row["lit_weight_share"] = info["bytes_by_part"]["lit_weights"] / info["bytes"]
            rows.append(row)
            with_sel.append(summary.usage_per_frame)
    mean = lambda key: statistics.mean(r[key] for r in rows)  # noqa: E731
    result = {
        "frames": QUALITY_FRAMES, "chunk_frames": CHUNK, "tau": tau, "clips": clips, "motion": motion,
        "stream_lit": "the inpainter over each chunk and its restored context (C_fill)",
        "stream_auto": "that inpainter behind the lit weights the encoder fitted per chunk (the default)",
        "sequences": rows, "mean": {key: mean(key) for key in rows[0] if key != "sequence"},
    }  # fmt: skip
    if without_sel:
        boundaries = list(range(CHUNK, QUALITY_FRAMES - BOUNDARY_WINDOW, CHUNK))
        offsets = range(-BOUNDARY_WINDOW, BOUNDARY_WINDOW + 1)
        around = lambda usage: {o: statistics.mean(u[b + o] for u in usage for b in boundaries) for o in offsets}  # noqa: E731
        result["boundary_usage"] = {"boundaries": boundaries, "with_csel": around(with_sel), "without_csel": around(without_sel),
                                    "overall_with_csel": statistics.mean(statistics.mean(u[1:]) for u in with_sel)}  # fmt: skip
    return result


def target_part(clips: str = "pool_val", target: float | None = None, sweep: tuple[float, ...] = ()) -> dict:
    """Usage and PSNR loss against the full rate of a stream at a quality target per chunk, the stream at its fixed
    (calibrated) tau, and the offline quality target, on the first QUALITY_FRAMES frames of every clip of ``clips``;
    streams at each fixed tau of ``sweep`` too, for the fixed tau with the target's mean loss (:func:`equal_loss`)."""
    fixed = LatentTokenizer("taef2")  # block motion, the codec's default
    vae = fixed.vae
    target = fixed.default_target_quality if target is None else target
    fixed = LatentTokenizer(vae, tau=fixed.default_tau)
    aimed = LatentTokenizer(vae, target_quality=target)
    fixed.inpainter  # loaded before the loop  # noqa: B018
    sequences = [c.path for c in clip_set(clips)] if clips != "davis" else [s for s in DAVIS if len(list(s.iterdir())) >= QUALITY_FRAMES]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for sequence in tqdm(sequences, desc="target"):
            chunks = list(stream_clip(sequence, CHUNK, frames=QUALITY_FRAMES, height=240))
            video = torch.cat([chunk.video for chunk in chunks], dim=2)
            if video.shape[2] < QUALITY_FRAMES:
                continue
            row = {"sequence": sequence.stem if sequence.is_file() else sequence.name}
            with encoded_once(vae, chunks) as latent:
                full = psnr(vae.decode(latent, size=tuple(video.shape[2:])), video)
                offline = aimed.tokenize(latent, source_info(video, chunks[0].fps)[1], video=video)
                row.update(usage_offline_target=offline.token_usage, loss_offline_target=full - psnr(aimed.decode(offline), video),
                           tau_offline_target=offline.tau)  # fmt: skip
                for name, tokenizer in (("stream_target", aimed), ("stream_fixed", fixed)):
                    path = Path(tmp) / f"{name}.latok"
                    row[f"usage_{name}"] = tokenizer.encode_stream(chunks, path).token_usage
                    row[f"loss_{name}"] = full - psnr(torch.cat(list(tokenizer.decode_stream(path)), dim=2), video)
                    taus = file_info(path).get("tau_per_chunk", {"min": summary_tau(path), "max": summary_tau(path)})
                    row[f"tau_{name}"] = [taus["min"], taus["max"]]
                for tau in sweep:
                    path = Path(tmp) / "sweep.latok"
                    usage = LatentTokenizer(vae, tau=tau).encode_stream(chunks, path).token_usage
                    row.setdefault("sweep", {})[f"{tau:g}"] = [usage, full - psnr(torch.cat(list(fixed.decode_stream(path)), dim=2), video)]
            row["psnr_full"] = full
            rows.append(row)
    numeric = [key for key in rows[0] if key.startswith(("usage", "loss", "psnr"))]
    return {"frames": QUALITY_FRAMES, "chunk_frames": CHUNK, "clips": clips, "motion": "block", "target_quality": target,
            "fixed_tau": fixed.settings.tau, "sequences": rows,
            "mean": {key: statistics.mean(r[key] for r in rows) for key in numeric},
            "spread": {key: statistics.pstdev(r[key] for r in rows) for key in numeric if key.startswith("loss")},
            "worst": {key: max(r[key] for r in rows) for key in numeric if key.startswith("loss")}}  # fmt: skip


def equal_loss(target: dict) -> dict:
    """The fixed-tau stream with the target's mean loss: usage and per-clip loss spread interpolated linearly in mean
    loss between the two fixed taus around it (the stream's own and the swept ones; no ``usage`` if none bracket it)."""
    rows = target["sequences"]
    loss = statistics.mean(r["loss_stream_target"] for r in rows)
    runs = {f"{target['fixed_tau']:g}": [[r["usage_stream_fixed"], r["loss_stream_fixed"]] for r in rows]}
    runs.update({tau: [r["sweep"][tau] for r in rows] for tau in rows[0].get("sweep", {})})
    points = []
    for tau, run in runs.items():
        usages, losses = [u for u, _ in run], [d for _, d in run]
        points.append((statistics.mean(losses), float(tau), statistics.mean(usages), statistics.pstdev(losses)))
    points.sort()
    for low, high in zip(points, points[1:]):
        if low[0] <= loss <= high[0]:
            w = (loss - low[0]) / (high[0] - low[0]) if high[0] > low[0] else 0.0
            return {"loss": loss, "tau": low[1] + w * (high[1] - low[1]), "usage": low[2] + w * (high[2] - low[2]),
                    "spread": low[3] + w * (high[3] - low[3]), "points": points}  # fmt: skip
    return {"loss": loss, "points": points}


@contextlib.contextmanager
def encoded_once(vae, chunks: list):
    """Each chunk's latent, encoded once: while open, ``vae.encode`` hands them back to every stream encode of these
    chunks; yields the clip's latent (the chunks' joined)."""
    latents = {chunk.video.data_ptr(): vae.encode(chunk.video) for chunk in chunks}
    encode = vae.encode
    vae.encode = lambda video: latents[video.data_ptr()] if video.data_ptr() in latents else encode(video)
    try:
        yield torch.cat(list(latents.values()), dim=2)
    finally:
        del vae.encode


def speed_part() -> dict:
    """Seconds ``decode_stream`` takes with hold and with lit (the stream default, behind the chunks' lit weights) on one
    stream, and ``encode_stream`` at the fixed tau with the lit weights and without them (``lit_tile=0``), and at the
    quality target per chunk, runs interleaved; idle, then beside two CPU burners."""
    from precision_speed import burners

    vae = LatentTokenizer("taef2").vae
    tokenizer = LatentTokenizer(vae, tau=LatentTokenizer(vae).default_tau)  # the fixed, calibrated tau
    unweighted = LatentTokenizer(vae, tau=tokenizer.settings.tau, lit_tile=0)
    aimed = LatentTokenizer(vae, target_quality=vae.default_target_quality)  # a quality target per chunk
    goat = next(s for s in DAVIS if s.name == "goat")
    chunks = list(stream_clip(goat, CHUNK, frames=SPEED_FRAMES, height=240))
    conditions = {}
    for condition, count in (("idle", 0), ("beside two CPU burners", 2)):
        with burners(count):
            conditions[condition] = _speed_runs(tokenizer, unweighted, aimed, chunks)
    idle = conditions["idle"]
    return {"frames": SPEED_FRAMES, "clip": "goat", "seconds": idle["seconds"], "lit_over_hold": idle["lit_over_hold"],
            "weights_encode_cost": idle["weights_encode_cost"], "conditions": conditions,
            "command": "python eval/stream_eval.py --part speed"}  # fmt: skip


def _speed_runs(tokenizer: LatentTokenizer, unweighted: LatentTokenizer, aimed: LatentTokenizer, chunks: list) -> dict:
    import time

    runs: dict[str, list[float]] = {"hold": [], "lit": [], "encode_weights": [], "encode_no_weights": [], "encode_target": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "goat.latok"
        for _ in range(4):  # the first warms up (loads the inpainter)
            for name, encoder in (("encode_target", aimed), ("encode_no_weights", unweighted), ("encode_weights", tokenizer)):
                start = time.perf_counter()
                encoder.encode_stream(chunks, path)
                runs[name].append(time.perf_counter() - start)
            for fill in ("hold", "lit"):  # the file with weights, written last
                start = time.perf_counter()
                for _piece in tokenizer.decode_stream(path, fill=fill):
                    pass
                runs[fill].append(time.perf_counter() - start)
    seconds = {name: statistics.median(times[1:]) for name, times in runs.items()}
    return {"seconds": seconds, "lit_over_hold": seconds["lit"] / seconds["hold"] - 1,
            "weights_encode_cost": seconds["encode_weights"] / seconds["encode_no_weights"] - 1,
            "target_encode_cost": seconds["encode_target"] / seconds["encode_weights"] - 1}  # fmt: skip


def summary_tau(path: Path) -> float:
    from latok.codec.format.reader import LatokReader

    with LatokReader(path) as reader:
        return float(reader.header["tau"])


def markdown(result: dict) -> str:
    lines = ["# Streaming codec: memory, quality, usage at chunk boundaries", "",
             f"taef2 on {result['device']}, 240p, chunks of {CHUNK} frames. Command: `python eval/stream_eval.py`.", ""]  # fmt: skip
    for key in sorted(k for k in result if k.startswith("memory")):
        memory = result[key]
        setting = "" if key == "memory" else f", --motion {memory['motion']}, {memory['height']}p"
        command = "" if key == "memory" else f" `python eval/stream_eval.py --part memory --motion {memory['motion']} --height {memory['height']}`"
        lines += [f"## Peak memory (resident set, MiB; encode and decode each in its own process{setting}){command}", "",
                  "| mode | frames | encode MiB | decode MiB | encode s | decode s |", "|---|---|---|---|---|---|"]  # fmt: skip
        for r in memory["runs"]:
            lines.append(f"| {r['mode']} | {r['frames']} | {r['encode']['peak_rss_mib']:.0f} | {r['decode']['peak_rss_mib']:.0f} | "
                         f"{r['encode']['seconds']:.0f} | {r['decode']['seconds']:.0f} |")  # fmt: skip
        ratio = memory["stream_ratio_600_vs_60"]
        verdict = "meets" if ratio <= memory["target_ratio"] else "MISSES"
        lines += ["", f"Streaming peak at {LONG} frames / at {SHORT} frames: **{ratio:.3f}** ({verdict} the ≤ 1.15 target).", ""]
    if "speed" in result:
        speed = result["speed"]
        lines += [f"## Stream time by fill and by lit weights (`{speed['command']}`)", "",
                  f"{speed['frames']} frames of {speed['clip']}, 240p, median of 3 after a warm-up, runs interleaved.", "",
                  "| condition | decode_stream hold | decode_stream lit (weighted) | lit over hold | encode_stream with weights | without (`lit_tile=0`) | weights' cost "
                  "| encode_stream at the 0.5 dB target per chunk | over fixed τ |",
                  "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for condition, run in speed.get("conditions", {"idle": speed}).items():
            t = run["seconds"]
            lines.append(f"| {condition} | {t['hold']:.2f} s | {t['lit']:.2f} s | {run['lit_over_hold']:+.0%} | "
                         + (f"{t['encode_weights']:.2f} s | {t['encode_no_weights']:.2f} s | {run['weights_encode_cost']:+.0%} |"
                            if "encode_weights" in t else "— | — | — |")
                         + (f" {t['encode_target']:.2f} s | {run['target_encode_cost']:+.0%} |" if "encode_target" in t else " — | — |"))  # fmt: skip
        lines.append("")
    for key in sorted(k for k in result if k.startswith("quality")):
        quality = result[key]
        m = quality["mean"]
        if "psnr_offline_auto" not in m:  # a result of the earlier layout (offline lit unguarded, no motion): rerun it
            continue
        where = "each DAVIS sequence with 50+ frames" if quality["clips"] == "davis" else f"each {quality['clips']} clip with 50+ frames"
        lines += [f"## Streaming vs offline PSNR ({quality['frames']} frames of {where}, --motion {quality['motion']}, τ {quality['tau']:g})", ""]
        lines += streaming_table(quality)
        if "boundary_usage" in quality:
            lines += [f"### Token usage per latent frame around chunk boundaries (τ {quality['tau']:g})", "",
                      f"Mean over clips and the boundaries at latent frames {quality['boundary_usage']['boundaries']} "
                      "(offset 0 is a chunk's first frame).", "",
                      "| offset | " + " | ".join(str(o) for o in quality["boundary_usage"]["with_csel"]) + " |",
                      "|---|" + "---|" * len(quality["boundary_usage"]["with_csel"])]  # fmt: skip
            for name in ("with_csel", "without_csel"):
                label = "with C_sel" if name == "with_csel" else "without C_sel"
                lines.append(f"| {label} | " + " | ".join(f"{v:.1%}" for v in quality["boundary_usage"][name].values()) + " |")
            lines += ["", f"Whole-clip usage: with C_sel {m['usage_stream']:.1%} (offline {m['usage_offline']:.1%}), "
                      f"without {m['usage_stream_without_csel']:.1%}.", ""]  # fmt: skip
    for key in sorted(k for k in result if k.startswith("target_")):
        lines += target_table(result[key])
    return "\n".join(lines) + "\n"


def target_table(target: dict) -> list[str]:
    """Usage and loss against full rate per clip: stream at a target per chunk, stream at the fixed tau, offline target."""
    m, spread, worst = target["mean"], target["spread"], target["worst"]
    where = "each DAVIS sequence with 50+ frames" if target["clips"] == "davis" else f"each {target['clips']} clip with 50+ frames"
    lines = [f"## Streams at a quality target per chunk ({target['frames']} frames of {where}, chunks of {target['chunk_frames']}, "
             f"--motion block, target {target['target_quality']:g} dB, fixed τ {target['fixed_tau']:g})", "",
             f"`{target['command']}`. Loss: PSNR of the full-rate decode − PSNR of the default decode, dB.", "",
             "| clip | full rate PSNR | stream target usage | loss | chunk τ | stream fixed τ usage | loss | offline target usage | loss | τ |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in target["sequences"]:
        lines.append(f"| {r['sequence']} | {r['psnr_full']:.2f} | {r['usage_stream_target']:.1%} | {r['loss_stream_target']:.2f} | "
                     f"{r['tau_stream_target'][0]:.3f}–{r['tau_stream_target'][1]:.3f} | {r['usage_stream_fixed']:.1%} | "
                     f"{r['loss_stream_fixed']:.2f} | {r['usage_offline_target']:.1%} | {r['loss_offline_target']:.2f} | {r['tau_offline_target']:.3f} |")  # fmt: skip
    lines.append(f"| **mean** | {m['psnr_full']:.2f} | {m['usage_stream_target']:.1%} | {m['loss_stream_target']:.2f} | | "
                 f"{m['usage_stream_fixed']:.1%} | {m['loss_stream_fixed']:.2f} | {m['usage_offline_target']:.1%} | {m['loss_offline_target']:.2f} | |")  # fmt: skip
    lines += [""] + [f"- {label}: usage {m['usage_' + key]:.1%}, loss {m['loss_' + key]:.2f} ± {spread['loss_' + key]:.2f} dB "
                     f"(worst clip {worst['loss_' + key]:.2f} dB)" for key, label in
                     (("stream_target", "stream, target per chunk"), ("stream_fixed", "stream, fixed τ"), ("offline_target", "offline target"))]  # fmt: skip
    if "sweep" in target["sequences"][0]:
        equal = equal_loss(target)
        swept = ", ".join(f"τ {tau:g}: {usage:.1%}, {loss:.2f} ± {spread:.2f} dB" for loss, tau, usage, spread in sorted(equal["points"], key=lambda p: p[1]))
        lines += [f"- fixed τ swept ({swept})" + (f"; at the target's mean loss {equal['loss']:.2f} dB (τ ≈ {equal['tau']:.3f}): usage "
                  f"**{equal['usage']:.1%}**, spread **{equal['spread']:.2f} dB**" if "usage" in equal else "; they do not bracket the target's mean loss")]  # fmt: skip
    return lines + [""]


def streaming_table(quality: dict) -> list[str]:
    """The per-clip table of one quality result and its summary lines (stream default: the weighted lit, where measured)."""
    m, rows = quality["mean"], quality["sequences"]
    weighted = "psnr_stream_auto" in m  # results from before the stream's lit weights have no such column
    lines = [f"Stream lit: {quality.get('stream_lit', 'the causal model')}" + (f"; stream default: {quality['stream_auto']}." if weighted else "."),
             "", f"`{quality['command']}`", "",
             "| clip | usage offline | usage stream | offline hold | offline default (guarded lit) | stream hold | stream lit (unguarded) |"
             + (" stream default (weighted lit) | stream file decoded offline | weights' share of the file |" if weighted else ""),
             "|---|---|---|---|---|---|---|" + ("---|---|---|" if weighted else "")]  # fmt: skip
    for r in rows + [{**m, "sequence": "**mean**"}]:
        lines.append(f"| {r['sequence']} | {r['usage_offline']:.1%} | {r['usage_stream']:.1%} | {r['psnr_offline_hold']:.2f} | "
                     f"{r['psnr_offline_auto']:.2f} | {r['psnr_stream_hold']:.2f} | {r['psnr_stream_lit']:.2f} |"
                     + (f" {r['psnr_stream_auto']:.2f} | {r['psnr_stream_file_offline']:.2f} | {r['lit_weight_share']:.2%} |" if weighted else ""))  # fmt: skip
    default = "psnr_stream_auto" if weighted else "psnr_stream_lit"
    gap = m[default] - m["psnr_offline_auto"]
    worst = min(r[default] - r["psnr_offline_auto"] for r in rows)
    lines += ["", f"Stream − offline, hold: {m['psnr_stream_hold'] - m['psnr_offline_hold']:+.3f} dB; stream {'default' if weighted else 'lit'} − "
              f"offline default decode: **{gap:+.3f} dB** mean, {worst:+.3f} dB worst clip (target: within 0.3 dB: "
              f"{'met' if gap >= -0.3 else 'MISSED'})."]  # fmt: skip
    if weighted:
        over = [r["psnr_stream_auto"] - r["psnr_stream_lit"] for r in rows]
        offline = [r["psnr_stream_file_offline"] - r["psnr_stream_auto"] for r in rows]
        lines += [f"The weights: stream default − unguarded stream lit {statistics.mean(over):+.3f} dB mean, {min(over):+.3f} dB worst clip; "
                  f"the stream file decoded offline − streamed {statistics.mean(offline):+.3f} dB mean, {min(offline):+.3f} dB worst clip."]  # fmt: skip
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("memory", "speed", "quality", "target", "all", "report"), default="all",
                        help="report: rewrite the markdown from the JSON, running nothing")
    parser.add_argument("--target", type=float, default=None, help="target part at this quality target, dB (default: the backend's)")
    parser.add_argument("--sweep", default="", help="target part: also streams at these fixed taus, comma-separated (e.g. 0.15,0.2,0.25,0.3)")
    parser.add_argument("--tau", type=float, default=None, help="quality part at this tau (default: the calibrated one for --motion)")
    parser.add_argument("--motion", choices=("none", "global", "block"), default=None,
                        help="motion model (default: none for the memory part, block, the codec's default, for the quality part)")
    parser.add_argument("--clips", choices=("davis", "pool_val"), default="davis", help="quality part on this set (pool_val selects, davis reports)")
    parser.add_argument("--height", type=int, default=240, help="memory part at this height")
    args = parser.parse_args()
    json_path = OUT / "stream_eval.json"
    result = json.loads(json_path.read_text()) if json_path.exists() else {}
    result["device"] = f"cpu, {os.cpu_count()} cores"
    if args.part in ("memory", "all"):
        motion = args.motion or "none"
        plain = motion == "none" and args.height == 240
        result["memory" if plain else f"memory_motion_{motion}_{args.height}p"] = memory_part(motion, args.height)
    if args.part in ("speed", "all"):
        result["speed"] = speed_part()
    if args.part in ("quality", "all"):
        motion = args.motion or "block"
        quality = quality_part(args.tau, args.clips, motion)
        quality["command"] = "python eval/stream_eval.py --part quality" + "".join(
            f" --{name} {value}" for name, value in (("clips", args.clips), ("motion", args.motion), ("tau", args.tau)) if value is not None)
        result[f"quality_{args.clips}_{motion}" + ("" if args.tau is None else f"_tau{args.tau:g}")] = quality
    if args.part == "target":  # not in "all": it repeats the quality part's clips three times
        sweep = tuple(float(t) for t in args.sweep.split(",") if t)
        target = target_part(args.clips, args.target, sweep)
        target["command"] = f"python eval/stream_eval.py --part target --clips {args.clips}" + (f" --target {args.target:g}" if args.target else "") + (
            f" --sweep {args.sweep}" if sweep else "")
        result[f"target_{args.clips}" + ("" if args.target is None else f"_{args.target:g}dB")] = target
    json_path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    (OUT / "stream_eval.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
