"""`cli.py degrade` with a WebP / JPEG-sampling compression mixture: records name the codec, pairs replay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner

import degrade
from tests.pipelines.test_pairs import read_pairs, replay


def test_cli_degrade_with_a_compression_mixture_replays(synth, tmp_path: Path):
    from cli import main

    folder, _ = synth.write_shards(tmp_path / "gt", [4], size=64)
    stage = {"compression_types": ("jpeg", "webp"), "compression_prob": (0.5, 0.5),
             "jpeg_sampling": ("4:2:0", "4:2:2", "4:4:4"), "jpeg_sampling_prob": (0.2, 0.4, 0.4)}
    paper = degrade.DegradationConfig()
    config = degrade.DegradationConfig(stages=tuple(degrade.StageConfig(**{**s.__dict__, **stage})
                                                    for s in paper.stages))
    toml = tmp_path / "deg.toml"
    toml.write_text(config.to_toml())
    result = CliRunner().invoke(main, ["degrade", "--shards", str(folder), "--out", str(tmp_path / "o"),
                                       "--count", "4", "--config", str(toml), "--seed", "1"])
    assert result.exit_code == 0, result.output
    pairs = read_pairs(tmp_path / "o")
    kinds = [s.get("compression", {}).get("type", "jpeg") for _, _, r, _ in pairs for s in r["params"]["stages"]]
    assert "webp" in kinds and len(pairs) == 4
    for gt, lq, record, _ in pairs:
        np.testing.assert_array_equal(replay(gt, record, config), lq)
