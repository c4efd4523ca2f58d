"""latok's rule and the baseline allocation policies (DESIGN.md, "Baselines")."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from latok.codec.rule.masking import redundancy_mask, tau_for_usage
from latok.codec.rule.motion import estimate_motion
from latok.codec.format.coders.values import position_bits
from latok.errors import InvalidInputError
from latok.evaluation.baselines.base import Allocation, AllocationContext, final_passes, register_allocator, top_fraction


@register_allocator("latok")
class TemporalL1:
    """latok: drop positions whose latent barely changed (mean_c |dz| < tau), against the reference warped by
    the tokenizer's ``motion`` model when it has one, as :class:`~latok.LatentTokenizer` masks.  No decoder pass.

    ``tau``: the threshold (default: the backend's calibrated one, ``context.default_tau``)."""

    def __init__(self, tau: float | None = None, reference: str = "last-kept", motion: str = "none"):
        self.tau, self.reference, self.motion = tau, reference, motion

    def allocate(self, context: AllocationContext) -> Allocation:
        motion = None if self.motion == "none" else estimate_motion(context.latent, model=self.motion)
        if context.target_usage is not None:
            tau = tau_for_usage(context.latent, context.target_usage, self.reference, motion=motion)
        elif self.tau is not None or context.default_tau is not None:
            tau = self.tau if self.tau is not None else context.default_tau
        else:
            raise InvalidInputError("latok's allocator needs a tau: the backend has no calibrated one")
        keep = redundancy_mask(context.latent, tau, self.reference, motion=motion).keep
        return Allocation(keep, final_passes(context), {"tau": tau}, motion=motion)


def smallest_passing(low: int, high: int, passes: Callable[[int], bool]) -> tuple[int, int]:
    """Smallest ``n`` in ``[low, high]`` with ``passes(n)``, for ``passes`` monotone in ``n``; ``high``
    when none passes below it.  Returns ``(n, evaluations)``.

    ElasticTok's published loop moves the upper bound to ``mid - 1`` on success, so it can
    stop one below the smallest passing ``n`` (keeping one token too few and missing the
    threshold); here the bound moves to ``mid``, which keeps the invariant "``high`` passes
    or is the maximum" and ends exactly on the answer.
    """
    evaluations = 0
    while low < high:
        middle = (low + high) // 2
        evaluations += 1
        if passes(middle):
            high = middle
        else:
            low = middle + 1
    return low, evaluations


@register_allocator("elastictok")
class ElasticSearch:
    """ElasticTok-style: per block of ``block`` latent frames, binary-search the number of kept
    positions (strongest temporal difference first) until the block's pixel MSE in [-1, 1]
    falls below ``mse_threshold``.  Every probe fills the clip up to the block and decodes the block."""

    def __init__(self, block: int = 4, mse_threshold: float = 0.003):
        if block < 1 or not mse_threshold > 0:
            raise InvalidInputError(f"elastictok needs block >= 1 and mse_threshold > 0, got {block}, {mse_threshold}")
        self.block, self.mse_threshold = block, mse_threshold

    def allocate(self, context: AllocationContext) -> Allocation:
        latent, video = context.latent, context.video
        if context.temporal_ratio != 1:
            raise InvalidInputError("the elastictok search decodes latent blocks on their own: per-frame backends only")
        frames = latent.shape[2]
        score = redundancy_mask(latent, 0.0, "previous").distance  # (1, t, h, w); inf on frame 0
        keep = torch.zeros_like(score, dtype=torch.bool)
        passes = final_passes(context)
        probes = 0
        for start in range(0, frames, self.block):
            stop = min(start + self.block, frames)
            block_score = score[:, start:stop].flatten()
            order = block_score.argsort(descending=True)
            forced = int(torch.isinf(block_score).sum())
            target = video[:, :, start:stop]

            def kept_with(n: int) -> torch.Tensor:
                chosen = torch.zeros_like(block_score, dtype=torch.bool)
                chosen[order[:n]] = True
                trial = keep[:, :stop].clone()
                trial[:, start:stop] = chosen.view_as(keep[:, start:stop])
                return trial

            def passes_threshold(n: int) -> bool:
                trial = kept_with(n)
                dense = context.fill(latent[:, :, :stop] * trial.unsqueeze(1), trial)
                decoded = context.decode(dense, slice(start, stop))
                return F.mse_loss(decoded.float(), target.float()).item() < self.mse_threshold

            n, evaluations = smallest_passing(forced, block_score.numel(), passes_threshold)
            keep[:, :stop] = kept_with(n)
            probes += evaluations
            share = (stop - start) / frames
            passes.decoder += evaluations * share
            if context.fill_is_model:
                passes.inpainter += evaluations * stop / frames
        return Allocation(keep, passes, {"probes": probes})


@register_allocator("infotok")
class InformationRouter:
    """InfoTok-style: rank latent positions by their information and keep the top ``target_usage``
    (default ``rate``).  InfoTok's router reads a position's information off a full-rate pass; with the
    same frozen VAE, the closest stand-in latok has is each position's coded cost in bits under its own
    value coder at full rate (:func:`latok.codec.format.coders.values.position_bits`: its surprise given the position one
    frame before).  The full-rate decode InfoTok's router needs is run and counted, so its timing stays
    InfoTok's: 1 encode + 2 decodes."""

    def __init__(self, rate: float = 0.5):
        self.rate = rate

    def allocate(self, context: AllocationContext) -> Allocation:
        latent = context.latent
        context.decode(latent, slice(0, latent.shape[2]))  # the full-rate pass of InfoTok's router
        if context.value_steps is None:
            raise InvalidInputError("the infotok router ranks by coded bits: it needs the backend's value steps")
        score = position_bits(latent, context.value_steps).to(latent.device)
        usage = self.rate if context.target_usage is None else context.target_usage
        passes = final_passes(context)
        passes.decoder += 1.0
        return Allocation(top_fraction(score, usage), passes, {"rate": usage})


@register_allocator("rlt")
class PixelRunLength:
    """RLT-style: mean |dx| between consecutive frames of the ImageNet-normalised pixel patch under
    each latent cell; dropped below ``tau`` (0.1), or the top ``target_usage`` kept.  No decoder pass."""

    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, tau: float = 0.1):
        self.tau = tau

    def allocate(self, context: AllocationContext) -> Allocation:
        latent, video = context.latent, context.video
        mean = torch.tensor(self.MEAN, device=video.device).view(1, 3, 1, 1, 1)
        std = torch.tensor(self.STD, device=video.device).view(1, 3, 1, 1, 1)
        pixels = ((video.float() + 1) / 2 - mean) / std
        change = torch.zeros_like(pixels[:, :1])
        change[:, :, 1:] = (pixels[:, :, 1:] - pixels[:, :, :-1]).abs().mean(dim=1, keepdim=True)
        score = _pool_to_cells(change, latent.shape[2:])
        score[:, 0] = math.inf
        if context.target_usage is not None:
            keep = top_fraction(score, context.target_usage)
        else:
            keep = score >= self.tau
        return Allocation(keep, final_passes(context), {"tau": self.tau})


