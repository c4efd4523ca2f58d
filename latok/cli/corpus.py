"""Corpus commands: ``latok corpus encode`` (a video dataset on Ray Data) and ``latok corpus info``."""

from __future__ import annotations

import argparse
import functools
import json

from latok.cli.options import (
    _add_backend_options,
    _add_input_options,
    _add_mask_options,
    _add_stream_options,
    _tokenizer,
)
from latok.errors import InvalidInputError

# the encode options a clip's bytes depend on: their fingerprint is the manifest's ``settings``
SETTINGS = ("backend", "weights", "frames", "start", "stride", "height", "tau", "target_usage", "target_quality", "reference",
            "keyframe_interval", "motion", "rule_metric", "value_step", "dtype", "lit_guard", "lit_tile", "pixel_guard", "inpainter",
            "quality_check_frames",
            "stream", "chunk", "stream_above", "precision")  # fmt: skip


def add_commands(commands) -> None:
    corpus = commands.add_parser("corpus", help="tokenize a video dataset on Ray Data, and inspect it",
                                 description="Corpora: many clips, resumably, on Ray Data (pip install 'latok[corpus]').")  # fmt: skip
    verbs = corpus.add_subparsers(dest="verb", metavar="VERB", required=True)
    encode = verbs.add_parser(
        "encode", help="encode every clip of SOURCE... into webdataset shards and a Parquet manifest",
        description="Encode a corpus: each clip exactly as `latok encode` would, into DIR/shards/shard-NNNNNN.tar "
        "(KEY.latok + KEY.json) and DIR/manifest.parquet. Rerunning skips clips already done with the same options.",
    )  # fmt: skip
    encode.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="video files, folders (searched recursively; a folder of frames is one clip), "
                        ".txt/.csv/.parquet lists of paths, or webdataset .tar shards of videos")  # fmt: skip
    encode.add_argument("--out", required=True, metavar="DIR", help="the corpus folder")
    encode.add_argument("--workers", type=int, default=None, help="encoding workers (default: the cores)")
    encode.add_argument("--address", default=None, help="join a running Ray cluster: auto or HOST:PORT (default: a local Ray)")
    encode.add_argument("--shard-clips", type=int, default=64, metavar="N", help="clips per shard (default: %(default)s)")
    encode.add_argument("--stream-above", type=int, default=512, metavar="FRAMES",
                        help="clips longer than this go through the streaming encoder, in the memory of one chunk "
                        "(their bytes are those of `latok encode --stream`; default: %(default)s)")  # fmt: skip
    _add_input_options(encode)
    _add_backend_options(encode)
    _add_mask_options(encode)
    _add_stream_options(encode, "stream every clip (as `latok encode --stream`)")
    encode.add_argument("--retry-errors", action="store_true", help="encode again the clips that failed before (default: only if changed)")
    encode.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    encode.set_defaults(run=run_encode)
    info = verbs.add_parser("info", help="clips, hours, tokens and bytes of a corpus", description="Summarise a corpus.")
    info.add_argument("corpus", metavar="DIR", help="the corpus folder")
    info.add_argument("--where", default=None, help="SQL condition on the manifest, e.g. \"token_usage < 0.5\"")
    info.set_defaults(run=run_info)


def _settings(args: argparse.Namespace) -> dict:
    from latok import __version__
    from latok.vae.base import parse_device
    from latok.vae.precision import resolve_precision

    settings = {name: getattr(args, name, None) for name in SETTINGS}
    settings["precision"] = resolve_precision(args.precision, parse_device(args.device))  # what auto is on this machine
    return {"latok": __version__, **settings}


