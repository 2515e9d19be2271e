"""The compression step of a stage as a per-sample mixture: JPEG (any chroma sampling), WebP, video.

The paper compresses with JPEG only, 4:2:0; that stays the default and runs through `jpeg_compress` (the
batched libjpeg emulation on any device, or OpenCV). The other modes are what images meet on their way
to users (issue 10 §4):

* JPEG with 4:2:2 or 4:4:4 chroma sampling — libjpeg through OpenCV's ``IMWRITE_JPEG_SAMPLING_FACTOR`` on CPU,
  the batched emulation (`jpeg_compress` with ``sampling``, bit-identical) on other devices;
* WebP — libwebp through OpenCV, quality 1-100 (lossy);
* one intra-coded H.264 or HEVC frame — libx264 / libx265 through PyAV (the optional extra ``video``:
  ``pip install -e ".[video]"``), constant rate factor rounded to an integer, one thread
  (so the bitstream, hence the pixels, are deterministic). The frame goes through FFmpeg's RGB → YUV 4:2:0
  conversion (BT.601, limited range) and back (x264 preset "medium", x265 "ultrafast": its slower presets take
  seconds per frame on two cores); sides are replicate-padded to whole 16×16 macroblocks (at
  least 32) for the encoder and cropped after decoding.

WebP and video run one sample at a time on CPU (tensors on another device make a host round trip).
Every sample is encoded on its own, so its result never depends on the rest of the batch (replay).
"""

from __future__ import annotations

import torch
from torch import Tensor

from degrade.codecs import JPEG_SAMPLINGS, opencv_roundtrip
from degrade.jpeg import _quality_per_sample, jpeg_compress

__all__ = ["COMPRESSION_TYPES", "JPEG_SAMPLINGS", "compress"]

COMPRESSION_TYPES: tuple[str, ...] = ("jpeg", "webp", "h264", "hevc")


def compress(images: Tensor, kind: Tensor, sampling: Tensor, jpeg_quality: Tensor, webp_quality: Tensor,
             backend: str = "auto", video_crf: Tensor | None = None) -> Tensor:
    """The compression step: per sample JPEG (sampling ``JPEG_SAMPLINGS[sampling]``), WebP or a video frame.

    Args:
        images: (B, 3, H, W) in [0, 1] (clamped here).
        kind: (B,) int64 indices into `COMPRESSION_TYPES`.
        sampling: (B,) int64 indices into `JPEG_SAMPLINGS` (used by JPEG samples).
        jpeg_quality, webp_quality: (B,) qualities, rounded half to even and clamped to [1, 100].
        video_crf: (B,) constant rate factors of the H.264/HEVC samples, rounded half to even, in [0, 51].
        backend: the JPEG backend (see `jpeg_compress`), for every chroma sampling.

    Returns:
        (B, 3, H, W) decoded images on the 1/255 grid.
    """
    images = images.clamp(0, 1)
    kind, sampling = kind.cpu(), sampling.cpu()
    if bool(((kind == 0) & (sampling == 0)).all()):  # the paper's step: JPEG 4:2:0 only
        return jpeg_compress(images, jpeg_quality.to(images.device), backend=backend)
    b = images.shape[0]
    quality = torch.where(kind == 1, _quality_per_sample(webp_quality.cpu(), b, torch.device("cpu")),
                          _quality_per_sample(jpeg_quality.cpu(), b, torch.device("cpu")))
    if video_crf is not None:
        crf = torch.round(video_crf.cpu().to(torch.float64)).clamp(0, 51).to(torch.int64)
        quality = torch.where(kind >= 2, crf, quality)
    out = torch.empty_like(images)
    for index, name in enumerate(JPEG_SAMPLINGS):  # JPEG, batched per chroma sampling
        rows = torch.nonzero((kind == 0) & (sampling == index)).flatten()
        if rows.numel():
            dev_rows = rows.to(images.device)
            out[dev_rows] = jpeg_compress(images[dev_rows], quality[rows].to(images.device), backend=backend,
                                          sampling=name)
    rows = torch.nonzero(kind != 0).flatten()
    if rows.numel():
        dev_rows = rows.to(images.device)
        out[dev_rows] = opencv_roundtrip(images[dev_rows], [COMPRESSION_TYPES[int(k)] for k in kind[rows]],
                                         quality[rows], [JPEG_SAMPLINGS[int(s)] for s in sampling[rows]])
    return out
