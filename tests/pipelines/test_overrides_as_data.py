"""Typed overrides travel as data (dotted key -> value), never as TOML text parsed back; --set stays text."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import pipelines.training.train as train_module
from cli import main
from pipelines.training.train_config import ConfigError, load_train_config

# Strings a TOML rendering must escape; DEL (0x7f) is one that json.dumps leaves raw and TOML refuses.
AWKWARD = ['runs/say "hi"', "C:\\Users\\me\\w.pth", "caf\u00e9/\U0001f600", "a\x7fb", "line\nbreak", "'quoted'"]


@pytest.mark.parametrize("text", AWKWARD)
def test_any_string_value_arrives_verbatim(text):
    cfg = load_train_config("net", values={"init_from": text, "run_dir": text, "data.shards": text})
    assert cfg.init_from == cfg.run_dir == cfg.data.shards == text


def test_values_equal_the_same_settings_given_as_set_texts():
    texts = ["data.batch_size=2", "data.gt_size=64", "data.patch_size=96", "optim.lr_g=1e-5", "ema_decay=0.9",
             "optim.milestones=[10, 20]", "data.hflip=false", "val_shards='pairs/'", "network.num_feat=16"]
    values = {"data.batch_size": 2, "data.gt_size": 64, "data.patch_size": 96, "optim.lr_g": 1e-5, "ema_decay": 0.9,
              "optim.milestones": (10, 20), "data.hflip": False, "val_shards": "pairs/", "network.num_feat": 16}
    assert load_train_config("gan", None, texts) == load_train_config("gan", values=values)


def test_values_win_over_set_texts_and_are_type_checked():
    assert load_train_config("net", None, ["init_from='a.pth'"], {"init_from": "b.pth"}).init_from == "b.pth"
    assert load_train_config("net", values={"scale": 2}).degradation.scale == 2  # the scale rule sees values too
    with pytest.raises(ConfigError, match=r"data\.batch_size: expected an integer, got '8'"):
        load_train_config("net", values={"data.batch_size": "8"})
    with pytest.raises(ConfigError, match="unknown key 'bach_size'"):
        load_train_config("net", values={"data.bach_size": 8})


def test_cli_init_from_reaches_the_config_verbatim(tmp_path, monkeypatch):
    seen = []

    def fake_train(config, **_):
        seen.append(config)
        return train_module.TrainResult(iteration=0, run_dir=tmp_path, checkpoint=None, interrupted=False, last_logs={})

    monkeypatch.setattr(train_module, "train", fake_train)
    weird = str(tmp_path / 'my "best" \x7f weights.pth')
    result = CliRunner().invoke(main, ["train", "--set", "init_from='ignored.pth'", "--set", "data.batch_size=3",
                                       "--init-from", weird])
    assert result.exit_code == 0, result.output
    assert seen[0].init_from == weird and seen[0].data.batch_size == 3  # the flag wins over --set init_from
