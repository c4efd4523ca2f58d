"""HTML pages: ``latok eval``'s ``report.html`` and ``latok view``'s page of one ``.latok`` file.

A page opens from disk with no server and no network: its plots are inline SVG (matplotlib's, or drawn here),
its images are data URIs, its videos are files beside it (H.264 yuv420p mp4, index first, which browsers play).
Everything a page shows from its inputs (clip names, paths, header values) goes through Jinja2's autoescaping;
data for the page's script is embedded with ``tojson``, which escapes ``<``, ``>``, ``&`` and quotes.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import re
from pathlib import Path
from urllib.parse import quote

import numpy as np

USAGE_PLOT = (320, 64)  # width, height of a token-usage-per-frame plot in CSS pixels


VIDEO_CRF = 23  # the report's videos: small, and a browser plays them (H.264 yuv420p, index first)


def _slug(name: str) -> str:
    """A file name for ``name``: kept as is where it is plain, else sanitised and told apart by a hash of it."""
    plain = name.replace("/", "__")
    slug = re.sub(r"[^A-Za-z0-9._=-]+", "_", plain).lstrip(".") or "_"
    return slug if slug == plain else f"{slug}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def video_files(clip_name: str, rate_key: str | None = None, fill: str | None = None) -> dict[str, str]:
    """Paths, relative to the eval folder, of a clip's videos: ``{"original"}``, or for one run
    ``{"reconstruction", "kept"}`` (the kept tokens over the reconstruction)."""
    folder = f"videos/{_slug(clip_name)}"
    if rate_key is None:
        return {"original": f"{folder}/original.mp4"}
    stem = f"{folder}/{_slug(rate_key)}.{_slug(fill or '')}"
    return {"reconstruction": f"{stem}.mp4", "kept": f"{stem}.kept.mp4"}


def _environment():
    from jinja2 import Environment, PackageLoader, select_autoescape

    return Environment(
        loader=PackageLoader("latok.evaluation", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(template: str, **context) -> str:
    return _environment().get_template(template).render(**context)


def polyline(values: list[float | None], width: int, height: int, low: float, high: float) -> str:
    """SVG ``points`` of ``values`` spread over ``width`` and scaled from ``[low, high]`` to ``[height, 0]``
    (a gap-free line: missing or infinite values are left out)."""
    span = (high - low) or 1.0
    step = width / max(1, len(values) - 1)
    return " ".join(
        f"{index * step:.1f},{height - (value - low) / span * height:.1f}"
        for index, value in enumerate(values)
        if value is not None and math.isfinite(value)
    )


def usage_plot(usage: list[float], width: int = USAGE_PLOT[0], height: int = USAGE_PLOT[1]) -> dict:
    """What the templates' usage plot draws: kept fraction per frame on a 0-100 % scale."""
    return {"width": width, "height": height, "points": polyline(usage, width, height, 0.0, 1.0),
            "mean": sum(usage) / len(usage) if usage else 0.0, "frames": len(usage)}  # fmt: skip


