"""Options the commands share, and the helpers that read them (weights, inputs, outputs)."""

from __future__ import annotations

import argparse
import importlib
import logging

from latok.errors import InvalidInputError

logger = logging.getLogger("latok")

EXIT_ERROR = 2


class RegistryChoices:
    """``choices=`` read from a registry only when needed (checking a value, printing help), so that
    parsing arguments imports no torch; ``names`` is ``module:function`` returning the registered names."""

    def __init__(self, names: str):
        self._names = names

    def _load(self) -> list[str]:
        module, function = self._names.split(":")
        return list(getattr(importlib.import_module(module), function)())

    def __contains__(self, item) -> bool:
        return item in self._load()

    def __iter__(self):
        return iter(self._load())


MOTION_CHOICES = RegistryChoices("latok.codec.rule.motion:motion_names")
PIPELINE_CHOICES = RegistryChoices("latok.codec.interop.pipelines:pipeline_names")
FILL_CHOICES = RegistryChoices("latok.codec.restore.resolve:list_fills")
DATASET_CHOICES = RegistryChoices("latok.evaluation.datasets:list_datasets")


def _add_input_options(parser: argparse.ArgumentParser, frames: int | None = None) -> None:
    parser.add_argument(
        "--frames",
        type=int,
        default=frames,
        help="frames to read (default: %(default)s = all)"
        if frames is None
        else "frames to read (default: %(default)s)",
    )
    parser.add_argument("--start", type=int, default=0, help="first source frame (default: 0)")
    parser.add_argument("--stride", type=int, default=1, help="keep every n-th source frame (default: 1)")
    parser.add_argument(
        "--height",
        type=int,
        default=240,
        help="resize height, 240p protocol; 0 keeps the source size (default: %(default)s)",
    )


def _add_backend_options(parser: argparse.ArgumentParser, backend: bool = True) -> None:
    if backend:
        parser.add_argument(
            "--backend", default="taef2", help="VAE backend (default: %(default)s; see `latok backends`)"
        )
    parser.add_argument(
        "--weights",
        action="append",
        metavar="PATH",
        help="backend weights: a folder holding the backend's files; for taef2 also both files, "
        "--weights ENCODER.pth --weights DECODER.pth; for diffusers backends a hub id or local folder "
        "(default: LATOK_WEIGHTS_DIR, then the cache, then download)",
    )
    parser.add_argument("--device", default=None, help="torch device, e.g. cuda (default: cpu)")
    parser.add_argument(
        "--precision", default="auto", metavar="{auto,fp32,bf16,fp16}",
        help="what the autoencoder computes in: auto is bf16 where the hardware computes it natively (CUDA; "
        "a CPU with AVX512-BF16 or AMX), fp32 elsewhere; fp16 on CUDA only (default: %(default)s)",
    )  # fmt: skip


def _add_rule_metric_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rule-metric",
        choices=("decoder", "latent"),
        default="decoder",
        help="how the rule measures change: each latent channel weighted by how much the decoder shows it (decoder), "
        "or every channel alike (latent, the plain rule) (default: %(default)s)",
    )


def _add_mask_options(parser: argparse.ArgumentParser) -> None:
    rate = parser.add_mutually_exclusive_group()
    rate.add_argument("--tau", type=float, help="masking threshold, one for the whole clip (or stream)")
    rate.add_argument(
        "--target-usage", type=float, metavar="U", help="keep about this fraction of tokens, tau picked per clip"
    )
    rate.add_argument(
        "--target-quality", type=float, metavar="DB",
        help="lose about this many dB of PSNR against the autoencoder's full rate, tau picked per clip, CRF-style "
             "(the default rate where the backend has one: 0.5 for taef2; with --stream too, tau picked per chunk)",
    )  # fmt: skip
    parser.add_argument(
        "--quality-check-frames", type=int, default=None, metavar="N",
        help="with a quality target, decode N frames at encode to check the predicted loss and pick tau once more with the "
             "prediction scaled by what was measured (per-frame backends; 0: trust the prediction; default: 2)",
    )  # fmt: skip
    parser.add_argument(
        "--reference",
        choices=("last-kept", "previous"),
        default="last-kept",
        help="masking reference (default: %(default)s)",
    )
    parser.add_argument(
        "--keyframe-interval",
        type=int,
        default=None,
        metavar="K",
        help="keep every K-th latent frame whole (default: off)",
    )
    parser.add_argument(
        "--motion",
        choices=MOTION_CHOICES, metavar="MODEL",
        default="block",
        help="(%(choices)s) compare each position with the reference warped by the frame's motion, estimated from the latents: "
        "one translation per latent frame (global), or also one per 4x4 latent block where that fits better (block); "
        "stored in the file, and every fill follows it (default: %(default)s)",
    )
    _add_rule_metric_option(parser)
    _add_value_step_option(parser)
    parser.add_argument(
        "--dtype",
        choices=("float16", "bfloat16", "float32"),
        default="float16",
        help="storage dtype of kept values with --value-step 0 (default: %(default)s)",
    )
    parser.add_argument(
        "--lit-guard",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the inpainter once at encode time and record how much of its correction to apply: a weight per "
        "latent frame and --lit-tile square, or one lit/hold flag per frame (needs a shipped or given inpainter; default: on)",
    )
    parser.add_argument(
        "--lit-tile", type=int, default=None, metavar="N",
        help="the lit guard's weights cover N x N latent positions each (about 0.2-0.6 %% of a file at 4); 0: one "
             "lit/hold flag per latent frame instead (default: 4)",
    )  # fmt: skip
    parser.add_argument(
        "--pixel-guard",
        action="store_true",
        help="decide the lit guard on decoded pixels, one flag per frame: lit only on frames where it decodes closer to "
        "the input than hold (never worse than hold on any frame; up to 2 extra frame decodes per lit frame at encode)",
    )


