"""Evaluation commands: eval (rate-distortion over a dataset) and bench (allocators like for like)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from latok.cli.options import (
    FILL_CHOICES,
    MOTION_CHOICES,
    _add_backend_options,
    _add_dataset_options,
    _add_fill_option,
    _add_rule_metric_option,
    _add_value_step_option,
    _dataset_clips,
    _tokenizer,
    _weight_options,
)
from latok.errors import InvalidInputError


def add_commands(commands) -> None:
    """eval, bench and view."""
    evaluate = commands.add_parser(
        "eval", help="rate-distortion over a dataset: PSNR, SSIM, LPIPS, token usage, bpp; tables and plots",
        description="Evaluate the codec on a dataset under several rates and fills. Each clip is encoded once; "
        "finished clips are skipped on a rerun. Writes results.json, results.csv, report.md, report.html (open it "
        "in a browser: RD curves, sortable per-clip table, a synced player per clip), rd_curve.png and "
        "usage_over_time.png into --out. Runs as a Lightning predict over all visible devices.",
    )  # fmt: skip
    _add_dataset_options(evaluate, "output directory")
    evaluate.add_argument(
        "--tau",
        "--taus",
        dest="taus",
        default="0,default",
        metavar="T[,T...]",
        help="comma-separated taus, as --tau takes one elsewhere; 'default' is the backend's calibrated tau (default: %(default)s)",
    )
    evaluate.add_argument(
        "--target-usage", default=None, metavar="U[,U...]", help="also run at these kept fractions, tau picked per clip"
    )
    evaluate.add_argument(
        "--target-quality", default=None, metavar="DB[,DB...]",
        help="also run at these PSNR loss budgets (dB against full rate), tau picked per clip",
    )  # fmt: skip
    evaluate.add_argument(
        "--fills", default="hold", help="comma-separated fills: zero, hold, interp, lit (default: %(default)s)"
    )
    _add_value_step_option(evaluate)
    evaluate.add_argument(
        "--motion",
        choices=MOTION_CHOICES, metavar="MODEL",
        default="block",
        help="(%(choices)s) the rule and the fills follow the frames' motion, as `latok encode --motion` (default: %(default)s)",
    )
    _add_rule_metric_option(evaluate)
    evaluate.add_argument(
        "--pixel-guard",
        action="store_true",
        help="lit runs decide the lit guard on decoded pixels, as `latok encode --pixel-guard` does",
    )
    _add_report_options(evaluate)
    evaluate.set_defaults(run=run_eval)

    _add_view(commands)

    bench = commands.add_parser(
        "bench", help="speed and quality of token allocators (latok vs ElasticTok, InfoTok, RLT, fixed rate)",
        description="Run every allocator's whole pipeline (encode, choose positions, fill, decode) on the same clips "
        "with the same VAE and fill; print a table with speed ratios against latok; write bench.json and bench.md. "
        "Resumable: finished clips are kept in OUT/bench_progress.json and skipped by a rerun with the same settings.",
    )  # fmt: skip
    _add_dataset_options(bench, "output directory for bench.json and bench.md")
    bench.add_argument(
        "--allocators", default="latok,elastictok,infotok,rlt,fixed", help="comma-separated (default: %(default)s)"
    )
    bench.add_argument(
        "--fill",
        default="hold",
        choices=FILL_CHOICES, metavar="FILL",
        help="(%(choices)s) fill for every allocator (default: %(default)s)",
    )
    bench.add_argument(
        "--matched-usage", action="store_true", help="give infotok, rlt and fixed latok's per-clip usage"
    )
    bench.add_argument("--tau", type=float, default=None, help="latok's tau (default: the backend's calibrated tau)")
    bench.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="timed runs per clip and allocator; the median counts (default: %(default)s)",
    )
    bench.set_defaults(run=run_bench)


def run_eval(args: argparse.Namespace) -> int:
    from latok.codec.restore.resolve import check_fills, default_inpainter_path, uses_inpainter
    from latok.evaluation.evaluate import EvalSettings, evaluate, parse_rates

    try:
        fills = check_fills([f.strip() for f in args.fills.split(",") if f.strip()])
    except InvalidInputError as error:
        raise InvalidInputError(f"--fills: {error}") from None
    rates = parse_rates(args.taus, args.target_usage, args.target_quality)
    baseline = _results_to_compare(args.compare_to, rates) if args.compare_to else None
    clips = _dataset_clips(args)
    inpainter = None
    if any(uses_inpainter(fill) for fill in fills):
        inpainter = str(Path(args.inpainter or default_inpainter_path(args.backend)).resolve())
        from latok.codec.restore.inpainter import InpaintingTransformer

        InpaintingTransformer.from_pretrained(inpainter)  # fail now, not after an hour of encoding
    vae_options = _weight_options(args, args.backend)
    from latok.codec.settings import CodecSettings
    from latok.vae import vae_class

    value_step = CodecSettings(motion=args.motion, value_step=args.value_step).value_step_for(vae_class(args.backend))
    if args.pixel_guard and inpainter is None:
        raise InvalidInputError("--pixel-guard decides the lit guard: add lit to --fills")
    settings = EvalSettings(
        backend=args.backend, rates=rates, fills=fills, lpips=args.lpips,
        inpainter=inpainter, backend_options=tuple(sorted(vae_options.items())), pixel_guard=args.pixel_guard, motion=args.motion,
        value_step=value_step, rule_metric=args.rule_metric,
    )  # fmt: skip
    results = evaluate(
        clips, args.out, settings,
        tokenizer_options={"inpainter": inpainter, "pixel_guard": args.pixel_guard, "motion": args.motion, "value_step": value_step,
                           "rule_metric": args.rule_metric, **vae_options},
        description=f"{args.dataset}: {len(clips)} clips from {args.root}", videos=args.videos, command=invocation("eval"),
    )  # fmt: skip
    from latok.evaluation.evaluate import markdown

    print(markdown(results))
    print(f"wrote {Path(args.out) / 'report.md'} and {Path(args.out) / 'report.html'} (and results.json, results.csv, rd_curve.png, usage_over_time.png)")
    if baseline is not None:
        _write_comparison(results, baseline, args)
    return 0


def _results_to_compare(folder: str, rates) -> dict:
    """``folder``'s results.json, checked before any work: readable, and this run can make a curve."""

    if sum(rate.target_usage is not None for rate in rates) < 2:
        raise InvalidInputError(
            "--compare-to compares --target-usage curves: give at least two usages, e.g. --target-usage 0.3,0.5,0.7,0.9"
        )
    path = Path(folder) / "results.json"
    try:
        results = json.loads(path.read_text())
        runs = results["runs"]
        if not isinstance(runs, list) or not all(
            isinstance(run, dict) and "fill" in run and "summary" in run for run in runs
        ):
            raise ValueError("no runs")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InvalidInputError(
            f"--compare-to: {path} is not a latok eval results.json ({str(error).splitlines()[0][:120]})"
        ) from None
    curves = {run["fill"] for run in runs if run.get("target_usage") is not None}
    if not any(
        sum(run["fill"] == fill and run.get("target_usage") is not None for run in runs) >= 2 for fill in curves
    ):
        raise InvalidInputError(
            f"--compare-to: {path} holds no curve (a fill with two or more --target-usage runs) to compare with"
        )
    return results


