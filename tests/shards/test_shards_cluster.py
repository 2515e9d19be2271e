"""`shard` on a Dask LocalCluster of worker processes: byte-identical to joblib, resumable, a killed worker survived."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from shards.cluster import assign, cursor_after
from shards.crop import CropConfig
from shards.manifest import read_manifest
from shards.multiscale import MultiscaleConfig
from shards.prepare import ShardConfig, prepare_shards

pytest.importorskip("distributed", reason="the Dask path needs the dist extra: pip install -e '.[dist]'")
REPO = Path(__file__).resolve().parents[2]


def test_assignment_and_cursor_follow_patch_i_in_shard_i_div_s():
    counts = [5, 0, 3, 7, 0]
    shards = assign(counts, 4)
    flat = [(i, j) for shard in shards for i, a, b in shard for j in range(a, b)]
    assert flat == [(i, j) for i, n in enumerate(counts) for j in range(n)]  # every patch once, in order
    assert [sum(b - a for _, a, b in s) for s in shards] == [4, 4, 4, 3]
    assert shards[1] == [(0, 4, 5), (2, 0, 3)]
    assert [cursor_after(counts, n) for n in (0, 4, 5, 8, 15)] == [(0, 0), (0, 4), (1, 0), (3, 0), (4, 0)]


@pytest.fixture(scope="module")
def photos(tmp_path_factory, synth) -> Path:
    root = tmp_path_factory.mktemp("cluster")
    for i, (h, w) in enumerate([(300, 420), (260, 250), (90, 80), (330, 410), (210, 330), (280, 300)]):
        synth.write_rgb(root / "photos" / f"{i}.png", synth.synthetic_rgb(h, w, i))  # #2: too small, skipped
    (root / "photos" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))  # truncated, skipped
    return root


def _cfg(root: Path, out: Path, **kw) -> ShardConfig:
    return ShardConfig(src="photos", root=root, out=out, crop=CropConfig(160, 96, 10, 100), multiscale="all",
                       variants=MultiscaleConfig((0.75, 0.5), 150, True), shard_size=7, workers=1, **kw)


def _same_output(a: Path, b: Path) -> None:
    assert read_manifest(a) == read_manifest(b)
    # OUT/.lock is the job lock's file (shards.atomic.folder_lock): a kill -9 releases the flock but leaves the
    # empty file, which the next job takes over; it is not part of the output.
    names = lambda folder: sorted(p.name for p in folder.iterdir() if p.name != ".lock")  # noqa: E731
    assert names(a) == names(b)
    for entry in read_manifest(a)["shards"]:
        assert (a / entry["name"]).read_bytes() == (b / entry["name"]).read_bytes(), entry["name"]


@pytest.fixture(scope="module")
def local_run(photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "out"
    m = prepare_shards(_cfg(photos, out)).manifest
    assert m["totals"]["skipped"] == 2 and m["totals"]["shards"] > 4
    return out


@pytest.mark.slow
def test_local_cluster_output_is_byte_identical(photos, local_run, tmp_path, capsys):
    report = prepare_shards(_cfg(photos, tmp_path / "dask", scheduler="local:2"))
    assert report.retried_tasks == 0 and report.shards_written == read_manifest(local_run)["totals"]["shards"]
    _same_output(tmp_path / "dask", local_run)
    # Its bars are the jobs' one bar: into a log (not a terminal) only each bar's first and last state.
    bars = capsys.readouterr().err.replace("\r", "\n")
    for name in ("planning images", "writing shards"):
        lines = [line for line in bars.splitlines() if line.startswith(name)]
        assert 1 <= len(lines) <= 2, lines


def _cli(photos: Path, out: Path) -> list[str]:
    return [sys.executable, str(REPO / "cli.py"), "shard", "--src", "photos", "--root", str(photos), "--out", str(out),
            "--crop-size", "160", "--step", "96", "--thresh", "10", "--min-size", "100", "--multiscale", "all",
            "--scales", "0.75,0.5", "--shortest-edge", "150", "--shard-size", "7", "--scheduler", "local:2"]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


@pytest.mark.slow
def test_driver_killed_with_kill_9_resumes_identically(photos, local_run, tmp_path):
    out = tmp_path / "dask"
    job = subprocess.Popen(_cli(photos, out), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env=ENV, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and job.poll() is None:
            try:
                if read_manifest(out)["shards"]:
                    break
            except Exception:  # noqa: BLE001 - not written yet
                pass
            time.sleep(0.01)
        assert job.poll() is None, "the job finished before it could be killed"
        os.killpg(job.pid, signal.SIGKILL)  # the driver and its LocalCluster, at once
    finally:
        job.wait()
    partial = read_manifest(out)
    assert not partial["complete"] and partial["shards"]
    resumed = prepare_shards(_cfg(photos, out, scheduler="local:2"))
    assert resumed.resumed
    _same_output(out, local_run)


def _holders_of_tmp(out: Path) -> list[int]:
    """PIDs of processes with a `*.tar.tmp` of `out` open: a worker in the middle of writing a shard."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            targets = [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except OSError:
            continue
        if any(t.startswith(str(out)) and t.endswith(".tar.tmp") for t in targets):
            pids.append(int(entry.name))
    return pids


