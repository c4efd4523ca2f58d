"""The ``latok`` command line.

Commands import what they need when they run, so ``latok --help`` stays fast.
Expected failures (:class:`~latok.errors.LatokError`) print one line and exit 2;
nothing partial is left at output paths.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from latok import __version__
from latok.errors import InvalidInputError, LatokError

logger = logging.getLogger("latok")

EXIT_ERROR = 2
MOTION_CHOICES = ("none", "global", "block")
PIPELINE_CHOICES = ("wan", "cogvideox", "hunyuanvideo", "ltx-video", "cosmos")  # latok.codec.pipelines.CONVENTIONS  # latok.codec.tokenizer.MOTIONS, without importing torch to parse arguments


def _add_input_options(parser: argparse.ArgumentParser, frames: int | None = None) -> None:
    parser.add_argument("--frames", type=int, default=frames, help="frames to read (default: %(default)s = all)" if frames is None else "frames to read (default: %(default)s)")
    parser.add_argument("--start", type=int, default=0, help="first source frame (default: 0)")
    parser.add_argument("--stride", type=int, default=1, help="keep every n-th source frame (default: 1)")
    parser.add_argument("--height", type=int, default=240, help="resize height, 240p protocol; 0 keeps the source size (default: %(default)s)")


def _add_backend_options(parser: argparse.ArgumentParser, backend: bool = True) -> None:
    if backend:
        parser.add_argument("--backend", default="taef2", help="VAE backend (default: %(default)s; see `latok backends`)")
    parser.add_argument("--weights", action="append", metavar="PATH",
                        help="backend weights: a folder holding the backend's files; for taef2 also both files, "
                        "--weights ENCODER.pth --weights DECODER.pth; for diffusers backends a hub id or local folder "
                        "(default: LATOK_WEIGHTS_DIR, then the cache, then download)")
    parser.add_argument("--device", default=None, help="torch device, e.g. cuda (default: cpu)")


def _add_mask_options(parser: argparse.ArgumentParser) -> None:
    rate = parser.add_mutually_exclusive_group()
    rate.add_argument("--tau", type=float, help="masking threshold (default: the backend's calibrated tau)")
    rate.add_argument("--target-usage", type=float, metavar="U", help="keep about this fraction of tokens, tau picked per clip")
    parser.add_argument("--reference", choices=("last-kept", "previous"), default="last-kept", help="masking reference (default: %(default)s)")
    parser.add_argument("--keyframe-interval", type=int, default=None, metavar="K", help="keep every K-th latent frame whole (default: off)")
    parser.add_argument("--motion", choices=MOTION_CHOICES, default="block",
                        help="compare each position with the reference warped by the frame's motion, estimated from the latents: "
                        "one translation per latent frame (global), or also one per 4x4 latent block where that fits better (block); "
                        "stored in the file, and every fill follows it (default: %(default)s)")
    _add_value_step_option(parser)
    parser.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16",
                        help="storage dtype of kept values with --value-step 0 (default: %(default)s)")
    parser.add_argument("--lit-guard", action=argparse.BooleanOptionalAction, default=True,
                        help="run the inpainter once at encode time and record, per latent frame, whether it beats hold "
                        "there (1 bit per frame; needs a shipped or given inpainter; default: on)")
    parser.add_argument("--pixel-guard", action="store_true",
                        help="decide the lit guard on decoded pixels: lit only on frames where it decodes closer to the input "
                        "than hold (never worse than hold on any frame; up to 2 extra frame decodes per lit frame at encode)")


def _add_value_step_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--value-step", type=float, default=None, metavar="S",
                        help="quantise kept values with step S in latok's normalised space (per channel, divided by the decoder's "
                        "sensitivity to it) and entropy-code them (format version 3); 0 keeps exact values in --dtype, bit for bit "
                        "(default: the backend's, taef2: 0.13)")


def _add_stream_options(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--stream", action="store_true", help=help)
    parser.add_argument("--chunk", type=int, default=16, metavar="N", help="frames per chunk with --stream (default: %(default)s)")


def _add_fill_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fill", choices=("auto", "zero", "hold", "interp", "lit"), default=None,
                        help="how dropped tokens are restored (default: auto = lit on the frames the encoder's lit guard "
                        "allows when the tokens carry one, else hold; lit uses checkpoints/<backend>-lit-xs)")
    parser.add_argument("--inpainter", help="inpainter checkpoint directory for --fill lit (default: checkpoints/<backend>-lit-xs)")


def _add_dataset_options(parser: argparse.ArgumentParser, out_help: str) -> None:
    """Dataset, clip protocol, output and LPIPS options shared by ``eval`` and ``bench``."""
    parser.add_argument("--dataset", choices=("davis", "tokenbench", "folder"), required=True, help="dataset layout")
    parser.add_argument("--root", required=True, help="dataset root (DAVIS: the folder holding ImageSets/ and JPEGImages/)")
    parser.add_argument("--out", required=True, help=out_help)
    parser.add_argument("--lpips", action=argparse.BooleanOptionalAction, default=True, help="compute LPIPS-VGG (default: on)")
    parser.add_argument("--frames", type=int, default=17, help="frames per clip (default: %(default)s)")
    parser.add_argument("--start", type=int, default=0, help="first source frame (default: 0)")
    parser.add_argument("--stride", type=int, default=1, help="keep every n-th source frame (default: 1)")
    parser.add_argument("--height", type=int, default=240, help="resize height; 0 keeps the source size (default: %(default)s)")
    parser.add_argument("--year", default="2016", help="DAVIS ImageSets year (default: %(default)s)")
    parser.add_argument("--split", default="val", help="DAVIS split (default: %(default)s)")
    parser.add_argument("--resolution", default="480p", help="DAVIS JPEGImages resolution (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N clips")
    parser.add_argument("--inpainter", help="inpainter checkpoint for fill lit (default: checkpoints/<backend>-lit-xs)")
    _add_backend_options(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latok",
        description="Adaptive video tokenization over a frozen video autoencoder.",
    )
    parser.add_argument("--version", action="version", version=f"latok {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    encode = commands.add_parser("encode", help="video -> .latok tokens", description="Encode a video into adaptive latent tokens.")
    encode.add_argument("input", help="video file or frame folder")
    encode.add_argument("-o", "--output", required=True, help="output .latok file")
    _add_input_options(encode)
    _add_backend_options(encode)
    _add_mask_options(encode)
    _add_stream_options(encode, "encode chunk by chunk, writing the file as it goes: any length in the memory of one chunk")
    encode.set_defaults(run=run_encode)

    decode = commands.add_parser("decode", help=".latok tokens -> video", description="Decode a .latok file to mp4 (or a PNG folder).")
    decode.add_argument("input", help=".latok file")
    decode.add_argument("-o", "--output", required=True, help="output .mp4/.mov/.mkv, or a folder name for PNG frames")
    _add_fill_option(decode)
    _add_backend_options(decode, backend=False)
    decode.add_argument("--stream", action="store_true",
                        help="decode chunk by chunk, writing the video as it goes (lit uses the causal checkpoint <backend>-lit-xs-causal)")
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
    export.add_argument("--native", action="store_true", help="dense: the autoencoder's own latent space instead of latok's normalised one")
    export.add_argument("--for", dest="pipeline", choices=PIPELINE_CHOICES, default=None,
                        help="dense: exactly the tensor that diffusers pipeline's latents= takes (layout, scale, packing; "
                        "the shipped scheduler settings), under the key 'latents' (README: Feeding latents to a generator)")
    _add_fill_option(export)
    _add_backend_options(export, backend=False)
    export.set_defaults(run=run_export)

    info = commands.add_parser("info", help="print a .latok file's header and statistics as JSON")
    info.add_argument("input", help=".latok file")
    info.add_argument("--verify", action="store_true",
                      help="also decode every mask and value (time grows with the clip the file declares; "
                      "without it info reads the file's structure, in time proportional to its size)")
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
    roundtrip.add_argument("--lpips", action="store_true", help="also compute LPIPS-VGG (one VGG16 pass per frame: slow on CPU)")
    roundtrip.set_defaults(run=run_roundtrip)

    demo = commands.add_parser(
        "demo",
        help="run the codec on a clip: print token usage, bitrate, timings and PSNR, write the outputs",
        description="Run the whole codec on a clip (default: latok's built-in synthetic sample).",
    )
    demo.add_argument("input", nargs="?", help="video file or frame folder (default: the built-in sample clip)")
    demo.add_argument("-o", "--output-dir", default="outputs/demo", help="where to write outputs (default: %(default)s)")
    demo.add_argument("--frames", type=int, default=17, help="frames to read (default: %(default)s)")
    demo.add_argument("--height", type=int, default=240, help="resize height, 240p protocol (default: %(default)s)")
    _add_backend_options(demo)
    _add_mask_options(demo)
    _add_fill_option(demo)
    demo.add_argument("--lpips", action="store_true", help="also compute LPIPS-VGG (one VGG16 pass per frame: slow on CPU)")
    demo.set_defaults(run=run_demo)

    cache = commands.add_parser(
        "cache-latents", help="encode clips once into webdataset shards of latents (for training)",
        description="Encode each input into one webdataset shard (latents quantised and range coded, or fp16 with "
        "--value-step 0, + metadata). Resumable: inputs whose shard exists are skipped. Runs as a Lightning predict "
        "over all visible devices.",
    )  # fmt: skip
    cache.add_argument("--inputs", nargs="+", required=True, help="video files or frame folders")
    cache.add_argument("--out", required=True, help="shard directory")
    cache.add_argument("--with-video", action="store_true", help="also store the uint8 frames (validation sets)")
    cache.add_argument("--value-step", type=float, default=None, metavar="S",
                       help="quantise the latents with step S (per channel, as .latok files) and range code them; "
                       "0 stores fp16 arrays (default: latok.training.data.DEFAULT_CACHE_VALUE_STEP, 0.05)")
    _add_input_options(cache)
    _add_backend_options(cache)
    cache.set_defaults(run=run_cache_latents)

    evaluate = commands.add_parser(
        "eval", help="rate-distortion over a dataset: PSNR, SSIM, LPIPS, token usage, bpp; tables and plots",
        description="Evaluate the codec on a dataset under several rates and fills. Each clip is encoded once; "
        "finished clips are skipped on a rerun. Writes results.json, results.csv, report.md, rd_curve.png "
        "and usage_over_time.png into --out. Runs as a Lightning predict over all visible devices.",
    )  # fmt: skip
    _add_dataset_options(evaluate, "output directory")
    evaluate.add_argument("--tau", "--taus", dest="taus", default="0,default", metavar="T[,T...]", help="comma-separated taus, as --tau takes one elsewhere; 'default' is the backend's calibrated tau (default: %(default)s)")
    evaluate.add_argument("--target-usage", default=None, metavar="U[,U...]", help="also run at these kept fractions, tau picked per clip")
    evaluate.add_argument("--fills", default="hold", help="comma-separated fills: zero, hold, interp, lit (default: %(default)s)")
    _add_value_step_option(evaluate)
    evaluate.add_argument("--motion", choices=MOTION_CHOICES, default="block",
                          help="the rule and the fills follow the frames' motion, as `latok encode --motion` (default: %(default)s)")
    evaluate.add_argument("--pixel-guard", action="store_true",
                          help="lit runs decide the lit guard on decoded pixels, as `latok encode --pixel-guard` does")
    evaluate.add_argument("--compare-to", metavar="DIR", default=None,
                          help="another eval's output folder (e.g. the same clips with another --motion): write comparison.md and "
                          "comparison.json, the Bjøntegaard-style mean PSNR difference of the two --target-usage curves per fill")
    evaluate.set_defaults(run=run_eval)

    bench = commands.add_parser(
        "bench", help="speed and quality of token allocators (latok vs ElasticTok, InfoTok, RLT, fixed rate)",
        description="Run every allocator's whole pipeline (encode, choose positions, fill, decode) on the same clips "
        "with the same VAE and fill; print a table with speed ratios against latok; write bench.json and bench.md. "
        "Resumable: finished clips are kept in OUT/bench_progress.json and skipped by a rerun with the same settings.",
    )  # fmt: skip
    _add_dataset_options(bench, "output directory for bench.json and bench.md")
    bench.add_argument("--allocators", default="latok,elastictok,infotok,rlt,fixed", help="comma-separated (default: %(default)s)")
    bench.add_argument("--fill", default="hold", choices=("zero", "hold", "interp", "lit"), help="fill for every allocator (default: %(default)s)")
    bench.add_argument("--matched-usage", action="store_true", help="give infotok, rlt and fixed latok's per-clip usage")
    bench.add_argument("--tau", type=float, default=None, help="latok's tau (default: the backend's calibrated tau)")
    bench.add_argument("--repeats", type=int, default=1, help="timed runs per clip and allocator; the median counts (default: %(default)s)")
    bench.set_defaults(run=run_bench)

    train = commands.add_parser(
        "train", add_help=False, help="train the inpainter (LightningCLI: `latok train fit --config configs/taef2_lit-xs-pool.yaml`)",
    )  # fmt: skip
    train.add_argument("lightning_args", nargs=argparse.REMAINDER)
    train.set_defaults(run=run_train)

    backends = commands.add_parser("backends", help="list VAE backends, their latent geometry and weight availability")
    backends.add_argument("--json", action="store_true", help="print JSON instead of a table")
    backends.set_defaults(run=run_backends)
    return parser


def _rebind_library_handlers() -> None:
    """Point the console handlers Lightning installs on import at the current stderr: when
    ``main`` runs inside a longer-lived process (tests, notebooks), the stderr they were
    bound to may have been replaced and closed since."""
    for name in [n for n in logging.root.manager.loggerDict if n.split(".")[0] == "lightning"]:
        for handler in logging.getLogger(name).handlers:
            if type(handler) is logging.StreamHandler and handler.stream is not sys.stderr:
                with handler.lock:  # not setStream(): it flushes the old stream, which may be closed
                    handler.stream = sys.stderr


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``latok`` script; returns the exit status (callable from tests)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(name)s: %(message)s", force=True)
    _rebind_library_handlers()
    try:
        with _terminate_as_interrupt():
            return args.run(args) or 0
    except LatokError as error:
        print(f"latok: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_ERROR
    except _Terminated:
        print("latok: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("latok: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `latok info x.latok | head`: the reader left, nothing to report
        sys.stderr.close()
        return 0
    except OSError as error:  # the system refused mid-way (disk full, a file vanished): outputs are atomic
        where = f"{error.filename}: " if error.filename else ""
        print(f"latok: error: {where}{error.strerror or _one_line(error)}", file=sys.stderr)
        return EXIT_ERROR


def _one_line(error: BaseException) -> str:
    """The error's message as one line.  An error re-raised from a DataLoader worker carries the
    worker's traceback in its message: its last line is the original message."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if len(lines) > 1 and "Original Traceback" in str(error):
        return lines[-1].split(": ", 1)[-1] if lines[-1].startswith(("latok.errors.", type(error).__name__)) else lines[-1]
    return lines[0]


