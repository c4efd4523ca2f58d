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
searches tau over mask + hold passes (no decode, no inpainter): from a start (the backend's fixed tau),
doubling or halving until the budget is bracketed, then bisecting in log tau to ``TAU_TOLERANCE`` of tau,
about 9 passes a clip where a plain bisection of [0, ceiling] took 17 (eval/results/motion_under_load.md).

The map is fitted on the pool and errs on footage unlike it.  So where the encoder has the input video and the
backend decodes frame by frame, it checks the prediction once (:func:`checked_calibration`): it decodes a few
frames (:func:`check_frames`) of the full-rate latent and of the default decode at the predicted tau, scales the
map by measured over predicted loss, and searches tau again (``CodecSettings.quality_check_frames``).

A stream runs both per chunk, on the chunk as it is masked and restored there: :func:`hold_error` takes the selection
cache C_sel the rule carries in and the restored frames C_fill the hold continues from (:mod:`latok.codec.streams`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from latok.codec.restore.fills import hold_fill, with_context
from latok.codec.rule.masking import MaskState, Reference, in_rule_metric, redundancy_mask, tau_ceiling
from latok.codec.tokens import check_target_quality
from latok.io import to_8bit_levels

# decoded frames the encoder checks a prediction on (0: trust it): at the 0.5 dB target on the pool validation split, the
# smallest per-clip spread of loss with the mean within the target (eval/results/quality_target_val.md)
QUALITY_CHECK_FRAMES = 2
# How far one check may move the map.  Lowering it raises tau, past where the check looked: the loss can then grow
# faster than the map says (where the inpainter did well at the first tau, its holes grow), so at most 2x that way;
# chosen on the pool validation split with the check frames (eval/results/quality_target_val_floors.md).
CHECK_FACTOR_RANGE = (0.5, 4.0)
TAU_TOLERANCE = 0.02  # tau to 2 % of itself: finer than the loss it changes can be predicted
SMALLEST_TAU = 2.0**-16  # of the ceiling: below it, keep everything


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


def hold_error(latent: torch.Tensor, tau: float, sensitivity: Sequence[float] | None, reference: Reference = "last-kept",
               keyframe_interval: int | None = None, motion: torch.Tensor | None = None, weights: Sequence[float] | None = None,
               measured: torch.Tensor | None = None, state: MaskState | None = None, context: torch.Tensor | None = None) -> float:  # fmt: skip
    """:func:`weighted_error` of the motion-compensated hold of ``latent`` masked at ``tau`` (``measured``: the latent
    in the rule's metric, when the caller has it).  A stream chunk is masked and held as the stream does it: ``state``,
    the selection cache C_sel the rule carries in, and ``context``, the restored frames C_fill ``(1, C, n, h, w)`` before it."""
    latent = latent.float()
    measured = in_rule_metric(latent, weights) if measured is None else measured
    keep = redundancy_mask(measured, tau, reference, keyframe_interval, state, motion=motion).keep
    inputs, known, held_motion, n = with_context(context, latent * keep.unsqueeze(1), keep, motion)
    return weighted_error(hold_fill(inputs, known, held_motion)[:, :, n:], latent, sensitivity)


def check_frames(frames: int, count: int = QUALITY_CHECK_FRAMES) -> list[int]:
    """Up to ``count`` latent frames spread evenly over a clip of ``frames``, never the first (kept whole, it
    loses nothing)."""
    if frames < 2 or count < 1:
        return []
    return torch.linspace(1, frames - 1, min(count, frames - 1)).round().long().unique().tolist()


def decoded_loss(vae, restored: torch.Tensor, latent: torch.Tensor, video: torch.Tensor, frames: list[int]) -> float:
    """PSNR loss (dB) of ``restored`` against the full-rate ``latent``, both decoded at latent ``frames`` (a per-frame
    backend) and compared with those frames of ``video`` (``(1, 3, T, H, W)`` in ``[-1, 1]``) on the 8-bit scale."""
    index = torch.tensor(frames)
    reference = to_8bit_levels(video[:, :, index.to(video.device)].float().cpu())
    size = (len(frames), video.shape[-2], video.shape[-1])

    def mse(x: torch.Tensor) -> float:
        return float((to_8bit_levels(vae.decode(x[:, :, index.to(x.device)], size=size).float().cpu()) - reference).pow(2).mean())

    full, filled = mse(latent), mse(restored)
    return 10.0 * math.log10(max(filled, 1e-12) / max(full, 1e-12))


def checked_calibration(calibration: QualityCalibration, predicted_db: float, measured_db: float) -> QualityCalibration:
    """``calibration`` scaled by measured over predicted loss at one tau (within ``CHECK_FACTOR_RANGE``)."""
    low, high = CHECK_FACTOR_RANGE
    factor = high if predicted_db <= 0 else min(max(measured_db / predicted_db, low), high)
    return QualityCalibration(scale=calibration.scale * factor, exponent=calibration.exponent)


def tau_for_quality(
    latent: torch.Tensor,
    loss_db: float,
    calibration: QualityCalibration,
    sensitivity: Sequence[float] | None,
    reference: Reference = "last-kept",
    keyframe_interval: int | None = None,
    motion: torch.Tensor | None = None,
    weights: Sequence[float] | None = None,
    start: float | None = None,
    state: MaskState | None = None,
    context: torch.Tensor | None = None,
) -> float:
    """The largest tau (to within ``TAU_TOLERANCE`` of itself) whose predicted loss stays within ``loss_db`` for
    ``latent`` ``(1, C, t, h, w)`` and its ``motion``; 0 (keep everything) when even the smallest drop would
    exceed it.  ``weights``: the rule's channel weights (:func:`~latok.codec.tokens.rule_weights`; ``None``: the
    plain rule).  ``start``: where the search begins (a tau near the answer saves passes; default: mid-range).
    ``state``, ``context``: a stream chunk's, as :func:`hold_error` takes them."""
    check_target_quality(loss_db)
    budget = calibration.error_for(loss_db)
    latent = latent.float()
    measured = in_rule_metric(latent, weights)

    def fits(tau: float) -> bool:
        return hold_error(latent, tau, sensitivity, reference, keyframe_interval, motion, measured=measured, state=state, context=context) <= budget

    ceiling = tau_ceiling(measured if state is None else torch.cat([state.reference[:, :, None].to(measured), measured], dim=2), motion)
    return _largest_within(fits, min(start or 0.5 * ceiling, ceiling), ceiling, SMALLEST_TAU * ceiling)


def _largest_within(fits, start: float, ceiling: float, floor: float) -> float:
    """The largest tau in [``floor``, ``ceiling``] with ``fits(tau)`` (to ``TAU_TOLERANCE`` of itself), for ``fits``
    true below some tau and false above it; 0 when not even ``floor`` fits.  Brackets the answer by doubling or
    halving from ``start``, then bisects in log tau."""
    if fits(start):
        low, high = start, None
        while high is None:
            if 2 * low >= ceiling:
                if fits(ceiling):
                    return ceiling
                high = ceiling
            elif fits(2 * low):
                low *= 2
            else:
                high = 2 * low
    else:
        low, high = None, start
        while low is None:
            if high / 2 < floor:
                return 0.0
            if fits(high / 2):
                low = high / 2
            else:
                high /= 2
    while high > low * (1 + TAU_TOLERANCE):
        middle = math.sqrt(low * high)
        if fits(middle):
            low = middle
        else:
            high = middle
    return low
