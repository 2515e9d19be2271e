"""Shards streamed over HTTP from a real server (http.server on 127.0.0.1, read through curl as webdataset does).

The same epoch, split and resume guarantees as local files (the epoch length comes from a local copy
of the manifest), and a shard that disappears or is truncated on the server mid-epoch is reported and
skipped exactly as a local bad shard is.
"""

from __future__ import annotations

import functools
import itertools
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from shards.manifest import MANIFEST_NAME, read_manifest
from shards.read import LoaderConfig, ShardStream, slot_shards

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="webdataset reads http:// URLs with curl")


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, served folder): a threaded HTTP server on a free port of 127.0.0.1."""
    served = tmp_path / "served"
    served.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    finally:
        httpd.shutdown()
        httpd.server_close()


def _publish(folder: Path, served: Path, base: str) -> tuple[list[str], str]:
    """Copy the shards onto the server; the URLs in manifest order, and a local manifest copy."""
    names = [e["name"] for e in read_manifest(folder)["shards"]]
    for name in names:
        shutil.copy(folder / name, served / name)
    manifest = folder.parent / "local-manifest.json"
    shutil.copy(folder / MANIFEST_NAME, manifest)
    return [f"{base}/{n}" for n in names], str(manifest)


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(x.keys == y.keys and torch.equal(x.gt, y.gt) for x, y in zip(a, b, strict=True))


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_http_shards_give_the_local_epochs_split_and_resume(make_shards, server):
    base, served = server
    folder, images = make_shards([6] * 8)
    urls, manifest = _publish(folder, served, base)
    for workers in (0, 2):
        local = LoaderConfig(str(folder), batch_size=3, patch_size=24, num_workers=workers, seed=5, shuffle_buffer=4)
        remote = LoaderConfig(urls, batch_size=3, patch_size=24, num_workers=workers, seed=5, shuffle_buffer=4,
                              manifest=manifest)
        seen = []
        for rank in range(2):
            a = list(ShardStream(local, rank, 2).epoch_batches(1))
            b = list(ShardStream(remote, rank, 2).epoch_batches(1))
            assert _same(a, b) and len(b) == ShardStream(remote, rank, 2).batches_per_epoch == 8
            seen += [k for batch in b for k in batch.keys]
        assert sorted(seen) == sorted(images)  # every sample exactly once across the 2 ranks
    # Resume at the exact batch, over HTTP.
    remote = LoaderConfig(urls, batch_size=3, patch_size=24, num_workers=0, seed=5, shuffle_buffer=4,
                          manifest=manifest)
    straight = list(itertools.islice(ShardStream(remote, 0, 1), 11))
    first = ShardStream(remote, 0, 1)
    assert _same(list(itertools.islice(first, 6)), straight[:6])
    resumed = ShardStream(remote, 0, 1)
    resumed.load_state_dict(first.state_dict())
    assert _same(list(itertools.islice(resumed, 5)), straight[6:])


@pytest.mark.parametrize("fault", ["disappears", "truncated"])
def test_a_shard_that_disappears_or_is_truncated_mid_epoch_is_skipped_like_a_local_one(make_shards, server,
                                                                                        tmp_path, fault, caplog):
    base, served = server
    folder, _ = make_shards([6] * 6)
    urls, manifest = _publish(folder, served, base)
    kw = dict(batch_size=3, patch_size=24, num_workers=0, seed=1, shuffle_buffer=0)
    # The shard the (only) slot reads last: it is opened long after the epoch started.
    last = slot_shards(urls, 1, 0, 0, 1, 0, 1)[-1].rsplit("/", 1)[1]
    damaged = tmp_path / "local-damaged"
    shutil.copytree(folder, damaged)

    def damage(root: Path) -> None:
        if fault == "disappears":
            (root / last).unlink()
        else:
            (root / last).write_bytes((folder / last).read_bytes()[:2000])  # cut inside the first sample

    damage(damaged)
    local = ShardStream(LoaderConfig(str(damaged), **kw))
    expected = list(itertools.islice(local, local.batches_per_epoch))
    remote = ShardStream(LoaderConfig(urls, manifest=manifest, **kw))
    batches = iter(remote)
    got = [next(batches)]  # mid-epoch: the stream is running, its last shard not opened yet
    damage(served)
    got += list(itertools.islice(batches, remote.batches_per_epoch - 1))
    assert _same(got, expected)  # the same batches as the local run with the same bad shard
    assert list(remote.bad_shards) == [f"{base}/{last}"] and list(local.bad_shards) == [str(damaged / last)]
    assert sum(remote.bad_samples.values()) == sum(local.bad_samples.values()) == 0
    assert f"skipped the rest in shard {base}/{last}" in caplog.text
