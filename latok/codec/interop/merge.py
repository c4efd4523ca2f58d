"""Training-free token merging for video transformers over latok's packed tokens (``latok.merge``).

Bipartite soft matching, as in ToMe (Bolya et al., 2023) and its video variants ("Video, How Do Your
Tokens Merge?"): the tokens of a window of latent frames are split alternately into sets A and B; each
A token finds its most similar B token (cosine similarity of a metric, the latent values by default);
the ``r`` most similar pairs merge, A into B, as a size-weighted mean.  Matching never crosses clips
(``cu_seqlens``) nor windows (``window=1``: within a latent frame; ``window=2``: pairs of neighbouring
frames).  A merged token keeps its size, so attention can stay proportional (:func:`proportional_attention`
adds ``log size`` to the logits), and :meth:`Merged.unmerge` puts every merged value back at each of its
source positions.

    merged = bipartite_merge(pack(adaptive), ratio=0.25)        # 25 % fewer tokens
    out = model(merged.tokens.values, bias=merged.log_sizes)    # a transformer over fewer tokens
    values = merged.unmerge(out)                                # (N, C) again, one per original token
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from latok.codec.interop.packing import PackedTokens
from latok.errors import InvalidInputError


@dataclass(frozen=True)
class Merged:
    """Tokens after merging, and the way back.

    Attributes:
        tokens: the merged :class:`PackedTokens` (each token at its B token's position and staleness, values the
            size-weighted mean of what merged into it; clip boundaries in ``cu_seqlens``).
        sizes: ``(M,)`` float32, how many original tokens each merged token stands for.
        sources: ``(N,)`` int64, for every original token the index of the merged token it went into.
    """

    tokens: PackedTokens
    sizes: torch.Tensor
    sources: torch.Tensor

    @property
    def log_sizes(self) -> torch.Tensor:
        """``(M,)`` ``log size``: the bias that keeps attention proportional (:func:`proportional_attention`)."""
        return self.sizes.log()

    def unmerge(self, values: torch.Tensor | None = None) -> torch.Tensor:
        """``(M, ...)`` per merged token (default: the merged values) -> ``(N, ...)``, each merged value at every source."""
        values = self.tokens.values if values is None else values
        if values.shape[0] != self.sizes.shape[0]:
            raise InvalidInputError(f"unmerge takes one row per merged token ({self.sizes.shape[0]}), got {values.shape[0]}")
        return values[self.sources]


def bipartite_merge(tokens: PackedTokens, ratio: float, window: int = 1, metric: torch.Tensor | None = None, sizes: torch.Tensor | None = None) -> Merged:
    """Merge ``ratio`` of each clip's tokens away (at most half of them: one bipartite round).

    Args:
        tokens: packed tokens, one clip or a batch (``cu_seqlens``).
        ratio: fraction of each clip's tokens to remove, in ``[0, 0.5]``.
        window: latent frames whose tokens may merge with each other (1: within a frame).
        metric: ``(N, D)`` features to match on (default: the token values).
        sizes: ``(N,)`` sizes of already-merged input tokens (default: all 1), for repeated rounds.
    """
    if not 0.0 <= ratio <= 0.5:
        raise InvalidInputError(f"one bipartite round removes 0 to half of the tokens; ratio must be in [0, 0.5], got {ratio}")
    if window < 1:
        raise InvalidInputError(f"window must be >= 1 latent frame, got {window}")
    count = tokens.values.shape[0]
    metric = F.normalize((tokens.values if metric is None else metric).float(), dim=-1)
    sizes = torch.ones(count) if sizes is None else sizes.float()
    target = torch.arange(count)  # where each token goes (itself, or the B token it merges into)
    for clip, (start, end) in enumerate(zip(tokens.cu_seqlens[:-1].tolist(), tokens.cu_seqlens[1:].tolist())):
        a_all, b_all, scores = [], [], []
        groups = tokens.positions[start:end, 0] // window
        for group in groups.unique():
            members = torch.nonzero(groups == group).flatten() + start
            a, b = members[0::2], members[1::2]
            if not len(a) or not len(b):
                continue
            similarity = metric[a] @ metric[b].T
            score, best = similarity.max(dim=1)
            a_all.append(a)
            b_all.append(b[best])
            scores.append(score)
        if not scores:
            continue
        a_all, b_all, scores = torch.cat(a_all), torch.cat(b_all), torch.cat(scores)
        r = min(int(round(ratio * (end - start))), len(a_all))
        chosen = torch.argsort(scores, descending=True, stable=True)[:r]
        target[a_all[chosen]] = b_all[chosen]
    survivors = target == torch.arange(count)
    new_index = torch.cumsum(survivors, 0) - 1
    sources = new_index[target]  # a merged A token points at its B token's new index
    merged_count = int(survivors.sum())
    merged_sizes = torch.zeros(merged_count).index_add_(0, sources, sizes)
    weighted = torch.zeros(merged_count, tokens.values.shape[1]).index_add_(0, sources, tokens.values.float() * sizes[:, None])
    kept_per_clip = torch.stack([survivors[s:e].sum() for s, e in zip(tokens.cu_seqlens[:-1].tolist(), tokens.cu_seqlens[1:].tolist())])
    cu_seqlens = torch.cat([torch.zeros(1, dtype=torch.int32), kept_per_clip.cumsum(0).to(torch.int32)])
    merged = PackedTokens(
        values=weighted / merged_sizes[:, None],
        positions=tokens.positions[survivors],
        staleness=tokens.staleness[survivors],
        cu_seqlens=cu_seqlens,
        max_seqlen=int(kept_per_clip.max()) if len(kept_per_clip) else 0,
    )
    return Merged(tokens=merged, sizes=merged_sizes, sources=sources)


def proportional_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, sizes: torch.Tensor, attn_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``scaled_dot_product_attention`` with ``log size`` of each key added to its logits, so a merged token
    weighs as much as the tokens it stands for.  ``sizes``: ``(M,)`` for the last (key) axis; ``attn_mask``:
    a bool mask (True: may attend) or an additive float bias, e.g. ``block_diagonal_mask(merged.tokens.cu_seqlens)``."""
    bias = sizes.log().to(query.dtype).expand(*query.shape[:-2], query.shape[-2], key.shape[-2])
    if attn_mask is not None:
        bias = bias.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else bias + attn_mask
    return F.scaled_dot_product_attention(query, key, value, attn_mask=bias)
