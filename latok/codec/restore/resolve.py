"""Which fill restores a clip, decided once: every way dropped latent positions come back, by name.

A fill is a callable ``fill(latent, keep, motion=None) -> latent`` (see :mod:`latok.codec.restore.fills`).  By name:

- ``zero``, ``hold``, ``interp``: closed-form (:mod:`latok.codec.restore.fills`); more can be registered
  with :func:`~latok.codec.restore.fills.register_fill`.
- ``lit``: the Latent Inpainting Transformer (``checkpoints/<backend>-lit-xs``), behind the encoder's
  **lit guard** when it was decided with the same checkpoint: weights on lit's correction over hold per
  latent frame and square of positions (or, in older files, lit or hold per frame).
- ``auto``, the default: ``lit`` where the tokens carry a guard decided with the inpainter that
  will run, else ``hold`` (no inpainter, a stream, or tokens guarded by another checkpoint), so the
  default is never worse than hold in latent error on any frame.

:func:`resolve` turns a name (or a callable) into a :class:`NamedFill` once, for one clip, and
:func:`restore` applies it; the tokenizer, the CLI, the evaluation and the benchmark call them and hand the
callable down.  Fills are called with the tokens' motion, so no caller decides "motion or none".
:func:`resolve_stream` is the streaming rule: ``auto`` is ``lit`` (else ``hold``), the same inpainter over each
chunk and the restored frames before it (C_fill), behind the chunk's lit weights where the stream carries them.
The guard itself is decided by the encoder, which has the true latent (:mod:`latok.codec.restore.guard`).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from latok.codec.restore.fills import MODEL_FILLS, Fill, closed_form_fills, get_fill, hold_fill
from latok.codec.tokens import AdaptiveLatent, backend_config_hash, scatter
from latok.errors import InvalidInputError

if TYPE_CHECKING:
    from latok.codec.restore.inpainter import InpaintingTransformer
    from latok.vae import VideoAutoencoder

logger = logging.getLogger(__name__)

DEFAULT_FILL = "auto"
CHECKPOINTS_ENV = "LATOK_CHECKPOINTS_DIR"
INPAINTER_PRESET = "xs"  # the shipped CPU-sized inpainter
def list_fills() -> list[str]:
    """Every fill name :func:`resolve` accepts."""
    return closed_form_fills() + list(MODEL_FILLS)


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
    follows_motion: bool = True  # takes the frames' translations: function(latent, keep, motion); a plain callable does not

    def __call__(self, latent: torch.Tensor, keep: torch.Tensor, motion: torch.Tensor | None = None) -> torch.Tensor:
        if not self.follows_motion:
            if motion is not None:
                raise InvalidInputError(f"fill {self.name} does not follow motion: restore motion-compensated tokens with a registered fill")
            return self.function(latent, keep)
        return self.function(latent, keep, motion)


# -- the inpainters -------------------------------------------------------------------------------


def checkpoints_dir() -> Path:
    """``$LATOK_CHECKPOINTS_DIR``, or ``checkpoints/`` of this source tree."""
    return Path(os.environ.get(CHECKPOINTS_ENV) or Path(__file__).resolve().parents[3] / "checkpoints")


def default_inpainter_path(backend: str) -> Path:
    return checkpoints_dir() / f"{backend}-lit-{INPAINTER_PRESET}"


class Inpainters:
    """The inpainter of one backend, loaded on first use: :attr:`model` behind ``lit``, offline and in
    streams.  It may be given as a model or a checkpoint folder (default: the shipped ``checkpoints/<backend>-lit-xs``)."""

    def __init__(self, backend: str, latent_channels: int, device: torch.device | str = "cpu", model=None):
        self.backend, self.latent_channels, self.device = backend, latent_channels, torch.device(device)
        self._model = model

    @classmethod
    def for_tokens(cls, adaptive: AdaptiveLatent, device: torch.device | str = "cpu", model=None) -> Inpainters:
        """The inpainters that restore ``adaptive`` without a tokenizer (no autoencoder is loaded)."""
        return cls(adaptive.backend, adaptive.shape[1], device, model)

    @property
    def available(self) -> bool:
        """Is there a bidirectional inpainter (given, or shipped for this backend)?"""
        return self._model is not None or (default_inpainter_path(self.backend) / "config.json").is_file()

    @property
    def model(self) -> InpaintingTransformer:
        self._model = self._load(self._model, default_inpainter_path(self.backend))
        return self._model

    def _load(self, model, default: Path):
        from latok.codec.restore.inpainter import InpaintingTransformer

        path = default if model is None else model
        if not isinstance(model, InpaintingTransformer):
            model = InpaintingTransformer.from_pretrained(path, device=self.device)
        if model.config.latent_channels != self.latent_channels:
            raise InvalidInputError(
                f"inpainter {path} expects {model.config.latent_channels} latent channels, "
                f"backend {self.backend} has {self.latent_channels}"
            )
        return model

    def run(
        self,
        latent: torch.Tensor,
        keep: torch.Tensor,
        tau: float | None = None,
        reference: str = "last-kept",
        model=None,
        guard: torch.Tensor | None = None,
        motion: torch.Tensor | None = None,
        weights: Sequence[float] | None = None,
    ) -> torch.Tensor:
        """The inpainter (default :attr:`model`) on ``latent`` ``(B, C, t, h, w)`` with ``keep``, on its device.

        ``tau``, ``reference``, ``motion`` and the rule's channel ``weights`` are those that made the mask; they
        bound where a dropped value can lie (``tau`` ``None``: unknown, no bound).  ``guard``: the lit guard
        (:meth:`~latok.codec.tokens.AdaptiveLatent.lit_guard`), weights broadcastable to ``(1, 1, t, h, w)`` on
        lit's correction over hold (following ``motion``): 0 restores hold, 1 lit."""
        model = model or self.model
        with torch.inference_mode():
            restored = model(latent.to(self.device), keep.to(self.device), tau, reference, motion, weights)
        restored = restored.float().to(latent.device)
        return restored if guard is None else guarded(restored, hold_fill(latent, keep, motion), guard)

    def lit(self, tau: float | None = None, reference: str = "last-kept", guard: torch.Tensor | None = None, model=None,
            weights: Sequence[float] | None = None) -> NamedFill:  # fmt: skip
        """``lit`` as a fill ``(latent, keep, motion)`` for masks made with ``tau``, ``reference`` and the rule's channel
        ``weights`` (behind the lit ``guard`` if given)."""
        run = functools.partial(self.run, tau=tau, reference=reference, model=model, guard=guard, weights=weights)
        return NamedFill("lit", lambda latent, keep, motion=None: run(latent, keep, motion=motion), uses_model=True)


