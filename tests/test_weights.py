"""Weight lookup order and the sha256-checked download (served from a local HTTP server)."""

from __future__ import annotations

import functools
import http.server
import threading

import pytest

from latok.errors import WeightsChecksumError, WeightsNotFoundError
from latok.weights import WeightFile, find_weight, resolve_weight, sha256_of

PAYLOAD = b"pretend weights " * 1000


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "w.bin").write_bytes(PAYLOAD)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.delenv("LATOK_OFFLINE", raising=False)
    monkeypatch.setenv("LATOK_WEIGHTS_DIR", str(tmp_path / "weights-dir"))
    monkeypatch.setenv("LATOK_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def good_weight(url: str) -> WeightFile:
    import hashlib

    return WeightFile("w.bin", f"{url}/w.bin", hashlib.sha256(PAYLOAD).hexdigest())


def test_download_verifies_and_caches(server, env):
    weight = good_weight(server)
    path = resolve_weight(weight)
    assert path == env / "cache" / "w.bin"
    assert path.read_bytes() == PAYLOAD and sha256_of(path) == weight.sha256
    assert find_weight(weight) == path  # second lookup hits the cache


def test_checksum_mismatch_leaves_nothing_in_cache(server, env):
    weight = WeightFile("w.bin", f"{server}/w.bin", "0" * 64)
    with pytest.raises(WeightsChecksumError, match="does not match"):
        resolve_weight(weight)
    assert not (env / "cache").exists() or not any((env / "cache").iterdir())


def test_failed_download_says_how_to_provide_weights(server, env):
    weight = WeightFile("missing.bin", f"{server}/missing.bin", "0" * 64)
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weight(weight)
    message = str(info.value)
    assert "\n" not in message and "LATOK_WEIGHTS_DIR" in message and weight.url in message


def test_lookup_order_explicit_then_env_then_cache(server, env):
    weight = good_weight(server)
    for folder in ("explicit", "weights-dir", "cache"):
        (env / folder).mkdir()
        (env / folder / "w.bin").write_bytes(PAYLOAD if folder != "explicit" else b"a re-exported copy")
    assert resolve_weight(weight, env / "explicit") == env / "explicit" / "w.bin"  # explicit: the user's choice
    assert resolve_weight(weight, env / "explicit" / "w.bin") == env / "explicit" / "w.bin"
    assert resolve_weight(weight) == env / "weights-dir" / "w.bin"
    (env / "weights-dir" / "w.bin").unlink()
    assert resolve_weight(weight) == env / "cache" / "w.bin"


def test_offline_never_downloads(server, env, monkeypatch):
    monkeypatch.setenv("LATOK_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match="offline"):
        resolve_weight(good_weight(server))


@pytest.mark.parametrize("folder", ["weights-dir", "cache"])
def test_damaged_local_copy_is_named_not_used(server, env, folder):
    weight = good_weight(server)
    (env / folder).mkdir()
    (env / folder / "w.bin").write_bytes(PAYLOAD[:-1] + b"X")  # one byte changed
    with pytest.raises(WeightsChecksumError, match=rf"{folder}/w.bin: sha256 .* is not the published w.bin"):
        resolve_weight(weight)
