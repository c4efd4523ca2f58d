"""Latent caching to webdataset shards and the Lightning DataModule that trains the inpainter.

Shards hold one sample per clip: ``latent.npy`` (C, t, h, w) float16 normalised latents,
``json`` metadata, and optionally ``video.npy`` (T, H, W, 3) uint8 for pixel-level validation.
Readers decode exactly those members with :func:`decode_sample` (``numpy.load(allow_pickle=False)``
and ``json``) and refuse any other, so a shard cannot run code: webdataset's default decoders
would unpickle ``.pyd``/``.pickle`` members.

Training samples are random latent-space crops (t, h, w) with random horizontal flips,
masked by the real temporal-L1 rule so that training masks look like inference masks:
half at a tau chosen so that usage is uniform over ``usage_range`` (the rate-targeted
regime), half at a tau drawn log-uniformly from ``tau_range`` (the fixed-tau regime,
where small taus leave hold nearly exact), mixed with a fraction of random masks for
robustness.  Each sample carries the tau that made its mask (``inf`` for random masks).

Masks are made as the encoder makes them: the rule measures change in ``rule_metric`` (by default the
decoder's, the channels weighted by the clip's backend's decoder sensitivities, :func:`latok.codec.tokens.rule_weights`),
and with ``motion_fraction`` > 0 each clip's motion is estimated once by ``motion_model`` (by default
``block``, the encoder's) and that share of the crops is masked by the motion-compensated rule.  Block
crops start on the block grid, so they carry their blocks' vectors (zeros without motion) and the
inpainter learns on the motion-compensated hold and interp it meets at inference.  Each crop carries
the rule's channel weights too, which centre its correction ball as the decoder's does.

For a causal (streaming) inpainter, ``context_frames`` > 0 turns the first K frames of
a crop (K uniform in 0..context_frames) into the fill cache C_fill the streaming
decoder passes in: all marked kept, holding what hold restores there, so the model
learns to continue from restored context rather than from a fully kept first frame.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import random
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset

from latok.codec.restore.fills import hold_fill
from latok.codec.rule.masking import in_rule_metric, redundancy_mask, tau_for_usage
from latok.codec.rule import motion as motion_models
from latok.codec.rule.motion import BLOCK, NO_MOTION, estimate_motion
from latok.codec.tokens import rule_weights
from latok.errors import LatokFormatError, ShardFormatError

logger = logging.getLogger(__name__)


def shard_urls(directory: str | Path) -> list[str]:
    urls = sorted(str(p) for p in Path(directory).glob("*.tar"))
    if not urls:
        raise ShardFormatError(f"{directory}: no .tar shards (make them with `latok cache-latents`)")
    return urls


SHARD_MEMBERS = ("latent.npy", "latent.lqv", "video.npy", "json")  # what write_shard writes; nothing else is read


def decode_sample(sample: dict) -> dict:
    """A raw webdataset sample -> ``{"latent.npy": (C, t, h, w) float16, "json": dict, ["video.npy": (T, H, W, 3) uint8]}``.

    Only the members :func:`write_shard` writes are decoded, and never by unpickling.

    Raises:
        ShardFormatError: one line naming the shard and the member that is unknown or unreadable.
    """
    where = f"{sample.get('__url__', 'shard')}: member {sample.get('__key__', '?')}"
    decoded = {name: value for name, value in sample.items() if name.startswith("__")}
    for name, data in sample.items():
        if name.startswith("__"):
            continue
        if name not in SHARD_MEMBERS:
            raise ShardFormatError(f"{where}.{name} is not a member latok reads ({', '.join(SHARD_MEMBERS)}); refusing the shard")
        try:
            if name == "json":
                decoded[name] = json.loads(data)
            elif name == "latent.lqv":  # quantised and range coded (latok.codec.format.coders.values.encode_dense)
                from latok.codec.format.coders.values import decode_dense

                decoded["latent.npy"] = decode_dense(data)
            else:
                decoded[name] = _load_npy(data)
        except (ValueError, OSError, EOFError, RecursionError, UnicodeDecodeError, LatokFormatError) as error:
            raise ShardFormatError(f"{where}.{name} cannot be read ({str(error).splitlines()[0][:200]})") from None
    latent = decoded.get("latent.npy")
    if latent is None or latent.ndim != 4 or latent.dtype.kind != "f" or not isinstance(decoded.get("json"), dict):
        raise ShardFormatError(f"{where}: a sample needs latent.npy (C, t, h, w) floats and a json object")
    video = decoded.get("video.npy")
    if video is not None and (video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3):
        raise ShardFormatError(f"{where}.video.npy must be uint8 (T, H, W, 3), got {video.dtype} {video.shape}")
    return decoded


def _load_npy(data: bytes) -> np.ndarray:
    """An ``.npy`` member whose header must describe exactly the bytes that follow it: a header that
    declares a huge shape is refused before anything is allocated."""
    stream = io.BytesIO(data)
    version = np.lib.format.read_magic(stream)
    read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if read_header is None:
        raise ValueError(f".npy format version {version} is not one latok writes")
    shape, _, dtype = read_header(stream, max_header_size=10_000)
    if dtype.hasobject:
        raise ValueError("object arrays are not read (they would need unpickling)")
    if math.prod(shape) * dtype.itemsize != len(data) - stream.tell():
        raise ValueError(f"its header declares {shape} {dtype}, which is not the {len(data) - stream.tell()} bytes it holds")
    return np.load(io.BytesIO(data), allow_pickle=False)


def read_samples(directory: str | Path) -> list[dict]:
    """All samples of a shard directory in order (small sets: validation clips), via :func:`decode_sample`."""
    dataset = wds.WebDataset(shard_urls(directory), shardshuffle=False, empty_check=False).map(decode_sample)
    return [dict(sample) for sample in dataset]


def random_mask(
    latent: torch.Tensor,
    usage_range: tuple[float, float],
    random_fraction: float,
    rng: random.Random,
    tau_range: tuple[float, float] | None = None,
    motion: torch.Tensor | None = None,
) -> tuple[torch.Tensor, float]:
    """A ``(1, t, h, w)`` keep mask for a ``(1, C, t, h, w)`` crop (in the rule's metric: :func:`in_rule_metric`),
    and the tau that made it.

    With probability ``random_fraction``: Bernoulli keeps at a random usage (tau ``inf``:
    no bound).  Otherwise the temporal-L1 rule (motion-compensated with ``motion`` ``(1, t, 2)`` or ``(1, t, 2, gh, gw)``),
    at a random usage or, half of the time when ``tau_range`` is given, at a log-uniform random tau.
    Frame 0 is always kept.
    """
    usage = rng.uniform(*usage_range)
    if rng.random() < random_fraction:
        generator = torch.Generator().manual_seed(rng.getrandbits(31))
        keep = torch.rand(latent.shape[0], *latent.shape[2:], generator=generator) < usage
        keep[:, 0] = True
        return keep, float("inf")
    if tau_range is not None and rng.random() < 0.5:
        tau = math.exp(rng.uniform(math.log(tau_range[0]), math.log(tau_range[1])))
    else:
        tau = tau_for_usage(latent, usage, motion=motion)
    return redundancy_mask(latent, tau, motion=motion).keep, tau


def as_stream_context(latent: torch.Tensor, keep: torch.Tensor, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Make the first ``frames`` latent frames C_fill-like: hold-restored values, all marked kept."""
    if frames < 1:
        return latent, keep
    restored = hold_fill(latent * keep.unsqueeze(1), keep)
    latent, keep = latent.clone(), keep.clone()
    latent[:, :, :frames] = restored[:, :, :frames]
    keep[:, :frames] = True
    return latent, keep


class CropDataset(IterableDataset):
    """Endless random crops with masks from a stream of cached clips."""

    def __init__(
        self,
        urls: list[str],
        crop: tuple[int, int, int],
        crops_per_clip: int,
        usage_range: tuple[float, float],
        random_mask_fraction: float,
        seed: int,
        tau_range: tuple[float, float] | None = None,
        context_frames: int = 0,
        motion_fraction: float = 0.0,
        motion_model: str = "block",
        rule_metric: str = "decoder",
    ):
        super().__init__()
        self.urls, self.crop, self.crops_per_clip = urls, crop, crops_per_clip
        self.usage_range, self.random_mask_fraction, self.seed = usage_range, random_mask_fraction, seed
        self.tau_range, self.context_frames, self.motion_fraction = tau_range, context_frames, motion_fraction
        self.motion_model, self.rule_metric = motion_model, rule_metric
        self.per_block = motion_model != NO_MOTION and motion_models.motion_model(motion_model).per_block

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = random.Random(self.seed + (info.id if info else 0))
        clips = (
            wds.WebDataset(self.urls, resampled=True, shardshuffle=True, nodesplitter=wds.split_by_node)
            .shuffle(16, rng=rng)
            .map(decode_sample)
        )
        for sample in clips:
            latent = torch.from_numpy(sample["latent.npy"]).float()  # (C, t, h, w)
            uses_motion = self.motion_fraction > 0 and self.motion_model != NO_MOTION
            motion = estimate_motion(latent.unsqueeze(0), self.motion_model)[0] if uses_motion else None  # (t, 2[, gh, gw])
            weights = self._weights(sample["json"])
            for _ in range(self.crops_per_clip):
                crop, crop_motion = self._crop(latent, motion, rng)
                crop = crop.unsqueeze(0)  # (1, C, ct, ch, cw)
                compensated = motion is not None and rng.random() < self.motion_fraction
                if not compensated:
                    crop_motion = torch.zeros_like(crop_motion)
                keep, tau = random_mask(
                    in_rule_metric(crop, weights), self.usage_range, self.random_mask_fraction, rng, self.tau_range,
                    crop_motion.unsqueeze(0) if compensated else None,
                )  # fmt: skip
                if self.context_frames:
                    context = min(rng.randint(0, self.context_frames), crop.shape[2] - 1)
                    crop, keep = as_stream_context(crop, keep, context)
                yield {"latent": crop[0], "keep": keep[0], "tau": tau, "motion": crop_motion,
                       "weights": torch.ones(crop.shape[1]) if weights is None else torch.tensor(weights)}  # fmt: skip

    def _weights(self, meta: dict) -> tuple[float, ...] | None:
        """The rule's channel weights for a clip of ``meta["backend"]`` (``None``: every channel alike)."""
        from latok.vae import vae_class

        backend = meta.get("backend")
        return rule_weights(self.rule_metric, vae_class(backend).value_sensitivity if isinstance(backend, str) else None)

    def _crop(self, latent: torch.Tensor, motion: torch.Tensor | None, rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
        """A random (flipped) crop and its frames' motion (frame 0's zero: the crop starts there): with block
        motion the crop starts on the block grid and carries its blocks' vectors, ``(ct, 2, gh, gw)``."""
        _, frames, height, width = latent.shape
        ct, ch, cw = (min(c, s) for c, s in zip(self.crop, (frames, height, width)))
        align = BLOCK if self.per_block else 1
        t0 = rng.randint(0, frames - ct)
        y0, x0 = (align * rng.randint(0, (size - crop) // align) for size, crop in ((height, ch), (width, cw)))
        crop = latent[:, t0 : t0 + ct, y0 : y0 + ch, x0 : x0 + cw]
        grid = (-(-ch // BLOCK), -(-cw // BLOCK)) if self.per_block else ()
        if motion is None:
            shifts = torch.zeros(ct, 2, *grid)
        elif self.per_block:
            shifts = motion[t0 : t0 + ct, :, y0 // BLOCK : y0 // BLOCK + grid[0], x0 // BLOCK : x0 // BLOCK + grid[1]].clone()
        else:
            shifts = motion[t0 : t0 + ct].clone()
        shifts[0] = 0.0
        if rng.random() < 0.5 and (not self.per_block or cw % BLOCK == 0):  # a flip keeps the block grid only on whole blocks
            crop, shifts = crop.flip(-1), shifts.flip(-1) if self.per_block else shifts
            shifts = shifts * torch.tensor([1.0, -1.0]).view(1, 2, *([1] * len(grid)))
        return crop, shifts


def _pad_collate(items: list[dict]) -> dict:
    """Stack crops; crops from small clips are zero-padded, padding flagged as kept (so it carries no loss)."""
    shape = [max(item["latent"].shape[d] for item in items) for d in range(4)]
    latents, keeps, motions = [], [], []
    motion_shape = [max(item["motion"].shape[d] for item in items) for d in range(items[0]["motion"].ndim)] if "motion" in items[0] else None
    for item in items:
        latent, keep = item["latent"], item["keep"]
        pad = [0, shape[3] - latent.shape[3], 0, shape[2] - latent.shape[2], 0, shape[1] - latent.shape[1]]
        latents.append(torch.nn.functional.pad(latent, pad))
        keeps.append(torch.nn.functional.pad(keep, pad, value=True))
        motion = item.get("motion", torch.zeros(latent.shape[1], 2))
        if motion_shape is not None:  # (t, 2) or (t, 2, gh, gw): zeros where a smaller crop has no frame or block
            motion = torch.nn.functional.pad(motion, [p for d in reversed(range(motion.ndim)) for p in (0, motion_shape[d] - motion.shape[d])])
        motions.append(motion)
    taus = torch.tensor([item.get("tau", float("inf")) for item in items], dtype=torch.float32)
    batch = {"latent": torch.stack(latents), "keep": torch.stack(keeps), "tau": taus, "motion": torch.stack(motions)}
    if "weights" in items[0]:
        batch["weights"] = items[0]["weights"]  # the rule's channel weights: one backend, one set a batch
    return batch


class LatentDataModule(L.LightningDataModule):
    """Training crops from ``train_dir`` shards; whole validation clips (with video) from ``val_dir``.

    Args:
        train_dir: directory of training shards from ``latok cache-latents``.
        val_dir: directory of validation shards (made with ``--with-video``); ``None`` for no validation.
        crop: latent crop (frames, height, width).
        batch_size, num_workers: loader settings.
        crops_per_clip: crops drawn from a clip before the next clip is read.
        usage_min, usage_max: range of kept fractions for the rate-targeted training masks.
        tau_min, tau_max: log-uniform range of tau for the fixed-tau training masks (``tau_min`` 0: off).
        random_mask_fraction: share of masks drawn as random Bernoulli keeps instead of the rule.
        context_frames: up to this many leading crop frames become streaming context (causal models; 0: off).
        motion_fraction: share of crops masked by the motion-compensated rule (0: none).
        motion_model: the motion those crops are masked with, as ``--motion`` names it (``block``: the encoder's default).
        rule_metric: the rule's metric, as ``--rule-metric`` names it (``decoder``: the encoder's default).
        seed: base seed of crops and masks.
    """

    def __init__(
        self,
        train_dir: str = "data/latents/taef2/train",
        val_dir: str | None = "data/latents/taef2/val",
        crop: tuple[int, int, int] = (17, 16, 16),
        batch_size: int = 8,
        num_workers: int = 1,
        crops_per_clip: int = 8,
        usage_min: float = 0.1,
        usage_max: float = 0.9,
        random_mask_fraction: float = 0.2,
        tau_min: float = 0.05,
        tau_max: float = 1.0,
        context_frames: int = 0,
        motion_fraction: float = 0.0,
        motion_model: str = "block",
        rule_metric: str = "decoder",
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()

    def train_dataloader(self) -> DataLoader:
        h = self.hparams
        dataset = CropDataset(
            shard_urls(h.train_dir), tuple(h.crop), h.crops_per_clip, (h.usage_min, h.usage_max),
            h.random_mask_fraction, h.seed, (h.tau_min, h.tau_max) if h.tau_min > 0 else None, h.context_frames,
            h.motion_fraction, h.motion_model, h.rule_metric,
        )  # fmt: skip
        return DataLoader(
            dataset, batch_size=h.batch_size, num_workers=h.num_workers, collate_fn=_pad_collate,
            persistent_workers=h.num_workers > 0,
        )  # fmt: skip

    def val_dataloader(self) -> DataLoader | list:
        if not self.hparams.val_dir:
            return []
        samples = read_samples(self.hparams.val_dir)
        for s in samples:
            if "video.npy" not in s or not isinstance(s["json"].get("name"), str):
                where = f"{s.get('__url__', self.hparams.val_dir)}: member {s.get('__key__', '?')}"
                raise ShardFormatError(f"{where}: a validation sample needs video.npy and a json with a \"name\" (cache it with --with-video)")
        items = [
            {
                "latent": torch.from_numpy(s["latent.npy"]).float(),
                "video": torch.from_numpy(s["video.npy"]),
                "name": s["json"]["name"],
            }
            for s in samples
        ]
        return DataLoader(items, batch_size=None)


DEFAULT_CACHE_VALUE_STEP = 0.05  # finer than .latok files (0.13): within 0.04 of the latent on every channel; eval/results/cache_coding.md


def write_shard(
    path: Path, key: str, latent: torch.Tensor, meta: dict, video: np.ndarray | None = None, value_steps: tuple[float, ...] | None = None
) -> None:
    """One clip -> one tar shard, written atomically: the ``(C, t, h, w)`` latent as fp16 ``latent.npy``, or with
    ``value_steps`` quantised and range coded as ``latent.lqv`` (:func:`latok.codec.format.coders.values.encode_dense`)."""
    from latok._fs import atomic_path

    sample = {"__key__": key, "json": json.dumps(meta).encode()}
    if value_steps is None:
        sample["latent.npy"] = latent.to(torch.float16).numpy()
    else:
        from latok.codec.format.coders.values import encode_dense

        sample["latent.lqv"] = encode_dense(latent.float().cpu(), value_steps)
    if video is not None:
        sample["video.npy"] = video
    with atomic_path(path) as tmp:
        with wds.TarWriter(str(tmp)) as writer:
            writer.write(sample)


# -- caching ---------------------------------------------------------------------------------


class _Inputs(torch.utils.data.Dataset):
    def __init__(self, jobs: list[dict]):
        self.jobs = jobs

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> dict:
        return self.jobs[index]


class LatentCacher(L.LightningModule):
    """``Trainer.predict`` step that encodes one input clip and writes its shard (one GPU per rank)."""

    def __init__(self, backend: str, vae_options: dict | None = None, value_step: float = 0.0):
        super().__init__()
        self.backend, self.vae_options, self.value_step = backend, vae_options or {}, value_step
        self._vae = None

    def predict_step(self, job: dict, batch_idx: int) -> str | None:
        """Returns an error line for an input that cannot be read, else None."""
        from latok.errors import VideoReadError
        from latok.io import load_clip, video_to_frames
        from latok.vae import load_vae

        if self._vae is None:
            self._vae = load_vae(self.backend, device=self.device, **self.vae_options)
        try:
            clip = load_clip(job["input"], frames=job["frames"], start=job["start"], stride=job["stride"], height=job["height"])
        except VideoReadError as error:
            logger.debug("skipped: %s", error)  # returned: the caller reports it once
            return str(error)
        latent = self._vae.encode(clip.video)[0].cpu()  # (C, t, h, w)
        meta = {
            "name": job["name"], "input": job["input"], "backend": self.backend, "fps": clip.fps,
            "frames": clip.frames, "height": clip.video.shape[-2], "width": clip.video.shape[-1],
            "start": job["start"], "stride": job["stride"],
        }  # fmt: skip
        video = video_to_frames(clip.video) if job["with_video"] else None
        from latok.codec.quantise import channel_steps

        steps = channel_steps(self.value_step, self._vae.value_sensitivity, latent.shape[0])
        write_shard(Path(job["shard"]), job["name"], latent, meta, video, steps)
        return None


@contextmanager
def _quiet_lightning():
    """Lightning's INFO lines (accelerators found, devices used) are noise around a cache job: keep its warnings only,
    unless latok logs at debug level (``latok -v``)."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [log.level for log in loggers]
    if not logging.getLogger("latok").isEnabledFor(logging.DEBUG):
        for log in loggers:
            log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)


def cache_latents(
    inputs: list[str],
    out: str | Path,
    backend: str = "taef2",
    frames: int | None = None,
    start: int = 0,
    stride: int = 1,
    height: int | None = 240,
    with_video: bool = False,
    vae_options: dict | None = None,
    value_step: float = DEFAULT_CACHE_VALUE_STEP,
) -> tuple[list[Path], list[str]]:
    """Encode each input into ``out/<name>-<hash>.tar``; inputs whose shard exists are skipped (resumable).

    Latents are stored quantised with ``value_step`` (per channel, as ``.latok`` files do) and range coded;
    ``value_step=0`` stores them as fp16 arrays, as latok did before.

    Runs as a Lightning ``predict`` over all visible devices, so a corpus spreads over GPUs.
    An unreadable input does not stop the run: it is reported and the others are cached.

    Returns:
        (all shards in ``out``, one error line per input that could not be read).
    """
    import hashlib

    from latok.io import check_input

    for source in inputs:  # before any work: a missing input, a dangling link or a link loop is one error
        check_input(source)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for source in inputs:
        settings = json.dumps([os.path.realpath(source), backend, frames, start, stride, height, with_video] + ([value_step] if value_step else []))
        name = Path(source).stem if Path(source).is_file() else Path(source).name
        shard = out / f"{name}-{hashlib.sha256(settings.encode()).hexdigest()[:8]}.tar"
        job = {"input": str(source), "name": name, "shard": str(shard), "frames": frames, "start": start,
               "stride": stride, "height": height, "with_video": with_video}  # fmt: skip
        if not shard.exists():
            jobs.append(job)
    logger.info("%d of %d inputs to encode into %s", len(jobs), len(inputs), out)
    errors: list[str] = []
    if jobs:
        with _quiet_lightning():
            trainer = L.Trainer(accelerator="auto", devices="auto", logger=False, enable_checkpointing=False)
            loader = DataLoader(_Inputs(jobs), batch_size=None, collate_fn=lambda job: job)
            errors = [e for e in trainer.predict(LatentCacher(backend, vae_options, value_step), loader) or [] if e]
    return sorted(out.glob("*.tar")), errors
