"""The rule: which latent positions to keep (the temporal-L1 mask, τ, and the motion models it warps by)."""
