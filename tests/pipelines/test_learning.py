"""Learning check: a small RRDBNet trained for a few minutes on CPU beats bicubic on held-out crops.

This runs the real pipeline end to end (shard job, offline degraded pairs, `train` with its own validation,
the exported weights) and checks that training learns something bicubic upsampling cannot: undoing the
paper's second-order degradation (blur, resize, noise and JPEG, twice, with the final sinc filter).

Held-out data: each bundled photo is split by columns; the right-most 128 columns are held out (cut into
128x128 crops and degraded once with a fixed seed), an 8-pixel gap is dropped, and the rest is the
training set. The validation set is therefore disjoint in pixels but from the same four photos: a
different photo cannot serve as held-out data here, because a model trained on three photos for minutes
learns their content, and on a fourth one (rocket) it lost to bicubic in every setting tried.

Margin: measured on a 2-core CPU, torch 2.13.0, with the settings below (EMA weights after 1,500
iterations, PSNR as BasicSR computes it on the 15 held-out crops, bicubic 23.12 dB): seed 0 with 2
threads (this test) 23.84 dB, +0.73 dB; seeds 1 and 2 with 1 thread +0.79 and +0.75 dB. The assertion
asks for MIN_MARGIN_DB = 0.3, about 40 % of the smallest: training is bit-reproducible on one machine, but
other CPUs or thread counts change the float rounding and with it the trajectory (the spread above);
a pipeline that learns too little lands below bicubic (the EMA weights after 250 iterations scored
20.7-21.5 dB on this set).

Precision: the check runs in fp32 everywhere and in bf16 autocast where the CPU runs bf16 natively (AMX or
AVX512-BF16, as torch reports it); elsewhere torch would only emulate bf16, many times slower, so the bf16
case is skipped there with that reason. The bf16 margin has not been measured yet (no such CPU was
available when it was added); it must clear the same MIN_MARGIN_DB.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from degrade import DegradationConfig
from models.rrdbnet import RRDBNet
from models.weights import load_generator_state_dict, load_into
from pipelines.data_jobs.pairs import PairConfig, make_pairs
from pipelines.hardware import cpu_capabilities, native_bf16
from pipelines.training.metrics import psnr
from pipelines.training.train import train
from pipelines.training.train_config import load_train_config
from pipelines.training.validate import read_pairs, validate
from shards.crop import CropConfig
from shards.prepare import ShardConfig, prepare_shards
from tests.conftest import SAMPLES_DIR

HELD_OUT_COLUMNS = 128
GAP_COLUMNS = 8
ITERATIONS = 1500
MIN_MARGIN_DB = 0.3
NETWORK = ["network.num_feat=32", "network.num_block=1", "network.num_grow_ch=16"]


def split_photos(train_dir, held_out_dir) -> None:
    """Left part of every bundled photo -> train_dir, right-most HELD_OUT_COLUMNS -> held_out_dir."""
    train_dir.mkdir()
    held_out_dir.mkdir()
    for path in sorted(SAMPLES_DIR.glob("*.*")):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:  # LICENSE.md
            continue
        width = image.shape[1]
        cv2.imwrite(str(train_dir / f"{path.stem}.png"), image[:, : width - HELD_OUT_COLUMNS - GAP_COLUMNS])
        cv2.imwrite(str(held_out_dir / f"{path.stem}.png"), image[:, width - HELD_OUT_COLUMNS :])


def prepare_learning_data(tmp_path) -> None:
    """tmp_path/shards (training patches), tmp_path/val (held-out pairs degraded once, seed 7)."""
    split_photos(tmp_path / "train", tmp_path / "held_out")
    prepare_shards(ShardConfig(src=str(tmp_path / "train"), root=tmp_path, out=tmp_path / "shards",
                               crop=CropConfig(128, 64, 0, 128), multiscale="none", shard_size=200, workers=1))
    prepare_shards(ShardConfig(src=str(tmp_path / "held_out"), root=tmp_path, out=tmp_path / "held_out_shards",
                               crop=CropConfig(128, 128, 0, 128), multiscale="none", workers=1))
    make_pairs(PairConfig(shards=str(tmp_path / "held_out_shards"), out=tmp_path / "val",
                          degradation=DegradationConfig(), seed=7))


def bicubic_psnr(pairs) -> float:
    scores = []
    for pair in pairs:
        height, width = pair.gt.shape[:2]
        scores.append(psnr(cv2.resize(pair.lq, (width, height), interpolation=cv2.INTER_CUBIC), pair.gt, 4))
    return float(np.mean(scores))


def _precisions():
    cpu = torch.device("cpu")
    caps = cpu_capabilities()
    reason = (f"bf16 learning check needs a CPU with native bf16 (AMX or AVX512-BF16); this one "
              f"({caps.get('cpu_name', 'unknown')}, {torch.backends.cpu.get_cpu_capability()}) would only emulate it")
    return ["fp32", pytest.param("bf16", marks=pytest.mark.skipif(not native_bf16(cpu), reason=reason))]


@pytest.mark.slow
@pytest.mark.parametrize("precision", _precisions())
def test_small_model_trained_minutes_on_cpu_beats_bicubic_on_held_out_crops(tmp_path, precision) -> None:
    prepare_learning_data(tmp_path)
    run_dir = tmp_path / "run"
    cfg = load_train_config("net", None, [
        f"data.shards='{tmp_path / 'shards'}'", "data.batch_size=4", "data.patch_size=128", "data.gt_size=64",
        "data.num_workers=0", "data.shuffle_buffer=64", *NETWORK, "queue_size=0",
        f"total_iter={ITERATIONS}", "log_every=250", f"checkpoint_every={ITERATIONS}",
        f"val_shards='{tmp_path / 'val'}'", f"val_every={ITERATIONS}", "val_max_images=100",
        "optim.lr_g=5e-4", "optim.milestones=[900,1200]", "optim.gamma=0.3", "ema_decay=0.99",
        # Against the unsharpened GT, as validation scores it; the paper's L1 target is the USM one.
        "loss.sharpen_gt=false", f"run_dir='{run_dir}'", f"precision='{precision}'",
    ])
    train(cfg, device="cpu", log=lambda *_: None)

    pairs = read_pairs(str(tmp_path / "val"))
    # 128x128 crops every 128 rows plus the border-aligned last one: astronaut 4, chelsea 3, coffee 4, rocket 4
    assert len(pairs) == 15
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    model_psnr = next(entry["val"]["psnr"] for entry in logged if "val" in entry)
    # The exported EMA weights reproduce the training's own validation score.
    state_dict, _ = load_generator_state_dict(str(run_dir / "models" / "net_g_latest.pth"))
    model = RRDBNet(num_feat=32, num_block=1, num_grow_ch=16)
    load_into(model, state_dict)
    scores, _ = validate(model, pairs, 4, torch.device("cpu"))
    assert scores["psnr"] == pytest.approx(model_psnr, abs=1e-6)

    bicubic = bicubic_psnr(pairs)
    margin = model_psnr - bicubic
    print(f"learning check ({precision}): model {model_psnr:.3f} dB, bicubic {bicubic:.3f} dB, margin {margin:.3f} dB")
    assert margin >= MIN_MARGIN_DB, f"model {model_psnr:.2f} dB vs bicubic {bicubic:.2f} dB: margin {margin:.2f} dB"
