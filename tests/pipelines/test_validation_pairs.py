"""Validation pairs read through the loader's tar stage (shards.stages.tar_members), checked against the
pixels written into the shards (PNG is lossless, so the arrays must come back exactly)."""

from __future__ import annotations

import io
import tarfile

import cv2
import numpy as np
import pytest

from pipelines.training.validate import read_pairs
from shards.stages import Problems, tar_members, tar_samples


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _png(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


def _pair_shard(path, keys, seed, skip=()):
    """Pairs with random pixels, members in the given key order; returns {key: (lq, gt)}."""
    rng, written = np.random.default_rng(seed), {}
    with tarfile.open(path, "w") as tar:
        tar.addfile(tarfile.TarInfo("somedir/"))  # not a regular file: ignored
        for key in keys:
            lq, gt = (rng.integers(0, 256, (s, s + 1, 3), dtype=np.uint8) for s in (6, 24))
            _add(tar, f"{key}.json", b"{}")  # other members of a sample are never decoded
            for kind, image in (("gt", gt), ("lq", lq)):
                if (key, kind) not in skip:
                    _add(tar, f"{key}.{kind}.png", _png(image))
            written[key] = (lq, gt)
    return written


def test_pairs_come_back_exactly_in_shard_name_then_key_order(tmp_path):
    second = _pair_shard(tmp_path / "pairs-000001.tar", ["b", "a"], seed=1)
    first = _pair_shard(tmp_path / "pairs-000000.tar", ["z", "y", "x"], seed=0)
    pairs = read_pairs(str(tmp_path))
    expected = [(k, first[k]) for k in ("x", "y", "z")] + [(k, second[k]) for k in ("a", "b")]
    assert [p.key for p in pairs] == [k for k, _ in expected]
    for pair, (_, (lq, gt)) in zip(pairs, expected, strict=True):
        assert np.array_equal(pair.lq, lq) and np.array_equal(pair.gt, gt)
    assert [p.key for p in read_pairs(str(tmp_path), limit=4)] == ["x", "y", "z", "a"]
    assert [p.key for p in read_pairs(str(tmp_path / "pairs-000001.tar"))] == ["a", "b"]  # one file


def test_a_sample_without_its_lq_and_a_gt_shard_are_named(tmp_path):
    _pair_shard(tmp_path / "pairs-000000.tar", ["a", "b"], seed=0, skip={("b", "lq")})
    with pytest.raises(ValueError, match=r"pairs-000000\.tar: sample b lacks its lq image"):
        read_pairs(str(tmp_path))
    plain = tmp_path / "gt"
    plain.mkdir()
    with tarfile.open(plain / "train-000000.tar", "w") as tar:
        for i in range(3):
            _add(tar, f"{i:06d}.png", _png(np.zeros((8, 8, 3), np.uint8)))
            _add(tar, f"{i:06d}.json", b"{}")
    with pytest.raises(ValueError, match=r"no KEY\.gt\.png \+ KEY\.lq\.png pairs, found 3 plain images \(GT shards"):
        read_pairs(str(plain))


def test_a_shard_that_cannot_be_opened_is_named(tmp_path):
    _pair_shard(tmp_path / "pairs-000000.tar", ["a"], seed=0)
    (tmp_path / "pairs-000001.tar").mkdir()  # matches *.tar but cannot be opened as a file (even as root)
    with pytest.raises(ValueError, match=r"validation shard .*pairs-000001\.tar is corrupt or truncated \(cannot open: "
                                         r"IsADirectoryError"):
        read_pairs(str(tmp_path))


def test_a_local_file_named_like_a_pipe_url_is_read_as_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = "pipe:touch PWNED; cat pairs.tar"
    _pair_shard(tmp_path / name, ["a"], seed=0)
    assert [p.key for p in read_pairs(name)] == ["a"]
    assert not (tmp_path / "PWNED").exists()


def test_tar_members_groups_by_key_and_reads_only_what_is_kept(tmp_path):
    path = tmp_path / "s.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in (("a.gt.png", b"1"), ("a.json", b"j"), ("a.gt.png", b"2"), ("b.PNG", b"3"),
                           ("a.lq.png", b"4")):
            _add(tar, name, data)
    asked = []

    def keep(ext, found):
        asked.append((ext, dict(found)))
        return ext.endswith("png")

    problems = Problems()
    groups = list(tar_members(str(path), problems, keep))
    # consecutive members share a group; a later kept member replaces an earlier one; unkept ones are None
    assert groups == [("a", {"gt.png": b"2", "json": None}), ("b", {"png": b"3"}), ("a", {"lq.png": b"4"})]
    assert asked[2] == ("gt.png", {"gt.png": b"1", "json": None}) and not problems.pending
    # the loader's stage on the same shard: the first plain image of each key (gt.png / lq.png are not one)
    assert [(s.key, s.image) for s in tar_samples(str(path), problems)] == [("b", b"3")]
