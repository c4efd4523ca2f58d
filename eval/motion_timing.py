"""What motion costs against the taef2 encode and decode, timed in one run.

Per clip (DAVIS, 240p, 17 frames from frame 0; timing only, nothing is chosen here), best of
``--repeats``: the taef2 encode; the encoder's motion work (estimate + motion-compensated mask, minus
the plain mask it replaces) for global and block motion; the taef2 decode; and the decoder's motion work
(motion-compensated hold minus plain hold, and the inpainter with motion minus without: its inputs
warp).  Shares are summed over clips.

Usage:
    python eval/motion_timing.py [--clips blackswan,...] [--repeats 3]
writes eval/results/motion_timing.{json,md}
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from latok.codec.restore.fills import hold_fill, motion_hold_fill
from latok.codec.restore.inpainter import InpaintingTransformer
from latok.codec.restore.resolve import default_inpainter_path
from latok.codec.rule.masking import redundancy_mask
from latok.codec.rule.motion import estimate_motion
from latok.vae import load_vae

from harness import davis_clip, write_results

CLIPS = "blackswan,car-roundabout,paragliding-launch,soapbox"
TAU = 0.3


def best_of(repeats: int, function) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def clip_times(vae, model, name: str, repeats: int) -> dict:
    video = davis_clip(name).load().video
    size = video.shape[-3:]
    latent = vae.encode(video)
    row = {"clip": name, "encode_s": best_of(repeats, lambda: vae.encode(video)), "decode_s": best_of(repeats, lambda: vae.decode(latent, size=size))}
    plain_mask = best_of(repeats, lambda: redundancy_mask(latent, TAU))
    keep = redundancy_mask(latent, TAU).keep
    sparse = latent * keep.unsqueeze(1)
    plain_hold = best_of(repeats, lambda: hold_fill(sparse, keep))
    with torch.no_grad():
        plain_lit = best_of(repeats, lambda: model(sparse, keep, TAU))
    for kind in ("global", "block"):
        motion = estimate_motion(latent, model=kind)
        keep_m = redundancy_mask(latent, TAU, motion=motion).keep
        sparse_m = latent * keep_m.unsqueeze(1)
        encoder = best_of(repeats, lambda: redundancy_mask(latent, TAU, motion=estimate_motion(latent, model=kind)))  # noqa: B023
        hold = best_of(repeats, lambda: motion_hold_fill(sparse_m, keep_m, motion))  # noqa: B023
        with torch.no_grad():
            lit = best_of(repeats, lambda: model(sparse_m, keep_m, TAU, motion=motion))  # noqa: B023
        row[kind] = {"encoder_motion_s": encoder - plain_mask, "hold_warp_s": hold - plain_hold, "lit_warp_s": lit - plain_lit}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", default=CLIPS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--inpainter", default=None, help="inpainter checkpoint (default: the shipped one)")
    args = parser.parse_args()
    vae = load_vae("taef2")
    vae.progress = False
    model = InpaintingTransformer.from_pretrained(args.inpainter or default_inpainter_path("taef2")).eval()
    rows = [clip_times(vae, model, name, args.repeats) for name in args.clips.split(",")]
    encode, decode = sum(r["encode_s"] for r in rows), sum(r["decode_s"] for r in rows)
    shares = {
        kind: {
            "encoder_motion_share_of_encode": sum(r[kind]["encoder_motion_s"] for r in rows) / encode,
            "hold_warp_share_of_decode": sum(r[kind]["hold_warp_s"] for r in rows) / decode,
            "lit_warp_share_of_decode": sum(r[kind]["lit_warp_s"] for r in rows) / decode,
        }
        for kind in ("global", "block")
    }
    report = {
        "command": "python eval/motion_timing.py" + ("" if args.clips == CLIPS else f" --clips {args.clips}") + f" --repeats {args.repeats}",
        "device": f"cpu, {os.cpu_count()} cores, {torch.get_num_threads()} threads",
        "setting": f"taef2, DAVIS 240p, 17 frames, tau {TAU}; best of {args.repeats}",
        "rows": rows,
        "shares": shares,
    }
    lines = ["# What motion costs, timed in one run", "", f"`{report['command']}` on {report['device']}; {report['setting']}.", "",
             f"taef2 encode {encode:.2f} s and decode {decode:.2f} s for the {len(rows)} clips.", "",
             "| motion | estimate + MC mask − plain mask, share of encode | MC hold − hold, share of decode | inpainter with − without motion, share of decode |",
             "|---|---|---|---|"]  # fmt: skip
    for kind, share in shares.items():
        lines.append(f"| {kind} | {share['encoder_motion_share_of_encode']:.1%} | {share['hold_warp_share_of_decode']:.1%} | {share['lit_warp_share_of_decode']:.1%} |")
    write_results("motion_timing", report, "\n".join(lines))


if __name__ == "__main__":
    main()
