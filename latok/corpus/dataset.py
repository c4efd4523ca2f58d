"""Reading a corpus back for training: :class:`CorpusDataset`, a torch ``IterableDataset`` over its shards."""

from __future__ import annotations

import os
import tarfile
from collections import defaultdict
from pathlib import Path

import torch
from torch.utils.data import IterableDataset, get_worker_info

from latok.corpus.manifest import SHARDS, query
from latok.errors import InvalidInputError

OUTPUTS = ("adaptive", "dense", "packed")


class CorpusDataset(IterableDataset):
    """Every ``ok`` clip of the corpus at ``folder`` that matches ``where``, once per epoch across DDP ranks
    and DataLoader workers (split by rank, then by worker).

    Args:
        output: ``"adaptive"`` (:class:`~latok.AdaptiveLatent`), ``"dense"`` (the restored ``(C, t, h, w)``
            float32 latent, restored with ``fill``) or ``"packed"`` (:class:`~latok.PackedTokens`; batch
            them with :func:`latok.collate_packed`).
        fill: how ``dense`` restores dropped positions: ``"hold"`` (default), ``"interp"``, ``"zero"``,
            or ``"lit"``/``"auto"`` with the shipped inpainter.
        where: SQL condition on the manifest's columns (DuckDB), e.g. ``"token_usage < 0.5"``.
        rank, world_size: this process's place in DDP (default: from ``torch.distributed`` when initialised).

    Yields ``{"key", "latent" | "tokens", "meta"}`` dicts (``meta``: the clip's manifest row).
    """

    def __init__(self, folder: str | os.PathLike, output: str = "dense", fill: str = "hold", where: str | None = None,
                 rank: int | None = None, world_size: int | None = None):  # fmt: skip
        if output not in OUTPUTS:
            raise InvalidInputError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        self.folder, self.output, self.fill = Path(folder), output, fill
        condition = "status = 'ok'" + (f" AND ({where})" if where else "")
        self.rows = sorted(query(folder, condition), key=lambda r: r["key"])
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return len(self.rows)

    def _mine(self) -> list[dict]:
        rank, world = self.rank, self.world_size
        if rank is None or world is None:
            initialised = torch.distributed.is_available() and torch.distributed.is_initialized()
            rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if initialised else (0, 1)
        worker = get_worker_info()
        index, workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        return self.rows[rank * workers + index :: world * workers]

    def __iter__(self):
        by_shard = defaultdict(list)
        for row in self._mine():
            by_shard[row["shard"]].append(row)
        for shard, rows in sorted(by_shard.items()):
            with tarfile.open(self.folder / SHARDS / shard) as tar:
                for row in rows:
                    yield self._item(tar, row)

    def _item(self, tar: tarfile.TarFile, row: dict) -> dict:
        from latok.codec.format.reader import load_latok

        try:
            handle = tar.extractfile(f"{row['key']}.latok")
        except KeyError:
            raise InvalidInputError(f"{row['shard']} has no member {row['key']}.latok: the corpus is damaged") from None
        adaptive = load_latok(handle, name=f"{row['shard']}:{row['key']}.latok")
        if self.output == "adaptive":
            return {"key": row["key"], "tokens": adaptive, "meta": row}
        if self.output == "packed":
            from latok.codec.interop.packing import pack

            return {"key": row["key"], "tokens": pack(adaptive), "meta": row}
        from latok.codec.restore.resolve import Inpainters, restore

        latent = restore(adaptive, self.fill, Inpainters.for_tokens(adaptive))
        return {"key": row["key"], "latent": latent[0], "meta": row}