def svg_figure(figure) -> str:
    """A matplotlib figure as inline SVG markup (text kept as text, no XML prolog), and the figure closed."""
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    with plt.rc_context({"svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["text.parse_math"] = False  # a clip or folder name with "$" is text, not TeX
    return plt


# -- latok eval's report.html ----------------------------------------------------------------------


def rd_figures(results: dict) -> list[str]:
    """The RD curves as four small SVG plots (they wrap on a narrow screen): token usage against PSNR, SSIM and
    LPIPS per fill, and PSNR against bpp."""
    plt = _pyplot()
    panels = [("token_usage", "psnr", "PSNR (dB) ↑"), ("token_usage", "ssim", "SSIM ↑"), ("token_usage", "lpips", "LPIPS-VGG ↓"),
              ("bpp", "psnr", "PSNR (dB) ↑")]  # fmt: skip
    fills = list(dict.fromkeys(run["fill"] for run in results["runs"]))
    svgs = []
    for x, y, label in panels:
        figure, axis = plt.subplots(figsize=(3.0, 2.6))
        for fill in fills:
            runs = [r for r in results["runs"] if r["fill"] == fill and r["summary"].get(x) is not None and r["summary"].get(y) is not None]
            runs.sort(key=lambda r: r["summary"][x])
            if runs:
                scale = 100.0 if x == "token_usage" else 1.0
                axis.plot([scale * r["summary"][x] for r in runs], [r["summary"][y] for r in runs], marker="o", label=fill)
        axis.set_xlabel("token usage (%)" if x == "token_usage" else "bits per pixel")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(title="fill", fontsize=7)
        else:
            axis.text(0.5, 0.5, "not measured", ha="center", va="center", transform=axis.transAxes)
        figure.tight_layout()
        svgs.append(svg_figure(figure))
    return svgs


def eval_page(results: dict, out: Path) -> str:
    """``report.html`` for the eval folder ``out`` (its videos are looked up there; missing ones are marked)."""
    rates = list(dict.fromkeys(run["rate"] for run in results["runs"]))
    fills = list(dict.fromkeys(run["fill"] for run in results["runs"]))
    by_key = {(run["rate"], run["fill"]): run for run in results["runs"]}
    names = [clip["name"] for clip in results["runs"][0]["clips"]] if results["runs"] else []

    def video(relative: str) -> dict:
        return {"src": relative, "href": quote(relative), "present": (out / relative).is_file()}

    clips = []
    for index, name in enumerate(names):
        runs = {}
        for rate in rates:
            for fill in fills:
                run = by_key.get((rate, fill))
                if run is None:
                    continue
                paths = video_files(name, rate, fill)
                runs.setdefault(rate, {})[fill] = {"reconstruction": video(paths["reconstruction"]), "kept": video(paths["kept"]),
                                                   "psnr": run["clips"][index]["psnr"], "usage": run["clips"][index]["token_usage"]}  # fmt: skip
        usage = {rate: usage_plot(by_key[(rate, fills[0])]["clips"][index]["usage_per_frame"]) for rate in rates if (rate, fills[0]) in by_key}
        clips.append({"name": name, "original": video(video_files(name)["original"]), "runs": runs, "usage": usage})
    rows = [{"clip": clip["name"], "rate": run["rate"], "fill": run["fill"], **{m: clip.get(m) for m in ("token_usage", "psnr", "ssim", "lpips", "bpp")}}
            for run in results["runs"] for clip in run["clips"]]  # fmt: skip
    return render("eval.html", results=results, rates=rates, fills=fills, clips=clips, rows=rows, rd_svgs=rd_figures(results),
                  first_rate=rates[0] if rates else None, first_fill=fills[0] if fills else None)  # fmt: skip


# -- latok view: one .latok file ---------------------------------------------------------------------

_KEPT = np.array([255, 200, 0], dtype=np.uint8)


def keep_heatmap(keep: np.ndarray) -> list[str]:
    """One PNG data URI per latent frame of ``keep`` (``(t, h, w)`` bool): kept cells yellow, dropped cells
    blue, darker the longer ago their value was kept."""
    from PIL import Image

    t = keep.shape[0]
    age = np.zeros(keep.shape, dtype=np.int32)  # latent frames since the position was last kept
    for index in range(1, t):
        age[index] = np.where(keep[index], 0, age[index - 1] + 1)
    shade = np.clip(1.0 - age / max(1, t - 1), 0.15, 1.0)[..., None]
    dropped = (shade * np.array([60, 110, 230])).astype(np.uint8)
    colours = np.where(keep[..., None], _KEPT, dropped)
    uris = []
    for frame in colours:
        buffer = io.BytesIO()
        Image.fromarray(frame, "RGB").save(buffer, format="PNG", optimize=True)
        uris.append("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode())
    return uris


def motion_arrows(motion: np.ndarray | None, height: int, width: int, scale: float) -> list[list[dict]]:
    """Per latent frame, arrows in latent-cell units: each block's (or the frame's) translation from the frame
    before, drawn from the block's centre and lengthened ``scale`` times."""
    if motion is None:
        return []
    frames = []
    for vectors in motion:  # (2,) global or (2, gh, gw) per block
        vectors = vectors.reshape(2, 1, 1) if vectors.ndim == 1 else vectors
        rows, cols = vectors.shape[1:]
        arrows = []
        for r in range(rows):
            for c in range(cols):
                dy, dx = float(vectors[0, r, c]), float(vectors[1, r, c])
                if dy == 0 and dx == 0:
                    continue
                y, x = (r + 0.5) * height / rows, (c + 0.5) * width / cols
                arrows.append({"x1": x, "y1": y, "x2": x + scale * dx, "y2": y + scale * dy})
        frames.append(arrows)
    return frames


def file_page(path: str | Path, decoded: dict | None = None, name: str | None = None) -> str:
    """The page of one ``.latok`` file, shown as ``name`` (default: its file name); ``decoded`` (from
    :func:`decode_beside_source`) adds the decoded clip beside its source."""
    from latok.codec.format.reader import load_latok
    from latok.evaluation.reports import file_info

    info = file_info(path)
    adaptive = load_latok(path)
    keep = adaptive.keep[0].cpu().numpy()
    usage = keep.mean(axis=(1, 2)).tolist()
    motion = None if adaptive.motion is None else adaptive.motion[0].float().cpu().numpy()
    t, h, w = keep.shape
    name = name or Path(path).name
    header = {key: value if isinstance(value, (str, int, float, type(None))) else json.dumps(value) for key, value in info.items()
              if key != "bytes_by_part"}  # fmt: skip
    header["file"] = name if name != Path(path).name else header["file"]
    parts = [{"name": name, "bytes": size, "share": size / info["bytes"]} for name, size in info["bytes_by_part"].items()]
    psnr = None
    if decoded is not None:
        values = decoded["psnr"]
        finite = [v for v in values if math.isfinite(v)] or [0.0]
        low, high = math.floor(min(finite)) - 1, math.ceil(max(finite)) + 1
        psnr = {"points": polyline(values, 640, 120, low, high), "low": low, "high": high, "width": 640, "height": 120,
                "values": values, "mean": sum(finite) / len(finite)}  # fmt: skip
    return render("view.html", name=name, header=header, parts=parts, usage=usage_plot(usage, 640, 120),
                  frames=list(zip(keep_heatmap(keep), motion_arrows(motion, h, w, 3.0) or [[] for _ in range(t)], usage)),
                  latent_size=(h, w), motion_model=adaptive.motion_model, decoded=decoded, psnr=psnr)  # fmt: skip


def decode_beside_source(tokenizer, path: str | Path, source: str | Path, fill: str | None = None) -> dict:
    """Decode the ``.latok`` file at ``path`` and read ``source`` with the framing the file records (refused when
    it is not the file's source): both clips, their fps, PSNR per frame; :func:`write_beside_source` writes them."""
    from latok.codec.format.reader import load_latok
    from latok.errors import InvalidInputError
    from latok.evaluation.metrics import psnr
    from latok.io import load_clip

    adaptive = load_latok(path)
    info = adaptive.source
    clip = load_clip(source, frames=info.frames, height=info.height)
    got, want = (clip.video.shape[2], *clip.video.shape[-2:]), (info.frames, info.height, info.width)
    if got != want:
        raise InvalidInputError(f"--source {source}: {got[2]}x{got[1]}, {got[0]} frames when read as the file was encoded; "
                                f"{path} holds {want[2]}x{want[1]}, {want[0]} frames: not its source")  # fmt: skip
    decoded = tokenizer.decode(adaptive, fill=fill)
    return {"psnr": [psnr(decoded[:, :, i : i + 1], clip.video[:, :, i : i + 1]) for i in range(info.frames)],
            "source_name": Path(source).name, "fill": fill or "the codec's default",
            "clips": {"source": clip.video, "decoded": decoded}, "fps": info.fps}  # fmt: skip


def write_beside_source(decoded: dict, outputs: dict[str, Path], folder: str) -> dict:
    """Write :func:`decode_beside_source`'s clips to ``outputs`` (``{"source", "decoded"}`` paths, found in ``folder``
    beside the page); what :func:`file_page` shows of them."""
    from latok.io import write_video

    for name, path in outputs.items():
        write_video(path, decoded["clips"][name], decoded["fps"], crf=VIDEO_CRF, faststart=True)
    videos = {name: {"src": f"{folder}/{name}.mp4", "href": quote(f"{folder}/{name}.mp4"), "present": True} for name in outputs}
    return {key: value for key, value in decoded.items() if key not in ("clips", "fps")} | videos
