"""The streaming loader: coverage across ranks and workers, equal batch counts, determinism, resume,
augmentation pixels, bad shards, specs."""

from __future__ import annotations

import io
import itertools
import logging
import pickle
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from shards import seeds
from shards.manifest import read_manifest, write_manifest
from shards.read import LoaderConfig, ShardStream, resolve_shards, slot_shards, worker_batches
from shards.stages import ShardReadError, gt_patch
from shards.write import ShardWriter, encode_png


def as_images(batch) -> list[np.ndarray]:
    """(B, 3, P, P) float in [0, 1] -> list of HWC uint8 RGB."""
    gt = batch.gt
    assert gt.dtype == torch.float32 and gt.min() >= 0 and gt.max() <= 1
    u8 = (gt * 255).round()
    assert torch.equal(u8, gt * 255) or torch.allclose(u8, gt * 255, atol=1e-4)  # on the 1/255 grid
    return [img.permute(1, 2, 0).numpy().astype(np.uint8) for img in u8]


def epoch_keys(cfg: LoaderConfig, world: int, epoch: int = 0) -> list[list[str]]:
    """Keys per rank for one epoch, checking the batch count."""
    out = []
    for rank in range(world):
        stream = ShardStream(cfg, rank, world)
        batches = list(stream.epoch_batches(epoch))
        assert len(batches) == stream.batches_per_epoch
        out.append([k for b in batches for k in b.keys])
    return out


def test_exactly_once_across_2_ranks_x_2_workers(make_shards):
    folder, images = make_shards([6] * 8)  # 8 shards / 4 slots, 12 samples per worker = 4 batches of 3
    cfg = LoaderConfig(str(folder), batch_size=3, patch_size=24, num_workers=2, seed=5, shuffle_buffer=4)
    for epoch in (0, 1):
        per_rank = epoch_keys(cfg, 2, epoch)
        assert [len(k) for k in per_rank] == [24, 24]
        assert Counter(per_rank[0] + per_rank[1]) == Counter(list(images))  # every sample exactly once
    stream = ShardStream(cfg, 1, 2)
    batch = next(iter(stream))
    for key, img in zip(batch.keys, as_images(batch), strict=True):
        src = images[key]  # patch size = image size: no crop, no pad; flipped or not
        assert np.array_equal(img, src) or np.array_equal(img, src[:, ::-1])


@pytest.mark.parametrize("counts, workers", [([5, 7, 3, 9, 4], 2), ([5, 7, 3, 9, 4], 0), ([10, 3, 11], 2)])
def test_equal_batch_counts_with_uneven_shards(make_shards, counts, workers, caplog):
    folder, _ = make_shards(counts)
    cfg = LoaderConfig(str(folder), batch_size=4, patch_size=24, num_workers=workers, seed=0, shuffle_buffer=3)
    expected = sum(counts) // (2 * 4)
    with caplog.at_level(logging.WARNING, logger="shards.read"):
        per_rank = epoch_keys(cfg, 2)
    assert [len(k) for k in per_rank] == [4 * expected] * 2
    if len(counts) < 2 * max(workers, 1):
        assert "read by several slots" in caplog.text


def test_slot_split_is_a_partition_and_quota_sums():
    urls = [f"u{i}" for i in range(13)]
    for epoch in range(3):
        slots = [slot_shards(urls, 7, epoch, r, 2, w, 3) for r in range(2) for w in range(3)]
        assert sorted(itertools.chain(*slots)) == sorted(urls)
        order = [urls[int(i)] for i in seeds.epoch_permutation(13, 7, epoch)]
        assert slots[0] == order[0::6] and slots[5] == order[5::6]
    assert slot_shards(urls, 7, 0, 0, 2, 0, 3) != slot_shards(urls, 7, 1, 0, 2, 0, 3)  # reshuffled per epoch
    for n, w in itertools.product(range(12), range(1, 5)):
        assert sum(worker_batches(n, i, w) for i in range(w)) == n
        assert [worker_batches(n, i, w) for i in range(w)] == [len(range(i, n, w)) for i in range(w)]


def take(stream: ShardStream, n: int) -> list:
    return list(itertools.islice(iter(stream), n))


def same_batches(a: list, b: list) -> bool:
    return len(a) == len(b) and all(x.keys == y.keys and torch.equal(x.gt, y.gt) for x, y in zip(a, b, strict=True))


def test_determinism_per_seed(make_shards):
    folder, _ = make_shards([6] * 4, size=30)
    cfg = LoaderConfig(str(folder), batch_size=3, patch_size=24, num_workers=2, seed=11, shuffle_buffer=5)
    first = take(ShardStream(cfg, 0, 1), 12)  # 8 batches per epoch: crosses into epoch 1
    assert same_batches(first, take(ShardStream(cfg, 0, 1), 12))
    in_process = LoaderConfig(**{**cfg.__dict__, "num_workers": 0})
    other_seed = LoaderConfig(**{**cfg.__dict__, "seed": 12})
    assert [b.keys for b in take(ShardStream(other_seed, 0, 1), 12)] != [b.keys for b in first]
    assert len(take(ShardStream(in_process, 0, 1), 12)) == 12
    # Epoch 1 is not a replay of epoch 0.
    assert [b.keys for b in first[8:12]] != [b.keys for b in first[0:4]]


