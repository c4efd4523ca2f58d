"""The corpus manifest: ``DIR/manifest.parquet``, one row per input clip, written atomically.

Columns (:data:`COLUMNS`): ``key``, ``source``, ``source_sha256``, ``status`` (``ok``/``error``), ``error``
(the one-line reason), ``frames``, ``fps``, ``height``, ``width``, ``settings`` (a fingerprint of the
encode options), ``tokens``, ``token_usage``, ``bytes``, ``bpp``, ``motion_magnitude`` (mean length of
the stored motion vectors, latent pixels), ``seconds``, ``shard``, and ``source_stat`` (size and mtime, which
lets a rerun skip an unchanged source without hashing it).  The manifest is the corpus's truth:
a shard member counts only where its key's row names that shard.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from latok._fs import atomic_path
from latok.errors import InvalidInputError

MANIFEST = "manifest.parquet"
SHARDS = "shards"
COLUMNS = {
    "key": "string", "source": "string", "source_sha256": "string", "status": "string", "error": "string",
    "frames": "int64", "fps": "float64", "height": "int64", "width": "int64", "settings": "string",
    "tokens": "int64", "token_usage": "float64", "bytes": "int64", "bpp": "float64",
    "motion_magnitude": "float64", "seconds": "float64", "shard": "string", "source_stat": "string",
}  # fmt: skip


OPTIONAL = ("source_stat",)  # a manifest without them still reads (the rerun then hashes every source)


def fingerprint(options: dict) -> str:
    """The settings fingerprint of a set of encode options (16 hex digits of their canonical JSON)."""
    return hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:16]


def sha256_of(path: str, member: str | None = None) -> str:
    """The sha256 of a source's bytes: a file, every frame of a frame folder in order, or a tar member."""
    digest = hashlib.sha256()
    if member is not None:
        import tarfile

        with tarfile.open(path) as tar, tar.extractfile(member) as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    elif os.path.isdir(path):
        for name in sorted(os.listdir(path)):
            digest.update(name.encode())
            with open(os.path.join(path, name), "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    else:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def stat_of(path: str, member: str | None = None) -> str:
    """A cheap signature of a source as it is now: bytes and modification time (of every frame, for a folder)."""
    try:
        if os.path.isdir(path):
            stats = [os.stat(os.path.join(path, name)) for name in sorted(os.listdir(path))]
            return f"{sum(s.st_size for s in stats)}:{max((s.st_mtime_ns for s in stats), default=0)}:{len(stats)}"
        info = os.stat(path)
        return f"{info.st_size}:{info.st_mtime_ns}" + (f"#{member}" if member else "")
    except OSError:
        return ""


def _schema():
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, {"string": "string", "int64": "int64", "float64": "float64"}[kind])()) for name, kind in COLUMNS.items()])


def read_manifest(folder: str | os.PathLike) -> list[dict]:
    """The manifest's rows (``[]`` when the corpus has none yet).

    Raises:
        InvalidInputError: the manifest exists but is not a readable manifest.
    """
    path = Path(folder) / MANIFEST
    if not path.exists():
        return []
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise InvalidInputError(f"{path}: not a readable manifest ({str(error).splitlines()[0]})") from None
    missing = [c for c in COLUMNS if c not in table.column_names and c not in OPTIONAL]
    if missing:
        raise InvalidInputError(f"{path}: not a latok manifest (no column {missing[0]!r})")
    present = [c for c in COLUMNS if c in table.column_names]
    return [{**dict.fromkeys(OPTIONAL), **row} for row in table.select(present).to_pylist()]


def write_manifest(folder: str | os.PathLike, rows: list[dict]) -> Path:
    """Replace the manifest with ``rows`` atomically (readers see the old one or the new one, never half)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(folder) / MANIFEST
    table = pa.Table.from_pylist([{c: row.get(c) for c in COLUMNS} for row in rows], schema=_schema())
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def query(folder: str | os.PathLike, where: str | None = None, columns: str = "*") -> list[dict]:
    """Manifest rows matching the SQL condition ``where`` (DuckDB), e.g. ``"token_usage < 0.5 AND status = 'ok'"``.

    Raises:
        InvalidInputError: no manifest, or ``where`` is not a valid condition on it.
    """
    import duckdb

    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise InvalidInputError(f"{folder}: no {MANIFEST} (not a latok corpus)")
    read_manifest(folder)  # a damaged manifest fails as one line here
    sql = f"SELECT {columns} FROM read_parquet(?)" + (f" WHERE {where}" if where else "")
    try:
        with duckdb.connect() as connection:
            cursor = connection.execute(sql, [str(path)])
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]
    except duckdb.Error as error:
        raise InvalidInputError(f"where={where!r} is not a valid condition on the manifest: {str(error).splitlines()[0]}") from None
