"""Frozen autoencoder backends behind one protocol (:class:`VideoAutoencoder`)."""

from latok.vae.base import VideoAutoencoder
from latok.vae.registry import DEFAULT_BACKEND, list_vaes, load_vae, register_vae, vae_class

__all__ = ["DEFAULT_BACKEND", "VideoAutoencoder", "list_vaes", "load_vae", "register_vae", "vae_class"]
