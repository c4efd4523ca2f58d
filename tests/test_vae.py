"""Contract tests for every registered VAE backend, plus real-weight quality for TAEF2."""

from __future__ import annotations

import pytest
import torch
from conftest import BLACKSWAN, DIFFUSERS_BACKENDS, needs_data, tiny_diffusers_model

from latok import LatokError, load_vae
from latok.errors import InvalidInputError, UnknownBackendError, WeightsNotFoundError
from latok.vae import list_vaes, vae_class
from latok.vae.base import VideoAutoencoder


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a - b) * 127.5).double().pow(2).mean()
    return float(10 * torch.log10(255.0**2 / mse))


def test_registry_lists_every_backend_default_first():
    names = list_vaes()
    assert names[0] == "taef2"
    assert set(DIFFUSERS_BACKENDS) <= set(names)
    for name in names:
        cls = vae_class(name)
        assert cls.name == name
        assert cls.latent_channels > 0 and cls.temporal_ratio >= 1 and cls.spatial_ratio >= 8


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(UnknownBackendError, match="unknown VAE backend 'nope'; available: taef2"):
        load_vae("nope")


@pytest.fixture(scope="module", params=DIFFUSERS_BACKENDS)
def tiny_vae(request):
    return load_vae(request.param, model=tiny_diffusers_model(request.param))


@pytest.mark.parametrize("frames", [9, 10, 1, 4])
def test_diffusers_adapter_round_trips_shape(tiny_vae, frames):
    torch.manual_seed(frames)
    video = torch.rand(1, 3, frames, 48, 40) * 2 - 1  # 48x40 is not a multiple of LTX's 32
    latent = tiny_vae.encode(video)
    assert latent.shape == tiny_vae.latent_shape(video.shape)
    assert latent.dtype == torch.float32 and torch.isfinite(latent).all()
    decoded = tiny_vae.decode(latent, size=video.shape[-3:])
    assert decoded.shape == video.shape
    assert decoded.min() >= -1 and decoded.max() <= 1
    full = tiny_vae.decode(latent)
    assert full.shape[2:] == tiny_vae.decoded_size(latent.shape)
    assert full.shape[2] >= frames and (full.shape[2] - 1) % tiny_vae.temporal_ratio == 0


def test_diffusers_adapter_is_deterministic_and_normalises(tiny_vae):
    video = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    a, b = tiny_vae.encode(video), tiny_vae.encode(video)
    assert torch.equal(a, b)  # posterior mode, not a sample
    raw = tiny_vae.model.encode(video).latent_dist.mode()
    torch.testing.assert_close(tiny_vae.denormalise(a), raw, rtol=1e-4, atol=1e-5)
    if tiny_vae.name in ("cogvideox", "hunyuanvideo"):
        torch.testing.assert_close(a, raw * tiny_vae.model.config.scaling_factor)


def test_diffusers_adapter_batches(tiny_vae):
    video = torch.rand(2, 3, 5, 32, 32) * 2 - 1
    latent = tiny_vae.encode(video)
    assert latent.shape[0] == 2
    torch.testing.assert_close(latent[1:], tiny_vae.encode(video[1:]), rtol=1e-4, atol=1e-5)


def test_diffusers_missing_weights_is_one_clear_line(tmp_path):
    with pytest.raises(WeightsNotFoundError) as info:
        load_vae("wan2.1", pretrained=tmp_path / "no-such-dir")
    message = str(info.value)
    assert "\n" not in message and "wan2.1" in message and "pretrained=" in message


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.zeros(3, 4, 16, 16), r"\(B, 3, T, H, W\)"),
        (torch.zeros(1, 4, 2, 16, 16), r"\(B, 3, T, H, W\)"),
        (torch.zeros(1, 3, 2, 16, 16, dtype=torch.uint8), "float"),
        (torch.full((1, 3, 2, 16, 16), 200.0), r"\[-1, 1\]"),
        (torch.zeros(1, 3, 0, 16, 16), "empty"),
    ],
)
def test_bad_video_is_rejected(bad, match):
    vae = load_vae("hunyuanvideo", model=tiny_diffusers_model("hunyuanvideo"))
    with pytest.raises(InvalidInputError, match=match):
        vae.encode(bad)


def test_bad_latent_is_rejected(taef2):
    with pytest.raises(InvalidInputError, match=r"\(B, 32, t, h, w\)"):
        taef2.decode(torch.zeros(1, 16, 2, 4, 4))
    with pytest.raises(InvalidInputError, match="size must be"):
        taef2.decode(torch.zeros(1, 32, 2, 4, 4), size=(3, 32, 32))


