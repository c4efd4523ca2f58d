"""Shared fixtures: paths to ../shared, real TAEF2 weights, tiny random diffusers VAEs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LATOK_SHARED_DIR", ROOT.parent / "shared"))
DATA = SHARED / "data"
WEIGHTS = Path(os.environ.get("LATOK_WEIGHTS_DIR", SHARED / "weights")).resolve()
BLACKSWAN = DATA / "davis" / "JPEGImages" / "480p" / "blackswan"

# Tests never download: weights come from ../shared/weights (or LATOK_WEIGHTS_DIR).
os.environ["LATOK_WEIGHTS_DIR"] = str(WEIGHTS)  # absolute, so tests may chdir
os.environ["LATOK_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

needs_weights = pytest.mark.skipif(
    not (WEIGHTS / "taef2_encoder.pth").is_file(), reason=f"TAEF2 weights not found in {WEIGHTS}"
)
needs_data = pytest.mark.skipif(not BLACKSWAN.is_dir(), reason=f"shared DAVIS data not found at {BLACKSWAN}")


@pytest.fixture(scope="session")
def taef2():
    if not (WEIGHTS / "taef2_encoder.pth").is_file():
        pytest.skip(f"TAEF2 weights not found in {WEIGHTS}")
    from latok import load_vae

    return load_vae("taef2")


def tiny_diffusers_model(name: str):
    """A tiny random-initialised diffusers model for backend ``name`` (as diffusers' own tests build them)."""
    import diffusers
    import torch

    torch.manual_seed(0)
    blocks = (8, 8, 8, 8)
    configs = {
        "wan2.1": ("AutoencoderKLWan", dict(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1)),
        "cosmos-cv8x8x8": ("AutoencoderKLCosmos", dict(
            encoder_block_out_channels=blocks, decode_block_out_channels=blocks, attention_resolutions=(8,),
            resolution=64, num_layers=1)),
        "cogvideox": ("AutoencoderKLCogVideoX", dict(block_out_channels=blocks, layers_per_block=1, norm_num_groups=2)),
        "hunyuanvideo": ("AutoencoderKLHunyuanVideo", dict(
            block_out_channels=blocks, layers_per_block=1, norm_num_groups=2)),
        "ltx-video": ("AutoencoderKLLTXVideo", dict(
            block_out_channels=blocks, decoder_block_out_channels=blocks, latent_channels=8,
            layers_per_block=(1,) * 5, decoder_layers_per_block=(1,) * 5)),
    }  # fmt: skip
    class_name, config = configs[name]
    return getattr(diffusers, class_name)(**config)


DIFFUSERS_BACKENDS = ["wan2.1", "cosmos-cv8x8x8", "cogvideox", "hunyuanvideo", "ltx-video"]
