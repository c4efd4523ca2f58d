"""Video reading/writing: formats, the 240p protocol, fps, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import BLACKSWAN, DATA, needs_data
from PIL import Image

from latok.errors import (
    CorruptVideoError,
    EmptyVideoError,
    FrameSizeError,
    InvalidInputError,
    LatokError,
    NotAVideoError,
    VideoNotFoundError,
    VideoWriteError,
)
from latok.evaluation.metrics import psnr
from latok.io import frames_to_video, load_clip, read_video, video_to_frames, write_video
from latok.sample import sample_frames


def encode_with_pyav(path: Path, frames: np.ndarray, container: str, codec: str, fps: int = 30) -> Path:
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return sample_frames(frames=6, height=64, width=96)


@pytest.mark.parametrize(
    "suffix, container, codec",
    [
        (".mp4", "mp4", "libx264"),
        (".avi", "avi", "mpeg4"),
        (".mov", "mov", "libx264"),
        (".mkv", "matroska", "libx264"),
        (".webm", "webm", "libvpx-vp9"),
        (".264", "h264", "libx264"),
    ],
)
def test_reads_containers(tmp_path, frames, suffix, container, codec):
    path = encode_with_pyav(tmp_path / f"clip{suffix}", frames, container, codec)
    clip = load_clip(path)
    assert clip.video.shape == (1, 3, 6, 64, 96)
    assert clip.video.dtype == torch.float32
    assert -1.0 <= clip.video.min() and clip.video.max() <= 1.0
    assert psnr(clip.video, frames_to_video(frames)) > 25.0  # lossy codecs, but the same picture
    if suffix != ".264":  # raw H.264 carries no rate; FFmpeg guesses 25
        assert clip.fps == pytest.approx(30.0)


def test_reads_gif(tmp_path, frames):
    path = tmp_path / "clip.gif"
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)
    clip = load_clip(path)
    assert clip.video.shape == (1, 3, 6, 64, 96)
    assert clip.fps == pytest.approx(10.0)


def test_mp4_round_trip_keeps_fps_and_picture(tmp_path, frames):
    path = write_video(tmp_path / "out.mp4", frames, fps=12.5)
    clip = load_clip(path)
    assert clip.fps == pytest.approx(12.5)
    assert clip.video.shape == (1, 3, 6, 64, 96)
    assert psnr(clip.video, frames_to_video(frames)) > 30.0
    assert not list(tmp_path.glob(".*"))  # no temp files left behind


def test_mp4_odd_sizes_are_padded_to_even(tmp_path):
    odd = sample_frames(frames=3, height=33, width=47)
    clip = load_clip(write_video(tmp_path / "odd.mp4", odd, fps=24))
    assert clip.video.shape == (1, 3, 3, 34, 48)
    assert psnr(clip.video[..., :33, :47], frames_to_video(odd)) > 28.0


def test_png_folder_round_trip_is_lossless(tmp_path, frames):
    video = frames_to_video(frames)
    folder = write_video(tmp_path / "pngs", video)
    assert sorted(p.name for p in folder.iterdir())[:2] == ["00000.png", "00001.png"]
    assert torch.equal(read_video(folder), video)
    assert np.array_equal(video_to_frames(video), frames)


def test_start_stride_frames_select_source_frames(tmp_path, frames):
    folder = write_video(tmp_path / "pngs", frames)
    full = read_video(folder)
    clip = load_clip(folder, start=1, stride=2, frames=2, folder_fps=30)
    assert torch.equal(clip.video, full[:, :, 1:5:2])
    assert clip.fps == pytest.approx(15.0)


@needs_data
def test_davis_folder_240p_protocol():
    clip = load_clip(BLACKSWAN, frames=17, height=240)
    assert clip.video.shape == (1, 3, 17, 240, 416)  # 854x480 -> 427x240 -> centre crop 416
    assert clip.source_size == (480, 854)
    assert clip.resized_size == (240, 427)
    assert clip.crop == (0, 5, 240, 416)


@needs_data
def test_mp4_writes_are_reproducible(tmp_path):
    """The same frames give the same file: libx264's macroblock-tree rate control, which varied the pixels from one write
    to the next (8 distinct files in 10 writes of 60 frames of goat: eval/results/mp4_reproducibility.md), is off."""
    from latok.io import VideoWriter

    video = load_clip(BLACKSWAN.parent / "goat", frames=30, height=240).video
    files = set()
    for index in range(6):
        with VideoWriter(tmp_path / f"{index}.mp4", fps=24) as out:
            for piece in video.split(8, dim=2):  # in pieces, as decode --stream writes
                out.write(piece)
        files.add((tmp_path / f"{index}.mp4").read_bytes())
    assert len(files) == 1


@needs_data
def test_real_mp4_at_240p():
    clip = load_clip(DATA / "clips" / "bikes.mp4", frames=4, height=240)
    assert clip.video.shape[:3] == (1, 3, 4) and clip.video.shape[3] == 240
    assert clip.video.shape[4] % 16 == 0
    assert clip.fps > 0


# -- errors ---------------------------------------------------------------------------------


def _one_line(error: LatokError, path: Path) -> str:
    message = str(error)
    assert "\n" not in message and str(path) in message
    return message


def test_missing_file(tmp_path):
    with pytest.raises(VideoNotFoundError) as info:
        read_video(tmp_path / "nope.mp4")
    assert "no such file" in _one_line(info.value, tmp_path / "nope.mp4")


def test_not_a_video(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is text, not H.264\n" * 50)
    with pytest.raises(NotAVideoError) as info:
        read_video(path)
    assert "not a video" in _one_line(info.value, path)


def test_audio_only_file_is_not_a_video(tmp_path):
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        out.mux(stream.encode(frame))
        out.mux(stream.encode())
    with pytest.raises(NotAVideoError, match="no video stream"):
        read_video(path)


def test_zero_frames(tmp_path, frames):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EmptyVideoError, match="no .jpg"):
        read_video(empty)
    folder = write_video(tmp_path / "pngs", frames)
    with pytest.raises(EmptyVideoError) as info:
        read_video(folder, start=100)
    assert "no frames from index 100" in _one_line(info.value, folder)


def test_corrupt_stream(tmp_path, frames):
    data = bytearray(write_video(tmp_path / "ok.mp4", frames).read_bytes())
    rng = np.random.default_rng(0)
    middle = len(data) // 3
    data[middle : middle + 2000] = rng.integers(0, 256, size=2000, dtype=np.uint8).tobytes()
    path = tmp_path / "corrupt.mp4"
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptVideoError) as info:
        read_video(path)
    assert "corrupt" in _one_line(info.value, path)


def test_truncated_file(tmp_path, frames):
    data = write_video(tmp_path / "ok.mp4", frames).read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises((NotAVideoError, CorruptVideoError)) as info:
        read_video(path)
    _one_line(info.value, path)


def test_frame_size_change_mid_stream(tmp_path):
    first = encode_with_pyav(tmp_path / "a.264", sample_frames(4, 64, 96), "h264", "libx264")
    second = encode_with_pyav(tmp_path / "b.264", sample_frames(4, 48, 64), "h264", "libx264")
    joined = tmp_path / "joined.264"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    with pytest.raises(FrameSizeError) as info:
        read_video(joined)
    assert "frame 4 is 64x48" in _one_line(info.value, joined)


def test_frame_size_change_in_folder(tmp_path):
    folder = tmp_path / "seq"
    folder.mkdir()
    Image.new("RGB", (32, 16)).save(folder / "00000.jpg")
    Image.new("RGB", (16, 16)).save(folder / "00001.jpg")
    with pytest.raises(FrameSizeError):
        read_video(folder)


def test_unreadable_frame_in_folder(tmp_path):
    folder = tmp_path / "seq"
    folder.mkdir()
    Image.new("RGB", (16, 16)).save(folder / "00000.jpg")
    (folder / "00001.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(CorruptVideoError, match="00001.jpg"):
        read_video(folder)


@pytest.mark.parametrize("option", [dict(frames=0), dict(start=-1), dict(stride=0), dict(height=4)])
def test_bad_read_options(tmp_path, frames, option):
    folder = write_video(tmp_path / "pngs", frames)
    with pytest.raises(InvalidInputError):
        read_video(folder, **option)


def test_write_rejects_unsupported_format_and_leaves_nothing(tmp_path, frames):
    with pytest.raises(InvalidInputError, match="unsupported output format '.xyz'"):
        write_video(tmp_path / "out.xyz", frames)
    with pytest.raises(InvalidInputError):
        write_video(tmp_path / "out.mp4", frames.astype(np.float32))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    with pytest.raises(VideoWriteError):
        write_video(tmp_path / "busy", frames)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["keep.txt"]


def test_failed_mp4_write_leaves_no_file(tmp_path, frames, monkeypatch):
    def explode(*args, **kwargs):
        raise OSError(28, "injected failure: no space left on device")

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", explode)
    with pytest.raises(OSError, match="injected failure"):
        write_video(tmp_path / "out.mp4", frames)
    assert list(tmp_path.iterdir()) == []
