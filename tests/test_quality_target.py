"""The quality target: per clip, the largest tau whose predicted loss stays within a budget in dB."""

from __future__ import annotations

import pytest
import torch
from conftest import needs_weights

from latok.codec.restore.fills import hold_fill
from latok.codec.restore.quality import QualityCalibration, tau_for_quality, weighted_error
from latok.codec.rule.masking import redundancy_mask
from latok.codec.settings import CodecSettings
from latok.errors import InvalidInputError

IDENTITY = QualityCalibration(scale=1.0, exponent=1.0)  # predicted loss = weighted error: the budget is an error


def drifting(speed: float, seed: int, frames: int = 8) -> torch.Tensor:
    """``(1, 4, t, 24, 24)``: a random field whose values drift by about ``speed`` a frame."""
    generator = torch.Generator().manual_seed(seed)
    steps = torch.randn(1, 4, frames, 24, 24, generator=generator) * speed
    steps[:, :, 0] = torch.randn(1, 4, 24, 24, generator=generator)
    return steps.cumsum(dim=2)


def cost(latent: torch.Tensor, tau: float, sensitivity) -> float:
    keep = redundancy_mask(latent, tau).keep
    return weighted_error(hold_fill(latent * keep.unsqueeze(1), keep), latent, sensitivity)


def test_each_clip_gets_the_tau_that_spends_its_budget():
    """A quiet and a busy clip: one fixed tau costs them very different errors; the target gives each its own
    tau, and each then costs at most the budget and not far below it."""
    sensitivity = (1.0, 2.0, 0.5, 1.0)
    quiet, busy = drifting(0.02, 0), drifting(0.2, 1)
    assert cost(quiet, 0.03, sensitivity) > 100 * cost(busy, 0.03, sensitivity)
    for budget in (0.0005, 0.002):
        taus = [tau_for_quality(latent, budget, IDENTITY, sensitivity) for latent in (quiet, busy)]
        assert taus[1] > 2 * taus[0]
        for latent, tau in zip((quiet, busy), taus):
            assert 0.9 * budget <= cost(latent, tau, sensitivity) <= budget


def test_a_larger_budget_keeps_fewer_tokens_and_a_tiny_one_keeps_all():
    latent = drifting(0.1, 2)
    usages = [redundancy_mask(latent, tau_for_quality(latent, budget, IDENTITY, None)).usage for budget in (1e-4, 1e-3, 1e-2)]
    assert usages[0] > usages[1] > usages[2]
    assert redundancy_mask(latent, tau_for_quality(latent, 1e-12, IDENTITY, None)).usage == 1.0  # no drop is cheap enough
    assert redundancy_mask(latent, tau_for_quality(latent, 20.0, IDENTITY, None)).usage == pytest.approx(1 / 8)  # frame 0 only


def test_calibration_inverts():
    calibration = QualityCalibration(scale=3.0, exponent=0.6)
    assert calibration.loss_db(calibration.error_for(0.5)) == pytest.approx(0.5)


@pytest.mark.parametrize("rate", [{"tau": 0.1, "target_quality": 0.5}, {"target_usage": 0.5, "target_quality": 0.5}, {"target_quality": 0.0},
                                  {"target_quality": float("nan")}, {"target_quality": 21.0}])  # fmt: skip
def test_settings_take_one_rate_and_a_budget_in_range(rate):
    with pytest.raises(InvalidInputError, match="one of tau|target quality is a PSNR loss"):
        CodecSettings(**rate)


@needs_weights
def test_encode_with_a_quality_target_records_it_and_meets_it(taef2, tmp_path):
    from latok.codec.tokenizer import LatentTokenizer
    from latok.evaluation.metrics import psnr
    from latok.io import frames_to_video
    from latok.sample import sample_frames

    video = frames_to_video(sample_frames(frames=9, height=64, width=112))
    tokenizer = LatentTokenizer(taef2, target_quality=0.5)
    adaptive = tokenizer.encode(video)
    assert adaptive.target_quality == 0.5 and adaptive.target_usage is None
    loose = tokenizer.encode(video, target_quality=3.0)
    assert loose.tau > adaptive.tau and loose.token_usage < adaptive.token_usage
    loaded = tokenizer.load(tokenizer.save(adaptive, tmp_path / "q.latok"))
    assert loaded.target_quality == 0.5 and loaded.tau == adaptive.tau
    full = psnr(taef2.decode(taef2.encode(video), size=video.shape[-3:]), video)
    assert full - psnr(tokenizer.decode(loaded), video) < 1.5  # the sample is not a calibration clip: loosely within


@needs_weights
def test_cli_quality_target(tmp_path, capsys):
    import json

    from latok.cli import main
    from latok.io import frames_to_video, write_video
    from latok.sample import sample_frames

    source = tmp_path / "in.mp4"
    write_video(source, frames_to_video(sample_frames(frames=5, height=64, width=112)), fps=24)
    assert main(["encode", str(source), "-o", str(tmp_path / "q.latok"), "--height", "64", "--target-quality", "0.5"]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "q.latok")]) == 0
    assert json.loads(capsys.readouterr().out)["target_quality"] == 0.5
    with pytest.raises(SystemExit) as exit_info:
        main(["encode", str(source), "-o", str(tmp_path / "x.latok"), "--tau", "0.1", "--target-quality", "0.5"])
    assert exit_info.value.code == 2 and not (tmp_path / "x.latok").exists()
    capsys.readouterr()
    assert main(["encode", str(source), "-o", str(tmp_path / "x.latok"), "--height", "64", "--quality-check-frames", "-1"]) == 2
    error = capsys.readouterr().err.strip()
    assert "quality_check_frames" in error and len(error.splitlines()) == 1 and not (tmp_path / "x.latok").exists()


