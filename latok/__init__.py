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
    "AdaptiveLatent": "latok.codec.tokens",
    "load_vae": "latok.vae.registry",
    "list_vaes": "latok.vae.registry",
    "VideoAutoencoder": "latok.vae.base",
    "read_video": "latok.io",
    "write_video": "latok.io",
    "load_clip": "latok.io",
    "stream_clip": "latok.io",
    "PackedTokens": "latok.codec.packing",
    "collate_packed": "latok.codec.packing",
    "block_diagonal_mask": "latok.codec.packing",
}

__all__ = ["LatokError", "__version__", *_LAZY]

if TYPE_CHECKING:
    from latok.codec.packing import PackedTokens, block_diagonal_mask, collate_packed
    from latok.codec.tokenizer import LatentTokenizer
    from latok.codec.tokens import AdaptiveLatent
    from latok.io import load_clip, read_video, stream_clip, write_video
    from latok.vae.base import VideoAutoencoder
    from latok.vae.registry import list_vaes, load_vae


def __getattr__(name: str):
    if name == "merge":  # the token-merging module (latok.codec.merge)
        module = importlib.import_module("latok.codec.merge")
        globals()[name] = module
        return module
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'latok' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
