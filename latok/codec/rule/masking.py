"""Temporal-L1 redundancy masking: which latent positions to keep.

For every latent position (t, y, x), ``d = mean_c |z[t] - ref|`` and the position
is dropped when ``d < tau`` (arXiv 2606.06158, "Adaptive Tokenisation via
Temporal Redundancy Masking and Latent Inpainting").  Latent frame 0 is always
kept.  Two references:

- ``"last-kept"`` (default): the last *kept* value at that position, so slow
  drift accumulates until it crosses tau instead of being dropped forever;
- ``"previous"``: the previous latent frame, kept or not.

With ``"previous"`` the kept fraction never rises with tau.  With ``"last-kept"``
it does not rise on real footage, but adversarial oscillating sequences exist
where a larger tau keeps more (tests/test_masking.py shows one).

The rate-targeted mode picks tau per clip from the distribution of d so that a
requested fraction of positions is kept: one encoder pass, no decoder pass.

**The rule's metric.**  Latent channels matter very unequally to the decoder, so by default the codec
measures d in the decoder's metric, ``mean_c w_c |z_c - ref_c|`` with ``w`` the decoder's per-channel
sensitivities normalised to mean 1 (:func:`latok.codec.tokens.rule_weights`; a property of the frozen decoder, nothing fitted).
That is the plain rule on the latent scaled per channel, so the functions here take the scaled latent
(:func:`in_rule_metric`) and the motion estimated on the unscaled one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from latok.codec.rule.chain import MotionChain
from latok.codec.rule.motion import is_motion, one_thread
from latok.errors import InvalidInputError

Reference = Literal["last-kept", "previous"]
REFERENCES = ("last-kept", "previous")
MAX_TAU = 1e6  # latok's normalised latents are O(1); a tau this large keeps frame 0 only (and a .latok header holds no larger)
_BISECTION_STEPS = 40


def in_rule_metric(latent: torch.Tensor, weights: Sequence[float] | None) -> torch.Tensor:
    """``latent`` ``(B, C, ...)`` with channel c scaled by ``weights[c]``: what the rule compares (``None``: itself)."""
    if weights is None:
        return latent
    if len(weights) != latent.shape[1]:
        raise InvalidInputError(f"rule weights: one per channel ({latent.shape[1]}) expected, got {len(weights)}")
    return latent * torch.tensor(weights, dtype=latent.dtype, device=latent.device).view(1, -1, *([1] * (latent.ndim - 2)))


@dataclass(frozen=True)
class MaskState:
    """What the rule carries from one chunk of a stream to the next (the selection cache, C_sel).

    Attributes:
        reference: ``(B, C, h, w)`` the reference each position is compared against next.
        frames: latent frames masked so far (keyframes are counted from the stream's start).
        chain: with motion, where each position's reference lies (:class:`~latok.codec.rule.chain.MotionChain`).
    """

    reference: torch.Tensor
    frames: int
    chain: MotionChain | None = None


@dataclass(frozen=True)
class MaskResult:
    """A keep mask and its statistics.

    Attributes:
        keep: ``(B, t, h, w)`` bool, True where the latent position is kept.
        distance: ``(B, t, h, w)`` float32, d against the reference in force at
            that frame (``inf`` on frame 0 and on forced keyframes).
        tau: the threshold used.
    """

    keep: torch.Tensor
    distance: torch.Tensor
    tau: float
    state: MaskState | None = None

    @property
    def usage(self) -> float:
        """Kept positions / all positions."""
        return self.keep.float().mean().item()

    @property
    def usage_per_frame(self) -> torch.Tensor:
        """``(B, t)`` float: kept fraction of each latent frame."""
        return self.keep.float().mean(dim=(-2, -1))

    @property
    def kept(self) -> int:
        return int(self.keep.sum())


@one_thread()  # a frame loop of small ops: one thread does not wait on a busy second one (latok.codec.rule.motion.one_thread)
def redundancy_mask(
    latent: torch.Tensor,
    tau: float,
    reference: Reference = "last-kept",
    keyframe_interval: int | None = None,
    state: MaskState | None = None,
    motion: torch.Tensor | None = None,
) -> MaskResult:
    """Keep mask of the temporal-L1 rule.

    Args:
        latent: ``(B, C, t, h, w)`` normalised latents.
        tau: threshold on the channel-mean absolute difference; ``0`` keeps everything.
        reference: ``"last-kept"`` or ``"previous"``.
        keyframe_interval: keep every position of latent frames ``0, K, 2K, ...``; ``None`` for off.
        state: the previous chunk's :attr:`MaskResult.state` when masking a stream chunk by
            chunk; masking then continues where it stopped (no forced first frame), so
            chunked masks equal the mask of the whole stream.
        motion: ``(B, t, 2)`` per-frame translations, or ``(B, t, 2, gh, gw)`` per block (:func:`latok.codec.rule.motion.estimate_motion`);
            each position is compared against its reference followed along the motion composed since
            it was kept (:class:`~latok.codec.rule.chain.MotionChain`: one interpolation, however long
            ago), so content that only moved is dropped.  ``None``: positions are compared in place.

    Returns:
        A :class:`MaskResult` whose ``state`` continues the stream.
    """
    _check_args(latent, tau, reference, keyframe_interval)
    latent = latent.float()
    batch, channels, frames, height, width = latent.shape
    keep = torch.zeros(batch, frames, height, width, dtype=torch.bool, device=latent.device)
    distance = torch.full_like(keep, float("inf"), dtype=torch.float32)
    if state is None:
        keep[:, 0] = True
        ref, start, offset = latent[:, :, 0].clone(), 1, 0  # ref: (B, C, h, w), the running reference
    else:
        if state.reference.shape != (batch, channels, height, width):
            raise InvalidInputError(
                f"stream chunk latent {tuple(latent.shape)} does not continue a stream of (B, C, h, w) = {tuple(state.reference.shape)}"
            )
        ref, start, offset = state.reference.to(latent.device, torch.float32), 0, state.frames
    if motion is not None and not is_motion(motion, batch, frames, height, width):
        raise InvalidInputError(f"motion must be (B, t, 2) or (B, t, 2, gh, gw) per block for a {tuple(latent.shape)} latent, got {tuple(motion.shape)}")
    chain = None
    if motion is not None:
        chain = state.chain if state is not None and state.chain is not None else MotionChain.start(ref, offset + start - 1)
    for t in range(start, frames):
        current = latent[:, :, t]
        if chain is not None:
            chain = chain.follow(motion[:, t].to(latent.device))
            ref = chain.reference()
        d = (current - ref).abs().mean(dim=1)  # (B, h, w)
        kept = d >= tau
        if keyframe_interval and (offset + t) % keyframe_interval == 0:
            kept = torch.ones_like(kept)
        else:
            distance[:, t] = d
        keep[:, t] = kept
        ref = current if reference == "previous" else torch.where(kept.unsqueeze(1), current, ref)
        if chain is not None:
            chain = MotionChain.start(current, offset + t) if reference == "previous" else chain.commit(ref, kept, offset + t)
    return MaskResult(keep=keep, distance=distance, tau=float(tau), state=MaskState(ref.clone(), offset + frames, chain))


def tau_for_usage(
    latent: torch.Tensor,
    target_usage: float,
    reference: Reference = "last-kept",
    keyframe_interval: int | None = None,
    motion: torch.Tensor | None = None,
) -> float:
    """The tau at which :func:`redundancy_mask` keeps about ``target_usage`` of the positions
    (with ``motion``, of the motion-compensated rule).

    With ``"previous"`` d does not depend on tau, so tau is read off the sorted d
    exactly.  With ``"last-kept"`` it is found by bisection on tau (about 40 cheap
    mask passes); usage can only be matched to the granularity one position allows.
    Usages below the forced floor (frame 0 and keyframes) return the floor's tau.
    """
    if not 0.0 < target_usage <= 1.0:
        raise InvalidInputError(f"target usage must be in (0, 1], got {target_usage}")
    if target_usage >= 1.0:
        return 0.0
    previous = redundancy_mask(latent, 0.0, "previous", keyframe_interval, motion=motion)
    free = previous.distance[torch.isfinite(previous.distance)]
    if free.numel() == 0:
        return 0.0
    total = previous.keep.numel()
    wanted = round(target_usage * total) - (total - free.numel())  # positions to keep beyond the forced ones
    ceiling = tau_ceiling(latent, motion, float(free.max()))
    if wanted <= 0:
        return ceiling
    if reference == "previous":
        return float(free.sort(descending=True).values[min(wanted, free.numel()) - 1])
    low, high = 0.0, ceiling
    for _ in range(_BISECTION_STEPS):
        middle = 0.5 * (low + high)
        if redundancy_mask(latent, middle, reference, keyframe_interval, motion=motion).usage > target_usage:
            low = middle
        else:
            high = middle
    return high


def tau_ceiling(latent: torch.Tensor, motion: torch.Tensor | None = None, largest_step: float | None = None) -> float:
    """A tau above which nothing after frame 0 (and the keyframes) is kept, in either reference mode: no d
    against the previous frame (``largest_step``, its largest, if known), nor against frame 0 (the last-kept
    reference when nothing else is kept), reaches it."""
    latent = latent.float()
    if motion is None:
        from_first = (latent - latent[:, :, :1]).abs().mean(dim=1).max()
        if largest_step is None:
            largest_step = float((latent[:, :, 1:] - latent[:, :, :-1]).abs().mean(dim=1).max()) if latent.shape[2] > 1 else 0.0
    else:  # a compensated reference is a convex combination of latent values: no d exceeds twice the largest |z|
        from_first = 2 * latent.abs().max()
        largest_step = float(from_first)
    return max(largest_step, float(from_first)) * (1 + 1e-6) + 1e-6


def resolve_tau(
    latent: torch.Tensor | None,
    tau: float | None,
    target_usage: float | None,
    default_tau: float | None,
    backend: str = "this backend",
    reference: Reference = "last-kept",
    keyframe_interval: int | None = None,
    motion: torch.Tensor | None = None,
) -> float:
    """tau from exactly one of: an explicit ``tau``, a ``target_usage`` (picked for ``latent``, and
    its ``motion`` if the rule is motion-compensated), or ``default_tau``, the backend's calibrated threshold."""
    if tau is not None and target_usage is not None:
        raise InvalidInputError("give either tau or target usage, not both")
    if target_usage is not None:
        if latent is None:
            raise InvalidInputError("a target usage picks tau per clip: it needs the clip's latent")
        return tau_for_usage(latent, target_usage, reference, keyframe_interval, motion)
    if tau is not None:
        return float(tau)
    if default_tau is None:
        raise InvalidInputError(f"backend {backend} has no calibrated default tau; pass tau or target usage")
    return default_tau


def _check_args(latent: torch.Tensor, tau: float, reference: str, keyframe_interval: int | None) -> None:
    if not isinstance(latent, torch.Tensor) or latent.ndim != 5:
        shape = tuple(latent.shape) if isinstance(latent, torch.Tensor) else type(latent).__name__
        raise InvalidInputError(f"latent must be (B, C, t, h, w), got {shape}")
    check_rule(tau, None, reference, keyframe_interval)


def check_rule(tau: float | None, target_usage: float | None, reference: str, keyframe_interval: int | None) -> None:
    """Raise :class:`InvalidInputError` for settings of the rule it would refuse (``None``: not set)."""
    if tau is not None and (not (tau >= 0.0) or tau == float("inf")):
        raise InvalidInputError(f"tau must be a finite number >= 0, got {tau}")
    if target_usage is not None and not 0.0 < target_usage <= 1.0:
        raise InvalidInputError(f"target usage must be in (0, 1], got {target_usage}")
    if reference not in REFERENCES:
        raise InvalidInputError(f"reference must be one of {', '.join(REFERENCES)}, got {reference!r}")
    if keyframe_interval is not None and keyframe_interval < 1:
        raise InvalidInputError(f"keyframe interval must be >= 1 or None, got {keyframe_interval}")
