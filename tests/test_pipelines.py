"""Latents that diffusers pipelines take as they are (issue 21): each pipeline, built from tiny random
components, decodes ``for_pipeline(...)`` to latok's own decode of the same tokens, and
``from_pipeline_latents`` inverts ``for_pipeline``.

Wan runs its whole ``__call__``: a transformer stub predicts zero velocity, so its flow-matching Euler
step leaves the latents unchanged and the pipeline's own prepare and decode code runs around it.  For
the others the test calls the pipeline's own methods where it has them (CogVideoX ``prepare_latents`` and
``decode_latents``, LTX ``prepare_latents``, ``_unpack_latents`` and ``_denormalize_latents``, HunyuanVideo
and Cosmos ``prepare_latents``) and states where the decode arithmetic is the pipeline's inline code
transcribed (HunyuanVideo l. 726, Cosmos l. 649 of diffusers 0.42.1).
"""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_diffusers_model

pytest.importorskip("transformers")  # diffusers' video pipelines import it

from latok.codec.interop.pipelines import CONVENTIONS, from_pipeline, to_pipeline  # noqa: E402
from latok.codec.restore.resolve import restore
from latok.codec.tokenizer import LatentTokenizer  # noqa: E402
from latok.codec.tokens import SourceInfo  # noqa: E402
from latok.errors import InvalidInputError  # noqa: E402
from latok.vae import load_vae  # noqa: E402


@pytest.fixture(scope="module")
def tokenizers():
    return {name: LatentTokenizer(load_vae(c.backend, model=tiny_diffusers_model(c.backend)), lit_guard=False, target_usage=0.6)
            for name, c in CONVENTIONS.items()}  # fmt: skip


def _tokens(tokenizer, frames=3, height=4, width=6):
    torch.manual_seed(1)
    latent = torch.randn(1, tokenizer.vae.latent_channels, frames, height, width).cumsum(dim=2) * 0.5
    size = tokenizer.vae.decoded_size(latent.shape)
    return tokenizer.tokenize(latent, SourceInfo(frames=size[0], height=size[1], width=size[2]))


def _latok_video(tokenizer, adaptive) -> torch.Tensor:
    """latok's decode of the hold-restored tokens, uncropped, as (B, C, T, H, W) in [-1, 1]."""
    return tokenizer.vae.decode(restore(adaptive, "hold"))


def _still_transformer(**config):
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from diffusers.models.cache_utils import CacheMixin
    from diffusers.models.modeling_utils import ModelMixin

    class Still(ModelMixin, ConfigMixin, CacheMixin):
        """Predicts zero velocity: a flow-matching Euler step then leaves the latents unchanged."""

        @register_to_config
        def __init__(self, in_channels: int = 16, out_channels: int = 16, patch_size: tuple = (1, 2, 2)):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1))

        def forward(self, hidden_states, *args, **kwargs):
            return (torch.zeros_like(hidden_states) + 0 * self.anchor,)

    return Still(**config)


def test_wan_pipeline_decodes_for_pipeline_to_latoks_video(tokenizers):
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    tokenizer = tokenizers["wan"]
    adaptive = _tokens(tokenizer)
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=tokenizer.vae.model, transformer=_still_transformer(),
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0))  # fmt: skip
    latents = tokenizer.for_pipeline(adaptive, "wan")
    frames, height, width = tokenizer.vae.decoded_size(adaptive.shape)
    common = dict(prompt_embeds=torch.zeros(1, 4, 8), num_inference_steps=1, guidance_scale=1.0, height=height, width=width, num_frames=frames)
    video = pipe(latents=latents, output_type="pt", **common).frames  # (B, T, C, H, W) in [0, 1]
    expected = (_latok_video(tokenizer, adaptive).clamp(-1, 1) + 1) / 2
    torch.testing.assert_close(video.permute(0, 2, 1, 3, 4), expected, atol=1e-5, rtol=1e-5)
    out = pipe(latents=latents, output_type="latent", **common).frames
    torch.testing.assert_close(from_pipeline("wan", out), restore(adaptive, "hold"))
    back = tokenizer.from_pipeline_latents("wan", out)
    assert back.shape == adaptive.shape and back.backend == "wan2.1"


