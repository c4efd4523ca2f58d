"""``latok eval``: rate-distortion of the codec over a dataset, the TokenBench way.

Each clip is encoded once; every requested rate (a tau, or a target usage) masks the
same latent, and every requested fill restores and decodes it.  Per clip and run:
PSNR, SSIM, LPIPS-VGG, token usage, bits per pixel of the ``.latok`` file and the
kept fraction of every latent frame.

The loop is a Lightning ``predict`` over the clips, so it spreads over all visible
GPUs; every finished clip is written to ``OUT/clips/<name>.json`` at once, and a
rerun skips clips whose file already holds every requested run under the same
settings (resumable).  Then ``OUT/results.json``, ``results.csv``, ``report.md``, ``report.html``
(:mod:`latok.evaluation.pages`, with the videos written under ``OUT/videos`` as runs are computed),
``rd_curve.png`` and ``usage_over_time.png`` are written from the clip files.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import logging
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from latok._fs import atomic_path
from latok.codec.format.writer import bitrate, encoded_size
from latok.codec.restore.resolve import uses_inpainter
from latok.codec.settings import CodecSettings
from latok.errors import InvalidInputError
from latok.evaluation.datasets import EvalClip

logger = logging.getLogger(__name__)

METRICS = ("psnr", "ssim", "lpips", "token_usage", "bpp")


@dataclass(frozen=True)
class Rate:
    """One masking rate: a fixed ``tau`` (``None``: the backend default), or a per-clip ``target_usage`` or ``target_quality``."""

    tau: float | None = None
    target_usage: float | None = None
    target_quality: float | None = None

    @property
    def key(self) -> str:
        if self.target_usage is not None:
            return f"usage={self.target_usage:g}"
        if self.target_quality is not None:
            return f"quality={self.target_quality:g}dB"
        return "tau=default" if self.tau is None else f"tau={self.tau:g}"


@dataclass(frozen=True)
class EvalSettings:
    """Everything a clip's numbers depend on; a clip file made under other settings is recomputed."""

    backend: str
    rates: tuple[Rate, ...]
    fills: tuple[str, ...]
    lpips: bool
    inpainter: str | None = None
    backend_options: tuple = ()
    pixel_guard: bool = False  # lit runs: the lit guard decided on decoded pixels (LatentTokenizer(pixel_guard=True))
    motion: str = CodecSettings.motion  # the codec's default motion model; "none" compares in place
    value_step: float = 0.0  # kept values quantised with this step (LatentTokenizer(value_step=)); 0: exact fp16
    rule_metric: str = CodecSettings.rule_metric  # how the rule measures change (LatentTokenizer(rule_metric=))

    def fingerprint(self) -> str:
        """Identity of what every run depends on (the inpainter is checked per lit run)."""
        identity = {"backend": self.backend, "lpips": self.lpips, "backend_options": list(self.backend_options)}
        if self.motion != "none":  # results made before motion existed keep their identity
            identity["motion"] = self.motion
        if self.value_step:  # likewise results of exact fp16 files
            identity["value_step"] = self.value_step
        if self.rule_metric != "latent":  # likewise results of the plain rule
            identity["rule_metric"] = self.rule_metric
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]

    @functools.cached_property
    def inpainter_sha256(self) -> str | None:
        weights = Path(self.inpainter or "", "model.safetensors")
        return hashlib.sha256(weights.read_bytes()).hexdigest() if self.inpainter and weights.is_file() else None

    @property
    def run_keys(self) -> list[str]:
        return [run_key(rate, fill) for rate in self.rates for fill in self.fills]

    @property
    def lit_guard(self) -> str:
        return "pixel" if self.pixel_guard else "latent"

    def is_current(self, run: dict) -> bool:
        """A stored run was made by this inpainter, with this kind of lit guard (runs of other fills do not depend on it)."""
        return not uses_inpainter(run.get("fill")) or (
            run.get("inpainter_sha256") == self.inpainter_sha256 and "lit_frames" in run
            and run.get("lit_guard", "latent") == self.lit_guard
        )  # fmt: skip


