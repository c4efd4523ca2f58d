"""The Latent Inpainting Transformer: exact pass-through, learning, checkpoints, causality."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from latok.codec.restore.fills import hold_fill
from latok.codec.restore.inpainter import InpainterConfig, InpaintingTransformer, preset, project_l1_ball
from latok.codec.rule.masking import in_rule_metric, redundancy_mask
from latok.errors import CorruptWeightsError, InvalidInputError, WeightsNotFoundError

TINY = InpainterConfig(latent_channels=8, width=32, depth=1, heads=2)


def walk(seed: int, shape=(2, 8, 6, 7, 9)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=generator) * 0.5).cumsum(dim=2)


def masked(latent: torch.Tensor, tau: float = 0.6):
    keep = redundancy_mask(latent, tau).keep
    return latent * keep.unsqueeze(1), keep


def randomised(model: InpaintingTransformer) -> InpaintingTransformer:
    torch.manual_seed(1)
    for parameter in model.parameters():
        parameter.data.normal_(0, 0.2)
    return model


def test_starts_as_hold_and_kept_positions_pass_through_exactly():
    latent = walk(0)
    sparse, keep = masked(latent)
    assert 0.2 < keep.float().mean() < 0.9
    model = InpaintingTransformer(TINY)
    assert torch.equal(model(sparse, keep), hold_fill(sparse, keep))  # zero-initialised correction
    out = randomised(model)(sparse, keep)
    kept = keep.unsqueeze(1).expand_as(latent)
    assert torch.equal(out[kept], latent[kept])
    assert not torch.equal(out[~kept], hold_fill(sparse, keep)[~kept])


@pytest.mark.parametrize("shape", [(1, 8, 1, 4, 4), (1, 8, 5, 3, 11), (2, 8, 21, 6, 6)])
def test_any_length_and_resolution(shape):
    latent = walk(1, shape)
    sparse, keep = masked(latent)
    assert randomised(InpaintingTransformer(TINY))(sparse, keep).shape == shape


def test_causal_outputs_ignore_the_future():
    model = randomised(InpaintingTransformer(InpainterConfig(latent_channels=8, width=32, depth=2, heads=2, causal=True)))
    latent = walk(2)
    sparse, keep = masked(latent)
    changed = sparse.clone()
    changed[:, :, 4:] += 3.0
    changed_keep = keep.clone()
    changed_keep[:, 4:] = True
    a, b = model(sparse, keep), model(changed, changed_keep)
    torch.testing.assert_close(a[:, :, :4], b[:, :, :4])
    bidirectional = randomised(InpaintingTransformer(TINY))
    assert not torch.allclose(bidirectional(sparse, keep)[:, :, :4], bidirectional(changed, changed_keep)[:, :, :4])


@pytest.mark.slow
def test_overfits_a_tiny_fixed_batch():
    torch.manual_seed(0)
    latent = walk(3, (2, 8, 8, 8, 8))
    sparse, keep = masked(latent, tau=0.8)
    dropped = (~keep).unsqueeze(1).expand_as(latent)
    model = InpaintingTransformer(InpainterConfig(latent_channels=8, width=64, depth=2, heads=4))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def loss() -> torch.Tensor:
        return ((model(sparse, keep) - latent)[dropped] ** 2).mean()

    start = loss().item()
    for step in range(400):
        value = loss()
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        if value.item() < start / 10:
            break
    assert loss().item() < start / 10, f"loss {loss().item():.4g} did not fall 10x from {start:.4g} in {step + 1} steps"


def test_checkpoint_round_trip(tmp_path):
    model = randomised(InpaintingTransformer(TINY)).eval()
    directory = model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors"]
    loaded = InpaintingTransformer.from_pretrained(directory)
    assert loaded.config == model.config
    sparse, keep = masked(walk(4))
    assert torch.equal(loaded(sparse, keep), model(sparse, keep))
    with pytest.raises(WeightsNotFoundError, match="no inpainter checkpoint"):
        InpaintingTransformer.from_pretrained(tmp_path / "nothing")


def test_decoder_metric_weighs_errors_and_travels_with_the_checkpoint(tmp_path):
    latent = walk(5)
    sparse, keep = masked(latent)
    model = randomised(InpaintingTransformer(TINY)).eval()
    restored = model(sparse, keep)
    plain = model.error(restored, latent, keep)
    dropped = (~keep).unsqueeze(1)
    torch.testing.assert_close(plain, ((restored - latent) ** 2 * dropped).sum(dim=(1, 3, 4)))
    assert plain.shape == (2, latent.shape[2]) and bool((plain[:, 0] == 0).all())  # frame 0 is always kept
    weights = torch.arange(1.0, 9.0)
    metric = torch.diag(weights)
    metric[0, 1] = metric[1, 0] = 0.5
    model.set_decoder_metric(metric)
    difference = (restored - latent) * dropped
    expected = torch.einsum("bcthw,cd,bdthw->bt", difference, metric, difference)
    torch.testing.assert_close(model.error(restored, latent, keep), expected)
    loaded = InpaintingTransformer.from_pretrained(model.save_pretrained(tmp_path / "ckpt"))
    assert loaded.config.decoder_metric and torch.equal(loaded.decoder_metric, metric)
    assert loaded.fingerprint == model.fingerprint != randomised(InpaintingTransformer(TINY)).fingerprint
    with pytest.raises(InvalidInputError, match=r"decoder metric must be \(8, 8\)"):
        model.set_decoder_metric(torch.eye(3))


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: (d / "model.safetensors").write_bytes(b"junk"),  # not a safetensors file
        lambda d: (d / "config.json").write_text("{not json"),
        lambda d: (d / "config.json").write_text('{"width": 96, "colour": 3}'),  # unknown field
        lambda d: (d / "config.json").write_text('{"width": 64, "heads": 4, "depth": 1}'),  # weights do not fit
    ],
)
def test_corrupt_checkpoint_is_one_clear_error(tmp_path, damage):
    directory = InpaintingTransformer(TINY).save_pretrained(tmp_path / "ckpt")
    damage(directory)
    with pytest.raises(CorruptWeightsError, match="unreadable inpainter checkpoint") as info:
        InpaintingTransformer.from_pretrained(directory)
    assert "\n" not in str(info.value)


def test_presets_and_bad_inputs():
    assert InpaintingTransformer(preset("xs")).num_parameters < InpaintingTransformer(preset("s")).num_parameters
    with pytest.raises(InvalidInputError, match="unknown inpainter preset"):
        preset("xxl")
    model = InpaintingTransformer(TINY)
    with pytest.raises(InvalidInputError, match=r"\(B, 8, t, h, w\)"):
        model(torch.zeros(1, 4, 2, 2, 2), torch.ones(1, 2, 2, 2, dtype=torch.bool))


# -- the rule's tau-ball: where a dropped value can lie -------------------------------------------


def l1_ball_projection_by_bisection(v: torch.Tensor, limit: float) -> torch.Tensor:
    """Reference: soft-threshold v at the theta where sum |v| shrinks to ``limit`` (found by bisection)."""
    if v.abs().sum() <= limit:
        return v
    low, high = 0.0, float(v.abs().max())
    for _ in range(100):
        theta = 0.5 * (low + high)
        low, high = (theta, high) if (v.abs() - theta).clamp(min=0).sum() > limit else (low, theta)
    return v.sign() * (v.abs() - high).clamp(min=0)


def test_projection_is_the_euclidean_projection_onto_the_mean_abs_ball():
    generator = torch.Generator().manual_seed(0)
    delta = torch.randn(2, 8, 3, 4, 5, generator=generator, dtype=torch.float64)
    radius = torch.rand(2, 1, 3, 4, 5, generator=generator, dtype=torch.float64) * 1.2
    projected = project_l1_ball(delta, radius)
    assert (projected.abs().mean(dim=1, keepdim=True) <= radius + 1e-9).all()
    inside = delta.abs().mean(dim=1, keepdim=True) <= radius
    assert 0 < inside.float().mean() < 1  # both cases occur
    assert torch.equal(projected[inside.expand_as(delta)], delta[inside.expand_as(delta)])
    for b, t, y, x in [(0, 0, 0, 0), (1, 2, 3, 4), (0, 1, 2, 3), (1, 0, 3, 1)]:
        expected = l1_ball_projection_by_bisection(delta[b, :, t, y, x], float(radius[b, 0, t, y, x]) * 8)
        torch.testing.assert_close(projected[b, :, t, y, x], expected, atol=1e-9, rtol=0)


def test_projection_never_moves_a_prediction_further_from_a_point_in_the_ball():
    generator = torch.Generator().manual_seed(1)
    radius = torch.full((64, 1, 1, 1, 1), 0.3)
    truth = project_l1_ball(torch.randn(64, 16, 1, 1, 1, generator=generator), radius)  # points inside the ball
    guess = torch.randn(64, 16, 1, 1, 1, generator=generator) * 2
    before = (guess - truth).square().sum(dim=1)
    after = (project_l1_ball(guess, radius) - truth).square().sum(dim=1)
    assert (after <= before + 1e-6).all() and (after < before).any()
    assert torch.equal(project_l1_ball(guess, torch.full_like(radius, float("inf"))), guess)


@pytest.mark.parametrize("reference", ["last-kept", "previous"])
def test_dropped_predictions_stay_where_the_rule_says_the_truth_is(reference, monkeypatch):
    latent = walk(5)
    tau = 0.6
    keep = redundancy_mask(latent, tau, reference).keep
    sparse = latent * keep.unsqueeze(1)
    model = randomised(InpaintingTransformer(TINY))
    model.head.weight.data *= 10  # corrections well beyond the ball
    hold = hold_fill(sparse, keep)
    bounded = model(sparse, keep, tau, reference)
    monkeypatch.setattr("latok.codec.restore.inpainter.project_l1_ball", lambda delta, radius: delta)
    free = model(sparse, keep, tau, reference)  # the same prediction, unprojected
    time = torch.arange(latent.shape[2]).view(1, -1, 1, 1)
    from latok.codec.restore.fills import last_kept_index

    stale = (time - last_kept_index(keep)).float()
    radius = tau * (stale if reference == "previous" else torch.ones_like(stale))
    dropped = ~keep
    assert ((latent - hold).abs().mean(dim=1)[dropped] < radius[dropped] + 1e-6).all()  # the truth is inside
    assert ((bounded - hold).abs().mean(dim=1)[dropped] <= radius[dropped] + 1e-5).all()
    assert ((free - hold).abs().mean(dim=1)[dropped] > radius[dropped]).any()  # without tau it strays
    assert (bounded - latent).square().sum() <= (free - latent).square().sum()


def test_predictions_stay_in_the_weighted_ball_of_the_decoder_metric_rule():
    """With the rule in the decoder's metric, a dropped value moved less than tau in mean_c w_c |dz_c|: the
    inpainter's corrections stay in that ball (not the plain one, which the truth may leave)."""
    latent = walk(5)
    tau = 0.6
    weights = tuple(0.05 if c % 2 else 1.95 for c in range(latent.shape[1]))  # mean 1: half the channels barely count
    scale = torch.tensor(weights).view(1, -1, 1, 1, 1)
    keep = redundancy_mask(in_rule_metric(latent, weights), tau).keep
    sparse = latent * keep.unsqueeze(1)
    model = randomised(InpaintingTransformer(TINY))
    model.head.weight.data *= 10
    hold = hold_fill(sparse, keep)
    bounded = model(sparse, keep, tau, weights=weights)
    dropped = ~keep
    assert (((latent - hold).abs() * scale).mean(dim=1)[dropped] < tau + 1e-6).all()  # the truth is in the weighted ball
    assert (((bounded - hold).abs() * scale).mean(dim=1)[dropped] <= tau + 1e-5).all()
    assert ((latent - hold).abs().mean(dim=1)[dropped] > tau).any()  # ... and not always in the plain one
    assert not torch.allclose(bounded, model(sparse, keep, tau))  # the plain ball would bound it otherwise


