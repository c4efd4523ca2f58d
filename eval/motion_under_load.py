"""Does block motion keep its speed on a busy machine?  Its estimate and the mask against the taef2 encode, idle and
beside two CPU-burning processes, with one and two threads.

Four shared DAVIS sequences (timing only), 17 frames at 240p, latents encoded once (taef2, default precision).
Per condition and thread count: ``estimate_motion(latent, "block")`` summed over the clips (median of
``--repeats``), and the taef2 encode of the same clips with two threads.  Per condition, with two threads: one
pass of the motion-compensated rule at the stream's fixed tau (``redundancy_mask``), and the default rate's
tau search (the quality target's bisection, ``LatentTokenizer.resolve_tau``), which runs the rule and the
hold fill many times.  ``--label`` names the code measured,
so the same script can time an older checkout (``PYTHONPATH=OLD_CHECKOUT python eval/motion_under_load.py
--label before``); each label's rows are kept in the results.

    python eval/motion_under_load.py --label after   # -> eval/results/motion_under_load.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from latok.codec.rule.masking import redundancy_mask
from latok.codec.rule.motion import estimate_motion
from latok.codec.restore.quality import QUALITY_CHECK_FRAMES
from latok.codec.tokenizer import LatentTokenizer, source_info

from harness import RESULTS, davis_clip, write_results
from precision_speed import burners

CLIPS = ("blackswan", "car-roundabout", "paragliding-launch", "soapbox")


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def measure(repeats: int) -> list[dict]:
    tokenizer = LatentTokenizer("taef2")  # the default rate: the quality target
    vae = tokenizer.vae
    videos = [davis_clip(name).load().video for name in CLIPS]
    latents = [vae.encode(video) for video in videos]
    motions = [estimate_motion(z, "block") for z in latents]
    tau = vae.default_taus["block"]
    checking = {count: LatentTokenizer(vae, quality_check_frames=count) for count in (0, QUALITY_CHECK_FRAMES)}
    rows = []
    for condition, count in (("idle", 0), ("beside two CPU burners", 2)):
        with burners(count):
            torch.set_num_threads(2)
            encode = statistics.median(sum(timed(lambda v=v: vae.encode(v)) for v in videos) for _ in range(repeats))
            for threads in (1, 2):
                torch.set_num_threads(threads)
                motion = statistics.median(sum(timed(lambda z=z: estimate_motion(z, "block")) for z in latents) for _ in range(repeats))
                rows.append({"condition": condition, "threads": threads, "motion_seconds": motion, "encode_seconds": encode,
                             "motion_share_of_encode": motion / encode})  # fmt: skip
            torch.set_num_threads(2)
            mask = statistics.median(sum(timed(lambda z=z, m=m: redundancy_mask(z, tau, motion=m)) for z, m in zip(latents, motions)) for _ in range(repeats))
            search = statistics.median(sum(timed(lambda z=z, m=m: tokenizer.resolve_tau(z, motion=m)) for z, m in zip(latents, motions)) for _ in range(repeats))
            tokenize = {count: statistics.median(sum(timed(lambda z=z, v=v, t=t: t.tokenize(z, source_info(v)[1], video=v)) for z, v in zip(latents, videos))
                                                 for _ in range(repeats)) for count, t in checking.items()}  # fmt: skip
            for row in rows[-2:]:
                row.update(mask_seconds=mask, estimate_and_mask_share_of_encode=(row["motion_seconds"] + mask) / encode,
                           rate_search_seconds=search, rate_search_share_of_encode=search / encode,
                           tokenize_unchecked_seconds=tokenize[0], tokenize_checked_seconds=tokenize[QUALITY_CHECK_FRAMES],
                           quality_check_share_of_encode=(tokenize[QUALITY_CHECK_FRAMES] - tokenize[0]) / encode)  # fmt: skip
    torch.set_num_threads(2)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True, help="names the code measured (e.g. before, after)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    path = RESULTS / "motion_under_load.json"
    result = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    result.update(command="python eval/motion_under_load.py --label LABEL", machine=f"{os.cpu_count()} cores, torch {torch.__version__}",
                  clips=f"DAVIS {', '.join(CLIPS)}: 17 frames at 240p, latents encoded once")  # fmt: skip
    result["runs"][args.label] = {"rows": measure(args.repeats)}
    lines = ["# Block motion on a busy machine", "", f"`{result['command']}` on {result['machine']}; {result['clips']}; "
             "seconds summed over the clips, median of 3; the encode always with 2 threads. mask: one pass of the rule with the motion "
             "at the stream's tau; rate search: the default quality target's tau bisection (rule + hold fill per step), 2 threads; "
             f"tokenize: all of the default tokenize after the encode (motion, rate search, mask, lit guard) without and with the "
             f"quality target's check on {QUALITY_CHECK_FRAMES} decoded frames, and the check's cost (the difference) over the encode.", "",
             "| code | condition | threads | block motion s | mask s | taef2 encode s | motion / encode | (motion + mask) / encode | rate search s (/ encode) | tokenize s: unchecked / checked (check / encode) |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for label, run in result["runs"].items():
        for r in run["rows"]:
            mask = f"{r['mask_seconds']:.2f}" if "mask_seconds" in r else "–"
            share = f"{r['estimate_and_mask_share_of_encode']:.1%}" if "mask_seconds" in r else "–"
            search = f"{r['rate_search_seconds']:.2f} ({r['rate_search_share_of_encode']:.0%})" if "rate_search_seconds" in r else "–"
            check = (f"{r['tokenize_unchecked_seconds']:.2f} / {r['tokenize_checked_seconds']:.2f} ({r['quality_check_share_of_encode']:.0%})"
                     if "tokenize_checked_seconds" in r else "–")  # fmt: skip
            lines.append(f"| {label} | {r['condition']} | {r['threads']} | {r['motion_seconds']:.2f} | {mask} | {r['encode_seconds']:.2f} | "
                         f"{r['motion_share_of_encode']:.1%} | {share} | {search} | {check} |")  # fmt: skip
    write_results("motion_under_load", result, "\n".join(lines))


if __name__ == "__main__":
    main()
