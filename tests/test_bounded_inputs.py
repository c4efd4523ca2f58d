"""Untrusted inputs cost what they declare, and each failure is one line: headers checked against their
backend, crafted files against real ones, inpainter checkpoints against one schema, training shards before
anything is allocated, weights never fetched when offline, and value codes within the bound the reader keeps.
"""

from __future__ import annotations

import json
import shutil
import socket
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    BLACKSWAN,
    ROOT,
    edit_header,
    forge,
    header_of_file,
    needs_data,
    needs_weights,
    npy_bytes,
    refused,
    run_measured,
    tar_file,
)

from latok.cli import main
from latok.errors import InvalidInputError, ShardFormatError

SHIPPED = ROOT / "checkpoints" / "taef2-lit-xs"


# -- the header's geometry -------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 33, 4096])
def test_a_taef2_file_must_have_taef2s_channels(work, capsys, channels):
    data = (work / "clip.latok").read_bytes()
    header = header_of_file(data)
    (work / "bad.latok").write_bytes(forge(data, edit_header(header, "shape", [1, channels, *header["shape"][2:]])))
    for command in (["info", work / "bad.latok"], ["export", work / "bad.latok", "-o", work / "o.safetensors"]):
        refused(command, capsys, work, r"latent shape \[\d+, .*is not what taef2 makes")


# -- info reads structure, in time proportional to the file ----------------------------------------