def _kill_the_worker_writing(command: list[str], out: Path) -> tuple[int | None, subprocess.Popen, str]:
    """Run a Dask job and SIGKILL the first worker caught holding a shard's ``.tmp`` file under ``out``;
    returns the killed pid (None if none was caught), the finished job and its output."""
    job = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    killed = None
    try:
        deadline = time.monotonic() + 300
        while killed is None and job.poll() is None and time.monotonic() < deadline:
            holders = _holders_of_tmp(out)
            if holders:
                killed = holders[0]
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.005)
        output = job.communicate(timeout=600)[0]
    finally:
        job.kill()
    return killed, job, output


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker writing a shard through /proc")
def test_worker_killed_mid_task_is_rescheduled_and_output_identical(photos, local_run, tmp_path):
    out = tmp_path / "dask"
    killed, job, output = _kill_the_worker_writing(_cli(photos, out), out)
    assert killed is not None, "no worker was caught writing a shard"
    assert job.returncode == 0, output
    retried = [line for line in output.splitlines() if line.startswith("dask: ")]
    assert retried and int(retried[0].split()[1]) >= 1, output
    _same_output(out, local_run)
    assert not list(out.glob("*.tmp"))
    np.testing.assert_equal(read_manifest(out)["totals"], read_manifest(local_run)["totals"])


def test_unshared_output_and_bad_scheduler_are_one_line_errors(photos, tmp_path):
    from shards.cluster import ClusterError, Piece, connect, plan_image, write_shard
    from shards.patches import PatchPlan
    from shards.sources import SourceFile

    plan = PatchPlan(CropConfig(160, 96, 10, 100), MultiscaleConfig(), 3)
    with pytest.raises(FileNotFoundError, match="cannot see the output folder .*storage every worker shares"):
        write_shard(str(tmp_path / "elsewhere"), "train", 0, 7, [], plan)
    ghost = SourceFile("photos", tmp_path / "nope.png", "photos/nope.png", False)
    with pytest.raises(FileNotFoundError, match="cannot see the source .*storage every worker shares"):
        plan_image(ghost, plan)
    with pytest.raises(RuntimeError, match="changed while sharding"):
        write_shard(str(tmp_path), "train", 0, 7, [Piece(SourceFile("p", photos / "photos/0.png", "p/0.png", False),
                                                          0, 10_000)], plan)
    assert not list(tmp_path.glob("*.tmp"))  # the aborted shard left nothing behind
    for bad in ("local:0", "local:x", "http://host:8786"):
        with pytest.raises(ClusterError, match="local:N"):
            connect(bad)


@pytest.mark.slow
def test_degrade_on_a_local_cluster_is_byte_identical(tmp_path, synth):
    from pipelines.data_jobs.pairs import PairConfig, make_pairs
    from shards.cluster import ClusterError

    gt, _ = synth.write_shards(tmp_path / "gt", [4, 3, 5], size=72)
    base = dict(shards=str(gt), seed=3, count=9, shard_size=2, gt_size=64)
    local = make_pairs(PairConfig(out=tmp_path / "local9", **base))
    assert local.pairs_written == 9
    # A local run that died after 2 pair shards, finished on the cluster (shards 2-4 written by Dask tasks, the
    # last one short and starting inside an input shard): identical to the local run.
    import pipelines.data_jobs.pairs as pairs

    real = pairs.degrade_pair

    def crash_at_5(gt, index, cfg):
        if index == 5:
            raise RuntimeError("simulated crash")
        return real(gt, index, cfg)

    pairs.degrade_pair = crash_at_5
    try:
        with pytest.raises(RuntimeError, match="simulated crash"):
            make_pairs(PairConfig(out=tmp_path / "mixed", **base))
    finally:
        pairs.degrade_pair = real
    assert read_manifest(tmp_path / "mixed")["cursor"]["index"] == 4
    resumed = make_pairs(PairConfig(out=tmp_path / "mixed", scheduler="local:2", **base))
    assert resumed.resumed and resumed.pairs_written == 5
    _same_output(tmp_path / "mixed", tmp_path / "local9")
    with pytest.raises(ClusterError, match="--format shards only"):
        make_pairs(PairConfig(shards=str(gt), out=tmp_path / "f", format="folders", scheduler="local:1"))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker writing a shard through /proc")
def test_degrade_worker_killed_mid_task_is_rescheduled_and_output_identical(tmp_path, synth):
    from pipelines.data_jobs.pairs import PairConfig, make_pairs

    gt, _ = synth.write_shards(tmp_path / "gt", [8, 8], size=72)
    make_pairs(PairConfig(shards=str(gt), out=tmp_path / "local", seed=3, shard_size=4, gt_size=64))
    out = tmp_path / "dask"
    command = [sys.executable, str(REPO / "cli.py"), "degrade", "--shards", str(gt), "--out", str(out), "--seed", "3",
               "--shard-size", "4", "--gt-size", "64", "--scheduler", "local:2"]
    killed, job, output = _kill_the_worker_writing(command, out)
    assert killed is not None, "no worker was caught writing a pair shard"
    assert job.returncode == 0, output
    retried = [line for line in output.splitlines() if line.startswith("dask: ")]
    assert retried and int(retried[0].split()[1]) >= 1, output
    _same_output(out, tmp_path / "local")
    assert not list(out.glob("*.tmp"))
