"""The precision the frozen autoencoder computes in: fp32, or bf16 where the hardware computes it natively.

``auto`` is bf16 on CUDA devices that support it and on CPUs with AVX512-BF16 or AMX (detected at run time
by torch's CPU feature probe, not assumed), fp32 elsewhere.  Only the autoencoder changes precision: the rule,
motion, quantisation, value coding and the inpainter compute in fp32 whatever is chosen.
"""

from __future__ import annotations

import os

import torch

from latok.errors import InvalidInputError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
NO_BF16_ENV = "LATOK_NO_BF16"  # "1": act as if this CPU had no native bf16 (auto is fp32, bf16 is refused)


def cpu_has_bf16() -> bool:
    """Does this CPU compute bf16 natively (AVX512-BF16 or AMX tiles)?  ``LATOK_NO_BF16=1`` says no."""
    if os.environ.get(NO_BF16_ENV, "") not in ("", "0"):
        return False
    probes = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(probe is not None and probe() for probe in probes)


def resolve_precision(precision: str | None, device: torch.device, auto_on_cpu: bool = True) -> str:
    """``precision`` (``None`` is ``auto``) as what ``device`` computes: ``"fp32"``, ``"bf16"`` or ``"fp16"``.

    ``auto_on_cpu``: whether ``auto`` may pick bf16 on a CPU (a backend whose bf16 quality on CPU was not
    measured says no: there ``auto`` is fp32 and bf16 must be asked for).

    Raises:
        InvalidInputError: an unknown precision, fp16 off CUDA, or bf16 where the hardware lacks it.
    """
    precision = precision or "auto"
    if precision not in PRECISIONS:
        raise InvalidInputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    cuda = device.type == "cuda"
    native_bf16 = torch.cuda.is_bf16_supported() if cuda else device.type == "cpu" and cpu_has_bf16()
    if precision == "auto":
        return "bf16" if native_bf16 and (cuda or auto_on_cpu) else "fp32"
    if precision == "fp16" and not cuda:
        raise InvalidInputError(f"--precision fp16 needs a CUDA device; on {device.type} use fp32, bf16 or auto")
    if precision == "bf16" and not native_bf16:
        what = "this CPU has no AVX512-BF16 or AMX" if device.type == "cpu" else f"{device} does not compute bf16 natively"
        raise InvalidInputError(f"--precision bf16: {what} (it would be slower than fp32); use fp32 or auto")
    return precision


def precision_of(dtype: torch.dtype) -> str:
    """The precision name of a compute dtype."""
    names = {d: name for name, d in DTYPES.items()}
    if dtype not in names:
        raise InvalidInputError(f"the autoencoder computes in float32, bfloat16 or float16, not {dtype}")
    return names[dtype]