def _inverting_transformer(scheduler, unscale=None, **config):
    """Predicts whatever makes ``scheduler``'s step hand back its input: the step is affine in the prediction,
    so two probe steps (prediction 0 and x) give it.  ``unscale`` turns the model input back into the sample."""
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from diffusers.models.cache_utils import CacheMixin
    from diffusers.models.modeling_utils import ModelMixin

    class Inverting(ModelMixin, ConfigMixin, CacheMixin):
        @register_to_config
        def __init__(self, in_channels: int = 16, patch_size: int = 2, patch_size_t: int | None = None, sample_height: int = 60,
                     sample_width: int = 90, sample_frames: int = 49, use_rotary_positional_embeddings: bool = False,
                     temporal_compression_ratio: int = 4):  # fmt: skip
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1))

        def forward(self, hidden_states, timestep=None, **kwargs):
            x = hidden_states.float() if unscale is None else unscale(hidden_states.float())
            t = scheduler.timesteps[scheduler.step_index] if getattr(scheduler, "step_index", None) is not None else int(timestep.flatten()[0])
            index, probes = getattr(scheduler, "_step_index", None), []
            for prediction in (torch.zeros_like(x), x):
                out = scheduler.step(prediction, t, x, return_dict=False)
                probes.append(out[1] if unscale is not None else out[0])  # Cosmos steps on the predicted x0
                if index is not None:
                    scheduler._step_index = index
            slope = ((probes[1] - probes[0]) * x).sum() / (x * x).sum()
            return ((x - probes[0]) / slope + 0 * self.anchor,)

    return Inverting(**config)


def test_cogvideox_pipeline_decodes_for_pipeline_to_latoks_video(tokenizers):
    from diffusers import CogVideoXDDIMScheduler, CogVideoXPipeline

    tokenizer = tokenizers["cogvideox"]
    adaptive = _tokens(tokenizer)
    scheduler = CogVideoXDDIMScheduler()
    pipe = CogVideoXPipeline(tokenizer=None, text_encoder=None, vae=tokenizer.vae.model, transformer=_inverting_transformer(scheduler),
                             scheduler=scheduler)  # fmt: skip
    latents = tokenizer.for_pipeline(adaptive, "cogvideox", scheduler=scheduler)
    assert latents.shape[1:3] == (adaptive.shape[2], adaptive.shape[1])  # frame-first
    size = tokenizer.vae.decoded_size(adaptive.shape)
    common = dict(prompt_embeds=torch.zeros(1, 4, 8), guidance_scale=1.0, num_inference_steps=1, num_frames=size[0], height=size[1], width=size[2])
    _assert_same_video(pipe(latents=latents, output_type="pt", **common).frames, tokenizer, adaptive, atol=1e-4)
    out = pipe(latents=latents, output_type="latent", **common).frames
    torch.testing.assert_close(from_pipeline("cogvideox", out), restore(adaptive, "hold"), atol=1e-4, rtol=1e-4)


def _assert_same_video(frames: torch.Tensor, tokenizer, adaptive, atol: float = 1e-5) -> None:
    """A pipeline's ``output_type="pt"`` frames ``(B, T, C, H, W)`` in [0, 1] against its VAE's decode of latok's latent."""
    native = tokenizer.vae.denormalise(restore(adaptive, "hold"))
    expected = (tokenizer.vae.model.decode(native).sample.clamp(-1, 1) + 1) / 2
    torch.testing.assert_close(frames.permute(0, 2, 1, 3, 4), expected, atol=atol, rtol=0)


def test_ltx_pipeline_decodes_for_pipeline_to_latoks_video(tokenizers):
    from diffusers import FlowMatchEulerDiscreteScheduler, LTXPipeline

    tokenizer = tokenizers["ltx-video"]
    adaptive = _tokens(tokenizer, frames=2, height=2, width=3)
    transformer = _still_transformer(in_channels=8, out_channels=8, patch_size=1)
    transformer.register_to_config(patch_size_t=1)
    pipe = LTXPipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0), vae=tokenizer.vae.model, text_encoder=None, tokenizer=None,
                       transformer=transformer)  # fmt: skip
    latents = tokenizer.for_pipeline(adaptive, "ltx-video")
    _, channels, frames, height, width = adaptive.shape
    assert latents.shape == (1, frames * height * width, channels)
    assert not tokenizer.vae.model.config.timestep_conditioning  # with it, the pipeline's decode mixes noise in
    size = tokenizer.vae.decoded_size(adaptive.shape)
    common = dict(prompt_embeds=torch.zeros(1, 4, 8), prompt_attention_mask=torch.ones(1, 4, dtype=torch.long), guidance_scale=1.0,
                  num_inference_steps=1, num_frames=size[0], height=size[1], width=size[2])  # fmt: skip
    _assert_same_video(pipe(latents=latents, output_type="pt", **common).frames, tokenizer, adaptive)
    out = pipe(latents=latents, output_type="latent", **common).frames
    torch.testing.assert_close(from_pipeline("ltx-video", out, latent_shape=(frames, height, width)), restore(adaptive, "hold"))
    torch.testing.assert_close(pipe._pack_latents(restore(adaptive, "hold")), latents)  # the pipeline's own packing agrees


