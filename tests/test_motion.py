"""Motion in latent space (issue 19, first part): estimation, warping, the motion-compensated rule and hold."""

from __future__ import annotations

import pytest
import torch

from latok.codec.restore.fills import hold_fill, interp_fill, motion_hold_fill, motion_interp_fill
from latok.codec.restore.resolve import restore
from latok.codec.rule.masking import redundancy_mask, tau_for_usage
from latok.codec.rule.global_motion import estimate_shift
from latok.codec.rule.motion import estimate_motion, warp
from latok.codec.tokens import scatter


def smooth_field(seed: int = 0, channels: int = 8, size: tuple[int, int] = (40, 56)) -> torch.Tensor:
    """A ``(1, C, h, w)`` latent-like field with structure at several scales."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, channels, size[0] // 4, size[1] // 4, generator=generator)
    return torch.nn.functional.interpolate(coarse, size=size, mode="bicubic", align_corners=False)


def panning(frames: int, velocity: tuple[float, float], seed: int = 0, channels: int = 8) -> torch.Tensor:
    """``(1, C, t, h, w)``: one field moving by ``velocity`` latent pixels per frame (a camera pan)."""
    field = smooth_field(seed, channels)
    shift = torch.tensor([velocity])
    return torch.stack([warp(field, shift * t) for t in range(frames)], dim=2)


def test_zero_shift_is_the_identity():
    field = smooth_field()
    assert torch.equal(warp(field, torch.zeros(1, 2)), field)


@pytest.mark.parametrize("velocity", [(0.0, 0.0), (0.0, 2.0), (-1.0, 3.0), (0.5, -1.25), (2.75, 0.0)])
def test_estimate_shift_recovers_a_translation(velocity):
    field = smooth_field(1)
    moved = warp(field, torch.tensor([velocity]))
    estimate = estimate_shift(moved, field)
    assert torch.allclose(estimate, torch.tensor([velocity]), atol=0.26)  # quarter-pixel refinement


def test_estimate_motion_is_per_frame_and_zero_on_frame_0():
    motion = estimate_motion(panning(5, (0.0, 2.0)))
    assert motion.shape == (1, 5, 2)
    assert torch.equal(motion[0, 0], torch.zeros(2))
    assert torch.allclose(motion[0, 1:], torch.tensor([[0.0, 2.0]]).expand(4, 2), atol=0.26)


def test_motion_compensated_rule_drops_a_pan_the_plain_rule_keeps():
    latent = panning(6, (0.0, 2.0))
    motion = estimate_motion(latent)
    plain = redundancy_mask(latent, 0.1)
    compensated = redundancy_mask(latent, 0.1, motion=motion)
    assert plain.usage > 0.8  # in place, a pan looks like change everywhere
    assert compensated.usage < 0.45  # only the strip entering the frame (and frame 0) is new
    zero = redundancy_mask(latent, 0.1, motion=torch.zeros(1, 6, 2))
    assert torch.equal(zero.keep, plain.keep)  # no motion is the plain rule, bit for bit


@pytest.mark.parametrize(
    "compensated, plain, frames, velocity, tau, factor",
    [(motion_hold_fill, hold_fill, 6, (0.0, 2.0), 0.1, 0.2), (motion_interp_fill, interp_fill, 9, (0.5, 1.5), 0.15, 0.5)],
)
def test_motion_fills_beat_their_plain_fill_on_a_pan_and_equal_it_without_motion(compensated, plain, frames, velocity, tau, factor):
    latent = panning(frames, velocity, seed=frames)
    motion = estimate_motion(latent)
    keep = redundancy_mask(latent, tau, motion=motion).keep
    sparse = latent * keep.unsqueeze(1)
    moved = (compensated(sparse, keep, motion) - latent).pow(2).mean()
    assert moved < factor * (plain(sparse, keep) - latent).pow(2).mean()
    still = redundancy_mask(latent, tau).keep
    assert torch.equal(compensated(latent * still.unsqueeze(1), still, torch.zeros(1, frames, 2)), plain(latent * still.unsqueeze(1), still))


def test_target_usage_with_motion():
    latent = panning(8, (1.0, 1.0), seed=3)
    latent = latent + 0.05 * torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))  # sensor noise
    motion = estimate_motion(latent)
    tau = tau_for_usage(latent, 0.5, motion=motion)
    assert redundancy_mask(latent, tau, motion=motion).usage == pytest.approx(0.5, abs=0.02)


def test_streamed_motion_masks_equal_offline():
    latent = panning(8, (0.5, -1.0), seed=4)
    motion = estimate_motion(latent)
    offline = redundancy_mask(latent, 0.1, motion=motion)
    first = redundancy_mask(latent[:, :, :3], 0.1, motion=motion[:, :3])
    rest_motion = estimate_motion(latent[:, :, 3:], previous=latent[:, :, 2])
    assert torch.equal(rest_motion, motion[:, 3:])  # the frame before a chunk is all the estimate needs
    second = redundancy_mask(latent[:, :, 3:], 0.1, state=first.state, motion=rest_motion)
    assert torch.equal(torch.cat([first.keep, second.keep], dim=1), offline.keep)


# -- in the tokenizer and the file ------------------------------------------------------------------


@pytest.fixture(scope="module")
def pan_clip():
    """A real-texture pan: a DAVIS frame cropped along a window moving 8 px a frame, 6 frames at 128x192."""
    from conftest import BLACKSWAN

    from latok.io import frames_to_video, load_clip, video_to_frames

    if not BLACKSWAN.is_dir():
        pytest.skip(f"shared DAVIS data not found at {BLACKSWAN}")
    frame = video_to_frames(load_clip(BLACKSWAN, frames=1, height=240).video)[0]  # (240, 416, 3)
    frames = [frame[40:168, 8 * t : 8 * t + 192] for t in range(6)]
    import numpy as np

    return frames_to_video(np.stack(frames))


def test_motion_tokens_round_trip_and_decode_with_motion_hold(taef2, pan_clip, tmp_path):
    from latok.codec.format.reader import LatokReader, load_latok
    from latok.codec.format.writer import save_latok
    from latok.codec.tokenizer import LatentTokenizer

    plain = LatentTokenizer(taef2, target_usage=0.5, lit_guard=False, motion="none")
    moving = LatentTokenizer(taef2, target_usage=0.5, motion="global", lit_guard=False)
    adaptive = moving.encode(pan_clip)
    assert adaptive.motion is not None and adaptive.lit_frames is None
    assert adaptive.motion[0, 1:, 1].mean() == pytest.approx(-1.0, abs=0.3)  # the window moves right 8 px: content left 1 latent px
    path = save_latok(adaptive, tmp_path / "m.latok", chunk_frames=4)
    with LatokReader(path) as reader:
        assert reader.version == 3  # quantised values (the default step), with quarter-pel coded motion
    loaded = load_latok(path)
    assert torch.equal(loaded.motion, adaptive.motion) and torch.equal(loaded.keep, adaptive.keep)
    assert moving.resolve(loaded).name == "hold"
    torch.testing.assert_close(moving.restore(loaded), motion_hold_fill(scatter(loaded), loaded.keep, loaded.motion))
    from latok.evaluation.metrics import psnr

    compensated = psnr(moving.decode(loaded), pan_clip)
    held = psnr(plain.decode(plain.encode(pan_clip)), pan_clip)
    assert compensated > held + 0.5  # same usage, the pan followed
    assert moving.resolve(loaded, "interp").name == "interp"
    torch.testing.assert_close(moving.restore(loaded, "interp"), motion_interp_fill(scatter(loaded), loaded.keep, loaded.motion))
    exact = LatentTokenizer(taef2, target_usage=0.5, lit_guard=False, motion="none", value_step=0)
    plain_file = save_latok(exact.encode(pan_clip), tmp_path / "p.latok")
    with LatokReader(plain_file) as reader:
        assert reader.version == 1 and reader.header["motion"] is None  # exact values, no motion: the version-1 bytes of before


def test_motion_streams_equal_offline(taef2, pan_clip, tmp_path):
    from latok.codec.tokenizer import LatentTokenizer

    tokenizer = LatentTokenizer(taef2, tau=0.3, motion="global", lit_guard=False)
    offline = tokenizer.encode(pan_clip)
    tokenizer.encode_stream((pan_clip[:, :, t : t + 4] for t in range(0, 6, 4)), tmp_path / "s.latok")
    from latok.codec.format.reader import load_latok

    streamed = load_latok(tmp_path / "s.latok")
    assert torch.equal(streamed.keep, offline.keep) and torch.equal(streamed.motion, offline.motion)
    pieces = torch.cat(list(tokenizer.decode_stream(tmp_path / "s.latok", fill="hold")), dim=2)
    torch.testing.assert_close(pieces, tokenizer.decode(offline, fill="hold"), atol=1e-5, rtol=0)  # hold continues across chunks exactly


def test_version_1_fixture_still_decodes():
    """A small version-1 file (committed: exact fp16 values, no motion), read by today's reader."""
    from pathlib import Path

    from latok.codec.format.reader import LatokReader, load_latok

    fixture = Path(__file__).with_name("fixtures") / "v1_hold.latok"
    with LatokReader(fixture) as reader:
        assert reader.version == 1
    adaptive = load_latok(fixture)
    assert adaptive.motion is None and adaptive.shape == (1, 32, 5, 6, 10) and 0 < adaptive.token_usage < 1


