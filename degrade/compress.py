"""The compression step of a stage as a per-sample mixture: JPEG (any chroma subsampling) or WebP.

The paper compresses with JPEG only, 4:2:0; that stays the default and runs through `jpeg_compress` (the
batched libjpeg emulation on any device, or OpenCV). The other modes are what images meet on their way
to users (issue 10 §4):

* JPEG with 4:2:2 or 4:4:4 chroma sampling — libjpeg through OpenCV's ``IMWRITE_JPEG_SAMPLING_FACTOR``;
* WebP — libwebp through OpenCV, quality 1-100 (lossy).

Both run through OpenCV one sample at a time (on CPU; tensors on another device make a host round trip).
The torch JPEG emulation covers 4:2:0 only, so ``backend="torch"`` with another sampling is an error.
Every sample is encoded on its own, so its result never depends on the rest of the batch (replay).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

from degrade.jpeg import _quality_per_sample, jpeg_compress

__all__ = ["COMPRESSION_TYPES", "JPEG_SAMPLINGS", "compress", "opencv_roundtrip"]

COMPRESSION_TYPES: tuple[str, ...] = ("jpeg", "webp")
JPEG_SAMPLINGS: tuple[str, ...] = ("4:2:0", "4:2:2", "4:4:4")
_SAMPLING_FLAGS = {"4:2:0": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420, "4:2:2": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
                   "4:4:4": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444}


def _encode_params(kind: str, quality: int, sampling: str) -> tuple[str, list[int]]:
    if kind == "webp":
        return ".webp", [cv2.IMWRITE_WEBP_QUALITY, quality]
    return ".jpg", [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, _SAMPLING_FLAGS[sampling]]


def opencv_roundtrip(images: Tensor, kinds: list[str], qualities: Tensor, samplings: list[str]) -> Tensor:
    """Encode and decode each sample with OpenCV: ``kinds[i]`` ("jpeg"/"webp"), integer quality, JPEG sampling.

    The input is quantized to 8 bits as `jpeg_compress` does (x·255, round half to even, clamp); the result
    is the decoded image / 255 in the input's dtype, on its device.
    """
    source = images.detach().to("cpu", torch.float64 if images.dtype == torch.float64 else torch.float32)
    source = source.contiguous().numpy()
    out = np.empty_like(source)
    work = np.empty_like(source[0])
    for i, (kind, quality, sampling) in enumerate(zip(kinds, qualities.tolist(), samplings, strict=True)):
        np.multiply(source[i], 255, out=work)
        np.rint(work, out=work)
        np.clip(work, 0, 255, out=work)
        bgr = cv2.merge([work[2].astype(np.uint8), work[1].astype(np.uint8), work[0].astype(np.uint8)])
        extension, params = _encode_params(kind, int(quality), sampling)
        ok, encoded = cv2.imencode(extension, bgr, params)
        if not ok:
            raise RuntimeError(f"cv2.imencode({extension!r}) failed on an image of shape {tuple(bgr.shape)}")
        decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
        for c in range(3):
            np.divide(decoded[..., 2 - c], 255, out=out[i, c], dtype=out.dtype)
    return torch.from_numpy(out).to(images.device, images.dtype)


def compress(images: Tensor, kind: Tensor, sampling: Tensor, jpeg_quality: Tensor, webp_quality: Tensor,
             backend: str = "auto") -> Tensor:
    """The compression step: per sample JPEG (sampling ``JPEG_SAMPLINGS[sampling]``) or WebP.

    Args:
        images: (B, 3, H, W) in [0, 1] (clamped here).
        kind: (B,) int64 indices into `COMPRESSION_TYPES`.
        sampling: (B,) int64 indices into `JPEG_SAMPLINGS` (used by JPEG samples).
        jpeg_quality, webp_quality: (B,) qualities, rounded half to even and clamped to [1, 100].
        backend: the JPEG backend for 4:2:0 samples (see `jpeg_compress`); "torch" cannot do other samplings.

    Returns:
        (B, 3, H, W) decoded images on the 1/255 grid.
    """
    images = images.clamp(0, 1)
    kind, sampling = kind.cpu(), sampling.cpu()
    default = (kind == 0) & (sampling == 0)
    if bool(default.all()):
        return jpeg_compress(images, jpeg_quality.to(images.device), backend=backend)
    if backend == "torch" and bool(((kind == 0) & (sampling != 0)).any()):
        raise ValueError("jpeg_backend 'torch' emulates 4:2:0 JPEG only; use jpeg_backend 'auto' or 'opencv' for "
                         "4:2:2 / 4:4:4 chroma sampling (OpenCV's libjpeg)")
    b = images.shape[0]
    quality = torch.where(kind == 1, _quality_per_sample(webp_quality.cpu(), b, torch.device("cpu")),
                          _quality_per_sample(jpeg_quality.cpu(), b, torch.device("cpu")))
    out = torch.empty_like(images)
    rows = torch.nonzero(default).flatten()
    if rows.numel():
        dev_rows = rows.to(images.device)
        out[dev_rows] = jpeg_compress(images[dev_rows], quality[rows].to(images.device), backend=backend)
    rows = torch.nonzero(~default).flatten()
    dev_rows = rows.to(images.device)
    out[dev_rows] = opencv_roundtrip(images[dev_rows], [COMPRESSION_TYPES[int(k)] for k in kind[rows]],
                                     quality[rows], [JPEG_SAMPLINGS[int(s)] for s in sampling[rows]])
    return out
