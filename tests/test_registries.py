"""Choices live in registries: a new motion model is one class and its registration, and the CLI reads it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import needs_weights

import latok
from latok.codec.restore.fills import hold_fill
from latok.codec.rule.motion import motion_names, register_motion
from latok.codec.tokens import SourceInfo, scatter


@register_motion("still")
class StillMotion:
    """A toy model: every frame stands still (one zero translation per latent frame)."""

    per_block = False

    def estimate(self, latent: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        return torch.zeros(latent.shape[0], latent.shape[2], 2)


def test_a_registered_motion_model_is_a_choice_everywhere():
    from latok.cli import build_parser
    from latok.evaluation.datasets import list_datasets

    assert "still" in motion_names()
    assert build_parser().parse_args(["encode", "in.mp4", "-o", "out.latok", "--motion", "still"]).motion == "still"
    assert build_parser().parse_args(["eval", "--dataset", list_datasets()[0], "--root", ".", "--out", "o", "--motion", "still"]).motion == "still"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["encode", "in.mp4", "-o", "out.latok", "--motion", "wobbly"])


@needs_weights
def test_a_toy_motion_model_encodes_saves_and_restores(tmp_path):
    tokenizer = latok.LatentTokenizer("taef2", motion="still", tau=0.3, lit_guard=False)
    latent = torch.randn(1, 32, 5, 6, 6, generator=torch.Generator().manual_seed(0)).mul(0.3).cumsum(dim=2)
    adaptive = tokenizer.tokenize(latent, SourceInfo(frames=5, height=48, width=48))
    assert adaptive.motion_model == "still" and not adaptive.motion.any()
    loaded = tokenizer.load(tokenizer.save(adaptive, tmp_path / "still.latok"))
    assert loaded.motion_model == "still" and torch.equal(loaded.keep, adaptive.keep)
    plain = latok.LatentTokenizer("taef2", motion="none", tau=0.3, lit_guard=False).tokenize(latent, SourceInfo(frames=5, height=48, width=48))
    assert torch.equal(plain.keep, adaptive.keep)  # zero motion is the rule in place
    assert torch.equal(tokenizer.restore(loaded, "hold"), hold_fill(scatter(loaded), loaded.keep))  # fills follow the (zero) motion


def test_the_public_api_has_every_name_readme_uses():
    from latok import InpaintingTransformer  # noqa: F401
    from latok.merge import bipartite_merge, proportional_attention  # noqa: F401

    for name in latok.__all__:
        assert getattr(latok, name) is not None, name
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    used = set(re.findall(r"from latok import ([\w, ]+)", readme))
    names = {n.strip() for group in used for n in group.split(",")} | set(re.findall(r"\blatok\.(\w+)\(", readme))
    assert names and names <= set(latok.__all__), names - set(latok.__all__)
