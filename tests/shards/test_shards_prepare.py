"""The shard job end to end: patch counts, exact pixels, manifest, bad inputs, resume, CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from shards import decode
from shards.crop import CropConfig, crop_boxes
from shards.manifest import read_manifest
from shards.multiscale import MultiscaleConfig
from shards.prepare import ShardConfig, ShardJobError, prepare_shards
from shards.write import file_sha256

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"
CROP = (160, 96, 10, 100)  # crop, step, thresh, min_size: small so the test images give many patches
VARIANTS = ((0.75, 0.5, 1 / 3), 200, True)  # the reference factors, shortest edge 200, keep original


def config(root: Path, out: Path, src: str = "DF2K+OST", **over) -> ShardConfig:
    kwargs = dict(src=src, root=root, out=out, crop=CropConfig(*CROP), variants=MultiscaleConfig(*VARIANTS),
                  shard_size=8, workers=1)
    return ShardConfig(**{**kwargs, **over})


def exif_jpeg(path: Path, rgb: np.ndarray, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(path, "JPEG", exif=exif.tobytes(), quality=92)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, request) -> Path:
    """DIV2K + Flickr2K (-> DF2K, multiscale) and OST with categories, plus every kind of bad file."""
    synth = request.getfixturevalue("synth")
    root = tmp_path_factory.mktemp("data")
    div2k, flickr, ost = root / "DIV2K/DIV2K_train_HR", root / "Flickr2K/Flickr2K_HR", root / "OST/OutdoorSceneTrain_v2"
    synth.write_rgb(div2k / "0001.png", synth.synthetic_rgb(300, 420, 1))
    synth.write_rgb(div2k / "0002.png", synth.synthetic_rgb(260, 250, 2))  # multiscale copies too small: dropped
    synth.write_rgb(div2k / "0003.png", synth.synthetic_rgb(130, 500, 3))  # short side kept whole
    deep = (synth.synthetic_rgb(210, 230, 4).astype(np.uint16) * 257 + 77)  # 16-bit
    flickr.mkdir(parents=True)
    assert cv2.imwrite(str(flickr / "000001.png"), deep[:, :, ::-1])
    cv2.imwrite(str(flickr / "000002.png"), synth.synthetic_rgb(240, 330, 5)[:, :, 0])  # grayscale
    (ost / "animal").mkdir(parents=True)
    exif_jpeg(ost / "animal" / "cat.jpg", synth.synthetic_rgb(180, 260, 6), orientation=6)
    rgba = np.dstack([synth.synthetic_rgb(170, 190, 7), np.full((170, 190), 9, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(ost / "animal" / "fox.png")
    synth.write_rgb(ost / "sky" / "blue.png", synth.synthetic_rgb(320, 180, 8))
    # Bad inputs, one of each kind.
    png = cv2.imencode(".png", synth.synthetic_rgb(200, 200, 9))[1].tobytes()
    (ost / "sky" / "cut.png").write_bytes(png[: len(png) // 2])  # truncated
    (ost / "sky" / "notes.png").write_bytes(b"this is not an image")  # not an image
    synth.write_rgb(ost / "sky" / "tiny.png", synth.synthetic_rgb(60, 300, 10))  # too small
    (ost / "sky" / "gone.jpg").symlink_to(root / "missing.jpg")  # unreadable
    cv2.imwrite(str(ost / "sky" / "float.tiff"), np.zeros((120, 120, 3), np.float32))  # unsupported
    (ost / "sky" / "ab.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x01junk" * 30 + b"IEND")  # corrupt
    (ost / "sky" / "README.txt").write_text("ignored: no image suffix")
    return root


EXPECTED_SKIPS = {"sky/cut.png": "truncated", "sky/notes.png": "not_an_image", "sky/tiny.png": "too_small",
                  "sky/gone.jpg": "unreadable", "sky/float.tiff": "unsupported", "sky/ab.png": "corrupt"}


@pytest.fixture(scope="module")
def reference(dataset: Path, tmp_path_factory) -> Path:
    """An uninterrupted run of the job."""
    out = tmp_path_factory.mktemp("reference")
    prepare_shards(config(dataset, out))
    return out


def upright_rgb(path: Path) -> np.ndarray:
    """Independent decode: OpenCV applies EXIF and drops alpha; 16-bit rounded in float64."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw.dtype == np.uint16:
        deep = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_COLOR)
        return np.round(deep[:, :, ::-1].astype(np.float64) * 255 / 65535).astype(np.uint8)
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]


def windows(length: int) -> int:
    """Crop windows along an axis by closed form (see test_shards_crop.expected_count)."""
    crop, step, thresh, min_size = CROP
    if length < crop:
        return int(length >= min_size)
    return (length - crop) // step + 1 + int((length - crop) % step > thresh)


