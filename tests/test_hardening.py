"""Hostile inputs (issue 17): nothing latok reads can run code, exhaust memory, crash it or destroy data.

Every CLI case checks the whole contract: exactly one ``latok: error: ...`` line, exit status 2,
no output and no temporary file, and inputs left byte-for-byte as they were.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import tarfile

import numpy as np
import pytest

from latok.data import read_samples, write_shard
from latok.errors import ShardFormatError


class _Payload:
    """Unpickling this writes the file named by ``marker``: the side effect a test can look for."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _tar(path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize("member", ["clip0.pyd", "clip0.pickle", "clip0.pth", "clip0.latent.npy"])
def test_a_pickle_in_a_training_shard_never_runs(tmp_path, member):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(str(marker)))
    if member.endswith(".npy"):  # an object array: np.load would unpickle it if allowed
        payload = _npy(np.array([_Payload(str(marker))], dtype=object))
    shards = tmp_path / "shards"
    shards.mkdir()
    members = {"clip0.json": b'{"name": "clip0"}', member: payload}
    if not member.endswith(".npy"):
        members["clip0.latent.npy"] = _npy(np.zeros((2, 1, 2, 2), np.float16))
    _tar(shards / "s.tar", members)
    with pytest.raises(ShardFormatError, match=r"s\.tar: member clip0\.") as info:
        read_samples(shards)
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_shard_members_latok_writes_still_read(tmp_path):
    write_shard(tmp_path / "a.tar", "clip", __import__("torch").zeros(4, 2, 3, 5), {"name": "clip"}, np.zeros((2, 24, 40, 3), np.uint8))
    (sample,) = read_samples(tmp_path)
    assert sample["latent.npy"].dtype == np.float16 and sample["latent.npy"].shape == (4, 2, 3, 5)
    assert sample["json"] == {"name": "clip"} and sample["video.npy"].shape == (2, 24, 40, 3)


def test_training_crops_refuse_a_pickle_too(tmp_path):
    from latok.data import CropDataset

    marker = tmp_path / "pwned"
    _tar(tmp_path / "s.tar", {"c.latent.npy": _npy(np.zeros((2, 3, 4, 4), np.float16)), "c.json": b"{}",
                              "c.pyd": pickle.dumps(_Payload(str(marker)))})  # fmt: skip
    dataset = CropDataset([str(tmp_path / "s.tar")], (2, 2, 2), 1, (0.2, 0.8), 0.0, seed=0)
    with pytest.raises(ShardFormatError, match="c.pyd"):
        next(iter(dataset))
    assert not marker.exists()
