"""The weighted lit guard: the encoder sends, per latent frame and square of positions, how much of the
inpainter's correction over hold to apply (latok.codec.restore.guard)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from conftest import needs_weights

from latok.cli import main
from latok.codec.restore.guard import LIT_TILE, lit_weight_codes
from latok.codec.tokenizer import LatentTokenizer, source_info
from latok.codec.tokens import LIT_WEIGHT_STEPS, MAX_LIT_CODE
from latok.errors import InvalidInputError
from latok.io import frames_to_video, write_video
from latok.sample import sample_frames


@pytest.fixture(scope="module")
def sample():
    return frames_to_video(sample_frames(frames=6, height=64, width=112))


@pytest.fixture(scope="module")
def sample_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("sample") / "sample.mp4"
    write_video(path, sample_frames(frames=6, height=64, width=112), fps=24)
    return path


def reference_codes(metric: torch.Tensor, lit, hold, truth, keep, tile: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Square by square in float64: the least-squares weight of (lit - hold) against (truth - hold) under ``metric``
    on the dropped positions, and the codes it rounds to."""
    _, _, frames, height, width = lit.shape
    grid = (frames, -(-height // tile), -(-width // tile))
    exact = torch.zeros(grid, dtype=torch.float64)
    for t in range(frames):
        for gy in range(grid[1]):
            for gx in range(grid[2]):
                rows, cols = slice(gy * tile, (gy + 1) * tile), slice(gx * tile, (gx + 1) * tile)
                drop = ~keep[0, t, rows, cols]
                d = (lit - hold)[0, :, t, rows, cols][:, drop].double()  # (C, n)
                e = (truth - hold)[0, :, t, rows, cols][:, drop].double()
                power = torch.einsum("cn,cd,dn->", d, metric.double(), d)
                exact[t, gy, gx] = torch.einsum("cn,cd,dn->", d, metric.double(), e) / power if power > 0 else 0.0
    return exact, (exact * LIT_WEIGHT_STEPS).round().clamp(0, MAX_LIT_CODE).to(torch.uint8)


def test_weights_are_least_squares_in_the_decoder_metric():
    generator = torch.Generator().manual_seed(3)
    channels, frames, height, width = 4, 3, 7, 9  # squares of 4 leave ragged edges
    lit, hold, truth = (torch.randn(1, channels, frames, height, width, generator=generator) for _ in range(3))
    keep = torch.rand(1, frames, height, width, generator=generator) < 0.4
    keep[:, :, :4, :4] = True  # a square with nothing dropped: weight 0
    root = torch.randn(channels, channels, generator=generator)
    metric = root @ root.T + 0.1 * torch.eye(channels)
    model = SimpleNamespace(config=SimpleNamespace(decoder_metric=True), decoder_metric=metric)
    codes = lit_weight_codes(model, lit, hold, truth, keep, tile=4)
    exact, expected = reference_codes(metric, lit, hold, truth, keep, 4)
    assert codes.dtype == torch.uint8 and codes.shape == (3, 2, 3)
    near_half = ((exact * LIT_WEIGHT_STEPS) % 1 - 0.5).abs() < 1e-4  # float32 against float64 may round either way there
    assert torch.equal(codes[~near_half], expected[~near_half])
    assert (codes[:, 0, 0] == 0).all()
    # known answers: truth three quarters of the way to lit, at hold, far past lit
    for fraction, code in ((0.75, 6), (0.0, 0), (5.0, MAX_LIT_CODE), (-1.0, 0)):
        assert (lit_weight_codes(model, lit, hold, hold + fraction * (lit - hold), keep, 4)[:, 1:, 1:] == code).all()
    plain = SimpleNamespace(config=SimpleNamespace(decoder_metric=False), decoder_metric=None)  # no metric: plain latent units
    exact, expected = reference_codes(torch.eye(channels), lit, hold, truth, keep, 4)
    near_half = ((exact * LIT_WEIGHT_STEPS) % 1 - 0.5).abs() < 1e-4
    assert torch.equal(lit_weight_codes(plain, lit, hold, truth, keep, 4)[~near_half], expected[~near_half])


def square_errors(model, restored: torch.Tensor, truth: torch.Tensor, keep: torch.Tensor, tile: int) -> torch.Tensor:
    """(t, gh, gw) squared error on each square's dropped positions, in the inpainter's decoder metric."""
    difference = (restored - truth) * (~keep).unsqueeze(1)
    factor = torch.linalg.cholesky(model.decoder_metric.float())
    energy = torch.einsum("bcthw,cd->bdthw", difference, factor).pow(2).sum(1)  # (1, t, h, w)
    return torch.nn.functional.avg_pool2d(energy[0].unsqueeze(1), tile, ceil_mode=True, divisor_override=1).squeeze(1)


@needs_weights
def test_the_weighted_guard_never_loses_to_hold_on_any_square(taef2, sample):
    tokenizer = LatentTokenizer(taef2)
    video, source = source_info(sample)
    truth = taef2.encode(video)
    adaptive = tokenizer.tokenize(truth, source, target_usage=0.4)
    assert adaptive.lit_tile == LIT_TILE and adaptive.lit_weights.shape == (truth.shape[2], -(-truth.shape[3] // 4), -(-truth.shape[4] // 4))
    model = tokenizer.inpainter
    hold, guarded = tokenizer.restore(adaptive, "hold"), tokenizer.restore(adaptive)
    unguarded = tokenizer.restore(adaptive.without_lit_guard(), "lit")
    hold_error = square_errors(model, hold, truth, adaptive.keep, LIT_TILE)
    guarded_error = square_errors(model, guarded, truth, adaptive.keep, LIT_TILE)
    assert bool((guarded_error <= hold_error * (1 + 1e-5) + 1e-6).all())  # least squares, rounded: never past twice the optimum
    assert guarded_error.sum() < 0.95 * hold_error.sum()  # and a real gain on the sample
    assert guarded_error.sum() <= square_errors(model, unguarded, truth, adaptive.keep, LIT_TILE).sum()
    weights = adaptive.lit_weights
    assert int((weights > LIT_WEIGHT_STEPS).sum()) > 0 and int(((weights > 0) & (weights < LIT_WEIGHT_STEPS)).sum()) > 0  # over and under 1


@needs_weights
def test_a_broken_inpainter_gets_weights_near_zero(taef2, sample):
    from latok.codec.restore.inpainter import InpaintingTransformer, preset

    torch.manual_seed(0)
    broken = InpaintingTransformer(preset("xs"))
    torch.nn.init.normal_(broken.head.weight, std=1.0)  # corrections far off the truth
    tokenizer = LatentTokenizer(taef2, inpainter=broken)
    video, source = source_info(sample)
    truth = taef2.encode(video)
    adaptive = tokenizer.tokenize(truth, source, target_usage=0.5)
    hold, guarded = tokenizer.restore(adaptive, "hold"), tokenizer.restore(adaptive)
    unguarded = tokenizer.restore(adaptive.without_lit_guard(), "lit")
    errors = [broken.error(x, truth, adaptive.keep)[0].sum() for x in (hold, guarded, unguarded)]
    assert errors[1] <= errors[0] * (1 + 1e-5) and errors[2] > 2 * errors[0]
    assert float(adaptive.lit_weights.float().mean()) < 0.5  # mostly hold: codes of 0 or 1 (an eighth)


def test_lit_tile_settings_and_cli_are_checked(tmp_path, capsys):
    from latok.codec.settings import CodecSettings

    for bad in (-1, True, 65, 2.0):
        with pytest.raises(InvalidInputError, match="lit_tile"):
            CodecSettings(lit_tile=bad)
    for bad in ("-1", "abc", "100"):
        try:
            code = main(["encode", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "o.latok"), "--lit-tile", bad])
        except SystemExit as stop:  # argparse's own refusal of a non-integer
            code = stop.code
        assert code == 2
        err = capsys.readouterr().err.strip()
        if bad == "abc":  # argparse: its usage, then one error line
            assert "Traceback" not in err and err.splitlines()[-1].endswith("argument --lit-tile: invalid int value: 'abc'")
        else:
            assert err.startswith("latok: error:") and len(err.splitlines()) == 1 and "lit_tile" in err
        assert not (tmp_path / "o.latok").exists()


@needs_weights
def test_cli_writes_weights_by_default_and_flags_with_lit_tile_0(tmp_path, capsys, sample_path):
    weighted, flagged = tmp_path / "w.latok", tmp_path / "f.latok"
    argv = ["encode", str(sample_path), "--frames", "5", "--height", "64", "--target-usage", "0.5"]
    assert main([*argv, "-o", str(weighted)]) == 0
    guard = json.loads(capsys.readouterr().out)["lit_guard"]
    assert guard["tile"] == LIT_TILE and 0 < guard["mean_weight"] <= 2 and guard["weight_bytes"] > 0
    assert main([*argv, "-o", str(flagged), "--lit-tile", "0"]) == 0
    guard = json.loads(capsys.readouterr().out)["lit_guard"]
    assert "tile" not in guard and guard["of"] == 5
    assert main(["info", str(weighted)]) == 0 and json.loads(capsys.readouterr().out)["lit_guard"]["tile"] == LIT_TILE
