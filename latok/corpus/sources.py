"""What ``latok corpus encode`` takes as SOURCE: video files, folders (searched recursively; a folder of
frames is one clip), ``.txt``/``.csv``/``.parquet`` lists of paths, and webdataset ``.tar`` shards of videos."""

from __future__ import annotations

import csv
import hashlib
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from latok.errors import InvalidInputError
from latok.io import FRAME_SUFFIXES

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".gif", ".264", ".h264", ".m4v")
LIST_SUFFIXES = (".txt", ".csv", ".parquet")


@dataclass(frozen=True)
class Source:
    """One clip of a corpus: a file or frame folder, or ``member`` of the ``.tar`` shard ``path``.

    ``key`` names the clip in the shards and the manifest: the stem, made safe for webdataset (no dots),
    and 8 hex digits of the source's path so that two ``clip.mp4`` in different folders stay apart."""

    key: str
    path: str
    member: str | None = None

    @property
    def name(self) -> str:
        return self.path if self.member is None else f"{self.path}#{self.member}"


def _key(path: str, member: str | None) -> str:
    stem = Path(member or path).stem if Path(member or path).suffix else Path(member or path).name
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", stem)[:48] or "clip"
    digest = hashlib.sha1(f"{path}#{member or ''}".encode()).hexdigest()[:8]
    return f"{safe}-{digest}"


def _source(path: Path, member: str | None = None) -> Source:
    path = os.path.abspath(path)
    return Source(_key(path, member), path, member)


def _is_frame_folder(folder: Path) -> bool:
    return any(p.suffix.lower() in FRAME_SUFFIXES and p.is_file() for p in folder.iterdir())


def _walk(folder: Path) -> list[Source]:
    if _is_frame_folder(folder):
        return [_source(folder)]
    found = []
    for child in sorted(folder.iterdir()):
        if child.is_dir():
            found += _walk(child)
        elif child.suffix.lower() in VIDEO_SUFFIXES:
            found.append(_source(child))
        elif child.suffix.lower() == ".tar":
            found += _tar_members(child)
    return found


def _tar_members(shard: Path) -> list[Source]:
    try:
        with tarfile.open(shard) as tar:
            names = [m.name for m in tar.getmembers() if m.isfile() and Path(m.name).suffix.lower() in VIDEO_SUFFIXES]
    except (tarfile.TarError, OSError) as error:
        raise InvalidInputError(f"{shard}: not a readable tar shard ({error})") from None
    return [_source(shard, name) for name in names]


def _listed(listing: Path) -> list[Path]:
    """The paths a list file names (relative ones against the list's folder, else the working folder)."""
    if listing.suffix == ".txt":
        entries = [line.strip() for line in listing.read_text().splitlines() if line.strip() and not line.startswith("#")]
    elif listing.suffix == ".csv":
        with listing.open(newline="") as handle:
            rows = list(csv.reader(handle))
        if not rows:
            return []
        column = rows[0].index("path") if "path" in rows[0] else 0
        entries = [row[column] for row in rows[1 if "path" in rows[0] else 0 :] if row]
    else:
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(listing)
        except Exception as error:  # pyarrow raises several types for a damaged file
            raise InvalidInputError(f"{listing}: not a readable Parquet list ({str(error).splitlines()[0]})") from None
        column = next((c for c in ("path", "source") if c in table.column_names), None)
        if column is None:
            raise InvalidInputError(f"{listing}: a Parquet list needs a 'path' column")
        entries = [str(v) for v in table.column(column).to_pylist() if v]
    return [_resolve(e, listing.parent) for e in entries]


def _resolve(entry: str, folder: Path) -> Path:
    """A listed path: absolute as is; relative against the list's folder, else against the working folder."""
    path = Path(entry)
    if path.is_absolute() or (folder / path).exists() or not path.exists():
        return path if path.is_absolute() else folder / path
    return path


def expand_sources(arguments: list[str]) -> list[Source]:
    """Every clip the SOURCE arguments name, in order, each once.

    Raises:
        InvalidInputError: a SOURCE that does not exist or holds no clip.
    """
    found: list[Source] = []
    for argument in arguments:
        path = Path(argument)
        if not path.exists():
            raise InvalidInputError(f"{argument}: no such file or folder")
        if path.is_dir():
            clips = _walk(path)
        elif path.suffix.lower() == ".tar":
            clips = _tar_members(path)
        elif path.suffix.lower() in LIST_SUFFIXES:
            clips = [_source(p) for p in _listed(path)]  # listed paths are checked per clip: a missing one is an error row
        else:
            clips = [_source(path)]  # any other file is tried as a video: an unreadable one is an error row
        if not clips:
            raise InvalidInputError(f"{argument}: holds no videos or frame folders")
        found += clips
    return list({s.key: s for s in found}.values())
