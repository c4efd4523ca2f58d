"""The generator interface: dense latents in native or latok space, packed tokens, attention masks, export."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import needs_weights, tiny_diffusers_model
from safetensors import safe_open
from safetensors.torch import load_file

from latok.cli import main
from latok.codec.format.writer import save_latok
from latok.codec.interop.packing import PackedTokens, block_diagonal_mask, collate_packed, pack
from latok.codec.restore.resolve import restore
from latok.codec.rule.masking import redundancy_mask
from latok.codec.tokenizer import LatentTokenizer
from latok.codec.tokens import AdaptiveLatent, SourceInfo, scatter
from latok.errors import InvalidInputError
from latok.vae import load_vae


def _adaptive(seed: int = 0, frames: int = 6, batch: int = 1) -> AdaptiveLatent:
    generator = torch.Generator().manual_seed(seed)
    latent = (torch.randn(batch, 4, frames, 3, 5, generator=generator) * 0.15).cumsum(dim=2)
    keep = redundancy_mask(latent, 0.1).keep
    return AdaptiveLatent.from_dense(
        latent, keep, dtype=torch.float32, backend="taef2", backend_config="x", tau=0.1, source=SourceInfo(frames, 24, 40)
    )


def test_packed_tokens_are_the_kept_values_at_their_positions():
    adaptive = _adaptive(batch=2)
    packed = pack(adaptive)
    dense = scatter(adaptive)
    assert packed.num_clips == 2 and sum(packed.seqlens) == adaptive.num_tokens
    assert packed.max_seqlen == max(packed.seqlens)
    batch_of = torch.repeat_interleave(torch.arange(2), torch.tensor(packed.seqlens))
    for i in range(adaptive.num_tokens):
        t, y, x = packed.positions[i].tolist()
        torch.testing.assert_close(packed.values[i], dense[batch_of[i], :, t, y, x])
    # staleness: frames since the same position was kept before, by brute force
    for i in range(0, adaptive.num_tokens, 7):
        b, (t, y, x) = int(batch_of[i]), packed.positions[i].tolist()
        earlier = [s for s in range(t) if adaptive.keep[b, s, y, x]]
        assert packed.staleness[i] == (t - earlier[-1] if earlier else 0)
    assert int(packed.staleness.max()) > 1  # some positions were held for several frames


def test_collate_concatenates_clips_with_offsets():
    a, b = _adaptive(0), _adaptive(1, frames=4)
    batch = collate_packed([a, pack(b)])
    assert batch.cu_seqlens.tolist() == [0, a.num_tokens, a.num_tokens + b.num_tokens]
    assert batch.cu_seqlens.dtype == torch.int32 and batch.max_seqlen == max(a.num_tokens, b.num_tokens)
    torch.testing.assert_close(batch.clip(1).values, pack(b).values)
    assert torch.equal(batch.clip(1).positions, pack(b).positions)
    with pytest.raises(InvalidInputError, match="at least one"):
        collate_packed([])


def test_attention_over_packed_tokens_equals_per_clip_attention():
    clips = [_adaptive(seed, frames=f) for seed, f in ((0, 6), (1, 3), (2, 5))]
    batch = collate_packed(clips)
    torch.manual_seed(0)
    project = torch.nn.Linear(4, 3 * 8)
    q, k, v = project(batch.values).view(-1, 3, 2, 4).unbind(1)  # (N, heads, head_dim)
    heads = lambda x: x.transpose(0, 1).unsqueeze(0)  # noqa: E731  (1, heads, N, head_dim)
    mask = block_diagonal_mask(batch.cu_seqlens)
    packed_out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=mask)[0].transpose(0, 1)
    for i in range(batch.num_clips):
        s, e = int(batch.cu_seqlens[i]), int(batch.cu_seqlens[i + 1])
        alone = F.scaled_dot_product_attention(heads(q[s:e]), heads(k[s:e]), heads(v[s:e]))[0].transpose(0, 1)
        torch.testing.assert_close(packed_out[s:e], alone, rtol=1e-5, atol=1e-6)
    full = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))[0].transpose(0, 1)
    assert not torch.allclose(full, packed_out, atol=1e-4)  # the mask matters


def test_block_diagonal_mask_shape_and_errors():
    mask = block_diagonal_mask(torch.tensor([0, 2, 2, 5]))
    assert mask.shape == (5, 5) and mask[:2, :2].all() and mask[2:, 2:].all() and not mask[:2, 2:].any()
    with pytest.raises(InvalidInputError):
        block_diagonal_mask(torch.tensor([0, 3, 2]))
    with pytest.raises(InvalidInputError):
        PackedTokens(torch.zeros(3, 4), torch.zeros(3, 3, dtype=torch.long), torch.zeros(3, dtype=torch.long), torch.tensor([0, 2]), 2)


@pytest.mark.parametrize("backend", ["wan2.1", "cogvideox"])
def test_native_latents_round_trip_and_decode_like_diffusers(backend):
    vae = load_vae(backend, model=tiny_diffusers_model(backend))
    tokenizer = LatentTokenizer(vae, tau=0.0, storage_dtype=torch.float32)
    torch.manual_seed(0)
    video = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    adaptive = tokenizer.encode(video)
    normalised, native = restore(adaptive), restore(adaptive, native=True, vae=tokenizer.vae)
    assert not torch.allclose(native, normalised)  # the two spaces differ for these backends
    torch.testing.assert_close(vae.normalise(native), normalised, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(vae.denormalise(vae.normalise(native)), native, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        theirs = vae.model.decode(native).sample.clamp(-1, 1)
    ours = tokenizer.decode(adaptive)
    torch.testing.assert_close(ours, theirs[:, :, : ours.shape[2]], rtol=1e-4, atol=1e-4)
    with pytest.raises(InvalidInputError, match="pass vae="):
        restore(adaptive, native=True)


def test_taef2_native_space_is_latoks_own():
    adaptive = _adaptive()
    torch.testing.assert_close(restore(adaptive, native=True), restore(adaptive))


@needs_weights
def test_cli_export_dense_and_packed(tmp_path, capsys):
    tokenizer = LatentTokenizer("taef2")
    adaptive = tokenizer.tokenize(_real_latent(), SourceInfo(5, 32, 48))
    path = save_latok(adaptive, tmp_path / "c.latok")
    assert main(["export", str(path), "-o", str(tmp_path / "d.safetensors")]) == 0  # default fill: auto
    dense = load_file(tmp_path / "d.safetensors")
    torch.testing.assert_close(dense["latent"], tokenizer.restore(adaptive))
    assert torch.equal(dense["keep"], adaptive.keep)
    assert main(["export", str(path), "-o", str(tmp_path / "h.safetensors"), "--fill", "hold"]) == 0
    torch.testing.assert_close(load_file(tmp_path / "h.safetensors")["latent"], restore(adaptive, "hold"))
    with safe_open(tmp_path / "d.safetensors", "pt") as f:
        assert f.metadata()["fill"] == tokenizer.resolve(adaptive).name == "lit"
    assert main(["export", str(path), "-o", str(tmp_path / "p.safetensors"), "--format", "packed"]) == 0
    packed = load_file(tmp_path / "p.safetensors")
    assert torch.equal(packed["positions"], pack(adaptive).positions)
    with safe_open(tmp_path / "p.safetensors", "pt") as f:
        meta = f.metadata()
    assert int(meta["max_seqlen"]) == adaptive.num_tokens and json.loads(meta["latok_header"])["tau"] == adaptive.tau
    capsys.readouterr()
    assert main(["export", str(path), "-o", str(tmp_path / "x.npy")]) == 2
    assert main(["export", str(tmp_path / "d.safetensors"), "-o", str(tmp_path / "y.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("latok: error:") for line in err)
    assert not (tmp_path / "x.npy").exists() and not (tmp_path / "y.safetensors").exists()


def _real_latent() -> torch.Tensor:
    from latok.io import frames_to_video
    from latok.sample import sample_frames

    return load_vae("taef2").encode(frames_to_video(sample_frames(frames=5, height=32, width=48)))
