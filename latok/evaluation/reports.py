"""What the codec commands report: a ``.latok`` file's statistics, and one clip's round trip.

``latok info`` prints :func:`file_info`; ``latok roundtrip`` and ``latok demo`` run
:func:`roundtrip`, write its outputs with :func:`write_outputs`, and ``demo`` prints
:func:`demo_text`.  The CLI only parses arguments and calls these.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from latok._fs import atomic_path
from latok.codec.format.writer import bitrate, encoded_size, save_latok
from latok.codec.format.reader import LatokReader
from latok.codec.tokens import LIT_WEIGHT_STEPS


def file_info(path: str | Path, verify: bool = False) -> dict:
    """Header and statistics of a ``.latok`` file, read chunk by chunk in the memory of one packed chunk.

    By default only the file's structure is read (:meth:`LatokReader.records` with ``decode=False``),
    in time proportional to its bytes; ``verify`` also decodes every mask and value, in time
    proportional to the clip the file declares, and adds ``"verified": true``.
    """
    path = Path(path)
    with LatokReader(path) as reader:
        header, size, header_bytes = reader.header, reader.size, reader.header_bytes
        tokens, chunks, mask_bytes, value_bytes, motion_bytes, lit_bytes, lit_codes = 0, 0, 0, 0, 0, 0, []
        tau_bytes, taus = 0, []
        for chunk in reader.records(decode=verify):
            tokens += chunk.count
            chunks += 1
            mask_bytes += chunk.mask_bytes
            value_bytes += chunk.values_bytes
            motion_bytes += chunk.motion_bytes
            lit_bytes += chunk.lit_bytes
            if chunk.lit_weights is not None:
                lit_codes.append(chunk.lit_weights)
            if chunk.tau is not None:
                taus.append(chunk.tau)
                tau_bytes += chunk.tau_bytes
    source, shape = header["source"], header["shape"]
    guard = header["lit_frames"]
    if lit_codes:  # a stream's weights, per chunk
        codes = torch.cat(lit_codes)
        guard = "".join("1" if frame.any() else "0" for frame in codes)
        weights = {"tile": header["lit_tile"], "mean_weight": float(codes.float().mean()) / LIT_WEIGHT_STEPS, "weight_bytes": lit_bytes, "per_chunk": True}
    else:
        weights = lit_weight_summary(header)
    return {
        "file": str(path),
        "backend": header["backend"],
        "tau": header["tau"],
        **({"tau_per_chunk": {"min": min(taus), "mean": sum(taus) / len(taus), "max": max(taus)}} if taus else {}),
        "target_usage": header["target_usage"],
        "target_quality": header["target_quality"],
        "reference": header["reference"],
        "rule_metric": header["rule_metric"] or "latent",
        "motion": header["motion"] or "none",
        "precision": header["precision"] or "not recorded",
        "keyframe_interval": header["keyframe_interval"],
        "lit_guard": None if guard is None else {"lit_frames": guard.count("1"), "of": len(guard), **weights},
        "frames": source["frames"],
        "height": source["height"],
        "width": source["width"],
        "fps": source["fps"],
        "latent_shape": shape,
        "chunks": chunks,
        "tokens": tokens,
        "token_usage": tokens / (shape[2] * shape[3] * shape[4]),
        "dtype": header["dtype"],
        "value_step": None if header["value_step"] is None else {"min": min(header["value_step"]), "max": max(header["value_step"])},
        "format_version": reader.version,
        "bytes": size,
        "bytes_by_part": {"header": header_bytes, "masks": mask_bytes, "values": value_bytes, "motion": motion_bytes, "lit_weights": lit_bytes,
                          **({"taus": tau_bytes} if taus else {}),
                          "end": size - header_bytes - mask_bytes - value_bytes - motion_bytes - lit_bytes - tau_bytes},
        "bits_per_kept_value": value_bytes * 8 / (tokens * shape[1]) if tokens else None,
        **bitrate(size, source["frames"], source["height"], source["width"], source["fps"]),
        **({"verified": True} if verify else {}),
    }


def lit_weight_summary(header: dict) -> dict:
    """The weighted lit guard in a header: its squares' side, mean weight and the header bytes its codes take."""
    if header["lit_weights"] is None:
        return {}
    from latok.codec.format.header import lit_weight_codes

    codes = lit_weight_codes(header)
    return {"tile": header["lit_tile"], "mean_weight": float(codes.mean()) / LIT_WEIGHT_STEPS, "weight_bytes": len(header["lit_weights"])}