def test_lit_and_its_guard_follow_motion(taef2, pan_clip):
    """The inpainter's hold/interp inputs and the guard's hold follow the motion: lit restores every
    frame no further from the truth than the motion-compensated hold where the guard allows it."""
    from latok.codec.tokenizer import LatentTokenizer

    tokenizer = LatentTokenizer(taef2, target_usage=0.5, motion="global")
    latent = taef2.encode(pan_clip)
    adaptive = tokenizer.encode(pan_clip)
    assert adaptive.lit_frames is not None and len(adaptive.lit_frames) == 6
    restored = tokenizer.restore(adaptive)  # auto: guarded lit
    held = tokenizer.restore(adaptive, "hold")
    model = tokenizer.inpainter
    lit_error, hold_error = model.error(restored, latent.float(), adaptive.keep)[0], model.error(held, latent.float(), adaptive.keep)[0]
    assert bool((lit_error <= hold_error + 1e-6).all())  # guarded: no frame worse than MC hold in the decoder metric
    unguarded = tokenizer.inpainters.run(scatter(adaptive), adaptive.keep, adaptive.tau, adaptive.reference, motion=adaptive.motion)
    plain = tokenizer.inpainters.run(scatter(adaptive), adaptive.keep, adaptive.tau, adaptive.reference)
    assert not torch.allclose(unguarded, plain)  # the motion reaches the model's inputs
    from latok.codec.restore.resolve import resolve_stream

    streamed = resolve_stream(0.15, "last-kept", "lit", tokenizer.inpainters)  # the model, as streams run it
    moving, still = streamed(scatter(adaptive), adaptive.keep, adaptive.motion), streamed(scatter(adaptive), adaptive.keep)
    assert not torch.allclose(moving, still)  # the motion reaches its inputs in streams too


