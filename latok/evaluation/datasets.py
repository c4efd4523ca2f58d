"""Evaluation datasets: DAVIS, TokenBench, any folder of videos.

Every dataset is a list of named sources plus one :class:`ClipProtocol` that says how
a clip is cut from each source.  The default protocol is the one in DESIGN.md
("Evaluation protocol"): height 240, width centre-cropped to a multiple of 16,
17 frames from frame 0, every frame.

- :func:`davis`: the official layout, ``ImageSets/<year>/<split>.txt`` listing
  sequences whose frames are in ``JPEGImages/<resolution>/<sequence>/``.
- :func:`tokenbench`: a folder of mp4s as TokenBench's preprocessing leaves them
  (one file per clip, in sub-folders per domain or flat).
- :func:`video_folder`: any folder of video files and frame folders.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path

from latok.errors import InvalidInputError, VideoNotFoundError
from latok.io import FRAME_SUFFIXES, Clip, load_clip

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".gif", ".264", ".h264")
_DATASETS: dict = {}


def register_dataset(name: str):
    """Decorator adding a dataset layout ``fn(root, protocol=None, **options) -> list[EvalClip]`` under ``name``."""

    def decorate(fn):
        _DATASETS[name] = fn
        return fn

    return decorate


def list_datasets() -> list[str]:
    """Every ``--dataset`` choice."""
    return list(_DATASETS)


@dataclass(frozen=True)
class ClipProtocol:
    """How a clip is cut from a source: ``frames`` frames from ``start`` every ``stride``, resized to ``height``."""

    frames: int | None = 17
    start: int = 0
    stride: int = 1
    height: int | None = 240


@dataclass(frozen=True)
class EvalClip:
    """One named clip of a dataset; :meth:`load` decodes it under the dataset's protocol."""

    name: str
    path: Path
    protocol: ClipProtocol = field(default_factory=ClipProtocol)

    def load(self) -> Clip:
        p = self.protocol
        return load_clip(self.path, frames=p.frames, start=p.start, stride=p.stride, height=p.height)


@register_dataset("davis")
def davis(
    root: str | os.PathLike,
    year: str = "2016",
    split: str = "val",
    resolution: str = "480p",
    protocol: ClipProtocol | None = None,
) -> list[EvalClip]:
    """DAVIS sequences listed in ``root/ImageSets/<year>/<split>.txt``, named ``davis/<sequence>``.

    Sequences listed but absent from ``JPEGImages/<resolution>`` are an error, so a partial
    download cannot silently shrink a benchmark.
    """
    root = Path(root)
    listing = root / "ImageSets" / year / f"{split}.txt"
    if not listing.is_file():
        raise VideoNotFoundError(f"{root}: not a DAVIS root (no ImageSets/{year}/{split}.txt)")
    names = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    frames = root / "JPEGImages" / resolution
    missing = [name for name in names if not (frames / name).is_dir()]
    if missing:
        raise VideoNotFoundError(f"{frames}: {len(missing)} listed sequence(s) missing, e.g. {missing[0]}")
    return [EvalClip(f"davis/{name}", frames / name, protocol or ClipProtocol()) for name in names]


@register_dataset("tokenbench")
def tokenbench(root: str | os.PathLike, protocol: ClipProtocol | None = None) -> list[EvalClip]:
    """Every ``.mp4`` under ``root`` (recursively), named ``tokenbench/<relative path without suffix>``."""
    root = _directory(root)
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() == ".mp4" and p.is_file())
    if not paths:
        raise VideoNotFoundError(f"{root}: no .mp4 files (expected TokenBench's preprocessed clips)")
    return [EvalClip(f"tokenbench/{p.relative_to(root).with_suffix('').as_posix()}", p, protocol or ClipProtocol()) for p in paths]


@register_dataset("folder")
def video_folder(root: str | os.PathLike, protocol: ClipProtocol | None = None) -> list[EvalClip]:
    """Video files and frame folders directly inside ``root``, named ``<folder>/<stem>``."""
    root = _directory(root)
    sources = []
    for path in sorted(root.iterdir()):
        if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
            sources.append(path)
        elif path.is_dir() and any(p.suffix.lower() in FRAME_SUFFIXES for p in path.iterdir()):
            sources.append(path)
    if not sources:
        raise VideoNotFoundError(f"{root}: no videos ({', '.join(VIDEO_SUFFIXES)}) or frame folders")
    return [EvalClip(f"{root.name}/{p.stem if p.is_file() else p.name}", p, protocol or ClipProtocol()) for p in sources]


def load_dataset(kind: str, root: str | os.PathLike, protocol: ClipProtocol | None = None, **options) -> list[EvalClip]:
    """The clips of the registered dataset layout ``kind`` (:func:`list_datasets`) under ``root``; ``options``
    go to the layout (``davis`` takes ``year``, ``split`` and ``resolution``)."""
    if kind not in _DATASETS:
        raise InvalidInputError(f"unknown dataset {kind!r}; choose from {', '.join(_DATASETS)}")
    layout = _DATASETS[kind]
    try:
        inspect.signature(layout).bind(root, protocol=protocol, **options)
    except TypeError:
        raise InvalidInputError(f"options {sorted(options)} do not apply to dataset {kind}") from None
    return layout(root, protocol=protocol, **options)


def _directory(root: str | os.PathLike) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise VideoNotFoundError(f"{root}: no such directory")
    return root
