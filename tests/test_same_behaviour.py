"""``.latok`` bytes and decoded frames are pinned, so no change of behaviour goes unnoticed.

Three shared clips (a static camera, a robot, a DAVIS sequence), 3 frames at 128p, encoded at
the default tau and at usage 0.5 (default lit guard), by the autoencoder in fp32 and in bf16 (where the CPU
computes bf16 natively); each file is decoded with every fill, in the precision it was encoded in.
Recorded with::

    python tests/test_same_behaviour.py --record

A change of what is recorded must be a deliberate one, said in its commit (the history: recorded
before the codec's move into modules, re-recorded when ``--motion block``, the pool-trained inpainter
and quantised values became the defaults, when the header began checking channel counts, and when
it began recording the autoencoder's precision, with bf16 files added, and when the rule began measuring change in
the decoder's metric, when the lit guard's margin was chosen again on the pool validation split, when the quality target began checking
its prediction on decoded frames, and when the lit guard became weights per 4x4 positions, with the quality map refitted).

What is compared, and how exactly:

- On a machine whose kernel set has a record (torch build, CPU capability, CPU flags and model,
  thread count): every ``.latok`` byte and every decoded frame, by digest, exactly.
- Elsewhere, what ``python eval/kernel_tolerance.py`` found portable across kernel sets
  (``eval/results/kernel_tolerance.json``): each file's header, keep mask and motion exactly, its tau
  within twice the largest relative difference measured (a ``--target-usage`` tau is a float quantile),
  and the decoded frames' 8x8 block means (``same_behaviour_frames.npz``) within twice the largest
  difference measured; bf16 files by their decoded frames only, within twice the largest difference between
  the bf16 and fp32 frames recorded here, three times over (bf16 kernels differ more between CPUs: ``BF16_FACTOR``).  Quantised values are not compared exactly: with another convolution algorithm
  a value a hair from a rounding boundary lands one step away, which the decoded frames show, within
  that tolerance.  Floats belong to a CPU's kernels: another machine computes slightly different ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RECORD = Path(__file__).with_name("same_behaviour_digests.json")
FRAMES = Path(__file__).with_name("same_behaviour_frames.npz")
TOLERANCE = ROOT / "eval" / "results" / "kernel_tolerance.json"
CLIPS = {
    "static": DATA / "clips" / "surveillance_vtest.avi",
    "robot": DATA / "tokenbench-mini" / "robot_bridge_sweep.mp4",
    "davis": DATA / "davis" / "JPEGImages" / "480p" / "blackswan",
}
RATES = {"default-tau": {}, "usage-0.5": {"target_usage": 0.5}}
PRECISIONS = ("fp32", "bf16")  # the autoencoder's (latok.vae.precision); bf16 where this CPU computes it natively
FILLS = ("zero", "hold", "interp", "lit", "auto")
BLOCK = 8
# How far another CPU's bf16 frames may move from ours, in multiples of how far our bf16 frames lie from our fp32 ones.
# Measured on an AMD EPYC with AVX512-BF16 against the recording machine's: up to 2.08x (static/usage-0.5@bf16/zero,
# a zero fill at a quantile tau), every fp32 file identical in header, mask, motion and tau.
BF16_FACTOR = 3
if os.environ.get("LATOK_KERNELS") == "no-mkldnn":  # ATen's own convolutions: how another CPU's kernel choice is emulated here
    torch.backends.mkldnn.enabled = False


def kernel_set() -> dict:
    """What decides which float kernels run: the torch build, its dispatch, the CPU (flags, model) and the threads."""
    cpu = {}
    if Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "model name") and key.strip() not in cpu:
                cpu[key.strip()] = value.strip()
    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu": hashlib.sha256(json.dumps(cpu, sort_keys=True).encode()).hexdigest()[:16],
        "threads": torch.get_num_threads(),
        "onednn": torch.backends.mkldnn.enabled,
    }


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def block_means(video: torch.Tensor) -> np.ndarray:
    """``(1, 3, T, H, W)`` -> its ``BLOCK x BLOCK`` means, float32."""
    return torch.nn.functional.avg_pool3d(video.float(), (1, BLOCK, BLOCK), ceil_mode=True).numpy()


def compute() -> dict[str, np.ndarray]:
    """Every ``.latok`` file's bytes (``NAME/latok``) and decoded video (``NAME/FILL``), for every clip and rate."""
    from latok import LatentTokenizer, load_clip
    from latok.vae.precision import cpu_has_bf16

    outputs = {}
    precisions = PRECISIONS if cpu_has_bf16() else ("fp32",)
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in CLIPS.items():
            clip = load_clip(path, frames=3, height=128)
            for (rate, options), precision in ((r, p) for r in RATES.items() for p in precisions):
                rate = f"{rate}@{precision}"
                tokenizer = LatentTokenizer("taef2", precision=precision, **options)
                tokenizer.vae.progress = False
                file = Path(tmp) / f"{name}-{rate}.latok"
                tokenizer.save(tokenizer.encode(clip), file)
                outputs[f"{name}/{rate}/latok"] = np.frombuffer(file.read_bytes(), dtype=np.uint8)
                adaptive = tokenizer.load(file)
                for fill in FILLS:
                    outputs[f"{name}/{rate}/{fill}"] = tokenizer.decode(adaptive, fill=fill).contiguous().numpy()
    return outputs