class _Terminated(BaseException):
    """SIGTERM, raised where the process is so that every writer's cleanup runs, as for Ctrl-C."""


@contextmanager
def _terminate_as_interrupt():
    def terminate(signum, frame):
        raise _Terminated()

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- codec commands ------------------------------------------------------------------------


def _tokenizer(args: argparse.Namespace, backend: str | None = None):
    import torch

    from latok.codec.tokenizer import LatentTokenizer

    backend = backend or args.backend
    options = {"device": args.device, **_weight_options(args, backend)}
    mask = {}
    if hasattr(args, "reference"):
        if args.pixel_guard and not args.lit_guard:
            raise InvalidInputError("--pixel-guard decides the lit guard; it cannot be combined with --no-lit-guard")
        mask = {
            "tau": args.tau,
            "target_usage": args.target_usage,
            "reference": args.reference,
            "keyframe_interval": args.keyframe_interval,
            "storage_dtype": getattr(torch, args.dtype),
            "lit_guard": args.lit_guard,
            "pixel_guard": args.pixel_guard,
            "motion": args.motion,
            "value_step": args.value_step,
        }
    tokenizer = LatentTokenizer(backend, fill=getattr(args, "fill", None), inpainter=getattr(args, "inpainter", None), **mask, **options)
    tokenizer.vae.progress = True
    return tokenizer