def run_key(rate: Rate, fill: str) -> str:
    return f"{rate.key}|fill={fill}"


def parse_rates(taus: str | None, target_usages: str | None, target_qualities: str | None = None) -> tuple[Rate, ...]:
    """``"0,default,0.3"``, ``"0.5"`` and ``"0.25"`` -> rates; ``default`` is the backend's calibrated tau."""
    rates: list[Rate] = []
    for item in filter(None, (taus or "").split(",")):
        item = item.strip()
        if item == "default":
            rates.append(Rate())
            continue
        try:
            value = float(item)
        except ValueError:
            raise InvalidInputError(f"--taus: {item!r} is not a number or 'default'") from None
        rates.append(Rate(tau=_checked("--taus", tau=value).tau))
    for item in filter(None, (target_usages or "").split(",")):
        try:
            value = float(item)
        except ValueError:
            raise InvalidInputError(f"--target-usage: {item!r} is not a number") from None
        rates.append(Rate(target_usage=_checked("--target-usage", target_usage=value).target_usage))
    for item in filter(None, (target_qualities or "").split(",")):
        try:
            value = float(item)
        except ValueError:
            raise InvalidInputError(f"--target-quality: {item!r} is not a number") from None
        rates.append(Rate(target_quality=_checked("--target-quality", target_quality=value).target_quality))
    if not rates:
        raise InvalidInputError("give at least one rate: --taus, --target-usage and/or --target-quality")
    return tuple(dict.fromkeys(rates))


def _checked(option: str, **rate) -> CodecSettings:
    """The rate as codec settings, validated where every rate is; errors name ``option``."""
    try:
        return CodecSettings(**rate)
    except InvalidInputError as error:
        raise InvalidInputError(f"{option}: {error}") from None


def clip_file(out: Path, clip: EvalClip) -> Path:
    return out / "clips" / (clip.name.replace("/", "__") + ".json")


def evaluate_clip(tokenizer, clip: EvalClip, settings: EvalSettings, done: dict | None = None, videos: Path | None = None) -> dict:
    """Encode ``clip`` once, then mask, fill, decode and score it under every run of ``settings``
    that ``done`` (a previous result for this clip) does not already hold; with ``videos`` (the eval
    folder) also write the original and each computed run's reconstruction and kept-token overlay
    (:func:`video_files`)."""
    from latok.codec.streams import source_info
    from latok.evaluation.metrics import ReferenceScorer
    from latok.evaluation.pages import VIDEO_CRF, video_files
    from latok.evaluation.viz import keep_overlay
    from latok.io import video_to_frames, write_video

    def write(relative: str, frames) -> None:
        if videos is not None:
            (videos / relative).parent.mkdir(parents=True, exist_ok=True)
            write_video(videos / relative, frames, source.fps, crf=VIDEO_CRF, faststart=True)

    started = time.perf_counter()
    runs = dict(done["runs"]) if done else {}
    missing = [key for key in settings.run_keys if key not in runs or not settings.is_current(runs[key])]
    loaded = clip.load()
    video, source = source_info(loaded)
    video = video.to(tokenizer.vae.device)
    latent = tokenizer.vae.encode(video)
    scorer = ReferenceScorer(video, lpips=settings.lpips)
    if videos is not None and missing and not (videos / video_files(clip.name)["original"]).exists():
        write(video_files(clip.name)["original"], video)
    for rate in settings.rates:
        fills = [fill for fill in settings.fills if run_key(rate, fill) in missing]
        if not fills:
            continue
        model_fills = any(uses_inpainter(fill) for fill in fills)
        adaptive = tokenizer.tokenize(latent, source, tau=rate.tau, target_usage=rate.target_usage, lit_guard=model_fills, video=video,
                                      target_quality=rate.target_quality)  # fmt: skip
        size = encoded_size(adaptive)
        common = {
            "rate": rate.key, "tau": adaptive.tau, "target_usage": rate.target_usage,
            **({"target_quality": rate.target_quality} if rate.target_quality is not None else {}),
            "token_usage": adaptive.token_usage, "bytes": size,
            "bpp": bitrate(size, source.frames, source.height, source.width, source.fps)["bpp"],
            "usage_per_frame": adaptive.keep.float().mean(dim=(-2, -1))[0].tolist(),
        }  # fmt: skip
        nothing_dropped = bool(adaptive.keep.all())
        first = decoded = None
        for fill in fills:
            extra = {}
            if uses_inpainter(fill):  # lit decodes with the encoder's lit guard, as the codec's default does
                extra = {"inpainter_sha256": settings.inpainter_sha256, "lit_frames": sum(adaptive.lit_frames or ()),
                         "lit_guard": settings.lit_guard}  # fmt: skip
            if nothing_dropped and first is not None:  # every fill is the identity: score once
                runs[run_key(rate, fill)] = {**first, "fill": fill, **extra}
            else:
                decoded = tokenizer.decode(adaptive, fill=fill)
                runs[run_key(rate, fill)] = first = {**common, "fill": fill, **scorer(decoded), **extra}
            if videos is not None:
                paths, frames = video_files(clip.name, rate.key, fill), video_to_frames(decoded)
                write(paths["reconstruction"], frames)
                write(paths["kept"], keep_overlay(frames, adaptive.keep))
    return {
        "name": clip.name, "path": str(clip.path), "protocol": asdict(clip.protocol),
        "frames": source.frames, "height": source.height, "width": source.width, "fps": source.fps,
        "latent_shape": list(latent.shape), "seconds": (done or {}).get("seconds", 0.0) + time.perf_counter() - started,
        "settings": settings.fingerprint(), "runs": runs,
    }  # fmt: skip