def expected_variants(w: int, h: int, multiscale: bool) -> dict[tuple[int, int], int]:
    """(w, h) of each variant, S-ms size rules, -> patch count."""
    sizes = [(w, h)]
    if multiscale:
        sizes += [(int(w * s), int(h * s)) for s in VARIANTS[0]]
        if min(w, h) > VARIANTS[1]:
            e = VARIANTS[1]
            sizes.append((e, int(e * h / w)) if w < h else (int(e * w / h), e))
    return {size: windows(size[1]) * windows(size[0]) for size in sizes if windows(size[1]) * windows(size[0])}


def read_samples(folder: Path) -> list[tuple[dict, bytes]]:
    manifest = read_manifest(folder)
    samples = []
    for entry in manifest["shards"]:
        with tarfile.open(folder / entry["name"]) as tar:
            names = tar.getnames()
            assert len(names) == 2 * entry["samples"]
            for name in names[::2]:
                key = name.split(".")[0]
                meta = json.loads(tar.extractfile(f"{key}.json").read())
                assert meta["key"] == key
                samples.append((meta, tar.extractfile(f"{key}.png").read()))
    return samples


def check_patches(root: Path, folder: Path, multiscale: set[str]) -> Counter:
    """Every sample equals the crop of the PIL-resized source; every expected patch is present once."""
    samples = read_samples(folder)
    assert [m["index"] for m, _ in samples] == list(range(len(samples)))
    assert len({m["key"] for m, _ in samples}) == len(samples)
    per_source: dict[str, list[dict]] = defaultdict(list)
    cache: dict[tuple, np.ndarray] = {}
    for meta, png in samples:
        per_source[meta["source"]].append(meta)
        if meta["source"] not in cache:
            cache = {meta["source"]: upright_rgb(root / meta["source"])}  # samples come source by source
        src = cache[meta["source"]]
        assert meta["source_size"] == list(src.shape[:2])
        vh, vw = meta["variant_size"]
        if (vw, vh) not in cache:
            cache[vw, vh] = src if meta["variant"] == "orig" else np.asarray(
                Image.fromarray(src).resize((vw, vh), Image.LANCZOS))
        variant = cache[vw, vh]
        box = meta["crop"]
        expected = variant[box["top"] : box["top"] + box["height"], box["left"] : box["left"] + box["width"]]
        got = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
        np.testing.assert_array_equal(got, expected, err_msg=meta["key"])
    for rel, metas in per_source.items():
        h, w = metas[0]["source_size"]
        expected = expected_variants(w, h, metas[0]["dataset"] in multiscale)
        got = Counter((m["variant_size"][1], m["variant_size"][0]) for m in metas)
        assert got == expected, rel
        for size in expected:
            assert sorted(m["patch"] for m in metas if (m["variant_size"][1], m["variant_size"][0]) == size) \
                == list(range(expected[size]))
    return Counter({rel: len(m) for rel, m in per_source.items()})


def test_counts_pixels_and_manifest(dataset: Path, reference: Path):
    per_source = check_patches(dataset, reference, multiscale={"DIV2K", "Flickr2K"})
    m = read_manifest(reference)
    assert m["complete"]
    assert sum(per_source.values()) == m["totals"]["samples"] == sum(e["samples"] for e in m["shards"])
    assert all(e["samples"] == 8 for e in m["shards"][:-1]) and 1 <= m["shards"][-1]["samples"] <= 8
    for entry in m["shards"]:
        path = reference / entry["name"]
        assert path.stat().st_size == entry["bytes"] and file_sha256(path) == entry["sha256"]
    assert m["totals"]["bytes"] == sum(e["bytes"] for e in m["shards"])
    t = m["totals"]
    assert t["sources"] == t["used"] + t["skipped"] == 14 and t["used"] == 8 == len(per_source)
    skipped = {s["path"].split("OutdoorSceneTrain_v2/")[-1]: s["reason"] for s in m["skipped"]}
    assert skipped == EXPECTED_SKIPS
    assert m["counts"]["skipped"] == dict(Counter(EXPECTED_SKIPS.values()))
    assert m["counts"]["converted"] == {decode.CONVERTED_16BIT: 1, decode.GRAY_EXPANDED: 1,
                                        decode.ALPHA_DROPPED: 1, decode.EXIF_ORIENTED: 1}
    assert m["ignored"] == ["OST/OutdoorSceneTrain_v2/sky/README.txt"]
    assert t["dropped_variants"] >= 3  # 0002.png's 1/3 copy and others are under min_size
    # EXIF orientation 6 turned the 260x180 (w x h) cat upright: 260 tall, 180 wide.
    cat = [s for s in read_samples(reference) if s[0]["source"].endswith("cat.jpg")]
    assert cat[0][0]["source_size"] == [260, 180] and cat[0][0]["conversions"] == [decode.EXIF_ORIENTED]


