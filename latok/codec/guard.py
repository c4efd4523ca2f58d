"""The lit guard: per latent frame, restore dropped positions with lit or with hold?

The encoder has the true latent and the decoder does not, so the encoder decides, once,
on which latent frames the inpainter beats hold, and stores one bit per frame in the
``.latok`` header (:meth:`latok.codec.tokenizer.LatentTokenizer.guard_lit`).  Two ways to decide:

- **latent** (default, no decoder pass): lit's squared error on the dropped positions, in
  the inpainter's decoder metric, must be at most ``(1 - margin)`` x hold's.
- **pixel** (opt-in): the frames where lit wins in latent error at all are decoded with
  both fills and keep lit only where the decoded frame is closer to the input.  The
  decoder metric measures the distance to the reconstruction of the true latent; the
  distance to the input adds a cross term with the autoencoder's own reconstruction
  error, which only a decode shows.
"""

from __future__ import annotations

import torch

from latok.errors import InvalidInputError
from latok.io import to_8bit_levels
from latok.vae import VideoAutoencoder

# Latent and pixel error disagree (on bikes.mp4 at usage 0.5 lit cuts the latent error by ~20 % on
# seven frames and loses 0.6-1.1 dB on each in pixels), so the latent guard asks for a margin.  0.3 is
# the margin with the best mean gain among those whose worst clip loses at most 0.1 dB, on 30 clip x
# rate cases that are not evaluation clips, for the shipped checkpoint (eval/results/guard_study_tune.md).
LIT_GUARD_MARGIN = 0.3


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
