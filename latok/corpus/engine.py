"""``latok corpus encode`` on Ray Data: sources hashed and decoded by tasks, clips encoded by an actor pool (the
autoencoder and inpainter load once per worker), shards and the manifest written by the driver as the
stream goes, atomically.  This module is the only one in latok that imports Ray.

Exactly once: a clip is done when its manifest row says ``ok``; a shard is renamed into place before
the manifest that names it, and shards no manifest row names (a killed driver's last one) are removed
when the next run starts, so a rerun after any kill adds each missing clip once.  Ray retries a task
whose worker died; a rerun finishes what it could not.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import pickle
import re
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from latok.corpus.manifest import MANIFEST, SHARDS, read_manifest, sha256_of, stat_of, write_manifest
from latok.corpus.sources import Source
from latok.errors import InvalidInputError

SHARD_CLIPS = 64  # clips per shard
SHARD_NAME = re.compile(r"shard-(\d{6})\.tar")


@dataclass
class CorpusSummary:
    ok: int = 0
    failed: int = 0
    skipped: int = 0  # done before (ok), unchanged
    failed_before: int = 0  # failed before, unchanged, not retried
    seconds: float = 0.0

    def line(self) -> str:
        rate = (self.ok + self.failed) / self.seconds if self.seconds else 0.0
        before = f" ({self.failed_before} failed before: --retry-errors)" if self.failed_before else ""
        return f"{self.ok} ok, {self.failed} failed, {self.skipped + self.failed_before} already done{before}; {self.seconds:.1f} s ({rate:.2f} clips/s)"

    @property
    def all_ok(self) -> bool:
        return not (self.failed or self.failed_before)


def _one_line(error: BaseException, row: dict | None = None, folder: str | None = None) -> str:
    """The first line of ``error``; a tar member's temporary copy in ``folder`` named as the member (``row``'s)."""
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    if row is not None and folder is not None and row["member"]:
        line = line.replace(str(Path(folder) / Path(row["member"]).name), row["name"])
    return line[:500]


def _read_stage(row: dict, settings: str, done: frozenset, read_one: Callable) -> dict:
    """Task stage, overlapping the encoders: the source's sha256, whether this clip is already done under
    these settings, and (unless it is done, or long enough to stream) its decoded frames."""
    start = time.perf_counter()
    try:
        row["sha"] = sha256_of(row["path"], row["member"] or None)
    except (OSError, KeyError, tarfile.TarError) as error:
        row.update(status="error", meta=json.dumps({"error": f"cannot read the source: {_one_line(error)}"}))
        return row
    if f"{row['sha']}|{settings}" in done:
        row["status"] = "skip"
        return row
    with tempfile.TemporaryDirectory(prefix="latok-corpus-") as tmp:
        try:
            clip = read_one(_materialise(row, Path(tmp)))
        except Exception as error:  # a bad clip is a manifest row, never the end of the job
            row.update(status="error", meta=json.dumps({"error": _one_line(error, row, tmp), "seconds": time.perf_counter() - start}))
            return row
    row.update(clip=b"" if clip is None else pickle.dumps(clip), seconds=time.perf_counter() - start)
    return row


class _Encoder:
    """Actor stage: one tokenizer per worker, one clip per call, exactly the bytes ``latok encode`` writes."""

    def __init__(self, make_tokenizer: Callable, encode_one: Callable, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.tokenizer, self.encode_one = make_tokenizer(), encode_one

    def __call__(self, row: dict) -> dict:
        if row["status"] != "pending":
            return row
        start = time.perf_counter() - row["seconds"]  # the read stage's time counts
        with tempfile.TemporaryDirectory(prefix="latok-corpus-") as tmp:
            try:  # a clip the read stage decoded, or (long: streamed in chunks) its source
                source = pickle.loads(row["clip"]) if row["clip"] else _materialise(row, Path(tmp))
                output = Path(tmp) / "clip.latok"
                self.encode_one(self.tokenizer, source, output)
                meta = _describe(output)
                row.update(status="ok", latok=output.read_bytes())
            except Exception as error:  # a bad clip is a manifest row, never the end of the job
                meta = {"error": _one_line(error, row, tmp)}
                row["status"] = "error"
        row.update(clip=b"", meta=json.dumps({**meta, "seconds": time.perf_counter() - start}))
        return row


def _encoder_class(make_tokenizer: Callable, encode_one: Callable, threads: int) -> type:
    """The actor class with its arguments inside (shipped with the class, so a restarted actor has them)."""

    class Encoder(_Encoder):
        def __init__(self):
            super().__init__(make_tokenizer, encode_one, threads)

    return Encoder


def _materialise(row: dict, folder: Path) -> str:
    if not row["member"]:
        return row["path"]
    target = folder / Path(row["member"]).name
    with tarfile.open(row["path"]) as tar, tar.extractfile(row["member"]) as handle:
        target.write_bytes(handle.read())
    return str(target)


def _describe(path: Path) -> dict:
    from latok.codec.format.reader import load_latok
    from latok.evaluation.reports import file_info

    info = file_info(path)
    motion = load_latok(path).motion
    magnitude = float(motion.float().norm(dim=2).mean()) if motion is not None and motion.numel() else 0.0
    pixels = info["frames"] * info["height"] * info["width"]
    return {"frames": info["frames"], "fps": info["fps"], "height": info["height"], "width": info["width"],
            "tokens": info["tokens"], "token_usage": info["token_usage"], "bytes": info["bytes"],
            "bpp": info["bytes"] * 8 / pixels if pixels else None, "motion_magnitude": magnitude}  # fmt: skip


class _Shards:
    """The driver's shard writer: members go to a temp file, renamed into place when the shard is full."""

    def __init__(self, folder: Path, first_index: int, clips_per_shard: int):
        self.folder, self.index, self.limit = folder, first_index, clips_per_shard
        self._tar, self._tmp, self._count = None, None, 0

    @property
    def name(self) -> str:
        return f"shard-{self.index:06d}.tar"

    def add(self, key: str, data: bytes, meta: dict) -> str:
        if self._tar is None:
            self._tmp = self.folder / f".{self.name}.{os.getpid()}.tmp"
            self._tar = tarfile.open(self._tmp, "w", format=tarfile.USTAR_FORMAT)
        for suffix, payload in (("latok", data), ("json", json.dumps(meta, sort_keys=True).encode())):
            info = tarfile.TarInfo(f"{key}.{suffix}")
            info.size, info.mtime, info.mode = len(payload), 0, 0o644
            self._tar.addfile(info, io.BytesIO(payload))
        self._count += 1
        return self.name

    @property
    def full(self) -> bool:
        return self._count >= self.limit

    def close(self) -> str | None:
        """Put the current shard in place; its name (``None`` when empty)."""
        if self._tar is None:
            return None
        self._tar.close()
        with open(self._tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        name = self.name
        os.replace(self._tmp, self.folder / name)
        self._tar, self._tmp, self._count, self.index = None, None, 0, self.index + 1
        return name

    def abort(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tmp.unlink(missing_ok=True)


def prepare_folder(out: Path) -> tuple[list[dict], int]:
    """Check ``out``, read its manifest, remove shards no row names; the rows and the next shard index.

    Raises:
        InvalidInputError: ``out`` is a file, or its manifest is unreadable.
    """
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"--out {out}: is a file, not a folder")
    rows = read_manifest(out)
    shards = out / SHARDS
    shards.mkdir(parents=True, exist_ok=True)
    named = {r["shard"] for r in rows if r["status"] == "ok"}
    for path in shards.iterdir():
        if path.name not in named:  # a killed run's shard or temp file: its clips are not done
            path.unlink()
    indices = [int(m.group(1)) for name in named if name and (m := SHARD_NAME.fullmatch(name))]
    return rows, max(indices, default=-1) + 1


def encode_corpus(
    sources: list[Source], out: str | os.PathLike, *, settings: str, make_tokenizer: Callable, read_one: Callable,
    encode_one: Callable, workers: int | None = None, address: str | None = None, clips_per_shard: int = SHARD_CLIPS, progress: bool = True,
    retry_errors: bool = False,
) -> CorpusSummary:  # fmt: skip
    """Encode ``sources`` into the corpus at ``out`` on Ray Data; resumable, exactly once.

    Args:
        settings: fingerprint of the encode options (:func:`latok.corpus.manifest.fingerprint`); a clip
            whose sha256 and settings are ``ok`` in the manifest is skipped.
        make_tokenizer: builds a worker's tokenizer (called once per worker).
        read_one: ``(source path)`` decodes a clip in the read stage, overlapping the encoders; ``None`` leaves
            it to ``encode_one`` (a long clip, streamed in the memory of one chunk).
        encode_one: ``(tokenizer, what read_one gave or the source path, output path)`` writes one clip's
            ``.latok`` file.
        workers: encoding actors (default: the cores); ``address``: join a running Ray cluster
            (``"auto"`` or ``HOST:PORT``) instead of starting a local one.
        retry_errors: encode again the clips that failed before and are unchanged (by default a changed
            source or changed options retry them).
    """
    out = Path(out)
    rows, next_shard = prepare_folder(out)
    by_key = {r["key"]: r for r in rows}
    done = frozenset(f"{r['source_sha256']}|{r['settings']}" for r in rows if r["status"] == "ok")
    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise InvalidInputError(f"--workers must be >= 1, got {workers}")
    summary, start = CorpusSummary(), time.perf_counter()
    to_encode = []
    for source in sources:  # unchanged sources already done are skipped without hashing, and without Ray
        row = by_key.get(source.key)
        unchanged = row is not None and row["settings"] == settings and row["source_stat"] == stat_of(source.path, source.member)
        if unchanged and row["status"] == "ok":
            summary.skipped += 1
        elif unchanged and not retry_errors:
            summary.failed_before += 1
        else:
            to_encode.append(source)
    if not to_encode:
        summary.seconds = time.perf_counter() - start
        return summary
    sources = to_encode
    with _native_log(out / "ray-driver.log") as terminal:
        ray, started = _start_ray(address, workers)
        try:
            _run(ray, sources, out, settings, done, by_key, (make_tokenizer, read_one, encode_one), workers,
                 _Shards(out / SHARDS, next_shard, clips_per_shard), _bar(len(sources), progress, terminal), summary)  # fmt: skip
        finally:
            if started:
                ray.shutdown()
    summary.seconds = time.perf_counter() - start
    return summary


def _run(ray, sources, out, settings, done, by_key, stages, workers, shards, bar, summary) -> None:
    pending: list[dict] = []
    try:
        stream = _pipeline(ray, sources, settings, done, stages, workers)
        for result in stream:
            bar.update(1)
            if result["status"] == "skip":  # done before: remember how it looks now, so the next run needs no hash
                summary.skipped += 1
                by_key[result["key"]]["source_stat"] = stat_of(result["path"], result["member"] or None)
                continue
            meta = json.loads(result["meta"])
            row = {"key": result["key"], "source": result["name"], "source_sha256": result.get("sha"), "settings": settings,
                   "source_stat": stat_of(result["path"], result["member"] or None),
                   "status": result["status"], **{k: v for k, v in meta.items() if k != "error"}, "error": meta.get("error")}  # fmt: skip
            if result["status"] == "ok":
                row["shard"] = shards.add(result["key"], result["latok"], {k: v for k, v in row.items() if k != "shard"})
                summary.ok += 1
            else:
                summary.failed += 1
            pending.append(row)
            if shards.full:
                shards.close()  # the shard is in place before the manifest that names it
                _flush(out, by_key, pending)
        shards.close()
        _flush(out, by_key, pending)
        bar.close()
    except BaseException:
        shards.abort()
        raise


@contextlib.contextmanager
def _native_log(path: Path):
    """Send what Ray's native code prints on this process's stderr to ``path``; yield the terminal for our own output."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    terminal = os.fdopen(os.dup(2), "w", buffering=1)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield terminal
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            terminal.close()


def _flush(out: Path, by_key: dict, pending: list[dict]) -> None:
    """Write the manifest with the rows since the last flush (their shards are already in place)."""
    for row in pending:
        by_key[row["key"]] = row
    pending.clear()
    write_manifest(out, list(by_key.values()))


def _bar(total: int, enabled: bool, stream):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="clip", desc="corpus encode", disable=not enabled, file=stream)


def _start_ray(address: str | None, workers: int):
    try:
        import ray
    except ImportError:
        raise InvalidInputError("latok corpus needs Ray Data: pip install 'latok[corpus]'") from None
    if ray.is_initialized():
        return ray, False
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(num_cpus=workers + 1, **quiet)  # one slot beyond the encoders: hashing and reading overlap
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise InvalidInputError(f"cannot start or join Ray ({_one_line(error)})") from None
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars, context.print_on_execution_start = False, False
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return ray, True


def _pipeline(ray, sources, settings, done, stages, workers):
    make_tokenizer, read_one, encode_one = stages
    items = [{"key": s.key, "path": s.path, "member": s.member or "", "name": s.name, "status": "pending", "sha": "", "meta": "{}",
              "clip": b"", "seconds": 0.0, "latok": b""} for s in sources]  # fmt: skip
    threads = max(1, (os.cpu_count() or 1) // workers)
    dataset = (
        ray.data.from_items(items, override_num_blocks=max(1, len(items)))
        .map(_read_stage, fn_kwargs={"settings": settings, "done": done, "read_one": read_one}, num_cpus=0.5)
        .map(_encoder_class(make_tokenizer, encode_one, threads), concurrency=workers, num_cpus=1)
    )
    return dataset.iter_rows()


def manifest_path(out: str | os.PathLike) -> Path:
    return Path(out) / MANIFEST