class Stopwatch:
    """Named wall-clock sections: ``with watch("encode"): ...``; ``watch.seconds`` holds the totals."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def roundtrip(tokenizer, clip, latok_path: Path | None = None, with_lpips: bool = False) -> dict:
    """Encode -> pack -> fill -> decode ``clip`` (a :class:`latok.io.Clip`), timing each stage.

    Returns the metrics, plus the reconstruction ``(1, 3, T, H, W)`` and the keep mask under
    ``"video"`` and ``"keep"``.  The ``.latok`` file is written to ``latok_path`` if given."""
    from latok.codec.streams import source_info
    from latok.evaluation.metrics import lpips, psnr, ssim

    watch = Stopwatch()
    video, source = source_info(clip)
    with watch("encode"):
        latent = tokenizer.vae.encode(video)
    with watch("tokenize"):  # what `latok encode` writes: motion, tau (a quality target checked on decoded frames), mask, lit guard
        adaptive = tokenizer.tokenize(latent, source, video=video)
    size = save_latok(adaptive, latok_path).stat().st_size if latok_path else encoded_size(adaptive)
    with watch("inpaint"):
        fill = tokenizer.resolve(adaptive)
        dense = tokenizer.restore(adaptive, fill)
    with watch("decode"):
        reconstruction = tokenizer.vae.decode(dense, size=(source.frames, source.height, source.width))
    return {
        "backend": tokenizer.vae.name,
        "device": str(tokenizer.vae.device),
        "precision": tokenizer.vae.precision,
        "frames": source.frames,
        "height": source.height,
        "width": source.width,
        "fps": source.fps,
        "latent_shape": list(adaptive.shape),
        "tau": adaptive.tau,
        "target_usage": adaptive.target_usage,
        "reference": adaptive.reference,
        "motion": adaptive.motion_model or "none",
        "fill": fill.name,
        "tokens": adaptive.num_tokens,
        "token_usage": adaptive.token_usage,
        "bytes": size,
        **bitrate(size, source.frames, source.height, source.width, source.fps),
        "psnr": psnr(reconstruction, video),
        "ssim": ssim(reconstruction, video),
        "lpips": lpips(reconstruction, video) if with_lpips else None,
        "seconds": dict(watch.seconds),
        "video": reconstruction,
        "keep": adaptive.keep,
    }


def write_outputs(report: dict, original: torch.Tensor, output: Path | None, viz: Path | None, json_path: Path) -> dict:
    """Write the reconstruction (``output``), the side-by-side view (``viz``) and the metrics JSON;
    returns the report without its tensors."""
    from latok.evaluation.viz import side_by_side
    from latok.io import write_video

    reconstruction, keep = report.pop("video"), report.pop("keep")
    if output is not None:
        write_video(output, reconstruction, fps=report["fps"])
    if viz is not None:
        write_video(viz, side_by_side(original, reconstruction, keep), fps=report["fps"])
    write_json(json_path, report)
    return report


def write_json(path: Path, payload: dict) -> None:
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")


def demo_text(report: dict) -> str:
    """The demo's summary: clip, tokens, size, bitrate, timings, quality, outputs."""
    t = report["seconds"]
    frames = report["frames"]
    lines = [
        f"input         {report['input']}",
        f"clip          {frames} frames, {report['width']}x{report['height']} @ {report['fps']:.2f} fps",
        f"backend       {report['backend']} on {report['device']} in {report.get('precision', 'fp32')}, latent {tuple(report['latent_shape'])}",
        f"tokens        {report['tokens']} kept, usage {report['token_usage']:.1%} "
        f"(tau {report['tau']:.3g}, {report['reference']} reference, motion {report.get('motion', 'none')})",
        f"size          raw {report['raw_bytes'] / 1e6:.2f} MB -> .latok {report['bytes'] / 1e3:.1f} kB",
        f"bitrate       {report['kbps']:.0f} kbps, {report['bpp']:.3f} bpp",
        f"time          encode {t['encode']:.2f} s ({frames / t['encode']:.2f} fps), tokenize (motion, tau, mask, lit guard) "
        f"{t['tokenize'] * 1e3:.1f} ms, fill ({report['fill']}) {t['inpaint'] * 1e3:.1f} ms, decode {t['decode']:.2f} s ({frames / t['decode']:.2f} fps)",
        f"quality       PSNR {report['psnr']:.2f} dB, SSIM {report['ssim']:.4f}"
        + (f", LPIPS {report['lpips']:.4f}" if report["lpips"] is not None else ""),
        f"outputs       {', '.join(report['outputs'].values())}",
    ]
    return "\n".join(lines)
