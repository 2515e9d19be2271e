"""Offline degraded pairs: determinism, replay of the records through degrade.apply, resume, folders."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import degrade
from pipelines.data_jobs.pairs import PairConfig, make_pairs, prepare_gt
from shards.manifest import read_manifest
from shards.read import resolve_shards


def pngs(data: bytes) -> np.ndarray:
    return np.ascontiguousarray(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1])


def read_pairs(folder: Path) -> list[tuple[np.ndarray, np.ndarray, dict, bytes]]:
    out = []
    for entry in read_manifest(folder)["shards"]:
        with tarfile.open(folder / entry["name"]) as tar:
            names = tar.getnames()
            for name in names[::3]:
                key = name.split(".")[0]
                assert names[names.index(name) : names.index(name) + 3] == [f"{key}.gt.png", f"{key}.json",
                                                                             f"{key}.lq.png"]
                lq_png = tar.extractfile(f"{key}.lq.png").read()
                out.append((pngs(tar.extractfile(f"{key}.gt.png").read()), pngs(lq_png),
                            json.loads(tar.extractfile(f"{key}.json").read()), lq_png))
    return out


def replay(gt: np.ndarray, record: dict, config: degrade.DegradationConfig) -> np.ndarray:
    """The LQ recomputed from the GT and the stored record alone."""
    x = torch.from_numpy(gt).permute(2, 0, 1)[None].float().div(255.0)
    if record["usm"]:
        x = degrade.usm_sharpen(x)
    lq = degrade.apply(x, degrade.DegradationParams.from_records([record["params"]]), config)
    return (lq[0] * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, synth):
    return synth.write_shards(tmp_path_factory.mktemp("gt"), [4, 3], size=72)


def test_determinism_and_replay(inputs, tmp_path: Path):
    folder, images = inputs
    cfg = PairConfig(shards=str(folder), out=tmp_path / "a", seed=3, count=3, shard_size=2, gt_size=64)
    report = make_pairs(cfg)
    assert report.manifest["complete"] and report.manifest["totals"]["pairs"] == 3
    assert [e["samples"] for e in report.manifest["shards"]] == [2, 1]
    make_pairs(PairConfig(**{**cfg.__dict__, "out": tmp_path / "b"}))
    for entry in report.manifest["shards"]:
        assert (tmp_path / "a" / entry["name"]).read_bytes() == (tmp_path / "b" / entry["name"]).read_bytes()
    pairs = read_pairs(tmp_path / "a")
    keys = sorted(images)[:3]  # input order: shard order, then sample order
    for (gt, lq, record, _), key in zip(pairs, keys, strict=True):
        assert record["source_key"] == key
        np.testing.assert_array_equal(gt, prepare_gt(images[key], 64, 4))
        assert gt.shape == (64, 64, 3) and lq.shape == (16, 16, 3)
        np.testing.assert_array_equal(replay(gt, record, cfg.degradation), lq)
    other = make_pairs(PairConfig(**{**cfg.__dict__, "out": tmp_path / "c", "seed": 4, "count": 1}))
    assert other.manifest["shards"][0]["sha256"] != report.manifest["shards"][0]["sha256"]
    with pytest.raises(ValueError, match="describes pairs"):
        resolve_shards(str(tmp_path / "a"))


def test_usm_and_custom_config_replay(inputs, tmp_path: Path):
    folder, _ = inputs
    config = degrade.DegradationConfig(scale=2, per_sample=True)
    cfg = PairConfig(shards=str(folder / "train-{000000..000001}.tar"), out=tmp_path / "u", count=2, usm=True,
                     degradation=config)
    make_pairs(cfg)
    for gt, lq, record, _ in read_pairs(tmp_path / "u"):
        assert gt.shape == (72, 72, 3) and lq.shape == (36, 36, 3) and record["usm"]
        np.testing.assert_array_equal(replay(gt, record, config), lq)


def crash_on_third_pair(monkeypatch) -> None:
    """Make pipelines.data_jobs.pairs.degrade_pair raise on its third call (a crash in the middle of a job)."""
    import pipelines.data_jobs.pairs as pairs

    calls = []
    original = pairs.degrade_pair

    def crash_on_third(gt, index, c):
        calls.append(index)
        if len(calls) == 3:
            raise RuntimeError("simulated crash")
        return original(gt, index, c)

    monkeypatch.setattr(pairs, "degrade_pair", crash_on_third)


def test_resume_after_crash_is_byte_identical(inputs, tmp_path: Path, monkeypatch):
    folder, _ = inputs
    cfg = PairConfig(shards=str(folder), out=tmp_path / "ref", seed=1, shard_size=2, count=3)
    make_pairs(cfg)
    crash_on_third_pair(monkeypatch)
    interrupted = PairConfig(**{**cfg.__dict__, "out": tmp_path / "int"})
    with pytest.raises(RuntimeError, match="simulated crash"):
        make_pairs(interrupted)
    monkeypatch.undo()
    assert read_manifest(tmp_path / "int")["cursor"]["index"] == 2
    (tmp_path / "int" / "pairs-000001.tar.tmp").write_bytes(b"partial")  # as a kill -9 would leave it
    report = make_pairs(interrupted)
    assert report.resumed and report.pairs_written == 1
    ref = read_manifest(tmp_path / "ref")
    assert read_manifest(tmp_path / "int")["shards"] == ref["shards"]
    assert make_pairs(interrupted).already_complete


def test_folders_format_matches_shards_and_resumes(inputs, tmp_path: Path, monkeypatch):
    folder, _ = inputs
    base = PairConfig(shards=str(folder), out=tmp_path / "s", seed=2, count=3, shard_size=2)
    make_pairs(base)
    shard_pairs = read_pairs(tmp_path / "s")
    cfg = PairConfig(**{**base.__dict__, "out": tmp_path / "f", "format": "folders"})
    crash_on_third_pair(monkeypatch)
    with pytest.raises(RuntimeError):
        make_pairs(cfg)
    monkeypatch.undo()
    assert not (tmp_path / "f" / "meta_info.txt").exists()  # only the .partial file until complete
    make_pairs(cfg)
    lines = (tmp_path / "f" / "meta_info.txt").read_text().splitlines()
    records = [json.loads(x) for x in (tmp_path / "f" / "records.jsonl").read_text().splitlines()]
    assert len(lines) == len(records) == 3
    for line, record, (_, _, shard_record, lq_png) in zip(lines, records, shard_pairs, strict=True):
        key = record["key"]
        assert line == f"HR/{key}.png, LR/{key}.png"  # generate_meta_info_pairdata.py format
        assert record == shard_record
        assert (tmp_path / "f" / "LR" / f"{key}.png").read_bytes() == lq_png
    assert sorted(p.name for p in (tmp_path / "f" / "HR").iterdir()) == [f"{r['key']}.png" for r in records]


def test_cli_degrade(inputs, tmp_path: Path):
    from cli import main

    folder, _ = inputs
    toml = tmp_path / "deg.toml"
    toml.write_text(degrade.DegradationConfig(scale=2).to_toml())
    args = ["degrade", "--shards", str(folder), "--out", str(tmp_path / "o"), "--count", "1", "--config", str(toml)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "wrote 1 pairs" in result.output
    assert read_pairs(tmp_path / "o")[0][1].shape == (36, 36, 3)
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and "nothing to do" in again.output
    changed = CliRunner().invoke(main, [*args[:-2], "--seed", "9"])
    assert changed.exit_code != 0 and "--overwrite" in changed.output
    toml.write_text("scale = 3\n")
    bad = CliRunner().invoke(main, [*args[:4], str(tmp_path / "p"), *args[5:]])
    assert bad.exit_code != 0 and "scale" in bad.output
