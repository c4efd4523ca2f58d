"""Do the same frames give the same mp4 file?  libx264 settings, each written WRITES times in one process.

The first 60 frames of DAVIS goat at 240p, as uint8 RGB, are encoded with PyAV's libx264 (crf 12, preset medium,
yuv420p: latok's writer) under each setting below, then each file is hashed, and so are its decoded frames.  One
distinct hash per setting means reproducible.  Settings: x264's defaults, one thread, explicit timestamps, frames fed as
yuv420p (converted once), macroblock-tree rate control off (``mbtree=0``, what ``latok.io.write_video`` uses) with the
default thread count and with one thread; and ``latok.io.write_video`` itself, in pieces of 8 frames.

Usage:
    python eval/mp4_reproducibility.py [--writes 10]
writes eval/results/mp4_reproducibility.{json,md}
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from latok.io import VideoWriter, load_clip, video_to_frames

from harness import clip_set, write_results

FRAMES = 60
SETTINGS = {  # name: (x264 options, timestamps, feed yuv420p)
    "x264 defaults": ({}, False, False),
    "one thread": ({"threads": "1"}, False, False),
    "explicit timestamps": ({}, True, False),
    "one thread, timestamps, frames fed as yuv420p": ({"threads": "1"}, True, True),
    "mbtree=0": ({"x264-params": "mbtree=0"}, False, False),
    "mbtree=0, one thread": ({"threads": "1", "x264-params": "mbtree=0"}, False, False),
}


def digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()[:12]


def write(path: Path, frames: np.ndarray, options: dict, timestamps: bool, yuv: list[np.ndarray] | None) -> None:
    height, width = frames.shape[1:3]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "12", "preset": "medium", **options}
        for index, frame in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(yuv[index], format="yuv420p") if yuv else av.VideoFrame.from_ndarray(frame, format="rgb24")
            if timestamps:
                picture.pts, picture.time_base = index, Fraction(1, 24)
            container.mux(stream.encode(picture))
        container.mux(stream.encode())


def hashes(paths: list[Path]) -> dict:
    files = {digest(p.read_bytes()) for p in paths}
    pixels = {digest(load_clip(p).video.numpy().tobytes()) for p in paths}
    return {"distinct_files": len(files), "distinct_decoded_frames": len(pixels)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=10)
    args = parser.parse_args()
    goat = next(c.path for c in clip_set("davis") if c.path.name == "goat")
    video = load_clip(goat, frames=FRAMES, height=240).video
    frames = video_to_frames(video)
    yuv = [av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p").to_ndarray() for f in frames]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (options, timestamps, feed_yuv) in SETTINGS.items():
            paths = [Path(tmp) / f"{i}.mp4" for i in range(args.writes)]
            for path in paths:
                write(path, frames, options, timestamps, yuv if feed_yuv else None)
            rows[name] = hashes(paths)
        paths = [Path(tmp) / f"w{i}.mp4" for i in range(args.writes)]
        for path in paths:
            with VideoWriter(path, fps=24) as out:
                for piece in video.split(8, dim=2):
                    out.write(piece)
        rows["latok.io.VideoWriter (mbtree=0), in pieces of 8 frames"] = hashes(paths)
    conversion = {digest(np.stack([av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p").to_ndarray()
                                   for f in frames]).tobytes()) for _ in range(3)}  # fmt: skip
    result = {"clip": "goat", "frames": FRAMES, "height": 240, "writes": args.writes, "pyav": av.__version__, "cpu_count": os.cpu_count(),
              "settings": rows, "rgb_to_yuv420p_conversions_distinct_of_3": len(conversion),
              "command": "python eval/mp4_reproducibility.py" + (f" --writes {args.writes}" if args.writes != 10 else "")}  # fmt: skip
    lines = ["# Do the same frames give the same mp4 file?", "",
             f"`{result['command']}`: {FRAMES} frames of DAVIS goat at 240p, libx264 crf 12 preset medium, each setting written "
             f"{args.writes} times in one process (PyAV {av.__version__}, {os.cpu_count()} cores). The RGB→yuv420p conversion gave "
             f"{len(conversion)} distinct result(s) in 3.", "",
             "| setting | distinct files | distinct decoded frames |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {name} | {row['distinct_files']} | {row['distinct_decoded_frames']} |" for name, row in rows.items()]
    write_results("mp4_reproducibility", result, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
