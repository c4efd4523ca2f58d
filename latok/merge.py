"""Token merging for generators (``from latok.merge import bipartite_merge``); it lives in :mod:`latok.codec.interop.merge`."""

from latok.codec.interop.merge import Merged, bipartite_merge, proportional_attention

__all__ = ["Merged", "bipartite_merge", "proportional_attention"]
