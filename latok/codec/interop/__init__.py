"""Interop: tokens for others (packed sequences, diffusers pipelines' latents, token merging)."""