def previous_result(clip: EvalClip, out: Path, settings: EvalSettings) -> dict | None:
    """The clip's stored result if it was made from the same source and protocol under ``settings``."""
    try:
        done = json.loads(clip_file(out, clip).read_text())
    except (OSError, ValueError):
        return None
    same = (
        done.get("settings") == settings.fingerprint()
        and done.get("path") == str(clip.path)
        and done.get("protocol") == asdict(clip.protocol)
    )
    return done if same else None


def is_done(clip: EvalClip, out: Path, settings: EvalSettings) -> bool:
    """The clip's file holds every requested run, current, under ``settings``."""
    done = previous_result(clip, out, settings)
    return done is not None and all(k in done["runs"] and settings.is_current(done["runs"][k]) for k in settings.run_keys)


class ClipEvaluator(L.LightningModule):
    """``Trainer.predict`` step: evaluate one clip and write its file (one device per rank)."""

    def __init__(self, settings: EvalSettings, out: Path, tokenizer_options: dict, videos: bool = True):
        super().__init__()
        self.settings, self.out, self.tokenizer_options, self.videos = settings, out, tokenizer_options, videos
        self._tokenizer = None

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int):
        return batch  # a clip is loaded inside the step, straight onto this rank's device

    def predict_step(self, clip: EvalClip, batch_idx: int) -> str:
        from latok.codec.tokenizer import LatentTokenizer

        if self._tokenizer is None:
            self._tokenizer = LatentTokenizer(self.settings.backend, device=self.device, **self.tokenizer_options)
        path = clip_file(self.out, clip)
        result = evaluate_clip(self._tokenizer, clip, self.settings, previous_result(clip, self.out, self.settings),
                               videos=self.out if self.videos else None)  # fmt: skip
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(result, indent=1) + "\n")
        return clip.name


def evaluate(
    clips: list[EvalClip],
    out: str | Path,
    settings: EvalSettings,
    tokenizer_options: dict | None = None,
    description: str = "",
    videos: bool = True,
    command: str | None = None,
) -> dict:
    """Evaluate ``clips`` (skipping finished ones), then write the results files into ``out``; returns results.json.

    With ``videos``, each clip's original and every computed run's reconstruction and kept-token overlay
    are written under ``out/videos`` for ``report.html``; ``command`` is recorded as what made the report."""
    out = Path(out)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    remaining = [clip for clip in clips if not is_done(clip, out, settings)]
    logger.info("%d of %d clips to evaluate into %s", len(remaining), len(clips), out)
    started = time.perf_counter()
    if remaining:
        trainer = L.Trainer(accelerator="auto", devices="auto", logger=False, enable_checkpointing=False)
        loader = DataLoader(remaining, batch_size=None, collate_fn=lambda clip: clip)
        trainer.predict(ClipEvaluator(settings, out, tokenizer_options or {}, videos), loader, return_predictions=False)
    results = collect(clips, out, settings)
    results.update(description=description, wall_seconds_this_run=time.perf_counter() - started, clips_computed=len(remaining),
                   settings_fingerprint=settings.fingerprint(), command=command)  # fmt: skip
    write_reports(results, out)
    return results


