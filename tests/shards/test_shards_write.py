"""The deterministic tar writer: readable by tarfile, GNU tar and webdataset; byte-stable; atomic."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import webdataset as wds

from shards.write import RECORD, ShardWriter, encode_json, encode_png, file_sha256, sample_bytes


def write_samples(path: Path, n: int, synth) -> dict:
    writer = ShardWriter(path)
    for i in range(n):
        rgb = synth.synthetic_rgb(20 + i, 30, seed=i)
        writer.add(f"k{i:03d}", {"png": encode_png(rgb), "json": encode_json({"i": i, "name": "é"})})
    return writer.finish().as_dict()


def test_round_trip_with_tarfile(tmp_path: Path, synth):
    info = write_samples(tmp_path / "a-000000.tar", 5, synth)
    data = (tmp_path / "a-000000.tar").read_bytes()
    assert info == {"name": "a-000000.tar", "samples": 5, "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest()}
    assert len(data) % RECORD == 0
    assert not (tmp_path / "a-000000.tar.tmp").exists()
    with tarfile.open(tmp_path / "a-000000.tar") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [f"k{i:03d}.{e}" for i in range(5) for e in ("json", "png")]
        for m in members:
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (0, 0, 0, "", "", 0o644)
            assert m.pax_headers == {}
        png = tar.extractfile("k003.png").read()
        decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
        np.testing.assert_array_equal(decoded, synth.synthetic_rgb(23, 30, seed=3))  # PNG is lossless
        assert json.loads(tar.extractfile("k003.json").read()) == {"i": 3, "name": "é"}


def test_bytes_identical_across_writes(tmp_path: Path, synth):
    write_samples(tmp_path / "a-000000.tar", 4, synth)
    write_samples(tmp_path / "b-000000.tar", 4, synth)
    assert file_sha256(tmp_path / "a-000000.tar") == file_sha256(tmp_path / "b-000000.tar")


def test_webdataset_reads_samples(tmp_path: Path, synth):
    write_samples(tmp_path / "a-000000.tar", 3, synth)
    samples = list(wds.WebDataset(str(tmp_path / "a-000000.tar"), shardshuffle=False))  # no decoder: raw bytes
    assert [s["__key__"] for s in samples] == ["k000", "k001", "k002"]
    assert all(set(s) >= {"png", "json"} and isinstance(s["png"], bytes) for s in samples)


@pytest.mark.skipif(shutil.which("tar") is None, reason="no tar executable on this machine")
def test_gnu_tar_lists_members(tmp_path: Path, synth):
    write_samples(tmp_path / "a-000000.tar", 2, synth)
    listing = subprocess.run(["tar", "-tvf", str(tmp_path / "a-000000.tar")], capture_output=True, text=True,
                             check=True).stdout.splitlines()
    assert len(listing) == 4 and all(" 0/0 " in line and "1970-01-01" in line for line in listing)


@pytest.mark.parametrize("key, files, message", [
    ("a.b", {"png": b"x"}, "no dots"),
    ("a/b", {"png": b"x"}, "no dots or slashes"),
    ("", {"png": b"x"}, "must match"),
    ("ok", {}, "no files"),
    ("ok", {"PNG": b"x"}, "extension"),
])
def test_invalid_keys_rejected(key, files, message):
    with pytest.raises(ValueError, match=message):
        sample_bytes(key, files)


def test_abort_leaves_nothing(tmp_path: Path):
    writer = ShardWriter(tmp_path / "x-000000.tar")
    writer.add("a", {"txt": b"1"})
    assert (tmp_path / "x-000000.tar.tmp").exists() and not (tmp_path / "x-000000.tar").exists()
    writer.abort()
    assert list(tmp_path.iterdir()) == []