def test_eval_with_motion_is_its_own_run(tmp_path):
    from latok.evaluation.evaluate import EvalSettings, Rate

    plain = EvalSettings(backend="taef2", rates=(Rate(),), fills=("hold",), lpips=False, motion="none")
    moving = EvalSettings(backend="taef2", rates=(Rate(),), fills=("hold",), lpips=False, motion="global")
    assert plain.fingerprint() != moving.fingerprint()  # a clip evaluated without motion is recomputed with it
    assert moving.fingerprint() != EvalSettings(backend="taef2", rates=(Rate(),), fills=("hold",), lpips=False).fingerprint()  # block


def test_training_crops_of_a_pan_carry_its_motion_and_compensated_masks(tmp_path):
    """With motion_fraction 1 every crop of a panning clip carries the clip's translation (dx negated
    when flipped, frame 0's zero) and the motion-compensated rule's sparser mask; with 0, zeros and the plain rule."""
    from latok.training.data import LatentDataModule, write_shard

    write_shard(tmp_path / "pan.tar", "pan", panning(8, (0.0, 2.0)).squeeze(0), {"name": "pan"})
    usages = {}
    for fraction in (0.0, 1.0):
        data = LatentDataModule(
            train_dir=str(tmp_path), val_dir=None, crop=(6, 24, 24), batch_size=8, num_workers=0,
            random_mask_fraction=0.0, tau_min=0.1, tau_max=0.1001, usage_min=0.5, usage_max=0.5, motion_fraction=fraction,
            motion_model="global",
        )  # fmt: skip
        batch = next(iter(data.train_dataloader()))
        motion = batch["motion"]
        assert motion.shape == (8, 6, 2) and torch.equal(motion[:, 0], torch.zeros(8, 2))
        if fraction == 0.0:
            assert torch.equal(motion, torch.zeros_like(motion))
        else:
            assert torch.allclose(motion[:, 1:, 0], torch.zeros(8, 5), atol=0.26)
            assert torch.allclose(motion[:, 1:, 1].abs(), torch.full((8, 5), 2.0), atol=0.26)  # a flip negates dx
            assert {float(v) for v in motion[:, 1, 1].sign()} <= {-1.0, 1.0}
        fixed_tau = batch["tau"] < 0.2  # the fixed-tau half: compare the rules at one tau
        usages[fraction] = batch["keep"][fixed_tau].float().mean().item()
    assert usages[1.0] < usages[0.0] - 0.2