def guarded(lit: torch.Tensor, hold: torch.Tensor, guard: torch.Tensor) -> torch.Tensor:
    """``hold + guard (lit - hold)``, exactly ``lit`` where the guard is 1 and ``hold`` where it is 0."""
    guard = guard.to(lit.device)
    return torch.where(guard == 1, lit, torch.addcmul(hold, guard, lit - hold))


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
        return NamedFill(getattr(fill, "__name__", type(fill).__name__), fill, follows_motion=False)
    if fill == "auto":
        fill = "lit" if adaptive.lit_frames is not None and guard_matches(adaptive, inpainters) else "hold"
    if fill != "lit":
        return NamedFill(fill, get_fill(fill))
    if inpainters is None:
        raise InvalidInputError("fill lit needs the inpainter: use LatentTokenizer.resolve(adaptive, 'lit')")
    matches = guard_matches(adaptive, inpainters)
    if adaptive.lit_frames is not None and not matches:
        logger.warning("the lit guard of these tokens was decided with another inpainter (%s); running lit on every frame", adaptive.lit_model)
    return inpainters.lit(adaptive.tau, adaptive.reference, adaptive.lit_guard() if matches else None, weights=adaptive.rule_weights)


def restore(
    adaptive: AdaptiveLatent,
    fill: str | Fill | None = "hold",
    inpainters: Inpainters | None = None,
    native: bool = False,
    vae: VideoAutoencoder | None = None,
) -> torch.Tensor:
    """The restored ``(B, C, t, h, w)`` float32 latent of ``adaptive``, e.g. for a generator.

    Args:
        fill: how dropped positions come back (:func:`resolve`; resolved here, once): ``"zero"`` (the kept
            values in place, zeros elsewhere), ``"hold"``, ``"interp"``, ``"lit"``/``"auto"`` with
            ``inpainters``, a :class:`NamedFill` or any fill callable.  Fills follow the tokens' motion.
        native: ``False`` (default): latok's normalised space, roughly unit variance, which for the
            diffusers backends is the space their pipelines' transformers work in (``latents=``).
            ``True``: the autoencoder's own latent space, what the diffusers ``AutoencoderKL*.decode``
            takes directly.
        vae: the backend whose normalisation to undo for ``native=True``; not needed where the two
            spaces coincide (taef2).
    """
    latent = resolve(adaptive, fill, inpainters)(scatter(adaptive), adaptive.keep, adaptive.motion)  # (B, C, t, h, w)
    if not native:
        return latent
    if vae is None:
        from latok.vae import vae_class
        from latok.vae.base import VideoAutoencoder

        if vae_class(adaptive.backend).denormalise is not VideoAutoencoder.denormalise:
            raise InvalidInputError(f"native latents of {adaptive.backend} need its normalisation statistics: pass vae=tokenizer.vae")
        return latent
    if vae.name != adaptive.backend or backend_config_hash(vae) != adaptive.backend_config:
        raise InvalidInputError(f"tokens come from {adaptive.backend!r}, the vae given is {vae.name!r}")
    return vae.denormalise(latent)


