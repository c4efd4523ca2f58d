"""Outputs never destroy: no output replaces a file the command reads or something that is not a regular file,
a failed write (a full disk) is one line and leaves nothing, the same input writes the same bytes, and the
temporary files of a killed writer do not pile up.

Every CLI case checks the whole contract (``conftest.refused``): one ``latok: error:`` line, exit status 2,
no output and no temporary file, and every file under the work folder byte-for-byte as it was.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, needs_weights, refused, snapshot

from latok._fs import atomic_path, remove_leftovers
from latok.cli import main

SHIPPED = ROOT / "checkpoints" / "taef2-lit-xs"


@pytest.fixture
def checkpoint(work) -> Path:
    """A copy of the shipped inpainter inside the work folder, so the snapshot covers it."""
    folder = work / "ckpt"
    shutil.copytree(SHIPPED, folder)
    return folder


@pytest.mark.parametrize("target", ["ckpt/model.safetensors", "weights/lpips_vgg16.safetensors"])
def test_an_output_that_is_a_file_the_command_reads_is_refused(work, capsys, checkpoint, monkeypatch, target):
    weights = work / "weights"
    weights.mkdir()
    (weights / "lpips_vgg16.safetensors").write_bytes(b"stands for weights in LATOK_WEIGHTS_DIR: never to be replaced")
    monkeypatch.setenv("LATOK_WEIGHTS_DIR", str(weights))
    refused(["export", work / "clip.latok", "-o", work / target, "--fill", "lit", "--inpainter", checkpoint], capsys, work,
            r"is a file latok reads \(in .*\); refusing to overwrite it")  # fmt: skip


@pytest.mark.parametrize("command", ["encode", "decode", "roundtrip"])
def test_outputs_inside_the_inpainter_folder_are_refused_for_every_codec_command(work, capsys, checkpoint, command, monkeypatch):
    (checkpoint / "clip.mp4").write_bytes(b"an existing file in a folder latok reads")
    monkeypatch.setenv("LATOK_CHECKPOINTS_DIR", str(checkpoint))  # encode's lit guard reads the checkpoints folder
    argv = {
        "encode": ["encode", work / "in.mp4", "-o", checkpoint / "config.json"],
        "decode": ["decode", work / "clip.latok", "-o", checkpoint / "clip.mp4", "--inpainter", checkpoint],
        "roundtrip": ["roundtrip", work / "in.mp4", "-o", work / "r.mp4", "--json", checkpoint / "config.json", "--inpainter", checkpoint],
    }[command]
    refused(argv, capsys, work, r"is a file latok reads")


def test_the_shipped_checkpoints_are_protected_by_default(work, capsys):
    before = hashlib.sha256((SHIPPED / "model.safetensors").read_bytes()).hexdigest()
    refused(["export", work / "clip.latok", "-o", SHIPPED / "model.safetensors"], capsys, work, r"is a file latok reads")
    assert hashlib.sha256((SHIPPED / "model.safetensors").read_bytes()).hexdigest() == before


@pytest.mark.parametrize("kind", ["fifo", "link to /dev/null"])
@pytest.mark.parametrize("command", ["encode", "export"])
def test_an_output_that_is_not_a_regular_file_is_refused(work, capsys, kind, command):
    suffix = ".latok" if command == "encode" else ".safetensors"
    node = work / f"node{suffix}"
    if kind == "fifo":
        os.mkfifo(node)
    else:
        node.symlink_to("/dev/null")
    argv = ["encode", work / "in.mp4", "-o", node] if command == "encode" else ["export", work / "clip.latok", "-o", node]
    refused(argv, capsys, work, r"exists and is not a regular file")
    assert Path("/dev/null").is_char_device()


def test_atomic_path_never_renames_over_a_device(tmp_path):
    from latok.errors import OutputError

    node = tmp_path / "fifo"
    os.mkfifo(node)
    with pytest.raises(OutputError, match="not a regular file"), atomic_path(node) as tmp:
        tmp.write_bytes(b"x")
    assert node.is_fifo() and sorted(p.name for p in tmp_path.iterdir()) == ["fifo"]


def _limited(limit: int):
    """A child process whose files cannot grow past ``limit`` bytes: writes fail as on a full disk (EFBIG)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with an error instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _latok(argv: list, limit: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "latok.cli", *map(str, argv)], capture_output=True, text=True,
                          preexec_fn=_limited(limit), timeout=300, cwd=ROOT)  # fmt: skip


def test_a_full_disk_during_export_is_one_line_and_leaves_nothing(work):
    before = snapshot(work)
    result = _latok(["export", work / "clip.latok", "-o", work / "new" / "deeper" / "x.safetensors"], limit=4096)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("latok: error: "), result.stderr
    assert "cannot write (File too large)" in lines[0]
    assert snapshot(work) == before  # no file, no temporary file, and not the folders made for it


@needs_weights
def test_a_full_disk_during_encode_stream_is_one_line_and_leaves_nothing(work):
    before = snapshot(work)
    argv = ["encode", work / "in.mp4", "-o", work / "new" / "x.latok", "--stream", "--chunk", "1", "--height", "32", "--value-step", "0"]
    result = _latok(argv, limit=600)
    lines = [line for line in result.stderr.splitlines() if line.startswith("latok")]  # tqdm's bar shares stderr
    assert result.returncode == 2 and len(lines) == 1 and "x.latok: cannot write (File too large)" in lines[0], result.stderr
    assert snapshot(work) == before


def test_export_writes_the_same_bytes_every_time(work, capsys):
    digests = set()
    for run in range(3):
        out = work / f"e{run}.safetensors"
        assert main(["export", str(work / "clip.latok"), "-o", str(out)]) == 0
        digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
    assert len(digests) == 1


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "clip.latok"
    script = f"""
import os, time
from pathlib import Path
from latok._fs import atomic_path
with atomic_path(Path({str(target)!r})) as tmp:
    tmp.write_bytes(b"half a file")
    print("writing", flush=True)
    time.sleep(60)
"""
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "writing"
    child.send_signal(signal.SIGKILL)  # no cleanup can run
    child.wait()
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".clip.latok.")]
    assert len(leftovers) == 1 and not target.exists()
    alive = tmp_path / leftovers[0].name.replace(f"-{child.pid}-", f"-{os.getpid()}-")  # a live writer's file
    alive.write_bytes(b"still being written")
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, "clip.latok"])
    assert remove_leftovers(target) == []  # the live writer's file stays


def test_leftover_cleanup_spares_other_outputs_and_other_hosts(tmp_path):
    from latok._fs import _HOST

    dead = 2**22 + 12345  # above the default pid_max: no such process
    other_host = f"{(int(_HOST, 16) + 1) % 2**32:08x}"
    names = (f".other.latok.latok-{_HOST}-{dead}-x.tmp", f".clip.latok.latok-{other_host}-{dead}-x.tmp", "clip.latok.bak")
    for name in names:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / f".clip.latok.latok-{_HOST}-{dead}-x.tmp").write_bytes(b"")  # this one is a leftover
    with atomic_path(tmp_path / "clip.latok") as tmp:
        tmp.write_bytes(b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*names, "clip.latok"])  # another output's, another host's, a user's
