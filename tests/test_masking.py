"""The temporal-L1 rule, rate targeting, and the fills."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from latok.codec.restore.fills import hold_fill, interp_fill, zero_fill
from latok.codec.tokens import staleness
from latok.codec.restore.resolve import get_fill
from latok.codec.rule.masking import in_rule_metric, redundancy_mask, resolve_tau, tau_for_usage
from latok.codec.tokens import rule_weights
from latok.errors import InvalidInputError


def random_latent(seed: int, frames: int = 6, size: int = 5, channels: int = 4) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    steps = torch.randn(1, channels, frames, size, size, generator=generator) * 0.3
    return steps.cumsum(dim=2)  # a random walk in time: some positions drift slowly, some jump


def test_rule_by_hand():
    # one channel, one position; values 0, 0.1, 0.25, 1.0 with tau 0.2
    latent = torch.tensor([0.0, 0.1, 0.25, 1.0]).view(1, 1, 4, 1, 1)
    last_kept = redundancy_mask(latent, 0.2, "last-kept")
    assert last_kept.keep.view(-1).tolist() == [True, False, True, True]  # 0.25 - 0 crosses tau
    previous = redundancy_mask(latent, 0.2, "previous")
    assert previous.keep.view(-1).tolist() == [True, False, False, True]  # 0.15 steps never do
    assert previous.distance.view(-1)[1:].tolist() == pytest.approx([0.1, 0.15, 0.75])
    assert last_kept.usage == 0.75 and previous.kept == 2


def test_channel_mean_not_max():
    latent = torch.zeros(1, 4, 2, 1, 1)
    latent[0, 0, 1] = 0.5  # one channel moves by 0.5: mean |delta| = 0.125
    assert not redundancy_mask(latent, 0.2).keep[0, 1].item()
    assert redundancy_mask(latent, 0.1).keep[0, 1].item()


def test_rule_in_the_decoder_metric_weighs_channels_by_how_much_the_decoder_shows_them():
    from latok.vae.taesd import TAEF2

    weights = rule_weights("decoder", TAEF2.value_sensitivity)
    assert len(weights) == 32 and sum(weights) / 32 == pytest.approx(1.0)
    assert rule_weights("latent", TAEF2.value_sensitivity) is None and rule_weights("decoder", None) is None
    with pytest.raises(InvalidInputError, match="rule metric"):
        rule_weights("pixels", TAEF2.value_sensitivity)
    quiet, loud = weights.index(min(weights)), weights.index(max(weights))
    for channel, kept in ((quiet, False), (loud, True)):  # the same change, in a channel the decoder barely shows or shows most
        latent = torch.zeros(1, 32, 2, 1, 1)
        latent[0, channel, 1] = 0.2 * 32  # mean |delta| over channels = 0.2
        assert redundancy_mask(latent, 0.2 * 0.999).keep[0, 1].item()  # the plain rule keeps both
        assert redundancy_mask(in_rule_metric(latent, weights), 0.2).keep[0, 1].item() is kept
    with pytest.raises(InvalidInputError, match="one per channel"):
        in_rule_metric(torch.zeros(1, 4, 2, 1, 1), weights)


@given(seed=st.integers(0, 10_000), reference=st.sampled_from(["last-kept", "previous"]))
@settings(max_examples=30, deadline=None)
def test_tau_zero_keeps_everything_and_frame_zero_always_kept(seed, reference):
    latent = random_latent(seed)
    assert redundancy_mask(latent, 0.0, reference).keep.all()
    assert redundancy_mask(latent, 1e9, reference).keep[:, 0].all()
    assert redundancy_mask(latent, 1e9, reference).kept == 25


@given(seed=st.integers(0, 10_000), taus=st.lists(st.floats(0, 2), min_size=2, max_size=6))
@settings(max_examples=40, deadline=None)
def test_usage_never_rises_with_tau_previous_reference(seed, taus):
    latent = random_latent(seed)
    usages = [redundancy_mask(latent, tau, "previous").usage for tau in sorted(taus)]
    assert all(a >= b for a, b in zip(usages, usages[1:]))


def test_last_kept_usage_can_rise_with_tau_on_oscillating_input():
    """The documented caveat: with last-kept references a larger tau can keep more."""
    latent = torch.tensor([0.3, 1.2, 0.3, 1.0, 1.5, 0.5, 1.5]).view(1, 1, 7, 1, 1)
    assert redundancy_mask(latent, 0.9, "last-kept").kept > redundancy_mask(latent, 0.6, "last-kept").kept


def test_last_kept_usage_falls_with_tau_on_real_like_latents():
    latent = random_latent(7, frames=12, size=16)
    usages = [redundancy_mask(latent, tau).usage for tau in (0.0, 0.05, 0.1, 0.2, 0.4, 0.8)]
    assert usages == sorted(usages, reverse=True) and usages[0] == 1.0 and usages[-1] < 0.5


def test_last_kept_catches_slow_drift_that_previous_misses():
    latent = (torch.arange(10.0) * 0.05).view(1, 1, 10, 1, 1)  # drifts 0.05 per frame
    assert redundancy_mask(latent, 0.12, "previous").kept == 1
    assert redundancy_mask(latent, 0.12, "last-kept").kept == 4  # frames 0, 3, 6, 9


def test_keyframe_interval_forces_frames():
    latent = torch.zeros(1, 2, 9, 3, 3)
    mask = redundancy_mask(latent, 0.5, keyframe_interval=4)
    assert mask.usage_per_frame[0].tolist() == [1, 0, 0, 0, 1, 0, 0, 0, 1]


@pytest.mark.parametrize("reference", ["previous", "last-kept"])
@pytest.mark.parametrize("target", [0.25, 0.5, 0.8])
def test_target_usage_is_met(reference, target):
    latent = random_latent(3, frames=10, size=12)
    tau = tau_for_usage(latent, target, reference)
    usage = redundancy_mask(latent, tau, reference).usage
    assert usage == pytest.approx(target, abs=0.02)


def test_target_usage_edges():
    latent = random_latent(1)
    assert tau_for_usage(latent, 1.0) == 0.0
    floor = redundancy_mask(latent, tau_for_usage(latent, 0.01)).usage
    assert floor == pytest.approx(1 / 6)  # only frame 0 survives
    with pytest.raises(InvalidInputError):
        tau_for_usage(latent, 0.0)
    with pytest.raises(InvalidInputError, match="either tau or target usage"):
        resolve_tau(latent, 0.1, 0.5, 0.2)


@pytest.mark.parametrize("bad", [dict(tau=-1.0), dict(tau=float("nan")), dict(reference="next"), dict(keyframe_interval=0)])
def test_bad_mask_arguments(bad):
    arguments = dict(tau=0.1) | bad
    with pytest.raises(InvalidInputError):
        redundancy_mask(random_latent(0), **arguments)


# -- fills -----------------------------------------------------------------------------------


def sparse(latent: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return latent * keep.unsqueeze(1)


@given(seed=st.integers(0, 10_000), tau=st.floats(0.0, 1.0))
@settings(max_examples=30, deadline=None)
def test_fills_pass_kept_positions_through_exactly(seed, tau):
    latent = random_latent(seed)
    keep = redundancy_mask(latent, tau).keep
    for fill in (zero_fill, hold_fill, interp_fill):
        restored = fill(sparse(latent, keep), keep)
        mask = keep.unsqueeze(1).expand_as(latent)
        assert torch.equal(restored[mask], latent[mask])


def test_fills_by_hand():
    values = torch.tensor([1.0, 0.0, 0.0, 4.0, 0.0]).view(1, 1, 5, 1, 1)
    keep = torch.tensor([True, False, False, True, False]).view(1, 5, 1, 1)
    assert zero_fill(values, keep).view(-1).tolist() == [1, 0, 0, 4, 0]
    assert hold_fill(values, keep).view(-1).tolist() == [1, 1, 1, 4, 4]
    assert interp_fill(values, keep).view(-1).tolist() == [1, 2, 3, 4, 4]
    assert staleness(keep).view(-1).tolist() == [0, 1, 2, 0, 1]


def test_unknown_fill():
    with pytest.raises(InvalidInputError, match="unknown fill 'magic'; available: hold, interp, zero"):
        get_fill("magic")
