"""Token allocators: which latent positions to keep, and what choosing them cost.

latok's temporal-L1 rule and the re-implemented baselines share one interface, so a
benchmark compares only the choice of positions (same frozen VAE, same fill, same
clips).  Algorithms: ``../shared/DESIGN.md``, "Baselines".

Every allocator returns an :class:`Allocation`: the keep mask and a :class:`Passes`
account of the whole pipeline up to the final reconstruction (encoder, decoder and
inpainter work, in whole-clip equivalents: decoding a 4-frame block of a 16-frame
clip counts 0.25).
"""

from __future__ import annotations

from latok.evaluation.baselines import policies as _policies  # noqa: F401  (registers the allocators)
from latok.evaluation.baselines.base import ALLOCATORS, Allocation, AllocationContext, Allocator, Passes, get_allocator

__all__ = ["ALLOCATORS", "Allocation", "AllocationContext", "Allocator", "Passes", "get_allocator"]
