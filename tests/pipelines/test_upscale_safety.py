"""upscale never loses data and never writes garbage (issue 14 items 2 and 6)."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from click.testing import CliRunner

from cli import main
from models.weights import export_generator
from pipelines.inference.upscale import UpscaleConfig, upscale_files
from tests.conftest import single_thread_fixture
from tests.pipelines.test_upscale import _Sink, photo, tiny

one_thread = single_thread_fixture()


def _run(*args):
    return CliRunner().invoke(main, ["upscale", *args], catch_exceptions=False)


def test_empty_suffix_into_the_inputs_folder_never_overwrites_the_input(tmp_path):
    export_generator(tmp_path / "w.pth", tiny(4, seed=1))
    original = photo(10, 12)
    cv2.imwrite(str(tmp_path / "photo.png"), original)
    before = (tmp_path / "photo.png").read_bytes()
    for extra in ([], ["--overwrite"]):  # not even with --overwrite
        result = _run(str(tmp_path / "photo.png"), "-o", str(tmp_path), "--suffix", "", "--weights",
                      str(tmp_path / "w.pth"), "--device", "cpu", *extra)
        assert result.exit_code == 1
        assert "the output name is the input itself" in result.output and "--suffix" in result.output
        assert (tmp_path / "photo.png").read_bytes() == before


def test_existing_outputs_are_kept_unless_overwrite(tmp_path):
    export_generator(tmp_path / "w.pth", tiny(4, seed=1))
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.png"), photo(10, 12))
    cv2.imwrite(str(tmp_path / "in" / "b.png"), photo(8, 8))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a_out.png").write_bytes(b"the user's own file")
    config = UpscaleConfig((tmp_path / "in",), tmp_path / "out", str(tmp_path / "w.pth"), device="cpu", progress=False)
    stream = _Sink()
    summary = upscale_files(config, stream=stream)
    assert (tmp_path / "out" / "a_out.png").read_bytes() == b"the user's own file"
    assert [p.name for p, _ in summary.written] == ["b.png"] and [p.name for p, _ in summary.kept] == ["a.png"]
    assert "1 written, 0 failed, 1 kept (output exists; --overwrite replaces)" in summary.line()
    assert "kept" in stream.text and "a_out.png" in stream.text
    again = upscale_files(UpscaleConfig((tmp_path / "in",), tmp_path / "out", str(tmp_path / "w.pth"), device="cpu",
                                        progress=False, overwrite=True), stream=_Sink())
    assert len(again.written) == 2
    assert cv2.imread(str(tmp_path / "out" / "a_out.png")).shape == (40, 48, 3)


def test_nan_weights_are_an_error_with_nonzero_exit_and_no_output(tmp_path):
    net = tiny(4, seed=1)
    with torch.no_grad():
        net.conv_body.weight[0, 0, 0, 0] = float("nan")
    export_generator(tmp_path / "w.pth", net)
    cv2.imwrite(str(tmp_path / "a.png"), photo(10, 12))
    result = _run(str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--weights", str(tmp_path / "w.pth"),
                  "--device", "cpu")
    assert result.exit_code != 0
    assert "conv_body.weight holds 1 NaN/infinite values" in result.output
    assert not (tmp_path / "out" / "a_out.png").exists()


def test_a_model_that_outputs_nan_fails_that_input(tmp_path):
    net = tiny(4, seed=1)
    with torch.no_grad():
        net.conv_last.bias.fill_(float("nan"))
        net.conv_last.weight.zero_()
    cv2.imwrite(str(tmp_path / "a.png"), photo(10, 12))
    summary = upscale_files(UpscaleConfig((tmp_path / "a.png",), tmp_path / "out", "unused", device="cpu",
                                          progress=False), stream=_Sink(), model=net)
    assert not summary.written and "NaN/infinite" in summary.failed[0][1]
    assert not np.any([p.exists() for p in (tmp_path / "out").glob("*")])
