"""Per-sample encode/decode round trips through the real codecs: libjpeg and libwebp (OpenCV), x264/x265 (PyAV).

Used by `degrade.jpeg` (its OpenCV backend) and `degrade.compress` (the compression mixture); see the latter
for what each mode does. PyAV is optional (extra ``video``) and imported only when a video frame is encoded.
"""

from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np
import torch
from torch import Tensor

__all__ = ["JPEG_SAMPLINGS", "VIDEO_ENCODERS", "encode_params", "opencv_roundtrip", "video_frame_roundtrip"]

JPEG_SAMPLINGS: tuple[str, ...] = ("4:2:0", "4:2:2", "4:4:4")
_SAMPLING_FLAGS = {"4:2:0": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420, "4:2:2": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
                   "4:4:4": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444}
VIDEO_ENCODERS = {"h264": ("libx264", "h264"), "hevc": ("libx265", "hevc")}  # (encoder, decoder)
PRESETS = {"h264": "medium", "hevc": "ultrafast"}  # x265's slower presets take seconds per frame on 2 cores


def encode_params(kind: str, quality: int, sampling: str) -> tuple[str, list[int]]:
    if kind == "webp":
        return ".webp", [cv2.IMWRITE_WEBP_QUALITY, quality]
    return ".jpg", [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, _SAMPLING_FLAGS[sampling]]


def _import_av():
    try:
        import av
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError('H.264/HEVC compression needs PyAV: pip install -e ".[video]"') from error
    return av


def video_frame_roundtrip(rgb: np.ndarray, codec: str, crf: int) -> np.ndarray:
    """Encode one HWC RGB uint8 image as an intra H.264/HEVC frame at ``crf`` with PyAV and decode it back."""
    av = _import_av()
    h, w = rgb.shape[:2]
    padded_h, padded_w = max(32, -(-h // 16) * 16), max(32, -(-w // 16) * 16)
    padded = cv2.copyMakeBorder(rgb, 0, padded_h - h, 0, padded_w - w, cv2.BORDER_REPLICATE)
    encoder_name, decoder_name = VIDEO_ENCODERS[codec]
    encoder = av.CodecContext.create(encoder_name, "w")
    encoder.width, encoder.height, encoder.pix_fmt = padded_w, padded_h, "yuv420p"
    encoder.time_base = Fraction(1, 25)
    encoder.thread_count = 1
    options = {"crf": str(int(crf)), "preset": PRESETS[codec]}
    if codec == "hevc":
        options["x265-params"] = "log-level=none:pools=1:frame-threads=1"
    else:
        options["threads"] = "1"
    encoder.options = options
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(padded), format="rgb24").reformat(format="yuv420p")
    packets = [*encoder.encode(frame), *encoder.encode(None)]
    decoder = av.CodecContext.create(decoder_name, "r")
    decoder.thread_count = 1
    frames = [f for packet in [*packets, None] for f in decoder.decode(packet)]
    if not frames:
        raise RuntimeError(f"{encoder_name} produced no decodable frame for a {w}x{h} image")
    return np.ascontiguousarray(frames[0].to_ndarray(format="rgb24")[:h, :w])


def opencv_roundtrip(images: Tensor, kinds: list[str], qualities: Tensor, samplings: list[str]) -> Tensor:
    """Encode and decode each sample: ``kinds[i]`` ("jpeg"/"webp" by OpenCV, "h264"/"hevc" by PyAV), integer
    quality (the CRF for video), JPEG sampling.

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
        if kind in VIDEO_ENCODERS:
            rgb = cv2.merge([work[0].astype(np.uint8), work[1].astype(np.uint8), work[2].astype(np.uint8)])
            decoded = video_frame_roundtrip(rgb, kind, int(quality))
            for c in range(3):
                np.divide(decoded[..., c], 255, out=out[i, c], dtype=out.dtype)
            continue
        bgr = cv2.merge([work[2].astype(np.uint8), work[1].astype(np.uint8), work[0].astype(np.uint8)])
        extension, params = encode_params(kind, int(quality), sampling)
        ok, encoded = cv2.imencode(extension, bgr, params)
        if not ok:
            raise RuntimeError(f"cv2.imencode({extension!r}) failed on an image of shape {tuple(bgr.shape)}")
        decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
        for c in range(3):
            np.divide(decoded[..., 2 - c], 255, out=out[i, c], dtype=out.dtype)
    return torch.from_numpy(out).to(images.device, images.dtype)
