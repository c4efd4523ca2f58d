"""The lit guard: how far to trust the inpainter, decided by the encoder, which has the true latent.

By default, weights: per latent frame and square of ``LIT_TILE`` x ``LIT_TILE`` positions, the weight ``a``
(a multiple of 1/8 in [0, 2]) that brings ``hold + a (lit - hold)`` closest to the truth on the square's dropped
positions, in the inpainter's decoder metric (least squares, so never further than hold).  ``fill="lit"``
restores exactly that.  Codecs call this weighted prediction: the inpainter proposes a correction, the encoder
says how much of it to apply where.  The codes go into the ``.latok`` header, about 0.2-0.6 % of a file.

The older guard, one lit/hold flag per latent frame (``lit_tile=0``), decides by latent error with a margin,
or on decoded pixels (``pixel_guard``); ``fill="lit"`` falls back to hold on the frames flagged False.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from latok.codec.restore.fills import hold_fill
from latok.codec.restore.resolve import Inpainters, guarded
from latok.codec.tokens import LIT_WEIGHT_STEPS, MAX_LIT_CODE, MAX_LIT_CODES, AdaptiveLatent, scatter
from latok.errors import InvalidInputError
from latok.io import to_8bit_levels

if TYPE_CHECKING:
    from latok.vae import VideoAutoencoder

# Latent and pixel error disagree (lit can cut a frame's latent error and still decode further from the
# input), so the latent guard asks for a margin.  0.05 is the margin with the best mean gain among those whose
# worst case loses at most 0.1 dB against hold, on the pool validation split's 18 clips at the default rate and
# usage 0.3, 0.5 and 0.8 (eval/results/guard_study_pool_val.md: +0.30 dB over hold on average, against +0.14 for
# the 0.3 chosen before on DAVIS sequences for the previous inpainter).
LIT_GUARD_MARGIN = 0.05
# One weight per 4 x 4 latent positions (the block motion's grid): on the pool validation split's 18 clips at the
# default rate and usage 0.3, 0.5 and 0.8, the smallest square whose codes stay under 1 % of the file at every rate;
# +0.51 dB over hold at usage 0.5 against +0.36 for one flag a frame (eval/results/blend_study_pool_val.md).
LIT_TILE = 4


def decide_lit_guard(
    adaptive: AdaptiveLatent,
    latent: torch.Tensor,
    inpainters: Inpainters,
    vae: VideoAutoencoder | None = None,
    video: torch.Tensor | None = None,
    margin: float = LIT_GUARD_MARGIN,
    tile: int = LIT_TILE,
) -> tuple[AdaptiveLatent, torch.Tensor]:
    """``adaptive`` with its lit guard, and, from the same inpainter run, the guarded restoration (what fill
    ``auto`` restores the tokens to).

    ``tile`` > 0: weights per latent frame and ``tile`` x ``tile`` positions (:func:`lit_weight_codes`), unless the
    clip needs more than ``MAX_LIT_CODES`` of them.  Else (or ``tile`` 0): one flag per latent frame, lit where the inpainter restores the dropped positions closer
    to ``latent`` (the truth) than hold, by at least ``margin`` of hold's error, else hold; with ``video``
    (``(1, 3, T, H, W)`` in ``[-1, 1]``) and ``vae``, the frames where lit wins at all are decided again on
    decoded pixels (the pixel guard).

    Errors are in the inpainter's decoder metric when it has one (about the decoded pixel error), else in
    plain latent units, and are decided on the stored (rounded) values, exactly as a decoder will see them."""
    model = inpainters.model
    keep = adaptive.keep
    sparse = scatter(adaptive)
    truth = latent.float().cpu()
    lit = inpainters.run(sparse, keep, adaptive.tau, adaptive.reference, model=model, motion=adaptive.motion, weights=adaptive.rule_weights)
    with torch.inference_mode():
        hold = hold_fill(sparse, keep, adaptive.motion)
        _, _, frames, height, width = adaptive.shape
        if tile and video is None and frames * -(-height // tile) * -(-width // tile) <= MAX_LIT_CODES:
            codes = lit_weight_codes(model, lit, hold, truth, keep, tile)
            frames = (codes > 0).flatten(1).any(1)
            adaptive = replace(adaptive, lit_frames=tuple(frames.tolist()), lit_model=model.fingerprint, lit_weights=codes, lit_tile=tile)
            return adaptive, guarded(lit, hold, adaptive.lit_guard())
        lit_error, hold_error = model.error(lit, truth, keep)[0], model.error(hold, truth, keep)[0]
    if video is not None:
        frames = guard_by_decoded_pixels(vae, lit, hold, lit_error < hold_error, video)
    else:
        frames = guard_by_latent_error(lit_error, hold_error, margin)
    restored = torch.where(frames.to(lit.device).view(1, 1, -1, 1, 1), lit, hold)
    return replace(adaptive, lit_frames=tuple(frames.tolist()), lit_model=model.fingerprint, lit_weights=None, lit_tile=None), restored


def lit_weight_codes(model, lit: torch.Tensor, hold: torch.Tensor, truth: torch.Tensor, keep: torch.Tensor, tile: int) -> torch.Tensor:
    """uint8 ``(t, ceil(h / tile), ceil(w / tile))``: per latent frame and square of ``tile`` x ``tile`` positions, the
    least-squares weight ``a = <d, e> / <d, d>`` of lit's correction ``d = lit - hold`` against hold's error
    ``e = truth - hold`` on the square's dropped positions (in ``model``'s decoder metric when it has one), as
    ``round(a * LIT_WEIGHT_STEPS)`` clipped to ``[0, MAX_LIT_CODE]``; 0 where nothing was dropped.

    ``lit``, ``hold``, ``truth``: ``(1, C, t, h, w)``; ``keep``: ``(1, t, h, w)``."""
    drop = (~keep).unsqueeze(1).to(lit)
    correction, error = (lit - hold) * drop, (truth - hold) * drop
    if model.config.decoder_metric:
        factor = torch.linalg.cholesky(model.decoder_metric.float()).to(lit)  # G = L L^T: <x, y>_G = <L^T x, L^T y>
        correction, error = (torch.einsum("bcthw,cd->bdthw", x, factor) for x in (correction, error))

    def per_square(field: torch.Tensor) -> torch.Tensor:  # (1, t, h, w) -> (t, gh, gw) sums
        return torch.nn.functional.avg_pool2d(field[0].unsqueeze(1), tile, ceil_mode=True, divisor_override=1).squeeze(1)

    power, agreement = per_square(correction.pow(2).sum(1)), per_square((correction * error).sum(1))
    weight = torch.where(power > 0, agreement / power.clamp_min(torch.finfo(power.dtype).tiny), torch.zeros_like(power))
    return (weight * LIT_WEIGHT_STEPS).round().clamp(0, MAX_LIT_CODE).to(torch.uint8)


def guard_by_latent_error(lit_error: torch.Tensor, hold_error: torch.Tensor, margin: float = LIT_GUARD_MARGIN) -> torch.Tensor:
    """``(t,)`` bool: lit on the frames where its error is at most ``(1 - margin)`` x hold's.

    ``lit_error``, ``hold_error``: ``(t,)`` squared errors on the dropped positions per latent frame."""
    return lit_error <= (1.0 - margin) * hold_error


def check_per_frame(vae: VideoAutoencoder) -> None:
    """The pixel guard decodes single frames: only a backend that decodes every frame on its own allows it."""
    if vae.temporal_ratio != 1:
        raise InvalidInputError(f"the pixel guard needs a per-frame backend (temporal ratio 1); {vae.name} has {vae.temporal_ratio}")


def guard_by_decoded_pixels(
    vae: VideoAutoencoder,
    lit: torch.Tensor,
    hold: torch.Tensor,
    candidates: torch.Tensor,
    video: torch.Tensor,
) -> torch.Tensor:
    """``candidates`` (``(t,)`` bool) narrowed to the frames whose decoded ``lit`` pixels are
    closer to ``video`` than ``hold``'s, on the 8-bit scale the decoded video is written at.

    ``lit``, ``hold``: restored ``(1, C, t, h, w)`` latents; ``video``: ``(1, 3, t, H, W)`` in ``[-1, 1]``.
    A per-frame backend decodes every frame on its own, so only the candidate frames are
    decoded (twice), and a clip's squared error is the sum of its frames': choosing per frame
    can only lower it below hold's."""
    check_per_frame(vae)
    if video.shape[2] != lit.shape[2]:
        raise InvalidInputError(f"video has {video.shape[2]} frames, the latent {lit.shape[2]}")
    index = candidates.nonzero().flatten()
    if index.numel() == 0:
        return candidates
    size = (index.numel(), video.shape[-2], video.shape[-1])
    reference = to_8bit_levels(video[:, :, index.to(video.device)].float().cpu())  # (1, 3, n, H, W)

    def frame_errors(restored: torch.Tensor) -> torch.Tensor:
        decoded = vae.decode(restored[:, :, index], size=size).float().cpu()
        return (to_8bit_levels(decoded) - reference).pow(2).sum(dim=(0, 1, 3, 4))  # (n,)

    chosen = candidates.clone()
    chosen[index] = frame_errors(lit) < frame_errors(hold)  # ties keep hold
    return chosen
