"""One progress bar for the commands (`pipelines.common.progress_bar`, tqdm on stderr): what it shows.

shard, degrade, upscale, evaluate and calibrate draw the same bar (`DESC: PCT%|bar| DONE/TOTAL [time, rate,
details]`); the library functions take a callback or a flag and the job layer renders. A log file (not a
terminal) gets the first and the final state, not a line per update.
"""

from __future__ import annotations

import io
import json

import cv2
import pytest
from click.testing import CliRunner

from cli import main
from pipelines.common import SnapshotBar, progress_bar
from shards.manifest import read_manifest
from shards.prepare import Progress
from tests.conftest import REPO_ROOT, SAMPLES_DIR, load_sample_rgb


def _last_draw(text: str) -> str:
    """The bar as last drawn: tqdm redraws with a carriage return."""
    return text.rstrip("\n").split("\r")[-1].split("\n")[-1]


def test_bar_in_a_log_file_writes_the_start_and_the_end_only() -> None:
    log = io.StringIO()  # not a tty
    bar = progress_bar(50, "shard", "image", initial=20, file=log)
    for _ in range(30):
        bar.update(1)
    bar.close()
    draws = [d for d in log.getvalue().replace("\n", "\r").split("\r") if d]
    assert len(draws) == 2, draws  # 30 quick updates inside the 30-s log interval: none drawn
    assert draws[0].startswith("shard:  40%") and "| 20/50 " in draws[0]  # resumed: starts at the earlier work
    assert draws[1].startswith("shard: 100%") and "| 50/50 " in draws[1] and "image/s" in draws[1]


def test_disabled_bar_writes_nothing_but_its_messages() -> None:
    log = io.StringIO()
    bar = progress_bar(3, "upscale", "image", enabled=False, file=log)
    bar.update(3)
    bar.write("FAILED a.png", file=log)
    bar.close()
    assert log.getvalue() == "FAILED a.png\n"


def test_snapshot_bar_shows_done_total_samples_shards_skipped_of_the_last_snapshot() -> None:
    log = io.StringIO()
    bar = SnapshotBar("shard", "image", file=log)
    # a resumed run: 4 images were done before, this run does 5..7 of 7
    for done, samples, shards, skipped in [(5, 12, 1, 0), (6, 20, 2, 1), (7, 31, 3, 1)]:
        bar(Progress(done, 7, done - 4, samples, shards, skipped, 0.1))
    bar.close()
    first, last = _last_draw(log.getvalue().split("\r")[1]), _last_draw(log.getvalue())
    assert "| 4/7 " in first  # created at the first snapshot with the earlier run's work as its start
    assert last.startswith("shard: 100%") and "| 7/7 " in last
    assert last.endswith("image/s, samples 31, shards 3, skipped 1]")


def test_snapshot_bar_without_a_known_total_counts_without_a_percentage() -> None:
    log = io.StringIO()
    bar = SnapshotBar("degrade", "pair", file=log)
    for done in (1, 2, 3):
        bar(Progress(done, 0, done, done, 0, 0, 0.1))  # degrade of shards without a manifest: total unknown
    bar.close()
    last = _last_draw(log.getvalue())
    assert last.startswith("degrade: 3pair [") and "%" not in last and last.endswith("samples 3, shards 0, skipped 0]")


def test_shard_and_degrade_commands_draw_the_bar_with_the_manifest_totals(tmp_path) -> None:
    out = tmp_path / "shards"
    result = CliRunner().invoke(main, ["shard", "--src", str(SAMPLES_DIR), "--root", str(REPO_ROOT), "--out", str(out),
                                       "--crop-size", "128", "--step", "128", "--min-size", "64", "--shard-size", "17",
                                       "--workers", "1"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    totals = read_manifest(out)["totals"]
    last = _last_draw(result.stderr)
    sources = totals["sources"]  # every image file: used + skipped
    assert last.startswith("shard: 100%") and f"| {sources}/{sources} " in last
    assert last.endswith(f"samples {totals['samples']:,}, shards {totals['shards']}, skipped {totals['skipped']}]")
    assert "wrote" in result.stdout and "shard:" not in result.stdout  # the summary stays on stdout, as before

    pairs = tmp_path / "pairs"
    result = CliRunner().invoke(main, ["degrade", "--shards", str(out), "--out", str(pairs), "--count", "3",
                                       "--shard-size", "2"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    last = _last_draw(result.stderr)
    assert last.startswith("degrade: 100%") and "| 3/3 " in last and "pair/s" in last
    assert last.endswith("samples 3, shards 1, skipped 0]")  # 2 pairs per shard: the second shard ends after the bar
    assert json.loads((pairs / "manifest.json").read_text())["totals"] == {"pairs": 3, "shards": 2}


def test_evaluate_and_calibrate_draw_the_same_bar(tmp_path, capsys) -> None:
    lq = tmp_path / "lq"
    lq.mkdir()
    rgb = load_sample_rgb("coffee.png")
    for name, (y, x) in {"a": (0, 0), "b": (40, 60)}.items():
        cv2.imwrite(str(lq / f"{name}.png"), cv2.cvtColor(rgb[y:y + 24, x:x + 32], cv2.COLOR_RGB2BGR))
    result = CliRunner().invoke(main, ["evaluate", "--lq", str(lq), "--bicubic", "-o", str(tmp_path / "report")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    last = _last_draw(result.stderr)
    assert last.startswith("evaluate: 100%") and "| 2/2 " in last and "output/s" in last  # 2 images x bicubic

    from pipelines.data_jobs.calibrate import _progress

    bar = _progress(4, True)
    for _ in range(4):
        bar.update(1)
    bar.close()
    last = _last_draw(capsys.readouterr().err)
    assert last.startswith("calibrate: 100%") and "| 4/4 " in last and "sim/s" in last
    _progress(4, False).close()
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("quiet", [False, True])
def test_upscale_command_draws_the_images_bar_unless_quiet(tmp_path, quiet) -> None:
    import torch

    from models.rrdbnet import RRDBNet
    from models.weights import export_generator

    net = RRDBNet(scale=4, num_feat=8, num_block=1, num_grow_ch=4, generator=torch.Generator().manual_seed(0))
    export_generator(tmp_path / "w.pth", net, net)
    for name in ("a", "b"):
        cv2.imwrite(str(tmp_path / f"{name}.png"), load_sample_rgb("chelsea.png")[:12, :16, ::-1].copy())
    args = [str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(tmp_path / "out"),
            "--weights", str(tmp_path / "w.pth"), "--device", "cpu", "--threads", "1"]
    result = CliRunner().invoke(main, ["upscale", *args, *(["-q"] if quiet else [])], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    if quiet:
        assert result.stderr == ""
    else:
        last = _last_draw(result.stderr)
        assert last.startswith("upscale: 100%") and "| 2/2 " in last and "image/s" in last
        assert f"[2/2] {tmp_path / 'b.png'} -> {tmp_path / 'out' / 'b_out.png'}" in result.stderr
