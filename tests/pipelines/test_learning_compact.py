"""Learning check for the compact network: a small SRVGGNetCompact trained minutes on CPU beats bicubic.

Same data, split and held-out crops as ``test_learning`` (its helpers are reused), with
``network.arch = "compact"``. The exported weights are loaded back through the architecture detection
(``models.weights.load_generator``) and must reproduce the training's own validation score.

Margin: measured on the shared 2-core CPU (torch 2.13.0, OMP_NUM_THREADS=1; the run continued past 500
iterations with the same trajectory), EMA weights after 500 iterations, PSNR as BasicSR computes it on the
15 held-out crops: model 23.70 dB, bicubic 23.12 dB, +0.58 dB. The compact net adds its output to the
nearest-upsampled input, so an untrained-residual model starts near nearest-neighbour upsampling, 22.87 dB
on this set, 0.25 dB *below* bicubic: beating bicubic needs learning. The assertion asks for
MIN_MARGIN_DB = 0.25, about 40 % of the measured margin, as test_learning does (other CPUs and thread counts
change the float rounding and with it the trajectory; the RRDBNet check measured a spread of 0.06 dB over
seeds and thread counts). 500 iterations (constant Adam 5e-4, EMA 0.99) are a third of test_learning's 1,500
with a cheaper network, so well under its 2.5 minutes on 2 idle cores (not timed idle: the measurement run
shared the machine at load 20-28 and took 25 minutes).
"""

from __future__ import annotations

import json

import pytest
import torch

from models.compact import CompactSpec
from models.weights import load_generator
from pipelines.training.train import train
from pipelines.training.train_config import load_train_config
from pipelines.training.validate import read_pairs, validate
from tests.pipelines.test_learning import bicubic_psnr, prepare_learning_data

ITERATIONS = 500
MIN_MARGIN_DB = 0.25
NETWORK = ["network.arch='compact'", "network.num_feat=32", "network.num_conv=6"]


@pytest.mark.slow
def test_compact_model_trained_minutes_on_cpu_beats_bicubic_on_held_out_crops(tmp_path) -> None:
    prepare_learning_data(tmp_path)
    run_dir = tmp_path / "run"
    cfg = load_train_config("net", None, [
        f"data.shards='{tmp_path / 'shards'}'", "data.batch_size=4", "data.patch_size=128", "data.gt_size=64",
        "data.num_workers=0", "data.shuffle_buffer=64", *NETWORK, "queue_size=0",
        f"total_iter={ITERATIONS}", "log_every=250", f"checkpoint_every={ITERATIONS}",
        f"val_shards='{tmp_path / 'val'}'", f"val_every={ITERATIONS}", "val_max_images=100",
        "optim.lr_g=5e-4", "optim.milestones=[]", "ema_decay=0.99",
        "loss.sharpen_gt=false", f"run_dir='{run_dir}'",
    ])
    train(cfg, device="cpu", log=lambda *_: None)

    pairs = read_pairs(str(tmp_path / "val"))
    assert len(pairs) == 15
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    curve = {entry["iter"]: entry["val"]["psnr"] for entry in logged if "val" in entry}
    model_psnr = curve[ITERATIONS]
    model, resolved = load_generator(str(run_dir / "models" / "net_g_latest.pth"))
    assert resolved.spec == CompactSpec(4, 32, 6, "prelu")
    scores, _ = validate(model, pairs, 4, torch.device("cpu"))
    assert scores["psnr"] == pytest.approx(model_psnr, abs=1e-6)

    bicubic = bicubic_psnr(pairs)
    margin = model_psnr - bicubic
    print(f"compact learning check: model {model_psnr:.3f} dB, bicubic {bicubic:.3f} dB, margin {margin:.3f} dB; "
          f"validation PSNR by iteration {curve}")
    assert margin >= MIN_MARGIN_DB, f"model {model_psnr:.2f} dB vs bicubic {bicubic:.2f} dB: margin {margin:.2f} dB"