def test_cli_states_the_library_default_of_check_frames():
    from latok.cli import build_parser
    from latok.codec.restore.quality import QUALITY_CHECK_FRAMES

    encode = build_parser()._subparsers._group_actions[0].choices["encode"]
    help_text = next(a.help for a in encode._actions if "--quality-check-frames" in a.option_strings)
    assert f"default: {QUALITY_CHECK_FRAMES})" in help_text


@pytest.mark.parametrize("start", [None, 1e-3, 0.05, 5.0])
def test_the_search_finds_the_largest_tau_within_the_budget_from_any_start_in_few_passes(start, monkeypatch):
    """Wherever it starts, the tau found fits the budget and 2 % more does not (the tolerance), so a plain
    bisection could do no better; from a start near the answer it takes about 9 mask + hold passes."""
    from latok.codec.restore import quality

    latent = drifting(0.1, 3)
    passes = []
    monkeypatch.setattr(quality, "redundancy_mask", lambda *a, **k: passes.append(1) or redundancy_mask(*a, **k))
    budget = 2e-3
    tau = tau_for_quality(latent, budget, IDENTITY, None, start=start)
    assert cost(latent, tau, None) <= budget < cost(latent, tau * (1 + quality.TAU_TOLERANCE), None)
    if start == 0.05:  # near the answer
        assert 0.5 * tau < start < 2 * tau and len(passes) <= 10
    assert len(passes) <= 24


def test_check_frames_spread_over_the_clip_and_skip_the_first():
    from latok.codec.restore.quality import check_frames

    assert check_frames(17, 4) == [1, 6, 11, 16]
    assert check_frames(3, 4) == [1, 2]
    assert check_frames(1, 4) == [] and check_frames(17, 0) == []


def test_a_check_scales_the_map_by_measured_over_predicted_within_bounds():
    from latok.codec.restore.quality import CHECK_FACTOR_RANGE, checked_calibration

    calibration = QualityCalibration(scale=2.0, exponent=1.1)
    assert checked_calibration(calibration, 0.5, 1.0) == QualityCalibration(scale=4.0, exponent=1.1)
    assert checked_calibration(calibration, 0.5, 100.0).scale == pytest.approx(2.0 * CHECK_FACTOR_RANGE[1])
    assert checked_calibration(calibration, 0.5, -0.1).scale == pytest.approx(2.0 * CHECK_FACTOR_RANGE[0])  # lit beat the full rate there
    assert checked_calibration(calibration, 0.0, 0.3).scale == pytest.approx(2.0 * CHECK_FACTOR_RANGE[1])


@pytest.mark.parametrize("count", [-1, 1.5, True])
def test_settings_take_a_whole_number_of_check_frames(count):
    with pytest.raises(InvalidInputError, match="quality_check_frames"):
        CodecSettings(quality_check_frames=count)


@needs_weights
def test_the_encoder_checks_a_wrong_map_on_decoded_frames_and_corrects_tau(taef2, monkeypatch):
    """A map that predicts an eighth of the loss picks too large a tau and loses far more than the budget; checked on
    the default number of decoded frames, the encoder searches again with the map scaled by what it measured and lands closer to the budget.
    Without the input video there is nothing to check against: the prediction stands."""
    from latok.codec.restore.quality import QUALITY_CHECK_FRAMES
    from latok.codec.tokenizer import LatentTokenizer
    from latok.codec.tokens import SourceInfo
    from latok.evaluation.metrics import psnr
    from latok.io import frames_to_video
    from latok.sample import sample_frames

    scale, exponent = taef2.quality_calibration
    monkeypatch.setattr(taef2, "quality_calibration", (scale / 8, exponent))
    video = frames_to_video(sample_frames(frames=9, height=64, width=112))
    latent = taef2.encode(video)
    source = SourceInfo(frames=9, height=64, width=112, fps=24.0)
    full = psnr(taef2.decode(latent, size=video.shape[-3:]), video)
    budget = 0.5
    results = {}
    for count in (0, QUALITY_CHECK_FRAMES):
        tokenizer = LatentTokenizer(taef2, quality_check_frames=count)
        adaptive = tokenizer.tokenize(latent, source, target_quality=budget, video=video)
        results[count] = (adaptive.tau, full - psnr(tokenizer.decode(adaptive), video))
        if count:
            assert tokenizer.tokenize(latent, source, target_quality=budget).tau == results[0][0]  # no video: no check
    (unchecked_tau, unchecked_loss), (checked_tau, checked_loss) = results[0], results[QUALITY_CHECK_FRAMES]
    assert unchecked_loss > 2 * budget  # the wrong map overspends
    assert checked_tau < unchecked_tau and abs(checked_loss - budget) < abs(unchecked_loss - budget)


@needs_weights
def test_roundtrip_writes_the_tokens_encode_writes(taef2, tmp_path):
    """`latok roundtrip` and the demo time the stages of an encode: their .latok must be what `latok encode` writes,
    the quality target's check included."""
    from latok.codec.tokenizer import LatentTokenizer
    from latok.evaluation.reports import roundtrip
    from latok.io import Clip, frames_to_video
    from latok.sample import sample_frames

    clip = Clip(video=frames_to_video(sample_frames(frames=5, height=64, width=112)), fps=24.0, source_size=(64, 112), resized_size=(64, 112), crop=(0, 0, 64, 112))
    tokenizer = LatentTokenizer(taef2)
    report = roundtrip(tokenizer, clip, tmp_path / "r.latok")
    encoded = tokenizer.save(tokenizer.encode(clip), tmp_path / "e.latok")
    assert (tmp_path / "r.latok").read_bytes() == encoded.read_bytes() and report["seconds"]["tokenize"] > 0