def resolve_stream(tau: float, reference: str, fill: str | Fill | None, inpainters: Inpainters,
                   weights: Sequence[float] | None = None, guard: torch.Tensor | None = None) -> NamedFill:  # fmt: skip
    """The streaming rule: ``lit`` runs :attr:`Inpainters.model`, the offline inpainter, on every frame of a chunk, with
    the restored frames before it (C_fill) as kept context: it sees the chunk's future, never the next chunk's
    (eval/results/stream_eval.md: within 0.3 dB of offline, where a causal model lost 0.6 dB).  ``guard``: the chunk's
    lit weights over ``[C_fill, chunk]`` (:func:`latok.codec.streams.stream_guard_matches`; 0 on the context), which the encoder fitted
    per chunk by replaying this decode; without them ``lit`` is unguarded.  ``auto`` is ``lit`` where the backend
    has an inpainter, else ``hold`` (on the pool validation split at the streams' tau, the weighted lit: +0.20 dB over
    hold, no clip below it; +0.05 dB over the unguarded lit).  Fills of a stream with motion are called with each
    chunk's motion."""
    fill = fill or DEFAULT_FILL
    if isinstance(fill, NamedFill):
        return fill
    if fill == "auto":
        fill = "lit" if inpainters.available else "hold"
    if fill == "lit":
        return inpainters.lit(tau, reference, guard=guard, weights=weights)
    if callable(fill):
        return NamedFill(getattr(fill, "__name__", type(fill).__name__), fill, follows_motion=False)
    return NamedFill(fill, get_fill(fill))


def fill_for_mask(fill: str, inpainters: Inpainters | None = None, tau: float | None = None) -> NamedFill:
    """A fill by name for a bare keep mask (no tokens, no guard), as the allocator benchmark uses:
    ``lit`` runs unguarded, bounded by ``tau`` when the mask came from latok's rule.  Call it with the
    mask's motion, if it has one."""
    if fill == "lit" and inpainters is not None:
        return inpainters.lit(tau)
    if uses_inpainter(fill):
        raise InvalidInputError(f"fill {fill} on a bare mask needs the inpainter" if fill == "lit" else "auto needs tokens with a lit guard")
    return NamedFill(fill, get_fill(fill))
