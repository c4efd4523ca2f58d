"""Value-coding ideas measured on the pool validation split and not used.

At the default step (0.13, sensitivity-scaled) and the default tau with block motion, on every third
pool-val clip:

- ``staleness``: the real coder's value bytes with temporal contexts split by frames since the position
  was last kept (1 | 1, 2 | 1, 2, 3-4, 5+), tables included;
- ``cross_channel``: the empirical entropy of the residuals with a context from the mean |residual| of the
  channels already coded at the same position (before any table cost);
- ``motion``: the empirical entropy of the temporal residuals against the last kept code in place, against
  a nearest-integer motion-compensated grid, and against a quarter-pel bilinear one;
- ``dead_zone``: rate (empirical entropy per frame) and decoder-metric distortion of residual rounding with
  offsets 0.5 (plain), 0.42, 0.35, against plain rounding at coarser steps.

    python eval/value_coding_probes.py

Writes eval/results/value_coding_probes.{json,md}.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

import latok.codec.format.coders.values as values
from latok.codec.rule.masking import redundancy_mask
from latok.codec.rule.motion import estimate_motion, warp
from latok.training.data import read_samples
from latok.vae import vae_class

RESULTS = Path("eval/results")
STEP = 0.13


def entropy_bits(x: np.ndarray) -> float:
    """Total bits of ``x`` under its own empirical distribution."""
    if not len(x):
        return 0.0
    _, counts = np.unique(x, return_counts=True)
    return float(-(counts * np.log2(counts / counts.sum())).sum())


def main() -> None:
    sensitivity = np.array(vae_class("taef2").value_sensitivity)
    steps = values.channel_steps(STEP, sensitivity, 32)
    out = {"staleness": {}, "cross_channel": {}, "motion": {}, "dead_zone": {}}
    samples = read_samples("data/latents/pool/val")[::3]
    for sample in samples:
        latent = torch.from_numpy(sample["latent.npy"].astype(np.float32))[None]
        motion = estimate_motion(latent, model="block")
        keep = redundancy_mask(latent, 0.15, motion=motion).keep
        codes = values.quantise(latent.permute(0, 2, 3, 4, 1)[keep], steps)
        saved = values.STALENESS
        for split in ((1,), (1, 2), (1, 2, 3, 5)):  # the real coder, tables included
            values.STALENESS, values.STREAMS = split, 1 + len(split)
            payload = values.ValueCoder(32, *keep.shape[2:]).encode(keep, codes)
            out["staleness"][str(split)] = out["staleness"].get(str(split), 0) + len(payload)
        values.STALENESS, values.STREAMS = saved, 1 + len(saved)
        _, streams = values.ValueCoder(32, *keep.shape[2:]).residual_streams(keep[0].numpy(), codes.numpy().astype(np.int64))
        for name, residuals in zip(("intra", "temporal"), streams):
            plain = sum(entropy_bits(residuals[:, c]) for c in range(32))
            running, conditioned = np.zeros(len(residuals)), 0.0
            for c in range(32):
                context = np.searchsorted([0.5, 1, 1.5, 2, 3, 4, 6, 10], running / max(c, 1), side="right") if c else np.zeros(len(residuals), int)
                conditioned += sum(entropy_bits(residuals[context == k, c]) for k in np.unique(context))
                running += np.abs(residuals[:, c])
            entry = out["cross_channel"].setdefault(name, [0.0, 0.0, 0])
            entry[0] += plain
            entry[1] += conditioned
            entry[2] += residuals.size
        q = torch.round(latent[0].double() / torch.tensor(steps).double().view(-1, 1, 1, 1))
        grids = {"in place": q[:, 0].clone(), "nearest": q[:, 0].clone(), "bilinear": q[:, 0].clone()}
        bits = {name: 0.0 for name in grids}
        count = 0
        for t in range(1, q.shape[1]):
            k = keep[0, t]
            predictions = {"in place": grids["in place"],
                           "nearest": torch.round(warp(grids["nearest"][None].float(), torch.round(motion[:, t]), mode="nearest")[0].double()),
                           "bilinear": torch.round(warp(grids["bilinear"][None].float(), motion[:, t], mode="bilinear")[0].double())}  # fmt: skip
            for name, prediction in predictions.items():
                residual = (q[:, t] - prediction)[:, k].numpy()
                bits[name] += sum(entropy_bits(residual[c]) for c in range(32))
                updated = prediction.clone()
                updated[:, k] = q[:, t][:, k]
                grids[name] = updated
            count += int(k.sum()) * 32
        for name in bits:
            entry = out["motion"].setdefault(name, [0.0, 0])
            entry[0] += bits[name]
            entry[1] += count
        metric = np.square(sensitivity)  # the decoder metric's diagonal, up to scale
        x = latent[0].numpy().astype(np.float64)
        for step, offset in ((STEP, 0.5), (STEP, 0.42), (STEP, 0.35), (STEP * 1.2, 0.5), (STEP * 1.5, 0.5)):
            scale = np.array(values.channel_steps(step, sensitivity, 32))[:, None, None]
            grid, rate, distortion, n = np.round(x[:, 0] / scale), 0.0, 0.0, 0
            rate += sum(entropy_bits(np.diff(grid.reshape(32, -1), axis=1, prepend=0)[c]) for c in range(32))
            for t in range(1, x.shape[1]):
                k = keep[0, t].numpy()
                delta = x[:, t][:, k] / scale[:, :, 0] - grid[:, k]
                residual = np.sign(delta) * np.floor(np.abs(delta) + offset)
                rate += sum(entropy_bits(residual[c]) for c in range(32))
                grid[:, k] += residual
                error = grid[:, k] * scale[:, :, 0] - x[:, t][:, k]
                distortion += float((metric[:, None] * error**2).sum())
                n += int(k.sum()) * 32
            entry = out["dead_zone"].setdefault(f"step {step:.3f}, offset {offset}", [0.0, 0.0, 0])
            entry[0] += rate
            entry[1] += distortion
            entry[2] += n
        print(sample["__key__"], flush=True)
    write(out, [s["__key__"] for s in samples])


def write(out: dict, clips: list[str]) -> None:
    base = out["staleness"]["(1,)"]
    lines = [f"# Value-coding ideas not used\n\n`python eval/value_coding_probes.py`; step {STEP}, default tau, block motion; "
             f"{len(clips)} pool-val clips ({', '.join(clips)}).\n",
             "| idea | measure | result |", "|---|---|---|"]  # fmt: skip
    for split, size in out["staleness"].items():
        lines.append(f"| staleness contexts {split} | value bytes, tables included | {size:,} ({size / base - 1:+.2%}) |")
    for name, (plain, conditioned, n) in out["cross_channel"].items():
        lines.append(f"| cross-channel contexts ({name}) | bits per value before tables | {plain / n:.3f} → {conditioned / n:.3f} ({conditioned / plain - 1:+.1%}) |")
    for name, (bits, n) in out["motion"].items():
        lines.append(f"| temporal prediction: {name} | bits per value | {bits / n:.3f} |")
    for name, (rate, distortion, n) in out["dead_zone"].items():
        lines.append(f"| dead zone: {name} | bits per value (frame 0 included) / metric distortion per temporal value | {rate / n:.3f} / {distortion / n:.3e} |")
    (RESULTS / "value_coding_probes.json").write_text(json.dumps({"command": "python eval/value_coding_probes.py", "clips": clips, **out}, indent=1) + "\n")
    (RESULTS / "value_coding_probes.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
