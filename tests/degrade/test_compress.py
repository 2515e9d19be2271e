"""The compression mixture: WebP and JPEG chroma samplings against OpenCV's encoders, config, records, replay."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

import degrade
from degrade import ConfigError, DegradationConfig, DegradationParams, StageConfig
from degrade.compress import COMPRESSION_TYPES, JPEG_SAMPLINGS, compress
from pipelines.data_jobs.preview import caption_lines

SAMPLING_FLAGS = {"4:2:0": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420, "4:2:2": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
                  "4:4:4": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444}


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _cv2_roundtrip(rgb: np.ndarray, extension: str, params: list[int]) -> np.ndarray:
    """Independent OpenCV round trip of an HWC RGB uint8 image, as a float in [0, 1]."""
    ok, buf = cv2.imencode(extension, np.ascontiguousarray(rgb[..., ::-1]), params)
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255


def _uint8(images: torch.Tensor) -> np.ndarray:
    return torch.round(images.clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _column(values, dtype=torch.int64):
    return torch.tensor(values, dtype=dtype)


@pytest.mark.parametrize("sampling", JPEG_SAMPLINGS)
def test_jpeg_samplings_equal_opencv_imencode_imdecode(sample_batch, sampling):
    images = sample_batch[:, :, :61, :77]  # odd sizes: partial MCUs
    quality = torch.tensor([30.0, 55.0, 75.0, 95.0])
    sampling_index = _column([JPEG_SAMPLINGS.index(sampling)] * 4)
    out = compress(images, _column([0] * 4), sampling_index, quality, torch.zeros(4))
    for i, rgb in enumerate(_uint8(images)):
        expected = _cv2_roundtrip(rgb, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, int(quality[i]),
                                                cv2.IMWRITE_JPEG_SAMPLING_FACTOR, SAMPLING_FLAGS[sampling]])
        np.testing.assert_array_equal(out[i].permute(1, 2, 0).numpy(), expected)


def test_samplings_really_differ():
    # Red stripes one pixel wide: chroma subsampled across the stripes is averaged away, along them it is kept.
    # 4:2:2 halves the chroma horizontally only, 4:2:0 in both directions, 4:4:4 not at all.
    def errors(images):
        outs = [compress(images, _column([0]), _column([s]), torch.tensor([90.0]), torch.zeros(1)) for s in range(3)]
        return [float((o - images).abs().mean()) for o in outs]

    rows, columns = torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32)
    rows[0, 0, ::2, :] = 1.0
    columns[0, 0, :, ::2] = 1.0
    e420, e422, e444 = errors(rows)
    assert e422 < e420 / 2 and e444 < e420 / 2
    e420, e422, e444 = errors(columns)
    assert e444 < e422 / 2 and e444 < e420 / 2


def test_webp_equals_opencv_imencode_imdecode(sample_batch):
    quality = torch.tensor([10.0, 40.0, 80.0, 100.0])  # 100 is still lossy WebP (OpenCV: > 100 is lossless)
    out = compress(sample_batch, _column([1] * 4), _column([0] * 4), torch.full((4,), 50.0), quality)
    for i, rgb in enumerate(_uint8(sample_batch)):
        expected = _cv2_roundtrip(rgb, ".webp", [cv2.IMWRITE_WEBP_QUALITY, int(quality[i])])
        np.testing.assert_array_equal(out[i].permute(1, 2, 0).numpy(), expected)
    assert not torch.equal(out[3], torch.round(sample_batch[3] * 255) / 255)  # lossy


def test_mixed_batch_equals_each_sample_alone(sample_batch):
    kind, sampling = _column([0, 1, 0, 0]), _column([0, 0, 1, 2])
    jpeg_q, webp_q = torch.tensor([40.0, 50.0, 60.0, 70.0]), torch.tensor([20.0, 35.0, 20.0, 20.0])
    batch = compress(sample_batch, kind, sampling, jpeg_q, webp_q)
    for i in range(4):
        alone = compress(sample_batch[i : i + 1], kind[i : i + 1], sampling[i : i + 1], jpeg_q[i : i + 1],
                         webp_q[i : i + 1])
        assert torch.equal(alone[0], batch[i])
    # The 4:2:0 JPEG sample is the torch emulation's / libjpeg's usual result.
    assert torch.equal(batch[0], degrade.jpeg_compress(sample_batch[:1], 40.0)[0])


def test_torch_backend_follows_every_sampling_bit_for_bit(sample_batch):
    # The batched emulation (what a GPU runs) against libjpeg through OpenCV, per sample, mixed in one batch.
    kind, sampling = _column([0, 0, 0, 1]), _column([2, 1, 0, 0])
    jpeg_q, webp_q = torch.tensor([35.0, 55.0, 75.0, 50.0]), torch.tensor([50.0, 50.0, 50.0, 45.0])
    emulated = compress(sample_batch, kind, sampling, jpeg_q, webp_q, backend="torch")
    assert torch.equal(emulated, compress(sample_batch, kind, sampling, jpeg_q, webp_q, backend="opencv"))
    flags = (cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422)
    for i, rgb in enumerate(_uint8(sample_batch[:2])):
        expected = _cv2_roundtrip(rgb, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_q[i]),
                                                cv2.IMWRITE_JPEG_SAMPLING_FACTOR, flags[i]])
        np.testing.assert_array_equal(emulated[i].permute(1, 2, 0).numpy(), expected)


def _mixture_stage(**extra) -> StageConfig:
    return StageConfig(compression_types=("jpeg", "webp"), compression_prob=(0.5, 0.5),
                       jpeg_sampling=JPEG_SAMPLINGS, jpeg_sampling_prob=(0.4, 0.3, 0.3), webp_range=(20.0, 90.0),
                       **extra)


def test_default_config_draws_and_records_exactly_as_before():
    # The paper's config draws nothing for the mixture: same params as a config written without the new keys,
    # and records without a "compression" entry.
    params = degrade.sample_params(DegradationConfig(), 4, _gen(0))
    for stage in params.stages:
        assert torch.equal(stage.compression, torch.zeros(4, dtype=torch.int64))
        assert torch.equal(stage.jpeg_sampling, torch.zeros(4, dtype=torch.int64))
    assert all("compression" not in s for r in params.records() for s in r["stages"])
    # Enabling the mixture in stage 2 does not move any other draw: it is drawn after everything else.
    mixed_cfg = DegradationConfig(stages=(DegradationConfig().stages[0], _mixture_stage(blur_sigma=(0.2, 1.5),
                                  blur_prob=0.8, resize_prob=(0.3, 0.4, 0.3), resize_range=(0.3, 1.2),
                                  resize_relative_to="target", noise_range=(1.0, 25.0),
                                  poisson_scale_range=(0.05, 2.5))))
    mixed = degrade.sample_params(mixed_cfg, 4, _gen(0))
    for a, b in zip(params.records(), mixed.records(), strict=True):
        b["stages"][1].pop("compression", None)
        assert a == b


@pytest.fixture(scope="module")
def gt_batch_small(sample_batch):
    return sample_batch[:, :, :64, :64].contiguous()


def test_mixture_records_round_trip_and_replay_bit_identically(gt_batch_small):
    cfg = DegradationConfig(stages=(_mixture_stage(), _mixture_stage(resize_relative_to="target")))
    gt = torch.cat([gt_batch_small, gt_batch_small.flip(-1)])
    lq, params = degrade.degrade(gt, cfg, _gen(3))
    records = json.loads(json.dumps(params.records()))
    kinds = {s.get("compression", {}).get("type", "jpeg") for r in records for s in r["stages"]}
    samplings = {s.get("compression", {}).get("sampling") for r in records for s in r["stages"]}
    assert kinds == {"jpeg", "webp"} and {"4:2:2", "4:4:4"} <= samplings  # the seed exercises every mode
    rebuilt = DegradationParams.from_records(records)
    for old, new in zip(params.stages, rebuilt.stages, strict=True):
        webp = old.compression == 1  # records keep the WebP quality of WebP samples only
        assert torch.equal(old.compression, new.compression) and torch.equal(old.jpeg_sampling[~webp],
                                                                             new.jpeg_sampling[~webp])
        assert torch.equal(old.webp_quality[webp], new.webp_quality[webp])
    assert rebuilt.records() == records
    for i, record in enumerate(records):
        alone = degrade.apply(gt[i : i + 1], DegradationParams.from_records([record]), cfg)
        assert torch.equal(alone[0], lq[i]), f"sample {i} differs when replayed alone"


def test_mixture_toml_round_trip_and_captions():
    cfg = DegradationConfig(stages=(_mixture_stage(), _mixture_stage(resize_relative_to="target")))
    text = cfg.to_toml()
    assert "compression_types" in text and "webp_range" in text
    assert DegradationConfig.from_toml(text) == cfg
    record = degrade.sample_params(cfg, 8, _gen(1)).records()
    captions = [" ".join(caption_lines(r)) for r in record]
    webp = [r["stages"][0]["compression"]["quality"] for r in record if
            r["stages"][0].get("compression", {}).get("type") == "webp"]
    assert webp and any(f"webp q{webp[0]:.0f}" in c for c in captions)
    assert any(s in c for c in captions for s in ("4:2:2", "4:4:4"))


@pytest.mark.parametrize("values,match", [
    ({"compression_types": ("jpeg", "gif"), "compression_prob": (0.5, 0.5)}, "compression_types"),
    ({"compression_types": ("jpeg", "webp"), "compression_prob": (1.0,)}, "compression_prob"),
    ({"compression_types": ("jpeg", "webp"), "compression_prob": (0.7, 0.7)}, "compression_prob"),
    ({"jpeg_sampling": ("4:1:1",), "jpeg_sampling_prob": (1.0,)}, "jpeg_sampling"),
    ({"jpeg_sampling": ("4:4:4", "4:4:4"), "jpeg_sampling_prob": (0.5, 0.5)}, "jpeg_sampling"),
    ({"webp_range": (0.0, 50.0)}, "webp_range"),
    ({"webp_range": (60.0, 101.0)}, "webp_range"),
    ({"video_crf_range": (20.0, 60.0)}, "video_crf_range"),
])
def test_config_errors_name_the_key(values, match):
    with pytest.raises(ConfigError, match=match):
        StageConfig(**values)


def test_toml_errors_name_the_file_key(tmp_path):
    path = tmp_path / "deg.toml"
    path.write_text(DegradationConfig().to_toml().replace('compression_types = ["jpeg"]',
                                                          'compression_types = ["jpeg", "avif"]', 1))
    with pytest.raises(ConfigError, match=r"deg\.toml.*compression_types"):
        DegradationConfig.load(path)


def test_compression_names_are_stable():
    # Records store these names; their order is the index stored in DegradationParams.
    assert COMPRESSION_TYPES == ("jpeg", "webp", "h264", "hevc") and JPEG_SAMPLINGS == ("4:2:0", "4:2:2", "4:4:4")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(np.float64) - b) ** 2)))


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_video_frame_is_deterministic_lossy_and_follows_the_crf(sample_batch, codec):
    pytest.importorskip("av", reason="H.264/HEVC compression needs PyAV: install .[video]")
    from degrade.codecs import video_frame_roundtrip

    rgb = _uint8(sample_batch[:1, :, :45, :67])[0]  # odd sides: padded to macroblocks, cropped back
    frames = {crf: video_frame_roundtrip(rgb, codec, crf) for crf in (15, 30, 45)}
    assert all(f.shape == rgb.shape and f.dtype == np.uint8 for f in frames.values())
    np.testing.assert_array_equal(video_frame_roundtrip(rgb, codec, 30), frames[30])  # same bits every time
    psnr = [_psnr(frames[crf], rgb) for crf in (15, 30, 45)]
    assert psnr[0] > psnr[1] > psnr[2] > 15 and psnr[0] < 60  # higher CRF, lower fidelity; never lossless here


def test_video_in_a_mixed_batch_equals_the_frame_alone(sample_batch):
    pytest.importorskip("av", reason="H.264/HEVC compression needs PyAV: install .[video]")
    from degrade.codecs import video_frame_roundtrip

    images = sample_batch[:, :, :40, :40]
    kind, crf = _column([2, 0, 3, 1]), torch.tensor([24.0, 0.0, 33.4, 0.0])
    out = compress(images, kind, _column([0] * 4), torch.full((4,), 60.0), torch.full((4,), 60.0), video_crf=crf)
    rgb = _uint8(images)
    np.testing.assert_array_equal(_uint8(out[:1])[0], video_frame_roundtrip(rgb[0], "h264", 24))
    np.testing.assert_array_equal(_uint8(out[2:3])[0], video_frame_roundtrip(rgb[2], "hevc", 33))  # CRF rounded
    assert torch.equal(out[1], degrade.jpeg_compress(images[1:2], 60.0)[0])


def test_video_mixture_replays_and_records_the_crf(sample_batch):
    pytest.importorskip("av", reason="H.264/HEVC compression needs PyAV: install .[video]")
    stage = StageConfig(compression_types=("jpeg", "h264"), compression_prob=(0.3, 0.7), video_crf_range=(25.0, 35.0))
    cfg = DegradationConfig(stages=(stage, StageConfig(**{**stage.__dict__, "resize_relative_to": "target"})))
    gt = sample_batch[:, :, :64, :64].contiguous()
    lq, params = degrade.degrade(gt, cfg, _gen(2))
    records = json.loads(json.dumps(params.records()))
    crfs = [s["compression"]["crf"] for r in records for s in r["stages"] if "compression" in s]
    assert crfs and all(25 <= c <= 35 for c in crfs)
    assert any("h264 crf" in " ".join(caption_lines(r)) for r in records)
    for i, record in enumerate(records):
        assert torch.equal(degrade.apply(gt[i : i + 1], DegradationParams.from_records([record]), cfg)[0], lq[i])
