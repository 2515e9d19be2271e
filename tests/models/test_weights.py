"""Checkpoint wrapper, loading, export, architecture detection and safe unpickling."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import models.weights as weights_mod
from models.rrdbnet import RRDBNet, RRDBNetSpec
from models.weights import (
    detect_rrdbnet,
    export_generator,
    load_checkpoint_into,
    load_generator_state_dict,
    load_into,
    load_state_dict_file,
    unwrap_state_dict,
)

SMALL = dict(num_feat=8, num_block=2, num_grow_ch=4)


def net(scale: int = 4, seed: int = 0, **kw) -> RRDBNet:
    return RRDBNet(scale=scale, **{**SMALL, **kw}, generator=torch.Generator().manual_seed(seed))


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_export_load_round_trip_strict(tmp_path: Path) -> None:
    g, g_ema = net(seed=1), net(seed=2)
    path = export_generator(tmp_path / "out" / "net_g_100.pth", g, g_ema)
    raw = load_state_dict_file(path)
    assert set(raw) == {"params", "params_ema"}
    assert same_state(raw["params"], g.state_dict()) and same_state(raw["params_ema"], g_ema.state_dict())
    fresh = net(seed=3)
    report = load_checkpoint_into(fresh, path)  # prefers params_ema, strict
    assert report.complete and len(report.loaded) == len(fresh.state_dict())
    assert same_state(fresh.state_dict(), g_ema.state_dict())
    assert [p.name for p in path.parent.iterdir()] == ["net_g_100.pth"]  # no temp file left


def test_export_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = export_generator(tmp_path / "g.pth", net(seed=1))
    original = path.read_bytes()

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(weights_mod.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        export_generator(path, net(seed=2))
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["g.pth"]


def test_export_strips_wrappers_and_params_only(tmp_path: Path) -> None:
    g = net(seed=1)
    prefixed = {f"module.{k}": v for k, v in g.state_dict().items()}
    raw = load_state_dict_file(export_generator(tmp_path / "g.pth", prefixed))
    assert set(raw) == {"params"} and same_state(raw["params"], g.state_dict())


def test_unwrap_preference_and_fallback() -> None:
    a, b = net(seed=1).state_dict(), net(seed=2).state_dict()
    sd, key = unwrap_state_dict({"params": a, "params_ema": b})
    assert key == "params_ema" and same_state(sd, b)
    sd, key = unwrap_state_dict({"params": a, "params_ema": b}, prefer=("params",))
    assert key == "params" and same_state(sd, a)
    sd, key = unwrap_state_dict({"params": a})  # BasicSR falls back to params
    assert key == "params" and same_state(sd, a)
    sd, key = unwrap_state_dict(a)
    assert key is None and same_state(sd, a)


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "_orig_mod.module.", "module._orig_mod."])
def test_unwrap_strips_prefixes(prefix: str) -> None:
    a = net(seed=1).state_dict()
    sd, _ = unwrap_state_dict({"params": {prefix + k: v for k, v in a.items()}})
    assert same_state(sd, a)


def test_unwrap_rejects_non_state_dicts() -> None:
    with pytest.raises(ValueError, match=r"top-level keys are \['iter', 'optimizers'\]"):
        unwrap_state_dict({"iter": 5, "optimizers": []})
    with pytest.raises(ValueError, match="got list"):
        unwrap_state_dict([1, 2])  # type: ignore[arg-type]


def test_x2_from_x4_non_strict_skips_only_conv_first_weight() -> None:
    x4, x2 = net(4, seed=1), net(2, seed=2)
    x2_bias_before = x2.conv_last.bias.clone()
    report = load_into(x2, x4.state_dict(), strict=False)
    assert report.skipped == {"conv_first.weight": ((8, 3, 3, 3), (8, 12, 3, 3))}
    assert report.missing == () and report.unexpected == ()
    assert len(report.loaded) == len(x4.state_dict()) - 1
    assert torch.equal(x2.conv_first.bias, x4.conv_first.bias)
    assert torch.equal(x2.conv_last.bias, x4.conv_last.bias) and not torch.equal(x2_bias_before, x4.conv_last.bias)
    with pytest.raises(ValueError, match=r"conv_first.weight file \(8, 3, 3, 3\) vs model \(8, 12, 3, 3\)"):
        load_into(net(2), x4.state_dict(), strict=True)


def test_non_strict_reports_missing_and_unexpected() -> None:
    state = net(seed=1).state_dict()
    state.pop("conv_hr.bias")
    state["extra.weight"] = torch.zeros(1)
    report = load_into(net(seed=2), state, strict=False)
    assert report.missing == ("conv_hr.bias",) and report.unexpected == ("extra.weight",)
    with pytest.raises(ValueError, match="missing from file.*conv_hr.bias"):
        load_into(net(seed=2), state, strict=True)


@pytest.mark.parametrize(("scale", "in_ch"), [(4, 3), (2, 12), (1, 48)])
def test_detect_rrdbnet_all_wrapper_forms(scale: int, in_ch: int) -> None:
    model = net(scale, num_block=3)
    sd = model.state_dict()
    assert sd["conv_first.weight"].shape[1] == in_ch
    expected = RRDBNetSpec(scale=scale, num_block=3, num_feat=8, num_grow_ch=4, num_in_ch=3, num_out_ch=3)
    forms = [sd, {"params": sd}, {"params_ema": sd}, {"params": sd, "params_ema": sd},
             {"params_ema": {f"module.{k}": v for k, v in sd.items()}}]
    for form in forms:
        assert detect_rrdbnet(form) == expected
    assert RRDBNet.from_spec(detect_rrdbnet(sd)).load_state_dict(sd)


def test_detect_full_size_shapes_only() -> None:
    """A full-size x2 23-block layout (one block's tensors reused) is detected from its shapes."""
    model_sd = net(2, num_block=1, num_feat=64, num_grow_ch=32).state_dict()
    block = {k: v for k, v in model_sd.items() if k.startswith("body.0.")}
    sd = {k: v for k, v in model_sd.items() if not k.startswith("body.")}
    for b in range(23):
        sd.update({k.replace("body.0.", f"body.{b}.", 1): v for k, v in block.items()})
    assert detect_rrdbnet(sd) == RRDBNetSpec(scale=2, num_block=23)


def test_detect_rejects_other_architectures() -> None:
    srvgg = {f"body.{i}.weight": torch.zeros(64, 64, 3, 3) for i in range(0, 6, 2)}
    srvgg.update({f"body.{i}.bias": torch.zeros(64) for i in range(0, 6, 2)})
    with pytest.raises(ValueError, match=r"not an RRDBNet.*body\.0\.weight.*SRVGGNetCompact"):
        detect_rrdbnet(srvgg)
    broken = net().state_dict()
    broken["body.1.rdb2.conv3.weight"] = torch.zeros(4, 17, 3, 3)
    with pytest.raises(ValueError, match=r"wrong shapes.*body.1.rdb2.conv3.weight \(4, 17, 3, 3\)"):
        detect_rrdbnet(broken)
    gap = net(num_block=3).state_dict()
    for k in [k for k in gap if k.startswith("body.1.")]:
        gap.pop(k)
    with pytest.raises(ValueError, match=r"missing \['body.1.rdb1.conv1.weight"):
        detect_rrdbnet(gap)


class _Exploit:
    """Unpickling this calls a function: exactly what weights_only=True must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_arbitrary_pickles_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"params": net().state_dict(), "payload": _Exploit(marker)}, path)
    with pytest.raises(ValueError, match="evil.pth.*weights_only=True"):
        load_state_dict_file(path)
    assert not marker.exists()


def test_torch_load_called_with_weights_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict] = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(weights_mod.torch, "load", spy)
    path = export_generator(tmp_path / "g.pth", net())
    load_state_dict_file(path)
    assert calls and all(c.get("weights_only") is True for c in calls)


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_state_dict_file(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth"):
        load_state_dict_file(tmp_path / "junk.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="list.pth: expected a dict"):
        load_state_dict_file(tmp_path / "list.pth")
    path = export_generator(tmp_path / "x4.pth", net(4))
    with pytest.raises(ValueError, match="x4.pth: strict load"):
        load_checkpoint_into(net(2), path)


def test_load_generator_state_dict_from_checkpoint(tmp_path: Path) -> None:
    g, g_ema = net(seed=1), net(seed=2)
    path = export_generator(tmp_path / "g.pth", g, g_ema)
    sd, where = load_generator_state_dict(str(path))
    assert same_state(sd, g_ema.state_dict()) and "params_ema" in where
    sd, where = load_generator_state_dict(path, prefer=("params",))
    assert same_state(sd, g.state_dict())
    with pytest.raises(FileNotFoundError, match="Did you mean realesrgan-x4plus"):
        load_generator_state_dict("realesrgan-x4plu")
