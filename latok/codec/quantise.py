"""Quantised values: each kept value on a per-channel grid, ``code * step`` exactly.

``--value-step S`` puts channel ``c`` on a uniform grid of step ``s_c = S / sensitivity_c`` in latok's
normalised space, where ``sensitivity_c`` is how much the decoder's pixels move per unit of that channel
(``VideoAutoencoder.value_sensitivity``, geometric mean 1).  A value is stored as its integer code
``q = round(v / s_c)`` and restored as exactly ``float32(q) * float32(s_c)``: one IEEE multiply, the same
on every machine.  How the codes are entropy-coded is :mod:`latok.codec.format.coders.values`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from latok.errors import InvalidInputError

MIN_STEP = 2.0**-10  # finest step: codes of |v| <= 65504 (fp16's largest) stay below MAX_CODE
MAX_STEP = 2.0**10
MAX_CODE = (1 << 27) - 1  # |q| <= MAX_CODE, for the writer and the reader alike: residuals stay within 2**28 - 2, folds below 2**29


def channel_steps(step: float, sensitivity: Sequence[float] | None, channels: int) -> tuple[float, ...] | None:
    """Per-channel steps for the overall step ``step`` (``None`` for 0: exact values), each a float32
    (held as the shortest decimal that rounds to it, so a ``.latok`` header stays short).

    ``sensitivity`` is the backend's per-channel decoder sensitivity (geometric mean 1), or ``None``
    for one step on every channel.
    """
    if not (isinstance(step, (int, float)) and math.isfinite(step) and step >= 0):
        raise InvalidInputError(f"value step must be a finite number >= 0, got {step!r}")
    if step == 0:
        return None
    weights = [1.0] * channels if sensitivity is None else list(sensitivity)
    if len(weights) != channels:
        raise InvalidInputError(f"value sensitivity has {len(weights)} channels, the latent {channels}")
    steps = tuple(float(str(np.float32(step / w))) for w in weights)
    if not all(MIN_STEP <= s <= MAX_STEP for s in steps):
        raise InvalidInputError(
            f"value step {step:g} gives per-channel steps {min(steps):.3g}..{max(steps):.3g}, outside [{MIN_STEP:g}, {MAX_STEP:g}]"
        )
    return steps


def _step_tensor(steps: Sequence[float]) -> torch.Tensor:
    return torch.tensor(steps, dtype=torch.float32)


def quantise(values: torch.Tensor, steps: Sequence[float]) -> torch.Tensor:
    """``(N, C)`` values -> their ``(N, C)`` int32 codes on the per-channel grid ``steps``."""
    codes = torch.round(values.float() / _step_tensor(steps))
    if not within_code_bound(codes):
        raise InvalidInputError(f"a latent value is too large to quantise (over {MAX_CODE} steps, or not finite)")
    return codes.to(torch.int32)


def within_code_bound(codes: torch.Tensor | np.ndarray) -> bool:
    """Are all ``codes`` within ``±MAX_CODE`` (and finite)?  The one bound the writer and the reader share."""
    if not codes.size if isinstance(codes, np.ndarray) else not codes.numel():
        return True
    top = np.abs(codes).max() if isinstance(codes, np.ndarray) else codes.abs().max()
    return float(top) <= MAX_CODE  # compared as Python numbers: in float32, 2**27 - 1 rounds up to 2**27


def dequantise(codes: torch.Tensor, steps: Sequence[float]) -> torch.Tensor:
    """``(N, C)`` int32 codes -> their float32 values, ``code * step`` exactly."""
    return codes.to(torch.float32) * _step_tensor(steps)


def codes_of(values: torch.Tensor, steps: Sequence[float]) -> torch.Tensor:
    """The codes of values already on the grid ``steps``; raises if any is not exactly a dequantised code."""
    codes = quantise(values, steps)
    if values.dtype != torch.float32 or not torch.equal(dequantise(codes, steps), values):
        raise InvalidInputError("quantised values must be float32 and exactly code * step (use latok.codec.format.coders.values.quantise)")
    return codes