def test_hunyuanvideo_pipeline_decodes_for_pipeline_to_latoks_video(tokenizers):
    from diffusers import FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline

    tokenizer = tokenizers["hunyuanvideo"]
    adaptive = _tokens(tokenizer)
    pipe = HunyuanVideoPipeline(text_encoder=None, tokenizer=None, transformer=_still_transformer(), vae=tokenizer.vae.model,
                                scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0), text_encoder_2=None, tokenizer_2=None)  # fmt: skip
    size = tokenizer.vae.decoded_size(adaptive.shape)
    common = dict(prompt_embeds=torch.zeros(1, 4, 8), pooled_prompt_embeds=torch.zeros(1, 8), prompt_attention_mask=torch.ones(1, 4, dtype=torch.bool),
                  num_inference_steps=1, num_frames=size[0], height=size[1], width=size[2])  # fmt: skip
    latents = tokenizer.for_pipeline(adaptive, "hunyuanvideo")
    _assert_same_video(pipe(latents=latents, output_type="pt", **common).frames, tokenizer, adaptive)
    out = pipe(latents=latents, output_type="latent", **common).frames
    torch.testing.assert_close(from_pipeline("hunyuanvideo", out), restore(adaptive, "hold"))


def test_cosmos_pipeline_decodes_for_pipeline_to_latoks_video(tokenizers):
    from diffusers import CosmosTextToWorldPipeline, EDMEulerScheduler
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from diffusers.models.modeling_utils import ModelMixin

    class NoGuardrail(ModelMixin, ConfigMixin):
        """Stands in for cosmos_guardrail (not installable here); it passes everything."""

        @register_to_config
        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1))

        def check_text_safety(self, prompt):
            return True

        def check_video_safety(self, video):
            return video

    tokenizer = tokenizers["cosmos"]
    adaptive = _tokens(tokenizer, frames=2)
    scheduler = EDMEulerScheduler(sigma_max=80.0, sigma_data=0.5)

    def unscale(model_input):  # EDM's c_in = 1 / sqrt(sigma^2 + sigma_data^2)
        sigma = scheduler.sigmas[scheduler.step_index]
        return model_input * (sigma**2 + scheduler.config.sigma_data**2) ** 0.5

    pipe = CosmosTextToWorldPipeline(text_encoder=None, tokenizer=None, transformer=_inverting_transformer(scheduler, unscale), vae=tokenizer.vae.model,
                                     scheduler=scheduler, safety_checker=NoGuardrail())  # fmt: skip
    latents = tokenizer.for_pipeline(adaptive, "cosmos", scheduler=scheduler)
    size = tokenizer.vae.decoded_size(adaptive.shape)
    common = dict(prompt_embeds=torch.zeros(1, 4, 8), guidance_scale=1.0, num_inference_steps=1, num_frames=size[0], height=size[1], width=size[2])
    # the safety-checker path truncates the video to uint8 and back: within 1/255
    _assert_same_video(pipe(latents=latents, output_type="pt", **common).frames, tokenizer, adaptive, atol=1 / 255 + 1e-4)
    out = pipe(latents=latents, output_type="latent", **common).frames
    torch.testing.assert_close(from_pipeline("cosmos", out, scheduler), restore(adaptive, "hold"), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(CONVENTIONS))
def test_from_pipeline_inverts_to_pipeline_and_refuses_other_backends(name, tokenizers):
    latent = torch.randn(1, 8 if name == "ltx-video" else 16, 3, 4, 6)
    kept = to_pipeline(name, latent)
    output = kept * (80.0 if name == "cosmos" else 1.0)  # what an unchanged denoising hands back (Cosmos scales the input by sigma_max)
    torch.testing.assert_close(from_pipeline(name, output, latent_shape=(3, 4, 6)), latent)
    other = next(n for n in CONVENTIONS if n != name)
    with pytest.raises(InvalidInputError, match="takes"):
        tokenizers[other].for_pipeline(_tokens(tokenizers[other]), name)


def test_export_for_writes_the_pipeline_tensor_and_refuses_other_backends(tokenizers, tmp_path, capsys):
    from safetensors.torch import load_file

    from latok.cli import main

    tokenizer = tokenizers["cogvideox"]
    adaptive = _tokens(tokenizer)
    path = tokenizer.save(adaptive, tmp_path / "c.latok")
    out = tmp_path / "c.safetensors"
    assert main(["export", str(path), "-o", str(out), "--for", "cogvideox", "--fill", "hold"]) == 0
    torch.testing.assert_close(load_file(out)["latents"], tokenizer.for_pipeline(tokenizer.load(path), "cogvideox"))
    capsys.readouterr()
    assert main(["export", str(path), "-o", str(tmp_path / "w.safetensors"), "--for", "wan"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "WanPipeline takes wan2.1 latents" in err and not (tmp_path / "w.safetensors").exists()
