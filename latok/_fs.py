"""Atomic file output: nothing partial is ever left at a destination path, and nothing a command reads is replaced.

Temporary files sit beside their destination, named ``.NAME.latok-HOST-PID-XXXX.tmp``.  SIGKILL
cannot be caught, so a killed process leaves its temporary file behind; the next write to the same
destination removes such leftovers of processes of this host that no longer run.
"""

from __future__ import annotations

import abc
import os
import re
import shutil
import socket
import stat
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"  # PIDs mean something only on their own host


def _temp_prefix(name: str, pid: int | None = None) -> str:
    return f".{name}.latok-{_HOST}-{os.getpid() if pid is None else pid}-"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_leftovers(path: Path) -> list[Path]:
    """Remove the temporary files a killed latok process left beside ``path`` (this host's, dead PIDs only)."""
    pattern = re.compile(re.escape(f".{path.name}.latok-{_HOST}-") + r"(\d+)-[^/]*$")
    removed = []
    try:
        candidates = list(path.parent.iterdir())
    except OSError:
        return removed
    for candidate in candidates:
        match = pattern.match(candidate.name)
        if match and int(match.group(1)) != os.getpid() and not _running(int(match.group(1))):
            _remove(candidate)
            removed.append(candidate)
    return removed


def _make_parents(directory: Path) -> list[Path]:
    """Create ``directory`` and its missing parents; return the ones created, deepest first."""
    created = []
    missing = directory
    while not missing.exists() and missing.parent != missing:
        created.append(missing)
        missing = missing.parent
    directory.mkdir(parents=True, exist_ok=True)
    return created


def _remove_created(created: list[Path]) -> None:
    for directory in created:  # deepest first; only if still empty
        try:
            directory.rmdir()
        except OSError:
            break


def _check_regular(name: str, path: Path) -> None:
    """An existing output must be a regular file (or a folder, for folder outputs): never a device, pipe or socket."""
    from latok.errors import OutputError

    try:
        mode = os.stat(path).st_mode
    except OSError:  # absent, or a dangling link: a new file is made
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise OutputError(f"{name} {path}: exists and is not a regular file (a device, pipe or socket); latok replaces only regular files")


