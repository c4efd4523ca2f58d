"""Adaptive latents for generators: packed variable-length token sequences.

A clip keeps a different number of tokens depending on its content, so a batch
is a ragged set of sequences.  :class:`PackedTokens` lays them end to end, in
the layout of FlashAttention's varlen kernels (``cu_seqlens``, ``max_seqlen``);
:func:`block_diagonal_mask` gives the equivalent dense attention mask for
``F.scaled_dot_product_attention``::

    batch = collate_packed([pack(a) for a in adaptive_latents])
    mask = block_diagonal_mask(batch.cu_seqlens)              # (N, N) bool, True = may attend
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from latok.codec.tokens import AdaptiveLatent, staleness
from latok.errors import InvalidInputError


@dataclass(frozen=True)
class PackedTokens:
    """Kept tokens of one or more clips, concatenated.

    Attributes:
        values: ``(N, C)`` float32 kept latent vectors, clip by clip, each clip in
            (t, y, x) order.
        positions: ``(N, 3)`` int64 latent coordinates ``(t, y, x)`` of each token.
        staleness: ``(N,)`` int64 latent frames since the same position was kept
            before (0 on latent frame 0): how long the previous value stood, RLT-style.
        cu_seqlens: ``(B + 1,)`` int32 cumulative sequence lengths; clip ``i`` is
            ``values[cu_seqlens[i]:cu_seqlens[i + 1]]``.
        max_seqlen: the longest clip's token count.
    """

    values: torch.Tensor
    positions: torch.Tensor
    staleness: torch.Tensor
    cu_seqlens: torch.Tensor
    max_seqlen: int

    def __post_init__(self):
        n = self.values.shape[0]
        if self.values.ndim != 2 or self.positions.shape != (n, 3) or self.staleness.shape != (n,):
            raise InvalidInputError(
                f"packed tokens need values (N, C), positions (N, 3), staleness (N,); got "
                f"{tuple(self.values.shape)}, {tuple(self.positions.shape)}, {tuple(self.staleness.shape)}"
            )
        if self.cu_seqlens.ndim != 1 or self.cu_seqlens.numel() < 2 or int(self.cu_seqlens[0]) != 0 or int(self.cu_seqlens[-1]) != n:
            raise InvalidInputError(f"cu_seqlens must run from 0 to {n}, got {self.cu_seqlens.tolist()}")

    @property
    def num_clips(self) -> int:
        return self.cu_seqlens.numel() - 1

    @property
    def seqlens(self) -> list[int]:
        return self.cu_seqlens.diff().tolist()

    def clip(self, index: int) -> PackedTokens:
        """The tokens of clip ``index`` alone."""
        start, stop = int(self.cu_seqlens[index]), int(self.cu_seqlens[index + 1])
        return PackedTokens(
            self.values[start:stop], self.positions[start:stop], self.staleness[start:stop],
            torch.tensor([0, stop - start], dtype=torch.int32), stop - start,
        )  # fmt: skip

    def to_dict(self) -> dict[str, torch.Tensor]:
        """Tensors by name (for safetensors)."""
        return {"values": self.values, "positions": self.positions, "staleness": self.staleness, "cu_seqlens": self.cu_seqlens}


def pack(adaptive: AdaptiveLatent) -> PackedTokens:
    """The kept tokens of ``adaptive`` as one :class:`PackedTokens` sequence per clip of its batch."""
    index = adaptive.keep.nonzero()  # (N, 4): batch, t, y, x, in the order of `values`
    counts = adaptive.keep.flatten(1).sum(dim=1)
    return PackedTokens(
        values=adaptive.values.float(),
        positions=index[:, 1:].contiguous(),
        staleness=staleness(adaptive.keep, since_previous=True)[adaptive.keep],
        cu_seqlens=torch.cat([torch.zeros(1, dtype=torch.int32), counts.cumsum(0).to(torch.int32)]),
        max_seqlen=int(counts.max()),
    )


def collate_packed(items: Sequence) -> PackedTokens:
    """Concatenate the tokens of several clips (:class:`PackedTokens` or :class:`~latok.AdaptiveLatent`) into one batch."""
    if not items:
        raise InvalidInputError("collate_packed needs at least one clip")
    packs = [item if isinstance(item, PackedTokens) else pack(item) for item in items]
    channels = {p.values.shape[1] for p in packs}
    if len(channels) != 1:
        raise InvalidInputError(f"clips have different latent channel counts {sorted(channels)}")
    lengths = torch.tensor([n for p in packs for n in p.seqlens], dtype=torch.int32)
    return PackedTokens(
        values=torch.cat([p.values for p in packs]),
        positions=torch.cat([p.positions for p in packs]),
        staleness=torch.cat([p.staleness for p in packs]),
        cu_seqlens=torch.cat([torch.zeros(1, dtype=torch.int32), lengths.cumsum(0, dtype=torch.int32)]),
        max_seqlen=int(lengths.max()),
    )


def block_diagonal_mask(cu_seqlens: torch.Tensor) -> torch.Tensor:
    """``(N, N)`` bool attention mask: token i may attend to token j iff both belong to the same clip."""
    cu_seqlens = torch.as_tensor(cu_seqlens)
    lengths = cu_seqlens.diff()
    if cu_seqlens.ndim != 1 or bool((lengths < 0).any()) or int(cu_seqlens[0]) != 0:
        raise InvalidInputError(f"cu_seqlens must be non-decreasing from 0, got {cu_seqlens.tolist()}")
    clip = torch.repeat_interleave(torch.arange(lengths.numel(), device=cu_seqlens.device), lengths.long())
    return clip.unsqueeze(0) == clip.unsqueeze(1)
