"""Errors a person can act on (issue 14 item 12) and the preview's decoder (tidy-up: one EXIF policy)."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cli import main, one_line
from pipelines.data_jobs.preview import load_rgb
from shards import decode
from shards.atomic import FolderBusy, folder_lock
from tests.conftest import REPO_ROOT, SAMPLES_DIR


def _exif_jpeg(path, orientation: int) -> np.ndarray:
    """A JPEG whose pixels are stored sideways with an EXIF orientation tag; returns the stored RGB."""
    rng = np.random.default_rng(orientation)
    stored = np.repeat(np.repeat(rng.integers(0, 256, (5, 8, 3), dtype=np.uint8), 8, 0), 8, 1)  # 40x64 blocks
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    path.write_bytes(buffer.getvalue())
    return stored


@pytest.mark.parametrize("orientation", [6, 3, 8])
def test_preview_applies_exif_orientation_as_training_does(tmp_path, orientation):
    _exif_jpeg(tmp_path / "sideways.jpg", orientation)
    preview = load_rgb(tmp_path / "sideways.jpg")
    shards_view = decode.load_image(tmp_path / "sideways.jpg").rgb
    with Image.open(tmp_path / "sideways.jpg") as img:  # independent: PIL's own exif_transpose
        from PIL import ImageOps

        upright = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    assert preview.shape == upright.shape == ((64, 40, 3) if orientation in (6, 8) else (40, 64, 3))
    assert np.array_equal(preview, shards_view)
    assert np.abs(preview.astype(int) - upright.astype(int)).max() <= 2  # decoders differ by IDCT rounding only


def test_preview_keeps_its_16bit_gray_alpha_policy(tmp_path):
    sixteen = np.arange(40 * 50 * 3, dtype=np.uint16).reshape(40, 50, 3) * 7
    cv2.imwrite(str(tmp_path / "a.png"), sixteen)
    expected = np.round(sixteen.astype(np.float64) * 255 / 65535).astype(np.uint8)[:, :, ::-1]
    assert np.array_equal(load_rgb(tmp_path / "a.png"), expected)


def test_preview_gt_size_0_is_a_one_line_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["preview-degradations", str(SAMPLES_DIR / "coffee.png"), "--gt-size", "0",
                                       "--out", str(tmp_path / "p")])
    assert result.exit_code != 0 and "--gt-size must be a positive patch side" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "p").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA, so --device cuda is not an error")
def test_degrade_device_cuda_without_cuda_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["degrade", "--shards", str(tmp_path), "--out", str(tmp_path / "o"),
                                       "--device", "cuda"])
    assert result.exit_code == 2 and "no CUDA device is available" in result.output and "--device cpu" in result.output


def test_a_second_job_on_the_same_out_is_refused_while_the_first_runs(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from shards.atomic import folder_lock
        with folder_lock({str(tmp_path)!r}, "shard job"):
            print("locked", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        busy = rf"another shard job is writing to .* \(process {holder.pid}\)"
        with pytest.raises(FolderBusy, match=busy), folder_lock(tmp_path, "shard job"):
            pass
        result = CliRunner().invoke(main, ["shard", "--src", str(SAMPLES_DIR), "--root", str(REPO_ROOT),
                                           "--out", str(tmp_path), "--workers", "1"])
        assert result.exit_code != 0 and "another shard job is writing to" in result.output
        assert not list(tmp_path.glob("*.tar")) and not (tmp_path / "manifest.json").exists()
    finally:
        holder.kill()
        holder.wait()
    with folder_lock(tmp_path, "shard job"):  # released when its process died: no stale lock
        pass


def test_one_line_of_a_dataloader_worker_error_is_its_message():
    from shards.stages import ShardReadError

    error = ShardReadError("Caught ShardReadError in DataLoader worker process 0.\nOriginal Traceback (most recent "
                           "call last):\n  File x\nshards.stages.ShardReadError: shard problem in shard a.tar: bad")
    assert one_line(error) == "shards.stages.ShardReadError: shard problem in shard a.tar: bad"


def test_the_lock_file_is_removed_when_the_job_ends(tmp_path):
    with folder_lock(tmp_path, "degrade job"):
        assert (tmp_path / ".lock").read_text().strip().isdigit()
    assert list(tmp_path.iterdir()) == []
