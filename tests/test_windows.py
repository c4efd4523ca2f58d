"""Windowed inference: the inpainter attends over windows of the size it trained on, blended where they overlap."""

from __future__ import annotations

import pytest
import torch

from latok.codec.restore.inpainter import InpainterConfig, InpaintingTransformer
from latok.codec.restore.windows import in_windows, tent, window_starts


@pytest.mark.parametrize(("size", "window", "starts"), [(26, 8, [0, 4, 8, 12, 16, 18]), (8, 8, [0]), (5, 8, [0]), (50, 17, [0, 8, 16, 24, 32, 33]),
                                                        (26, None, [0]), (3, 1, [0, 1, 2])])  # fmt: skip
def test_windows_half_overlap_and_cover_every_position(size, window, starts):
    assert window_starts(size, window) == starts
    covered = torch.zeros(size, dtype=torch.bool)
    for start in starts:
        covered[start : start + (window or size)] = True
    assert bool(covered.all())


def test_blending_weights_rise_from_the_edges():
    assert tent(26, 8).tolist() == [1, 2, 3, 4, 4, 3, 2, 1] and tent(5, 5).tolist() == [1] * 5


def test_a_positionwise_transform_is_unchanged_by_windows():
    """Each token's output depends on that token alone: every window computes the same value, and the blend of equal
    values is that value.  A transform that looks across tokens (a mean over its window) is changed: the windows are real."""
    x = torch.randn(2, 5, 15, 26, 3)
    pointwise = lambda v: v.pow(2) - v  # noqa: E731
    for window in [(None, 8), (3, 4), (2, None), (None, None), None]:
        torch.testing.assert_close(in_windows(pointwise, x, window), pointwise(x), rtol=1e-6, atol=1e-6)
    mean = lambda v: v.mean(dim=(1, 2, 3), keepdim=True).expand_as(v)  # noqa: E731
    assert torch.equal(in_windows(mean, x, None), mean(x))
    assert not torch.allclose(in_windows(mean, x, (None, 8)), mean(x), atol=1e-3)


def test_the_inpainter_in_windows_keeps_kept_values_and_matches_one_window_exactly():
    torch.manual_seed(0)
    model = InpaintingTransformer(InpainterConfig(latent_channels=4, width=32, depth=1, heads=2))
    for parameter in model.parameters():
        parameter.data.normal_(0, 0.2)
    latent = torch.randn(1, 4, 6, 20, 36)
    keep = torch.rand(1, 6, 20, 36) < 0.5
    keep[:, 0] = True
    whole = model(latent, keep, 0.5)
    assert torch.equal(model(latent, keep, 0.5, window=(6, 18)), whole)  # one window covers the clip: the same call
    windowed = model(latent, keep, 0.5, window=(4, 4))
    assert torch.equal(windowed[keep.unsqueeze(1).expand_as(latent)], latent[keep.unsqueeze(1).expand_as(latent)])
    assert not torch.allclose(windowed, whole, atol=1e-4) and bool(windowed.isfinite().all())
