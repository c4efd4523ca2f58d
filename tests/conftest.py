"""Shared fixtures: paths to ../shared, real TAEF2 weights, tiny random diffusers VAEs."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LATOK_SHARED_DIR", ROOT.parent / "shared"))
DATA = SHARED / "data"
WEIGHTS = Path(os.environ.get("LATOK_WEIGHTS_DIR", SHARED / "weights")).resolve()
BLACKSWAN = DATA / "davis" / "JPEGImages" / "480p" / "blackswan"

# Tests never download: weights come from ../shared/weights (or LATOK_WEIGHTS_DIR).
os.environ["LATOK_WEIGHTS_DIR"] = str(WEIGHTS)  # absolute, so tests may chdir
os.environ["LATOK_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

needs_weights = pytest.mark.skipif(
    not (WEIGHTS / "taef2_encoder.pth").is_file(), reason=f"TAEF2 weights not found in {WEIGHTS}"
)
needs_data = pytest.mark.skipif(not BLACKSWAN.is_dir(), reason=f"shared DAVIS data not found at {BLACKSWAN}")


@pytest.fixture(scope="session")
def taef2():
    if not (WEIGHTS / "taef2_encoder.pth").is_file():
        pytest.skip(f"TAEF2 weights not found in {WEIGHTS}")
    from latok import load_vae

    return load_vae("taef2")


def tiny_diffusers_model(name: str):
    """A tiny random-initialised diffusers model for backend ``name`` (as diffusers' own tests build them)."""
    import diffusers
    import torch

    torch.manual_seed(0)
    blocks = (8, 8, 8, 8)
    configs = {
        "wan2.1": ("AutoencoderKLWan", dict(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1)),
        "cosmos-cv8x8x8": ("AutoencoderKLCosmos", dict(
            encoder_block_out_channels=blocks, decode_block_out_channels=blocks, attention_resolutions=(8,),
            resolution=64, num_layers=1)),
        "cogvideox": ("AutoencoderKLCogVideoX", dict(block_out_channels=blocks, layers_per_block=1, norm_num_groups=2)),
        "hunyuanvideo": ("AutoencoderKLHunyuanVideo", dict(
            block_out_channels=blocks, layers_per_block=1, norm_num_groups=2)),
        "ltx-video": ("AutoencoderKLLTXVideo", dict(
            block_out_channels=blocks, decoder_block_out_channels=blocks, latent_channels=8,
            layers_per_block=(1,) * 5, decoder_layers_per_block=(1,) * 5)),
    }  # fmt: skip
    class_name, config = configs[name]
    return getattr(diffusers, class_name)(**config)


DIFFUSERS_BACKENDS = ["wan2.1", "cosmos-cv8x8x8", "cogvideox", "hunyuanvideo", "ltx-video"]


# -- the CLI contract on hostile inputs: one line, exit 2, nothing written, nothing changed ----------


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (hidden ones too) with its content digest, links as their target."""
    entries = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            entries[key] = "-> " + os.readlink(path)
        elif path.is_file():
            entries[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            entries[key] = "dir"
    return entries


def refused(argv: list[str], capsys, root: Path, match: str) -> str:
    """Run ``latok argv``; assert exactly one ``latok: error:`` line matching ``match``, exit 2, and ``root`` unchanged."""
    from latok.cli import main

    before = snapshot(root)
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("latok: error: "), err
    assert re.search(match, lines[0]), lines[0]
    assert snapshot(root) == before  # no output, no temporary file, inputs untouched
    return lines[0]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    """A folder with a short mp4 and a valid .latok (no weights needed to make either)."""
    import torch

    from latok.codec.format.writer import save_latok
    from latok.codec.tokens import AdaptiveLatent, SourceInfo
    from latok.io import write_video

    root = tmp_path_factory.mktemp("clip")
    frames = np.random.default_rng(0).integers(0, 256, (3, 32, 48, 3), dtype=np.uint8)
    write_video(root / "in.mp4", frames, fps=24)
    latent = torch.randn(1, 32, 3, 4, 6)
    keep = torch.ones(1, 3, 4, 6, dtype=torch.bool)
    from latok.codec.tokens import backend_config_hash
    from latok.vae import vae_class

    config = backend_config_hash(vae_class("taef2"))
    adaptive = AdaptiveLatent.from_dense(latent, keep, backend="taef2", backend_config=config, tau=0.15, source=SourceInfo(3, 32, 48))
    save_latok(adaptive, root / "clip.latok")
    return root


@pytest.fixture
def work(tmp_path, clip_dir) -> Path:
    for name in ("in.mp4", "clip.latok"):
        (tmp_path / name).write_bytes((clip_dir / name).read_bytes())
    return tmp_path


def tar_file(path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def forge(data: bytes, header_text: str | None = None, flags: int | None = None) -> bytes:
    """``data`` with its HEAD JSON replaced by ``header_text`` (CRC recomputed) or its reserved flags set."""
    if flags is not None:
        return data[:10] + struct.pack("<H", flags) + data[12:]
    _, length = struct.unpack_from("<4sI", data, 12)
    payload = header_text.encode()
    head = struct.pack("<4sI", b"HEAD", len(payload))
    return data[:12] + head + payload + struct.pack("<I", zlib.crc32(head + payload)) + data[20 + length + 4 :]


def header_of_file(data: bytes) -> dict:
    _, length = struct.unpack_from("<4sI", data, 12)
    return json.loads(data[20 : 20 + length])


def edit_header(header: dict, path: str, value) -> str:
    """The header as JSON with ``path`` ("tau", "source.fps", "shape.2") set to ``value`` (raw JSON if a
    ``str`` starting with ``=``) or removed (``value`` is ``...``)."""
    header = json.loads(json.dumps(header))
    *parents, key = path.split(".")
    target = header
    for part in parents:
        target = target[part]
    key = int(key) if isinstance(target, list) else key
    if value is ...:
        del target[key]
        return json.dumps(header)
    target[key] = "@@RAW@@"
    text = value[1:] if isinstance(value, str) and value.startswith("=") else json.dumps(value)
    return json.dumps(header).replace('"@@RAW@@"', text)


# -- crafted files and fuzzing, each run in a process whose peak memory is measured -----------------

FUZZER = ROOT / "tests" / "fuzz_latok.py"
PEAK_BYTES = 300 << 20


def run_measured(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[dict, int]:
    """Run the fuzzer script in its own process; return its JSON output and its peak RSS in bytes.

    The process reports its own VmHWM: ``ru_maxrss`` of a child would also count the pages it
    shared with this (large) pytest process between fork and exec."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    result = subprocess.run([sys.executable, str(FUZZER), *args], env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout + result.stderr
    output = json.loads(result.stdout)
    return output, output.pop("peak_rss_bytes")