@pytest.mark.filterwarnings("ignore:This DataLoader will create 3 worker processes")
@pytest.mark.parametrize("workers, stop", [(2, 5), (2, 8), (2, 9), (0, 3), (3, 7)])
def test_resume_continues_at_the_exact_batch(make_shards, workers, stop):
    folder, _ = make_shards([6, 6, 6, 6, 5, 7], size=30)  # 36 samples, batch 4: 9 per epoch (odd for W=2)
    cfg = LoaderConfig(str(folder), batch_size=4, patch_size=24, num_workers=workers, seed=3, shuffle_buffer=6)
    reference = take(ShardStream(cfg, 0, 1), stop + 6)
    interrupted = ShardStream(cfg, 0, 1)
    assert same_batches(take(interrupted, stop), reference[:stop])
    state = interrupted.state_dict()
    # The epoch advances when the next batch is requested, so after exactly 9 the state is (0, 9).
    assert (state["epoch"], state["batch"]) == ((0, stop) if stop <= 9 else (1, stop - 9))
    resumed = ShardStream(cfg, 0, 1)
    resumed.load_state_dict(state)
    assert same_batches(take(resumed, 6), reference[stop:])


def test_changed_workers_keeps_position_and_warns(make_shards, caplog):
    folder, _ = make_shards([6] * 4)
    cfg = LoaderConfig(str(folder), batch_size=3, patch_size=24, num_workers=0)
    state = {**ShardStream(cfg).state_dict(), "batch": 5, "num_workers": 2}
    stream = ShardStream(cfg)
    with caplog.at_level(logging.WARNING, logger="shards.read"):
        stream.load_state_dict(state)
    assert "num_workers=0 (saved: 2)" in caplog.text
    assert len(list(stream.epoch_batches(0, skip=5))) == 8 - 5


