"""Global motion: one translation per latent frame, estimated from the latents.

Per latent frame t, the translation ``v[t] = (dy, dx)`` that best maps frame t-1 onto frame t: an
integer search within ``radius`` minimising the mean |z[t] - shift(z[t-1], v)| over the frames' overlap,
then two refinements at half and quarter steps with bilinear warping.  No network and no parameters:
estimated, not learned.

The models search each pair of frames on its ``SEARCH_CHANNELS`` principal channels (:func:`principal_channels`:
the directions in which the pair's latent pixels vary most), several pairs a pass (:func:`estimate_pairs`).
On taef2's 32-channel latents and the pool's validation split, 4 principal channels were 2.8x faster than
searching every channel a frame at a time and their motion-compensated hold +0.10 dB better (no clip worse
by more than 0.03 dB); 2 channels lost 0.12 dB on a clip, 8 and 16 gained less (eval/results/motion_search_val.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from latok.codec.rule.motion import DEFAULT_RADIUS, candidate_differences, register_motion
from latok.errors import InvalidInputError

REFINEMENT_STEPS = (0.5, 0.25)
SEARCH_CHANNELS = 4  # principal channels a pair of frames is searched on (chosen on pool_val: motion_search_val.md)
PIXELS_PER_PASS = 1 << 15  # frame pairs are searched together up to this many latent pixels (240p: 21 pairs a pass)


@register_motion("global")
class GlobalMotion:
    """One (dy, dx) per latent frame: ``(B, t, 2)``."""

    per_block = False

    def estimate(self, latent: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        return estimate_pairs(latent, previous, (2,), estimate_shift)


def estimate_pairs(latent: torch.Tensor, previous: torch.Tensor | None, shape: tuple[int, ...], search) -> torch.Tensor:
    """``(B, t, *shape)``: ``search(current, before)`` (frames ``(N, C', h, w)`` -> ``(N, *shape)``) for every frame of
    ``latent`` ``(B, C, t, h, w)`` against the frame before it (frame 0 against ``previous``; zero without one),
    each pair on its :func:`principal_channels`, as many pairs a pass as ``PIXELS_PER_PASS`` allows.  A pair's
    result depends on that pair alone, so a stream's chunks give the offline motion bit for bit."""
    batch, channels, frames, height, width = latent.shape
    sequence = latent.float().transpose(1, 2)  # (B, t, C, h, w)
    if previous is None:
        current, before = sequence[:, 1:], sequence[:, :-1]
    else:
        current, before = sequence, torch.cat([previous.float().unsqueeze(1), sequence[:, :-1]], dim=1)
    pairs = current.shape[1]
    current, before = current.flatten(0, 1), before.flatten(0, 1)
    step = max(1, PIXELS_PER_PASS // (height * width))
    motion = torch.zeros(batch, frames, *shape, device=latent.device)
    if pairs:
        found = [search(*principal_channels(current[i : i + step], before[i : i + step])) for i in range(0, batch * pairs, step)]
        motion[:, frames - pairs :] = torch.cat(found).unflatten(0, (batch, pairs))
    return motion


def principal_channels(current: torch.Tensor, previous: torch.Tensor, channels: int = SEARCH_CHANNELS) -> tuple[torch.Tensor, torch.Tensor]:
    """Both frames ``(N, C, h, w)`` projected, pair by pair, onto the ``channels`` eigenvectors of largest
    eigenvalue of that pair's channel covariance over its 2 h w pixels: ``(N, channels, h, w)`` each.  Fewer
    channels to compare, and the ones with structure: channels that only carry noise add noise to the
    matching cost.  A latent of ``channels`` channels or fewer is searched as it is."""
    current, previous = current.float(), previous.float()
    if current.shape[1] <= channels:
        return current, previous
    bases = []
    for now, before in zip(current, previous):  # one pair at a time: a pair's basis does not depend on its batch
        pixels = torch.cat([now.flatten(1), before.flatten(1)], dim=1)  # (C, 2 h w)
        pixels = pixels - pixels.mean(dim=1, keepdim=True)
        bases.append(torch.linalg.eigh(pixels @ pixels.T).eigenvectors[:, -channels:].T)  # (channels, C): eigh sorts ascending
    basis = torch.stack(bases)  # (N, channels, C)
    return (basis @ current.flatten(2)).unflatten(2, current.shape[-2:]), (basis @ previous.flatten(2)).unflatten(2, previous.shape[-2:])


def integer_differences(current: torch.Tensor, previous: torch.Tensor, radius: int = DEFAULT_RADIUS) -> torch.Tensor:
    """``(B, K, h, w)``: sum over channels of |current - previous moved by (dy, dx)| for every integer shift within
    ``radius``, K = (2 radius + 1)^2 in raster order (dy, then dx, from -radius), borders replicated (what
    :func:`warp` gives for them).  Computed once a frame, for the global and the block search both; slices of
    the padded frame, three contiguous ops each, measured faster than one strided pass over all shifts."""
    height, width = current.shape[-2:]
    current = current.float()
    padded = F.pad(previous.float(), (radius, radius, radius, radius), mode="replicate")
    shifts = range(-radius, radius + 1)
    differences = current.new_empty(current.shape[0], len(shifts) ** 2, height, width)
    scratch = torch.empty_like(current)  # one buffer for every shift: no allocation in the loop
    for k, (dy, dx) in enumerate((dy, dx) for dy in shifts for dx in shifts):
        torch.sub(current, padded[:, :, radius - dy : radius - dy + height, radius - dx : radius - dx + width], out=scratch)
        torch.sum(scratch.abs_(), dim=1, out=differences[:, k])
    return differences


def _search_order(radius: int) -> list[tuple[int, int]]:
    """Integer shifts within ``radius``, smallest first (ties keep the smaller shift: zero first)."""
    return sorted(((dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)), key=lambda v: (abs(v[0]) + abs(v[1]), v))


def first_minimum(best: torch.Tensor, best_error: torch.Tensor, candidates: torch.Tensor, errors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Among the incumbent ``best`` (``(B, 2, ...)``, error ``(B, ...)``) and ``candidates`` ``(B, K, 2, ...)`` (errors
    ``(B, K, ...)``), in that order, the first with the smallest error: what taking each in turn when strictly
    better gives, in one pass."""
    options = torch.cat([best.unsqueeze(1), candidates.expand(best.shape[0], *candidates.shape[1:])], dim=1)
    scores = torch.cat([best_error.unsqueeze(1), errors], dim=1)
    index = scores.argmin(dim=1, keepdim=True)  # the first of equal minima
    chosen = options.gather(1, index.unsqueeze(2).expand(-1, -1, 2, *index.shape[2:])).squeeze(1)
    return chosen, scores.gather(1, index).squeeze(1)


def refinement_candidates(centre: torch.Tensor, step: float) -> torch.Tensor:
    """``(B, 8, 2, ...)``: ``centre`` ``(B, 2, ...)`` moved by every nonzero step of (-step, 0, step)^2, dy major."""
    offsets = torch.tensor([(dy, dx) for dy in (-step, 0.0, step) for dx in (-step, 0.0, step) if dy or dx], device=centre.device)
    return centre.unsqueeze(1) + offsets.view(1, 8, 2, *([1] * (centre.ndim - 2)))


def estimate_shift(current: torch.Tensor, previous: torch.Tensor, radius: int = DEFAULT_RADIUS, differences: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, 2)`` float (dy, dx): the translation that best maps ``previous`` onto ``current``, both ``(B, C, h, w)``.

    Scored on the interior ``radius + 1`` pixels from each edge, where every candidate shift
    moves real content rather than replicated borders.  Ties keep the smaller shift (zero first).
    ``differences``: :func:`integer_differences` of the two frames, if the caller has them."""
    if current.shape != previous.shape or current.ndim != 4:
        raise InvalidInputError(f"estimate_shift needs two frames (B, C, h, w) of one shape, got {tuple(current.shape)}, {tuple(previous.shape)}")
    batch, channels, height, width = current.shape
    margin = radius + 1
    if radius < 1 or min(height, width) <= 2 * margin:
        return torch.zeros(batch, 2, device=current.device)
    current, previous = current.float(), previous.float()
    if differences is None:
        differences = integer_differences(current, previous, radius)
    order = _search_order(radius)
    side = 2 * radius + 1
    interior = differences[:, :, margin : height - margin, margin : width - margin].sum(dim=(2, 3))  # (B, K), raster order
    errors = interior[:, [(dy + radius) * side + dx + radius for dy, dx in order]]  # smallest shift first
    best_error, index = errors.min(dim=1)  # the first of equal minima: the smaller shift
    best = torch.tensor(order, dtype=torch.float32, device=current.device)[index]  # (B, 2)
    count = channels * (height - 2 * margin) * (width - 2 * margin)
    best_error = best_error / count  # the mean |difference| over the interior, as the candidates' below
    interior = (slice(margin, height - margin), slice(margin, width - margin))
    for step in REFINEMENT_STEPS:
        candidates = refinement_candidates(best, step)  # (B, 8, 2)
        errors = candidate_differences(current, previous, candidates, *interior).sum(dim=(2, 3)) / count
        best, best_error = first_minimum(best, best_error, candidates, errors)
    return best