def test_tau_must_be_one_per_clip_and_non_negative():
    latent = walk(6)
    sparse, keep = masked(latent)
    model = InpaintingTransformer(TINY)
    with pytest.raises(InvalidInputError, match="tau must be"):
        model(sparse, keep, torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(InvalidInputError, match="tau must be"):
        model(sparse, keep, -1.0)
    assert model(sparse, keep, torch.tensor([0.1, float("inf")])).shape == latent.shape


# -- hub-ready checkpoints (issue 21) ----------------------------------------------------------

SHIPPED = sorted(p for p in (Path(__file__).resolve().parents[1] / "checkpoints").iterdir() if (p / "model.safetensors").is_file())


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_shipped_checkpoints_load_unchanged_and_round_trip_bit_exactly(folder, tmp_path):
    import json

    from huggingface_hub import ModelHubMixin
    from safetensors.torch import load_file

    model = InpaintingTransformer.from_pretrained(folder)
    assert isinstance(model, ModelHubMixin)
    stored = load_file(str(folder / "model.safetensors"))
    assert stored.keys() == model.state_dict().keys() and all(torch.equal(stored[k], v) for k, v in model.state_dict().items())
    assert model.config == InpainterConfig(**json.loads((folder / "config.json").read_text()))  # older configs omit defaults
    model.save_pretrained(tmp_path / "copy")
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == ["config.json", "model.safetensors"]  # no model card, nothing else
    again = InpaintingTransformer.from_pretrained(tmp_path / "copy")
    assert again.fingerprint == model.fingerprint and all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))
    again.save_pretrained(tmp_path / "again")
    for name in ("config.json", "model.safetensors"):  # saving is deterministic: a round trip reproduces the bytes
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "copy" / name).read_bytes()