def collect(clips: list[EvalClip], out: Path, settings: EvalSettings) -> dict:
    """Gather the clip files into ``{"runs": [{"tau", "fill", "summary", "clips"}]}``."""
    done = [json.loads(clip_file(out, clip).read_text()) for clip in clips]
    runs = []
    for rate in settings.rates:
        for fill in settings.fills:
            key = run_key(rate, fill)
            rows = [{"name": d["name"], **d["runs"][key]} for d in done]
            summary = {
                m: (statistics.mean(r[m] for r in rows) if all(r.get(m) is not None for r in rows) else None)
                for m in METRICS
            }
            runs.append({
                "rate": rate.key, "tau": rows[0]["tau"] if all(r["tau"] == rows[0]["tau"] for r in rows) else None,  # per clip: None
                "target_usage": rate.target_usage, **({"target_quality": rate.target_quality} if rate.target_quality is not None else {}),
                "fill": fill, "summary": summary,
                "clips": [{k: r[k] for k in ("name", "tau", *METRICS, "usage_per_frame")} for r in rows],
            })  # fmt: skip
    return {
        "backend": settings.backend,
        "inpainter": settings.inpainter,
        "lit_guard": settings.lit_guard if any(uses_inpainter(fill) for fill in settings.fills) else None,
        "motion": settings.motion,
        "value_step": settings.value_step,
        "device": _device_name(),
        "protocol": done[0]["protocol"] if done else None,
        "clip_seconds_total": sum(d["seconds"] for d in done),
        "runs": runs,
    }


def _device_name() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()}x {torch.cuda.get_device_name()}"
    import os

    return f"cpu, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


# -- reports -----------------------------------------------------------------------------------


def write_reports(results: dict, out: Path) -> None:
    with atomic_path(out / "results.json") as tmp:
        tmp.write_text(json.dumps(results, indent=1) + "\n")
    with atomic_path(out / "results.csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rate", "tau", "target_usage", "fill", "clip", *METRICS])
        for run in results["runs"]:
            for clip in run["clips"]:
                writer.writerow([run["rate"], clip["tau"], run["target_usage"], run["fill"], clip["name"], *(clip[m] for m in METRICS)])
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(markdown(results))
    from latok.evaluation.pages import eval_page

    with atomic_path(out / "report.html") as tmp:
        tmp.write_text(eval_page(results, out))
    plot_rd_curve(results, out / "rd_curve.png")
    plot_usage(results, out / "usage_over_time.png")


