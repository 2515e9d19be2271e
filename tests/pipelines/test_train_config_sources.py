"""One source of truth per training setting: loader settings, generator sizes, scale, EMA decay."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch
from torch import nn

from models.compact import CompactSpec, SRVGGNetCompact
from models.ema import EMA_DECAY, ModelEMA, ema_update_
from models.rrdbnet import RRDBNet, RRDBNetSpec
from models.weights import build_generator
from pipelines.training.train_config import (
    LOADER_FIELDS,
    ConfigError,
    DataConfig,
    NetworkConfig,
    TrainConfig,
    load_train_config,
)
from shards.read import LoaderConfig


def test_every_shared_loader_setting_has_the_loaders_default_and_is_passed_on():
    shared = {f.name for f in fields(DataConfig)} & {f.name for f in fields(LoaderConfig)}
    assert shared - {"shards", "manifest"} == set(LOADER_FIELDS)  # a new shared field must be listed
    for name in LOADER_FIELDS:
        assert getattr(DataConfig(), name) == getattr(LoaderConfig("x"), name), name
    # non-default values, each different from the default, arrive unchanged
    changed = {"batch_size": 3, "patch_size": 24, "shuffle_buffer": 7, "hflip": False, "rot": True, "num_workers": 2,
               "strict": True, "max_pixels": 1234}
    assert set(changed) == set(LOADER_FIELDS)
    data = DataConfig(shards="s/", manifest="m.json", **changed)
    loader = data.loader_config(seed=9)
    assert (loader.shards, loader.manifest, loader.seed) == ("s/", "m.json", 9)
    assert {name: getattr(loader, name) for name in LOADER_FIELDS} == changed
    assert DataConfig(shards="s/").loader_config(0).manifest is None  # "" in TOML is "no manifest"


def test_generator_sizes_default_to_the_spec_and_build_the_same_network_as_before():
    net = NetworkConfig()
    spec = RRDBNetSpec()
    assert (net.num_feat, net.num_block, net.num_grow_ch) == (spec.num_feat, spec.num_block, spec.num_grow_ch)
    assert net.generator_spec(4) == spec
    small = NetworkConfig(num_feat=8, num_block=1, num_grow_ch=4)
    # the constructor call train.py made before the spec existed, with the same seeded generator
    old = RRDBNet(3, 3, 2, 8, 1, 4, generator=torch.Generator().manual_seed(3))
    new = build_generator(small.generator_spec(2), generator=torch.Generator().manual_seed(3))
    assert isinstance(new, RRDBNet) and old.state_dict().keys() == new.state_dict().keys()
    assert all(torch.equal(a, new.state_dict()[k]) for k, a in old.state_dict().items())
    compact = NetworkConfig(arch="compact", num_feat=8, num_conv=2, act_type="leakyrelu")
    assert compact.generator_spec(4) == CompactSpec(4, 8, 2, "leakyrelu")
    old_c = SRVGGNetCompact(3, 3, 8, 2, 4, "leakyrelu", generator=torch.Generator().manual_seed(3))
    new_c = build_generator(compact.generator_spec(4), generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(a, new_c.state_dict()[k]) for k, a in old_c.state_dict().items())


def test_bad_generator_sizes_are_refused_when_the_config_is_built():
    with pytest.raises(ConfigError, match=r"^network: RRDBNet num_block must be a positive int \(got 0\)$"):
        load_train_config("net", None, ["network.num_block=0"])
    with pytest.raises(ConfigError, match="network: SRVGGNetCompact num_feat"):
        load_train_config("net", None, ["network.arch='compact'", "network.num_feat=0"])


def test_scale_is_set_in_one_place_and_the_degradation_follows(tmp_path):
    cfg = load_train_config("net", None, ["scale=2"])
    assert (cfg.scale, cfg.degradation.scale, cfg.lq_size) == (2, 2, 128)
    assert load_train_config("net", None, ["scale=2", "degradation.scale=2"]).degradation.scale == 2
    with pytest.raises(ConfigError, match=r"degradation.scale \(4\) must equal scale \(2\)"):
        load_train_config("net", None, ["scale=2", "degradation.scale=4"])
    path = tmp_path / "x2.toml"
    path.write_text("scale = 2\n")
    assert load_train_config("net", path).degradation.scale == 2
    path.write_text("scale = 2\n[degradation]\nscale = 4\n")
    with pytest.raises(ConfigError, match=r"x2.toml: degradation.scale \(4\) must equal scale \(2\)"):
        load_train_config("net", path)
    assert load_train_config("net", path, ["degradation.scale=2"]).degradation.scale == 2  # the override wins


def test_ema_decay_has_one_default_and_one_range():
    assert TrainConfig().ema_decay == EMA_DECAY == ModelEMA(nn.Linear(1, 1)).decay == 0.999
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match=rf"^ema_decay must be in \[0, 1\), got {bad}"):
            load_train_config("net", None, [f"ema_decay={bad}"])
        with pytest.raises(ValueError, match=r"EMA decay must be in \[0, 1\)"):
            ModelEMA(nn.Linear(1, 1), decay=bad)
        with pytest.raises(ValueError, match=r"EMA decay must be in \[0, 1\)"):
            ema_update_(nn.Linear(1, 1), nn.Linear(1, 1), decay=bad)
    assert load_train_config("net", None, ["ema_decay=0.0"]).ema_decay == ModelEMA(nn.Linear(1, 1), 0.0).decay == 0