def test_bundled_photos_as_custom_folder(tmp_path: Path):
    photos = tmp_path / "root" / "photos"
    photos.mkdir(parents=True)
    for p in sorted(SAMPLES.glob("*.*g")):
        shutil.copy(p, photos / p.name)
    out = tmp_path / "out"
    report = prepare_shards(config(tmp_path / "root", out, src="photos", multiscale="all", shard_size=50))
    per_source = check_patches(tmp_path / "root", out, multiscale={"photos"})
    assert set(per_source) == {f"photos/{p.name}" for p in SAMPLES.glob("*.*g")}
    assert report.manifest["totals"]["used"] == 4 and report.manifest["totals"]["skipped"] == 0


def test_no_multiscale_and_duplicates(dataset: Path, tmp_path: Path):
    report = prepare_shards(config(dataset, tmp_path / "o", src="DIV2K+DF2K", multiscale="none"))
    m = report.manifest
    assert m["counts"]["skipped"] == {"duplicate": 3}  # DF2K = DIV2K + Flickr2K: DIV2K's 3 files again
    assert m["totals"]["sources"] == 8 and m["totals"]["used"] == 5
    per_source = check_patches(dataset, tmp_path / "o", multiscale=set())
    assert sum(per_source.values()) == m["totals"]["samples"]


def compare_outputs(a: Path, b: Path) -> None:
    """Byte-identical shards and the same manifest (but for nothing: it holds no times or paths of a/b)."""
    ma, mb = read_manifest(a), read_manifest(b)
    assert ma == mb
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for entry in ma["shards"]:
        assert (a / entry["name"]).read_bytes() == (b / entry["name"]).read_bytes(), entry["name"]


def test_resume_after_crash_is_byte_identical(dataset: Path, reference: Path, tmp_path: Path, monkeypatch):
    import shards.prepare as prepare

    original = prepare.publish_shard
    calls = []

    def crash_after_third(writer):
        info = original(writer)  # the third shard is published under its final name...
        calls.append(info)
        if len(calls) == 3:
            raise RuntimeError("simulated crash")  # ...but the manifest is never told
        return info

    out = tmp_path / "out"
    monkeypatch.setattr(prepare, "publish_shard", crash_after_third)
    with pytest.raises(RuntimeError, match="simulated crash"):
        prepare_shards(config(dataset, out))
    monkeypatch.undo()
    m = read_manifest(out)
    assert not m["complete"] and len(m["shards"]) == 2 and (out / "train-000002.tar").exists()
    (out / "train-000003.tar.tmp").write_bytes(b"half a shard")  # as left by a kill -9
    report = prepare_shards(config(dataset, out))
    assert report.resumed and report.shards_written == len(read_manifest(reference)["shards"]) - 2
    compare_outputs(out, reference)


def test_resume_after_kill_9_is_byte_identical(dataset: Path, reference: Path, tmp_path: Path):
    out = tmp_path / "out"
    script = f"""
import sys, time
from pathlib import Path
sys.path.insert(0, {str(REPO)!r})
import shards.prepare as p
from shards.crop import CropConfig, crop_boxes
from shards.multiscale import MultiscaleConfig
add = p.ShardWriter.add
def slow_add(self, key, files):  # slow the job down so the kill lands in the middle
    time.sleep(0.03)
    add(self, key, files)
p.ShardWriter.add = slow_add
p.prepare_shards(p.ShardConfig(src="DF2K+OST", root=Path({str(dataset)!r}), out=Path({str(out)!r}),
    crop=CropConfig(*{CROP!r}), variants=MultiscaleConfig(*{VARIANTS!r}), shard_size=8, workers=1))
"""
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            try:
                if len(json.loads((out / "manifest.json").read_text())["shards"]) >= 2:
                    break
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                pass
            assert proc.poll() is None, "the job ended before it could be killed"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not read_manifest(out)["complete"]
    report = prepare_shards(config(dataset, out))
    assert report.resumed
    compare_outputs(out, reference)


