"""The one interface every frozen autoencoder backend implements.

A backend maps video ``(B, 3, T, H, W)`` float in ``[-1, 1]`` to normalised
latents ``(B, C, t, h, w)`` and back.  The base class owns what is common:
input checks, padding to the backend's alignment (``1 + k*s`` frames, spatial
multiples), chunking over time under a memory bound, device/dtype moves and
inference mode.  Subclasses implement ``_encode`` / ``_decode`` on aligned,
device-resident chunks and declare their compression ratios.
"""

from __future__ import annotations

import abc
import math
from typing import ClassVar

import torch
import torch.nn.functional as F

from latok.errors import InvalidInputError

# Frames per encoder/decoder call are chosen so that one call sees at most this
# many pixels.  On CPU one 240p frame per call is fastest (eval/bench_vae.py:
# batches of 4 and 17 frames run 15-35% slower, activations fall out of cache);
# on GPU larger batches keep the device busy.  Peak memory scales with it too.
CHUNK_PIXELS_CPU = 1 << 17  # one 416x240 frame (99,840 px)
CHUNK_PIXELS_CUDA = 1 << 22  # ~40 frames at 416x240


def parse_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a :class:`torch.device` this machine has (default: cpu)."""
    try:
        parsed = torch.device(device or "cpu")
    except (RuntimeError, TypeError) as error:
        raise InvalidInputError(f"device {device!r} is not a torch device ({str(error).split(':')[0]})") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device {device!r}: no CUDA device is available here (use cpu)")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidInputError(f"device {device!r}: no MPS device is available here (use cpu)")
    return parsed


def default_chunk_pixels(device: torch.device) -> int:
    return CHUNK_PIXELS_CUDA if device.type == "cuda" else CHUNK_PIXELS_CPU


class VideoAutoencoder(abc.ABC):
    """A frozen video autoencoder behind latok's protocol.

    ``precision`` (``auto``, ``fp32``, ``bf16``, ``fp16``; :mod:`latok.vae.precision`) is what the encoder and
    decoder compute in: ``auto`` is bf16 where the hardware computes it natively, fp32 elsewhere.

    Class attributes (readable without loading weights):
        name: registry name, e.g. ``"taef2"``.
        latent_channels: C of the latent.
        temporal_ratio: s; ``1 + k*s`` frames map to ``1 + k`` latent frames (1: per-frame model).
        spatial_ratio: pixels per latent cell along each spatial axis.
        spatial_multiple: input height/width are padded to a multiple of this.
        default_tau: the masking threshold calibrated for this backend, ``None`` if uncalibrated.
        default_taus: thresholds calibrated per motion model (``"none"``, ``"global"``, ``"block"``)
            for the motion-compensated rule; a motion missing here uses ``default_tau``.
        value_sensitivity: per latent channel, how much decoded pixels move per unit of it
            (``sqrt`` of the :meth:`decoder_metric` diagonal, geometric mean 1); quantisation steps
            are divided by it (:mod:`latok.codec.format.coders.values`).  ``None``: one step for every channel.
        quality_calibration: ``(scale, exponent)`` of the :class:`~latok.codec.restore.quality.QualityCalibration`
            that maps the weighted hold error to the default decode's PSNR loss (``None``: no quality target).
        default_target_quality: the PSNR loss budget (dB) that is the default rate with a quality calibration;
            ``None``: the default rate is ``default_taus`` / ``default_tau``.
        default_value_step: the quantisation step ``.latok`` files take by default (0: exact values).
        fixed_geometry: every model of this backend has these channels and ratios, so a ``.latok``
            header's latent shape must be exactly what :meth:`latent_shape` gives for its source.
        auto_bf16_on_cpu: ``precision="auto"`` picks bf16 on a CPU that computes it natively (only for
            backends whose bf16 quality was measured; elsewhere auto is fp32 on CPU and bf16 on CUDA).
    """

    name: ClassVar[str] = ""
    latent_channels: ClassVar[int]
    temporal_ratio: ClassVar[int]
    spatial_ratio: ClassVar[int]
    spatial_multiple: ClassVar[int | None] = None
    default_tau: ClassVar[float | None] = None  # calibrated masking threshold without motion
    default_taus: ClassVar[dict[str, float]] = {}  # per motion model (eval/calibrate_pool.py)
    value_sensitivity: ClassVar[tuple[float, ...] | None] = None
    quality_calibration: ClassVar[tuple[float, float] | None] = None  # (scale, exponent) of latok.codec.restore.quality
    default_target_quality: ClassVar[float | None] = None  # the default rate where the backend has a quality calibration
    default_value_step: ClassVar[float] = 0.0
    weights_option: ClassVar[str] = "weights"  # the constructor option that takes a weights path
    fixed_geometry: ClassVar[bool] = True  # channels and ratios are the class's; False where a model config may change them
    auto_bf16_on_cpu: ClassVar[bool] = False  # precision "auto" may pick bf16 on a CPU: only where its quality was measured

    def __init__(
        self,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        chunk_pixels: int | None = None,
        precision: str | None = None,
    ):
        from latok.vae.precision import DTYPES, precision_of, resolve_precision

        self.device = parse_device(device)
        if dtype is not None and precision is not None:
            raise InvalidInputError("give precision or dtype, not both")
        self.precision = precision_of(dtype) if dtype is not None else resolve_precision(precision, self.device, self.auto_bf16_on_cpu)
        self.dtype = DTYPES[self.precision]
        chunk_pixels = default_chunk_pixels(self.device) if chunk_pixels is None else chunk_pixels
        if chunk_pixels < 1:
            raise InvalidInputError(f"chunk_pixels must be >= 1, got {chunk_pixels}")
        self.chunk_pixels = chunk_pixels
        self.progress = False  # show a tqdm bar over frames in encode/decode (the CLI turns it on)

    # -- geometry ------------------------------------------------------------------------

    @property
    def _multiple(self) -> int:
        return self.spatial_multiple or self.spatial_ratio

    def aligned_frames(self, frames: int) -> int:
        """Smallest ``1 + k*s >= frames``: the frame count the encoder actually sees."""
        s = self.temporal_ratio
        return frames if s == 1 else 1 + math.ceil((frames - 1) / s) * s

    @classmethod
    def expected_latent(cls, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """``(C, t, h, w)`` of the latent this backend's class makes from a ``frames x height x width`` video."""
        m = cls.spatial_multiple or cls.spatial_ratio
        s = cls.temporal_ratio
        aligned = frames if s == 1 else 1 + math.ceil((frames - 1) / s) * s
        return cls.latent_channels, (aligned - 1) // s + 1, math.ceil(height / m) * m // cls.spatial_ratio, math.ceil(width / m) * m // cls.spatial_ratio

    def latent_shape(self, video_shape: tuple[int, ...]) -> tuple[int, int, int, int, int]:
        """``(B, 3, T, H, W)`` -> the ``(B, C, t, h, w)`` that :meth:`encode` returns."""
        batch, _, frames, height, width = video_shape
        m = self._multiple
        return (
            batch,
            self.latent_channels,
            (self.aligned_frames(frames) - 1) // self.temporal_ratio + 1,
            math.ceil(height / m) * m // self.spatial_ratio,
            math.ceil(width / m) * m // self.spatial_ratio,
        )

    def decoded_size(self, latent_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """``(T, H, W)`` that :meth:`decode` produces from a latent of this shape before cropping."""
        _, _, t, h, w = latent_shape
        return (t - 1) * self.temporal_ratio + 1, h * self.spatial_ratio, w * self.spatial_ratio

    # -- public API ----------------------------------------------------------------------

    @torch.inference_mode()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Encode video to normalised latents.

        Args:
            video: ``(B, 3, T, H, W)`` float in ``[-1, 1]``, any device.

        Returns:
            ``(B, C, t, h, w)`` float32 on ``video``'s device; shape as :meth:`latent_shape`.
        """
        _check_video(video)
        frames = video.shape[2]
        video = _pad_video(video, self.aligned_frames(frames), self._multiple)
        out = [self._encode_clip(clip) for clip in video.split(1)]
        return torch.cat(out).to(video.device)

    @torch.inference_mode()
    def decode(self, latent: torch.Tensor, size: tuple[int, int, int] | None = None) -> torch.Tensor:
        """Decode normalised latents to video.

        Args:
            latent: ``(B, C, t, h, w)`` float, any device.
            size: ``(T, H, W)`` of the original video; the output is cropped to it
                (undoing the padding :meth:`encode` added).  ``None`` keeps :meth:`decoded_size`.

        Returns:
            ``(B, 3, T, H, W)`` float32 in ``[-1, 1]`` on ``latent``'s device.
        """
        self._check_latent(latent)
        full = self.decoded_size(latent.shape)
        if size is not None:
            size = tuple(int(v) for v in size)
            if len(size) != 3 or any(s < 1 or s > f for s, f in zip(size, full)):
                raise InvalidInputError(f"size must be (T, H, W) within the decoded {full}, got {size}")
        out = torch.cat([self._decode_clip(clip) for clip in latent.split(1)]).to(latent.device)
        if size is not None:
            out = out[:, :, : size[0], : size[1], : size[2]]
        return out.clamp_(-1.0, 1.0)

    def decode_with_grad(self, latent: torch.Tensor) -> torch.Tensor:
        """The decoder on a normalised ``(1, C, t, h, w)`` latent keeping the autograd graph (a training loss through
        the frozen decoder): no padding, chunking or clamping; the latent must be on the model's device and dtype."""
        self._check_latent(latent)
        return self._decode(latent)

    @torch.inference_mode()
    def decoder_metric(self, latent: torch.Tensor, step: float = 0.05, seed: int = 0) -> torch.Tensor:
        """The decoder's average pixel metric on latent errors, a ``(C, C)`` matrix G.

        An error e (a C-vector) at one latent position changes the decoded video by about
        e^T G e in summed squared pixel error (pixels in ``[-1, 1]``), averaged over the
        positions of ``latent``.  Latent channels matter very unequally to a decoder, so
        losses and comparisons made with G track decoded PSNR better than plain latent MSE.

        Estimated by finite differences, one decode per channel: channel c of every position
        moves by ``step`` times a random sign shared by all channels, so that cross-position
        terms cancel in expectation and G[c, d] is the mean product of the responses to c and d.

        Args:
            latent: ``(1, C, t, h, w)`` normalised latents of typical content (a few frames do).
            step: finite-difference step in normalised latent units.
            seed: seed of the random signs.
        """
        self._check_latent(latent)
        if self.precision != "fp32":
            raise InvalidInputError(f"decoder_metric needs an fp32 autoencoder (its finite differences vanish in {self.precision}): load it with precision='fp32'")
        if latent.shape[0] != 1:
            raise InvalidInputError(f"decoder_metric takes one clip (1, C, t, h, w), got {tuple(latent.shape)}")
        from tqdm.auto import tqdm

        latent = latent.float()
        generator = torch.Generator().manual_seed(seed)
        signs = (torch.randint(0, 2, (1, 1, *latent.shape[2:]), generator=generator) * 2 - 1).to(latent)
        base = self.decode(latent)
        responses = []
        for channel in tqdm(range(latent.shape[1]), desc=f"{self.name} decoder metric", unit="channel", leave=False):
            moved = latent.clone()
            moved[:, channel] += step * signs[:, 0]
            responses.append(((self.decode(moved) - base) / step).flatten().double())
        responses = torch.stack(responses)  # (C, pixels)
        metric = responses @ responses.T / latent[0, 0].numel()
        metric += 1e-6 * metric.diagonal().mean() * torch.eye(len(metric), dtype=metric.dtype)  # strictly pos. definite
        return metric.float()

    # -- latent spaces ---------------------------------------------------------------------

    def normalise(self, native: torch.Tensor) -> torch.Tensor:
        """The autoencoder's own latents -> latok's normalised latents (identity unless overridden)."""
        return native

    def denormalise(self, latent: torch.Tensor) -> torch.Tensor:
        """latok's normalised latents -> the autoencoder's own latents (what its decoder takes)."""
        return latent

    # -- chunking ------------------------------------------------------------------------

    def _frames_per_chunk(self, frames: int, pixels_per_frame: int) -> int:
        """Frames per encoder/decoder call; temporal models see the whole clip (they tile internally)."""
        if self.temporal_ratio != 1:
            return frames
        return max(1, min(frames, self.chunk_pixels // pixels_per_frame))

    def _encode_clip(self, video: torch.Tensor) -> torch.Tensor:
        return self._run_chunked(self._encode, video, video.shape[-2] * video.shape[-1], "encode")

    def _decode_clip(self, latent: torch.Tensor) -> torch.Tensor:
        pixels = latent.shape[-2] * latent.shape[-1] * self.spatial_ratio**2
        return self._run_chunked(self._decode, latent, pixels, "decode")

    def _run_chunked(self, fn, clip: torch.Tensor, pixels_per_frame: int, desc: str) -> torch.Tensor:
        """Apply ``fn`` to time chunks of one clip on the model's device; results gather on the CPU."""
        from tqdm.auto import tqdm

        step = self._frames_per_chunk(clip.shape[2], pixels_per_frame)
        chunks = []
        with tqdm(total=clip.shape[2], unit="frame", desc=f"{self.name} {desc}", disable=not self.progress) as bar:
            for chunk in clip.split(step, dim=2):
                chunks.append(fn(chunk.to(self.device, self.dtype, non_blocking=True)).float().cpu())
                bar.update(chunk.shape[2])
        return torch.cat(chunks, dim=2)

    def _check_latent(self, latent: torch.Tensor) -> None:
        if not isinstance(latent, torch.Tensor) or latent.ndim != 5 or latent.shape[1] != self.latent_channels:
            shape = tuple(latent.shape) if isinstance(latent, torch.Tensor) else type(latent).__name__
            raise InvalidInputError(
                f"{self.name} expects latents (B, {self.latent_channels}, t, h, w), got {shape}"
            )
        if not latent.is_floating_point():
            raise InvalidInputError(f"latents must be floating point, got {latent.dtype}")

    # -- backend hooks -------------------------------------------------------------------

    @abc.abstractmethod
    def _encode(self, video: torch.Tensor) -> torch.Tensor:
        """Aligned ``(1, 3, T, H, W)`` in ``[-1, 1]`` on device -> normalised ``(1, C, t, h, w)``."""

    @abc.abstractmethod
    def _decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Normalised ``(1, C, t, h, w)`` on device -> ``(1, 3, T, H, W)`` roughly in ``[-1, 1]``."""

    @classmethod
    def weights_available(cls, **options) -> bool:
        """Whether :func:`load_vae` would find weights without downloading."""
        return False

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, latent_channels={self.latent_channels}, "
            f"temporal_ratio={self.temporal_ratio}, spatial_ratio={self.spatial_ratio}, "
            f"device={self.device}, precision={self.precision})"
        )


def _check_video(video: torch.Tensor) -> None:
    if not isinstance(video, torch.Tensor):
        raise InvalidInputError(f"video must be a torch.Tensor (B, 3, T, H, W), got {type(video).__name__}")
    if video.ndim != 5 or video.shape[1] != 3:
        raise InvalidInputError(f"video must be (B, 3, T, H, W), got shape {tuple(video.shape)}")
    if not video.is_floating_point():
        raise InvalidInputError(f"video must be float in [-1, 1], got {video.dtype}; see latok.io.frames_to_video")
    if min(video.shape) == 0:
        raise InvalidInputError(f"video has an empty dimension: {tuple(video.shape)}")
    low, high = video.aminmax()
    if low < -1.01 or high > 1.01:  # small slack for resampling overshoot
        raise InvalidInputError(f"video values must lie in [-1, 1], got [{low.item():.3g}, {high.item():.3g}]")


def _pad_video(video: torch.Tensor, frames: int, multiple: int) -> torch.Tensor:
    """Replicate-pad the end of time, height and width to ``frames`` and multiples of ``multiple``."""
    _, _, t, h, w = video.shape
    pad_t, pad_h, pad_w = frames - t, -h % multiple, -w % multiple
    if pad_t == pad_h == pad_w == 0:
        return video
    # replicate padding of 5-D input pads the last three dims: (w_left, w_right, h_top, h_bottom, t_front, t_back)
    return F.pad(video, (0, pad_w, 0, pad_h, 0, pad_t), mode="replicate")
