"""The GPU check kit's dry run: bench/gpu_check.sh --dry-run runs the kit's own code on CPU with tiny sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))

import gpu_check  # noqa: E402


@pytest.mark.slow
def test_dry_run_runs_every_part_of_the_kit_and_writes_json_and_summary(tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO_ROOT), "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(REPO_ROOT / "bench" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry_run"] is True and report["machine"]["device"] == "cpu"
    cuda_tests, oom_tests = report["tests"]["cuda"], report["tests"]["oom"]
    # The CUDA-marked tests were collected (degrade agreement x2, training x3, upscale fp16) and none failed.
    assert cuda_tests["tests"] >= 6 and cuda_tests["failures"] == cuda_tests["errors"] == 0
    assert oom_tests["tests"] >= 3 and oom_tests["failures"] == oom_tests["errors"] == 0 and oom_tests["skipped"] == 0
    share = report["degrade_share"]
    # Separately timed medians at tiny sizes: only their presence and their ratio are checked, not a timing relation.
    assert share["degrade_crop_pool"]["median_ms"] > 0 and share["bf16_step"]["median_ms"] > 0
    assert share["share_of_step"] == round(share["degrade_crop_pool"]["median_ms"] / share["bf16_step"]["median_ms"], 4)
    steps = report["train_step"]
    for name in ("fp32_b2", "bf16_b2"):
        assert steps[name]["median_ms"] > 0 and steps[name]["samples_per_s"] > 0
    assert steps["bf16_speedup_b2"] > 0
    assert report["upscale"]["untiled"]["ms_per_input_mp"] > 0 and report["upscale"]["tile16"]["tile"] == 16
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("# GPU check (DRY RUN") and "| fp32 | 2 |" in summary and "## Errors" not in summary


def test_summary_names_failed_tests_and_section_errors(tmp_path) -> None:
    (tmp_path / "t.xml").write_text(
        '<testsuites><testsuite tests="3" failures="1" errors="0" skipped="1">'
        '<testcase classname="tests.a" name="test_ok"/><testcase classname="tests.a" name="test_bad"><failure/>'
        '</testcase><testcase classname="tests.a" name="test_skip"><skipped/></testcase></testsuite></testsuites>')
    counts = gpu_check.read_junit(tmp_path / "t.xml")
    assert counts == {"tests": 3, "failures": 1, "errors": 0, "skipped": 1, "failed": ["tests.a::test_bad"]}
    report = {"dry_run": False, "machine": {"device": "cuda"}, "torch": "x", "date_utc": "d",
              "tests": {"cuda": counts, "oom": None}, "upscale": {"error": "OutOfMemoryError: CUDA out of memory"}}
    text = gpu_check.summary_markdown(report)
    assert "1 failed (tests.a::test_bad), 1 skipped" in text and "tests `oom`: not run" in text
    assert "## Errors" in text and "- upscale: OutOfMemoryError" in text
