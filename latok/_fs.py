"""Atomic file output: nothing partial is ever left at a destination path."""

from __future__ import annotations

import abc
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; it replaces ``path`` only if the block succeeds."""
    from latok.errors import OutputError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise OutputError(f"{path}: cannot write ({error.strerror or error})") from None
    os.close(handle)
    tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp (or a writer that recreates the file) leaves 0600
        try:
            os.replace(tmp, path)
        except OSError as error:
            raise OutputError(f"{path}: cannot write ({error.strerror or error})") from None
    finally:
        if tmp.is_dir() and not tmp.is_symlink():  # a writer replaced the temp file by a folder
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


class AtomicWriter(abc.ABC):
    """Context-manager protocol of chunked writers: :meth:`close` on success, :meth:`abort` on error."""

    @abc.abstractmethod
    def close(self):
        """Finish the output and move it into place."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Drop everything written so far; idempotent."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _same_file(a: Path, b: Path) -> bool:
    """Do ``a`` and ``b`` name one file: the same real path, or the same inode (hard and symbolic links)?"""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def check_outputs(outputs: dict[str, str | os.PathLike | None], inputs: tuple[str | os.PathLike | None, ...] = ()) -> None:
    """Refuse, before any work, outputs a command could not write or must not write.

    ``outputs`` maps an option name (for the message) to a path; ``None`` entries are skipped.
    A path that ends in ``/`` or is an existing directory is refused unless the name is a folder
    output (its option name ends with ``"folder"``); its directory must exist or be creatable
    and accept a new file; no output may be one of ``inputs`` or another output.

    Raises:
        OutputError: one line naming the option, the path and the reason.
    """
    from latok.errors import OutputError

    named = [(name, Path(path)) for name, path in outputs.items() if path is not None]
    for index, (name, path) in enumerate(named):
        for source in (Path(p) for p in inputs if p is not None):
            if _same_file(path, source):
                raise OutputError(f"{name} {path} is the input {source}; refusing to overwrite it")
        for other_name, other in named[:index]:
            if _same_file(path, other):
                raise OutputError(f"{name} {path} is also {other_name}; give each output its own path")
        if path.is_dir() and not name.endswith("folder"):
            raise OutputError(f"{name} {path}: is a directory")
        _check_writable(name, path.parent)


def _check_writable(name: str, directory: Path) -> None:
    from latok.errors import OutputError

    existing = directory
    while not existing.exists():  # the nearest ancestor that exists must take the new directories
        if existing.is_symlink() or existing.parent == existing:
            raise OutputError(f"{name}: cannot create {directory}")
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{name}: {existing} is not a directory")
    try:
        handle, probe = tempfile.mkstemp(prefix=".latok-probe.", dir=existing)
    except OSError as error:
        raise OutputError(f"{name}: cannot write in {existing} ({error.strerror})") from None
    os.close(handle)
    os.unlink(probe)


@contextmanager
def staged_outputs(*paths: Path) -> Iterator[list[Path]]:
    """Temp paths (same suffix) beside each of ``paths``; all move into place when the block succeeds, none otherwise.

    For commands with several outputs: a failure anywhere leaves none of them.  A folder
    output (no suffix) replaces an empty directory of its name.
    """
    temps = []
    try:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            stem = path.stem if path.suffix else path.name
            temps.append(path.parent / f".{stem}-{os.urandom(4).hex()}-staged{path.suffix}")
        yield temps
        for tmp, path in zip(temps, paths):
            if tmp.is_dir():
                if path.is_dir():
                    path.rmdir()  # an empty folder only; VideoWriter refuses any other
                tmp.rename(path)
            elif tmp.exists():
                os.replace(tmp, path)
    finally:
        for tmp in temps:
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
