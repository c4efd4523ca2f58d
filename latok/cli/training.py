"""Training commands: cache-latents (shards of latents) and train (LightningCLI)."""

from __future__ import annotations

import argparse
import sys

from latok.cli.options import EXIT_ERROR, _add_backend_options, _add_input_options, _weight_options


def add_commands(commands) -> None:
    """cache-latents and train."""
    cache = commands.add_parser(
        "cache-latents", help="encode clips once into webdataset shards of latents (for training)",
        description="Encode each input into one webdataset shard (latents quantised and range coded, or fp16 with "
        "--value-step 0, + metadata). Resumable: inputs whose shard exists are skipped. Runs as a Lightning predict "
        "over all visible devices.",
    )  # fmt: skip
    cache.add_argument("--inputs", nargs="+", required=True, help="video files or frame folders")
    cache.add_argument("--out", required=True, help="shard directory")
    cache.add_argument("--with-video", action="store_true", help="also store the uint8 frames (validation sets)")
    cache.add_argument(
        "--value-step",
        type=float,
        default=None,
        metavar="S",
        help="quantise the latents with step S (per channel, as .latok files) and range code them; "
        "0 stores fp16 arrays (default: latok.training.data.DEFAULT_CACHE_VALUE_STEP, 0.05)",
    )
    _add_input_options(cache)
    _add_backend_options(cache)
    cache.set_defaults(run=run_cache_latents)

    train = commands.add_parser(
        "train", add_help=False, help="train the inpainter (LightningCLI: `latok train fit --config configs/taef2_lit-xs-pool.yaml`)",
    )  # fmt: skip
    train.add_argument("lightning_args", nargs=argparse.REMAINDER)
    train.set_defaults(run=run_train)


def run_cache_latents(args: argparse.Namespace) -> int:
    from latok.codec.settings import CodecSettings
    from latok.training.data import DEFAULT_CACHE_VALUE_STEP, cache_latents

    # caches keep finer values than .latok files: their default step is the cache's, checked as the codec checks one
    value_step = CodecSettings(value_step=DEFAULT_CACHE_VALUE_STEP if args.value_step is None else args.value_step).value_step
    options = {"precision": args.precision, **_weight_options(args, args.backend)}
    shards, errors = cache_latents(
        args.inputs, args.out, backend=args.backend, frames=args.frames, start=args.start, stride=args.stride,
        height=args.height or None, with_video=args.with_video, vae_options=options, value_step=value_step,
    )  # fmt: skip
    for error in errors:
        print(f"latok: skipped: {error}", file=sys.stderr)
    print(f"{len(shards)} shards in {args.out}" + (f"; {len(errors)} inputs skipped" if errors else ""))
    return EXIT_ERROR if errors else 0


def run_train(args: argparse.Namespace) -> int:
    from latok.training.train import train_cli

    train_cli(args.lightning_args)
    return 0