@pytest.mark.parametrize("old_world, new_world, batch", [(2, 1, 3), (1, 2, 5), (2, 3, 4)])
def test_world_size_change_keeps_the_samples_consumed(make_shards, old_world, new_world, batch, caplog):
    """2 -> 1 process after k batches of B on R ranks: continue at k*R//R', and the epoch ends after ~T samples."""
    folder, _ = make_shards([6] * 8)  # T = 48
    cfg = LoaderConfig(str(folder), batch_size=3, patch_size=24, num_workers=0, seed=1)
    old = ShardStream(cfg, 0, old_world)  # N = 48 // (R * 3) batches per rank
    state = {**old.state_dict(), "batch": batch}
    new = ShardStream(cfg, 0, new_world)
    with caplog.at_level(logging.WARNING, logger="shards.read"):
        new.load_state_dict(state)
    assert f"world_size={new_world} (saved: {old_world})" in caplog.text
    consumed = batch * old_world * 3  # samples the old run took this epoch, over all its ranks
    assert (new.epoch, new.batch) == (0, consumed // (new_world * 3))
    left = sum(len(b.keys) for b in itertools.islice(new, new.batches_per_epoch - new.batch)) * new_world
    assert abs(consumed + left - 48) < new_world * 3  # the epoch holds T samples, up to one global batch
    assert new.epoch == 0 and new.batch == new.batches_per_epoch  # and no more: the next batch starts epoch 1


@pytest.mark.parametrize("rot", [False, True])
def test_gt_patch_pad_crop_and_flips_match_numpy(rot):
    rng = np.random.default_rng(0)
    for h, w in [(20, 30), (30, 20), (24, 24), (9, 40), (50, 50)]:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for _ in range(6):
            u = rng.random(5)
            out = gt_patch(img, u, 24, True, rot)
            # Reference: numpy 'reflect' padding is BORDER_REFLECT_101 (edge pixel not repeated).
            ref = np.pad(img, ((0, max(24 - h, 0)), (0, max(24 - w, 0)), (0, 0)), mode="reflect")
            top = int(np.floor(u[3] * (ref.shape[0] - 24 + 1)))
            left = int(np.floor(u[4] * (ref.shape[1] - 24 + 1)))
            ref = ref[top : top + 24, left : left + 24]
            ref = ref[:, ::-1] if u[0] < 0.5 else ref
            if rot:
                ref = ref[::-1] if u[1] < 0.5 else ref
                ref = ref.transpose(1, 0, 2) if u[2] < 0.5 else ref
            np.testing.assert_array_equal(out, ref)
    extreme = gt_patch(img, np.array([0.9, 0.9, 0.9, 1 - 1e-12, 1 - 1e-12]), 24, True, False)
    np.testing.assert_array_equal(extreme, img[-24:, -24:])


def test_patches_trace_back_to_sources_with_crop_and_pad(make_shards):
    folder, images = make_shards([4, 4], size=20)  # smaller than the patch: reflect-101 padded
    cfg = LoaderConfig(str(folder), batch_size=4, patch_size=26, num_workers=0, shuffle_buffer=0)
    for batch in take(ShardStream(cfg), 2):
        for key, img in zip(batch.keys, as_images(batch), strict=True):
            padded = np.pad(images[key], ((0, 6), (0, 6), (0, 0)), mode="reflect")
            assert np.array_equal(img, padded) or np.array_equal(img, padded[:, ::-1])
    uint8 = LoaderConfig(**{**cfg.__dict__, "uint8": True})
    batch = take(ShardStream(uint8), 1)[0]
    assert batch.gt.dtype == torch.uint8 and batch.gt.shape == (4, 3, 26, 26)


def test_missing_and_corrupt_shards_are_skipped_and_counted(make_shards, caplog):
    folder, images = make_shards([6] * 6)
    (folder / "train-000002.tar").unlink()
    data = (folder / "train-000004.tar").read_bytes()
    (folder / "train-000004.tar").write_bytes(data[:2000])  # cut inside the first sample's data
    cfg = LoaderConfig(str(folder), batch_size=3, patch_size=24, num_workers=0, seed=1)
    stream = ShardStream(cfg, 0, 1)
    with caplog.at_level(logging.WARNING, logger="shards.read"):
        batches = take(stream, stream.batches_per_epoch)
    assert len(batches) == 12  # still the full epoch: the worker starts over on its readable shards
    assert set(stream.bad_shards) == {str(folder / "train-000002.tar"), str(folder / "train-000004.tar")}
    assert "train-000002.tar" in caplog.text and "cannot open" in caplog.text
    assert "train-000004.tar" in caplog.text
    strict = LoaderConfig(**{**cfg.__dict__, "strict": True})
    with pytest.raises(ShardReadError, match="train-00000[24].tar"):
        take(ShardStream(strict), 12)
    with pytest.raises(ShardReadError, match="train-00000[24].tar"):
        take(ShardStream(LoaderConfig(**{**strict.__dict__, "num_workers": 2})), 12)


def test_undecodable_sample_counted_and_pickles_never_loaded(tmp_path: Path, synth):
    marker = tmp_path / "unpickled"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    folder = tmp_path / "s"
    folder.mkdir()
    writer = ShardWriter(folder / "train-000000.tar")
    for i in range(6):
        png = b"not a png" if i == 2 else encode_png(synth.tile_image(i, 16))
        writer.add(f"k{i}", {"png": png, "pickle": pickle.dumps(Evil())})
    writer.finish()
    cfg = LoaderConfig(str(folder / "train-000000.tar"), batch_size=5, patch_size=16, num_workers=0,
                       epoch_samples=6, shuffle_buffer=0)
    stream = ShardStream(cfg)
    batch = take(stream, 1)[0]
    assert batch.keys == ["k0", "k1", "k3", "k4", "k5"]
    assert stream.bad_samples == Counter({str(folder / "train-000000.tar"): 1})
    assert not marker.exists()


def test_shard_specs(make_shards, tmp_path: Path):
    folder, images = make_shards([5, 6, 7])
    by_dir = resolve_shards(str(folder))
    assert by_dir.total_samples == 18 and len(by_dir.urls) == 3
    pattern = resolve_shards(str(folder / "train-{000000..000001}.tar"))  # counts from the manifest beside
    assert pattern.total_samples == 11 and pattern.urls == tuple(str(folder / f"train-00000{i}.tar") for i in (0, 1))
    listed = resolve_shards([str(folder / "train-000002.tar")])
    assert listed.total_samples == 7
    piped = f"pipe:cat {folder}/train-{{000000..000002}}.tar"
    with pytest.raises(ValueError, match="epoch_samples"):
        resolve_shards(piped)
    assert resolve_shards(piped, manifest=str(folder / "manifest.json")).total_samples == 18
    cfg = LoaderConfig(piped, batch_size=6, patch_size=24, num_workers=0, epoch_samples=18)
    keys = [k for b in ShardStream(cfg).epoch_batches(0) for k in b.keys]
    assert sorted(keys) == sorted(images)  # pipe: URLs stream like files
    m = read_manifest(folder)
    write_manifest(folder, {**m, "complete": False})
    with pytest.raises(ValueError, match="has not finished"):
        resolve_shards(str(folder))
    with pytest.raises(ValueError, match="fewer than world_size x batch_size"):
        ShardStream(LoaderConfig(str(folder / "train-000000.tar"), batch_size=4, epoch_samples=5), 0, 2)
    with pytest.raises(ValueError, match="rank"):
        ShardStream(cfg, 2, 2)


def test_reads_gzipped_tar(tmp_path: Path, synth):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for i in range(4):
            data = encode_png(synth.tile_image(i, 16))
            info = tarfile.TarInfo(f"dir/x{i}.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (tmp_path / "a.tar.gz").write_bytes(raw.getvalue())
    cfg = LoaderConfig(str(tmp_path / "a.tar.gz"), batch_size=4, patch_size=16, num_workers=0, epoch_samples=4,
                       shuffle_buffer=0, hflip=False)
    batch = take(ShardStream(cfg), 1)[0]
    assert batch.keys == [f"dir/x{i}" for i in range(4)]
    np.testing.assert_array_equal(as_images(batch)[2], synth.tile_image(2, 16))
