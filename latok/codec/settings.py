"""``CodecSettings``: every choice that shapes a clip's tokens, validated once, travelling together.

The tokenizer, the CLI and the evaluation build one; the rule, the quantiser and the lit guard read it;
the tokens (and so the ``.latok`` header) record what it decided.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from latok.codec.quantise import channel_steps
from latok.codec.restore.guard import LIT_GUARD_MARGIN, LIT_TILE
from latok.codec.restore.quality import QUALITY_CHECK_FRAMES
from latok.codec.rule.masking import MAX_TAU, Reference, check_rule
from latok.codec.rule.motion import motion_names
from latok.codec.tokens import RULE_METRICS, RuleMetric, check_target_quality, dtype_name
from latok.errors import InvalidInputError

MAX_LIT_TILE = 64  # latent positions a side of the lit guard's squares

@dataclass(frozen=True)
class CodecSettings:
    """How a clip is tokenized.

    Attributes:
        tau: threshold of the temporal-L1 rule; ``None``: the backend's calibrated default for ``motion``.
        target_usage: instead of tau, keep about this fraction of positions (tau picked per clip).
        target_quality: instead of tau, lose about this many dB of PSNR against the full-rate decode
            (tau picked per clip: :mod:`latok.codec.restore.quality`).
        reference: ``"last-kept"`` (default) or ``"previous"``.
        rule_metric: ``"decoder"`` (default) measures change per channel weighted by the decoder's sensitivity
            (:func:`latok.codec.tokens.rule_weights`); ``"latent"``, every channel alike (the plain rule).
        keyframe_interval: force every K-th latent frame to be kept; ``None`` for off.
        motion: ``"none"`` compares positions in place; a registered motion model
            (:func:`latok.codec.rule.motion.motion_names`: ``"global"``, ``"block"``, the default) warps
            the reference first and is stored in the file.
        value_step: quantise kept values with this step (:mod:`latok.codec.quantise`) and entropy-code them;
            ``0`` keeps exact values in ``storage_dtype``; ``None``: the backend's ``default_value_step``.
        storage_dtype: dtype of exact kept values (fp16 default, bf16 or fp32).
        lit_guard: record per latent frame whether the inpainter beats hold there (when there is one).
        lit_tile: the lit guard weighs the inpainter's correction per latent frame and square of this many
            positions a side (:mod:`latok.codec.restore.guard`); ``0``: one lit/hold flag per latent frame.
        lit_guard_margin: with ``lit_tile=0``, lit must cut hold's latent error on a frame by this fraction to be picked.
        pixel_guard: decide the one-flag-a-frame lit guard on decoded pixels instead (per-frame backends; the
            weights and the margin are then not used).
        quality_check_frames: with a target quality, the input video and a per-frame backend, decode this many
            frames to check the predicted loss and search tau once more with the map corrected; ``0``: trust it.
    """

    tau: float | None = None
    target_usage: float | None = None
    target_quality: float | None = None
    reference: Reference = "last-kept"
    rule_metric: RuleMetric = "decoder"
    keyframe_interval: int | None = None
    motion: str = "block"
    value_step: float | None = None
    storage_dtype: torch.dtype = torch.float16
    lit_guard: bool = True
    lit_tile: int = LIT_TILE
    lit_guard_margin: float = LIT_GUARD_MARGIN
    pixel_guard: bool = False
    quality_check_frames: int = QUALITY_CHECK_FRAMES

    def __post_init__(self):
        check_rate(self.tau, self.target_usage, self.target_quality)
        check_rule(self.tau, self.target_usage, self.reference, self.keyframe_interval)
        if self.tau is not None and self.tau > MAX_TAU:
            raise InvalidInputError(f"tau must be at most {MAX_TAU:g} (a .latok header holds no larger), got {self.tau}")
        if self.rule_metric not in RULE_METRICS:
            raise InvalidInputError(f"rule metric must be one of {', '.join(RULE_METRICS)}, got {self.rule_metric!r}")
        if self.motion not in motion_names():
            raise InvalidInputError(f"motion must be one of {', '.join(motion_names())}, got {self.motion!r}")
        if self.value_step is not None:
            channel_steps(self.value_step, None, 1)
        dtype_name(self.storage_dtype)
        if isinstance(self.lit_tile, bool) or not isinstance(self.lit_tile, int) or not 0 <= self.lit_tile <= MAX_LIT_TILE:
            raise InvalidInputError(f"lit_tile must be a whole number in [0, {MAX_LIT_TILE}], got {self.lit_tile!r}")
        if not 0.0 <= self.lit_guard_margin < 1.0:
            raise InvalidInputError(f"lit_guard_margin must be in [0, 1), got {self.lit_guard_margin}")
        if isinstance(self.quality_check_frames, bool) or not isinstance(self.quality_check_frames, int) or self.quality_check_frames < 0:
            raise InvalidInputError(f"quality_check_frames must be a whole number >= 0, got {self.quality_check_frames!r}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def value_step_for(self, vae) -> float:
        """The value step in force with backend ``vae`` (a class or an instance): the settings', else its default."""
        return vae.default_value_step if self.value_step is None else self.value_step

    @property
    def per_clip_rate(self) -> bool:
        """Is tau picked per clip (a target usage or quality), rather than fixed?"""
        return self.target_usage is not None or self.target_quality is not None

    def but(self, **changes) -> CodecSettings:
        """A copy with ``changes``, validated again."""
        return replace(self, **changes)


def check_rate(tau: float | None, target_usage: float | None, target_quality: float | None) -> None:
    """At most one of a fixed ``tau``, a ``target_usage`` and a ``target_quality`` (dB) sets the rate."""
    given = [name for name, value in (("tau", tau), ("target usage", target_usage), ("target quality", target_quality)) if value is not None]
    if len(given) > 1:
        raise InvalidInputError(f"give one of tau, target usage and target quality, not {' and '.join(given)}")
    check_target_quality(target_quality)
