"""Atomic file output: nothing partial is ever left at a destination path."""

from __future__ import annotations

import abc
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; it replaces ``path`` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp (or a writer that recreates the file) leaves 0600
        os.replace(tmp, path)
    finally:
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
