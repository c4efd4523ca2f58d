"""Backends by name: ``@register_vae("name")`` on a class, ``load_vae("name", **options)`` to build one.

Backend modules are imported only when a backend is first asked for, so
``import latok`` never pulls in diffusers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from latok.errors import UnknownBackendError

if TYPE_CHECKING:
    from latok.vae.base import VideoAutoencoder

DEFAULT_BACKEND = "taef2"
_BACKEND_MODULES = ("latok.vae.taesd", "latok.vae.diffusers_video")
_REGISTRY: dict[str, type[VideoAutoencoder]] = {}


def register_vae(name: str):
    """Class decorator adding a :class:`VideoAutoencoder` subclass to the registry under ``name``."""

    def decorate(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"VAE backend {name!r} is already registered by {_REGISTRY[name].__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def _import_backends() -> None:
    for module in _BACKEND_MODULES:
        importlib.import_module(module)


def vae_class(name: str) -> type[VideoAutoencoder]:
    """The registered class for ``name`` (no weights are loaded)."""
    _import_backends()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownBackendError(f"unknown VAE backend {name!r}; available: {', '.join(list_vaes())}") from None


def list_vaes() -> list[str]:
    """Registered backend names, default first."""
    _import_backends()
    return sorted(_REGISTRY, key=lambda n: (n != DEFAULT_BACKEND, n))


def load_vae(name: str = DEFAULT_BACKEND, **options) -> VideoAutoencoder:
    """Build the backend ``name``; ``options`` go to its constructor (``device``, ``dtype``, weights path, ...)."""
    return vae_class(name)(**options)