def _add_value_step_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--value-step",
        type=float,
        default=None,
        metavar="S",
        help="quantise kept values with step S in latok's normalised space (per channel, divided by the decoder's "
        "sensitivity to it) and entropy-code them (format version 3); 0 keeps exact values in --dtype, bit for bit "
        "(default: the backend's, taef2: 0.13)",
    )


def _add_stream_options(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--stream", action="store_true", help=help)
    parser.add_argument(
        "--chunk", type=int, default=16, metavar="N", help="frames per chunk with --stream (default: %(default)s)"
    )


def _add_fill_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fill",
        choices=FILL_CHOICES, metavar="FILL",
        default=None,
        help="(%(choices)s) how dropped tokens are restored (default: auto = lit behind the encoder's lit guard "
        "when the tokens carry one, else hold; with --stream, lit behind the stream's lit weights per chunk (unguarded "
        "without them) where the backend ships an inpainter; "
        "lit uses checkpoints/<backend>-lit-xs)",
    )
    parser.add_argument(
        "--inpainter", help="inpainter checkpoint directory for --fill lit (default: checkpoints/<backend>-lit-xs)"
    )


def _add_dataset_options(parser: argparse.ArgumentParser, out_help: str) -> None:
    """Dataset, clip protocol, output and LPIPS options shared by ``eval`` and ``bench``."""
    parser.add_argument("--dataset", choices=DATASET_CHOICES, metavar="LAYOUT", required=True, help="dataset layout: %(choices)s")
    parser.add_argument(
        "--root", required=True, help="dataset root (DAVIS: the folder holding ImageSets/ and JPEGImages/)"
    )
    parser.add_argument("--out", required=True, help=out_help)
    parser.add_argument(
        "--lpips", action=argparse.BooleanOptionalAction, default=True, help="compute LPIPS-VGG (default: on)"
    )
    parser.add_argument("--frames", type=int, default=17, help="frames per clip (default: %(default)s)")
    parser.add_argument("--start", type=int, default=0, help="first source frame (default: 0)")
    parser.add_argument("--stride", type=int, default=1, help="keep every n-th source frame (default: 1)")
    parser.add_argument(
        "--height", type=int, default=240, help="resize height; 0 keeps the source size (default: %(default)s)"
    )
    parser.add_argument("--year", default="2016", help="DAVIS ImageSets year (default: %(default)s)")
    parser.add_argument("--split", default="val", help="DAVIS split (default: %(default)s)")
    parser.add_argument("--resolution", default="480p", help="DAVIS JPEGImages resolution (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N clips")
    parser.add_argument("--inpainter", help="inpainter checkpoint for fill lit (default: checkpoints/<backend>-lit-xs)")
    _add_backend_options(parser)


def _tokenizer(args: argparse.Namespace, backend: str | None = None):
    import torch

    from latok.codec.tokenizer import LatentTokenizer

    backend = backend or args.backend
    options = {"device": args.device, "precision": args.precision, **_weight_options(args, backend)}
    mask = {}
    if hasattr(args, "reference"):
        if args.pixel_guard and not args.lit_guard:
            raise InvalidInputError("--pixel-guard decides the lit guard; it cannot be combined with --no-lit-guard")
        mask = {
            "tau": args.tau,
            "target_usage": args.target_usage,
            "target_quality": args.target_quality,
            "reference": args.reference,
            "keyframe_interval": args.keyframe_interval,
            "storage_dtype": getattr(torch, args.dtype),
            "lit_guard": args.lit_guard,
            "pixel_guard": args.pixel_guard,
            "motion": args.motion,
            "rule_metric": args.rule_metric,
            "value_step": args.value_step,
        }
        if args.quality_check_frames is not None:
            mask["quality_check_frames"] = args.quality_check_frames
        if args.lit_tile is not None:
            mask["lit_tile"] = args.lit_tile
    tokenizer = LatentTokenizer(
        backend, fill=getattr(args, "fill", None), inpainter=getattr(args, "inpainter", None), **mask, **options
    )
    tokenizer.vae.progress = True
    return tokenizer


def _read_paths(args: argparse.Namespace) -> tuple:
    """Every path a codec command may read, so that no output replaces one: the input, the inpainter
    checkpoints (given, or the shipped folder), the weights given, and the folders weights are looked up in."""
    from latok.codec.restore.resolve import checkpoints_dir
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