def test_finished_output_is_left_alone(dataset: Path, reference: Path, tmp_path: Path):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    report = prepare_shards(config(dataset, out))
    assert report.already_complete and report.shards_written == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_changed_config_refused_unless_overwrite(dataset: Path, reference: Path, tmp_path: Path):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    with pytest.raises(ShardJobError, match=r"(?s)different configuration.*crop_size: 160 -> 128.*--overwrite"):
        prepare_shards(config(dataset, out, crop=CropConfig(128, 96, 10, 100)))
    report = prepare_shards(config(dataset, out, crop=CropConfig(128, 96, 10, 100), overwrite=True, name="small"))
    assert not any(p.name.startswith("train-") for p in out.iterdir())
    assert report.manifest["config"]["crop"]["crop_size"] == 128 and report.manifest["complete"]


def test_damaged_shard_and_changed_sources_refused(dataset: Path, reference: Path, tmp_path: Path, synth):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    m = read_manifest(out)
    m["complete"] = False  # pretend it was interrupted, so resuming verifies the shards
    (out / "manifest.json").write_text(json.dumps(m))
    data = bytearray((out / "train-000001.tar").read_bytes())
    data[700] ^= 0xFF
    (out / "train-000001.tar").write_bytes(bytes(data))
    with pytest.raises(ShardJobError, match="train-000001.tar: SHA-256 differs"):
        prepare_shards(config(dataset, out))
    root = tmp_path / "copy"
    shutil.copytree(dataset, root, symlinks=True)
    synth.write_rgb(root / "DIV2K/DIV2K_train_HR/0004.png", synth.synthetic_rgb(200, 200, 99))
    with pytest.raises(ShardJobError, match="source files changed"):
        prepare_shards(config(root, reference))
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "train-000000.tar").write_bytes(b"")
    with pytest.raises(ShardJobError, match="no manifest.json"):
        prepare_shards(config(dataset, stray))


def test_two_workers_give_identical_shards(dataset: Path, reference: Path, tmp_path: Path):
    out = tmp_path / "out"
    seen = []
    prepare_shards(config(dataset, out, workers=2), progress=seen.append)
    compare_outputs(out, reference)
    assert seen[-1].images_done == seen[-1].images_total == 14
    assert seen[-1].samples == read_manifest(out)["totals"]["samples"]


def test_cli_shard(dataset: Path, reference: Path, tmp_path: Path):
    from cli import main

    args = ["shard", "--src", "DF2K+OST", "--root", str(dataset), "--crop-size", "160", "--step", "96",
            "--thresh", "10", "--min-size", "100", "--shortest-edge", "200", "--shard-size", "8", "--workers", "1"]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "sources: 14 = used 8 + skipped 6" in result.output and "truncated 1" in result.output
    compare_outputs(tmp_path / "out", reference)
    again = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "out")])
    assert again.exit_code == 0 and "nothing to do" in again.output
    changed = CliRunner().invoke(main, [*args[:-2], "--workers", "1", "--step", "80", "--out", str(tmp_path / "out")])
    assert changed.exit_code != 0 and "step: 96 -> 80" in changed.output
    missing = CliRunner().invoke(main, ["shard", "--src", "DIV2K", "--root", str(tmp_path), "--out",
                                        str(tmp_path / "x")])
    assert missing.exit_code != 0 and "DIV2K_train_HR" in missing.output and "ETH Zurich" in missing.output
    bad = CliRunner().invoke(main, [*args, "--scales", "0.5,two", "--out", str(tmp_path / "y")])
    assert bad.exit_code != 0 and "cannot read scale factors" in bad.output
    (tmp_path / "empty" / "mine").mkdir(parents=True)
    empty = CliRunner().invoke(main, ["shard", "--src", "mine", "--root", str(tmp_path / "empty"), "--out",
                                      str(tmp_path / "z")])
    assert empty.exit_code != 0 and "no image files" in empty.output and "mine" in empty.output


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need a POSIX system")
@pytest.mark.parametrize("workers", [1, 2])
def test_fifo_named_png_is_skipped_not_waited_on(tmp_path: Path, synth, workers: int):
    photos = tmp_path / "root" / "photos"
    synth.write_rgb(photos / "a.png", synth.synthetic_rgb(200, 200, 1))
    os.mkfifo(photos / "b.png")  # no process ever writes to it
    # An alarm turns the old behaviour (open() waiting for a writer forever) into a failure, not a hung suite.
    previous = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("shard blocked on a FIFO"))
    signal.alarm(60)
    try:
        report = prepare_shards(config(tmp_path / "root", tmp_path / "out", src="photos", workers=workers))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    m = report.manifest
    assert m["counts"]["skipped"] == {decode.UNREADABLE: 1} and m["totals"]["used"] == 1
    assert m["skipped"][0]["path"] == "photos/b.png" and "FIFO" in m["skipped"][0]["detail"]
    assert m["totals"]["samples"] == len(crop_boxes(200, 200, CropConfig(*CROP))) > 0
