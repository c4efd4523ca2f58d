"""Training entry point: ``latok train fit --config configs/taef2_lit-xs.yaml`` (LightningCLI).

Everything the CLI sets comes from the YAML files in ``configs/`` and the type
hints of :class:`~latok.training.module.InpainterModule` and :class:`~latok.training.data.LatentDataModule`;
any value can be overridden on the command line (``--trainer.max_steps 500``,
``--trainer.strategy ddp``, ``--model.preset s``).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L

from latok.training.data import LatentDataModule
from latok.training.module import InpainterModule


class SavePretrained(L.Callback):
    """Export the inpainter as ``config.json`` + ``model.safetensors``.

    With ``monitor`` (default: the validation PSNR gain over hold), the export happens after a
    validation that improves it, so the directory always holds the best model seen; latent loss
    and decoded PSNR do not move together, and the last weights are not always the best.  With
    ``monitor=None``, or when no validation ran, it exports at the end of fitting.

    With ``EMAWeightAveraging``, list this callback *before* it: validation then runs (and is
    exported) with the averaged weights swapped in, and at fit end the average has been copied in.
    """

    def __init__(self, dirpath: str, monitor: str | None = "val/psnr_gain_over_hold", mode: str = "max"):
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.dirpath, self.monitor, self.mode = Path(dirpath), monitor, mode
        self.best: float | None = None

    def _active(self, trainer: L.Trainer) -> bool:
        return trainer.is_global_zero and not trainer.sanity_checking and not trainer.fast_dev_run

    def on_validation_epoch_end(self, trainer: L.Trainer, module: InpainterModule) -> None:
        if not self._active(trainer) or self.monitor is None or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        if self.best is None or (value > self.best if self.mode == "max" else value < self.best):
            self.best = value
            module.model.save_pretrained(self.dirpath)

    def on_fit_end(self, trainer: L.Trainer, module: InpainterModule) -> None:
        if self._active(trainer) and self.best is None:
            module.model.save_pretrained(self.dirpath)


def train_cli(args: list[str] | None = None):
    """Run LightningCLI on ``args`` (``fit --config ...``); returns it for inspection.

    The resolved config is saved next to the logger's files; a run without a logger saves none,
    rather than dropping ``config.yaml`` into the working directory."""
    from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

    class SaveConfigWithLogs(SaveConfigCallback):
        def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
            if trainer.logger is not None:
                super().setup(trainer, pl_module, stage)

    return LightningCLI(
        InpainterModule, LatentDataModule, args=args, save_config_callback=SaveConfigWithLogs, save_config_kwargs={"overwrite": True}
    )
