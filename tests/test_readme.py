"""README.md stays true: its Python snippet runs, and its two commands are the ones CI uses."""

from __future__ import annotations

import re

from conftest import ROOT, SHARED, needs_data, needs_weights

README = (ROOT / "README.md").read_text()


SNIPPETS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def run_snippet(index: int, tmp_path, monkeypatch) -> dict:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(SNIPPETS[index].replace("../shared", str(SHARED)), "README.md", "exec"), namespace)
    return namespace


def test_readme_has_the_five_python_examples():
    assert len(SNIPPETS) == 5
    assert "encode_stream" in SNIPPETS[1] and "for_pipeline" in SNIPPETS[2] and "collate_packed" in SNIPPETS[3]
    assert "CorpusDataset" in SNIPPETS[4]  # run against a real corpus in tests/test_corpus.py


@needs_weights
@needs_data
def test_python_snippet_runs(tmp_path, monkeypatch):
    namespace = run_snippet(0, tmp_path, monkeypatch)
    assert namespace["video"].shape == namespace["clip"].video.shape == (1, 3, 17, 240, 320)
    assert namespace["latent"].shape == (1, 32, 17, 30, 40)
    assert 0.0 < namespace["adaptive"].token_usage < 0.35  # static camera: few tokens
    assert (tmp_path / "vtest.latok").stat().st_size > 0


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in README and "pytest" in ci
    bash_blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    assert len(bash_blocks) == 2 and "latok demo" in bash_blocks[0]


@needs_weights
@needs_data
def test_streaming_snippet_runs(tmp_path, monkeypatch):
    namespace = run_snippet(1, tmp_path, monkeypatch)
    assert namespace["summary"].frames == 20 and namespace["summary"].shape[2] == 20
    assert [p.shape[2] for p in namespace["pieces"]] == [8, 8, 4] and (tmp_path / "goat.mp4").stat().st_size > 0


@needs_weights
@needs_data
def test_generator_snippet_runs(tmp_path, monkeypatch):
    namespace = run_snippet(3, tmp_path, monkeypatch)
    batch, adaptive = namespace["batch"], namespace["adaptive"]
    assert batch.num_clips == 2 and batch.values.shape == (sum(a.num_tokens for a in adaptive), 32)
    assert namespace["out"].shape == (1, 1, batch.values.shape[0], 32)
    assert namespace["dense"].shape == (1, 32, 5, 30, 52)


@needs_data
def test_wan_snippet_gives_pipeline_ready_latents(tmp_path, monkeypatch):
    """The README's three Wan lines, with a tiny random Wan VAE in place of the 500 MB download."""
    import torch
    from conftest import tiny_diffusers_model

    import latok.codec.tokenizer
    from latok.vae import load_vae

    tiny = load_vae("wan2.1", model=tiny_diffusers_model("wan2.1"))
    monkeypatch.setattr(latok.codec.tokenizer, "load_vae", lambda name, **options: tiny if name == "wan2.1" else load_vae(name, **options))
    namespace = run_snippet(2, tmp_path, monkeypatch)
    latents, tokenizer = namespace["latents"], namespace["tokenizer"]
    assert latents.shape == (1, 16, 3, 8, 14)  # 9 frames -> 3 latent frames of 64x112 / 8
    hold = tokenizer.restore(tokenizer.encode(namespace["load_clip"](str(SHARED / "data/davis/JPEGImages/480p/blackswan"), frames=9, height=64)), "hold")
    torch.testing.assert_close(latents, hold)  # Wan's pipeline space is latok's normalised space
