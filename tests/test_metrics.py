"""PSNR, SSIM and LPIPS-VGG under the TokenBench protocol."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import WEIGHTS

from latok.errors import InvalidInputError
from latok.evaluation.metrics import lpips, psnr, ssim

needs_lpips = pytest.mark.skipif(
    not (WEIGHTS / "lpips_vgg16.safetensors").is_file(), reason=f"LPIPS weights not found in {WEIGHTS}"
)


def smooth_video(seed: int, frames: int = 3, height: int = 48, width: int = 64) -> torch.Tensor:
    """A ``(1, 3, T, H, W)`` clip in [-1, 1] with image-like structure (smooth blobs and edges)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3 * frames, max(1, height // 8), max(1, width // 8), generator=generator)
    video = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    video = video.view(1, 3, frames, height, width).clamp(0, 1) * 2 - 1
    video[..., height // 2 :, : width // 3] *= -1  # a hard edge
    return video


def noisy(video: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (video + sigma * torch.randn(video.shape, generator=generator)).clamp(-1, 1)


def test_psnr_is_float_over_the_whole_clip_without_uint8_wraparound():
    reference = torch.full((1, 3, 2, 8, 8), -1.0)  # 0 on the 8-bit scale
    video = reference.clone()
    video[0, :, 1] = 1.0  # 255: a uint8 subtraction 0 - 255 would wrap to 1
    expected = 10 * math.log10(255**2 / (255**2 / 2))  # half the pixels off by 255
    assert psnr(video, reference) == pytest.approx(expected, abs=1e-9)
    assert psnr(reference, reference) == math.inf
    a, b = smooth_video(0), noisy(smooth_video(0), 0.05)
    mse = ((a.add(1).mul(127.5).round() - b.add(1).mul(127.5).round()) ** 2).double().mean().item()
    assert psnr(b, a) == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-9)


@pytest.mark.parametrize("sigma", [0.0, 0.02, 0.1, 0.3])
@pytest.mark.parametrize("size", [(24, 40), (7, 9), (33, 16)])
def test_ssim_is_tokenbenchs_scikit_image_call(sigma, size):
    """TokenBench's metrics_cli: structural_similarity(a, b, data_range=255, channel_axis=-1) on uint8
    frames with scikit-image's defaults, per frame, mean over frames."""
    from skimage.metrics import structural_similarity

    reference = smooth_video(1, height=size[0], width=size[1])
    video = noisy(reference, sigma)
    to_uint8 = lambda v: v.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 3, 0).numpy()  # (T, H, W, 3)
    expected = np.mean(
        [structural_similarity(a, b, data_range=255, channel_axis=-1) for a, b in zip(to_uint8(video), to_uint8(reference))]
    )
    assert abs(ssim(video, reference) - expected) < 1e-6
    assert ssim(reference, reference) == pytest.approx(1.0)


def test_ssim_refuses_frames_below_its_window():
    with pytest.raises(InvalidInputError, match="at least 7x7"):
        ssim(smooth_video(0, height=6, width=12), smooth_video(0, height=6, width=12))


def test_psnr_is_one_mse_over_the_clip():
    torch.manual_seed(0)
    a = torch.rand(1, 3, 3, 40, 48) * 2 - 1
    c = a.clone()
    c[:, :, 0] = 1.0  # one wrong frame counts once, not per-frame averaged in dB
    mse = ((((a + 1) * 127.5).round() - ((c + 1) * 127.5).round()) ** 2).mean().item()
    assert psnr(c, a) == pytest.approx(10 * torch.log10(torch.tensor(255.0**2 / mse)).item(), abs=1e-6)
    assert psnr(a, a) == float("inf")


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(InvalidInputError, match="equal shapes"):
        psnr(smooth_video(0), smooth_video(0, frames=2))
    with pytest.raises(InvalidInputError, match="equal shapes"):
        lpips(smooth_video(0), smooth_video(0, frames=2))


@needs_lpips
def test_lpips_is_zero_for_identical_clips_and_grows_with_distortion():
    reference = smooth_video(2)
    assert lpips(reference, reference) == pytest.approx(0.0, abs=1e-7)
    scores = [lpips(noisy(reference, sigma), reference) for sigma in (0.02, 0.08, 0.3)]
    assert 0 < scores[0] < scores[1] < scores[2] < 1.5
    blurred = torch.nn.functional.avg_pool3d(reference, (1, 5, 5), stride=1, padding=(0, 2, 2))
    assert lpips(blurred, reference) > scores[0]


@needs_lpips
def test_lpips_does_not_depend_on_batching_or_precision():
    from latok.evaluation.lpips import load_lpips

    reference = smooth_video(3, frames=5)
    video = noisy(reference, 0.1)
    one_at_a_time = lpips(video, reference, batch_frames=1)
    assert lpips(video, reference, batch_frames=5) == pytest.approx(one_at_a_time, rel=1e-5)
    assert lpips(video, reference, batch_frames=2) == pytest.approx(one_at_a_time, rel=1e-5)
    model = load_lpips()
    frames = [v[0].transpose(0, 1).add(1).mul(127.5).round().div(127.5).sub(1) for v in (video, reference)]
    in_double = model.double()(frames[0].double(), frames[1].double()).mean().item()
    model.float()
    assert in_double == pytest.approx(one_at_a_time, rel=1e-4)


@needs_lpips
def test_lpips_weights_are_the_canonical_ones():
    from safetensors.torch import load_file

    from latok.evaluation.lpips import CONTENT_SHA256
    from latok.weights import tensor_digest

    assert tensor_digest(load_file(str(WEIGHTS / "lpips_vgg16.safetensors"))) == CONTENT_SHA256


def test_lpips_build_from_downloads_checks_the_contents(tmp_path):
    from latok.errors import WeightsChecksumError
    from latok.evaluation.lpips import LPIPS, _build

    state = LPIPS().state_dict()  # random weights: not the canonical contents
    vgg = {name: tensor for name, tensor in state.items() if name.startswith("features.")}
    heads = {f"lin{i}.model.1.weight": state[f"lin{i}.weight"] for i in range(5)}
    torch.save(vgg, tmp_path / "vgg.pth")
    torch.save(heads, tmp_path / "heads.pth")
    with pytest.raises(WeightsChecksumError, match="content sha256"):
        _build(tmp_path / "vgg.pth", tmp_path / "heads.pth", tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()
