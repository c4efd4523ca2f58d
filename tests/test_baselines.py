"""Allocators on tiny constructed inputs: latok's rule, ElasticTok search, InfoTok router, RLT, fixed."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import needs_weights

from latok.codec.format.coders.values import TABLE_HEAD, ValueCoder, position_bits
from latok.codec.quantise import quantise
from latok.codec.restore.fills import hold_fill
from latok.codec.rule.masking import redundancy_mask
from latok.codec.rule.motion import estimate_motion
from latok.errors import InvalidInputError
from latok.evaluation.baselines import AllocationContext, get_allocator
from latok.evaluation.baselines.base import top_fraction
from latok.evaluation.baselines.policies import smallest_passing

SCALE = 2  # toy "decoder": each latent cell covers 2x2 pixels


def toy_decode(latent: torch.Tensor, frames: slice) -> torch.Tensor:
    """Pixels = the first 3 latent channels, nearest-upsampled: a decoder whose error we know exactly."""
    return F.interpolate(latent[:, :3, frames.start : frames.stop], scale_factor=(1, SCALE, SCALE), mode="nearest")


def toy_context(latent: torch.Tensor, **options) -> AllocationContext:
    video = toy_decode(latent, slice(0, latent.shape[2]))
    return AllocationContext(video=video, latent=latent, decode=toy_decode, fill=hold_fill, **options)


def moving_square(frames: int = 8, size: int = 8, channels: int = 4) -> torch.Tensor:
    latent = torch.zeros(1, channels, frames, size, size)
    for t in range(frames):
        latent[:, :, t, 2:4, t % (size - 1) : t % (size - 1) + 2] = 1.0
    return latent


# -- binary search ---------------------------------------------------------------------------


def published_elastictok_search(low: int, high: int, passes) -> int:
    """ElasticTok's loop as published: on success the upper bound goes to mid - 1."""
    while low < high:
        middle = (low + high) // 2
        if passes(middle):
            high = middle - 1
        else:
            low = middle + 1
    return low


@pytest.mark.parametrize("low, high", [(0, 1), (0, 7), (3, 64), (0, 1000)])
def test_search_returns_exactly_the_smallest_passing_n(low, high):
    for answer in range(low, high + 1):
        n, evaluations = smallest_passing(low, high, lambda k: k >= answer)
        assert n == answer
        assert evaluations <= math.ceil(math.log2(high - low + 1))
    assert smallest_passing(low, high, lambda k: False)[0] == high  # nothing passes: keep everything


def test_the_published_loop_can_end_one_below_the_answer():
    misses = [a for a in range(1, 64) if published_elastictok_search(0, 63, lambda k, a=a: k >= a) == a - 1]
    assert misses  # e.g. answer 1 -> 0
    assert all(smallest_passing(0, 63, lambda k, a=a: k >= a)[0] == a for a in misses)


# -- allocators --------------------------------------------------------------------------------


def test_latok_allocator_is_the_temporal_l1_rule():
    latent = moving_square()
    allocation = get_allocator("latok", tau=0.1).allocate(toy_context(latent))
    assert torch.equal(allocation.keep, redundancy_mask(latent, 0.1).keep)
    assert (allocation.passes.encoder, allocation.passes.decoder, allocation.passes.inpainter) == (1, 1, 0)
    walk = torch.randn(1, 4, 8, 8, 8, generator=torch.Generator().manual_seed(0)).cumsum(dim=2)
    targeted = get_allocator("latok").allocate(toy_context(walk, target_usage=0.3))
    assert targeted.usage == pytest.approx(0.3, abs=0.03)


def test_elastictok_keeps_only_what_the_threshold_needs_and_counts_decodes():
    latent = moving_square()
    allocation = get_allocator("elastictok", block=4, mse_threshold=1e-6).allocate(toy_context(latent))
    exact = redundancy_mask(latent, 1e-3, "previous").keep  # the positions that change at all
    assert torch.equal(allocation.keep, exact)  # hold is exact elsewhere; one fewer would miss the threshold
    probes = allocation.info["probes"]
    assert probes >= 2 and allocation.passes.decoder == pytest.approx(1 + probes * 4 / 8)
    static = torch.ones(1, 4, 8, 8, 8)
    still = get_allocator("elastictok", block=4, mse_threshold=1e-6).allocate(toy_context(static))
    assert torch.equal(still.keep[:, 1:], torch.zeros_like(still.keep[:, 1:])) and still.keep[:, 0].all()
    with pytest.raises(InvalidInputError, match="per-frame backends"):
        get_allocator("elastictok").allocate(toy_context(latent, temporal_ratio=4))


