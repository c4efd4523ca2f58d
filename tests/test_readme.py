"""README.md stays true: its Python snippet runs, and its two commands are the ones CI uses."""

from __future__ import annotations

import re

from conftest import ROOT, SHARED, needs_data, needs_weights

README = (ROOT / "README.md").read_text()


@needs_weights
@needs_data
def test_python_snippet_runs(tmp_path, monkeypatch):
    (snippet,) = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(snippet.replace("../shared", str(SHARED)), "README.md", "exec"), namespace)
    assert namespace["video"].shape == namespace["clip"].video.shape == (1, 3, 17, 240, 320)
    assert namespace["latent"].shape == (1, 32, 17, 30, 40)
    assert 0.0 < namespace["adaptive"].token_usage < 0.35  # static camera: few tokens
    assert (tmp_path / "vtest.latok").stat().st_size > 0


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in README and "pytest" in ci
    bash_blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    assert len(bash_blocks) == 2 and "latok demo" in bash_blocks[0]
