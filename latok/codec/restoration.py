"""Restoration: every way dropped latent positions come back, decided in one place.

A fill is any callable ``fill(latent, keep) -> latent`` (see :mod:`latok.codec.fill`).  By name:

- ``zero``, ``hold``, ``interp``: closed-form (:mod:`latok.codec.fill`); more can be registered
  with :func:`register_fill`.
- ``lit``: the Latent Inpainting Transformer (``checkpoints/<backend>-lit-xs``), restricted to the
  latent frames the encoder's **lit guard** allows (hold on the others) when the guard was decided
  with the same checkpoint.
- ``auto``, the default: ``lit`` where the tokens carry a guard decided with the inpainter that
  will run, else ``hold`` (no inpainter, a stream, or tokens guarded by another checkpoint), so the
  default is never worse than hold in latent error on any frame.

:func:`resolve` turns a name (or a callable) into a :class:`NamedFill` once, for one clip; the
tokenizer, the CLI, the evaluation and the benchmark call it and hand the callable down.
:func:`resolve_stream` is the streaming rule: ``auto`` is ``hold``; ``lit`` runs the causal
checkpoint ``<backend>-lit-xs-causal`` unguarded.  The guard itself is decided by the encoder,
which has the true latent (:func:`decide_lit_guard`): by latent error (default), or on decoded
pixels (``pixel_guard``).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from latok.codec.fill import Fill, hold_fill, interp_fill, motion_hold_fill, motion_interp_fill, zero_fill
from latok.errors import InvalidInputError
from latok.io import to_8bit_levels

if TYPE_CHECKING:
    from latok.codec.inpainter import InpaintingTransformer
    from latok.codec.tokens import AdaptiveLatent
    from latok.vae import VideoAutoencoder

logger = logging.getLogger(__name__)

DEFAULT_FILL = "auto"
MODEL_FILLS = ("lit", "auto")  # names that may run the inpainter
CHECKPOINTS_ENV = "LATOK_CHECKPOINTS_DIR"
INPAINTER_PRESET = "xs"  # the shipped CPU-sized inpainter
# Latent and pixel error disagree (on bikes.mp4 at usage 0.5 lit cuts the latent error by ~20 % on
# seven frames and loses 0.6-1.1 dB on each in pixels), so the latent guard asks for a margin.  0.3 is
# the margin with the best mean gain among those whose worst clip loses at most 0.1 dB, on 30 clip x
# rate cases that are not evaluation clips, for the shipped checkpoint (eval/results/guard_study_tune.md).
LIT_GUARD_MARGIN = 0.3

_FILLS: dict[str, Fill] = {"zero": zero_fill, "hold": hold_fill, "interp": interp_fill}


def register_fill(name: str):
    """Decorator adding a closed-form fill under ``name``."""
    if name in MODEL_FILLS:
        raise InvalidInputError(f"{name!r} is reserved for the inpainter")

    def decorate(fn: Fill) -> Fill:
        _FILLS[name] = fn
        return fn

    return decorate


def list_fills() -> list[str]:
    """Every fill name :func:`resolve` accepts."""
    return sorted(_FILLS) + list(MODEL_FILLS)


def get_fill(fill: str | Fill) -> Fill:
    """A closed-form fill by name (a callable passes through)."""
    if callable(fill):
        return fill
    try:
        return _FILLS[fill]
    except KeyError:
        raise InvalidInputError(f"unknown fill {fill!r}; available: {', '.join(sorted(_FILLS))}") from None


def check_fills(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` without duplicates, each one :func:`resolve` accepts; else InvalidInputError."""
    names = tuple(dict.fromkeys(names))
    unknown = [name for name in names if name not in list_fills()]
    if unknown or not names:
        raise InvalidInputError(f"unknown fill {unknown[0] if unknown else '(none)'}; choose from {', '.join(list_fills())}")
    return names


def uses_inpainter(fill: str | Fill | None) -> bool:
    """Whether ``fill`` may run the inpainter (so its checkpoint must load)."""
    return isinstance(fill, str) and fill in MODEL_FILLS


@dataclass(frozen=True)
class NamedFill:
    """A resolved fill: the callable, what it is called in reports, and whether it runs the inpainter."""

    name: str
    function: Fill
    uses_model: bool = False
    uses_motion: bool = False  # called with the frames' translations: fill(latent, keep, motion)

    def __call__(self, latent: torch.Tensor, keep: torch.Tensor, motion: torch.Tensor | None = None) -> torch.Tensor:
        return self.function(latent, keep, motion) if self.uses_motion else self.function(latent, keep)


# -- the inpainters -------------------------------------------------------------------------------


def checkpoints_dir() -> Path:
    """``$LATOK_CHECKPOINTS_DIR``, or ``checkpoints/`` of this source tree."""
    return Path(os.environ.get(CHECKPOINTS_ENV) or Path(__file__).resolve().parents[2] / "checkpoints")