def test_infotok_keeps_the_positions_that_cost_the_most_bits():
    walk = torch.randn(1, 4, 6, 6, 6, generator=torch.Generator().manual_seed(0)).mul(0.01).cumsum(dim=2)
    latent = walk.clone()
    latent[:, :, 2:, 2, 3] += 1.0  # one position jumps at frame 2 and stays: the coder did not expect it there
    steps = (0.05,) * 4
    bits = position_bits(latent, steps)
    assert bits[0, 2, 2, 3] == bits[0, 1:].max() and bits[0, 3, 2, 3] < bits[0, 2, 2, 3]
    allocation = get_allocator("infotok").allocate(toy_context(latent, value_steps=steps))
    assert allocation.keep[0, 2, 2, 3] and allocation.usage == pytest.approx(0.5, abs=0.01)
    assert torch.equal(allocation.keep[:, 1:], top_fraction(bits, 0.5)[:, 1:])
    small = get_allocator("infotok").allocate(toy_context(latent, target_usage=0.3, value_steps=steps))
    assert small.usage == pytest.approx(0.3, abs=0.01)
    assert (allocation.passes.encoder, allocation.passes.decoder) == (1, 2)  # InfoTok's full-rate pass is run and counted
    with pytest.raises(InvalidInputError, match="value steps"):
        get_allocator("infotok").allocate(toy_context(latent))


def test_position_bits_add_up_to_what_the_coder_writes():
    latent = torch.randn(1, 4, 6, 5, 7, generator=torch.Generator().manual_seed(1)).mul(0.3).cumsum(dim=2)
    steps = (0.05,) * 4
    codes = quantise(latent[0].permute(1, 2, 3, 0).reshape(-1, 4), steps)
    payload = ValueCoder(4, 5, 7).encode(torch.ones(1, 6, 5, 7, dtype=torch.bool), codes)
    (tables,) = TABLE_HEAD.unpack_from(payload)
    coded = len(payload) - TABLE_HEAD.size - tables  # the range coder's words
    assert abs(float(position_bits(latent, steps).sum()) / 8 - coded) <= 8


def test_latok_allocator_follows_the_tokenizer_motion():
    frame = torch.randn(1, 4, 1, 12, 12, generator=torch.Generator().manual_seed(2))
    latent = torch.cat([frame.roll(t, dims=-1) for t in range(5)], dim=2)  # a pan of one latent pixel a frame
    allocation = get_allocator("latok", tau=0.2, motion="global").allocate(toy_context(latent))
    motion = estimate_motion(latent, model="global")
    assert allocation.motion is not None and torch.equal(allocation.motion, motion)
    assert torch.equal(allocation.keep, redundancy_mask(latent, 0.2, motion=motion).keep)
    assert allocation.usage < get_allocator("latok", tau=0.2).allocate(toy_context(latent)).usage


def test_rlt_keeps_cells_whose_pixels_changed():
    latent = moving_square()
    allocation = get_allocator("rlt", tau=0.1).allocate(toy_context(latent))
    changed = toy_decode(latent, slice(0, 8)).diff(dim=2).abs().sum(dim=1) > 0  # (1, 7, 16, 16)
    expected = F.max_pool2d(changed.float(), SCALE).bool()
    assert torch.equal(allocation.keep[:, 1:], expected) and allocation.keep[:, 0].all()
    assert allocation.passes.decoder == 1


def test_fixed_rate_random_and_frames():
    latent = moving_square(frames=9)
    random = get_allocator("fixed", rate=0.25).allocate(toy_context(latent))
    assert random.usage == pytest.approx(0.25, abs=0.01) and random.keep[:, 0].all()
    frames = get_allocator("fixed", rate=0.25, mode="frames").allocate(toy_context(latent))
    assert frames.keep[0, ::4].all() and not frames.keep[0, 1:4].any()
    with pytest.raises(InvalidInputError, match="unknown allocator"):
        get_allocator("magic")


# -- latok bench on real taef2, tiny clips -----------------------------------------------------