def _write_comparison(results: dict, baseline: dict, args: argparse.Namespace) -> None:

    from latok._fs import atomic_path
    from latok.evaluation import rd

    label = f"motion {args.motion}"
    other = f"{args.compare_to} (motion {baseline.get('motion', 'none')})"
    comparison = rd.compare(results, baseline)
    out = Path(args.out)
    with atomic_path(out / "comparison.json") as tmp:
        tmp.write_text(
            json.dumps({"this": str(out), "compared_to": args.compare_to, "fills": comparison}, indent=1) + "\n"
        )
    text = rd.markdown(comparison, f"{out} ({label})", other)
    with atomic_path(out / "comparison.md") as tmp:
        tmp.write_text(text)
    print(text)
    print(f"wrote {out / 'comparison.md'} and comparison.json")


def _add_report_options(evaluate: argparse.ArgumentParser) -> None:
    """What eval writes besides its results: the comparison with another run, the videos of report.html."""
    evaluate.add_argument(
        "--compare-to",
        metavar="DIR",
        default=None,
        help="another eval's output folder (e.g. the same clips with another --motion): write comparison.md and "
        "comparison.json, the Bjøntegaard-style mean PSNR difference of the two --target-usage curves per fill",
    )
    evaluate.add_argument(
        "--videos", action=argparse.BooleanOptionalAction, default=True,
        help="write each clip's original and every run's reconstruction and kept-token overlay under OUT/videos "
        "for report.html, as runs are computed (default: on)",
    )  # fmt: skip


