"""Token merging against a higher tau at the same token count.

Each clip is tokenized at the default tau (block motion, the default value step, the lit guard); then an
extra 25 % and 50 % of its kept tokens are removed either

- by merging (``latok.merge.bipartite_merge``, within a latent frame, ``window=1``, or across pairs of
  neighbouring frames, ``window=2``), then unmerging: every kept position gets its merged token's value,
  the keep mask and the lit guard stay, and the clip is restored with the default fill and decoded; or
- by raising tau: the clip is tokenized again at ``target_usage`` = the default usage x (1 - share), with
  its own lit guard, and decoded the same way.

Latents come from ``eval/prepare_report_data.sh`` shards (DAVIS, tokenbench-mini; 240p, 17 frames).

    python eval/merge_eval.py

Writes eval/results/merge_eval.{json,md}.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace

import torch

from latok import LatentTokenizer
from latok.codec.interop.merge import bipartite_merge
from latok.codec.interop.packing import pack
from latok.codec.tokens import SourceInfo
from latok.evaluation.metrics import psnr, ssim
from latok.training.data import read_samples
from latok.vae import load_vae

from harness import write_results

SETS = {"davis": "data/latents/report/davis", "tokenbench": "data/latents/report/tokenbench"}
SHARES = (0.25, 0.5)
WINDOWS = (1, 2)


def main() -> None:
    tokenizer = LatentTokenizer(load_vae("taef2"))
    rows = []
    for name, shards in SETS.items():
        for sample in read_samples(shards):
            latent = torch.from_numpy(sample["latent.npy"].astype("float32"))[None]
            video = torch.from_numpy(sample["video.npy"]).permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0
            source = SourceInfo(frames=video.shape[2], height=video.shape[3], width=video.shape[4])
            adaptive = tokenizer.tokenize(latent, source, video=video)
            base = tokenizer.decode(adaptive)
            row = {"set": name, "clip": sample["__key__"], "usage": adaptive.token_usage, "tokens": adaptive.num_tokens,
                   "base": {"psnr": psnr(base, video), "ssim": ssim(base, video)}}  # fmt: skip
            for share in SHARES:
                for window in WINDOWS:
                    merged = bipartite_merge(pack(adaptive), share, window=window)
                    restored = replace(adaptive, values=merged.unmerge(), value_step=None)
                    decoded = tokenizer.decode(restored)
                    row[f"merge{window} {share}"] = {"tokens": merged.tokens.values.shape[0], "psnr": psnr(decoded, video), "ssim": ssim(decoded, video)}
                fewer = tokenizer.tokenize(latent, source, target_usage=adaptive.token_usage * (1 - share), video=video)
                decoded = tokenizer.decode(fewer)
                row[f"tau {share}"] = {"tokens": fewer.num_tokens, "tau": fewer.tau, "psnr": psnr(decoded, video), "ssim": ssim(decoded, video)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    write(rows)


def write(rows: list[dict]) -> None:
    device = f"cpu, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    methods = [f"merge{w} {s}" for s in SHARES for w in WINDOWS] + [f"tau {s}" for s in SHARES]
    lines = [f"# Token merging against a higher tau\n\n`python eval/merge_eval.py`; {device}; taef2, 240p, 17 frames, default decode.\n",
             "| set | removed | method | tokens kept (share of default) | PSNR | SSIM | PSNR − higher τ |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name in dict.fromkeys(r["set"] for r in rows):
        mine = [r for r in rows if r["set"] == name]
        mean = lambda key, metric: sum(r[key][metric] for r in mine) / len(mine)  # noqa: E731
        lines.append(f"| {name} | 0 | default τ | 100 % | {mean('base', 'psnr'):.2f} | {mean('base', 'ssim'):.4f} | |")
        for method in methods:
            share = float(method.split()[1])
            kept = sum(r[method]["tokens"] for r in mine) / sum(r["tokens"] for r in mine)
            label = {"merge1": "merge within frames", "merge2": "merge across frame pairs", "tau": "higher τ"}[method.split()[0]]
            delta = mean(method, "psnr") - mean(f"tau {share}", "psnr")
            lines.append(f"| {name} | {share:.0%} | {label} | {kept:.1%} | {mean(method, 'psnr'):.2f} | {mean(method, 'ssim'):.4f} | "
                         f"{'' if method.startswith('tau') else f'{delta:+.2f} dB'} |")  # fmt: skip
    write_results("merge_eval", {"command": "python eval/merge_eval.py", "device": device, "rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
