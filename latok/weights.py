"""Finding pretrained weight files: explicit path, ``LATOK_WEIGHTS_DIR``, cache, download.

Lookup order for a file ``name``:

1. an explicit path given by the caller (a file, or a directory holding ``name``);
2. ``$LATOK_WEIGHTS_DIR/name``;
3. the cache, ``$LATOK_CACHE_DIR`` or ``~/.cache/latok``;
4. download from the upstream URL into the cache, verified against its sha256.

Files found in ``$LATOK_WEIGHTS_DIR`` or the cache, and downloads, are checked against the
published sha256 before they are used: a damaged or swapped file is one error naming it.  A
path given explicitly is the user's own choice (a fine-tuned or re-exported copy) and is not
checked against the published digest; it must still load as the model's weights.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from latok._fs import atomic_path
from latok.errors import WeightsChecksumError, WeightsNotFoundError

logger = logging.getLogger(__name__)

WEIGHTS_DIR_ENV = "LATOK_WEIGHTS_DIR"
CACHE_DIR_ENV = "LATOK_CACHE_DIR"
OFFLINE_ENV = "LATOK_OFFLINE"


@dataclass(frozen=True)
class WeightFile:
    """A published weight file: its name on disk, where upstream serves it, and its sha256.

    ``sha256`` may be a prefix of the digest, as torchvision publishes in its file names
    (``vgg16-397923af.pth``); empty only where the caller verifies the loaded tensors
    itself (the LPIPS heads, see :mod:`latok.evaluation.lpips`)."""

    name: str
    url: str
    sha256: str


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "latok")


def offline() -> bool:
    """``LATOK_OFFLINE`` is set (to anything but 0): latok makes no network call at all."""
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0")


def weight_folders() -> list[Path]:
    """The folders weights are looked up in (and downloaded to): ``$LATOK_WEIGHTS_DIR``, the cache, the hub cache."""
    from huggingface_hub import constants

    folders = [Path(os.environ[WEIGHTS_DIR_ENV]).expanduser()] if os.environ.get(WEIGHTS_DIR_ENV) else []
    return [*folders, cache_dir(), Path(constants.HF_HUB_CACHE)]


def find_weight(weight: WeightFile, path: str | os.PathLike | None = None) -> Path | None:
    """Return the first local copy of ``weight`` in lookup order, or ``None``.

    Raises:
        WeightsNotFoundError: ``path`` was given explicitly but holds no such file.
    """
    if path is not None:
        candidate = Path(path).expanduser()
        if candidate.is_dir():
            candidate = candidate / weight.name
        if not candidate.is_file():
            raise WeightsNotFoundError(f"{candidate}: weights file {weight.name} not found at the given path")
        return candidate
    for directory in (os.environ.get(WEIGHTS_DIR_ENV), cache_dir()):
        if directory and (Path(directory).expanduser() / weight.name).is_file():
            return verified(weight, Path(directory).expanduser() / weight.name)
    return None


def verified(weight: WeightFile, path: Path) -> Path:
    """``path`` if its sha256 matches ``weight``'s published digest (or prefix); else WeightsChecksumError."""
    if not weight.sha256:
        return path
    try:
        digest = sha256_of(path)
    except OSError as error:
        raise WeightsNotFoundError(f"{path}: cannot read weights ({error.strerror})") from None
    if not digest.startswith(weight.sha256):
        raise WeightsChecksumError(
            f"{path}: sha256 {digest[:16]}... is not the published {weight.name} ({weight.sha256[:16]}...); "
            f"the file is damaged or a different model: delete it, or replace it with {weight.url}"
        )
    return path


def resolve_weight(weight: WeightFile, path: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Find ``weight`` locally or download it into the cache (sha256-checked, with a progress bar).

    Set ``LATOK_OFFLINE=1`` (or pass ``download=False``) to never touch the network.

    Raises:
        WeightsNotFoundError: with instructions, when no copy exists and the download fails.
        WeightsChecksumError: the downloaded bytes do not match the published sha256.
    """
    found = find_weight(weight, path)
    if found is not None:
        return found
    target = cache_dir() / weight.name
    how_to = (
        f"download {weight.url} into {cache_dir()}, or set {WEIGHTS_DIR_ENV} to a directory "
        f"holding {weight.name}, or pass its path explicitly"
    )
    if not download or offline():
        raise WeightsNotFoundError(f"weights {weight.name} not found locally (offline); {how_to}")
    try:
        _download(weight, target)
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        raise WeightsNotFoundError(f"weights {weight.name} not found locally and download failed ({error}); {how_to}") from None
    return target


def _download(weight: WeightFile, target: Path) -> None:
    from tqdm.auto import tqdm

    logger.info("downloading %s", weight.url)
    digest = hashlib.sha256()
    with urllib.request.urlopen(weight.url, timeout=30) as response, atomic_path(target) as tmp:
        total = int(response.headers.get("Content-Length") or 0) or None
        with open(tmp, "wb") as out, tqdm(total=total, unit="B", unit_scale=True, desc=weight.name) as bar:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
                bar.update(len(chunk))
        if not digest.hexdigest().startswith(weight.sha256):
            raise WeightsChecksumError(
                f"{weight.url}: sha256 {digest.hexdigest()} does not match the expected {weight.sha256}"
            )


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def tensor_digest(state: dict) -> str:
    """sha256 over ``state`` (sorted names, each name then its float32 little-endian bytes)."""
    import numpy as np
    import torch

    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().to(torch.float32).contiguous().cpu().numpy().astype(np.dtype("<f4")).tobytes())
    return digest.hexdigest()