def default_inpainter_path(backend: str) -> Path:
    return checkpoints_dir() / f"{backend}-lit-{INPAINTER_PRESET}"


def default_stream_inpainter_path(backend: str) -> Path:
    """The causal inpainter streams use for ``fill="lit"``."""
    return checkpoints_dir() / f"{backend}-lit-{INPAINTER_PRESET}-causal"


class Inpainters:
    """The inpainters of one backend, loaded on first use: :attr:`model` behind ``lit``, and the
    causal :attr:`stream_model` streams use.  Each may be given as a model or a checkpoint folder
    (default: the shipped ``checkpoints/<backend>-lit-xs[-causal]``)."""

    def __init__(self, backend: str, latent_channels: int, device: torch.device | str = "cpu", model=None, stream_model=None):
        self.backend, self.latent_channels, self.device = backend, latent_channels, torch.device(device)
        self._model, self._stream_model = model, stream_model

    @property
    def available(self) -> bool:
        """Is there a bidirectional inpainter (given, or shipped for this backend)?"""
        return self._model is not None or (default_inpainter_path(self.backend) / "config.json").is_file()

    @property
    def model(self) -> InpaintingTransformer:
        self._model = self._load(self._model, default_inpainter_path(self.backend), causal=False)
        return self._model

    @property
    def stream_model(self) -> InpaintingTransformer:
        self._stream_model = self._load(self._stream_model, default_stream_inpainter_path(self.backend), causal=True)
        return self._stream_model

    def _load(self, model, default: Path, causal: bool):
        from latok.codec.inpainter import InpaintingTransformer

        path = default if model is None else model
        if not isinstance(model, InpaintingTransformer):
            model = InpaintingTransformer.from_pretrained(path, device=self.device)
        if model.config.latent_channels != self.latent_channels:
            raise InvalidInputError(
                f"inpainter {path} expects {model.config.latent_channels} latent channels, "
                f"backend {self.backend} has {self.latent_channels}"
            )
        if causal and not model.config.causal:
            raise InvalidInputError(f"inpainter {path} is bidirectional; streaming needs a causal one (config causal: true)")
        return model

    def run(
        self,
        latent: torch.Tensor,
        keep: torch.Tensor,
        tau: float | None = None,
        reference: str = "last-kept",
        model=None,
        frames: Sequence[bool] | None = None,
        motion: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The inpainter (default :attr:`model`) on ``latent`` ``(B, C, t, h, w)`` with ``keep``, on its device.

        ``tau``, ``reference`` and ``motion`` are those that made the mask; they bound where a dropped
        value can lie (``None``: unknown, no bound).  ``frames``: a lit guard, one flag per
        latent frame; frames flagged False are restored by hold (following ``motion``) instead."""
        model = model or self.model
        with torch.inference_mode():
            restored = model(latent.to(self.device), keep.to(self.device), tau, reference, motion)
        restored = restored.float().to(latent.device)
        if frames is None:
            return restored
        use = torch.tensor(list(frames), dtype=torch.bool, device=latent.device).view(1, 1, -1, 1, 1)
        return torch.where(use, restored, hold_fill(latent, keep) if motion is None else motion_hold_fill(latent, keep, motion))

    def lit(
        self, tau: float | None = None, reference: str = "last-kept", frames: Sequence[bool] | None = None, model=None, motion: torch.Tensor | None = None
    ) -> NamedFill:
        """``lit`` as a fill for masks made with ``tau``, ``reference`` and ``motion`` (guarded by ``frames`` if given)."""
        run = functools.partial(self.run, tau=tau, reference=reference, model=model, frames=frames, motion=motion)
        return NamedFill("lit", run, uses_model=True)


# -- resolving a fill ---------------------------------------------------------------------------------


def guard_matches(adaptive: AdaptiveLatent, inpainters: Inpainters | None) -> bool:
    """Was ``adaptive``'s lit guard decided with the inpainter that would run now?"""
    return inpainters is not None and adaptive.lit_frames is not None and adaptive.lit_model == inpainters.model.fingerprint


def resolve(adaptive: AdaptiveLatent, fill: str | Fill | None = None, inpainters: Inpainters | None = None) -> NamedFill:
    """The fill that restores ``adaptive``: a name (default ``auto``) or a callable in, one :class:`NamedFill` out.

    ``lit`` runs ``inpainters.model`` with the tokens' threshold and, when the guard was decided
    with this inpainter, their lit guard.  Without ``inpainters``, ``auto`` is ``hold``."""
    fill = fill or DEFAULT_FILL
    if isinstance(fill, NamedFill):
        return fill
    if callable(fill):
        return NamedFill(getattr(fill, "__name__", type(fill).__name__), fill)
    if adaptive.motion is not None and fill not in MODEL_FILLS:
        return _with_motion(fill, adaptive.motion)
    if fill == "auto":
        fill = "lit" if adaptive.lit_frames is not None and guard_matches(adaptive, inpainters) else "hold"
    if fill != "lit":
        return _with_motion(fill, adaptive.motion) if adaptive.motion is not None else NamedFill(fill, get_fill(fill))
    if inpainters is None:
        raise InvalidInputError("fill lit needs the inpainter: use LatentTokenizer.resolve(adaptive, 'lit')")
    matches = guard_matches(adaptive, inpainters)
    if adaptive.lit_frames is not None and not matches:
        logger.warning("the lit guard of these tokens was decided with another inpainter (%s); running lit on every frame", adaptive.lit_model)
    return inpainters.lit(adaptive.tau, adaptive.reference, adaptive.lit_frames if matches else None, motion=adaptive.motion)


_MOTION_FILLS = {"hold": motion_hold_fill, "interp": motion_interp_fill}


def _with_motion(fill: str, motion: torch.Tensor | None) -> NamedFill:
    """Fills of motion-compensated tokens: ``auto`` (hold), ``hold`` and ``interp`` follow the motion,
    ``zero`` needs none.  ``lit`` does not follow motion yet, and is refused rather than run on the
    wrong references.  ``motion`` ``None``: the fill is called with each chunk's translations."""
    name = "hold" if fill == "auto" else fill
    if name in _MOTION_FILLS:
        function = _MOTION_FILLS[name]
        if motion is None:
            return NamedFill(name, function, uses_motion=True)
        return NamedFill(name, functools.partial(function, motion=motion))
    if name == "zero":
        return NamedFill("zero", zero_fill)
    raise InvalidInputError(f"fill {fill} does not follow motion in streams yet; stream motion-compensated tokens with hold, interp or zero")


def resolve_stream(tau: float, reference: str, fill: str | Fill | None, inpainters: Inpainters, motion: bool = False) -> NamedFill:
    """The streaming rule: streams carry no lit guard for the causal model, so ``auto`` is ``hold``
    and ``lit`` runs :attr:`Inpainters.stream_model` on every frame.  A stream with ``motion`` restores
    with the motion-compensated hold (called with each chunk's translations)."""
    fill = fill or DEFAULT_FILL
    if isinstance(fill, NamedFill):
        return fill
    if motion and isinstance(fill, str):
        return _with_motion(fill, None)
    if fill == "auto":
        fill = "hold"
    if fill == "lit":
        return inpainters.lit(tau, reference, model=inpainters.stream_model)
    return NamedFill(fill if isinstance(fill, str) else getattr(fill, "__name__", type(fill).__name__), get_fill(fill))


def fill_for_mask(fill: str, inpainters: Inpainters | None = None, tau: float | None = None, motion: torch.Tensor | None = None) -> NamedFill:
    """A fill by name for a bare keep mask (no tokens, no guard), as the allocator benchmark uses:
    ``lit`` runs unguarded, bounded by ``tau`` when the mask came from latok's rule; with ``motion``
    (the translations the rule warped by) hold and interp follow it."""
    if fill == "lit" and inpainters is not None:
        return inpainters.lit(tau, motion=motion)
    if uses_inpainter(fill):
        raise InvalidInputError(f"fill {fill} on a bare mask needs the inpainter" if fill == "lit" else "auto needs tokens with a lit guard")
    return _with_motion(fill, motion) if motion is not None else NamedFill(fill, get_fill(fill))


# -- the lit guard ----------------------------------------------------------------------------------


def decide_lit_guard(
    adaptive: AdaptiveLatent,
    latent: torch.Tensor,
    inpainters: Inpainters,
    vae: VideoAutoencoder | None = None,
    video: torch.Tensor | None = None,
    margin: float = LIT_GUARD_MARGIN,
) -> AdaptiveLatent:
    """``adaptive`` with its lit guard: per latent frame, does the inpainter restore the dropped
    positions closer to ``latent`` (the truth) than hold does, by at least ``margin`` of hold's error?

    Errors are squared errors in the inpainter's decoder metric when it has one (about the decoded
    pixel error), else in plain latent units, and are decided on the stored (rounded) values,
    exactly as a decoder will see them.  With ``video`` (``(1, 3, T, H, W)`` in ``[-1, 1]``) and
    ``vae``, the frames where lit wins at all are decided again on decoded pixels (the pixel guard)."""
    model = inpainters.model
    keep = adaptive.keep
    sparse = adaptive.dense("zero")
    truth = latent.float().cpu()
    lit = inpainters.run(sparse, keep, adaptive.tau, adaptive.reference, model=model, motion=adaptive.motion)
    with torch.inference_mode():
        lit_error = model.error(lit, truth, keep)[0]
        hold = hold_fill(sparse, keep) if adaptive.motion is None else motion_hold_fill(sparse, keep, adaptive.motion)
        hold_error = model.error(hold, truth, keep)[0]
    if video is not None:
        frames = guard_by_decoded_pixels(vae, lit, hold, lit_error < hold_error, video)
    else:
        frames = guard_by_latent_error(lit_error, hold_error, margin)
    return replace(adaptive, lit_frames=tuple(frames.tolist()), lit_model=model.fingerprint)


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
