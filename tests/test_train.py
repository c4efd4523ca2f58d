"""Latent caching to shards and the Lightning training loop (fast_dev_run on tiny shards)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import DATA, ROOT, needs_data, needs_weights
from latok.cli import main
from latok.data import LatentDataModule, read_samples, write_shard


@pytest.fixture
def shards(tmp_path):
    """Tiny random training shards and one validation shard with frames."""
    generator = torch.Generator().manual_seed(0)
    for index in range(2):
        latent = (torch.randn(32, 9, 6, 8, generator=generator) * 0.4).cumsum(dim=1)
        write_shard(tmp_path / "train" / f"clip{index}.tar", f"clip{index}", latent, {"name": f"clip{index}"})
    video = np.random.default_rng(0).integers(0, 256, size=(5, 32, 48, 3), dtype=np.uint8)
    latent = (torch.randn(32, 5, 4, 6, generator=generator) * 0.4).cumsum(dim=1)
    write_shard(tmp_path / "val" / "v.tar", "v", latent, {"name": "v"}, video)
    return tmp_path


def test_shards_round_trip(shards):
    (sample,) = read_samples(shards / "val")
    assert sample["latent.npy"].shape == (32, 5, 4, 6) and sample["latent.npy"].dtype == np.float16
    assert sample["video.npy"].shape == (5, 32, 48, 3) and sample["json"]["name"] == "v"


def test_training_crops_carry_rule_masks(shards):
    data = LatentDataModule(train_dir=str(shards / "train"), val_dir=None, crop=(5, 4, 4), batch_size=4, num_workers=0)
    batch = next(iter(data.train_dataloader()))
    assert batch["latent"].shape == (4, 32, 5, 4, 4) and batch["keep"].shape == (4, 5, 4, 4)
    assert batch["keep"][:, 0].all()
    usage = batch["keep"].float().mean().item()
    assert 0.1 < usage < 1.0


@needs_weights
def test_fast_dev_run_trains_validates_and_exports_nothing(shards, tmp_path, monkeypatch):
    from latok.train import train_cli

    monkeypatch.chdir(tmp_path)
    cli = train_cli([
        "fit", "--config", str(ROOT / "configs" / "taef2_lit-xs.yaml"),
        "--trainer.fast_dev_run", "2", "--trainer.logger", "false",
        "--data.train_dir", str(shards / "train"), "--data.val_dir", str(shards / "val"),
        "--data.crop", "[5, 4, 4]", "--data.batch_size", "2", "--data.num_workers", "0",
    ])  # fmt: skip
    assert cli.trainer.global_step == 2
    metrics = cli.trainer.callback_metrics
    assert {"train/loss", "val/psnr_lit", "val/psnr_hold", "val/psnr_gain_over_hold"} <= set(metrics)
    assert torch.isfinite(metrics["train/loss"])
    assert not (tmp_path / "checkpoints").exists()  # fast_dev_run exports nothing


@needs_weights
@needs_data
def test_cache_latents_is_resumable(tmp_path, capsys):
    inputs = [str(DATA / "davis" / "JPEGImages" / "480p" / "goat")]
    argv = ["cache-latents", "--inputs", *inputs, "--out", str(tmp_path / "s"), "--frames", "2", "--height", "64", "--with-video"]
    assert main(argv) == 0
    (shard,) = (tmp_path / "s").glob("*.tar")
    stamp = shard.stat().st_mtime_ns
    assert main(argv) == 0  # second run skips the finished input
    assert shard.stat().st_mtime_ns == stamp
    (sample,) = read_samples(tmp_path / "s")
    assert sample["latent.npy"].shape == (32, 2, 8, 14) and sample["video.npy"].shape == (2, 64, 112, 3)
