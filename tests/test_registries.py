"""Choices live in registries: a new motion model or coder is one class and its registration, and the CLI reads it."""

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
from latok.errors import LatokFormatError


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


class EmptyMasks:
    """A toy mask coder: a chunk that keeps nothing after frame 0 costs no payload bytes at all."""

    byte, since_version = 7, 1

    @staticmethod
    def encode(keep, previous):
        return b"" if previous is not None and not keep.any() else None

    @staticmethod
    def decode(data, frames, height, width, previous):
        if data:
            raise LatokFormatError("an empty-mask record holds no bytes")
        return bytes((frames * height * width + 7) // 8)

    @staticmethod
    def declared_kept(data, frames, positions, first):
        return None


def test_a_registered_mask_coder_is_written_where_smallest_and_read_back(tmp_path, monkeypatch):
    from latok.codec.format import coders
    from latok.codec.format.reader import load_latok
    from latok.codec.format.writer import save_latok
    from latok.codec.tokens import AdaptiveLatent

    latent = torch.randn(1, 32, 9, 5, 6, generator=torch.Generator().manual_seed(0))
    keep = torch.zeros(1, 9, 5, 6, dtype=torch.bool)
    keep[:, 0] = True  # chunk 2 (latent frames 4..7) and 3 (8) keep nothing
    adaptive = AdaptiveLatent.from_dense(latent, keep, backend="taef2", backend_config="abc123", tau=0.5, source=SourceInfo(frames=9, height=40, width=48))
    before = save_latok(adaptive, tmp_path / "before.latok", chunk_frames=4).read_bytes()
    _with_mask_codec(tmp_path / "unknown.latok", before, 7)
    with pytest.raises(LatokFormatError, match="unknown mask codec 7"):
        load_latok(tmp_path / "unknown.latok")
    monkeypatch.setitem(coders._MASKS, EmptyMasks.byte, EmptyMasks)
    after = save_latok(adaptive, tmp_path / "after.latok", chunk_frames=4)
    assert after.stat().st_size < len(before)
    loaded = load_latok(after)
    assert torch.equal(loaded.keep, keep) and torch.equal(loaded.values, adaptive.values)


def _with_mask_codec(path: Path, data: bytes, byte: int) -> None:
    """``data`` with its second MASK record's codec byte set to ``byte`` (checksum resealed)."""
    import struct
    import zlib

    offset, masks = 12, []
    while offset < len(data):
        tag, length = struct.unpack_from("<4sI", data, offset)
        if tag == b"MASK":
            masks.append((offset, length))
        offset += 8 + length + 4
    offset, length = masks[1]
    out = bytearray(data)
    out[offset + 8 + 8] = byte
    struct.pack_into("<I", out, offset + 8 + length, zlib.crc32(bytes(out[offset : offset + 8 + length])))
    path.write_bytes(bytes(out))


def test_the_public_api_has_every_name_readme_uses():
    from latok import InpaintingTransformer  # noqa: F401
    from latok.merge import bipartite_merge, proportional_attention  # noqa: F401

    for name in latok.__all__:
        assert getattr(latok, name) is not None, name
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    used = set(re.findall(r"from latok import ([\w, ]+)", readme))
    names = {n.strip() for group in used for n in group.split(",")} | set(re.findall(r"\blatok\.(\w+)\(", readme))
    assert names and names <= set(latok.__all__), names - set(latok.__all__)
