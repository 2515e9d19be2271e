"""Untrusted manifests, shards and sources (issue 14 items 13 and 14)."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from cli import main
from shards.manifest import MANIFEST_NAME, ManifestError
from shards.read import LoaderConfig, ShardStream, resolve_shards
from tests.conftest import REPO_ROOT, SAMPLES_DIR
from tests.shards.conftest import write_shards


def _poison(folder, name):
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest["shards"][0]["name"] = name
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))


@pytest.mark.parametrize("name", ["pipe:touch {marker}", "../other.tar", "/etc/passwd", "http://x/a.tar"])
def test_a_manifest_never_makes_the_loader_run_a_command_or_leave_its_folder(tmp_path, monkeypatch, name):
    folder, _ = write_shards(tmp_path / "s", [3, 3])
    marker = tmp_path / "ran"
    _poison(folder, name.format(marker=marker))
    monkeypatch.chdir(folder)  # the worst case: Path(".") / "pipe:cmd" is the string "pipe:cmd"
    with pytest.raises(ManifestError, match="is not a plain file name"):
        resolve_shards(".")
    with pytest.raises(ManifestError, match="is not a plain file name"):
        ShardStream(LoaderConfig(".", batch_size=2, patch_size=24, num_workers=0))
    assert not marker.exists()


def test_a_member_named_like_a_command_is_only_data(tmp_path):
    import io
    import tarfile

    from shards.stages import Problems, tar_samples

    marker = tmp_path / "ran"
    with tarfile.open(tmp_path / "a.tar", "w") as tar:
        for name in (f"pipe:touch {marker}.png", "__url__.png"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
    samples = list(tar_samples(str(tmp_path / "a.tar"), Problems()))
    assert [s.image for s in samples] == [b"abc", b"abc"] and not marker.exists()


def test_a_source_edited_in_place_with_the_same_size_is_noticed(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes((SAMPLES_DIR / "coffee.png").read_bytes())
    args = ["shard", "--src", str(src), "--root", str(tmp_path), "--out", str(tmp_path / "out"),
            "--crop-size", "256", "--step", "256", "--workers", "1"]
    assert CliRunner().invoke(main, args).exit_code == 0
    assert "already complete" in CliRunner().invoke(main, args).output  # unchanged: nothing to do
    before = (src / "a.png").stat()
    data = bytearray((src / "a.png").read_bytes())
    data[-20] ^= 0xFF  # same size, other content
    (src / "a.png").write_bytes(bytes(data))
    os.utime(src / "a.png", ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    again = CliRunner().invoke(main, args)
    assert again.exit_code != 0 and "source files changed" in again.output and "--overwrite" in again.output
    assert REPO_ROOT.is_dir()
