"""Video input and output.

uint8 ``(T, H, W, 3)`` frames exist only here, at the boundary; everything past
this module works on float video ``(B, 3, T, H, W)`` in ``[-1, 1]``.

Readers: any container PyAV/FFmpeg decodes (mp4, avi, mov, mkv, webm, gif, raw
H.264 ``.264``) and DAVIS-style frame folders (a directory of JPEG/PNG frames
sorted by name).  Writers: H.264 mp4 (yuv420p) and PNG folders, both atomic.

The ``height`` option implements the 240p protocol of DESIGN.md: resize to the
given height keeping the aspect ratio, then centre-crop the width to a multiple
of 16 (854x480 -> 427x240 -> 416x240).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from latok._fs import AtomicWriter, atomic_path
from latok.errors import (
    CorruptVideoError,
    EmptyVideoError,
    FrameSizeError,
    InvalidInputError,
    NotAVideoError,
    VideoNotFoundError,
    VideoWriteError,
)

logger = logging.getLogger(__name__)

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
MP4_SUFFIXES = (".mp4", ".mov", ".mkv")
WIDTH_MULTIPLE = 16  # DESIGN.md 240p protocol: width centre-cropped to a multiple of 16
DEFAULT_FOLDER_FPS = 24.0  # DAVIS is shot at 24 fps; frame folders carry no rate
DEFAULT_STREAM_FPS = 25.0  # FFmpeg's own guess for raw streams without timing


@dataclass(frozen=True)
class Clip:
    """A decoded clip and where it came from.

    Attributes:
        video: ``(1, 3, T, H, W)`` float32 in ``[-1, 1]``.
        fps: frame rate of ``video`` (the source rate divided by ``stride``).
        source_size: ``(height, width)`` of the source frames.
        resized_size: ``(height, width)`` after the aspect-keeping resize.
        crop: ``(top, left, height, width)`` of the centre crop inside the resized frame.
    """

    video: torch.Tensor
    fps: float
    source_size: tuple[int, int]
    resized_size: tuple[int, int]
    crop: tuple[int, int, int, int]

    @property
    def frames(self) -> int:
        return self.video.shape[2]


def read_video(
    path: str | os.PathLike,
    frames: int | None = None,
    start: int = 0,
    stride: int = 1,
    height: int | None = None,
) -> torch.Tensor:
    """Read a video file or frame folder as ``(1, 3, T, H, W)`` float32 in ``[-1, 1]``.

    See :func:`load_clip` for the options and the errors raised.
    """
    return load_clip(path, frames=frames, start=start, stride=stride, height=height).video


def load_clip(
    path: str | os.PathLike,
    frames: int | None = None,
    start: int = 0,
    stride: int = 1,
    height: int | None = None,
    folder_fps: float = DEFAULT_FOLDER_FPS,
) -> Clip:
    """Decode frames ``start, start+stride, ...`` (at most ``frames`` of them).

    Args:
        path: a video file, or a directory of ``.jpg``/``.png`` frames.
        frames: maximum number of frames to return; ``None`` reads to the end.
        start: index of the first source frame.
        stride: keep every ``stride``-th source frame.
        height: resize to this height keeping aspect, then centre-crop the
            width to a multiple of 16 (the 240p protocol).  ``None`` keeps the
            source size.
        folder_fps: frame rate assumed for frame folders.

    Raises:
        VideoNotFoundError, NotAVideoError, EmptyVideoError, CorruptVideoError,
        FrameSizeError: one-line messages naming the path and the reason.
        InvalidInputError: an option is out of range.
    """
    path = Path(path)
    resize = _Resizer(height)
    source_fps, selected = _open_frames(path, frames, start, stride, resize, folder_fps)
    kept = list(selected)
    video = frames_to_video(np.stack(kept))  # (1, 3, T, H, W)
    return Clip(video=video, fps=source_fps / stride, source_size=resize.source_size, resized_size=resize.resized_size, crop=resize.crop)


def stream_clip(
    path: str | os.PathLike,
    chunk_frames: int,
    frames: int | None = None,
    start: int = 0,
    stride: int = 1,
    height: int | None = None,
    folder_fps: float = DEFAULT_FOLDER_FPS,
) -> Iterator[Clip]:
    """Decode a video of any length as consecutive :class:`Clip` chunks of ``chunk_frames`` frames.

    Only one chunk of frames is in memory at a time.  Options and errors are those of
    :func:`load_clip`; errors are raised before the first chunk when the input cannot
    be opened, and mid-stream when it is corrupt further in.
    """
    if chunk_frames < 1:
        raise InvalidInputError(f"chunk frames must be >= 1, got {chunk_frames}")
    path = Path(path)
    resize = _Resizer(height)
    source_fps, selected = _open_frames(path, frames, start, stride, resize, folder_fps)
    chunk: list[np.ndarray] = []
    for frame in selected:
        chunk.append(frame)
        if len(chunk) == chunk_frames:
            yield Clip(frames_to_video(np.stack(chunk)), source_fps / stride, resize.source_size, resize.resized_size, resize.crop)
            chunk = []
    if chunk:
        yield Clip(frames_to_video(np.stack(chunk)), source_fps / stride, resize.source_size, resize.resized_size, resize.crop)


def _open_frames(
    path: Path, frames: int | None, start: int, stride: int, resize: _Resizer, folder_fps: float
) -> tuple[float, Iterator[np.ndarray]]:
    """Open ``path``; return its frame rate and an iterator over the selected, resized uint8 frames."""
    check_read_options(frames, start, stride, resize.height)
    check_input(path)
    if path.is_dir():
        source_fps, decoded = folder_fps, _iter_folder(path)
    else:
        source_fps, decoded = _open_stream(path)
    return source_fps, _select(path, decoded, frames, start, stride, resize)


def _select(path: Path, decoded: Iterator, frames: int | None, start: int, stride: int, resize: _Resizer) -> Iterator[np.ndarray]:
    count = 0
    try:
        for index, image in enumerate(decoded):
            size = (image.height, image.width)
            if resize.source_size is None:
                resize.source_size = size
            elif size != resize.source_size:
                source = resize.source_size
                raise FrameSizeError(
                    f"{path}: frame {index} is {size[1]}x{size[0]} but earlier frames are "
                    f"{source[1]}x{source[0]}; frame sizes must not change mid-stream"
                )
            if index < start or (index - start) % stride:
                continue
            yield resize(image)
            count += 1
            if frames is not None and count == frames:
                break
    finally:
        if hasattr(decoded, "close"):
            decoded.close()  # releases the FFmpeg container promptly when we stop early
    if not count:
        where = "decodes to zero frames" if resize.source_size is None else f"has no frames from index {start}"
        raise EmptyVideoError(f"{path}: {where}")


def check_input(path: str | os.PathLike) -> Path:
    """``path`` if it names something to read; a missing path, a dangling link or a link loop is one error."""
    path = Path(path)
    if not path.exists():  # False for a link loop too (ELOOP)
        raise VideoNotFoundError(f"{path}: no such file or directory" + (" (a symbolic link loop or dangling link)" if path.is_symlink() else ""))
    return path


def check_read_options(frames: int | None, start: int, stride: int, height: int | None) -> None:
    """Raise :class:`InvalidInputError` for read options :func:`load_clip` would refuse."""
    if frames is not None and frames < 1:
        raise InvalidInputError(f"frames must be >= 1 or None, got {frames}")
    if start < 0:
        raise InvalidInputError(f"start must be >= 0, got {start}")
    if stride < 1:
        raise InvalidInputError(f"stride must be >= 1, got {stride}")
    if height is not None and height < 8:
        raise InvalidInputError(f"height must be >= 8 or None, got {height}")


class _Resizer:
    """Aspect-keeping resize to ``height`` and a centre crop of the width to a multiple of 16."""

    def __init__(self, height: int | None):
        self.height = height
        self.source_size: tuple[int, int] | None = None
        self.resized_size: tuple[int, int] = (0, 0)
        self.crop: tuple[int, int, int, int] = (0, 0, 0, 0)

    def __call__(self, image) -> np.ndarray:
        if hasattr(image, "to_image"):  # a PyAV frame: converted only when kept
            image = image.to_image()
        if not self.resized_size[0]:
            self._plan(image.height, image.width)
        resized_h, resized_w = self.resized_size
        if (image.height, image.width) != self.resized_size:
            image = image.resize((resized_w, resized_h), Image.Resampling.BICUBIC)
        top, left, h, w = self.crop
        return np.asarray(image.convert("RGB"))[top : top + h, left : left + w]

    def _plan(self, height: int, width: int) -> None:
        if self.height is None:
            self.resized_size, self.crop = (height, width), (0, 0, height, width)
            return
        resized_w = max(1, round(width * self.height / height))
        crop_w = resized_w // WIDTH_MULTIPLE * WIDTH_MULTIPLE
        if crop_w == 0:
            raise InvalidInputError(
                f"height {self.height} makes the {width}x{height} frames {resized_w} px wide, "
                f"narrower than the {WIDTH_MULTIPLE}-px width multiple"
            )
        self.resized_size = (self.height, resized_w)
        self.crop = (0, (resized_w - crop_w) // 2, self.height, crop_w)


def _iter_folder(path: Path) -> Iterator[Image.Image]:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
    if not files:
        raise EmptyVideoError(f"{path}: directory holds no {'/'.join(FRAME_SUFFIXES)} frames")
    for file in files:
        try:
            with Image.open(file) as image:
                image.load()
                yield _eight_bit(image, file)
        except (OSError, SyntaxError) as error:
            raise CorruptVideoError(f"{file}: unreadable frame ({error})") from None
        except Image.DecompressionBombError as error:  # a small file that claims a gigapixel frame
            raise NotAVideoError(f"{file}: {error}") from None


def _eight_bit(image: Image.Image, file: Path) -> Image.Image:
    """Frames of more than 8 bits per sample, scaled to 8 bits (Pillow's RGB conversion would clip them)."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):  # 16-bit greyscale PNG
        levels = np.asarray(image).astype(np.float64)
        if levels.min() < 0 or levels.max() > 65535:
            raise NotAVideoError(f"{file}: {image.mode} frame holds values outside 16 bits; latok reads 8- and 16-bit frames")
        return Image.fromarray(np.round(levels / 257.0).astype(np.uint8))  # mode L
    if image.mode == "F":
        raise NotAVideoError(f"{file}: floating-point frames are not supported; latok reads 8- and 16-bit frames")
    return image


def _open_stream(path: Path) -> tuple[float, Iterator]:
    import av  # PyAV is only needed for container files

    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError) as error:
        raise NotAVideoError(
            f"{path}: not a video FFmpeg can open, or a truncated one ({_ffmpeg_reason(error)})"
        ) from None
    if not container.streams.video:
        container.close()
        raise NotAVideoError(f"{path}: the file holds no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else DEFAULT_STREAM_FPS
    return fps, _decode_frames(container, stream, path)


def _decode_frames(container, stream, path: Path) -> Iterator:
    """Yield PyAV frames (they have ``width``/``height``; pixels are converted only for kept frames)."""
    import av

    try:
        yield from container.decode(stream)
    except av.error.FFmpegError as error:
        raise CorruptVideoError(f"{path}: corrupt video stream ({_ffmpeg_reason(error)})") from None
    finally:
        container.close()


def _ffmpeg_reason(error: Exception) -> str:
    reason = getattr(error, "strerror", None) or str(error)
    return reason.splitlines()[0] if reason else type(error).__name__


# -- tensor conversion ------------------------------------------------------------------


def frames_to_video(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` -> float32 ``(1, 3, T, H, W)`` in ``[-1, 1]``."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InvalidInputError(f"expected uint8 frames (T, H, W, 3), got {frames.dtype} {frames.shape}")
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)  # (3, T, H, W)
    return video.unsqueeze(0).float().div_(127.5).sub_(1.0)


def to_8bit_levels(video: torch.Tensor) -> torch.Tensor:
    """``[-1, 1]`` video as float64 levels 0..255: what a decoded video file holds, and what is scored."""
    return video.detach().double().add(1.0).mul(127.5).round().clamp(0.0, 255.0)


def video_to_frames(video: torch.Tensor) -> np.ndarray:
    """float ``(1, 3, T, H, W)`` or ``(3, T, H, W)`` in ``[-1, 1]`` -> uint8 ``(T, H, W, 3)``.

    Values outside ``[-1, 1]`` are clipped.
    """
    if video.ndim == 5:
        if video.shape[0] != 1:
            raise InvalidInputError(f"expected a single clip (1, 3, T, H, W), got batch of {video.shape[0]}")
        video = video[0]
    if video.ndim != 4 or video.shape[0] != 3:
        raise InvalidInputError(f"expected video (1, 3, T, H, W), got shape {tuple(video.shape)}")
    frames = video.detach().float().cpu().add(1.0).mul(127.5).round().clamp(0, 255)
    return frames.to(torch.uint8).permute(1, 2, 3, 0).numpy()  # (T, H, W, 3)


# -- writing ----------------------------------------------------------------------------


# libx264 options that make a write reproducible: its macroblock-tree rate control gave different pixels for the same
# frames from one write to the next (any thread count, with or without timestamps); without it, 10 writes of 60 frames of
# goat at 240p gave one file (eval/results/mp4_reproducibility.md)
X264_REPRODUCIBLE = {"x264-params": "mbtree=0"}


def write_video(path: str | os.PathLike, video: torch.Tensor | np.ndarray, fps: float = 24.0, crf: int = 12, faststart: bool = False,
                reproducible: bool = True) -> Path:  # fmt: skip
    """Write a clip atomically: H.264 mp4 for ``.mp4/.mov/.mkv``, a PNG folder for a suffix-less path.

    Args:
        path: output file, or a directory name (no suffix) for PNG frames ``00000.png ...``.
        video: float ``(1, 3, T, H, W)`` in ``[-1, 1]`` or uint8 ``(T, H, W, 3)``.
        fps: frame rate stored in the container.
        crf: x264 constant rate factor; lower is closer to lossless (0 is lossless).
        faststart: mp4/mov: the index first (one more pass over the file), so that a browser plays it while loading.
        reproducible: the same frames give the same file (x264's macroblock-tree rate control, which gave different
            pixels for the same frames from one write to the next, off); ``False``: x264 at its best compression.

    H.264 in yuv420p needs even sizes, so odd heights/widths are padded by one
    replicated row/column.  Nothing is left at ``path`` if writing fails.
    """
    with VideoWriter(path, fps=fps, crf=crf, faststart=faststart, reproducible=reproducible) as writer:
        writer.write(video)
    return Path(path)


class VideoWriter(AtomicWriter):
    """Write a video chunk by chunk (see :func:`write_video` for formats); it appears at ``path`` only on success.

    Use as a context manager: ``with VideoWriter(path, fps) as out: out.write(chunk)``.
    An exception inside the block, or no frames at all, leaves nothing at ``path``.
    """

    def __init__(self, path: str | os.PathLike, fps: float = 24.0, crf: int = 12, faststart: bool = False, reproducible: bool = True):
        self.path = check_output_path(path)
        if fps <= 0:
            raise InvalidInputError(f"fps must be > 0, got {fps}")
        self.fps, self.crf, self.frames, self.faststart, self.reproducible = fps, crf, 0, faststart, reproducible
        self._size: tuple[int, int] | None = None
        self._container = self._stream = None
        if self.path.suffix:
            self._context = atomic_path(self.path)
            self._tmp = self._context.__enter__()
        else:
            if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
                raise VideoWriteError(f"{self.path}: exists and is not an empty directory")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
            except OSError as error:
                raise VideoWriteError(f"{self.path}: cannot write ({error.strerror or error})") from None

    def write(self, video: torch.Tensor | np.ndarray) -> None:
        """Append float ``(1, 3, T, H, W)`` in ``[-1, 1]`` or uint8 ``(T, H, W, 3)`` frames."""
        frames = video if isinstance(video, np.ndarray) else video_to_frames(video)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
            raise InvalidInputError(f"expected uint8 frames (T, H, W, 3) with T >= 1, got {frames.dtype} {frames.shape}")
        if self._size is None:
            self._size = frames.shape[1:3]
        elif frames.shape[1:3] != self._size:
            raise InvalidInputError(f"{self.path}: frames are {frames.shape[1:3]}, earlier ones {self._size}")
        if not self.path.suffix:
            try:
                for index, frame in enumerate(frames, start=self.frames):
                    Image.fromarray(frame).save(self._tmp / f"{index:05d}.png")
            except OSError as error:
                raise VideoWriteError(f"{self.path}: cannot write PNG frames ({error.strerror or error})") from None
        else:
            self._write_h264(frames)
        self.frames += len(frames)

    def _write_h264(self, frames: np.ndarray) -> None:
        import av

        height, width = frames.shape[1:3]
        pad_h, pad_w = height % 2, width % 2
        if pad_h or pad_w:
            frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        try:
            if self._container is None:
                if pad_h or pad_w:
                    logger.info("padding %dx%d to even size for yuv420p", width, height)
                fmt = _container_format(self.path)
                options = {"movflags": "+faststart"} if self.faststart and fmt in ("mp4", "mov") else {}  # the index first: browsers play while loading
                self._container = av.open(str(self._tmp), mode="w", format=fmt, options=options)
                self._stream = self._container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
                self._stream.width, self._stream.height = width + pad_w, height + pad_h
                self._stream.pix_fmt = "yuv420p"
                self._stream.options = {"crf": str(self.crf), "preset": "medium", **(X264_REPRODUCIBLE if self.reproducible else {})}
            for frame in frames:
                self._container.mux(self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        except av.error.FFmpegError as error:
            raise VideoWriteError(f"{self.path}: H.264 encoding failed ({_ffmpeg_reason(error)})") from None

    def close(self) -> Path:
        """Finish the file and move it into place."""
        import av

        if not self.frames:
            self.abort()
            raise InvalidInputError(f"{self.path}: no frames to write")
        if self.path.suffix:
            try:
                self._container.mux(self._stream.encode())
                self._container.close()
            except av.error.FFmpegError as error:
                self.abort()
                raise VideoWriteError(f"{self.path}: H.264 encoding failed ({_ffmpeg_reason(error)})") from None
            self._context.__exit__(None, None, None)
        else:
            try:
                if self.path.exists():
                    self.path.rmdir()
                self._tmp.rename(self.path)
            except OSError as error:
                self.abort()
                raise VideoWriteError(f"{self.path}: cannot write ({error.strerror or error})") from None
        return self.path

    def abort(self) -> None:
        """Discard everything written so far."""
        if self.path.suffix:
            if self._container is not None:
                try:
                    self._container.close()
                except Exception:  # noqa: BLE001 - the partial file is deleted anyway
                    pass
            self._context.__exit__(RuntimeError, RuntimeError("aborted"), None)
        else:
            shutil.rmtree(self._tmp, ignore_errors=True)


def check_output_path(path: str | os.PathLike, suffixes: tuple[str, ...] = (*MP4_SUFFIXES, "")) -> Path:
    """Fail fast, before any work, on an output path :func:`write_video` would reject."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        shown = ", ".join(s or "a folder name" for s in suffixes)
        raise InvalidInputError(f"{path}: unsupported output format {path.suffix!r}; use {shown}")
    if path.is_dir() and path.suffix:
        raise VideoWriteError(f"{path}: is a directory")
    return path


def _container_format(path: Path) -> str:
    return {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}[path.suffix.lower()]