@register_allocator("fixed")
class FixedRate:
    """Fixed rate: ``random`` keeps a uniform random ``target_usage`` (default ``rate``) of the
    positions after frame 0; ``frames`` keeps every k-th latent frame whole, k = round(1 / rate)."""

    def __init__(self, rate: float = 0.5, mode: str = "random", seed: int = 0):
        if mode not in ("random", "frames"):
            raise InvalidInputError(f"fixed allocator mode must be random or frames, got {mode!r}")
        self.rate, self.mode, self.seed = rate, mode, seed

    def allocate(self, context: AllocationContext) -> Allocation:
        latent = context.latent
        usage = self.rate if context.target_usage is None else context.target_usage
        if self.mode == "frames":
            keep = torch.zeros(1, *latent.shape[2:], dtype=torch.bool, device=latent.device)
            keep[:, :: max(1, round(1 / usage))] = True
        else:
            generator = torch.Generator().manual_seed(self.seed)
            score = torch.rand(1, *latent.shape[2:], generator=generator).to(latent.device)
            keep = top_fraction(score, usage)
        return Allocation(keep, final_passes(context), {"rate": usage, "mode": self.mode})


def _pool_to_cells(pixels: torch.Tensor, latent_size) -> torch.Tensor:
    """``(1, 1, T, H, W)`` per-pixel scores -> ``(1, t, h, w)`` means over each latent cell's footprint."""
    return F.adaptive_avg_pool3d(pixels.float(), tuple(latent_size))[:, 0]
