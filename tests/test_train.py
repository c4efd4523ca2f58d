"""Latent caching to shards and the Lightning training loop (fast_dev_run on tiny shards)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA, ROOT, needs_data, needs_weights

from latok.cli import main
from latok.training.data import LatentDataModule, read_samples, write_shard


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


@pytest.mark.slow
@needs_weights
def test_fast_dev_run_trains_validates_and_exports_nothing(shards, tmp_path, monkeypatch):
    from latok.training.train import train_cli

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
    assert not (tmp_path / "config.yaml").exists()  # no logger: Lightning saves no config into the working directory


@pytest.mark.slow
@needs_weights
def test_decoder_loss_estimates_the_metric_and_trains_with_it(shards, tmp_path, monkeypatch):
    from latok.training.train import train_cli

    monkeypatch.chdir(tmp_path)
    cli = train_cli([
        "fit", "--config", str(ROOT / "configs" / "history" / "taef2_lit-xs-decoder.yaml"), "--model.init_from", "null",
        "--model.metric_frames", "2", "--trainer.fast_dev_run", "2", "--trainer.logger", "false",
        "--data.train_dir", str(shards / "train"), "--data.val_dir", str(shards / "val"),
        "--data.crop", "[5, 4, 4]", "--data.batch_size", "2", "--data.num_workers", "0",
    ])  # fmt: skip
    model = cli.model.model
    assert cli.model.hparams.loss == "decoder" and model.config.decoder_metric
    diagonal = model.decoder_metric.diagonal()
    assert bool((diagonal > 0).all()) and float(diagonal.max() / diagonal.min()) > 2  # taef2's, not the identity
    assert cli.trainer.global_step == 2 and torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    # resuming from a Lightning checkpoint brings the metric back instead of estimating it again
    checkpoint = {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}
    fresh = type(cli.model)(loss="decoder")
    fresh.on_load_checkpoint(checkpoint)
    fresh.load_state_dict(checkpoint["state_dict"])
    assert torch.equal(fresh.model.decoder_metric, model.decoder_metric)
    with pytest.raises(ValueError, match="loss must be"):
        type(cli.model)(loss="pixel")


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


@pytest.mark.parametrize("config", sorted(str(p.relative_to(ROOT / "configs")) for p in (ROOT / "configs").rglob("*.yaml")))
def test_shipped_configs_parse(config, capsys):
    from latok.training.train import train_cli

    with pytest.raises(SystemExit) as info:
        train_cli(["fit", "--config", str(ROOT / "configs" / config), "--print_config"])
    assert info.value.code == 0
    printed = capsys.readouterr().out
    assert f"preset: {Path(config).name.split('-')[1].removesuffix('.yaml')}" in printed
    exports = [line.split("dirpath:")[1].strip() for line in printed.splitlines() if "dirpath:" in line]
    assert exports and all(path.startswith("data/") for path in exports)  # no config writes into checkpoints/
    if "decoder" in config:
        assert "loss: decoder" in printed


@needs_weights
@needs_data
def test_cache_latents_reports_bad_inputs_and_caches_the_rest(tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    good = str(DATA / "davis" / "JPEGImages" / "480p" / "goat")
    assert main(["cache-latents", "--inputs", str(bad), good, "--out", str(tmp_path / "s"), "--frames", "1", "--height", "32"]) == 2
    captured = capsys.readouterr()
    assert f"latok: skipped: {bad}" in captured.err and "1 inputs skipped" in captured.out
    assert len(list((tmp_path / "s").glob("goat-*.tar"))) == 1


def test_save_pretrained_keeps_the_best_validated_model(tmp_path):
    from types import SimpleNamespace

    from latok.codec.restore.inpainter import InpainterConfig, InpaintingTransformer
    from latok.training.train import SavePretrained

    model = InpaintingTransformer(InpainterConfig(latent_channels=8, width=32, depth=1, heads=2))
    module = SimpleNamespace(model=model)
    trainer = SimpleNamespace(is_global_zero=True, sanity_checking=False, fast_dev_run=False, callback_metrics={})
    callback = SavePretrained(str(tmp_path / "best"))
    exported = []
    for step, gain in enumerate([0.3, 0.1, 0.5, 0.4]):
        model.head.bias.data.fill_(step)  # tag the weights with the step
        trainer.callback_metrics = {"val/psnr_gain_over_hold": torch.tensor(gain)}
        callback.on_validation_epoch_end(trainer, module)
        exported.append(InpaintingTransformer.from_pretrained(tmp_path / "best").head.bias[0].item())
    assert exported == [0, 0, 2, 2]
    callback.on_fit_end(trainer, module)  # validation ran: the best export stays
    assert InpaintingTransformer.from_pretrained(tmp_path / "best").head.bias[0].item() == 2


def test_stream_context_crops_look_like_what_decode_stream_passes(shards):
    from latok.codec.restore.fills import hold_fill
    from latok.codec.rule.masking import redundancy_mask
    from latok.training.data import CropDataset, as_stream_context, shard_urls

    latent = (torch.randn(1, 4, 8, 3, 3, generator=torch.Generator().manual_seed(0)) * 0.3).cumsum(dim=2)
    keep = redundancy_mask(latent, 0.3).keep
    assert not keep[:, 1:3].all()
    context, known = as_stream_context(latent, keep, 3)
    assert known[:, :3].all() and torch.equal(known[:, 3:], keep[:, 3:])
    torch.testing.assert_close(context[:, :, :3], hold_fill(latent * keep.unsqueeze(1), keep)[:, :, :3])
    torch.testing.assert_close(context[:, :, 3:], latent[:, :, 3:])
    # hold restores the frames after the context exactly as it did before: the context is what hold had there
    torch.testing.assert_close(hold_fill(context * known.unsqueeze(1), known), hold_fill(latent * keep.unsqueeze(1), keep))
    dataset = CropDataset(shard_urls(shards / "train"), (6, 4, 4), 4, (0.3, 0.6), 0.0, seed=0, context_frames=4)
    leading = [int(item["keep"].flatten(1).all(dim=1).long().cumprod(0).sum()) for item, _ in zip(dataset, range(24))]
    assert max(leading) >= 3 and min(leading) >= 1  # 0..4 context frames, frame 0 always kept


@pytest.mark.slow
@needs_weights
def test_causal_config_fine_tunes_with_stream_context(shards, tmp_path, monkeypatch):
    from latok.codec.restore.inpainter import InpaintingTransformer
    from latok.training.train import train_cli

    monkeypatch.chdir(tmp_path)
    cli = train_cli([
        "fit", "--config", str(ROOT / "configs" / "history" / "taef2_lit-xs-causal.yaml"),
        "--model.init_from", str(ROOT / "checkpoints" / "taef2-lit-xs"),
        "--trainer.fast_dev_run", "2", "--trainer.logger", "false",
        "--data.train_dir", str(shards / "train"), "--data.val_dir", str(shards / "val"),
        "--data.crop", "[5, 4, 4]", "--data.batch_size", "2", "--data.num_workers", "0",
    ])  # fmt: skip
    assert cli.model.model.config.causal and cli.datamodule.hparams.context_frames == 4
    assert cli.trainer.global_step == 2 and torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    start = InpaintingTransformer.from_pretrained(ROOT / "checkpoints" / "taef2-lit-xs").state_dict()
    state = cli.model.model.state_dict()
    drift = max(float((value - start[name]).abs().max()) for name, value in state.items())
    assert 0 < drift < 0.05  # trained 2 steps
    # started from the checkpoint: a fresh head is all zeros, so it would sit the checkpoint's whole head away
    head = start["head.weight"].abs().max()
    assert head > 0 and (state["head.weight"] - start["head.weight"]).abs().max() < 0.25 * head


@pytest.mark.parametrize("chain", ["shipped", "previous", "pooled", "pixels", "matched"])
def test_training_curve_covers_each_chain(tmp_path, chain):
    """eval/training_curve.py reads every committed log of the chain behind checkpoints/taef2-lit-xs (and the one before)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("training_curve", ROOT / "eval" / "training_curve.py")
    curve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(curve)
    assert curve.main(["--out", str(tmp_path), "--chain", chain]) == 0
    stem = "training_curve" if chain == "shipped" else f"training_curve_{chain}"
    report = (tmp_path / f"{stem}.md").read_text()
    assert (tmp_path / f"{stem}.png").stat().st_size > 10_000
    stages = (ROOT / curve.RECIPES[chain]).read_text()
    for run in curve.CHAINS[chain]:
        config = next(p for p in (ROOT / "configs" / f"{run}.yaml", ROOT / "configs" / "history" / f"{run}.yaml") if p.is_file())
        assert str(config.relative_to(ROOT)) in stages  # the recipe replays every logged stage
        assert f"| {run} | " in report


