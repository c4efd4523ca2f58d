"""A quality target: per clip, the largest tau whose restored latent stays within a PSNR loss budget.

A fixed tau gives every clip a different loss: near nothing on a busy clip that keeps almost every token,
a decibel on a quiet one.  The encoder holds the true latent, so it can measure what a tau will cost
before it decides, as a constant-quality mode (x264's CRF) does: the bits vary, the quality does not.

The cost of a tau is the error of the motion-compensated hold (the fill the default decode falls back to,
and the input the inpainter refines) against the true latent, weighted per channel by the decoder's
sensitivity squared (:attr:`~latok.vae.base.VideoAutoencoder.value_sensitivity`: about the squared pixel
error a latent error causes), averaged over the clip's positions.  A backend's
:class:`QualityCalibration`, fitted on the pool's training clips (``eval/quality_target.py``), maps it to
decibels of PSNR lost by the default decode against the full-rate decode.  :func:`tau_for_quality`
bisects tau over mask + hold passes: no decode, no inpainter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from latok.codec.restore.fills import hold_fill
from latok.codec.rule.masking import Reference, in_rule_metric, redundancy_mask, tau_ceiling
from latok.codec.tokens import check_target_quality

BISECTION_STEPS = 16  # tau to 2^-16 of its range: finer than the loss it changes can be predicted


@dataclass(frozen=True)
class QualityCalibration:
    """``loss_db = scale * error ** exponent``: the default decode's PSNR loss against full rate, from the
    weighted hold error of :func:`weighted_error` (fitted in log-log on a backend's calibration clips)."""

    scale: float
    exponent: float

    def loss_db(self, error: float) -> float:
        return self.scale * max(error, 0.0) ** self.exponent

    def error_for(self, loss_db: float) -> float:
        """The weighted error at which the predicted loss is ``loss_db``."""
        return (loss_db / self.scale) ** (1.0 / self.exponent)


def weighted_error(restored: torch.Tensor, latent: torch.Tensor, sensitivity: Sequence[float] | None) -> float:
    """Mean over the ``(B, C, t, h, w)`` latent's positions of ``sum_c s_c^2 (restored - latent)_c^2`` (``s``:
    the backend's per-channel decoder sensitivity; ``None`` weighs every channel 1)."""
    squared = (restored.float() - latent.float()).pow(2)
    if sensitivity is not None:
        squared = squared * torch.tensor(sensitivity, dtype=torch.float32, device=squared.device).pow(2).view(1, -1, 1, 1, 1)
    return float(squared.sum(dim=1).mean())


def tau_for_quality(
    latent: torch.Tensor,
    loss_db: float,
    calibration: QualityCalibration,
    sensitivity: Sequence[float] | None,
    reference: Reference = "last-kept",
    keyframe_interval: int | None = None,
    motion: torch.Tensor | None = None,
    weights: Sequence[float] | None = None,
) -> float:
    """The largest tau (to within the bisection) whose predicted loss stays within ``loss_db`` for ``latent``
    ``(1, C, t, h, w)`` and its ``motion``; 0 (keep everything) when even the smallest drop would exceed it.
    ``weights``: the rule's channel weights (:func:`~latok.codec.tokens.rule_weights`; ``None``: the plain rule)."""
    check_target_quality(loss_db)
    budget = calibration.error_for(loss_db)
    latent = latent.float()
    measured = in_rule_metric(latent, weights)

    def error(tau: float) -> float:
        keep = redundancy_mask(measured, tau, reference, keyframe_interval, motion=motion).keep
        return weighted_error(hold_fill(latent * keep.unsqueeze(1), keep, motion), latent, sensitivity)

    low, high = 0.0, tau_ceiling(measured, motion)
    if error(high) <= budget:
        return high
    for _ in range(BISECTION_STEPS):
        middle = 0.5 * (low + high)
        if error(middle) <= budget:
            low = middle
        else:
            high = middle
    return low