def test_hub_ids_go_through_the_hub_cache_without_network(tmp_path, monkeypatch):
    """A hub id is fetched with hf_hub_download (replaced here by a local copy: nothing touches the network)."""
    import shutil

    import huggingface_hub

    model = InpaintingTransformer(TINY)
    model.save_pretrained(tmp_path / "remote")
    calls = []

    def fake_download(repo_id, filename, **options):
        calls.append((repo_id, filename, options.get("revision")))
        snapshot = tmp_path / "cache" / repo_id.replace("/", "--") / (options.get("revision") or "main")
        snapshot.mkdir(parents=True, exist_ok=True)
        return str(shutil.copy(tmp_path / "remote" / filename, snapshot / filename))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    loaded = InpaintingTransformer.from_pretrained("latok/tiny-lit", revision="v1")
    assert loaded.fingerprint == model.fingerprint
    assert calls == [("latok/tiny-lit", "config.json", "v1"), ("latok/tiny-lit", "model.safetensors", "v1")]
    with pytest.raises(WeightsNotFoundError, match="not a hub id"):
        InpaintingTransformer.from_pretrained(tmp_path / "no" / "such" / "folder")


def test_a_hub_id_missing_offline_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match="latok/not-cached"):
        InpaintingTransformer.from_pretrained("latok/not-cached", cache_dir=tmp_path, local_files_only=True)


def test_push_to_hub_uploads_exactly_the_checkpoint(tmp_path, monkeypatch):
    import huggingface_hub.hub_mixin

    uploaded = {}

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **options):
            return type("Repo", (), {"repo_id": repo_id})()

        def upload_folder(self, repo_id, folder_path, **options):
            uploaded[repo_id] = sorted(p.name for p in Path(folder_path).iterdir())
            return "commit"

    monkeypatch.setattr(huggingface_hub.hub_mixin, "HfApi", FakeApi)
    InpaintingTransformer(TINY).save_pretrained(tmp_path / "lit", push_to_hub=True, repo_id="me/lit")
    assert uploaded == {"me/lit": ["config.json", "model.safetensors"]}
