"""Token merging (``latok.merge``): bipartite soft matching within frames and clips, sizes, proportional
attention, and unmerge back to every source."""

from __future__ import annotations

import pytest
import torch

import latok
from latok.codec.interop.merge import bipartite_merge, proportional_attention
from latok.codec.interop.packing import block_diagonal_mask, collate_packed, pack
from latok.codec.tokens import AdaptiveLatent, SourceInfo
from latok.errors import InvalidInputError


def _adaptive(seed: int, frames: int = 4, channels: int = 8) -> AdaptiveLatent:
    generator = torch.Generator().manual_seed(seed)
    latent = torch.randn(1, channels, frames, 6, 8, generator=generator)
    keep = torch.rand(1, frames, 6, 8, generator=generator) < 0.6
    keep[:, 0] = True
    return AdaptiveLatent.from_dense(latent, keep, dtype=torch.float32, backend="taef2", backend_config="x", tau=0.1,
                                     source=SourceInfo(frames=frames, height=48, width=64))  # fmt: skip


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5])
@pytest.mark.parametrize("window", [1, 2])
def test_merging_removes_the_ratio_per_clip_and_never_crosses_clips_or_windows(ratio, window):
    clips = [_adaptive(0), _adaptive(1)]
    batch = collate_packed(clips)
    merged = latok.merge.bipartite_merge(batch, ratio, window=window)
    for clip, (before, after) in enumerate(zip(batch.seqlens, merged.tokens.seqlens)):
        if ratio < 0.5:
            assert before - after == round(ratio * before)
        assert before // 2 - 4 <= after  # one round: at most one merge per A token (ceil(n/2) per frame or pair of frames)
    assert merged.sizes.sum() == batch.values.shape[0] and merged.sizes.min() >= 1
    clip_of = torch.repeat_interleave(torch.arange(2), torch.tensor(batch.seqlens))
    merged_clip = torch.repeat_interleave(torch.arange(2), torch.tensor(merged.tokens.seqlens))
    assert torch.equal(merged_clip[merged.sources], clip_of)  # every token stays in its clip
    window_of = batch.positions[:, 0] // window
    assert torch.equal(merged.tokens.positions[merged.sources, 0] // window, window_of)  # and in its window of frames


def test_merged_values_are_size_weighted_means_and_unmerge_returns_them_to_every_source():
    tokens = pack(_adaptive(2))
    merged = bipartite_merge(tokens, 0.3)
    for index in range(merged.sizes.shape[0]):
        members = merged.sources == index
        assert merged.sizes[index] == members.sum()
        torch.testing.assert_close(merged.tokens.values[index], tokens.values[members].mean(dim=0))
    back = merged.unmerge()
    assert back.shape == tokens.values.shape
    unmoved = merged.sizes[merged.sources] == 1
    assert torch.equal(back[unmoved], tokens.values[unmoved])  # unmerged tokens come back exactly
    twice = bipartite_merge(merged.tokens, 0.2, sizes=merged.sizes)  # a second round keeps counting sources
    assert twice.sizes.sum() == tokens.values.shape[0]


def test_the_most_similar_pairs_merge_first():
    values = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [-1.0, 0.2]])
    from latok.codec.interop.packing import PackedTokens

    tokens = PackedTokens(values=values, positions=torch.tensor([[0, 0, i] for i in range(4)]), staleness=torch.zeros(4, dtype=torch.long),
                          cu_seqlens=torch.tensor([0, 4], dtype=torch.int32), max_seqlen=4)  # fmt: skip
    merged = bipartite_merge(tokens, 0.25)  # one pair: A = {0, 2}, B = {1, 3}; 0 and 1 are near-identical
    assert merged.sources.tolist() == [0, 0, 1, 2]


def test_proportional_attention_weighs_a_merged_token_as_its_sources():
    torch.manual_seed(0)
    q = torch.randn(1, 1, 3, 4)
    k = torch.randn(1, 1, 4, 4)
    v = torch.randn(1, 1, 4, 4)
    k[..., 3, :], v[..., 3, :] = k[..., 2, :], v[..., 2, :]  # tokens 2 and 3 identical
    full = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    merged = proportional_attention(q, k[..., :3, :], v[..., :3, :], torch.tensor([1.0, 1.0, 2.0]))
    torch.testing.assert_close(merged, full)
    mask = block_diagonal_mask(torch.tensor([0, 1, 3], dtype=torch.int32))
    masked = proportional_attention(q, k[..., :3, :], v[..., :3, :], torch.tensor([1.0, 1.0, 2.0]), attn_mask=mask)
    torch.testing.assert_close(masked[..., 0, :], v[..., 0, :])  # token 0 alone in its clip


def test_bad_merge_settings_are_refused():
    tokens = pack(_adaptive(3))
    with pytest.raises(InvalidInputError, match="ratio"):
        bipartite_merge(tokens, 0.7)
    with pytest.raises(InvalidInputError, match="window"):
        bipartite_merge(tokens, 0.2, window=0)
    with pytest.raises(InvalidInputError, match="one row per merged token"):
        bipartite_merge(tokens, 0.2).unmerge(torch.zeros(3, 8))
