"""The ``latok`` command line.

Commands import what they need when they run, so ``latok --help`` stays fast.
Expected failures (:class:`~latok.errors.LatokError`) print one line and exit 2;
nothing partial is left at output paths.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from latok import __version__
from latok.errors import LatokError

logger = logging.getLogger("latok")

EXIT_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latok",
        description="Adaptive video tokenization over a frozen video autoencoder.",
    )
    parser.add_argument("--version", action="version", version=f"latok {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo",
        help="encode and decode a clip, print sizes, timings and PSNR, write the reconstruction",
        description="Encode and decode a clip (default: latok's built-in synthetic sample) through a backend.",
    )
    demo.add_argument("input", nargs="?", help="video file or frame folder (default: the built-in sample clip)")
    demo.add_argument("-o", "--output-dir", default="outputs/demo", help="where to write outputs (default: %(default)s)")
    demo.add_argument("--backend", default="taef2", help="VAE backend (default: %(default)s; see `latok backends`)")
    demo.add_argument("--frames", type=int, default=17, help="frames to read (default: %(default)s)")
    demo.add_argument("--height", type=int, default=240, help="resize height, 240p protocol (default: %(default)s)")
    demo.add_argument("--weights", help="weights file or directory for the backend (default: LATOK_WEIGHTS_DIR, cache, download)")
    demo.add_argument("--device", default=None, help="torch device, e.g. cuda (default: cpu)")
    demo.set_defaults(run=run_demo)

    backends = commands.add_parser("backends", help="list VAE backends, their latent geometry and weight availability")
    backends.add_argument("--json", action="store_true", help="print JSON instead of a table")
    backends.set_defaults(run=run_backends)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``latok`` script; returns the exit status (callable from tests)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    try:
        return args.run(args) or 0
    except LatokError as error:
        print(f"latok: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("latok: interrupted", file=sys.stderr)
        return 130


# -- demo ----------------------------------------------------------------------------------


def run_demo(args: argparse.Namespace) -> int:
    import torch

    from latok.io import frames_to_video, load_clip, write_video
    from latok.metrics import psnr
    from latok.sample import SAMPLE_FPS, sample_frames
    from latok.vae import load_vae

    options = {"device": args.device}
    if args.weights:
        options["weights" if args.backend == "taef2" else "pretrained"] = args.weights
    output_dir = Path(args.output_dir)

    start = time.perf_counter()
    if args.input:
        clip = load_clip(args.input, frames=args.frames, height=args.height)
        video, fps, source = clip.video, clip.fps, args.input
    else:
        video = frames_to_video(sample_frames(frames=args.frames, height=args.height, width=_sample_width(args.height)))
        fps, source = SAMPLE_FPS, "built-in synthetic sample (static texture, panning region, moving disc)"
    read_seconds = time.perf_counter() - start

    vae = load_vae(args.backend, **options)
    vae.progress = True
    start = time.perf_counter()
    latent = vae.encode(video)
    encode_seconds = time.perf_counter() - start
    start = time.perf_counter()
    reconstruction = vae.decode(latent, size=video.shape[-3:])
    decode_seconds = time.perf_counter() - start

    _, _, frames, height, width = video.shape
    duration = frames / fps
    positions = latent.shape[2] * latent.shape[3] * latent.shape[4]
    latent_bytes = latent.numel() * 2  # fp16 storage
    report = {
        "source": str(source),
        "backend": vae.name,
        "device": str(vae.device),
        "frames": frames,
        "height": height,
        "width": width,
        "fps": fps,
        "latent_shape": list(latent.shape),
        "tokens": positions,
        "token_usage": 1.0,  # every latent position is kept until masking lands (issue 3)
        "raw_bytes": video.numel(),
        "latent_bytes_fp16": latent_bytes,
        "kbps_fp16": latent_bytes * 8 / duration / 1000,
        "bpp_fp16": latent_bytes * 8 / (frames * height * width),
        "psnr": psnr(reconstruction, video),
        "seconds": {"read": read_seconds, "encode": encode_seconds, "decode": decode_seconds},
        "encode_fps": frames / encode_seconds,
        "decode_fps": frames / decode_seconds,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    reconstruction_path = write_video(output_dir / "reconstruction.mp4", reconstruction, fps=fps)
    original_path = write_video(output_dir / "original.mp4", video, fps=fps)
    report["outputs"] = {"reconstruction": str(reconstruction_path), "original": str(original_path)}
    _write_json(output_dir / "metrics.json", report)
    report["outputs"]["metrics"] = str(output_dir / "metrics.json")
    _print_demo(report)
    return 0


def _sample_width(height: int) -> int:
    """16:9 frames cropped to a multiple of 16, as the 240p protocol crops DAVIS (416 at 240)."""
    return max(16, round(height * 16 / 9) // 16 * 16)


def _print_demo(report: dict) -> None:
    t = report["seconds"]
    lines = [
        f"source        {report['source']}",
        f"clip          {report['frames']} frames, {report['width']}x{report['height']} @ {report['fps']:.2f} fps",
        f"backend       {report['backend']} on {report['device']}, latent {tuple(report['latent_shape'])}",
        f"tokens        {report['tokens']} latent positions kept, usage {report['token_usage']:.1%}",
        f"size          raw {report['raw_bytes'] / 1e6:.2f} MB -> latents {report['latent_bytes_fp16'] / 1e6:.2f} MB fp16",
        f"bitrate       {report['kbps_fp16']:.0f} kbps, {report['bpp_fp16']:.3f} bpp (fp16 latents, no entropy coding)",
        f"time          read {t['read']:.2f} s, encode {t['encode']:.2f} s ({report['encode_fps']:.2f} fps), "
        f"decode {t['decode']:.2f} s ({report['decode_fps']:.2f} fps)",
        f"PSNR          {report['psnr']:.2f} dB",
        f"outputs       {report['outputs']['reconstruction']}, {report['outputs']['original']}, {report['outputs']['metrics']}",
    ]
    print("\n".join(lines))


def _write_json(path: Path, payload: dict) -> None:
    from latok._fs import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")


# -- backends ------------------------------------------------------------------------------


def run_backends(args: argparse.Namespace) -> int:
    from latok.vae import list_vaes, vae_class

    rows = []
    for name in list_vaes():
        cls = vae_class(name)
        rows.append({
            "name": name,
            "latent_channels": cls.latent_channels,
            "temporal_ratio": cls.temporal_ratio,
            "spatial_ratio": cls.spatial_ratio,
            "weights_available": cls.weights_available(),
            "source": getattr(cls, "hub_id", "madebyollin/taesd (TAEF2)"),
        })  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'backend':<16}{'channels':>9}  {'ratio (t x h x w)':<18}{'weights':<10}source")
    for row in rows:
        ratio = f"{row['temporal_ratio']}x{row['spatial_ratio']}x{row['spatial_ratio']}"
        weights = "yes" if row["weights_available"] else "no"
        print(f"{row['name']:<16}{row['latent_channels']:>9}  {ratio:<18}{weights:<10}{row['source']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
