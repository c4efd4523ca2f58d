"""The built-in sample clip: synthetic, procedurally generated, deterministic.

It is made to exercise an adaptive tokenizer without shipping footage:

- a textured static background (smooth colour fields plus a fixed fine texture),
  which a redundancy mask should drop after the first frame;
- a slowly panning region (the upper-right quarter shows a striped texture that
  slides one pixel per frame), which changes a little everywhere inside it;
- a moving object (a shaded disc with a pattern) crossing the frame, which
  changes a lot where it goes.

Nothing here is real footage; numbers measured on it say nothing about natural video.
"""

from __future__ import annotations

import numpy as np

SAMPLE_FPS = 24.0


def sample_frames(frames: int = 17, height: int = 240, width: int = 416, seed: int = 0) -> np.ndarray:
    """Generate the sample clip as uint8 ``(frames, height, width, 3)``."""
    if frames < 1 or height < 16 or width < 16:
        raise ValueError(f"sample clip needs frames >= 1 and a size of at least 16x16, got {frames}x{height}x{width}")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    background = _background(yy, xx, rng)

    pan_top, pan_left = 0, width // 2
    pan_h, pan_w = height // 2, width - width // 2
    pan_texture = _stripes(pan_h, pan_w + frames, rng)  # wide enough to slide `frames` pixels

    radius = height / 8
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    for t in range(frames):
        frame = background.copy()
        frame[pan_top : pan_top + pan_h, pan_left:] = pan_texture[:, t : t + pan_w]
        progress = t / max(frames - 1, 1)
        cy = height * (0.75 - 0.35 * progress)
        cx = width * (0.1 + 0.6 * progress)
        _draw_disc(frame, yy, xx, cy, cx, radius)
        out[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return out


def _background(yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = yy.shape
    red = 90 + 60 * np.sin(xx / w * 2 * np.pi) * np.cos(yy / h * np.pi)
    green = 110 + 50 * np.cos(xx / w * 3 * np.pi + 1.0)
    blue = 120 + 70 * (yy / h)
    texture = 18 * np.sin(xx / 5.0) * np.sin(yy / 7.0) + rng.normal(0, 6, size=(h, w))
    return np.stack([red, green, blue], axis=-1) + texture[..., None]


def _stripes(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    value = 128 + 70 * np.sin((xx + 0.5 * yy) / 6.0) + rng.normal(0, 8, size=(h, w))
    return np.stack([value * 0.9, value * 0.6 + 40, 200 - value * 0.5], axis=-1)


def _draw_disc(frame: np.ndarray, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, radius: float) -> None:
    distance = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    inside = distance < radius
    shade = 1.0 - 0.5 * distance[inside] / radius
    checker = ((np.floor((yy[inside] - cy) / 8) + np.floor((xx[inside] - cx) / 8)) % 2) * 40
    frame[inside] = np.stack([230 * shade, 70 * shade + checker, 50 * shade], axis=-1)