def test_info_verify_decodes_what_plain_info_only_counts(work, capsys):
    assert main(["info", str(work / "clip.latok"), "--verify"]) == 0
    verified = json.loads(capsys.readouterr().out)
    assert main(["info", str(work / "clip.latok")]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert verified.pop("verified") is True and verified == plain


# -- a crafted file costs no more than a real file of the same declared size ------------------------


@needs_weights
@needs_data
def test_a_crafted_file_costs_no_more_than_a_real_file_of_its_declared_size(tmp_path):
    """The same header geometry, once encoded from real frames and once crafted (every value a zero residual, a
    few hundred bytes): decode and export of the crafted one peak no higher than those of the real one."""
    real, crafted = tmp_path / "real.latok", tmp_path / "crafted.latok"
    assert main(["encode", str(BLACKSWAN), "-o", str(real), "--frames", "9", "--height", "64"]) == 0
    run_measured(tmp_path, "twin", str(real), str(crafted))
    peaks = {}
    for name in ("real", "crafted"):
        for command, output in (("decode", "o.mp4"), ("export", "o.safetensors")):
            result, peaks[name, command] = run_measured(tmp_path, "latok", command, str(tmp_path / f"{name}.latok"), "-o", str(tmp_path / f"{name}-{output}"))
            assert result["exit"] == 0, result
    assert crafted.stat().st_size * 10 < real.stat().st_size
    for command in ("decode", "export"):
        assert peaks["crafted", command] <= peaks["real", command] + (8 << 20), peaks


# -- inpainter checkpoints: one schema, checked before anything is built ---------------------------


BAD_CONFIGS = [
    ("heads", 0), ("mlp_ratio", 1e308), ("causal", "yes"), ("patch_size", -2), ("depth", 1e9), ("depth", 10**9),
    ("width", 4096), ("rope_base", float("nan")), ("latent_channels", True), ("unknown_key", 1),
]


def _bad_checkpoint(folder: Path, key: str, value) -> None:
    shutil.copytree(SHIPPED, folder)
    config = json.loads((folder / "config.json").read_text())
    config[key] = value
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("key, value", BAD_CONFIGS, ids=[f"{k}={str(v)[:8]}" for k, v in BAD_CONFIGS])
def test_a_bad_inpainter_config_is_one_error_before_anything_is_built(work, capsys, key, value):
    _bad_checkpoint(work / "bad", key, value)
    start = time.perf_counter()
    refused(["export", work / "clip.latok", "-o", work / "o.safetensors", "--fill", "lit", "--inpainter", work / "bad"], capsys, work,
            r"bad: unreadable inpainter checkpoint \((inpainter config|config.json|.*unexpected keyword|.*parameters)")  # fmt: skip
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize("damage", ["float16", "int8", "bool", "nan", "inf"])
def test_inpainter_weights_must_be_finite_float32(work, capsys, damage):
    from safetensors.torch import load_file, save_file

    folder = work / "bad"
    shutil.copytree(SHIPPED, folder)
    state = load_file(str(folder / "model.safetensors"))
    name = sorted(state)[0]
    if damage in ("nan", "inf"):
        state[name] = state[name].clone()
        state[name].view(-1)[0] = float(damage)
        match = "holds NaN or infinite values"
    else:
        state[name] = state[name].to(getattr(torch, damage))
        match = f"is {damage}; inpainter checkpoints hold float32"
    save_file(state, str(folder / "model.safetensors"))
    refused(["export", work / "clip.latok", "-o", work / "o.safetensors", "--fill", "lit", "--inpainter", folder], capsys, work, match)


def test_weights_of_the_wrong_shape_are_refused_before_the_model_is_built(work, capsys):
    _bad_checkpoint(work / "bad", "depth", 40)  # the config asks for 40 blocks, the weights hold 3
    refused(["export", work / "clip.latok", "-o", work / "o.safetensors", "--fill", "lit", "--inpainter", work / "bad"], capsys, work,
            "weights do not fit config.json")  # fmt: skip


# -- cache-latents -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["loop", "dangling", "missing"])
def test_cache_latents_refuses_an_unreadable_input_before_any_work(work, capsys, kind):
    link = work / "bad.mp4"
    if kind == "loop":
        link.symlink_to(link)
    elif kind == "dangling":
        link.symlink_to(work / "nowhere.mp4")
    refused(["cache-latents", "--inputs", work / "in.mp4", link, "--out", work / "shards"], capsys, work, r"bad.mp4: no such file or directory")


@needs_weights
def test_a_failing_cache_latents_run_prints_no_lightning_chatter(work, capsys):
    (work / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(100))
    code = main(["cache-latents", "--inputs", str(work / "broken.mp4"), "--out", str(work / "shards"), "--height", "32"])
    err = capsys.readouterr().err
    assert code == 2 and [line for line in err.splitlines() if line.strip()] == [line for line in err.splitlines() if line.startswith("latok: skipped: ")]
    assert "broken.mp4" in err and "GPU available" not in err


# -- training shards ---------------------------------------------------------------------------------


def _hugenpy_bytes(dtype: str = "<f2") -> bytes:
    header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': (1048576, 1048576, 1024), }}"
    header = header + " " * (118 - len(header)) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()


@pytest.mark.parametrize("member", ["latent.npy", "video.npy"])
def test_a_shard_member_declaring_a_huge_array_is_one_shard_error(tmp_path, member):
    from latok.training.data import read_samples

    members = {"clip0.json": json.dumps({"name": "clip0"}).encode(), "clip0.latent.npy": npy_bytes(np.zeros((4, 2, 3, 3), np.float16))}
    members[f"clip0.{member}"] = _hugenpy_bytes("|u1" if member == "video.npy" else "<f2")
    (tmp_path / "shards").mkdir()
    tar_file(tmp_path / "shards" / "s.tar", members)
    with pytest.raises(ShardFormatError, match=rf"clip0.{member} cannot be read \(its header declares"):
        read_samples(tmp_path / "shards")


@pytest.mark.parametrize("missing", ["video", "name"])
def test_a_validation_shard_without_video_or_name_is_one_shard_error(tmp_path, missing):
    from latok.training.data import LatentDataModule

    members = {"clip0.json": json.dumps({} if missing == "name" else {"name": "clip0"}).encode(),
               "clip0.latent.npy": npy_bytes(np.zeros((4, 2, 3, 3), np.float16))}  # fmt: skip
    if missing == "name":
        members["clip0.video.npy"] = npy_bytes(np.zeros((2, 24, 24, 3), np.uint8))
    (tmp_path / "val").mkdir()
    tar_file(tmp_path / "val" / "s.tar", members)
    module = LatentDataModule(train_dir=str(tmp_path / "val"), val_dir=str(tmp_path / "val"))
    with pytest.raises(ShardFormatError, match='a validation sample needs video.npy and a json with a "name"'):
        module.val_dataloader()


# -- offline means no network call -------------------------------------------------------------------


def test_a_diffusers_backend_file_makes_no_network_call_when_offline(work, capsys, monkeypatch, tmp_path):
    from latok.codec.format.writer import save_latok
    from latok.codec.tokens import AdaptiveLatent, SourceInfo

    latent = torch.randn(1, 16, 3, 4, 6)
    keep = torch.ones(1, 3, 4, 6, dtype=torch.bool)
    save_latok(AdaptiveLatent.from_dense(latent, keep, backend="wan2.1", backend_config="x", tau=0.1, source=SourceInfo(9, 32, 48)), work / "wan.latok")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # LATOK_OFFLINE alone must keep latok off the network
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("LATOK_OFFLINE", "1")
    attempts = []

    def no_network(self, address, *args):
        attempts.append(address)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    start = time.perf_counter()
    refused(["decode", work / "wan.latok", "-o", work / "o.mp4", "--fill", "hold"], capsys, work, "LATOK_OFFLINE is set")
    assert attempts == [] and time.perf_counter() - start < 5.0


# -- value codes -------------------------------------------------------------------------------------


def test_the_writer_keeps_the_code_bound_the_reader_checks(tmp_path):
    from latok.codec.format.reader import load_latok
    from latok.codec.format.writer import save_latok
    from latok.codec.quantise import MAX_CODE, channel_steps
    from latok.codec.tokens import AdaptiveLatent, SourceInfo

    steps = channel_steps(1.0, None, 32)
    keep = torch.ones(1, 2, 1, 1, dtype=torch.bool)

    def adaptive(last: float) -> AdaptiveLatent:
        latent = torch.zeros(1, 32, 2, 1, 1)
        latent[0, 0, 0], latent[0, 0, 1] = -(2**27 - 8), last  # the largest residual float32 codes can make
        return AdaptiveLatent.from_dense(latent, keep, backend="taef2", backend_config="x", tau=0.1, source=SourceInfo(2, 8, 8), value_step=steps)

    edge = adaptive(2**27 - 8)
    assert torch.equal(load_latok(save_latok(edge, tmp_path / "edge.latok")).values, edge.values)
    for beyond in (float(MAX_CODE + 1), 2.0**27 - 1):  # 2**27 - 1 is not a float32: it rounds up, past the bound
        with pytest.raises(InvalidInputError, match="too large to quantise"):
            adaptive(beyond)
