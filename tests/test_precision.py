"""The autoencoder's precision: ``auto`` is bf16 where the hardware computes it natively and fp32 elsewhere; the
header records it; a file decodes in either precision; bad choices fail before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import needs_weights

from latok.errors import InvalidInputError
from latok.vae.precision import NO_BF16_ENV, cpu_has_bf16, resolve_precision

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
needs_bf16 = pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no AVX512-BF16 or AMX")


def _latok(*argv: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "latok.cli", *argv], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **env}, timeout=300)  # fmt: skip


def test_auto_is_bf16_where_the_cpu_has_it_and_fp32_where_detection_is_off(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert resolve_precision("auto", CPU) == resolve_precision(None, CPU) == "bf16"
    monkeypatch.setenv(NO_BF16_ENV, "1")
    assert not cpu_has_bf16()
    assert resolve_precision("auto", CPU) == "fp32" and resolve_precision("fp32", CPU) == "fp32"
    with pytest.raises(InvalidInputError, match="no AVX512-BF16 or AMX"):
        resolve_precision("bf16", CPU)
    with pytest.raises(InvalidInputError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", CPU)
    with pytest.raises(InvalidInputError, match="must be one of"):
        resolve_precision("int8", CPU)


@needs_weights
def test_auto_falls_back_to_fp32_on_a_cpu_without_bf16(monkeypatch):
    from latok import LatentTokenizer

    monkeypatch.setenv(NO_BF16_ENV, "1")
    tokenizer = LatentTokenizer("taef2")
    assert tokenizer.vae.precision == "fp32" and tokenizer.vae.encoder[0].weight.dtype == torch.float32


@needs_weights
@pytest.mark.parametrize(("precision", "env", "reason"), [("fp16", {}, "fp16 needs a CUDA device"),
                                                           ("bf16", {NO_BF16_ENV: "1"}, "no AVX512-BF16 or AMX"),
                                                           ("half", {}, "must be one of")])  # fmt: skip
def test_a_precision_this_hardware_lacks_is_one_line_and_exit_2_before_any_work(tmp_path, precision, env, reason):
    from latok.io import frames_to_video, write_video
    from latok.sample import sample_frames

    source = write_video(tmp_path / "in.mp4", frames_to_video(sample_frames(frames=3, height=64, width=96)))
    output = tmp_path / "out.latok"
    start = time.perf_counter()
    result = _latok("encode", str(source), "-o", str(output), "--precision", precision, **env)
    assert result.returncode == 2 and reason in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]
    assert "frame/s" not in result.stderr and time.perf_counter() - start < 60  # no encode ran


@needs_weights
@needs_bf16
def test_the_header_records_the_precision_and_a_file_decodes_in_either(tmp_path):
    from latok import LatentTokenizer
    from latok.evaluation.metrics import psnr
    from latok.io import frames_to_video
    from latok.sample import sample_frames

    video = frames_to_video(sample_frames(frames=5, height=64, width=96))
    tokenizers = {p: LatentTokenizer("taef2", precision=p) for p in ("fp32", "bf16")}
    decoded = {}
    for encoded, tokenizer in tokenizers.items():
        path = tokenizer.save(tokenizer.encode(video), tmp_path / f"{encoded}.latok")
        result = _latok("info", str(path))
        assert result.returncode == 0 and json.loads(result.stdout)["precision"] == encoded
        for decoding, other in tokenizers.items():
            decoded[encoded, decoding] = other.decode(other.load(path), fill="hold")
    assert tokenizers["bf16"].vae.encoder[0].weight.dtype == torch.bfloat16
    reference = psnr(decoded["fp32", "fp32"], video)
    for pair, frames in decoded.items():
        assert frames.dtype == torch.float32 and abs(psnr(frames, video) - reference) < 0.3, pair
    assert not torch.equal(decoded["bf16", "bf16"], decoded["fp32", "fp32"])  # bf16 really ran


@needs_weights
@needs_bf16
def test_bf16_files_are_deterministic_for_one_machine_and_thread_count(tmp_path):
    from latok import LatentTokenizer
    from latok.io import frames_to_video
    from latok.sample import sample_frames

    video = frames_to_video(sample_frames(frames=5, height=64, width=96))
    files = []
    for index in range(2):
        tokenizer = LatentTokenizer("taef2", precision="bf16")
        files.append(tokenizer.save(tokenizer.encode(video), tmp_path / f"{index}.latok").read_bytes())
    assert files[0] == files[1]


@needs_weights
def test_the_decoder_metric_refuses_bf16():
    from latok import load_vae

    if not cpu_has_bf16():
        pytest.skip("this CPU has no AVX512-BF16 or AMX")
    with pytest.raises(InvalidInputError, match="needs an fp32 autoencoder"):
        load_vae("taef2", precision="bf16").decoder_metric(torch.zeros(1, 32, 1, 2, 2))