def os_error_message(path: Path, error: BaseException) -> str:
    """``path: cannot write (reason)`` for an OS-level failure, Rust writers' errors included."""
    reason = getattr(error, "strerror", None)
    if not reason:
        text = str(error)
        code = re.search(r"os error (\d+)", text)  # Rust's io::Error, e.g. safetensors' "... (os error 28)"
        reason = os.strerror(int(code.group(1))) if code else (text.splitlines()[0][:160] if text else type(error).__name__)
    return f"{path}: cannot write ({reason})"


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; it replaces ``path`` only if the block succeeds.

    The block's ``OSError`` (a full disk, say) becomes one :class:`~latok.errors.OutputError`; on any
    failure the temp file and the folders this call created are removed.
    """
    from latok.errors import OutputError

    path = Path(path)
    _check_regular("output", path)
    try:
        created = _make_parents(path.parent)
    except OSError as error:
        raise OutputError(f"{path}: cannot write ({error.strerror or error})") from None
    remove_leftovers(path)
    try:
        handle, name = tempfile.mkstemp(prefix=_temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    except OSError as error:
        _remove_created(created)
        raise OutputError(f"{path}: cannot write ({error.strerror or error})") from None
    os.close(handle)
    tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    done = False
    try:
        try:
            yield tmp
        except OSError as error:
            raise OutputError(os_error_message(path, error)) from None
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp (or a writer that recreates the file) leaves 0600
        _check_regular("output", path)  # again: something may have appeared there while we wrote
        try:
            os.replace(tmp, path)
        except OSError as error:
            raise OutputError(f"{path}: cannot write ({error.strerror or error})") from None
        done = True
    finally:
        _remove(tmp)
        if not done:
            _remove_created(created)


class OutputFile:
    """A binary file being written to ``destination`` (through a temp path) whose OS failures (a full disk) are
    one :class:`~latok.errors.OutputError` naming the destination, not an ``OSError`` naming the temp file."""

    def __init__(self, tmp: Path, destination: Path):
        self.destination = destination
        self._file = self._guarded(open, tmp, "wb")

    def _guarded(self, call, *args):
        from latok.errors import OutputError

        try:
            return call(*args)
        except OSError as error:
            raise OutputError(os_error_message(self.destination, error)) from None

    def write(self, data: bytes) -> int:
        return self._guarded(self._file.write, data)

    def seek(self, offset: int) -> int:
        return self._guarded(self._file.seek, offset)

    def close(self) -> None:
        if not self._file.closed:
            self._guarded(self._file.close)


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


def _inside(path: Path, folder: Path) -> bool:
    """Is ``path`` an existing file somewhere under the existing folder ``folder`` (links resolved)?"""
    if not folder.is_dir() or not path.exists():
        return False
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))


def check_outputs(outputs: dict[str, str | os.PathLike | None], inputs: tuple[str | os.PathLike | None, ...] = ()) -> None:
    """Refuse, before any work, outputs a command could not write or must not write.

    ``outputs`` maps an option name (for the message) to a path; ``None`` entries are skipped.
    ``inputs`` are every path the command reads: files, and folders (an inpainter checkpoint, a
    weights folder) whose files it may read.  An output may not be an input file or an existing
    file inside an input folder, nor repeat another output.  An existing output must be a regular
    file: a device, pipe or socket is refused, never replaced.  A path that ends in ``/`` or is an
    existing directory is refused unless the name is a folder output (its option name ends with
    ``"folder"``); its directory must exist or be creatable and accept a new file.

    Raises:
        OutputError: one line naming the option, the path and the reason.
    """
    from latok.errors import OutputError

    named = [(name, Path(path)) for name, path in outputs.items() if path is not None]
    sources = [Path(p).expanduser() for p in inputs if p is not None]
    for index, (name, path) in enumerate(named):
        for source in sources:
            if _same_file(path, source):
                raise OutputError(f"{name} {path} is the input {source}; refusing to overwrite it")
            if _inside(path, source):
                raise OutputError(f"{name} {path} is a file latok reads (in {source}); refusing to overwrite it")
        for other_name, other in named[:index]:
            if _same_file(path, other):
                raise OutputError(f"{name} {path} is also {other_name}; give each output its own path")
        if path.is_dir() and not name.endswith("folder"):
            raise OutputError(f"{name} {path}: is a directory")
        _check_regular(name, path)
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

    For commands with several outputs: a failure anywhere leaves none of them, nor the folders
    created for them.  A folder output (no suffix) replaces an empty directory of its name.
    """
    from latok.errors import OutputError

    temps, created = [], []
    done = False
    try:
        for path in paths:
            _check_regular("output", path)
            try:
                created += _make_parents(path.parent)
            except OSError as error:
                raise OutputError(f"{path}: cannot write ({error.strerror or error})") from None
            remove_leftovers(path)
            temps.append(path.parent / f"{_temp_prefix(path.name)}{os.urandom(4).hex()}-staged{path.suffix}")
        try:
            yield temps
        except OSError as error:
            where = next((p for t, p in zip(temps, paths) if error.filename and Path(error.filename) == t), paths[0])
            raise OutputError(os_error_message(where, error)) from None
        for tmp, path in zip(temps, paths):
            _check_regular("output", path)
            if tmp.is_dir():
                if path.is_dir():
                    path.rmdir()  # an empty folder only; VideoWriter refuses any other
                tmp.rename(path)
            elif tmp.exists():
                os.replace(tmp, path)
        done = True
    finally:
        for tmp in temps:
            _remove(tmp)
        if not done:
            _remove_created(sorted(set(created), key=lambda p: len(p.parts), reverse=True))


def write_safetensors(tensors: dict, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` (name -> torch tensor) with string ``metadata`` to ``path`` atomically and
    deterministically: the same input gives the same bytes on every run.

    ``safetensors`` serialises metadata from a hash map, so its key order varies from run to run; the
    header is rewritten in place with the metadata keys sorted (same length: same entries).  A full disk
    or any other write failure is one :class:`~latok.errors.OutputError`.
    """
    import json
    import struct

    from safetensors import SafetensorError
    from safetensors.torch import save_file

    from latok.errors import OutputError

    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except SafetensorError as error:
            raise OutputError(os_error_message(path, error)) from None
        with open(tmp, "r+b") as file:
            (length,) = struct.unpack("<Q", file.read(8))
            header = json.loads(file.read(length))
            if "__metadata__" in header:
                header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
            text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
            assert len(text) <= length, "the sorted header is as long as safetensors' own"
            file.seek(8)
            file.write(text.ljust(length))
