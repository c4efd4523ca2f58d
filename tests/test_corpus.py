"""`latok corpus encode` on local Ray over six small clips (one corrupt), and `CorpusDataset` reading them back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch
from conftest import needs_weights

pytest.importorskip("ray", reason="the corpus extra (latok[corpus]) is part of the test extra")

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--height", "64", "--frames", "9"]


def _latok(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LATOK_WEIGHTS_DIR": os.environ.get("LATOK_WEIGHTS_DIR", str(ROOT.parent / "shared" / "weights"))}
    return subprocess.run([sys.executable, "-m", "latok.cli", *argv], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


def _write_clips(paths: list[Path], height: int, frames: int, seed: int) -> None:
    """A still random texture per clip whose rectangle (placed by the clip's index) changes half way: some tokens kept."""
    from latok.io import write_video

    generator = torch.Generator().manual_seed(seed)
    for index, path in enumerate(paths):
        video = (torch.rand(1, 3, 1, height, height * 3 // 2, generator=generator) * 2 - 1).repeat(1, 1, frames, 1, 1)
        top, size = height // 8, height // 2
        video[:, :, frames // 2 :, top : top + size, top + 8 * index : top + size + 8 * index] *= -0.5
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, video, fps=24)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from PIL import Image

    sources = tmp_path_factory.mktemp("sources")
    _write_clips([sources / "nested" / f"clip{i}.mp4" if i % 2 else sources / f"clip{i}.mp4" for i in range(4)], 64, 9, seed=3)
    generator = torch.Generator().manual_seed(3)
    frames = sources / "frames"
    frames.mkdir()
    for t in range(9):
        Image.fromarray((torch.rand(64, 96, 3, generator=generator) * 255).byte().numpy()).save(frames / f"{t:05d}.jpg")
    (sources / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    _write_clips([sources / "packed" / f"robot{i}.mp4" for i in range(2)], 64, 9, seed=5)  # two clips inside a webdataset shard
    with tarfile.open(sources / "videos.tar", "w") as tar:
        (sources / "packed" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
        for path in sorted((sources / "packed").iterdir()):
            tar.add(path, arcname=f"episode/{path.name}")
            path.unlink()
    (sources / "packed").rmdir()
    out = tmp_path_factory.mktemp("corpus") / "c"
    start = time.perf_counter()
    first = _latok("corpus", "encode", str(sources), "--out", str(out), "--workers", "2", "--shard-clips", "3", "--no-progress", *ARGS)
    return {"sources": sources, "out": out, "first": first, "seconds": time.perf_counter() - start}


@needs_weights
def test_manifest_rows_statuses_and_one_line_errors(corpus):
    from latok.corpus.manifest import COLUMNS, read_manifest

    first = corpus["first"]
    assert first.returncode == 1, first.stderr  # one clip failed
    assert first.stdout.strip().splitlines()[-1].startswith("7 ok, 2 failed, 0 already done")
    rows = read_manifest(corpus["out"])
    assert len(rows) == 9 and set(rows[0]) >= set(COLUMNS)
    failed = sorted((r for r in rows if r["status"] == "error"), key=lambda r: r["source"])
    assert failed[0]["source"].endswith("/corrupt.mp4") and failed[1]["source"].endswith("/videos.tar#episode/broken.mp4")
    for row in failed:  # one line naming the source itself (a tar member by its shard and name, not a temporary copy)
        assert "\n" not in row["error"] and row["source"] in row["error"] and row["shard"] is None, row["error"]
    for row in (r for r in rows if r["status"] == "ok"):
        assert row["frames"] == 9 and row["height"] == 64 and 0 < row["token_usage"] <= 1 and row["bytes"] > 0
        assert len(row["source_sha256"]) == 64 and row["shard"].startswith("shard-")
    shards = sorted(p.name for p in (corpus["out"] / "shards").iterdir())
    assert shards == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]  # 3 clips per shard, no temp file left
    assert sorted(r["source"].rsplit("#", 1)[-1] for r in rows if "#" in r["source"] and r["status"] == "ok") == ["episode/robot0.mp4", "episode/robot1.mp4"]


@needs_weights
def test_every_member_is_what_latok_encode_writes(corpus, tmp_path):
    from latok.cli import main
    from latok.corpus.manifest import read_manifest

    for row in (r for r in read_manifest(corpus["out"]) if r["status"] == "ok"):
        with tarfile.open(corpus["out"] / "shards" / row["shard"]) as tar:
            member = tar.extractfile(f"{row['key']}.latok").read()
            meta = json.loads(tar.extractfile(f"{row['key']}.json").read())
        source = row["source"]
        if "#" in source:  # a member of a webdataset shard: encode it alone, from a file of its bytes
            shard, name = source.rsplit("#", 1)
            with tarfile.open(shard) as tar:
                source = str(tmp_path / Path(name).name)
                Path(source).write_bytes(tar.extractfile(name).read())
        alone = tmp_path / f"{row['key']}.latok"
        assert main(["encode", source, "-o", str(alone), *ARGS]) == 0
        assert member == alone.read_bytes(), row["source"]
        assert meta["token_usage"] == row["token_usage"] and meta["source"] == row["source"]


@needs_weights
def test_a_rerun_is_a_no_op(corpus):
    from latok.corpus.manifest import read_manifest

    before = read_manifest(corpus["out"])
    start = time.perf_counter()
    again = _latok("corpus", "encode", str(corpus["sources"]), "--out", str(corpus["out"]), "--workers", "2", "--shard-clips", "3", "--no-progress", *ARGS)
    seconds = time.perf_counter() - start
    assert again.returncode == 1 and again.stdout.strip().startswith("0 ok, 0 failed, 9 already done (2 failed before")
    assert read_manifest(corpus["out"]) == before
    assert seconds < 0.5 * corpus["seconds"], (seconds, corpus["seconds"])


@needs_weights
def test_the_dataset_yields_each_clip_once_across_two_ranks_and_two_workers(corpus):
    from torch.utils.data import DataLoader

    from latok.corpus import CorpusDataset

    keys = []
    for rank in range(2):
        dataset = CorpusDataset(corpus["out"], output="adaptive", rank=rank, world_size=2)
        keys += [item["key"] for item in DataLoader(dataset, batch_size=None, num_workers=2)]
    assert len(keys) == 7 and len(set(keys)) == 7
    dense = next(iter(CorpusDataset(corpus["out"], output="dense")))
    assert dense["latent"].shape == (32, 9, 8, 12) and dense["latent"].dtype == torch.float32


@needs_weights
def test_where_filters_and_packed_batches(corpus):
    from latok import collate_packed
    from latok.corpus import CorpusDataset
    from latok.corpus.manifest import read_manifest
    from latok.errors import InvalidInputError

    rows = [r for r in read_manifest(corpus["out"]) if r["status"] == "ok"]
    cut = sorted({r["token_usage"] for r in rows})[1]  # clips may share a usage: cut above the smallest
    kept = CorpusDataset(corpus["out"], output="packed", where=f"token_usage < {cut}")
    assert {r["key"] for r in kept.rows} == {r["key"] for r in rows if r["token_usage"] < cut}
    batch = collate_packed([item["tokens"] for item in kept])
    assert batch.values.shape[0] == sum(r["tokens"] for r in rows if r["token_usage"] < cut) and len(batch.cu_seqlens) == len(kept) + 1
    with pytest.raises(InvalidInputError, match="not a valid condition"):
        CorpusDataset(corpus["out"], where="token_usage <<< 1")


@needs_weights
def test_the_readme_snippet_trains_on_a_corpus(corpus):
    import re

    snippet = next(b for b in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S) if "CorpusDataset" in b)
    namespace = {}
    exec(snippet.replace('"corpora/pool"', repr(str(corpus["out"]))).replace("token_usage < 0.5", "token_usage <= 1"), namespace)
    assert namespace["latent"].ndim == 4 and namespace["latent"].shape[0] == 32


def test_bad_corpus_command_lines_are_one_line_and_exit_2(tmp_path):
    (tmp_path / "file").write_text("x")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "manifest.parquet").write_bytes(b"PAR1 not really")
    cases = [
        (["corpus", "encode", str(tmp_path / "missing"), "--out", str(tmp_path / "o")], "no such file or folder"),
        (["corpus", "encode", str(tmp_path / "file"), "--out", str(tmp_path / "file")], "is a file, not a folder"),
        (["corpus", "info", str(damaged)], "not a readable manifest"),
        (["corpus", "info", str(tmp_path)], "not a latok corpus"),
    ]
    for argv, message in cases:
        result = _latok(*argv)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], (argv, result.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged", "file"]  # nothing half-written


def test_only_the_engine_imports_ray():
    import ast

    importers = set()
    for path in (ROOT / "latok").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "ray" or n.startswith("ray.") for n in names):
                importers.add(path.relative_to(ROOT).as_posix())
    assert importers == {"latok/corpus/engine.py"}


def test_sources_expand_folders_lists_and_shards(tmp_path, monkeypatch):
    from latok.corpus.sources import expand_sources

    (tmp_path / "videos" / "deep").mkdir(parents=True)
    for name in ("videos/a.mp4", "videos/deep/a.mp4", "videos/notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "videos" / "frames").mkdir()
    (tmp_path / "videos" / "frames" / "00000.jpg").write_bytes(b"x")
    found = expand_sources([str(tmp_path / "videos")])
    assert sorted(Path(s.path).relative_to(tmp_path).as_posix() for s in found) == ["videos/a.mp4", "videos/deep/a.mp4", "videos/frames"]
    assert len({s.key for s in found}) == 3 and all("." not in s.key for s in found)  # two a.mp4 stay apart; webdataset-safe
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "here.txt").write_text("../videos/a.mp4\n")  # relative to the list
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cwd.txt").write_text("videos/deep/a.mp4\n")
    (lists / "cwd.txt").write_text("videos/deep/a.mp4\n")  # not beside the list: relative to the working folder
    assert [Path(s.path) for s in expand_sources([str(lists / "here.txt"), str(lists / "cwd.txt")])] == [
        tmp_path / "videos" / "a.mp4", tmp_path / "videos" / "deep" / "a.mp4"]
    import tarfile

    with tarfile.open(tmp_path / "shard.tar", "w") as tar:
        tar.add(tmp_path / "videos" / "a.mp4", arcname="k1.mp4")
        tar.add(tmp_path / "videos" / "notes.txt", arcname="k1.txt")
    assert [s.member for s in expand_sources([str(tmp_path / "shard.tar")])] == ["k1.mp4"]


@pytest.fixture(scope="module")
def longer_clips(tmp_path_factory):
    """Eight clips that take a few seconds each to encode: long enough to kill something mid-job."""

    folder = tmp_path_factory.mktemp("longer")
    _write_clips([folder / f"clip{i}.mp4" for i in range(8)], 128, 17, seed=5)
    return folder


def _exactly_once(out: Path, expected: int) -> None:
    """Every clip has one ``ok`` row, and the shard each row names holds its member once; no shard holds a clip twice."""
    import collections

    from latok.corpus.manifest import read_manifest

    rows = read_manifest(out)
    assert len(rows) == expected and {r["status"] for r in rows} == {"ok"} and len({r["key"] for r in rows}) == expected
    members = collections.Counter()
    for shard in (out / "shards").iterdir():
        with tarfile.open(shard) as tar:
            names = [n for n in tar.getnames() if n.endswith(".latok")]
        members.update(names)
        assert all(any(r["key"] + ".latok" == n and r["shard"] == shard.name for r in rows) for n in names)
    assert set(members) == {r["key"] + ".latok" for r in rows} and max(members.values()) == 1


def _encode_longer(folder: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "LATOK_WEIGHTS_DIR": os.environ.get("LATOK_WEIGHTS_DIR", str(ROOT.parent / "shared" / "weights"))}
    argv = [sys.executable, "-m", "latok.cli", "corpus", "encode", str(folder), "--out", str(out), "--height", "128",
            "--workers", "2", "--shard-clips", "2", "--no-progress"]  # fmt: skip
    return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


@needs_weights
def test_sigkill_of_a_worker_mid_job_leaves_every_clip_exactly_once(longer_clips, tmp_path):
    import signal

    process = _encode_longer(longer_clips, tmp_path / "c")
    deadline, worker = time.monotonic() + 120, None
    while worker is None and time.monotonic() < deadline and process.poll() is None:
        found = subprocess.run(["pgrep", "-f", "ray::MapWorker"], capture_output=True, text=True).stdout.split()
        worker = int(found[0]) if found else None
        time.sleep(0.2)
    assert worker is not None, "no encoding worker started"
    time.sleep(3)  # the worker has its tokenizer and is encoding
    os.kill(worker, signal.SIGKILL)
    out, err = process.communicate(timeout=600)
    if process.returncode != 0:  # Ray could not retry: a rerun finishes the job
        rerun = _encode_longer(longer_clips, tmp_path / "c")
        out, err = rerun.communicate(timeout=600)
        assert rerun.returncode == 0, err
    _exactly_once(tmp_path / "c", 8)


@needs_weights
def test_sigkill_of_the_driver_then_a_rerun_leaves_every_clip_exactly_once(longer_clips, tmp_path):
    import signal

    process = _encode_longer(longer_clips, tmp_path / "c")
    deadline = time.monotonic() + 300
    while not (tmp_path / "c" / "manifest.parquet").exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)  # the first shard and manifest are in place; the next shard is being written
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    rerun = _encode_longer(longer_clips, tmp_path / "c")
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0 and "already done" in out, err
    _exactly_once(tmp_path / "c", 8)


@pytest.mark.slow
@needs_weights
def test_joining_a_running_cluster(longer_clips, tmp_path):
    """`ray start --head` on this machine, then `--address auto`: the job runs on that cluster, which outlives it."""
    ray = str(Path(sys.executable).parent / "ray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([ray, "start", "--head", "--num-cpus", "3", "--include-dashboard", "false"], env=env, check=True, capture_output=True, timeout=120)
    try:
        result = _latok("corpus", "encode", str(longer_clips), "--out", str(tmp_path / "c"), "--height", "128", "--workers", "2",
                        "--address", "auto", "--no-progress")  # fmt: skip
        assert result.returncode == 0 and result.stdout.startswith("8 ok, 0 failed"), result.stderr
        alive = subprocess.run(["pgrep", "-f", "gcs_server"], capture_output=True, text=True).stdout.split()
        assert alive  # the cluster is still up: latok joined it and did not shut it down
        _exactly_once(tmp_path / "c", 8)
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)
