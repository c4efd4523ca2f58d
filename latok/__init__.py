"""latok: adaptive video tokenization in the latent space of a frozen autoencoder.

The public API is imported lazily, so ``import latok`` costs milliseconds and
torch/diffusers load only when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from latok.errors import LatokError

__version__ = "0.1.0"

_LAZY = {
    "LatentTokenizer": "latok.codec.tokenizer",
    "CodecSettings": "latok.codec.settings",
    "AdaptiveLatent": "latok.codec.tokens",
    "SourceInfo": "latok.codec.tokens",
    "InpaintingTransformer": "latok.codec.restore.inpainter",
    "pack": "latok.codec.interop.packing",
    "load_vae": "latok.vae.registry",
    "list_vaes": "latok.vae.registry",
    "VideoAutoencoder": "latok.vae.base",
    "read_video": "latok.io",
    "write_video": "latok.io",
    "load_clip": "latok.io",
    "stream_clip": "latok.io",
    "PackedTokens": "latok.codec.interop.packing",
    "collate_packed": "latok.codec.interop.packing",
    "block_diagonal_mask": "latok.codec.interop.packing",
}

__all__ = ["LatokError", "__version__", "merge", *_LAZY]

if TYPE_CHECKING:
    from latok.codec.interop.packing import PackedTokens, block_diagonal_mask, collate_packed, pack
    from latok.codec.restore.inpainter import InpaintingTransformer
    from latok.codec.settings import CodecSettings
    from latok.codec.tokenizer import LatentTokenizer
    from latok.codec.tokens import AdaptiveLatent, SourceInfo
    from latok.io import load_clip, read_video, stream_clip, write_video
    from latok.vae.base import VideoAutoencoder
    from latok.vae.registry import list_vaes, load_vae


def __getattr__(name: str):
    if name == "merge":  # the token-merging module, latok.merge
        return importlib.import_module("latok.merge")
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'latok' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
