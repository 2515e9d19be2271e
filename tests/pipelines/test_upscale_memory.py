"""upscale assembles its output in place, band by band (issue 14 item 11): same bits, bounded memory.

The memory itself is measured by ``bench/upscale_memory.py`` (peak RSS, not asserted here).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

import pipelines.inference.tiling as tiling
from pipelines.inference.enhance import TileState, enhance, merge_image, run_model, split_image, upscale_alpha
from tests.conftest import single_thread_fixture
from tests.pipelines.test_upscale import photo, tiny

one_thread = single_thread_fixture()


def whole_image_accumulator(model, image, tile, overlap, batch):
    """The previous implementation: one float32 HR accumulator for the whole image."""
    scale, factor = int(model.scale), tiling.unshuffle_factor(model)
    _, channels, height, width = image.shape
    ys, sy = tiling.axis_windows(height, tile, overlap, factor)
    xs, sx = tiling.axis_windows(width, tile, overlap, factor)
    wy, wx = tiling.axis_weights(ys, sy, scale), tiling.axis_weights(xs, sx, scale)
    windows = [(i, j) for i in range(len(ys)) for j in range(len(xs))]
    out = torch.zeros(1, channels, height * scale, width * scale)
    for first in range(0, len(windows), batch):
        group = windows[first : first + batch]
        crops = torch.cat([image[..., ys[i] : ys[i] + sy, xs[j] : xs[j] + sx] for i, j in group])
        result = model(crops.contiguous(memory_format=torch.channels_last)).float()
        for k, (i, j) in enumerate(group):
            weight = (wy[i][:, None] * wx[j][None, :]).float()
            top, left = ys[i] * scale, xs[j] * scale
            out[..., top : top + sy * scale, left : left + sx * scale] += result[k] * weight
    return out


@pytest.mark.parametrize("scale,size,tile,overlap,batch", [
    (4, (37, 53), 16, 4, 1), (4, (37, 53), 16, 4, 3), (2, (30, 22), 10, 2, 2), (1, (24, 40), 12, 4, 5),
])
def test_banded_assembly_is_bit_identical_to_a_whole_image_accumulator(scale, size, tile, overlap, batch):
    net = tiny(scale, seed=3)
    factor = tiling.unshuffle_factor(net)
    image = torch.rand(1, 3, size[0] // factor * factor, size[1] // factor * factor,
                       generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = whole_image_accumulator(net, image, tile, overlap, batch)
        bands = []
        tiling.tiled_forward_rows(net, image, tile, overlap, batch, None,
                                  lambda top, rows: bands.append((top, rows.clone())))
        got = tiling.tiled_forward(net, image, tile, overlap, batch)
    assert len(bands) > 1 and bands[0][0] == 0
    assert all(a + r.shape[-2] == b for (a, r), (b, _) in zip(bands, bands[1:], strict=False))  # contiguous, ordered
    assert torch.equal(torch.cat([r for _, r in bands], dim=-2), expected)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("kind", ["rgb", "gray", "rgba", "rgba16", "gray16"])
def test_enhance_in_place_equals_merging_whole_float_images(kind):
    net = tiny(4, seed=1)
    bgr = photo(29, 41)
    image = {"rgb": bgr, "gray": cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY),
             "rgba": np.dstack([bgr, np.linspace(0, 255, 29 * 41).reshape(29, 41).astype(np.uint8)]),
             "rgba16": np.dstack([bgr, bgr[:, :, 0]]).astype(np.uint16) * 257,
             "gray16": bgr[:, :, 1].astype(np.uint16) * 251}[kind]
    state = TileState(tile=12, overlap=4, batch=2)
    split = split_image(image)
    rgb = run_model(net, split.rgb, TileState(12, 4, 2))
    alpha = None if split.alpha is None else upscale_alpha(net, split.alpha, "realesrgan", TileState(12, 4, 2))
    expected = merge_image(rgb, alpha, split.mode, split.dtype)
    got, mode = enhance(net, image, state)
    assert mode == split.mode and got.dtype == image.dtype
    assert np.array_equal(got, expected)
