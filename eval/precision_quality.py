"""Does bf16 keep the quality of fp32?  The gate for ``--precision auto`` as the default.

Every shared DAVIS sequence and every tokenbench-mini clip (reporting sets: nothing is tuned here), 17 frames
at 240p, latok's default settings.  Each clip is encoded by the autoencoder in fp32 and in bf16, and each file
is decoded in both precisions (the default fill), so the four pairs give:

- the quality of each precision end to end (encoded and decoded in it), PSNR/SSIM against the source;
- the cost of crossing: a file encoded in one precision, decoded in the other.

The gate (``--precision auto`` may be the default): the mean PSNR of bf16 within 0.05 dB of fp32's, and no
clip losing more than 0.1 dB.  Rows are saved as they come (``eval/results/precision_quality.partial.json``),
so a killed run resumes.

    python eval/precision_quality.py     # -> eval/results/precision_quality.{json,md}
"""

from __future__ import annotations

import json
import os
import statistics

import torch

from latok import LatentTokenizer
from latok.evaluation.metrics import psnr, ssim
from latok.vae.precision import cpu_has_bf16

from harness import RESULTS, clip_set, write_results

PRECISIONS = ("fp32", "bf16")
PAIRS = [(e, d) for e in PRECISIONS for d in PRECISIONS]  # (encoded in, decoded in)


def measure(clip, tokenizers: dict) -> dict:
    source = clip.load()
    row = {"clip": clip.name}
    files = {p: tokenizers[p].encode(source) for p in PRECISIONS}
    for precision, adaptive in files.items():
        row[f"usage_{precision}"] = adaptive.token_usage
    for encoded, decoded in PAIRS:
        video = tokenizers[decoded].decode(files[encoded])
        row[f"psnr_{encoded}_{decoded}"] = psnr(video, source.video)
        row[f"ssim_{encoded}_{decoded}"] = ssim(video, source.video)
    return row


def main() -> None:
    if not cpu_has_bf16():
        raise SystemExit("this CPU has no native bf16 (AVX512-BF16 or AMX): nothing to compare")
    os.environ.setdefault("LATOK_WEIGHTS_DIR", str(RESULTS.parents[2] / "shared" / "weights"))
    torch.manual_seed(0)
    tokenizers = {p: LatentTokenizer("taef2", precision=p) for p in PRECISIONS}
    for tokenizer in tokenizers.values():
        tokenizer.vae.progress = False
    partial = RESULTS / "precision_quality.partial.json"
    rows = json.loads(partial.read_text()) if partial.exists() else []
    done = {r["clip"] for r in rows}
    for clip in clip_set("davis") + clip_set("tokenbench"):
        if clip.name in done:
            continue
        rows.append(measure(clip, tokenizers))
        partial.write_text(json.dumps(rows, indent=1))
        print(json.dumps(rows[-1]), flush=True)
    result = summarise(rows)
    write_results("precision_quality", result, markdown(result))
    partial.unlink()


def summarise(rows: list[dict]) -> dict:
    sets = {"davis": [r for r in rows if r["clip"].startswith("davis/")],
            "tokenbench-mini": [r for r in rows if not r["clip"].startswith("davis/")], "all": rows}  # fmt: skip
    summary = {}
    for name, chosen in sets.items():
        loss = [r["psnr_fp32_fp32"] - r["psnr_bf16_bf16"] for r in chosen]
        summary[name] = {
            "clips": len(chosen),
            **{f"psnr_{e}_{d}": statistics.mean(r[f"psnr_{e}_{d}"] for r in chosen) for e, d in PAIRS},
            **{f"ssim_{e}_{d}": statistics.mean(r[f"ssim_{e}_{d}"] for r in chosen) for e, d in PAIRS},
            **{f"usage_{p}": statistics.mean(r[f"usage_{p}"] for r in chosen) for p in PRECISIONS},
            "mean_loss_db": statistics.mean(loss), "largest_loss_db": max(loss),
        }  # fmt: skip
    gate = summary["all"]["mean_loss_db"] <= 0.05 and summary["all"]["largest_loss_db"] <= 0.1
    return {"command": "python eval/precision_quality.py", "machine": f"{os.cpu_count()} cores, {torch.__version__}",
            "protocol": "17 frames at 240p, default settings (block motion, guarded lit, value step 0.13)",
            "sets": summary, "gate_met": gate, "rows": rows}  # fmt: skip


def markdown(result: dict) -> str:
    lines = [
        "# bf16 against fp32: quality", "",
        f"`{result['command']}` ({result['machine']}); {result['protocol']}. PSNR/SSIM against the source; "
        "\"A→B\": encoded in A, decoded in B. Loss = fp32→fp32 PSNR minus bf16→bf16 PSNR.", "",
        "| set | clips | fp32→fp32 | bf16→bf16 | fp32→bf16 | bf16→fp32 | SSIM fp32 / bf16 | usage fp32 / bf16 | mean loss | largest loss |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for name, s in result["sets"].items():
        lines.append(
            f"| {name} | {s['clips']} | {s['psnr_fp32_fp32']:.3f} | {s['psnr_bf16_bf16']:.3f} | {s['psnr_fp32_bf16']:.3f} | "
            f"{s['psnr_bf16_fp32']:.3f} | {s['ssim_fp32_fp32']:.4f} / {s['ssim_bf16_bf16']:.4f} | "
            f"{s['usage_fp32']:.3f} / {s['usage_bf16']:.3f} | {s['mean_loss_db']:+.3f} dB | {s['largest_loss_db']:+.3f} dB |"
        )  # fmt: skip
    verdict = "met" if result["gate_met"] else "**not met**"
    lines += ["", f"Gate for `auto` as the default (mean loss ≤ 0.05 dB, no clip > 0.1 dB): {verdict}.", "",
              "| clip | fp32→fp32 | bf16→bf16 | loss | fp32→bf16 | bf16→fp32 | usage fp32 / bf16 |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in result["rows"]:
        lines.append(
            f"| {r['clip']} | {r['psnr_fp32_fp32']:.3f} | {r['psnr_bf16_bf16']:.3f} | {r['psnr_fp32_fp32'] - r['psnr_bf16_bf16']:+.3f} | "
            f"{r['psnr_fp32_bf16']:.3f} | {r['psnr_bf16_fp32']:.3f} | {r['usage_fp32']:.3f} / {r['usage_bf16']:.3f} |"
        )  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
