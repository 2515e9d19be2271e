"""Sample encodings chosen at shard time: raw uint8 `.npy` is read back pixel-exactly, never unpickled."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from shards.crop import CropConfig
from shards.manifest import read_manifest
from shards.multiscale import MultiscaleConfig
from shards.prepare import ShardConfig, prepare_shards
from shards.read import LoaderConfig, ShardStream
from shards.stages import Sample, decode_npy, decode_sample
from shards.write import encode_npy, encode_patch


def test_npy_round_trip_is_exact_and_deterministic():
    rgb = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    data = encode_npy(rgb)
    assert data == encode_npy(rgb.copy()) and data == encode_patch(rgb, "npy")
    np.testing.assert_array_equal(np.load(io.BytesIO(data), allow_pickle=False), rgb)  # numpy's own reader agrees
    out = decode_sample(Sample("u", "k", data))
    assert out.dtype == np.uint8 and out.flags.writeable
    np.testing.assert_array_equal(out, rgb)
    with pytest.raises(ValueError, match="HWC RGB"):
        encode_npy(rgb[:, :, 0])


class _Boom:
    def __reduce__(self):
        return (pytest.fail, ("a pickle in a .npy member was loaded",))


def _npy(arr: np.ndarray, **kw) -> bytes:
    out = io.BytesIO()
    np.save(out, arr, **kw)
    return out.getvalue()


@pytest.mark.parametrize("data", [
    _npy(np.array([_Boom()], dtype=object), allow_pickle=True),  # pickled object array: refused, never loaded
    _npy(np.zeros((4, 4, 3), np.float32)),  # not uint8
    _npy(np.zeros((4, 4), np.uint8)),  # not HxWx3
    _npy(np.zeros((4, 4, 4), np.uint8)),
    _npy(np.asfortranarray(np.zeros((4, 5, 3), np.uint8))),  # Fortran order
    _npy(np.zeros((4, 4, 3), np.uint8))[:-1],  # truncated: fewer bytes than the header declares
    _npy(np.zeros((4, 4, 3), np.uint8)) + b"x",  # trailing bytes
    b"\x93NUMPY\x01\x00\x10\x00{'descr': |u1}  \n",  # a header that is not a literal dict
])
def test_anything_but_raw_uint8_rgb_is_undecodable(data):
    assert decode_npy(data) is None and decode_sample(Sample("u", "k", data)) is None


def _members(folder: Path) -> dict[str, bytes]:
    out = {}
    for entry in read_manifest(folder)["shards"]:
        with tarfile.open(folder / entry["name"]) as tar:
            out.update({m.name: tar.extractfile(m).read() for m in tar.getmembers()})
    return out


def test_npy_shards_hold_the_png_pixels_and_load_identically(tmp_path: Path, synth):
    root = tmp_path / "root"
    for i, (h, w) in enumerate([(300, 420), (260, 250), (210, 330)]):
        synth.write_rgb(root / "photos" / f"{i}.png", synth.synthetic_rgb(h, w, i))
    common = dict(src="photos", root=root, crop=CropConfig(160, 96, 10, 100), multiscale="all",
                  variants=MultiscaleConfig((0.75, 0.5), 150, True), shard_size=8, workers=1)
    png = prepare_shards(ShardConfig(out=tmp_path / "png", **common)).manifest
    npy = prepare_shards(ShardConfig(out=tmp_path / "npy", encoding="npy", **common)).manifest
    assert "encoding" not in png["config"] and npy["config"]["encoding"] == "npy"  # recorded; absent = png
    assert png["totals"]["samples"] == npy["totals"]["samples"] > 16
    a, b = _members(tmp_path / "png"), _members(tmp_path / "npy")
    keys = sorted(n[: -len(".png")] for n in a if n.endswith(".png"))
    assert keys == sorted(n[: -len(".npy")] for n in b if n.endswith(".npy"))
    for key in keys:
        assert a[f"{key}.json"] == b[f"{key}.json"]
        np.testing.assert_array_equal(decode_sample(Sample("", key, a[f"{key}.png"])),
                                      np.load(io.BytesIO(b[f"{key}.npy"]), allow_pickle=False))
    # The loader reads either transparently: the same batches, bit for bit.
    for workers in (0, 2):
        batches = []
        for folder in ("png", "npy"):
            cfg = LoaderConfig(str(tmp_path / folder), batch_size=4, patch_size=128, num_workers=workers, seed=5,
                               shuffle_buffer=6)
            batches.append(list(ShardStream(cfg).epoch_batches(0)))
        assert len(batches[0]) == len(batches[1]) > 0
        for x, y in zip(*batches, strict=True):
            assert x.keys == y.keys and torch.equal(x.gt, y.gt)
