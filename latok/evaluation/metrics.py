"""Reconstruction metrics under the TokenBench protocol (DESIGN.md, "Evaluation protocol")."""

from __future__ import annotations

import math

import torch

from latok.errors import InvalidInputError
from latok.io import to_8bit_levels


def psnr(video: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR in dB from one MSE over the whole clip, computed in float64 on the [0, 255] scale.

    Both inputs are ``(B, 3, T, H, W)`` float in ``[-1, 1]`` of the same shape.  Values are
    quantised to 8-bit levels first, as a decoded video file would be, but never wrap
    around (TokenBench's own script had a uint8 overflow here).  Identical clips give ``inf``.
    """
    if video.shape != reference.shape:
        raise InvalidInputError(f"psnr needs equal shapes, got {tuple(video.shape)} and {tuple(reference.shape)}")
    a = to_8bit_levels(video)
    b = to_8bit_levels(reference)
    mse = (a - b).pow(2).mean().item()
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def ssim(video: torch.Tensor, reference: torch.Tensor) -> float:
    """SSIM per frame on the [0, 255] scale, averaged over frames and batch, exactly as TokenBench scores it.

    TokenBench's ``metrics_cli`` calls scikit-image's
    ``structural_similarity(a, b, data_range=255, channel_axis=-1)`` per uint8 frame with its
    defaults: a 7x7 uniform window, sample covariance (N / (N - 1)), K1 = 0.01, K2 = 0.03, the
    map averaged over each channel's interior (3 pixels from every edge cropped), then over
    channels.  This reproduces that call to 1e-6 (``tests/test_metrics.py``).
    Inputs: ``(B, 3, T, H, W)`` float in ``[-1, 1]``, at least 7x7 pixels.
    """
    if video.shape != reference.shape:
        raise InvalidInputError(f"ssim needs equal shapes, got {tuple(video.shape)} and {tuple(reference.shape)}")
    if min(video.shape[-2:]) < _SSIM_WINDOW:
        raise InvalidInputError(f"ssim needs frames of at least {_SSIM_WINDOW}x{_SSIM_WINDOW}, got {tuple(video.shape[-2:])}")
    frames = [to_8bit_levels(v).transpose(1, 2).flatten(0, 1) for v in (video, reference)]  # (B*T, 3, H, W)
    return _ssim_frames(*frames).mean().item()


_SSIM_WINDOW = 7  # scikit-image's default win_size


def _ssim_frames(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-frame SSIM of ``(N, 3, H, W)`` float64 images on [0, 255]; returns ``(N,)``.

    A valid (unpadded) 7x7 box filter gives exactly the interior scikit-image keeps after
    cropping: its reflect padding only reaches the cropped border."""
    import torch.nn.functional as F

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    covariance = _SSIM_WINDOW**2 / (_SSIM_WINDOW**2 - 1)  # sample covariance, use_sample_covariance=True

    def mean(image: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(image, _SSIM_WINDOW, stride=1)

    mu_x, mu_y = mean(x), mean(y)
    sigma_x = covariance * (mean(x * x) - mu_x * mu_x)
    sigma_y = covariance * (mean(y * y) - mu_y * mu_y)
    sigma_xy = covariance * (mean(x * y) - mu_x * mu_y)
    numerator = (2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)
    denominator = (mu_x**2 + mu_y**2 + c1) * (sigma_x + sigma_y + c2)
    return (numerator / denominator).mean(dim=(1, 2, 3))


def lpips(
    video: torch.Tensor, reference: torch.Tensor, weights: str | None = None, batch_frames: int = 8
) -> float:
    """LPIPS-VGG v0.1 per frame, averaged over frames and batch (lower is better).

    Inputs: ``(B, 3, T, H, W)`` float in ``[-1, 1]``, quantised to 8-bit levels like
    :func:`psnr`.  Runs on ``video``'s device, ``batch_frames`` frames at a time; the
    result does not depend on ``batch_frames``.  ``weights``: path to
    ``lpips_vgg16.safetensors`` (default lookup: ``LATOK_WEIGHTS_DIR``, cache, build).
    """
    if video.shape != reference.shape:
        raise InvalidInputError(f"lpips needs equal shapes, got {tuple(video.shape)} and {tuple(reference.shape)}")
    return ReferenceScorer(reference, lpips=True, lpips_weights=weights, batch_frames=batch_frames).lpips(video)


class ReferenceScorer:
    """PSNR, SSIM and LPIPS of many reconstructions against one reference clip.

    The reference's LPIPS features are computed once, which halves LPIPS' cost when
    a clip is scored under several settings.
    """

    def __init__(
        self, reference: torch.Tensor, lpips: bool = True, lpips_weights: str | None = None, batch_frames: int = 8
    ):
        self.reference = reference
        self.batch_frames = batch_frames
        self._model = None
        self._taps: list[list[torch.Tensor]] = []
        if lpips:
            from latok.evaluation.lpips import load_lpips

            self._model = load_lpips(None if lpips_weights is None else str(lpips_weights), str(reference.device))
            with torch.inference_mode():
                self._taps = [self._model.taps(batch) for batch in self._batches(reference)]

    def _batches(self, video: torch.Tensor):
        frames = (to_8bit_levels(video).float() / 127.5 - 1.0).transpose(1, 2).flatten(0, 1)  # (B*T, 3, H, W)
        for start in range(0, frames.shape[0], self.batch_frames):
            yield frames[start : start + self.batch_frames]

    def lpips(self, video: torch.Tensor) -> float:
        if self._model is None:
            raise InvalidInputError("this scorer was made without LPIPS")
        if video.shape != self.reference.shape:
            raise InvalidInputError(f"lpips needs equal shapes, got {tuple(video.shape)} and {tuple(self.reference.shape)}")
        with torch.inference_mode():
            scores = [self._model.distance(self._model.taps(batch), taps) for batch, taps in zip(self._batches(video), self._taps)]
        return torch.cat(scores).double().mean().item()

    def __call__(self, video: torch.Tensor) -> dict[str, float | None]:
        """``{"psnr", "ssim", "lpips"}`` of ``video`` (``lpips`` is None without LPIPS)."""
        return {
            "psnr": psnr(video, self.reference),
            "ssim": ssim(video, self.reference),
            "lpips": self.lpips(video) if self._model is not None else None,
        }
