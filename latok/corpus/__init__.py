"""Corpora: tokenize a video dataset on Ray Data, resumably, and read it back for training.

``latok corpus encode SOURCE... --out DIR`` writes webdataset shards of ``.latok`` files and a Parquet
manifest (:mod:`latok.corpus.manifest`); :mod:`latok.corpus.engine` runs it on Ray Data (the only
place latok imports Ray; ``pip install 'latok[corpus]'``); :class:`~latok.corpus.dataset.CorpusDataset`
reads it back for training.
"""

from __future__ import annotations


def __getattr__(name: str):
    if name == "CorpusDataset":
        from latok.corpus.dataset import CorpusDataset

        return CorpusDataset
    raise AttributeError(f"module 'latok.corpus' has no attribute {name!r}")


__all__ = ["CorpusDataset"]
