"""What every eval script shares: where the data and the results live, and which clips each set holds.

Clip sets come from :mod:`latok.evaluation.datasets`, the layouts ``latok eval --dataset`` reads, so a
script measures exactly the clips ``latok eval`` would.  What each set may do (DESIGN.md):

    pool_train   ../shared/data/train, eval/splits/pool_train.txt   trains
    pool_val     ../shared/data/train, eval/splits/pool_val.txt     selects (checkpoints, thresholds, models)
    davis        the shared DAVIS sequences                          reports only
    tokenbench   ../shared/data/tokenbench-mini                      reports only
    classic      ../shared/data/clips                                reports only

``LATOK_DATA`` points at another data folder (default ``../shared/data`` beside the checkout).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from latok.evaluation.datasets import ClipProtocol, EvalClip, load_dataset

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LATOK_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "eval" / "results"
SPLITS = ROOT / "eval" / "splits"
PROTOCOL = ClipProtocol()  # DESIGN.md's: 17 frames from frame 0 at 240p
REPORTING = ("davis", "tokenbench", "classic")  # sets that report and never select


def clip_set(name: str, only: list[str] | None = None, protocol: ClipProtocol = PROTOCOL) -> list[EvalClip]:
    """The clips of set ``name`` (see the module docstring); ``only``: keep these short names (``blackswan``), in that order."""
    if name == "davis":
        clips = load_dataset("davis", DATA / "davis", protocol)
    elif name == "tokenbench":
        clips = load_dataset("tokenbench", DATA / "tokenbench-mini", protocol)
    elif name == "classic":
        clips = [c for c in load_dataset("folder", DATA / "clips", protocol) if c.path.suffix in (".mp4", ".avi")]
    elif name in ("pool_train", "pool_val"):
        listed = (SPLITS / f"{name}.txt").read_text().split()
        clips = [EvalClip(f"train/{Path(p).with_suffix('').as_posix()}", DATA / "train" / p, protocol) for p in listed]
    else:
        raise ValueError(f"no clip set {name!r}: davis, tokenbench, classic, pool_train or pool_val")
    if only is None:
        return clips
    by_name = {c.name.rsplit("/", 1)[-1]: c for c in clips}
    missing = [n for n in only if n not in by_name]
    if missing:
        raise ValueError(f"set {name} has no clip {missing[0]!r}")
    return [by_name[n] for n in only]


def davis_clip(sequence: str, protocol: ClipProtocol = PROTOCOL) -> EvalClip:
    """One shared DAVIS sequence (a reporting clip: time and size things on it, never tune on it)."""
    return clip_set("davis", [sequence], protocol)[0]


def write_results(stem: str, result: dict, markdown: str | None = None) -> Path:
    """``eval/results/<stem>.json`` (and ``.md`` when given), printed (the Markdown if any); returns the JSON's path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{stem}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    if markdown is not None:
        (RESULTS / f"{stem}.md").write_text(markdown if markdown.endswith("\n") else markdown + "\n")
    print(markdown if markdown is not None else json.dumps(result, indent=2))
    return path
