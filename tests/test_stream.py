"""Streaming: the selection cache C_sel, open-ended .latok writing, encode_stream / decode_stream, the CLI."""

from __future__ import annotations

import json
import struct
import zlib

import pytest
import torch
from conftest import BLACKSWAN, needs_data, needs_weights

from latok.cli import main
from latok.codec.format.reader import load_latok
from latok.codec.format.writer import LatokWriter, header_of
from latok.codec.restore.inpainter import InpainterConfig, InpaintingTransformer
from latok.codec.rule.masking import redundancy_mask
from latok.codec.tokenizer import LatentTokenizer
from latok.errors import InvalidInputError
from latok.evaluation.metrics import psnr
from latok.io import VideoWriter, frames_to_video, load_clip, stream_clip, write_video
from latok.sample import sample_frames
from latok.vae.taesd import TAEF2


def _drifting_latent(frames: int = 13, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    steps = torch.randn(1, 4, frames, 5, 6, generator=generator) * 0.1
    return steps.cumsum(dim=2)


@pytest.mark.parametrize("reference", ["last-kept", "previous"])
@pytest.mark.parametrize("splits", [(1,) * 13, (4, 4, 5), (6, 7), (13,)])
def test_chunked_masking_with_state_equals_the_whole_stream(reference, splits):
    latent = _drifting_latent()
    whole = redundancy_mask(latent, 0.12, reference, keyframe_interval=5)
    state, pieces = None, []
    for chunk in latent.split(list(splits), dim=2):
        result = redundancy_mask(chunk, 0.12, reference, keyframe_interval=5, state=state)
        state = result.state
        pieces.append(result.keep)
    assert torch.equal(torch.cat(pieces, dim=1), whole.keep)
    assert 0.2 < whole.usage < 0.9  # the rule really drops and keeps here
    assert state.frames == 13


def test_masking_without_state_forces_every_chunk_start():
    latent = _drifting_latent()
    keep = torch.cat([redundancy_mask(c, 0.12).keep for c in latent.split(4, dim=2)], dim=1)
    assert bool(keep[:, [0, 4, 8, 12]].all())
    assert keep.float().mean() > redundancy_mask(latent, 0.12).usage


def test_state_of_another_shape_is_refused():
    state = redundancy_mask(_drifting_latent(), 0.1).state
    with pytest.raises(InvalidInputError, match="does not continue"):
        redundancy_mask(torch.zeros(1, 4, 3, 2, 2), 0.1, state=state)


# -- container ---------------------------------------------------------------------------------


def _stream_header(adaptive) -> dict:
    header = header_of(adaptive, chunk_frames=2)
    header["shape"][2] = None
    header["source"]["frames"] = None
    return header


def test_open_ended_writer_fills_in_the_counts(tmp_path):
    tokenizer_free = _adaptive()
    path = tmp_path / "s.latok"
    with LatokWriter(path, _stream_header(tokenizer_free)) as writer:
        for t in range(0, 5, 2):
            keep = tokenizer_free.keep[:, t : t + 2]
            offset = int(tokenizer_free.keep[:, :t].sum())
            writer.write_chunk(keep, tokenizer_free.values[offset : offset + int(keep.sum())], video_frames=keep.shape[1])
    loaded = load_latok(path)
    assert loaded.shape == tokenizer_free.shape and loaded.source.frames == 5
    assert torch.equal(loaded.keep, tokenizer_free.keep) and torch.equal(loaded.values, tokenizer_free.values)


def test_open_ended_writer_without_chunks_or_counts_leaves_nothing(tmp_path):
    adaptive = _adaptive()
    path = tmp_path / "s.latok"
    with pytest.raises(InvalidInputError, match="covered 0"):
        with LatokWriter(path, _stream_header(adaptive)):
            pass
    with pytest.raises(InvalidInputError, match="how many video frames"):
        with LatokWriter(path, _stream_header(adaptive)) as writer:
            writer.write_chunk(adaptive.keep[:, :1], adaptive.values[: int(adaptive.keep[:, :1].sum())])
    assert not path.exists() and not list(tmp_path.iterdir())


def _adaptive():
    from latok.codec.tokens import AdaptiveLatent, SourceInfo

    latent = _drifting_latent(frames=5).repeat(1, 8, 1, 1, 1)  # taef2's 32 channels
    keep = redundancy_mask(latent, 0.1).keep
    return AdaptiveLatent.from_dense(latent, keep, backend="taef2", backend_config="0", tau=0.1, source=SourceInfo(5, 40, 48))


# -- video chunks in and out -------------------------------------------------------------------


@needs_data
def test_stream_clip_chunks_concatenate_to_load_clip():
    chunks = list(stream_clip(BLACKSWAN, 3, frames=7, height=64))
    assert [c.frames for c in chunks] == [3, 3, 1]
    whole = load_clip(BLACKSWAN, frames=7, height=64)
    assert torch.equal(torch.cat([c.video for c in chunks], dim=2), whole.video)
    assert chunks[0].crop == whole.crop and chunks[0].fps == whole.fps


def test_video_writer_appends_chunks_and_aborts_cleanly(tmp_path):
    video = frames_to_video(sample_frames(frames=6, height=32, width=48))
    with VideoWriter(tmp_path / "a.mp4", fps=24) as out:
        out.write(video[:, :, :4])
        out.write(video[:, :, 4:])
    write_video(tmp_path / "b.mp4", video)
    # libx264 is not bit-exact from run to run inside a busy test process (seen once in ~5 full runs), so
    # the chunked file is held to the one-shot file's quality: every frame there, in order, none worse
    chunked, whole = load_clip(tmp_path / "a.mp4").video, load_clip(tmp_path / "b.mp4").video
    assert chunked.shape == whole.shape == video.shape
    for t in range(video.shape[2]):
        frame, reference = chunked[:, :, t : t + 1], video[:, :, t : t + 1]
        assert psnr(frame, reference) > max(25.0, psnr(whole[:, :, t : t + 1], reference) - 1.0)
    with VideoWriter(tmp_path / "frames") as out:
        out.write(video[:, :, :2])
        out.write(video[:, :, 2:])
    assert len(list((tmp_path / "frames").iterdir())) == 6
    with pytest.raises(RuntimeError):
        with VideoWriter(tmp_path / "c.mp4") as out:
            out.write(video[:, :, :2])
            raise RuntimeError("decoder died")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.mp4", "frames"]


# -- codec -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(taef2):
    return LatentTokenizer(taef2)


@pytest.fixture(scope="module")
def sample():
    return frames_to_video(sample_frames(frames=10, height=64, width=112))


@needs_weights
def test_encode_stream_equals_offline_and_decode_stream_matches(tokenizer, sample, tmp_path):
    path = tmp_path / "s.latok"
    summary = tokenizer.encode_stream(sample.split(3, dim=2), path, tau=tokenizer.default_tau)
    offline = tokenizer.encode(sample, tau=tokenizer.default_tau)  # at one fixed tau, the stream's mask is the offline one
    streamed = load_latok(path)
    assert summary.frames == 10 and summary.shape == offline.shape and summary.tokens == offline.num_tokens
    assert torch.equal(streamed.keep, offline.keep)
    # The encoder sees 3-frame batches instead of 10: the same latents up to float rounding.
    torch.testing.assert_close(streamed.values.float(), offline.values.float(), rtol=2e-3, atol=2e-3)
    assert streamed.source.frames == 10 and len(summary.usage_per_frame) == 10
    assert 0.0 < summary.token_usage < 1.0
    pieces = list(tokenizer.decode_stream(path, fill="hold"))
    assert [p.shape[2] for p in pieces] == [3, 3, 3, 1]  # one piece per chunk record
    torch.testing.assert_close(torch.cat(pieces, dim=2), tokenizer.decode(streamed, fill="hold"), rtol=0, atol=1e-5)


@needs_weights
def test_without_selection_cache_every_chunk_starts_fully_kept(tokenizer, sample, tmp_path):
    carried = tokenizer.encode_stream(sample.split(3, dim=2), tmp_path / "a.latok", tau=tokenizer.default_tau)
    restarted = tokenizer.encode_stream(sample.split(3, dim=2), tmp_path / "b.latok", tau=tokenizer.default_tau, carry_selection=False)
    assert [restarted.usage_per_frame[t] for t in (0, 3, 6, 9)] == [1.0] * 4
    assert max(carried.usage_per_frame[1:]) < 1.0
    assert restarted.tokens > carried.tokens


@needs_weights
@pytest.mark.parametrize("motion", ["block", "none"])
def test_decode_stream_runs_the_inpainter_over_each_chunk_and_its_context(taef2, sample, tmp_path, motion):
    model = InpaintingTransformer(InpainterConfig(latent_channels=32, width=32, depth=1, heads=2))
    tokenizer = LatentTokenizer(taef2, inpainter=model, motion=motion, tau=0.15)
    tokenizer.encode_stream(sample.split(4, dim=2), tmp_path / "s.latok")
    lit = torch.cat(list(tokenizer.decode_stream(tmp_path / "s.latok", fill="lit")), dim=2)
    hold = torch.cat(list(tokenizer.decode_stream(tmp_path / "s.latok", fill="hold")), dim=2)
    torch.testing.assert_close(lit, hold)  # an untrained model is exactly (motion-compensated) hold, context included
    if motion == "block":
        return
    # A trained-like (random) model changes the result; it sees its chunk's future but never the next chunk's:
    # changing the last frame changes the frame before it, in its chunk, and leaves the chunks before alone.
    from test_inpainter import randomised

    randomised(model)
    changed = sample.clone()
    changed[:, :, 9:] = changed[:, :, 9:].flip(-1)  # chunks of 4 frames: 0-3, 4-7, 8-9
    tokenizer.encode_stream(sample.split(4, dim=2), tmp_path / "s.latok")  # lit weights fitted for this model
    tokenizer.encode_stream(changed.split(4, dim=2), tmp_path / "c.latok")
    lit = list(tokenizer.decode_stream(tmp_path / "s.latok", fill="lit"))
    lit_changed = list(tokenizer.decode_stream(tmp_path / "c.latok", fill="lit"))
    assert not torch.allclose(torch.cat(lit, dim=2), hold, atol=1e-3)
    torch.testing.assert_close(lit[1], lit_changed[1])
    assert not torch.allclose(lit[2][:, :, :1], lit_changed[2][:, :, :1], atol=1e-3)  # frame 8: its tokens unchanged, its future not


@needs_weights
def test_stream_errors(tokenizer, sample, tmp_path):
    path = tmp_path / "s.latok"
    with pytest.raises(InvalidInputError, match="fixed tau"):
        LatentTokenizer(tokenizer.vae, target_usage=0.3).encode_stream([sample], path)
    with pytest.raises(InvalidInputError, match="one frame size"):
        tokenizer.encode_stream([sample, sample[..., :32, :]], path)
    with pytest.raises(InvalidInputError, match="no frames"):
        tokenizer.encode_stream([], path)
    assert not list(tmp_path.iterdir())


def test_temporal_backends_cannot_stream(tmp_path):
    from conftest import tiny_diffusers_model

    from latok.vae import load_vae

    tokenizer = LatentTokenizer(load_vae("wan2.1", model=tiny_diffusers_model("wan2.1")), tau=0.1)
    with pytest.raises(InvalidInputError, match="per-frame backend"):
        tokenizer.encode_stream([torch.zeros(1, 3, 5, 16, 16)], tmp_path / "s.latok")


@needs_weights
@needs_data
def test_cli_stream_encode_and_decode(tmp_path, capsys):
    latok_path, mp4 = tmp_path / "b.latok", tmp_path / "b.mp4"
    tau = str(TAEF2.default_taus["block"])
    assert main(["encode", str(BLACKSWAN), "-o", str(latok_path), "--stream", "--chunk", "3", "--frames", "7", "--height", "64", "--tau", tau]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["frames"] == 7 and info["chunks"] == 3 and 0 < info["token_usage"] < 1 and "tau_per_chunk" not in info
    assert info["lit_guard"]["per_chunk"] and info["bytes_by_part"]["lit_weights"] > 0  # the stream's lit weights, one LITW a chunk
    offline = tmp_path / "o.latok"
    streamed = load_latok(latok_path)
    assert streamed.tau == float(tau) and streamed.target_quality is None  # one fixed tau, no quality target
    assert main(["encode", str(BLACKSWAN), "-o", str(offline), "--frames", "7", "--height", "64", "--tau", str(streamed.tau)]) == 0
    assert torch.equal(load_latok(latok_path).keep, load_latok(offline).keep)
    assert main(["decode", str(latok_path), "-o", str(mp4), "--stream"]) == 0
    assert load_clip(mp4).frames == 7
    capsys.readouterr()
    assert main(["decode", str(latok_path), "-o", str(tmp_path / "whole.mp4")]) == 0  # a stream file decodes as a stream
    assert "decode --stream" in capsys.readouterr().err  # the stream decode's progress bar
    assert (tmp_path / "whole.mp4").read_bytes() == mp4.read_bytes()  # the same restoration, and mp4 writes are reproducible
    # lit weights damaged in the last chunk, checksum resealed: one error line before any model loads or frame decodes
    from test_bitstream import with_record

    damaged = tmp_path / "damaged" / "d.latok"
    damaged.parent.mkdir()
    damaged.write_bytes(with_record(latok_path.read_bytes(), b"LITW", 2, struct.pack("<II", 6, 1) + zlib.compress(bytes([17]) * 14)))
    capsys.readouterr()
    assert main(["decode", str(damaged), "-o", str(damaged.parent / "d.mp4"), "--stream"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("latok: error: ") and "LITW record at latent frame 6" in lines[0], lines
    assert [p.name for p in damaged.parent.iterdir()] == ["d.latok"]
    capsys.readouterr()
    bad = tmp_path / "bad.latok"
    assert main(["encode", str(BLACKSWAN), "-o", str(bad), "--stream", "--target-usage", "0.3", "--frames", "3"]) == 2
    assert main(["encode", str(BLACKSWAN), "-o", str(bad), "--stream", "--chunk", "0", "--frames", "3"]) == 2
    assert main(["decode", str(latok_path), "-o", str(tmp_path / "x.mp4"), "--stream", "--fill", "lit",
                 "--inpainter", str(tmp_path / "none")]) in (0, 2)  # fmt: skip
    err = capsys.readouterr().err
    assert "fixed tau" in err and "chunk frames must be >= 1" in err
    assert not bad.exists()


@needs_weights
def test_shipped_inpainter_streams_lit(tokenizer, sample, tmp_path):
    from latok.codec.tokenizer import LatentTokenizer

    tokenizer = LatentTokenizer(tokenizer.vae)  # block motion, the default
    model = tokenizer.inpainter
    assert not model.config.causal and model.num_parameters < 25e6 / 4
    tokenizer.encode_stream(sample.split(5, dim=2), tmp_path / "s.latok", tau=0.3)
    lit = torch.cat(list(tokenizer.decode_stream(tmp_path / "s.latok", fill="lit")), dim=2)
    hold = torch.cat(list(tokenizer.decode_stream(tmp_path / "s.latok", fill="hold")), dim=2)
    assert lit.shape == sample.shape and not torch.allclose(lit, hold, atol=1e-3)  # trained: it changes things
    default = torch.cat(list(tokenizer.decode_stream(tmp_path / "s.latok")), dim=2)
    assert torch.equal(default, lit)  # a stream's auto: the unguarded inpainter, where the backend ships one


def decoded_latents(tokenizer, path, fill=None) -> list[torch.Tensor]:
    """The restored latent chunks ``decode_stream`` hands the decoder."""
    seen, decode = [], tokenizer.vae.decode
    tokenizer.vae.decode = lambda latent, size=None: seen.append(latent.clone()) or decode(latent, size=size)
    try:
        list(tokenizer.decode_stream(path, fill=fill))
    finally:
        tokenizer.vae.decode = decode
    return seen


@needs_weights
def test_stream_chunks_carry_lit_weights_fitted_on_the_decoders_context(tokenizer, sample, tmp_path, monkeypatch):
    from latok.codec import streams
    from latok.codec.format.reader import LatokReader
    from latok.codec.restore.guard import LIT_TILE

    tokenizer = LatentTokenizer(tokenizer.vae)  # the shipped inpainter, block motion
    fitted, weigh = [], streams.restore_chunk
    monkeypatch.setattr(streams, "restore_chunk", lambda *a: fitted.append(weigh(*a)) or fitted[-1])
    tokenizer.encode_stream(sample.split(4, dim=2), tmp_path / "w.latok", tau=0.3)
    with LatokReader(tmp_path / "w.latok") as reader:
        header, codes = reader.header, [chunk.lit_weights for chunk in reader.chunks()]
    assert header["lit_model"] == tokenizer.inpainter.fingerprint and header["lit_tile"] == LIT_TILE and header["lit_frames"] is None
    assert [tuple(c.shape) for c in codes] == [(4, 2, 4), (4, 2, 4), (2, 2, 4)]
    assert all(torch.equal(c, f) for c, (f, _) in zip(codes, fitted))
    every = torch.cat(codes)
    assert 0 < int((every > 0).sum()) and len(set(every.view(-1).tolist())) > 3  # fitted weights, not one switch
    # the encoder replayed the decoder exactly: the context it fitted each chunk on is what the decoder restores
    auto = decoded_latents(tokenizer, tmp_path / "w.latok")
    assert len(auto) == 3 and all(torch.equal(a, restored) for a, (_, restored) in zip(auto, fitted))
    # ... and the weights pay: closer to the truth (in the decoder metric) than the unguarded inpainter and than hold
    LatentTokenizer(tokenizer.vae, lit_tile=0).encode_stream(sample.split(4, dim=2), tmp_path / "u.latok", tau=0.3)
    with LatokReader(tmp_path / "u.latok") as reader:
        assert reader.header["lit_model"] is None and "LITW" not in str(reader.header)
        keep = torch.cat([chunk.keep for chunk in reader.chunks()], dim=1)
    truth = tokenizer.vae.encode(sample).float()
    error = {name: float(tokenizer.inpainter.error(torch.cat(latents, dim=2), truth, keep).sum()) for name, latents in (
        ("auto", auto), ("lit", decoded_latents(tokenizer, tmp_path / "u.latok", "lit")),
        ("hold", decoded_latents(tokenizer, tmp_path / "w.latok", "hold")))}  # fmt: skip
    assert error["auto"] < error["lit"] and error["auto"] < error["hold"], error


def test_a_stream_without_an_inpainter_decodes_auto_as_hold(tmp_path, monkeypatch):
    from latok.codec.restore.resolve import CHECKPOINTS_ENV, Inpainters, resolve_stream

    assert resolve_stream(0.15, "last-kept", "auto", Inpainters("taef2", 32)).name != "hold"  # shipped: lit
    monkeypatch.setenv(CHECKPOINTS_ENV, str(tmp_path))  # no model given and none shipped
    assert resolve_stream(0.15, "last-kept", "auto", Inpainters("taef2", 32)).name == "hold"


@needs_weights
def test_a_quality_target_picks_each_stream_chunks_tau_over_the_caches_it_continues(tokenizer, sample, tmp_path):
    from latok.codec.format.reader import LatokReader
    from latok.codec.rule.masking import in_rule_metric, redundancy_mask
    from latok.codec.rule.motion import estimate_motion

    tokenizer = LatentTokenizer(tokenizer.vae, quality_check_frames=0)  # the map alone, so the test can replay the search
    s, path, pieces = tokenizer.settings, tmp_path / "q.latok", sample.split(4, dim=2)
    summary = tokenizer.encode_stream(pieces, path, target_quality=0.5)
    with LatokReader(path) as reader:
        header, parts = reader.header, list(reader.chunks())
    taus = [part.tau for part in parts]
    assert header["chunk_tau"] and header["target_quality"] == 0.5 and header["tau"] == max(taus) and len(set(taus)) == 3, taus
    assert load_latok(path).tau == max(taus)  # loaded whole: the largest, a bound on every chunk's dropped changes
    # replay: each chunk's tau is the quality target's search over C_sel (the rule's state) and C_fill (the decoder's
    # restored context, which the encoder replayed), and without them some chunk's tau would differ
    restored, tracked = [], tokenizer.inpainters.run
    tokenizer.inpainters.run = lambda *a, **k: restored.append(k["tau"]) or tracked(*a, **k)
    try:
        latents = decoded_latents(tokenizer, path)
    finally:
        del tokenizer.inpainters.run
    assert restored == taus  # the decoder runs the inpainter at each chunk's own tau
    state, context, before, alone = None, None, None, []
    for piece, part, latent_restored in zip(pieces, parts, latents):
        latent = tokenizer.vae.encode(piece)
        motion = estimate_motion(latent, s.motion, before)
        before = latent[:, :, -1]
        assert part.tau == tokenizer.resolve_tau(latent, motion=motion, target_quality=0.5, state=state, context=context)
        alone.append(tokenizer.resolve_tau(latent, motion=motion, target_quality=0.5))
        mask = redundancy_mask(in_rule_metric(latent.float(), tokenizer.rule_weights), part.tau, s.reference, s.keyframe_interval, state, motion=motion)
        assert torch.equal(mask.keep, part.keep)
        state = mask.state
        context = torch.cat([c for c in (context, latent_restored) if c is not None], dim=2)[:, :, -4:]
    assert alone[0] == taus[0] and alone[1:] != taus[1:], (alone, taus)
    # a tighter target keeps more tokens; with the check on decoded frames (the default) the file is as well formed
    tight = LatentTokenizer(tokenizer.vae).encode_stream(pieces, tmp_path / "t.latok", target_quality=0.2)
    assert tight.token_usage > summary.token_usage
    assert len(list(tokenizer.decode_stream(tmp_path / "t.latok"))) == 3
    with pytest.raises(InvalidInputError, match="not both"):
        tokenizer.encode_stream(pieces, tmp_path / "x.latok", tau=0.2, target_quality=0.5)
    assert not (tmp_path / "x.latok").exists()


@needs_weights
@needs_data
def test_cli_stream_defaults_to_a_quality_target_per_chunk(tmp_path, capsys):
    path = tmp_path / "q.latok"
    assert main(["encode", str(BLACKSWAN), "-o", str(path), "--stream", "--chunk", "3", "--frames", "7", "--height", "64"]) == 0
    info = json.loads(capsys.readouterr().out)  # a stream's default rate: the backend's quality target, as offline
    per_chunk = info["tau_per_chunk"]
    assert info["target_quality"] == TAEF2.default_target_quality == 0.5 and info["chunks"] == 3 and per_chunk["max"] == info["tau"] and per_chunk["min"] <= per_chunk["mean"]
    assert info["bytes_by_part"]["taus"] == 3 * 28 and sum(info["bytes_by_part"].values()) == info["bytes"]
    assert main(["decode", str(path), "-o", str(tmp_path / "q.mp4")]) == 0  # a tau per chunk decodes as the stream
    assert "decode --stream" in capsys.readouterr().err and load_clip(tmp_path / "q.mp4").frames == 7
    assert main(["encode", str(BLACKSWAN), "-o", str(tmp_path / "b.latok"), "--stream", "--frames", "3", "--target-quality", "0"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and all(line.startswith("latok: error: ") for line in err), err
    assert not (tmp_path / "b.latok").exists()
