"""Training caches written with the ``.latok`` value coding: shard size and training speed.

Re-writes the pool validation shards (17 latent frames of 240p each; made by ``eval/prepare_pool_data.sh``,
without their frames here) at each value step, where 0 is latok's earlier fp16 ``latent.npy``, then for
each: the shards' bytes, the time to read and decode every sample, and the wall time of a short
``InpainterModule`` fit (preset xs, the pool config's data settings, no validation) reading them.

    python eval/cache_coding.py [--steps 0,0.02,0.05] [--train-steps 40]

Writes eval/results/cache_coding.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from latok.codec.quantise import channel_steps, dequantise, quantise
from latok.training.data import LatentDataModule, read_samples, write_shard
from latok.training.module import InpainterModule
from latok.vae import vae_class

from harness import write_results



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", default="data/latents/pool/val")
    parser.add_argument("--work", default="data/cache_coding")
    parser.add_argument("--steps", default="0,0.02,0.05")
    parser.add_argument("--train-steps", type=int, default=40)
    args = parser.parse_args()
    samples = read_samples(args.shards)
    sensitivity = vae_class("taef2").value_sensitivity
    rows = []
    for step in (float(s) for s in args.steps.split(",")):
        folder = Path(args.work) / f"step{step:g}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        steps = channel_steps(step, sensitivity, 32)
        error = 0.0
        for sample in samples:
            latent = torch.from_numpy(sample["latent.npy"].astype(np.float32))
            write_shard(folder / f"{sample['__key__']}.tar", sample["__key__"], latent, sample["json"], value_steps=steps)
            if steps is not None:
                flat = latent.permute(1, 2, 3, 0).reshape(-1, 32)
                error = max(error, float((dequantise(quantise(flat, steps), steps) - flat).abs().max()))
        size = sum(p.stat().st_size for p in folder.glob("*.tar"))
        start = time.perf_counter()
        read_samples(folder)
        read_seconds = time.perf_counter() - start
        data = LatentDataModule(train_dir=str(folder), val_dir=None, crop=(17, 16, 16), batch_size=8, num_workers=0,
                                crops_per_clip=8, motion_fraction=0.5)  # fmt: skip
        trainer = L.Trainer(max_steps=args.train_steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            limit_val_batches=0, accelerator="cpu", devices=1)  # fmt: skip
        L.seed_everything(0)
        start = time.perf_counter()
        trainer.fit(InpainterModule(preset="xs", latent_channels=32, val_backend="taef2"), datamodule=data)
        fit_seconds = time.perf_counter() - start
        rows.append({"step": step, "shards": len(samples), "bytes": size, "max_abs_error": error,
                     "read_decode_s_per_sample": read_seconds / len(samples), "fit_s_per_step": fit_seconds / args.train_steps})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["bytes"] if rows[0]["step"] == 0 else None
    command = "python eval/cache_coding.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items())
    device = f"cpu, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    lines = [f"# Training caches with coded latents\n\n`{command}`; {device}; {len(samples)} pool-val clips, 17 latent frames of 30x54x32.\n",
             "| value step | shard bytes | smaller than fp16 | max abs error | read+decode per clip | fit time per step (xs, batch 8) |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        ratio = f"{base / r['bytes']:.2f}×" if base else "–"
        lines.append(f"| {r['step']:g}{' (fp16 npy)' if r['step'] == 0 else ''} | {r['bytes']:,} | {ratio} | {r['max_abs_error']:.4f} | "
                     f"{r['read_decode_s_per_sample'] * 1000:.0f} ms | {r['fit_s_per_step']:.3f} s |")  # fmt: skip
    write_results("cache_coding", {"command": command, "device": device, "rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