def _add_view(commands) -> None:
    view = commands.add_parser(
        "view", help="an HTML page of one .latok file: header, bytes by part, usage and keep mask per frame, motion",
        description="Write one self-contained HTML page for a .latok file (opens from disk, no server). With --source, "
        "also decode the file and show it beside the source with PSNR per frame; the two videos go in PAGE_files/.",
    )  # fmt: skip
    view.add_argument("input", help=".latok file")
    view.add_argument("-o", "--output", required=True, help="the page (.html)")
    view.add_argument("--source", help="the video the file was encoded from, read with the framing the file records")
    _add_fill_option(view)  # the decode shown with --source
    _add_backend_options(view)
    view.set_defaults(run=run_view)


def invocation(command: str) -> str:
    """The command line that ran ``command``: the process's own when it is the latok script (or ``python -m
    latok.cli``), else ``latok COMMAND ...`` (called from Python)."""
    import shlex

    invoked = Path(sys.argv[0]).name in ("latok", "__main__.py") and sys.argv[1:2] == [command]
    return "latok " + shlex.join(sys.argv[1:]) if invoked else f"latok {command} ..."


def run_view(args: argparse.Namespace) -> int:
    from latok._fs import check_outputs, staged_outputs
    from latok.evaluation.pages import decode_beside_source, file_page, write_beside_source
    from latok.io import check_output_path

    page = check_output_path(args.output, (".html", ".htm"))
    videos = {}
    if args.source:
        folder = page.parent / f"{page.stem}_files"
        videos = {"source": folder / "source.mp4", "decoded": folder / "decoded.mp4"}
    check_outputs({"-o": page, **{f"-o ({name})": path for name, path in videos.items()}}, (args.input, args.source))
    decoded = None
    if args.source:  # every read and the decode before any output is staged: their errors name the input
        from latok.codec.format.reader import load_latok
        from latok.io import check_input

        check_input(args.source)
        tokenizer = _tokenizer(args, backend=load_latok(args.input).backend)
        decoded = decode_beside_source(tokenizer, args.input, args.source, args.fill)
    with staged_outputs(page, *videos.values()) as temps:  # the page and its videos appear together, or none
        if decoded is not None:
            decoded = write_beside_source(decoded, dict(zip(videos, temps[1:])), f"{page.stem}_files")
        temps[0].write_text(file_page(args.input, decoded))
    print(f"wrote {page}" + (f" and {len(videos)} videos in {page.stem}_files/" if videos else ""))
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from latok.codec.restore.resolve import fill_for_mask
    from latok.evaluation import bench
    from latok.evaluation.baselines import ALLOCATORS

    allocators = list(dict.fromkeys(a.strip() for a in args.allocators.split(",") if a.strip()))
    unknown = [a for a in allocators if a not in ALLOCATORS]
    if unknown or not allocators:
        raise InvalidInputError(
            f"--allocators: unknown allocator {unknown[0] if unknown else '(none)'}; choose from {', '.join(ALLOCATORS)}"
        )
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
    command = invocation("bench")
    bench.write(result, out, command)
    (out / bench.PROGRESS_NAME).unlink(missing_ok=True)
    print(bench.markdown(result, command))
    return 0
