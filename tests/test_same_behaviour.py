"""``.latok`` bytes and decoded frames are pinned by digest, so no change of behaviour goes unnoticed.

Three shared clips (a static camera, a robot, a DAVIS sequence), 3 frames at 128p, encoded at
the default tau and at usage 0.5 (default lit guard); each file is decoded with every fill. The
digests were recorded before the move with::

    python tests/test_same_behaviour.py --record   # recorded at commit 79f52da, before the move (latok/codec.py)

and re-recorded when issue 19 changed the defaults on purpose (``--motion block``, the inpainter trained
on the training pool), and when issue 20 made quantised, entropy-coded values the default
(``--value-step 0.13``, format version 3); a change of these digests must be such a deliberate one,
said in its commit.

Float results depend on the CPU kernels and the thread count (``eval/results/thread_determinism.json``),
so the test compares only on a machine whose torch build, CPU capability and thread count match
the recording, and skips elsewhere, saying why.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RECORD = Path(__file__).with_name("same_behaviour_digests.json")
CLIPS = {
    "static": DATA / "clips" / "surveillance_vtest.avi",
    "robot": DATA / "tokenbench-mini" / "robot_bridge_sweep.mp4",
    "davis": DATA / "davis" / "JPEGImages" / "480p" / "blackswan",
}
RATES = {"default-tau": {}, "usage-0.5": {"target_usage": 0.5}}
FILLS = ("zero", "hold", "interp", "lit", "auto")


def machine() -> dict:
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def compute() -> dict:
    from latok import LatentTokenizer, load_clip

    digests = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in CLIPS.items():
            clip = load_clip(path, frames=3, height=128)
            for rate, options in RATES.items():
                tokenizer = LatentTokenizer("taef2", **options)
                tokenizer.vae.progress = False
                file = Path(tmp) / f"{name}-{rate}.latok"
                tokenizer.save(tokenizer.encode(clip), file)
                entry = {"latok": digest(file.read_bytes())}
                adaptive = tokenizer.load(file)
                for fill in FILLS:
                    video = tokenizer.decode(adaptive, fill=fill)
                    entry[fill] = digest(video.contiguous().numpy().tobytes())
                digests[f"{name}/{rate}"] = entry
    return digests


@pytest.mark.skipif(not all(p.exists() for p in CLIPS.values()), reason="shared clips not found")
def test_latok_bytes_and_decoded_frames_are_unchanged():
    recorded = json.loads(RECORD.read_text())
    if recorded["machine"] != machine():
        pytest.skip(f"digests were recorded on {recorded['machine']}; this machine is {machine()}")
    assert compute() == recorded["digests"]


if __name__ == "__main__" and sys.argv[1:] == ["--record"]:
    RECORD.write_text(json.dumps({"machine": machine(), "digests": compute()}, indent=2) + "\n")
    print(RECORD.read_text())
