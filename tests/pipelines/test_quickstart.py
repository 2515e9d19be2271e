"""`cli.py quickstart --smallest`: the real pipeline end to end on the bundled photos."""

from __future__ import annotations

import json
import tarfile

import cv2
from click.testing import CliRunner

from cli import main
from models.weights import detect_rrdbnet, load_generator_state_dict


def test_quickstart_runs_end_to_end(tmp_path):
    out = tmp_path / "qs"
    result = CliRunner().invoke(main, ["quickstart", "--smallest", "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"everything is in {out}" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["timings_s"]) == {"shard", "preview", "validation set", "train net", "train gan", "validate",
                                         "upscale"}
    assert 0 < summary["bicubic"]["psnr"] < 60 and 0 < summary["model_scores"]["psnr"] < 60
    assert summary["holdout_niqe"]["bicubic"] is not None and summary["holdout_niqe"]["bicubic"] > 0
    for name in ("summary.md", "preview/preview.png", "preview/records.json", "validation_bicubic_model_gt.png",
                 "rocket_x4.png", "rocket_bicubic_vs_model.png", "shards/train/manifest.json",
                 "runs/net/metrics.jsonl", "runs/gan/models/net_d_latest.pth", "runs/net/curves.png",
                 "runs/net/models/net_g_best.pth"):
        assert (out / name).is_file(), name
    upscaled = cv2.imread(str(out / "rocket_x4.png"))
    assert upscaled.shape == (48 * 4, 64 * 4, 3)  # the held-out crop of the smallest settings, x4
    state, _ = load_generator_state_dict(str(out / "runs" / "gan" / "models" / "net_g_latest.pth"))
    assert detect_rrdbnet(state).scale == 4
    # The held-out photo never reaches the training shards.
    sources = set()
    for shard in sorted((out / "shards" / "train").glob("*.tar")):
        with tarfile.open(shard) as tar:
            sources |= {json.load(tar.extractfile(m))["source"] for m in tar if m.name.endswith(".json")}
    assert sources and not any("rocket" in source for source in sources)


def test_quickstart_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    result = CliRunner().invoke(main, ["quickstart", "--smallest", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "not a quickstart folder" in result.output
    assert (tmp_path / "precious.txt").read_text() == "keep me"
