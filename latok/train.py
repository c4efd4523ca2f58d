"""Training entry point: ``latok train fit --config configs/taef2_lit-xs.yaml`` (LightningCLI).

Everything the CLI sets comes from the YAML files in ``configs/`` and the type
hints of :class:`~latok.module.InpainterModule` and :class:`~latok.data.LatentDataModule`;
any value can be overridden on the command line (``--trainer.max_steps 500``,
``--trainer.strategy ddp``, ``--model.preset s``).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L

from latok.data import LatentDataModule
from latok.module import InpainterModule


class SavePretrained(L.Callback):
    """Export the inpainter as ``config.json`` + ``model.safetensors`` after every validation
    and at the end of training (with EMA weights when an EMA callback has swapped them in)."""

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)

    def _export(self, trainer: L.Trainer, module: InpainterModule) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking and not trainer.fast_dev_run:
            module.model.save_pretrained(self.dirpath)

    def on_validation_end(self, trainer: L.Trainer, module: InpainterModule) -> None:
        self._export(trainer, module)

    def on_train_end(self, trainer: L.Trainer, module: InpainterModule) -> None:
        self._export(trainer, module)


def train_cli(args: list[str] | None = None):
    """Run LightningCLI on ``args`` (``fit --config ...``); returns it for inspection."""
    from lightning.pytorch.cli import LightningCLI

    return LightningCLI(InpainterModule, LatentDataModule, args=args, save_config_kwargs={"overwrite": True})