def run_encode(args: argparse.Namespace) -> int:
    from latok.corpus.engine import encode_corpus
    from latok.corpus.manifest import fingerprint
    from latok.corpus.sources import expand_sources

    if args.shard_clips < 1 or args.stream_above < 1:
        raise InvalidInputError("--shard-clips and --stream-above must be >= 1")
    if args.stream and args.pixel_guard:
        raise InvalidInputError("--pixel-guard does not apply to --stream: streams weigh the inpainter per chunk on latents")
    sources = expand_sources(args.sources)  # a missing SOURCE fails here, before Ray starts
    args.device = args.device or "cpu"
    _tokenizer(args)  # bad options and missing weights fail once here, not once per worker
    summary = encode_corpus(
        sources, args.out, settings=fingerprint(_settings(args)),
        make_tokenizer=functools.partial(_worker_tokenizer, args), read_one=functools.partial(read_clip, args),
        encode_one=functools.partial(encode_clip, args),
        workers=args.workers, address=args.address, clips_per_shard=args.shard_clips, progress=args.progress,
        retry_errors=args.retry_errors,
    )  # fmt: skip
    print(summary.line())
    return 0 if summary.all_ok else 1


def _worker_tokenizer(args: argparse.Namespace):
    tokenizer = _tokenizer(args)
    tokenizer.vae.progress = False
    return tokenizer


def read_clip(args: argparse.Namespace, source: str):
    """The decoded clip ``latok encode SOURCE`` would encode, or ``None`` when it streams (``--stream``, or longer
    than ``--stream-above`` frames: read chunk by chunk while encoding, never whole)."""
    from latok.io import load_clip

    if args.stream or _frames_above(source, args):
        return None
    return load_clip(source, frames=args.frames, start=args.start, stride=args.stride, height=args.height or None)


def encode_clip(args: argparse.Namespace, tokenizer, source, output) -> None:
    """One clip (a :class:`~latok.io.Clip` from :func:`read_clip`, or a source path), exactly as
    ``latok encode SOURCE -o OUTPUT`` with the same options writes it (with ``--stream`` when it streams)."""
    from latok.codec.format.writer import save_latok
    from latok.io import Clip, stream_clip

    clip = source if isinstance(source, Clip) else read_clip(args, source)
    if clip is None:
        chunks = stream_clip(source, args.chunk, frames=args.frames, start=args.start, stride=args.stride, height=args.height or None)
        tokenizer.encode_stream(chunks, output)
    else:
        save_latok(tokenizer.encode(clip), output)


def _frames_above(source: str, args: argparse.Namespace) -> bool:
    """Would the clip read under ``args`` exceed ``--stream-above`` frames?  Unknown lengths count as long."""
    from pathlib import Path

    from latok.io import FRAME_SUFFIXES

    path = Path(source)
    if path.is_dir():
        total = sum(1 for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
    else:
        import av

        try:
            with av.open(str(path)) as container:
                total = container.streams.video[0].frames if container.streams.video else 0
        except (av.FFmpegError, OSError):
            return False  # the encode reports why it cannot read it
        if not total:
            return True
    frames = max(0, (total - args.start + args.stride - 1) // args.stride)
    return min(frames, args.frames or frames) > args.stream_above


def run_info(args: argparse.Namespace) -> int:
    from latok.corpus.manifest import query

    rows = query(args.corpus, args.where)
    ok = [r for r in rows if r["status"] == "ok"]
    hours = sum(r["frames"] / r["fps"] for r in ok if r["fps"]) / 3600
    tokens = sum(r["tokens"] for r in ok)
    size = sum(r["bytes"] for r in ok)
    usage = [r["token_usage"] for r in ok]
    histogram = [sum(1 for u in usage if lo <= u < lo + 0.1 or (lo == 0.9 and u == 1.0)) for lo in [i / 10 for i in range(10)]]
    fp16 = sum(r["tokens"] / r["token_usage"] * 32 * 2 for r in ok if r["token_usage"])  # all positions, 32 fp16 channels
    seconds = sum(r["seconds"] or 0.0 for r in rows)
    print(json.dumps({
        "clips_ok": len(ok), "clips_failed": len(rows) - len(ok), "hours": hours, "tokens": tokens,
        "token_usage_mean": sum(usage) / len(usage) if usage else None,
        "token_usage_histogram": {f"{i / 10:.1f}-{(i + 1) / 10:.1f}": n for i, n in enumerate(histogram)},
        "bytes": size, "bytes_fp16_latents": int(fp16), "smaller_than_fp16": fp16 / size if size else None,
        "encode_seconds": seconds, "clips_per_worker_second": len(rows) / seconds if seconds else None,
    }, indent=2))  # fmt: skip
    return 0


