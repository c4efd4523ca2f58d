"""The Latent Inpainting Transformer: exact pass-through, learning, checkpoints, causality."""

from __future__ import annotations

import pytest
import torch

from latok.errors import InvalidInputError, WeightsNotFoundError
from latok.fill import hold_fill
from latok.inpainter import InpainterConfig, InpaintingTransformer, preset
from latok.masking import redundancy_mask

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


def test_presets_and_bad_inputs():
    assert InpaintingTransformer(preset("xs")).num_parameters < InpaintingTransformer(preset("s")).num_parameters
    with pytest.raises(InvalidInputError, match="unknown inpainter preset"):
        preset("xxl")
    model = InpaintingTransformer(TINY)
    with pytest.raises(InvalidInputError, match=r"\(B, 8, t, h, w\)"):
        model(torch.zeros(1, 4, 2, 2, 2), torch.ones(1, 2, 2, 2, dtype=torch.bool))
