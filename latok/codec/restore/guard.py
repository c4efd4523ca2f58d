"""The lit guard: per latent frame, does the inpainter beat hold there?  Decided by the encoder, which has the true latent.

By latent error (default, with a margin), or on decoded pixels (``pixel_guard``).  One flag per latent
frame goes into the ``.latok`` header; ``fill="lit"`` falls back to hold on the frames flagged False.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from latok.codec.restore.fills import hold_fill
from latok.codec.restore.resolve import Inpainters
from latok.codec.tokens import AdaptiveLatent, scatter
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


def decide_lit_guard(
    adaptive: AdaptiveLatent,
    latent: torch.Tensor,
    inpainters: Inpainters,
    vae: VideoAutoencoder | None = None,
    video: torch.Tensor | None = None,
    margin: float = LIT_GUARD_MARGIN,
) -> tuple[AdaptiveLatent, torch.Tensor]:
    """``adaptive`` with its lit guard: per latent frame, does the inpainter restore the dropped
    positions closer to ``latent`` (the truth) than hold does, by at least ``margin`` of hold's error?
    And, from the same inpainter run, the guarded restoration: lit on the frames the guard picks, hold
    elsewhere, what fill ``auto`` restores the tokens to.

    Errors are squared errors in the inpainter's decoder metric when it has one (about the decoded
    pixel error), else in plain latent units, and are decided on the stored (rounded) values,
    exactly as a decoder will see them.  With ``video`` (``(1, 3, T, H, W)`` in ``[-1, 1]``) and
    ``vae``, the frames where lit wins at all are decided again on decoded pixels (the pixel guard)."""
    model = inpainters.model
    keep = adaptive.keep
    sparse = scatter(adaptive)
    truth = latent.float().cpu()
    lit = inpainters.run(sparse, keep, adaptive.tau, adaptive.reference, model=model, motion=adaptive.motion, weights=adaptive.rule_weights)
    with torch.inference_mode():
        lit_error = model.error(lit, truth, keep)[0]
        hold = hold_fill(sparse, keep, adaptive.motion)
        hold_error = model.error(hold, truth, keep)[0]
    if video is not None:
        frames = guard_by_decoded_pixels(vae, lit, hold, lit_error < hold_error, video)
    else:
        frames = guard_by_latent_error(lit_error, hold_error, margin)
    restored = torch.where(frames.to(lit.device).view(1, 1, -1, 1, 1), lit, hold)
    return replace(adaptive, lit_frames=tuple(frames.tolist()), lit_model=model.fingerprint), restored


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