def test_taef2_missing_weights_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("LATOK_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("LATOK_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(LatokError) as info:
        load_vae("taef2")
    message = str(info.value)
    assert "\n" not in message and "taef2_encoder.pth" in message and "LATOK_WEIGHTS_DIR" in message
    with pytest.raises(WeightsNotFoundError, match="not found at the given path"):
        load_vae("taef2", weights=tmp_path)


def test_taef2_shapes_and_padding(taef2):
    video = torch.rand(1, 3, 3, 50, 70) * 2 - 1  # not multiples of 8
    latent = taef2.encode(video)
    assert latent.shape == (1, 32, 3, 7, 9)
    assert taef2.decode(latent, size=(3, 50, 70)).shape == video.shape
    assert taef2.decode(latent).shape == (1, 3, 3, 56, 72)


def test_taef2_chunking_does_not_change_results(taef2):
    from latok.vae.taesd import TAEF2

    video = torch.rand(1, 3, 5, 32, 48) * 2 - 1
    small_chunks = TAEF2(chunk_pixels=32 * 48 * 2)  # 2 frames per call
    torch.testing.assert_close(small_chunks.encode(video), taef2.encode(video), rtol=1e-4, atol=1e-4)
    latent = taef2.encode(video)
    torch.testing.assert_close(small_chunks.decode(latent), taef2.decode(latent), rtol=1e-4, atol=1e-4)


@needs_data
def test_taef2_real_weights_quality_on_blackswan(taef2):
    from latok.io import read_video

    video = read_video(BLACKSWAN, frames=17, height=240)
    assert video.shape == (1, 3, 17, 240, 416)
    latent = taef2.encode(video)
    assert latent.shape == (1, 32, 17, 30, 52)
    decoded = taef2.decode(latent)
    assert decoded.shape == video.shape
    assert psnr(decoded, video) >= 29.0


class _LinearDecoder(VideoAutoencoder):
    """Every latent position decodes on its own to a 2x2 block of one colour, ``weight @ z``."""

    name, latent_channels, temporal_ratio, spatial_ratio = "linear", 4, 1, 2

    def __init__(self, weight: torch.Tensor):
        super().__init__(device="cpu")
        self.weight = weight  # (3, C)

    def _encode(self, video):
        return torch.zeros(1, 4, video.shape[2], video.shape[3] // 2, video.shape[4] // 2)  # only decoding is tested

    def _decode(self, latent):
        colour = torch.einsum("kc,bcthw->bkthw", self.weight, latent)
        return colour.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


def test_decoder_metric_is_exact_for_a_per_position_linear_decoder():
    weight = torch.randn(3, 4, generator=torch.Generator().manual_seed(0)) * 0.1
    latent = torch.rand(1, 4, 2, 3, 5, generator=torch.Generator().manual_seed(1)) - 0.5  # decodes inside [-1, 1]
    metric = _LinearDecoder(weight).decoder_metric(latent, step=0.01)
    # an error e at one position changes 4 pixels by weight @ e: 4 e^T W^T W e
    torch.testing.assert_close(metric, 4 * weight.T @ weight, rtol=1e-3, atol=1e-6)
    with pytest.raises(InvalidInputError, match="one clip"):
        _LinearDecoder(weight).decoder_metric(latent.expand(2, -1, -1, -1, -1))


def test_taef2_decoder_metric_predicts_decoded_error():
    """e^T G e summed over positions is the decoded squared error of a small latent error e,
    and taef2's channels matter very unequally (why the inpainter's loss and guard use G)."""
    taef2 = load_vae("taef2", precision="fp32")  # finite differences need fp32
    generator = torch.Generator().manual_seed(0)
    latent = taef2.encode(torch.rand(1, 3, 2, 64, 64, generator=generator) * 2 - 1)
    metric = taef2.decoder_metric(latent)
    assert metric.shape == (32, 32) and torch.allclose(metric, metric.T, atol=1e-5)
    assert float(torch.linalg.eigvalsh(metric).min()) > 0
    assert float(metric.diagonal().max() / metric.diagonal().min()) > 5
    error = torch.randn(latent.shape, generator=generator) * 0.02
    predicted = torch.einsum("bcthw,cd,bdthw->", error, metric, error)
    measured = (taef2.decode(latent + error) - taef2.decode(latent)).pow(2).sum()
    assert 0.6 < float(predicted / measured) < 1.6
