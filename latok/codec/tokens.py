"""The data every stage shares: :class:`AdaptiveLatent` (the kept latent vectors of a clip, their positions,
and what produced them), :class:`SourceInfo`, and the time indices of a keep mask (:func:`staleness`).

Plain data: restoring tokens is :mod:`latok.codec.restore`'s job, packing them :mod:`latok.codec.interop`'s."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch

from latok.codec.quantise import dequantise, quantise
from latok.errors import InvalidInputError

STORAGE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
MAX_TARGET_DB = 20.0  # the largest quality target (PSNR loss budget, dB) latok takes
LIT_WEIGHT_STEPS = 8  # a lit weight code k means the weight k / 8
MAX_LIT_CODE = 2 * LIT_WEIGHT_STEPS  # weights lie in [0, 2]
MAX_LIT_CODES = 1 << 20  # weight codes a clip carries (its header holds them); a longer clip falls back to flags


def check_target_quality(loss_db: float | None) -> None:
    """Raise :class:`InvalidInputError` unless ``loss_db`` is a quality target latok takes (``None``: not set)."""
    if loss_db is not None and not (0.0 < loss_db <= MAX_TARGET_DB):
        raise InvalidInputError(f"target quality is a PSNR loss in dB, in (0, {MAX_TARGET_DB:g}], got {loss_db}")


def dtype_name(dtype: torch.dtype) -> str:
    for name, value in STORAGE_DTYPES.items():
        if value == dtype:
            return name
    raise InvalidInputError(f"storage dtype must be one of {', '.join(STORAGE_DTYPES)}, got {dtype}")


@dataclass(frozen=True)
class SourceInfo:
    """Where the pixels came from and how they were framed before encoding.

    Attributes:
        frames: T of the encoded video.
        height, width: H, W of the encoded video (what decode returns).
        fps: frame rate of the encoded video.
        source_size: ``(height, width)`` of the original frames.
        crop: ``(top, left, height, width)`` of the crop inside the resized frame.
        resized_size: ``(height, width)`` after the aspect-keeping resize.
    """

    frames: int
    height: int
    width: int
    fps: float = 24.0
    source_size: tuple[int, int] | None = None
    resized_size: tuple[int, int] | None = None
    crop: tuple[int, int, int, int] | None = None


RuleMetric = Literal["decoder", "latent"]
RULE_METRICS = ("decoder", "latent")


def rule_weights(metric: RuleMetric, sensitivity: Sequence[float] | None) -> tuple[float, ...] | None:
    """The rule's per-channel weights: ``"decoder"``, the decoder ``sensitivity`` (one per channel) over its mean;
    ``"latent"``, or a backend with no measured sensitivity, ``None`` (every channel counts the same)."""
    if metric not in RULE_METRICS:
        raise InvalidInputError(f"rule metric must be one of {', '.join(RULE_METRICS)}, got {metric!r}")
    if metric == "latent" or sensitivity is None:
        return None
    mean = sum(sensitivity) / len(sensitivity)
    return tuple(s / mean for s in sensitivity)


@dataclass(frozen=True)
class AdaptiveLatent:
    """An adaptively tokenized clip.

    Attributes:
        values: ``(N, C)`` kept latent vectors in the storage dtype, ordered as
            ``keep.nonzero()`` (batch, then time, then row, then column).
        keep: ``(B, t, h, w)`` bool mask, True where kept.
        shape: ``(B, C, t, h, w)`` of the full latent.
        backend: VAE backend name.
        backend_config: hash of the backend's identity (name, channels, ratios),
            checked when decoding with another backend.
        tau: threshold used; ``target_usage`` or ``target_quality`` if tau was picked per clip.
        reference: ``"last-kept"`` or ``"previous"``.
        keyframe_interval: forced keyframe period in latent frames, or ``None``.
        source: the encoded video's size, fps and framing.
        lit_frames: the lit guard, one flag per latent frame: True where the encoder found the
            inpainter closer to the true latent than hold on that frame's dropped positions
            (``None``: not checked).  ``fill="lit"`` uses hold on the other frames.
        lit_model: :attr:`~latok.codec.restore.inpainter.InpaintingTransformer.fingerprint` of the inpainter
            the guard was decided with.
        lit_weights: uint8 ``(t, gh, gw)`` codes, the weighted lit guard: per latent frame and square of
            ``lit_tile`` x ``lit_tile`` positions (``gh = ceil(h / lit_tile)``), the dropped positions are restored
            to ``hold + (code / LIT_WEIGHT_STEPS) (lit - hold)``; ``lit_frames`` then flags the frames with a
            non-zero code.  ``None``: the guard is ``lit_frames`` alone (lit or hold per frame).
        lit_tile: the side of those squares, with ``lit_weights`` (``None`` exactly when it is).
        motion: float32, each latent frame's translation (dy, dx) from the one before when the rule was
            motion-compensated (:mod:`latok.codec.rule.motion`): ``(B, t, 2)`` global, or ``(B, t, 2, gh, gw)``
            one per block; ``None``: in place.
        motion_model: the registered motion model that estimated ``motion`` (``None`` exactly when it is).
        value_step: the per-channel quantisation steps of ``values`` (:mod:`latok.codec.format.coders.values`): each
            value is float32 and exactly ``code * step``; ``None``: exact values in the storage dtype.
        precision: what the autoencoder encoded in (``"fp32"``, ``"bf16"``, ``"fp16"``; :mod:`latok.vae.precision`);
            ``None``: not recorded (files from before latok recorded it).
        target_quality: the PSNR loss budget (dB against the full-rate decode) tau was picked for
            (:mod:`latok.codec.restore.quality`); ``None``: not a quality target.
        rule_metric: how the rule measured change: ``"decoder"``, ``mean_c w_c |dz_c|`` with the backend's
            :attr:`rule_weights`, or ``"latent"``, every channel alike (files from before latok weighted it).
            Dropped positions moved less than ``tau`` in it, which bounds the inpainter's corrections.
    """

    values: torch.Tensor
    keep: torch.Tensor
    shape: tuple[int, int, int, int, int]
    backend: str
    backend_config: str
    tau: float
    source: SourceInfo
    target_usage: float | None = None
    reference: str = "last-kept"
    keyframe_interval: int | None = None
    lit_frames: tuple[bool, ...] | None = None
    lit_model: str | None = None
    motion: torch.Tensor | None = None
    value_step: tuple[float, ...] | None = None
    motion_model: str | None = None
    precision: str | None = None
    target_quality: float | None = None
    rule_metric: RuleMetric = "latent"
    lit_weights: torch.Tensor | None = None
    lit_tile: int | None = None

    def __post_init__(self):
        batch, channels, frames, height, width = self.shape
        if self.keep.shape != (batch, frames, height, width) or self.keep.dtype != torch.bool:
            raise InvalidInputError(f"keep must be bool {(batch, frames, height, width)}, got {self.keep.dtype} {tuple(self.keep.shape)}")
        if self.values.shape != (int(self.keep.sum()), channels):
            raise InvalidInputError(f"values must be ({int(self.keep.sum())}, {channels}), got {tuple(self.values.shape)}")
        if (self.lit_frames is None) != (self.lit_model is None) or (
            self.lit_frames is not None and len(self.lit_frames) != frames
        ):
            raise InvalidInputError(f"the lit guard needs one flag per latent frame ({frames}) and the model it was decided with")
        if self.lit_weights is not None or self.lit_tile is not None:
            self._check_lit_weights()
        if (self.motion is None) != (self.motion_model is None):
            raise InvalidInputError("motion needs the name of the motion model that estimated it (motion_model=), and a model its motion")
        if self.motion is not None and (tuple(self.motion.shape[:3]) != (batch, frames, 2) or self.motion.dtype != torch.float32):
            raise InvalidInputError(f"motion must be float32 ({batch}, {frames}, 2, ...), got {self.motion.dtype} {tuple(self.motion.shape)}")
        if self.value_step is not None and (len(self.value_step) != channels or self.values.dtype != torch.float32):
            raise InvalidInputError(f"quantised values need {channels} steps and float32 values, got {len(self.value_step)} and {self.values.dtype}")
        if self.rule_metric not in RULE_METRICS:
            raise InvalidInputError(f"rule metric must be one of {', '.join(RULE_METRICS)}, got {self.rule_metric!r}")

    def _check_lit_weights(self) -> None:
        _, _, frames, height, width = self.shape
        tile, codes = self.lit_tile, self.lit_weights
        if tile is None or codes is None or isinstance(tile, bool) or not isinstance(tile, int) or tile < 1 or self.lit_frames is None:
            raise InvalidInputError("lit weights need their tile size (a whole number >= 1) and the lit guard's frames and model")
        grid = (frames, -(-height // tile), -(-width // tile))
        if frames * grid[1] * grid[2] > MAX_LIT_CODES:
            raise InvalidInputError(f"lit weights of {grid} squares exceed the {MAX_LIT_CODES} a clip carries")
        if codes.dtype != torch.uint8 or tuple(codes.shape) != grid or int(codes.max()) > MAX_LIT_CODE:
            raise InvalidInputError(f"lit weights must be uint8 codes {grid} of at most {MAX_LIT_CODE}, got {codes.dtype} {tuple(codes.shape)}")
        if tuple((codes > 0).flatten(1).any(1).tolist()) != tuple(self.lit_frames):
            raise InvalidInputError("the lit guard's frames must flag exactly the frames with a non-zero lit weight")

    def without_lit_guard(self) -> AdaptiveLatent:
        """These tokens with no lit guard: ``fill="lit"`` then runs the inpainter on every dropped position."""
        return replace(self, lit_frames=None, lit_model=None, lit_weights=None, lit_tile=None)

    def lit_guard(self) -> torch.Tensor | None:
        """The lit guard as weights on lit's correction over hold: float32 ``(1, 1, t, h, w)`` from :attr:`lit_weights`,
        or ``(1, 1, t, 1, 1)`` of 0 and 1 from :attr:`lit_frames`; ``None`` without a guard."""
        if self.lit_weights is not None:
            return weight_field(self.lit_weights, self.lit_tile, *self.shape[3:])
        if self.lit_frames is not None:
            return torch.tensor(self.lit_frames, dtype=torch.float32).view(1, 1, -1, 1, 1)
        return None

    @classmethod
    def from_dense(
        cls, latent: torch.Tensor, keep: torch.Tensor, dtype: torch.dtype = torch.float16, value_step: tuple[float, ...] | None = None, **meta
    ) -> AdaptiveLatent:
        """Gather the kept vectors of a dense ``(B, C, t, h, w)`` latent, in ``dtype``, or quantised
        to float32 codes times ``value_step`` (:func:`latok.codec.quantise.channel_steps`) when given."""
        dtype_name(dtype)
        values = latent.permute(0, 2, 3, 4, 1)[keep]  # (N, C)
        if value_step is None:
            values = values.to(dtype)
        else:
            values = dequantise(quantise(values.cpu(), value_step), value_step)
            meta["value_step"] = tuple(value_step)
        return cls(values=values.cpu().contiguous(), keep=keep.cpu(), shape=tuple(latent.shape), **meta)

    @property
    def rule_weights(self) -> tuple[float, ...] | None:
        """The rule's channel weights under :attr:`rule_metric` (the backend's decoder sensitivities over their mean)."""
        from latok.vae import vae_class

        return rule_weights(self.rule_metric, vae_class(self.backend).value_sensitivity)

    @property
    def num_tokens(self) -> int:
        return self.values.shape[0]

    @property
    def token_usage(self) -> float:
        """Kept positions / all latent positions."""
        return self.num_tokens / self.keep.numel()

    @property
    def storage_dtype(self) -> torch.dtype:
        return self.values.dtype


def backend_config_hash(vae) -> str:
    """Short stable hash of what makes latents of ``vae`` interchangeable."""
    identity = {
        "name": vae.name,
        "latent_channels": vae.latent_channels,
        "temporal_ratio": vae.temporal_ratio,
        "spatial_ratio": vae.spatial_ratio,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]



def weight_field(codes: torch.Tensor, tile: int, height: int, width: int) -> torch.Tensor:
    """Lit weight codes, uint8 ``(t, ceil(height / tile), ceil(width / tile))``, as float32 weights ``(1, 1, t, height, width)``
    on lit's correction over hold: each code over ``LIT_WEIGHT_STEPS``, spread over its ``tile`` x ``tile`` square."""
    field = codes.float().div(LIT_WEIGHT_STEPS).repeat_interleave(tile, 1).repeat_interleave(tile, 2)
    return field[:, :height, :width].unsqueeze(0).unsqueeze(0)