def rewarped_hold(latent: torch.Tensor, keep: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
    """The compensated hold as it was: the previous restored frame warped again at every frame."""
    restored = [latent[:, :, 0]]
    for t in range(1, latent.shape[2]):
        restored.append(torch.where(keep[:, t].unsqueeze(1), latent[:, :, t], warp(restored[-1], motion[:, t])))
    return torch.stack(restored, dim=2)


@pytest.mark.parametrize("velocity", [(0.0, 1.0), (0.5, 0.75)])
def test_compensated_hold_interpolates_once_however_long_it_holds(velocity):
    """A position held for n frames is sampled once from the frame it was kept in, at the motion composed
    since: on a pan by whole latent pixels that is exact, and on a sub-pixel pan it is far closer to the
    truth than warping the restored frame again at every frame (n interpolations)."""
    field = smooth_field(2)
    frames = 6
    shift = torch.tensor([velocity])
    latent = torch.stack([warp(field, shift * t) for t in range(frames)], dim=2)  # (1, C, t, h, w)
    motion = shift.view(1, 1, 2).expand(1, frames, 2).clone()
    motion[:, 0] = 0
    keep = torch.zeros(1, frames, *latent.shape[-2:], dtype=torch.bool)
    keep[:, 0] = True  # hold frame 0 along the pan for five frames
    inside = (slice(None), slice(None), slice(None), slice(8, -8), slice(8, -8))  # away from the replicated border
    composed = (motion_hold_fill(latent, keep, motion) - latent)[inside].pow(2).mean()
    rewarped = (rewarped_hold(latent, keep, motion) - latent)[inside].pow(2).mean()
    if velocity == (0.0, 1.0):
        assert composed < 1e-12  # whole pixels: one sample at a whole-pixel point is exact
    else:
        assert 0 < composed < 0.5 * rewarped


def test_training_on_motion_batches_scores_against_the_compensated_hold(tmp_path):
    """A fresh inpainter is exactly hold, so on motion-compensated crops its loss ratio against the
    motion-compensated hold is 1; against the plain hold it would be far from it."""
    from latok.training.module import InpainterModule

    latent = panning(6, (0.5, 1.25))[:, :, :, 8:32, 8:32]  # sub-pixel: the compensated hold interpolates
    motion = estimate_motion(latent)
    tau = tau_for_usage(latent, 0.4, motion=motion)
    keep = redundancy_mask(latent, tau, motion=motion).keep
    module = InpainterModule(preset="xs", latent_channels=8)
    _, hold_mse, ratio = module._losses(latent, keep, tau, motion)
    assert float(hold_mse) > 0 and abs(float(ratio.detach()) - 1.0) < 1e-4
    _, plain_hold_mse, _ = module._losses(latent, keep, tau, None)
    assert float(plain_hold_mse) > 2 * float(hold_mse)


# -- per-block motion -----------------------------------------------------------------------------------


def two_motions(frames: int, top: tuple[float, float] = (0.0, 2.0), bottom: tuple[float, float] = (0.0, -1.0), channels: int = 8) -> torch.Tensor:
    """``(1, C, t, 40, 56)``: the top half of the picture moves by ``top`` a frame, the bottom half by ``bottom``
    (a pan with an object moving against it), which no single translation explains."""
    upper, lower = smooth_field(5, channels), smooth_field(6, channels)
    rows = []
    for t in range(frames):
        frame = warp(lower, torch.tensor([bottom]) * t).clone()
        frame[:, :, :20] = warp(upper, torch.tensor([top]) * t)[:, :, :20]
        rows.append(frame)
    return torch.stack(rows, dim=2)


def test_a_constant_block_field_warps_as_its_translation():
    from latok.codec.rule.motion import block_grid

    field = smooth_field(2)
    shift = torch.tensor([[0.5, -1.25]])
    blocks = shift.view(1, 2, 1, 1).expand(1, 2, *block_grid(40, 56)).contiguous()
    torch.testing.assert_close(warp(field, blocks), warp(field, shift))
    with pytest.raises(Exception, match="per block"):
        warp(field, torch.zeros(1, 2, 3, 3))


def test_block_motion_follows_two_regions_that_one_translation_cannot():
    latent = two_motions(5)
    motion = estimate_motion(latent, model="block")
    assert motion.shape == (1, 5, 2, 10, 14) and torch.equal(motion[:, 0], torch.zeros(1, 2, 10, 14))
    dx = motion[0, 1:, 1]  # (t, gh, gw)
    interior = slice(2, 12)  # away from the replicated borders a shift brings in
    assert torch.allclose(dx[:, :4, interior], torch.full_like(dx[:, :4, interior], 2.0), atol=0.26)
    assert torch.allclose(dx[:, 6:, interior], torch.full_like(dx[:, 6:, interior], -1.0), atol=0.26)
    global_motion = estimate_motion(latent)
    by_block, by_frame = redundancy_mask(latent, 0.1, motion=motion), redundancy_mask(latent, 0.1, motion=global_motion)
    assert by_block.usage < by_frame.usage - 0.2  # at one tau: fewer tokens
    errors = []
    for frame_motion in (motion, global_motion):  # at one usage: a closer hold
        keep = redundancy_mask(latent, tau_for_usage(latent, 0.4, motion=frame_motion), motion=frame_motion).keep
        errors.append((motion_hold_fill(latent * keep.unsqueeze(1), keep, frame_motion) - latent).pow(2).mean())
    assert errors[0] < 0.5 * errors[1]


def test_block_motion_keeps_the_global_vector_where_its_own_does_not_pay():
    latent = panning(4, (0.0, 2.0), seed=7)
    motion = estimate_motion(latent, model="block")
    global_motion = estimate_motion(latent)
    for t in range(1, 4):  # a pure pan: every block keeps the frame's translation, bit for bit (the first
        # column excepted: the pan fills it with replicated border, which another vector may fit better)
        assert torch.equal(motion[0, t, :, :, 1:], global_motion[0, t].view(2, 1, 1).expand(2, 10, 13))


@pytest.mark.parametrize("channels", [8, 32])  # 32: searched on the principal channels of each pair
def test_streamed_block_motion_and_masks_equal_offline(channels):
    latent = two_motions(7, channels=channels)
    motion = estimate_motion(latent, model="block")
    rest = estimate_motion(latent[:, :, 3:], previous=latent[:, :, 2], model="block")
    assert torch.equal(rest, motion[:, 3:])
    offline = redundancy_mask(latent, 0.1, motion=motion)
    first = redundancy_mask(latent[:, :, :3], 0.1, motion=motion[:, :3])
    second = redundancy_mask(latent[:, :, 3:], 0.1, state=first.state, motion=rest)
    assert torch.equal(torch.cat([first.keep, second.keep], dim=1), offline.keep)


def test_block_motion_round_trips_through_the_file(tmp_path):
    from latok.codec.format.reader import LatokReader, load_latok
    from latok.codec.format.writer import save_latok
    from latok.codec.tokens import AdaptiveLatent, SourceInfo
    from latok.errors import InvalidInputError, LatokFormatError

    latent = two_motions(7).repeat(1, 4, 1, 1, 1)  # taef2's 32 channels
    motion = estimate_motion(latent, model="block")
    keep = redundancy_mask(latent, 0.1, motion=motion).keep
    adaptive = AdaptiveLatent.from_dense(
        latent, keep, backend="taef2", backend_config="test", tau=0.1, source=SourceInfo(7, 320, 448, fps=24.0), motion=motion, motion_model="block"
    )
    assert adaptive.motion_model == "block"
    path = save_latok(adaptive, tmp_path / "b.latok", chunk_frames=3)
    with LatokReader(path) as reader:
        assert reader.version == 2 and reader.header["motion"] == "block"
    from latok.evaluation.reports import file_info

    assert file_info(path)["motion"] == "block"
    loaded = load_latok(path)
    assert torch.equal(loaded.motion, motion) and torch.equal(loaded.keep, keep) and loaded.motion_model == "block"
    torch.testing.assert_close(restore(loaded, "hold"), motion_hold_fill(scatter(loaded), keep, motion))
    wrong_grid = AdaptiveLatent.from_dense(latent, keep, backend="taef2", backend_config="test", tau=0.1,
                                           source=SourceInfo(7, 320, 448, fps=24.0), motion=motion[..., :5], motion_model="block")  # fmt: skip
    with pytest.raises(InvalidInputError, match="motion must be"):  # the file holds only the model's own grid
        save_latok(wrong_grid, tmp_path / "wrong.latok")
    assert not (tmp_path / "wrong.latok").exists()
    import json
    import struct
    import zlib

    data = path.read_bytes()  # a block file relabelled global (valid CRC): its MOTN records no longer fit
    _, length = struct.unpack_from("<4sI", data, 12)
    payload = json.dumps({**json.loads(data[20 : 20 + length]), "motion": "global"}, sort_keys=True).encode()
    head = struct.pack("<4sI", b"HEAD", len(payload))
    (tmp_path / "relabelled.latok").write_bytes(data[:12] + head + payload + struct.pack("<I", zlib.crc32(head + payload)) + data[20 + length + 4 :])
    with pytest.raises(LatokFormatError, match="MOTN"):
        load_latok(tmp_path / "relabelled.latok")


@pytest.mark.parametrize("model", ["global", "block"])
def test_a_wide_latent_is_searched_on_its_principal_channels_and_still_follows_a_pan(model):
    from latok.codec.rule.global_motion import SEARCH_CHANNELS

    latent = panning(5, (-1.0, 2.0), seed=3, channels=32)
    assert latent.shape[1] > SEARCH_CHANNELS
    motion = estimate_motion(latent, model=model)
    vectors = motion[0, 1:] if model == "global" else motion[0, 1:, :, 2:-2, 2:-2].permute(0, 2, 3, 1).reshape(-1, 2)
    assert torch.allclose(vectors, torch.tensor([[-1.0, 2.0]]).expand_as(vectors), atol=0.26)


def test_principal_channels_keep_the_pairs_structure_and_depend_on_the_pair_alone():
    from latok.codec.rule.global_motion import principal_channels

    generator = torch.Generator().manual_seed(4)
    structure = smooth_field(8, channels=3)  # three channels of structure mixed into 32 with noise
    mixing = torch.randn(32, 3, generator=generator)
    frames = [torch.einsum("kc,bchw->bkhw", mixing, warp(structure, torch.tensor([[0.0, float(t)]]))) + 0.05 * torch.randn(1, 32, 40, 56, generator=generator)
              for t in range(3)]  # fmt: skip
    current, previous = torch.cat(frames[1:]), torch.cat(frames[:-1])
    now, before = principal_channels(current, previous, channels=4)
    assert now.shape == before.shape == (2, 4, 40, 56)
    alone = principal_channels(current[1:], previous[1:], channels=4)
    assert torch.equal(alone[0], now[1:]) and torch.equal(alone[1], before[1:])  # a pair's projection ignores its batch
    # the 4 principal channels hold nearly all of the pair's variance: the structure, not the noise
    centred = torch.cat([current[0], previous[0]], dim=1).flatten(1)
    kept = torch.cat([now[0], before[0]], dim=1).flatten(1)
    assert (kept - kept.mean(1, keepdim=True)).pow(2).sum() > 0.95 * (centred - centred.mean(1, keepdim=True)).pow(2).sum()
    untouched = principal_channels(current[:, :4], previous[:, :4], channels=4)
    assert torch.equal(untouched[0], current[:, :4])  # no wider than the search: searched as it is


def test_training_crops_with_block_motion_carry_their_blocks_vectors_and_the_encoders_masks(tmp_path):
    """The default crops are masked as the encoder masks: block motion (each crop on the block grid, with
    its blocks' vectors, mirrored and negated when flipped) and the rule in the decoder's metric (the
    clip's backend's channel weights, which the crop carries for the correction ball)."""
    from latok.codec.rule.masking import in_rule_metric
    from latok.codec.tokens import rule_weights
    from latok.training.data import CropDataset, write_shard
    from latok.vae import vae_class

    latent = two_motions(8, channels=32)
    write_shard(tmp_path / "two.tar", "two", latent.squeeze(0), {"name": "two", "backend": "taef2"})
    clip_motion = estimate_motion(latent.half().float(), model="block")[0]  # the shard stores fp16
    weights = rule_weights("decoder", vae_class("taef2").value_sensitivity)
    dataset = CropDataset([str(tmp_path / "two.tar")], (6, 16, 16), 16, (0.5, 0.5), 0.0, seed=1, tau_range=(0.1, 0.1001), motion_fraction=1.0)
    crops = [item for _, item in zip(range(16), dataset)]
    for item in crops:
        motion = item["motion"]
        assert motion.shape == (6, 2, 4, 4) and torch.equal(motion[0], torch.zeros(2, 4, 4))
        # its vectors are the clip's at some block-aligned window, mirrored with dx negated when flipped
        windows = clip_motion.unfold(2, 4, 1).unfold(3, 4, 1)  # (t, 2, gh', gw', 4, 4)
        found = False
        for t0 in range(0, 3):
            for flipped in (False, True):
                want = windows[t0 + 1 : t0 + 6]
                want = (want.flip(-1) * torch.tensor([1.0, -1.0]).view(1, 2, 1, 1, 1, 1)) if flipped else want
                match = (want == motion[1:].view(5, 2, 1, 1, 4, 4)).flatten(-2).all(-1).all(1).all(0)
                found = found or bool(match.any())
        assert found
        assert torch.equal(item["weights"], torch.tensor(weights))
        mask = redundancy_mask(in_rule_metric(item["latent"].unsqueeze(0), weights), item["tau"], motion=motion.unsqueeze(0)).keep[0]
        assert torch.equal(mask, item["keep"])  # the encoder's rule, in the decoder's metric, with the crop's motion
    fastest = [float(item["motion"][1:, 1].flatten()[item["motion"][1:, 1].abs().flatten().argmax()]) for item in crops]
    assert min(fastest) < -1.7 and max(fastest) > 1.7  # the top's +2 pan, and mirrored by a flip, -2


def test_training_step_on_block_motion_crops_scores_against_their_compensated_hold(tmp_path):
    """A batch as the default data module makes it (block motion per crop, the rule's channel weights) goes
    through the training step; a fresh inpainter is exactly the block-compensated hold: loss ratio 1."""
    from latok.training.data import LatentDataModule, write_shard
    from latok.training.module import InpainterModule

    write_shard(tmp_path / "two.tar", "two", two_motions(8, channels=32).squeeze(0), {"name": "two", "backend": "taef2"})
    data = LatentDataModule(train_dir=str(tmp_path), val_dir=None, crop=(6, 16, 16), batch_size=4, num_workers=0, random_mask_fraction=0.0,
                            motion_fraction=1.0, usage_min=0.3, usage_max=0.3)  # fmt: skip
    batch = next(iter(data.train_dataloader()))
    assert batch["motion"].shape == (4, 6, 2, 4, 4) and bool(batch["motion"].any()) and batch["weights"].shape == (32,)
    module = InpainterModule(preset="xs", latent_channels=32)
    module.log_dict = lambda *args, **kwargs: None  # no trainer attached
    ratio = module.training_step(batch, 0)
    assert abs(float(ratio.detach()) - 1.0) < 1e-4
