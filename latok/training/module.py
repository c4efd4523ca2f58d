"""``InpainterModule``: the Lightning system that trains the Latent Inpainting Transformer."""

from __future__ import annotations

import math
from typing import Literal

import lightning as L
import torch
from torchmetrics import MeanMetric

from latok.codec.restore.fills import hold_fill, interp_fill
from latok.codec.restore.inpainter import InpaintingTransformer
from latok.codec.restore.inpainter import preset as inpainter_preset
from latok.codec.rule.masking import in_rule_metric, redundancy_mask, tau_for_usage
from latok.codec.rule.motion import estimate_motion
from latok.codec.tokens import rule_weights


class InpainterModule(L.LightningModule):
    """Squared error on dropped positions relative to hold's; AdamW with warm-up and cosine decay.

    With ``loss_ratio="pooled"`` (the default) the loss is the batch's dropped-position squared error
    divided by hold's on the same positions: every error counts by its size, as it does in the decoded
    clip's PSNR, and the division only makes batches comparable.  ``"per-clip"`` (the recipes before
    it) divides each crop's error by its own hold error and averages the ratios: a nearly static crop,
    whose hold error is tiny, then weighs as much as a fast-moving one, and the ratio rewards shaving
    errors that no decoded pixel shows (eval/README.md, "How much does the inpainter add").

    With ``loss="decoder"`` errors are measured in the decoder's metric (see
    :meth:`~latok.codec.restore.inpainter.InpaintingTransformer.error`), estimated at fit start from
    ``metric_frames`` frames of ``metric_dir`` (default: the data module's training shards) and
    saved with the model, so the loss follows decoded pixel error rather than treating all
    latent channels alike (taef2's differ 37x in how much they move its decoded pixels).
    With ``loss="pixels"`` the error is the decoded one itself: ``pixel_frames`` latent frames of each crop
    (drawn in proportion to their dropped positions) go through the frozen decoder of ``val_backend``, with
    the gradient, and the loss is the squared pixel error against the true latent's decode, over hold's.

    Validation decodes whole held-out clips at ``val_target_usage`` and logs
    PSNR of lit, hold and interp against the original frames, and lit's gain over hold;
    with ``val_motion`` the masks, hold, interp and lit are motion-compensated, as
    ``--motion NAME`` encodes them, and the masks measure change in ``rule_metric``, as
    ``--rule-metric`` does.  Training batches with non-zero ``motion`` (see
    :class:`~latok.training.data.LatentDataModule`'s ``motion_fraction``) train on the
    motion-compensated references, and are scored against the motion-compensated hold; their
    ``weights`` (the rule's channel weights) centre the correction ball as the decoder's do.

    Args:
        preset: inpainter size, ``"xs"`` or ``"s"``.
        latent_channels: C of the backend's latents.
        causal: temporal attention sees only the past (streaming).
        lr, weight_decay, betas: AdamW settings.
        warmup_steps: linear warm-up length; then cosine decay to ``min_lr_ratio * lr`` at ``trainer.max_steps``.
        val_backend: VAE used to decode validation clips.
        val_target_usage: kept fraction of the validation masks.
        val_motion: validate on motion-compensated masks and fills: a motion model's name (``block``, the
            encoder's default), ``True`` for ``global`` (what it meant before block motion) or ``False``.
        rule_metric: the metric validation masks measure change in (``decoder``, the encoder's default, or ``latent``).
        init_from: start from this inpainter checkpoint's weights (e.g. fine-tune a causal model
            from the bidirectional one; the architectures must match apart from ``causal``).
        loss: ``"latent"`` (plain squared error), ``"decoder"`` (decoder metric) or ``"pixels"`` (through the decoder).
        pixel_frames: with ``loss="pixels"``, latent frames of each crop decoded per step.
        loss_ratio: ``"pooled"`` (the batch's error over hold's) or ``"per-clip"`` (the mean of each crop's ratio).
        metric_dir, metric_frames: latents the decoder metric is estimated on, and how many frames.
    """

    def __init__(
        self,
        preset: str = "xs",
        latent_channels: int = 32,
        causal: bool = False,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.99),
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.05,
        val_backend: str = "taef2",
        val_target_usage: float = 0.5,
        val_motion: bool | str = False,
        rule_metric: str = "decoder",
        init_from: str | None = None,
        loss: Literal["latent", "decoder", "pixels"] = "latent",
        metric_dir: str | None = None,
        metric_frames: int = 8,
        loss_ratio: Literal["pooled", "per-clip"] = "pooled",
        pixel_frames: int = 2,
    ):
        super().__init__()
        if loss not in ("latent", "decoder", "pixels"):
            raise ValueError(f"loss must be 'latent', 'decoder' or 'pixels', got {loss!r}")
        if loss_ratio not in ("pooled", "per-clip"):
            raise ValueError(f"loss_ratio must be 'pooled' or 'per-clip', got {loss_ratio!r}")
        self.save_hyperparameters()
        self.model = InpaintingTransformer(inpainter_preset(preset, latent_channels=latent_channels, causal=causal))
        if init_from:
            source = InpaintingTransformer.from_pretrained(init_from)
            if source.config.decoder_metric:
                self.model.set_decoder_metric(source.decoder_metric)
            self.model.load_state_dict(source.state_dict())
        self._vae = None
        self._baselines: dict[int, dict[str, torch.Tensor]] = {}  # validation clip -> PSNR of hold and interp
        # per-clip validation PSNRs, averaged over clips and reduced across DDP ranks by torchmetrics
        self.val_psnr = torch.nn.ModuleDict({name: MeanMetric() for name in ("lit", "hold", "interp", "gain_over_hold")})

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        metric = checkpoint["state_dict"].get("model.decoder_metric")  # resuming a decoder-loss run
        if metric is not None and not self.model.config.decoder_metric:
            self.model.set_decoder_metric(metric)

    def on_fit_start(self) -> None:
        if self.hparams.loss == "decoder" and not self.model.config.decoder_metric:
            self.model.set_decoder_metric(self._estimate_metric())

    def _estimate_metric(self) -> torch.Tensor:
        """The validation backend's decoder metric on a few frames of ``metric_dir``'s clips."""
        from latok.training.data import read_samples
        from latok.vae import load_vae

        datamodule = self.trainer.datamodule
        directory = self.hparams.metric_dir or (datamodule.hparams.get("train_dir") if datamodule is not None else None)
        if directory is None:
            raise ValueError("loss='decoder' needs metric_dir (or a data module with train_dir)")
        latents = []
        for sample in read_samples(directory):  # the first and middle frame of clips of one size: varied content
            clip = torch.from_numpy(sample["latent.npy"]).float()  # (C, t, h, w)
            if not latents or clip.shape[2:] == latents[0].shape[2:]:
                latents.append(clip[:, sorted({0, clip.shape[1] // 2})])
            if sum(z.shape[1] for z in latents) >= self.hparams.metric_frames:
                break
        latent = torch.cat(latents, dim=1)[:, : self.hparams.metric_frames].unsqueeze(0)
        return load_vae(self.hparams.val_backend, device=self.device, precision="fp32").decoder_metric(latent.to(self.device))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        motion = batch.get("motion")
        motion = motion if motion is not None and bool(motion.any()) else None  # all-zero: plain references, as before
        weights = batch.get("weights")
        weights = None if weights is None or bool((weights == 1).all()) else tuple(weights.tolist())
        loss, hold_loss, ratio = self._losses(batch["latent"], batch["keep"], batch.get("tau"), motion, weights)
        self.log_dict({"train/loss": ratio, "train/mse": loss, "train/hold_mse": hold_loss}, prog_bar=True)
        return ratio

    def _losses(
        self, latent: torch.Tensor, keep: torch.Tensor, tau: torch.Tensor | float | None, motion: torch.Tensor | None = None,
        weights: tuple[float, ...] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """Mean squared error over dropped positions for the model and for hold (motion-compensated
        with ``motion``), and the loss: their ratio, pooled over the batch or averaged over clips
        (``loss_ratio``).  ``weights``: the rule's channel weights (the correction ball's metric)."""
        sparse = latent * keep.unsqueeze(1)
        prediction = self.model(sparse, keep, tau, motion=motion, weights=weights)
        with torch.no_grad():
            hold = hold_fill(sparse, keep, motion)
        if self.hparams.get("loss") == "pixels" and self.training:
            per_clip, hold_per_clip = self._pixel_errors(prediction, hold, latent, keep)
        else:
            with torch.no_grad():
                hold_per_clip = self.model.error(hold, latent, keep).sum(dim=1)
            per_clip = self.model.error(prediction, latent, keep).sum(dim=1)
        count = (~keep).sum() * latent.shape[1]
        has_dropped = hold_per_clip > 0
        if not has_dropped.any():
            ratio = per_clip.sum()
        elif self.hparams.loss_ratio == "pooled":
            ratio = per_clip.sum() / hold_per_clip.sum()
        else:
            ratio = (per_clip / hold_per_clip.clamp(min=1e-12))[has_dropped].mean()
        return per_clip.sum() / count.clamp(min=1), hold_per_clip.sum() / count.clamp(min=1), ratio

    def _pixel_errors(self, prediction: torch.Tensor, hold: torch.Tensor, latent: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per crop, the summed squared decoded-pixel error of ``prediction`` and of ``hold`` against ``latent``'s
        decode, on ``pixel_frames`` latent frames drawn in proportion to their dropped positions."""
        dropped = (~keep).flatten(2).sum(dim=2).float()  # (B, t)
        draws = min(self.hparams.pixel_frames, keep.shape[1])
        frames = torch.multinomial(dropped + 1e-6, draws)  # (B, K)
        index = frames.view(*frames.shape, 1, 1).unsqueeze(1).expand(-1, latent.shape[1], -1, *latent.shape[-2:])

        def decoded(x: torch.Tensor) -> torch.Tensor:  # (B, C, K, h, w) -> (B, 3, K, H, W), the crops as one clip
            pixels = self.vae.decode_with_grad(x.gather(2, index).transpose(0, 1).flatten(1, 2).unsqueeze(0).to(self.vae.dtype))
            return pixels[0].unflatten(1, (x.shape[0], draws)).transpose(0, 1)

        with torch.no_grad():
            truth = decoded(latent)
            hold_per_clip = (decoded(hold) - truth).square().flatten(1).sum(dim=1)
        return (decoded(prediction) - truth).square().flatten(1).sum(dim=1), hold_per_clip

    # -- validation: decoded pixels on whole held-out clips --------------------------------------

    @property
    def vae(self):
        if self._vae is None:
            from latok.vae import load_vae

            self._vae = load_vae(self.hparams.val_backend, device=self.device, precision="fp32")  # checkpoints are chosen in fp32
        return self._vae

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        from torchmetrics.functional.image import peak_signal_noise_ratio

        from latok.io import frames_to_video, to_8bit_levels

        def psnr(decoded: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:  # one MSE over the clip, 8-bit levels
            return peak_signal_noise_ratio(to_8bit_levels(decoded), to_8bit_levels(reference), data_range=255.0)

        latent = batch["latent"].unsqueeze(0).to(self.device)  # (1, C, t, h, w)
        video = frames_to_video(batch["video"].cpu().numpy())  # (1, 3, T, H, W)
        motion = estimate_motion(latent, self.validation_motion) if self.validation_motion else None
        weights = rule_weights(self.hparams.get("rule_metric", "latent"), self.vae.value_sensitivity)
        scaled = in_rule_metric(latent, weights)
        tau = tau_for_usage(scaled, self.hparams.val_target_usage, motion=motion)
        keep = redundancy_mask(scaled, tau, motion=motion).keep
        sparse = latent * keep.unsqueeze(1)
        size = video.shape[-3:]
        scores = {"lit": psnr(self.vae.decode(self.model(sparse, keep, tau, motion=motion, weights=weights).float(), size=size).cpu(), video)}
        if batch_idx not in self._baselines:  # hold and interp do not depend on the weights: decoded once per clip
            self._baselines[batch_idx] = {
                "hold": psnr(self.vae.decode(hold_fill(sparse, keep, motion), size=size).cpu(), video),
                "interp": psnr(self.vae.decode(interp_fill(sparse, keep, motion), size=size).cpu(), video),
            }
        scores.update(self._baselines[batch_idx])
        scores["gain_over_hold"] = scores["lit"] - scores["hold"]
        for name, value in scores.items():
            self.val_psnr[name].update(value)
            key = "val/psnr_gain_over_hold" if name == "gain_over_hold" else f"val/psnr_{name}"
            self.log(key, self.val_psnr[name], prog_bar=name == "gain_over_hold", batch_size=1)
        _, _, ratio = self._losses(latent, keep, tau, motion, weights)
        self.log("val/latent_loss_vs_hold", ratio, batch_size=1)

    @property
    def validation_motion(self) -> str | None:
        """The motion model validation masks with: ``val_motion``'s name, ``global`` for ``True``, ``None`` for ``False``."""
        value = self.hparams.get("val_motion")
        if value is True:
            return "global"
        return value or None

    # -- optimisation ----------------------------------------------------------------------------

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, parameter in self.model.named_parameters():
            (no_decay if parameter.ndim < 2 or name.endswith("mask_token") else decay).append(parameter)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.hparams.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.hparams.lr,
            betas=tuple(self.hparams.betas),
        )
        total = max(self.trainer.max_steps, 1) if self.trainer.max_steps and self.trainer.max_steps > 0 else None
        warmup, floor = self.hparams.warmup_steps, self.hparams.min_lr_ratio

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if total is None:
                return 1.0
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