def digests(outputs: dict[str, np.ndarray]) -> dict[str, dict[str, str]]:
    table: dict[str, dict[str, str]] = {}
    for key, array in outputs.items():
        clip, rate, what = key.split("/")
        table.setdefault(f"{clip}/{rate}", {})[what] = digest(array.tobytes())
    return table


def contents(data: np.ndarray) -> dict:
    """A ``.latok`` file's contents as a machine-independent record: its header without tau, tau, and digests of
    its keep mask, values and motion.  Another kernel set reproduces all of it exactly except tau: a
    ``--target-usage`` tau is a float quantile, whose last digits follow the encoder's sums."""
    from latok.codec.format.reader import LatokReader, load_latok

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.latok"
        path.write_bytes(data.tobytes())
        with LatokReader(path) as reader:
            header = dict(reader.header)
        adaptive = load_latok(path)
    tau = header.pop("tau")
    motion = b"" if adaptive.motion is None else adaptive.motion.numpy().tobytes()
    return {"header": json.dumps(header, sort_keys=True), "tau": tau, "keep": digest(adaptive.keep.numpy().tobytes()),
            "values": digest(adaptive.values.numpy().tobytes()), "motion": digest(motion)}  # fmt: skip


@pytest.mark.skipif(not all(p.exists() for p in CLIPS.values()), reason="shared clips not found")
def test_latok_bytes_and_decoded_frames_are_unchanged():
    recorded = json.loads(RECORD.read_text())
    outputs = compute()
    found = digests(outputs)
    same_kernels = [r["digests"] for r in recorded["records"] if r["kernel_set"] == kernel_set()]
    if same_kernels:  # the kernel set that recorded them: every byte and every decoded frame, exactly
        assert found == same_kernels[0]
        return
    measured = json.loads(TOLERANCE.read_text())
    for clip, entry in recorded["files"].items():
        if clip.endswith("@bf16"):
            continue  # bf16 kernels differ more between CPUs: only their decoded frames are compared, below
        now = contents(outputs[f"{clip}/latok"])
        assert (now["header"], now["keep"], now["motion"]) == (entry["header"], entry["keep"], entry["motion"]), clip
        assert abs(now["tau"] - entry["tau"]) <= 2 * measured["largest_tau_relative_difference"] * entry["tau"], clip
    tolerance = 2 * measured["largest_block_mean_difference"]  # a quantised value one step off shows here, within it
    reference = np.load(FRAMES)
    for key, video in outputs.items():
        if key.endswith("/latok"):
            continue
        allowed = tolerance
        if "@bf16/" in key:  # another CPU's bf16 moves no further from ours than bf16 moves from fp32 here, BF16_FACTOR times over
            allowed = max(tolerance, BF16_FACTOR * float(np.abs(reference[key] - reference[key.replace("@bf16/", "@fp32/")]).max()))
        difference = float(np.abs(block_means(torch.from_numpy(video)) - reference[key]).max())
        assert difference <= allowed, f"{key}: decoded 8x8 block means moved by {difference:.2e}, over {allowed:.2e}"


def _record() -> None:
    outputs = compute()
    found = digests(outputs)
    files = {key.removesuffix("/latok"): contents(array) for key, array in outputs.items() if key.endswith("/latok")}
    recorded = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    records = [r for r in recorded.get("records", []) if r["kernel_set"] != kernel_set()]
    if recorded.get("files") != files:
        records = []  # the behaviour changed on purpose: other kernel sets' digests no longer apply
    records.append({"kernel_set": kernel_set(), "digests": found})
    RECORD.write_text(json.dumps({"files": files, "records": records}, indent=2) + "\n")
    np.savez_compressed(FRAMES, **{key: block_means(torch.from_numpy(v)) for key, v in outputs.items() if not key.endswith("/latok")})
    print(RECORD.read_text())


def _dump(path: str) -> None:
    """Every output, and the block means of the decoded ones, into one .npz (``eval/kernel_tolerance.py`` compares them).
    With ``LATOK_KERNELS=no-mkldnn`` it runs ATen's own convolutions instead of oneDNN's: another algorithm, as another CPU may pick."""
    outputs = compute()
    blocks = {f"{key}/blocks": block_means(torch.from_numpy(v)) for key, v in outputs.items() if not key.endswith("/latok")}
    np.savez(path, **outputs, **blocks)


if __name__ == "__main__" and sys.argv[1:2] == ["--record"]:
    _record()
elif __name__ == "__main__" and sys.argv[1:2] == ["--dump"]:
    _dump(sys.argv[2])
