"""Latents exactly as diffusers video pipelines take them (``latents=``) and give them (``output_type="latent"``).

latok's normalised space is each diffusers backend's *transformer* space (``latok.vae.diffusers_video``),
but every pipeline wraps that space differently on the way in and out.  Read from diffusers 0.42.1:

=============  =====================  =============================================================================
name           pipeline               convention (``x``: latok's normalised ``(B, C, F, h, w)``; ``z``: native latent)
=============  =====================  =============================================================================
wan            WanPipeline            ``x = (z - latents_mean) / latents_std``, ``(B, C, F, h, w)``; decodes
                                      ``latents / (1 / latents_std) + latents_mean`` (``pipeline_wan.py`` l. 672)
cogvideox      CogVideoXPipeline      frame-first ``(B, F, C, h, w)``; a passed tensor is multiplied by the
                                      scheduler's ``init_noise_sigma`` (l. 348); decodes ``1 / scaling_factor *
                                      latents`` after ``permute(0, 2, 1, 3, 4)`` (``decode_latents``, l. 353)
hunyuanvideo   HunyuanVideoPipeline   ``(B, C, F, h, w)``, ``x = z * scaling_factor``; decodes
                                      ``latents / scaling_factor`` (``pipeline_hunyuan_video.py`` l. 726)
ltx-video      LTXPipeline            packed ``(B, F*h*w, C)`` (patch sizes 1), ``x = (z - mean) * scaling_factor /
                                      std``; decodes ``_unpack_latents`` then ``_denormalize_latents`` (l. 819-827).
                                      With ``timestep_conditioning`` its decode mixes in noise (``decode_noise_scale``)
cosmos         CosmosTextToWorld-     ``(B, C, F, h, w)``; a passed tensor is multiplied by ``sigma_max`` (l. 335);
               Pipeline               decodes ``latents * latents_std / sigma_data + latents_mean``, statistics per
                                      channel and latent frame (``pipeline_cosmos_text2world.py`` l. 649)
=============  =====================  =============================================================================

:func:`to_pipeline` gives the tensor to pass as ``latents=`` so that a pipeline whose denoiser leaves
the latents unchanged decodes exactly latok's latent; :func:`from_pipeline` takes a pipeline's
``output_type="latent"`` result back to latok's space.  ``from_pipeline(name, pipe(latents=to_pipeline(name, x)))``
is ``x`` when the denoising steps leave the latents unchanged (the tests build such pipelines).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from latok.errors import InvalidInputError


@dataclass(frozen=True)
class Convention:
    """How one diffusers pipeline takes and gives latents.

    Attributes:
        name: latok's name for it.
        pipeline: the diffusers class.
        backend: the latok backend whose latents it takes.
        frame_first: ``(B, F, C, h, w)`` instead of ``(B, C, F, h, w)``.
        packed: ``(B, F*h*w, C)`` tokens (LTX, patch sizes 1).
        input_scale: the pipeline multiplies a passed ``latents=`` by this scheduler setting (or ``None``).
        output_scale: the pipeline's final latents are latok's times this scheduler setting (or ``None``).
    """

    name: str
    pipeline: str
    backend: str
    frame_first: bool = False
    packed: bool = False
    input_scale: str | None = None
    output_scale: str | None = None


CONVENTIONS = {
    c.name: c
    for c in (
        Convention("wan", "WanPipeline", "wan2.1"),
        Convention("cogvideox", "CogVideoXPipeline", "cogvideox", frame_first=True, input_scale="init_noise_sigma"),
        Convention("hunyuanvideo", "HunyuanVideoPipeline", "hunyuanvideo"),
        Convention("ltx-video", "LTXPipeline", "ltx-video", packed=True),
        Convention("cosmos", "CosmosTextToWorldPipeline", "cosmos-cv8x8x8", input_scale="sigma_max", output_scale="sigma_data"),
    )
}
# the schedulers' shipped settings, used when no scheduler is given (CogVideoX's DDIM: 1.0; Cosmos 1.0's EDM: 80, 0.5)
DEFAULT_SCHEDULER = {"init_noise_sigma": 1.0, "sigma_max": 80.0, "sigma_data": 0.5}


def pipeline_names() -> list[str]:
    """Every pipeline ``--for`` and :meth:`~latok.LatentTokenizer.for_pipeline` accept."""
    return list(CONVENTIONS)


def convention(name: str) -> Convention:
    if name not in CONVENTIONS:
        raise InvalidInputError(f"unknown pipeline {name!r}; latok feeds {', '.join(CONVENTIONS)}")
    return CONVENTIONS[name]


def _setting(key: str | None, scheduler) -> float:
    if key is None:
        return 1.0
    if scheduler is None:
        return DEFAULT_SCHEDULER[key]
    if key == "init_noise_sigma":
        return float(scheduler.init_noise_sigma)
    return float(scheduler.config[key])


def check_backend(name: str, backend: str) -> Convention:
    """The convention of ``name``, refusing latents of another backend (a pipeline takes its own VAE's latents only)."""
    found = convention(name)
    if backend != found.backend:
        raise InvalidInputError(f"{found.pipeline} takes {found.backend} latents; these tokens come from {backend} (encode with --backend {found.backend})")
    return found


def to_pipeline(name: str, latent: torch.Tensor, scheduler=None) -> torch.Tensor:
    """latok's normalised ``(B, C, F, h, w)`` latent -> the pipeline's ``latents=`` tensor.

    ``scheduler``: the pipeline's scheduler, for the scales it applies (default: the shipped settings).
    """
    found = convention(name)
    if latent.ndim != 5:
        raise InvalidInputError(f"a latent is (B, C, F, h, w), got {tuple(latent.shape)}")
    out = latent * (_setting(found.output_scale, scheduler) / _setting(found.input_scale, scheduler))
    if found.frame_first:
        out = out.permute(0, 2, 1, 3, 4)
    if found.packed:
        out = out.flatten(2).transpose(1, 2)  # (B, C, F*h*w) -> (B, F*h*w, C): LTX's _pack_latents with patch sizes 1
    return out.contiguous()


def from_pipeline(name: str, latents: torch.Tensor, scheduler=None, latent_shape: tuple[int, int, int] | None = None) -> torch.Tensor:
    """A pipeline's ``output_type="latent"`` result -> latok's normalised ``(B, C, F, h, w)`` latent.

    ``latent_shape``: ``(F, h, w)`` of a packed (LTX) result, which does not carry it.
    """
    found = convention(name)
    if found.packed:
        if latent_shape is None or latents.ndim != 3 or latents.shape[1] != latent_shape[0] * latent_shape[1] * latent_shape[2]:
            raise InvalidInputError(f"{found.pipeline} latents are packed (B, F*h*w, C): give latent_shape=(F, h, w) matching {tuple(latents.shape)}")
        latents = latents.transpose(1, 2).reshape(latents.shape[0], latents.shape[2], *latent_shape)
    elif latents.ndim != 5:
        raise InvalidInputError(f"{found.pipeline} latents are 5-D, got {tuple(latents.shape)}")
    if found.frame_first:
        latents = latents.permute(0, 2, 1, 3, 4)
    return (latents / _setting(found.output_scale, scheduler)).contiguous()