@needs_weights
def test_pixel_loss_runs_through_the_frozen_decoder():
    """loss="pixels": drawn frames of each crop are decoded with the gradient; an untrained model (exactly hold)
    scores 1, a moved one does not, and only the inpainter gets gradients, not the frozen decoder."""
    from latok.training.module import InpainterModule

    module = InpainterModule(loss="pixels", pixel_frames=2)
    generator = torch.Generator().manual_seed(0)
    latent = (torch.randn(2, 32, 4, 4, 4, generator=generator) * 0.4).cumsum(dim=2)
    keep = torch.ones(2, 4, 4, 4, dtype=torch.bool)
    keep[:, 1:, 1:3, :3] = False
    torch.manual_seed(0)
    _, _, ratio = module._losses(latent, keep, None)
    assert float(ratio.detach()) == pytest.approx(1.0, abs=1e-6)
    with torch.no_grad():
        for parameter in module.model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    _, _, ratio = module._losses(latent, keep, None)
    ratio.backward()
    assert float(ratio.detach()) != pytest.approx(1.0, abs=1e-3)
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in module.model.parameters())
    assert all(p.grad is None for p in module.vae.decoder.parameters())


@pytest.mark.parametrize("loss_ratio", ["pooled", "per-clip"])
def test_loss_ratio_weighs_crops_as_chosen(loss_ratio):
    """Pooled: the batch's error over hold's, so a nearly static crop (tiny hold error) counts by its tiny
    error; per-clip: the mean of each crop's ratio, where that crop weighs as much as a busy one."""
    from latok.training.module import InpainterModule

    module = InpainterModule(loss_ratio=loss_ratio)
    torch.manual_seed(0)
    with torch.no_grad():  # an untrained model is exactly hold: move it off
        for parameter in module.model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    latent = torch.randn(2, 32, 3, 4, 4)
    latent[0, :, 1:] = latent[0, :, :1] + 1e-3 * torch.randn(32, 2, 4, 4)  # crop 0 barely changes: hold is nearly exact
    keep = torch.ones(2, 3, 4, 4, dtype=torch.bool)
    keep[:, 1:, :2] = False
    sparse = latent * keep.unsqueeze(1)
    from latok.codec.restore.fills import hold_fill

    with torch.no_grad():
        model_error = module.model.error(module.model(sparse, keep, None), latent, keep).sum(dim=1)
        hold_error = module.model.error(hold_fill(sparse, keep), latent, keep).sum(dim=1)
        _, _, ratio = module._losses(latent, keep, None)
    expected = model_error.sum() / hold_error.sum() if loss_ratio == "pooled" else (model_error / hold_error).mean()
    torch.testing.assert_close(ratio, expected)
    assert float(hold_error[0]) < 1e-3 * float(hold_error[1])  # the two weighings differ on this batch
    assert not torch.allclose(model_error.sum() / hold_error.sum(), (model_error / hold_error).mean())
    with pytest.raises(ValueError, match="loss_ratio must be"):
        InpainterModule(loss_ratio="mean")
