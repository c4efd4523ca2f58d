"""Codec commands: encode, decode, export, info, roundtrip, demo, backends."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from latok.cli.options import (
    PIPELINE_CHOICES,
    _add_backend_options,
    _add_fill_option,
    _add_input_options,
    _add_mask_options,
    _add_stream_options,
    _check_lpips,
    _load_input,
    _read_paths,
    _tokenizer,
    _weight_options,
)
from latok.errors import InvalidInputError


def add_file_commands(commands) -> None:
    """encode, decode and export."""
    encode = commands.add_parser(
        "encode", help="video -> .latok tokens", description="Encode a video into adaptive latent tokens."
    )
    encode.add_argument("input", help="video file or frame folder")
    encode.add_argument("-o", "--output", required=True, help="output .latok file")
    _add_input_options(encode)
    _add_backend_options(encode)
    _add_mask_options(encode)
    _add_stream_options(
        encode, "encode chunk by chunk, writing the file as it goes: any length in the memory of one chunk"
    )
    encode.set_defaults(run=run_encode)

    decode = commands.add_parser(
        "decode", help=".latok tokens -> video", description="Decode a .latok file to mp4 (or a PNG folder)."
    )
    decode.add_argument("input", help=".latok file")
    decode.add_argument("-o", "--output", required=True, help="output .mp4/.mov/.mkv, or a folder name for PNG frames")
    _add_fill_option(decode)
    _add_backend_options(decode, backend=False)
    decode.add_argument(
        "--stream",
        action="store_true",
        help="decode chunk by chunk, writing the video as it goes (lit runs the inpainter over each chunk and the frames restored "
        "before it); files written with --stream carry lit weights (and, with a quality target, a tau per chunk) fitted to this "
        "decode, and always decode this way",
    )
    decode.set_defaults(run=run_decode)

    export = commands.add_parser(
        "export", help=".latok tokens -> safetensors for a generator (dense latent or packed tokens)",
        description="Write a .latok file's latents as safetensors: --format dense gives the restored "
        "(1, C, t, h, w) latent and its keep mask; --format packed gives the kept tokens with their "
        "(t, y, x) positions, staleness and cu_seqlens. The .latok header goes into the metadata.",
    )  # fmt: skip
    export.add_argument("input", help=".latok file")
    export.add_argument("-o", "--output", required=True, help="output .safetensors file")
    export.add_argument("--format", choices=("dense", "packed"), default="dense", help="(default: %(default)s)")
    export.add_argument(
        "--native",
        action="store_true",
        help="dense: the autoencoder's own latent space instead of latok's normalised one",
    )
    export.add_argument(
        "--for",
        dest="pipeline",
        choices=PIPELINE_CHOICES, metavar="PIPELINE",
        default=None,
        help="(%(choices)s) dense: exactly the tensor that diffusers pipeline's latents= takes (layout, scale, packing; "
        "the shipped scheduler settings), under the key 'latents' (README: Feeding latents to a generator)",
    )
    _add_fill_option(export)
    _add_backend_options(export, backend=False)
    export.set_defaults(run=run_export)


def add_measure_commands(commands) -> None:
    """info, roundtrip, demo and backends."""
    info = commands.add_parser("info", help="print a .latok file's header and statistics as JSON")
    info.add_argument("input", help=".latok file")
    info.add_argument(
        "--verify",
        action="store_true",
        help="also decode every mask and value (time grows with the clip the file declares; "
        "without it info reads the file's structure, in time proportional to its size)",
    )
    info.set_defaults(run=run_info)

    roundtrip = commands.add_parser(
        "roundtrip", help="encode + decode one clip and measure it",
        description="Encode, pack, fill and decode a clip; write the reconstruction and a metrics JSON.",
    )  # fmt: skip
    roundtrip.add_argument("input", help="video file or frame folder")
    roundtrip.add_argument("-o", "--output", required=True, help="reconstruction (.mp4/.mov/.mkv or folder)")
    roundtrip.add_argument("--json", required=True, help="metrics JSON path")
    roundtrip.add_argument("--viz", help="also write original | reconstruction | keep mask side by side (.mp4)")
    roundtrip.add_argument("--latok", help="also keep the .latok file here")
    _add_input_options(roundtrip, frames=33)
    _add_backend_options(roundtrip)
    _add_mask_options(roundtrip)
    _add_fill_option(roundtrip)
    _add_lpips_flag(roundtrip)
    roundtrip.set_defaults(run=run_roundtrip)

    demo = commands.add_parser(
        "demo",
        help="run the codec on a clip: print token usage, bitrate, timings and PSNR, write the outputs",
        description="Run the whole codec on a clip (default: latok's built-in synthetic sample).",
    )
    demo.add_argument("input", nargs="?", help="video file or frame folder (default: the built-in sample clip)")
    demo.add_argument(
        "-o", "--output-dir", default="outputs/demo", help="where to write outputs (default: %(default)s)"
    )
    demo.add_argument("--frames", type=int, default=17, help="frames to read (default: %(default)s)")
    demo.add_argument("--height", type=int, default=240, help="resize height, 240p protocol (default: %(default)s)")
    _add_backend_options(demo)
    _add_mask_options(demo)
    _add_fill_option(demo)
    _add_lpips_flag(demo)
    demo.set_defaults(run=run_demo)

    backends = commands.add_parser("backends", help="list VAE backends, their latent geometry and weight availability")
    backends.add_argument("--json", action="store_true", help="print JSON instead of a table")
    backends.set_defaults(run=run_backends)


def _add_lpips_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lpips", action="store_true", help="also compute LPIPS-VGG (one VGG16 pass per frame: slow on CPU)")


def run_encode(args: argparse.Namespace) -> int:
    from latok._fs import check_outputs
    from latok.codec.format.writer import save_latok
    from latok.evaluation.reports import file_info

    if args.stream and args.pixel_guard:
        raise InvalidInputError("--pixel-guard does not apply to --stream: streams weigh the inpainter per chunk on latents")
    check_outputs({"-o": args.output}, _read_paths(args))
    tokenizer = _tokenizer(args)
    if args.stream:
        _encode_stream(args, tokenizer)
    else:
        save_latok(tokenizer.encode(_load_input(args)), args.output)
    print(json.dumps(file_info(args.output), indent=2))
    return 0


def _encode_stream(args: argparse.Namespace, tokenizer) -> None:
    from tqdm.auto import tqdm

    from latok.io import stream_clip

    tokenizer.vae.progress = False  # one bar over the stream instead of one per chunk
    chunks = stream_clip(
        args.input, args.chunk, frames=args.frames, start=args.start, stride=args.stride, height=args.height or None
    )
    with tqdm(unit="frame", desc=f"{tokenizer.vae.name} encode --stream") as bar:

        def counted():
            for chunk in chunks:
                yield chunk
                bar.update(chunk.frames)

        tokenizer.encode_stream(counted(), args.output)


def run_decode(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from latok._fs import check_outputs
    from latok.codec.format.header import chunk_lit_weights
    from latok.codec.format.reader import LatokReader, load_latok
    from latok.evaluation.reports import file_info
    from latok.io import VideoWriter, check_output_path, write_video

    output = check_output_path(args.output)
    check_outputs({"-o" if output.suffix else "-o folder": output}, _read_paths(args))
    with LatokReader(args.input) as reader:
        header = reader.header
    info = file_info(args.input)  # the file's structure, checked before any model loads or any frame decodes
    tokenizer = _tokenizer(args, backend=header["backend"])
    tokenizer.check_backend(header["backend"], header["backend_config"])  # before the clip is read
    if args.stream or chunk_lit_weights(header) or header["chunk_tau"]:  # a stream's lit weights and taus fit the stream decode
        tokenizer.vae.progress = False
        source = header["source"]
        with (
            VideoWriter(args.output, fps=source["fps"]) as out,
            tqdm(total=source["frames"], unit="frame", desc="decode --stream") as bar,
        ):
            for piece in tokenizer.decode_stream(args.input):
                out.write(piece)
                bar.update(piece.shape[2])
        frames, height, width = source["frames"], source["height"], source["width"]
        fill = tokenizer.resolve_stream(header)
    else:
        adaptive = load_latok(args.input)
        fill = tokenizer.resolve(adaptive)
        write_video(args.output, tokenizer.decode(adaptive, fill), fps=adaptive.source.fps)
        frames, height, width = adaptive.source.frames, adaptive.source.height, adaptive.source.width
    print(f"wrote {args.output}: {frames} frames, {width}x{height}, {info['token_usage']:.1%} tokens, fill {fill.name}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from latok._fs import check_outputs, write_safetensors
    from latok.codec.format.reader import load_latok
    from latok.codec.format.writer import header_of
    from latok.codec.restore.resolve import Inpainters, resolve, restore
    from latok.vae import load_vae
    from latok.vae.base import parse_device

    output = Path(args.output)
    if output.suffix != ".safetensors":
        raise InvalidInputError(f"{output}: export writes .safetensors files")
    check_outputs({"-o": output}, _read_paths(args))
    if args.pipeline and (args.format == "packed" or args.native):
        raise InvalidInputError(
            "--for writes the pipeline's dense latents: it takes neither --format packed nor --native"
        )
    adaptive = load_latok(args.input)
    metadata = {"latok_header": json.dumps(header_of(adaptive, 0), sort_keys=True), "format": args.format}
    if args.pipeline:
        from latok.codec.interop.pipelines import check_backend

        check_backend(args.pipeline, adaptive.backend)  # before any fill runs
    if args.format == "packed":
        from latok.codec.interop.packing import pack

        packed = pack(adaptive)
        tensors = packed.to_dict()
        metadata["max_seqlen"] = str(packed.max_seqlen)
    else:
        device = parse_device(args.device)
        fill = resolve(adaptive, args.fill, Inpainters.for_tokens(adaptive, device, args.inpainter))  # resolved once; loads lit only if it runs
        vae = (
            load_vae(adaptive.backend, device=device, precision=args.precision, **_weight_options(args, adaptive.backend))
            if args.native
            else None
        )
        if args.pipeline:
            from latok.codec.interop.pipelines import to_pipeline

            tensors = {
                "latents": to_pipeline(args.pipeline, restore(adaptive, fill)),
                "keep": adaptive.keep.contiguous(),
            }
            metadata.update(fill=fill.name, space=f"pipeline:{args.pipeline}")
        else:
            latent = restore(adaptive, fill, native=args.native, vae=vae)
            tensors = {"latent": latent.contiguous(), "keep": adaptive.keep.contiguous()}
            metadata.update(fill=fill.name, space="native" if args.native else "latok")
    write_safetensors(tensors, output, metadata)
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in tensors.items())
    print(f"wrote {output}: {args.format}, {shapes}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from latok.evaluation.reports import file_info

    print(
        json.dumps(file_info(args.input, verify=args.verify), indent=2, allow_nan=False)
    )  # strict JSON: the header admits no NaN
    return 0


def run_roundtrip(args: argparse.Namespace) -> int:
    from latok._fs import check_outputs, staged_outputs
    from latok.evaluation.reports import roundtrip, write_outputs
    from latok.io import check_output_path

    output = check_output_path(args.output)
    viz = check_output_path(args.viz, (".mp4", ".mov", ".mkv")) if args.viz else None
    outputs = {"-o" if output.suffix else "-o folder": output, "--json": Path(args.json), "--viz": viz,
               "--latok": Path(args.latok) if args.latok else None}  # fmt: skip
    check_outputs(outputs, _read_paths(args))
    _check_lpips(args)
    clip = _load_input(args)
    tokenizer = _tokenizer(args)
    named = {name: path for name, path in outputs.items() if path is not None}
    with staged_outputs(*named.values()) as temps:  # all outputs appear together, or none
        staged = dict(zip(named, temps))
        report = {"input": args.input, **roundtrip(tokenizer, clip, staged.get("--latok"), with_lpips=args.lpips)}
        report = write_outputs(report, clip.video, temps[0], staged.get("--viz"), staged["--json"])
    print(json.dumps(report, indent=2))
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from latok._fs import check_outputs, staged_outputs
    from latok.errors import OutputError
    from latok.evaluation.pages import file_page
    from latok.evaluation.reports import demo_text, roundtrip, write_outputs
    from latok.io import Clip, check_read_options, frames_to_video, load_clip
    from latok.sample import SAMPLE_FPS, sample_frames

    output_dir = Path(args.output_dir)
    paths = {
        "tokens": output_dir / "clip.latok",
        "reconstruction": output_dir / "reconstruction.mp4",
        "visualisation": output_dir / "side_by_side.mp4",
        "metrics": output_dir / "metrics.json",
        "page": output_dir / "clip.html",  # latok view of clip.latok
    }
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputError(f"-o {output_dir}: is not a directory")
    check_outputs({f"-o ({name})": path for name, path in paths.items()}, _read_paths(args))
    _check_lpips(args)
    if args.input:
        clip = load_clip(args.input, frames=args.frames, height=args.height or None)
    else:
        if not args.height:
            raise InvalidInputError(
                "the built-in sample needs a --height (>= 8); 0 keeps a source size it does not have"
            )
        check_read_options(args.frames, 0, 1, args.height)
        height, width = args.height, _sample_width(args.height)
        video = frames_to_video(sample_frames(frames=args.frames, height=height, width=width))
        clip = Clip(video, SAMPLE_FPS, (height, width), (height, width), (0, 0, height, width))
    tokenizer = _tokenizer(args)
    with staged_outputs(*paths.values()) as temps:  # all outputs appear together, or none
        staged = dict(zip(paths, temps))
        report = {"input": args.input or "built-in synthetic sample (static texture, panning region, moving disc)",
                  **roundtrip(tokenizer, clip, staged["tokens"], with_lpips=args.lpips)}  # fmt: skip
        report["raw_bytes"] = clip.video.numel()
        report["outputs"] = {name: str(path) for name, path in paths.items()}
        report = write_outputs(report, clip.video, staged["reconstruction"], staged["visualisation"], staged["metrics"])
        staged["page"].write_text(file_page(staged["tokens"], name=paths["tokens"].name))
    print(demo_text(report))
    return 0


def _sample_width(height: int) -> int:
    """16:9 frames cropped to a multiple of 16, as the 240p protocol crops DAVIS (416 at 240)."""
    return max(16, round(height * 16 / 9) // 16 * 16)


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