def _read_paths(args: argparse.Namespace) -> tuple:
    """Every path a codec command may read, so that no output replaces one: the input, the inpainter
    checkpoints (given, or the shipped folder), the weights given, and the folders weights are looked up in."""
    from latok.codec.restoration import checkpoints_dir
    from latok.weights import weight_folders

    return (getattr(args, "input", None), getattr(args, "inpainter", None), *(getattr(args, "weights", None) or ()),
            checkpoints_dir(), *weight_folders())  # fmt: skip


def _weight_options(args: argparse.Namespace, backend: str) -> dict:
    """``--weights`` as the backend's constructor option: one path as is, two as an (encoder, decoder) pair."""
    if not args.weights:
        return {}
    from latok.vae import vae_class

    paths = tuple(args.weights)
    return {vae_class(backend).weights_option: paths if len(paths) > 1 else paths[0]}


def _check_lpips(args: argparse.Namespace) -> None:
    """With ``--lpips``, load (and check) its weights now rather than after the whole encode."""
    if args.lpips:
        from latok.evaluation.lpips import load_lpips

        load_lpips()


def _load_input(args: argparse.Namespace):
    from latok.io import load_clip

    return load_clip(args.input, frames=args.frames, start=args.start, stride=args.stride, height=args.height or None)


def run_encode(args: argparse.Namespace) -> int:
    from latok._fs import check_outputs
    from latok.codec.bitstream import save_latok
    from latok.evaluation.reports import file_info

    if args.stream and args.pixel_guard:
        raise InvalidInputError("--pixel-guard does not apply to --stream: streams carry no lit guard")
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
    chunks = stream_clip(args.input, args.chunk, frames=args.frames, start=args.start, stride=args.stride, height=args.height or None)
    with tqdm(unit="frame", desc=f"{tokenizer.vae.name} encode --stream") as bar:

        def counted():
            for chunk in chunks:
                yield chunk
                bar.update(chunk.frames)

        tokenizer.encode_stream(counted(), args.output)


