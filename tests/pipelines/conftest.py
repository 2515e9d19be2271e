"""Fixtures shared by the training tests."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from cli import main
from tests.conftest import REPO_ROOT, SAMPLES_DIR
from tests.shards.conftest import synth  # noqa: F401  (the synthetic-shards fixture, for the pair-job tests)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """The bundled photos cut into 128-pixel patches, 17 per shard (one copy per test module, as before)."""
    out = tmp_path_factory.mktemp("shards")
    result = CliRunner().invoke(main, ["shard", "--src", str(SAMPLES_DIR), "--root", str(REPO_ROOT), "--out", str(out),
                                       "--crop-size", "128", "--step", "128", "--min-size", "64",
                                       "--shard-size", "17", "--workers", "1"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out