def scatter(adaptive: AdaptiveLatent) -> torch.Tensor:
    """``(B, C, t, h, w)`` float32: the kept values in place, zeros at dropped positions."""
    batch, channels, frames, height, width = adaptive.shape
    scattered = torch.zeros(batch, frames, height, width, channels)
    scattered[adaptive.keep] = adaptive.values.float()
    return scattered.permute(0, 4, 1, 2, 3)


# -- time indices of a keep mask ---------------------------------------------------------------


def last_kept_index(keep: torch.Tensor) -> torch.Tensor:
    """``(B, t, h, w)`` int64: index of the most recent kept frame at or before t (0 before any)."""
    frames = keep.shape[1]
    time = torch.arange(frames, device=keep.device).view(1, frames, 1, 1)
    return torch.where(keep, time, torch.zeros((), dtype=torch.long, device=keep.device)).cummax(dim=1).values


def next_kept_index(keep: torch.Tensor) -> torch.Tensor:
    """``(B, t, h, w)`` int64: index of the next kept frame at or after t; ``t`` (the length) if none."""
    frames = keep.shape[1]
    time = torch.arange(frames, device=keep.device).view(1, frames, 1, 1)
    marked = torch.where(keep, time, torch.full((), frames, dtype=torch.long, device=keep.device))
    return marked.flip(1).cummin(dim=1).values.flip(1)


def staleness(keep: torch.Tensor, since_previous: bool = False) -> torch.Tensor:
    """``(B, t, h, w)`` int64: latent frames since the position was last kept, 0 where kept.

    ``since_previous``: count from the kept frame *before* t instead (``t`` on frame 0), so a kept position
    says how long its value had been stale (0 on frame 0): what packed tokens carry."""
    time = torch.arange(keep.shape[1], device=keep.device).view(1, -1, 1, 1)
    if not since_previous:
        return time - last_kept_index(keep)
    before = torch.cat([torch.zeros_like(keep[:, :1], dtype=torch.long), last_kept_index(keep[:, :-1])], dim=1)
    return torch.where(time == 0, torch.zeros_like(before), time - before)
