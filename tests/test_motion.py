"""Motion in latent space (issue 19, first part): estimation, warping, the motion-compensated rule and hold."""

from __future__ import annotations

import pytest
import torch

from latok.codec.fill import hold_fill, motion_hold_fill
from latok.codec.masking import redundancy_mask, tau_for_usage
from latok.codec.motion import estimate_motion, estimate_shift, warp


def smooth_field(seed: int = 0, channels: int = 8, size: tuple[int, int] = (40, 56)) -> torch.Tensor:
    """A ``(1, C, h, w)`` latent-like field with structure at several scales."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, channels, size[0] // 4, size[1] // 4, generator=generator)
    return torch.nn.functional.interpolate(coarse, size=size, mode="bicubic", align_corners=False)


def panning(frames: int, velocity: tuple[float, float], seed: int = 0) -> torch.Tensor:
    """``(1, C, t, h, w)``: one field moving by ``velocity`` latent pixels per frame (a camera pan)."""
    field = smooth_field(seed)
    shift = torch.tensor([velocity])
    return torch.stack([warp(field, shift * t) for t in range(frames)], dim=2)


def test_zero_shift_is_the_identity():
    field = smooth_field()
    assert torch.equal(warp(field, torch.zeros(1, 2)), field)


@pytest.mark.parametrize("velocity", [(0.0, 0.0), (0.0, 2.0), (-1.0, 3.0), (0.5, -1.25), (2.75, 0.0)])
def test_estimate_shift_recovers_a_translation(velocity):
    field = smooth_field(1)
    moved = warp(field, torch.tensor([velocity]))
    estimate = estimate_shift(moved, field)
    assert torch.allclose(estimate, torch.tensor([velocity]), atol=0.26)  # quarter-pixel refinement


def test_estimate_motion_is_per_frame_and_zero_on_frame_0():
    motion = estimate_motion(panning(5, (0.0, 2.0)))
    assert motion.shape == (1, 5, 2)
    assert torch.equal(motion[0, 0], torch.zeros(2))
    assert torch.allclose(motion[0, 1:], torch.tensor([[0.0, 2.0]]).expand(4, 2), atol=0.26)


def test_motion_compensated_rule_drops_a_pan_the_plain_rule_keeps():
    latent = panning(6, (0.0, 2.0))
    motion = estimate_motion(latent)
    plain = redundancy_mask(latent, 0.1)
    compensated = redundancy_mask(latent, 0.1, motion=motion)
    assert plain.usage > 0.8  # in place, a pan looks like change everywhere
    assert compensated.usage < 0.45  # only the strip entering the frame (and frame 0) is new
    zero = redundancy_mask(latent, 0.1, motion=torch.zeros(1, 6, 2))
    assert torch.equal(zero.keep, plain.keep)  # no motion is the plain rule, bit for bit


def test_motion_hold_beats_hold_on_a_pan():
    latent = panning(6, (0.0, 2.0))
    motion = estimate_motion(latent)
    keep = redundancy_mask(latent, 0.1, motion=motion).keep
    sparse = latent * keep.unsqueeze(1)
    moved = (motion_hold_fill(sparse, keep, motion) - latent).pow(2).mean()
    held = (hold_fill(sparse, keep) - latent).pow(2).mean()
    assert moved < 0.2 * held
    assert torch.equal(motion_hold_fill(sparse, keep, torch.zeros(1, 6, 2)), hold_fill(sparse, keep))


def test_target_usage_with_motion():
    latent = panning(8, (1.0, 1.0), seed=3)
    latent = latent + 0.05 * torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))  # sensor noise
    motion = estimate_motion(latent)
    tau = tau_for_usage(latent, 0.5, motion=motion)
    assert redundancy_mask(latent, tau, motion=motion).usage == pytest.approx(0.5, abs=0.02)


def test_streamed_motion_masks_equal_offline():
    latent = panning(8, (0.5, -1.0), seed=4)
    motion = estimate_motion(latent)
    offline = redundancy_mask(latent, 0.1, motion=motion)
    first = redundancy_mask(latent[:, :, :3], 0.1, motion=motion[:, :3])
    rest_motion = estimate_motion(latent[:, :, 3:], previous=latent[:, :, 2])
    assert torch.equal(rest_motion, motion[:, 3:])  # the frame before a chunk is all the estimate needs
    second = redundancy_mask(latent[:, :, 3:], 0.1, state=first.state, motion=rest_motion)
    assert torch.equal(torch.cat([first.keep, second.keep], dim=1), offline.keep)