@pytest.mark.usefixtures("taef2")
def test_bench_runs_every_allocator_like_for_like(tmp_path, capsys):
    import json

    from test_eval import frames

    from latok.cli import main
    from latok.io import write_video

    write_video(tmp_path / "clips" / "moving.mp4", frames(5, moving=True), fps=10)
    write_video(tmp_path / "clips" / "still.mp4", frames(5, seed=3, moving=False), fps=10)
    out = tmp_path / "bench"
    argv = ["bench", "--dataset", "folder", "--root", str(tmp_path / "clips"), "--out", str(out), "--frames", "5",
            "--height", "0", "--matched-usage", "--no-lpips"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((out / "bench.json").read_text())
    runs = {r["allocator"]: r for r in result["runs"]}
    assert set(runs) == {"latok", "elastictok", "infotok", "rlt", "fixed"}
    assert set(result["speedup_vs_latok"]) == {"elastictok", "infotok", "rlt", "fixed"}
    for run in runs.values():
        assert run["seconds_per_clip"] > 0 and run["encoder_passes"] == 1 and 0 < run["token_usage"] <= 1
        assert run["psnr"] > 10 and run["lpips"] is None
    assert runs["latok"]["decoder_passes"] == 1 and runs["infotok"]["decoder_passes"] == 2
    assert runs["elastictok"]["decoder_passes"] > 2
    for name in ("infotok", "rlt", "fixed"):  # matched usage: the same kept fraction per clip
        for mine, theirs in zip(runs[name]["clips"], runs["latok"]["clips"]):
            assert mine["token_usage"] == pytest.approx(theirs["token_usage"], abs=0.02)
    assert result["infotok_bound"]["value"] > 1
    assert "| elastictok |" in (out / "bench.md").read_text() and "| latok |" in capsys.readouterr().out
    assert main([*argv[:-1], "--allocators", "latok,magic"]) == 2


@needs_weights
def test_bench_resumes_after_the_last_finished_clip(tmp_path, monkeypatch):
    from test_eval import frames

    from latok.cli import main
    from latok.evaluation import bench as bench_module
    from latok.io import write_video

    for index in range(3):
        write_video(tmp_path / "clips" / f"c{index}.mp4", frames(3, seed=index, moving=True), fps=10)
    out = tmp_path / "bench"
    argv = ["bench", "--dataset", "folder", "--root", str(tmp_path / "clips"), "--out", str(out), "--frames", "3",
            "--height", "0", "--no-lpips", "--allocators", "latok,rlt"]  # fmt: skip
    calls = []
    real = bench_module.run_pipeline

    def dies_on_the_third_clip(tokenizer, video, *args):
        calls.append(video.shape)
        if len(calls) > 6:  # clip 1: warm-up + run for 2 allocators; clip 2: 2 runs; clip 3 dies
            raise KeyboardInterrupt
        return real(tokenizer, video, *args)

    monkeypatch.setattr(bench_module, "run_pipeline", dies_on_the_third_clip)
    assert main(argv) == 130
    progress = json.loads((out / bench_module.PROGRESS_NAME).read_text())
    assert sorted(progress["clips"]) == ["clips/c0", "clips/c1"] and not (out / "bench.json").exists()
    calls.clear()
    monkeypatch.setattr(bench_module, "run_pipeline", real)
    counted = []
    monkeypatch.setattr(bench_module, "run_pipeline", lambda *a: counted.append(1) or real(*a))
    assert main(argv) == 0
    assert len(counted) == 4  # only c2: warm-up + run, for 2 allocators
    result = json.loads((out / "bench.json").read_text())
    assert [r["clip"] for r in result["runs"][0]["clips"]] == ["clips/c0", "clips/c1", "clips/c2"]
    assert not (out / bench_module.PROGRESS_NAME).exists()


@pytest.mark.parametrize("name", ["latok", "elastictok", "infotok", "rlt", "fixed"])
@pytest.mark.parametrize("usage", [None, 0.05, 0.5])
def test_every_allocator_keeps_latent_frame_0(name, usage):
    """Frame 0 is every fill's only reference: no allocator may drop it, at its own rate or a forced one,
    and a forced rate counts frame 0 against the budget (so a low usage keeps only frame 0)."""
    latent = moving_square(frames=8)
    latent[:, :, 0, 5:, 5:] = 0.3  # frame-0 cells the decoder reproduces exactly, the router's lowest scores
    allocation = get_allocator(name).allocate(toy_context(latent, target_usage=usage, default_tau=0.15, value_steps=(0.05,) * 4))
    assert allocation.keep[:, 0].all()
    if usage is not None and name in ("infotok", "rlt", "fixed"):  # top-k allocators meet a forced rate exactly
        assert allocation.keep.float().mean().item() == pytest.approx(max(usage, 1 / 8), abs=1 / latent[0, 0].numel())


def test_latok_allocator_takes_the_backend_default_tau():
    latent = moving_square(frames=8)
    assert get_allocator("latok").allocate(toy_context(latent, default_tau=0.4)).info["tau"] == 0.4
    assert get_allocator("latok", tau=0.2).allocate(toy_context(latent, default_tau=0.4)).info["tau"] == 0.2
    with pytest.raises(InvalidInputError, match="needs a tau"):
        get_allocator("latok").allocate(toy_context(latent))