def _fmt(value, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(results: dict) -> str:
    lines = [
        f"# latok eval: {results.get('description') or results['backend']}",
        "",
        f"Backend {results['backend']}, inpainter {results['inpainter'] or '–'}"
        f"{' (' + results['lit_guard'] + ' lit guard)' if results.get('lit_guard') else ''}, "
        f"{'motion ' + results['motion'] + ', ' if results.get('motion', 'none') != 'none' else ''}protocol {results['protocol']}, "
        f"{results['device']}; {len(results['runs'][0]['clips'])} clips, "
        f"{results['clip_seconds_total']:.0f} s of clip evaluation in all.",
        "",
        "| rate | tau | fill | PSNR | SSIM | LPIPS | token usage | bpp |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in results["runs"]:
        s = run["summary"]
        tau = _fmt(run["tau"], 3) if run["tau"] is not None else "per clip"
        lines.append(
            f"| {run['rate']} | {tau} | {run['fill']} | {_fmt(s['psnr'], 2)} | {_fmt(s['ssim'], 4)} | "
            f"{_fmt(s['lpips'], 4)} | {s['token_usage']:.1%} | {_fmt(s['bpp'], 4)} |"
        )
    by_rate: dict[str, list[dict]] = {}
    for run in results["runs"]:
        by_rate.setdefault(run["rate"], []).append(run)
    for rate, runs in by_rate.items():
        fills = [r["fill"] for r in runs]
        lines += ["", f"## {rate}: per clip (PSNR / LPIPS)", "",
                  "| clip | usage | " + " | ".join(fills) + " |", "|---|---|" + "---|" * len(fills)]  # fmt: skip
        for index, clip in enumerate(runs[0]["clips"]):
            cells = [f"{_fmt(r['clips'][index]['psnr'], 2)} / {_fmt(r['clips'][index]['lpips'], 3)}" for r in runs]
            lines.append(f"| {clip['name']} | {clip['token_usage']:.1%} | " + " | ".join(cells) + " |")
    lines += against_hold(by_rate)
    return "\n".join(lines) + "\n"


def against_hold(by_rate: dict[str, list[dict]]) -> list[str]:
    """Markdown lines: every other fill against hold, per rate: mean differences, and on how many
    clips (and by how much at worst) it is worse than hold in each metric."""
    better_when = {"psnr": 1.0, "ssim": 1.0, "lpips": -1.0}  # LPIPS: lower is better
    rows = []
    for rate, runs in by_rate.items():
        hold = next((r for r in runs if r["fill"] == "hold"), None)
        for run in runs:
            if hold is None or run["fill"] == "hold":
                continue
            cells = []
            for metric, sign in better_when.items():
                if any(c[metric] is None for c in run["clips"] + hold["clips"]):
                    cells.append("–")
                    continue
                gains = [sign * (c[metric] - h[metric]) for c, h in zip(run["clips"], hold["clips"])]  # > 0: better than hold
                cells.append(f"{round(sign * statistics.mean(gains), 4) + 0.0:+.4f}; worse on {sum(g < 0 for g in gains)}, "
                             f"at worst by {max(0.0, -min(gains)):.4f}")  # fmt: skip
            rows.append(f"| {rate} | {run['fill']} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    clips = len(next(iter(by_rate.values()))[0]["clips"])
    return ["", f"## Against hold (mean difference; clips worse than hold, of {clips}; largest loss)", "",
            "| rate | fill | PSNR | SSIM | LPIPS |", "|---|---|---|---|---|", *rows]  # fmt: skip


def plot_rd_curve(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    fills = list(dict.fromkeys(run["fill"] for run in results["runs"]))
    for fill in fills:
        runs = sorted((r for r in results["runs"] if r["fill"] == fill), key=lambda r: r["summary"]["token_usage"])
        usage = [100 * r["summary"]["token_usage"] for r in runs]
        axes[0].plot(usage, [r["summary"]["psnr"] for r in runs], marker="o", label=fill)
        if all(r["summary"]["lpips"] is not None for r in runs):
            axes[1].plot(usage, [r["summary"]["lpips"] for r in runs], marker="o", label=fill)
    for axis, name in zip(axes, ("PSNR (dB) ↑", "LPIPS-VGG ↓")):
        axis.set_xlabel("token usage (%)")
        axis.set_ylabel(name)
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(title="fill")
    figure.suptitle(results.get("description") or results["backend"])
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    plt.close(figure)


def plot_usage(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = list(dict.fromkeys(run["rate"] for run in results["runs"]))
    figure, axes = plt.subplots(1, len(rates), figsize=(4.5 * len(rates), 3.8), squeeze=False)
    for axis, rate in zip(axes[0], rates):
        run = next(r for r in results["runs"] if r["rate"] == rate)
        for clip in run["clips"]:
            axis.plot([100 * u for u in clip["usage_per_frame"]], label=clip["name"].split("/")[-1], lw=1)
        axis.set_title(rate)
        axis.set_xlabel("latent frame")
        axis.set_ylabel("kept tokens (%)")
        axis.set_ylim(-2, 102)
        axis.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=6, ncol=2, loc="upper right")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    plt.close(figure)
