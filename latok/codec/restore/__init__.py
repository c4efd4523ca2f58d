"""Restoration: how dropped positions come back (closed-form fills, the inpainter, the lit guard)."""