def run_decode(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from latok._fs import check_outputs
    from latok.codec.reader import LatokReader, load_latok
    from latok.evaluation.reports import file_info
    from latok.io import VideoWriter, check_output_path, write_video

    output = check_output_path(args.output)
    check_outputs({"-o" if output.suffix else "-o folder": output}, _read_paths(args))
    with LatokReader(args.input) as reader:
        header = reader.header
    tokenizer = _tokenizer(args, backend=header["backend"])
    tokenizer.check_backend(header["backend"], header["backend_config"])  # before the clip is read
    if args.stream:
        tokenizer.vae.progress = False
        source = header["source"]
        with VideoWriter(args.output, fps=source["fps"]) as out, tqdm(total=source["frames"], unit="frame", desc="decode --stream") as bar:
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
    info = file_info(args.input)
    print(f"wrote {args.output}: {frames} frames, {width}x{height}, {info['token_usage']:.1%} tokens, fill {fill.name}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from latok._fs import check_outputs, write_safetensors
    from latok.codec.bitstream import header_of
    from latok.codec.reader import load_latok
    from latok.codec.restoration import Inpainters, resolve
    from latok.vae import load_vae
    from latok.vae.base import parse_device

    output = Path(args.output)
    if output.suffix != ".safetensors":
        raise InvalidInputError(f"{output}: export writes .safetensors files")
    check_outputs({"-o": output}, _read_paths(args))
    if args.pipeline and (args.format == "packed" or args.native):
        raise InvalidInputError("--for writes the pipeline's dense latents: it takes neither --format packed nor --native")
    adaptive = load_latok(args.input)
    metadata = {"latok_header": json.dumps(header_of(adaptive, 0), sort_keys=True), "format": args.format}
    if args.pipeline:
        from latok.codec.pipelines import check_backend

        check_backend(args.pipeline, adaptive.backend)  # before any fill runs
    if args.format == "packed":
        packed = adaptive.packed()
        tensors = packed.to_dict()
        metadata["max_seqlen"] = str(packed.max_seqlen)
    else:
        device = parse_device(args.device)
        inpainters = Inpainters(adaptive.backend, adaptive.shape[1], device, args.inpainter)  # loaded only if the fill runs it
        fill = resolve(adaptive, args.fill, inpainters)
        vae = load_vae(adaptive.backend, device=device, **_weight_options(args, adaptive.backend)) if args.native else None
        if args.pipeline:
            tensors = {"latents": adaptive.for_pipeline(args.pipeline, fill), "keep": adaptive.keep.contiguous()}
            metadata.update(fill=fill.name, space=f"pipeline:{args.pipeline}")
        else:
            latent = adaptive.dense(fill, native=args.native, vae=vae)
            tensors = {"latent": latent.contiguous(), "keep": adaptive.keep.contiguous()}
            metadata.update(fill=fill.name, space="native" if args.native else "latok")
    write_safetensors(tensors, output, metadata)
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in tensors.items())
    print(f"wrote {output}: {args.format}, {shapes}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from latok.evaluation.reports import file_info

    print(json.dumps(file_info(args.input, verify=args.verify), indent=2, allow_nan=False))  # strict JSON: the header admits no NaN
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
    from latok.evaluation.reports import demo_text, roundtrip, write_outputs
    from latok.io import Clip, check_read_options, frames_to_video, load_clip
    from latok.sample import SAMPLE_FPS, sample_frames

    output_dir = Path(args.output_dir)
    paths = {
        "tokens": output_dir / "clip.latok",
        "reconstruction": output_dir / "reconstruction.mp4",
        "visualisation": output_dir / "side_by_side.mp4",
        "metrics": output_dir / "metrics.json",
    }
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputError(f"-o {output_dir}: is not a directory")
    check_outputs({f"-o ({name})": path for name, path in paths.items()}, _read_paths(args))
    _check_lpips(args)
    if args.input:
        clip = load_clip(args.input, frames=args.frames, height=args.height or None)
    else:
        if not args.height:
            raise InvalidInputError("the built-in sample needs a --height (>= 8); 0 keeps a source size it does not have")
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
    print(demo_text(report))
    return 0


def _sample_width(height: int) -> int:
    """16:9 frames cropped to a multiple of 16, as the 240p protocol crops DAVIS (416 at 240)."""
    return max(16, round(height * 16 / 9) // 16 * 16)


# -- training ------------------------------------------------------------------------------


def run_cache_latents(args: argparse.Namespace) -> int:
    from latok.codec.values import channel_steps
    from latok.training.data import DEFAULT_CACHE_VALUE_STEP, cache_latents

    value_step = DEFAULT_CACHE_VALUE_STEP if args.value_step is None else args.value_step
    channel_steps(value_step, None, 1)  # a bad step fails before any work
    options = _weight_options(args, args.backend)
    shards, errors = cache_latents(
        args.inputs, args.out, backend=args.backend, frames=args.frames, start=args.start, stride=args.stride,
        height=args.height or None, with_video=args.with_video, vae_options=options, value_step=value_step,
    )  # fmt: skip
    for error in errors:
        print(f"latok: skipped: {error}", file=sys.stderr)
    print(f"{len(shards)} shards in {args.out}" + (f"; {len(errors)} inputs skipped" if errors else ""))
    return EXIT_ERROR if errors else 0


def _dataset_clips(args: argparse.Namespace) -> list:
    """The clips of ``--dataset/--root`` under the protocol options; checks LPIPS weights up front."""
    from latok.evaluation.datasets import ClipProtocol, load_dataset

    if args.limit is not None and args.limit < 1:
        raise InvalidInputError(f"--limit must be >= 1, got {args.limit}")
    protocol = ClipProtocol(frames=args.frames, start=args.start, stride=args.stride, height=args.height or None)
    options = {"year": args.year, "split": args.split, "resolution": args.resolution} if args.dataset == "davis" else {}
    clips = load_dataset(args.dataset, args.root, protocol, **options)[: args.limit]
    if args.lpips:
        from latok.evaluation.lpips import lpips_weights_path

        lpips_weights_path()  # fail now, not after an hour of encoding
    return clips


def run_eval(args: argparse.Namespace) -> int:
    from latok.codec.restoration import check_fills, default_inpainter_path, uses_inpainter
    from latok.evaluation.evaluate import EvalSettings, evaluate, parse_rates

    try:
        fills = check_fills([f.strip() for f in args.fills.split(",") if f.strip()])
    except InvalidInputError as error:
        raise InvalidInputError(f"--fills: {error}") from None
    rates = parse_rates(args.taus, args.target_usage)
    baseline = _results_to_compare(args.compare_to, rates) if args.compare_to else None
    clips = _dataset_clips(args)
    inpainter = None
    if any(uses_inpainter(fill) for fill in fills):
        inpainter = str(Path(args.inpainter or default_inpainter_path(args.backend)).resolve())
        from latok.codec.inpainter import InpaintingTransformer

        InpaintingTransformer.from_pretrained(inpainter)  # fail now, not after an hour of encoding
    vae_options = _weight_options(args, args.backend)
    from latok.codec.values import channel_steps
    from latok.vae import vae_class

    value_step = vae_class(args.backend).default_value_step if args.value_step is None else args.value_step
    channel_steps(value_step, None, 1)  # a bad step fails now
    if args.pixel_guard and inpainter is None:
        raise InvalidInputError("--pixel-guard decides the lit guard: add lit to --fills")
    settings = EvalSettings(
        backend=args.backend, rates=rates, fills=fills, lpips=args.lpips,
        inpainter=inpainter, backend_options=tuple(sorted(vae_options.items())), pixel_guard=args.pixel_guard, motion=args.motion,
        value_step=value_step,
    )  # fmt: skip
    results = evaluate(
        clips, args.out, settings,
        tokenizer_options={"inpainter": inpainter, "pixel_guard": args.pixel_guard, "motion": args.motion, "value_step": value_step, **vae_options},
        description=f"{args.dataset}: {len(clips)} clips from {args.root}",
    )  # fmt: skip
    from latok.evaluation.evaluate import markdown

    print(markdown(results))
    print(f"wrote {Path(args.out) / 'report.md'} (and results.json, results.csv, rd_curve.png, usage_over_time.png)")
    if baseline is not None:
        _write_comparison(results, baseline, args)
    return 0


def _results_to_compare(folder: str, rates) -> dict:
    """``folder``'s results.json, checked before any work: readable, and this run can make a curve."""
    import json

    if sum(rate.target_usage is not None for rate in rates) < 2:
        raise InvalidInputError("--compare-to compares --target-usage curves: give at least two usages, e.g. --target-usage 0.3,0.5,0.7,0.9")
    path = Path(folder) / "results.json"
    try:
        results = json.loads(path.read_text())
        runs = results["runs"]
        if not isinstance(runs, list) or not all(isinstance(run, dict) and "fill" in run and "summary" in run for run in runs):
            raise ValueError("no runs")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InvalidInputError(f"--compare-to: {path} is not a latok eval results.json ({str(error).splitlines()[0][:120]})") from None
    curves = {run["fill"] for run in runs if run.get("target_usage") is not None}
    if not any(sum(run["fill"] == fill and run.get("target_usage") is not None for run in runs) >= 2 for fill in curves):
        raise InvalidInputError(f"--compare-to: {path} holds no curve (a fill with two or more --target-usage runs) to compare with")
    return results


def _write_comparison(results: dict, baseline: dict, args: argparse.Namespace) -> None:
    import json

    from latok._fs import atomic_path
    from latok.evaluation import rd

    label = f"motion {args.motion}"
    other = f"{args.compare_to} (motion {baseline.get('motion', 'none')})"
    comparison = rd.compare(results, baseline)
    out = Path(args.out)
    with atomic_path(out / "comparison.json") as tmp:
        tmp.write_text(json.dumps({"this": str(out), "compared_to": args.compare_to, "fills": comparison}, indent=1) + "\n")
    text = rd.markdown(comparison, f"{out} ({label})", other)
    with atomic_path(out / "comparison.md") as tmp:
        tmp.write_text(text)
    print(text)
    print(f"wrote {out / 'comparison.md'} and comparison.json")


def run_bench(args: argparse.Namespace) -> int:
    import shlex

    from latok.codec.restoration import fill_for_mask
    from latok.evaluation import bench
    from latok.evaluation.baselines import ALLOCATORS

    allocators = list(dict.fromkeys(a.strip() for a in args.allocators.split(",") if a.strip()))
    unknown = [a for a in allocators if a not in ALLOCATORS]
    if unknown or not allocators:
        raise InvalidInputError(f"--allocators: unknown allocator {unknown[0] if unknown else '(none)'}; choose from {', '.join(ALLOCATORS)}")
    if args.repeats < 1:
        raise InvalidInputError(f"--repeats must be >= 1, got {args.repeats}")
    clips = _dataset_clips(args)
    tokenizer = _tokenizer(args)
    tokenizer.vae.progress = False
    if fill_for_mask(args.fill, tokenizer.inpainters).uses_model:
        tokenizer.inpainter  # fail now if the checkpoint is missing  # noqa: B018
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = bench.bench(
        tokenizer, clips, allocators, fill=args.fill, matched_usage=args.matched_usage, repeats=args.repeats,
        lpips=args.lpips, latok_tau=args.tau, progress=out / bench.PROGRESS_NAME,
    )  # fmt: skip
    command = "latok " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[0].endswith("latok") else "latok bench ..."
    bench.write(result, out, command)
    (out / bench.PROGRESS_NAME).unlink(missing_ok=True)
    print(bench.markdown(result, command))
    return 0


def run_train(args: argparse.Namespace) -> int:
    from latok.training.train import train_cli

    train_cli(args.lightning_args)
    return 0


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
