"""LPIPS v0.1 with the VGG16 backbone (Zhang et al., CVPR 2018), in plain torch.

No torchvision and no ``lpips`` package: the network is the 13 convolutions of
torchvision's VGG16 ``features`` (same parameter names), followed by the five
learned per-channel linear heads of LPIPS v0.1.  For each of the layers
relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3 the features of both images are
unit-normalised over channels, their squared difference is weighted by the
head, averaged over space, and the five terms are summed.

Weights: one file, ``lpips_vgg16.safetensors`` (``features.{i}.{weight,bias}`` and
``lin{0..4}.weight``), looked up like every latok weight file (explicit path,
``LATOK_WEIGHTS_DIR``, cache).  With internet and no local copy, it is built from
the canonical sources, torchvision's ``vgg16-397923af.pth`` and the lpips v0.1
``vgg.pth`` heads, and checked against the sha256 of its tensor contents.
"""

from __future__ import annotations

import functools
import os

import torch
from torch import nn

from latok.errors import CorruptWeightsError, InvalidInputError, WeightsChecksumError, WeightsNotFoundError
from latok.weights import WeightFile, cache_dir, find_weight, resolve_weight, tensor_digest

LPIPS_WEIGHTS = WeightFile(
    "lpips_vgg16.safetensors",
    "",  # no single upstream file: built from the two below
    "",
)
VGG16_SOURCE = WeightFile("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth", "397923af")
HEADS_SOURCE = WeightFile(
    "lpips_v0.1_vgg.pth", "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth", ""
)
# sha256 over the tensors of lpips_vgg16.safetensors (sorted names, float32 little-endian bytes);
# see tensor_digest().  Verifies a built file whatever container it came in.
CONTENT_SHA256 = "4e469b7a09e2f7eac1e9fb9f0ce8c2c70a6abf5f9aceb310224f8575c2de6d78"

# (in, out) channels of VGG16's 13 convolutions; "M" is a 2x2 max-pool.
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_TAPS = (3, 8, 15, 22, 29)  # indices in ``features`` of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
_TAP_CHANNELS = (64, 128, 256, 512, 512)
# LPIPS' input scaling: inputs in [-1, 1] are shifted and scaled to ImageNet statistics.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class LPIPS(nn.Module):
    """``forward(x, y)``: ``(N, 3, H, W)`` images in ``[-1, 1]`` -> ``(N,)`` distances (0 for equal images)."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in _VGG16:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU()]
                channels = item
        self.features = nn.Sequential(*layers[: _TAPS[-1] + 1])
        for index, width in enumerate(_TAP_CHANNELS):
            self.register_module(f"lin{index}", nn.Conv2d(width, 1, 1, bias=False))
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.shift) / self.scale
        out = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in _TAPS:
                out.append(x)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise InvalidInputError(f"lpips needs two (N, 3, H, W) images of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        return self.distance(self.taps(x), self.taps(y))

    def distance(self, taps_x: list[torch.Tensor], taps_y: list[torch.Tensor]) -> torch.Tensor:
        """``(N,)`` distances from the :meth:`taps` of two image batches."""
        total = torch.zeros(taps_x[0].shape[0], device=taps_x[0].device, dtype=torch.float32)
        for index, (a, b) in enumerate(zip(taps_x, taps_y)):
            difference = (_unit(a) - _unit(b)) ** 2
            total = total + getattr(self, f"lin{index}")(difference).mean(dim=(1, 2, 3)).float()
        return total


def _unit(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


def lpips_weights_path(path: str | os.PathLike | None = None) -> os.PathLike:
    """Local ``lpips_vgg16.safetensors``, else built in the cache from the canonical downloads."""
    found = find_weight(LPIPS_WEIGHTS, path)
    if found is not None:
        return found
    try:
        vgg = resolve_weight(VGG16_SOURCE)
        heads = resolve_weight(HEADS_SOURCE)
    except WeightsNotFoundError as error:
        raise WeightsNotFoundError(
            f"LPIPS weights {LPIPS_WEIGHTS.name} not found locally and could not be built ({error})"
        ) from None
    return _build(vgg, heads, cache_dir() / LPIPS_WEIGHTS.name)


def _build(vgg_path, heads_path, target) -> os.PathLike:
    from latok._fs import write_safetensors

    vgg = torch.load(vgg_path, map_location="cpu", weights_only=True)
    heads = torch.load(heads_path, map_location="cpu", weights_only=True)
    state = {name: tensor for name, tensor in vgg.items() if name.startswith("features.")}
    for index in range(len(_TAPS)):
        state[f"lin{index}.weight"] = heads[f"lin{index}.model.1.weight"]
    digest = tensor_digest(state)
    if digest != CONTENT_SHA256:
        raise WeightsChecksumError(f"LPIPS weights built from {vgg_path} and {heads_path}: content sha256 {digest} != {CONTENT_SHA256}")
    write_safetensors({k: v.contiguous() for k, v in state.items()}, target)
    return target


@functools.lru_cache(maxsize=4)
def load_lpips(path: str | None = None, device: str = "cpu") -> LPIPS:
    """The LPIPS-VGG network with its v0.1 weights, in eval mode (cached per path and device)."""
    from safetensors.torch import load_file

    model = LPIPS()
    weights = lpips_weights_path(path)
    try:
        state = load_file(str(weights))
    except Exception as error:  # noqa: BLE001 - safetensors raises its own error type for every kind of damage
        raise CorruptWeightsError(f"{weights}: not a readable safetensors file ({_one_line(error)})") from None
    digest = tensor_digest(state)
    if digest != CONTENT_SHA256:  # the metric is only LPIPS with exactly these weights
        raise WeightsChecksumError(f"{weights}: tensor content sha256 {digest[:16]}... is not LPIPS-VGG v0.1's ({CONTENT_SHA256[:16]}...)")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsNotFoundError(f"LPIPS weights: missing {missing}, unexpected {unexpected}")
    return model.to(device).eval()


def _one_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__
