"""Per-channel decoder sensitivity of a backend, for quantisation steps (``VideoAutoencoder.value_sensitivity``).

The decoder metric G (:meth:`latok.vae.base.VideoAutoencoder.decoder_metric`) is measured on the first
frames of the pool validation split (never on DAVIS or tokenbench-mini), averaged over clips; each
channel's sensitivity is ``sqrt(G[c, c])``, scaled to geometric mean 1.  A uniform quantisation error of
step ``s_c`` on channel ``c`` then costs about ``G[c, c] s_c^2 / 12`` of decoded squared error, the
same on every channel when ``s_c = S / sensitivity_c``.

    python eval/decoder_sensitivity.py [--shards data/latents/pool/val] [--clips 6] [--frames 3]

Writes eval/results/decoder_sensitivity_<backend>.json; the numbers go into the backend class.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from latok.training.data import read_samples
from latok.vae import load_vae


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", default="data/latents/pool/val")
    parser.add_argument("--backend", default="taef2")
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--frames", type=int, default=3)
    args = parser.parse_args()
    vae = load_vae(args.backend, precision="fp32")  # finite differences need fp32
    samples = read_samples(args.shards)
    chosen = samples[:: max(1, len(samples) // args.clips)][: args.clips]
    metric = None
    for sample in chosen:
        latent = torch.from_numpy(sample["latent.npy"][:, : args.frames].astype("float32"))[None]
        g = vae.decoder_metric(latent).double()
        metric = g if metric is None else metric + g
        print(sample["__key__"], flush=True)
    diagonal = (metric / len(chosen)).diagonal()
    sensitivity = diagonal.sqrt()
    sensitivity = sensitivity / sensitivity.log().mean().exp()
    out = Path("eval/results") / f"decoder_sensitivity_{args.backend}.json"
    out.write_text(json.dumps({
        "command": "python eval/decoder_sensitivity.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
        "clips": [s["__key__"] for s in chosen],
        "sensitivity": [round(float(v), 4) for v in sensitivity],
    }, indent=2) + "\n")  # fmt: skip
    print(out, [round(float(v), 3) for v in sensitivity])


if __name__ == "__main__":
    main()
