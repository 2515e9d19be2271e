"""DegradationConfig: the paper's defaults, validation messages, TOML round trips, overrides."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from degrade.config import DegradationConfig, StageConfig
from degrade.tomlio import ConfigError, apply_overrides, from_toml, parse_value, to_dict, to_toml
from tests.degrade.strategies import degradation_configs


def test_defaults_are_the_papers_values():
    # Literal values from Real-ESRGAN options/train_realesrnet_x4plus.yml (reference §1.1-1.2 tables).
    cfg = DegradationConfig()
    first, second = cfg.stages
    assert cfg.scale == 4 and cfg.order == 2 and cfg.final_sinc_prob == 0.8 and cfg.per_sample is False
    assert first.kernel_list == ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
    assert first.kernel_prob == (0.45, 0.25, 0.12, 0.03, 0.12, 0.03) == second.kernel_prob
    assert first.kernel_sizes == (7, 9, 11, 13, 15, 17, 19, 21) == cfg.final_sinc_sizes
    assert first.sinc_prob == second.sinc_prob == 0.1
    assert first.blur_sigma == (0.2, 3.0) and second.blur_sigma == (0.2, 1.5)
    assert first.betag_range == second.betag_range == (0.5, 4.0)
    assert first.betap_range == second.betap_range == (1.0, 2.0)
    assert first.blur_prob == 1.0 and second.blur_prob == 0.8
    assert first.resize_prob == (0.2, 0.7, 0.1) and second.resize_prob == (0.3, 0.4, 0.3)
    assert first.resize_range == (0.15, 1.5) and second.resize_range == (0.3, 1.2)
    assert first.resize_relative_to == "input" and second.resize_relative_to == "target"
    assert first.gaussian_noise_prob == second.gaussian_noise_prob == 0.5
    assert first.noise_range == (1.0, 30.0) and second.noise_range == (1.0, 25.0)
    assert first.poisson_scale_range == (0.05, 3.0) and second.poisson_scale_range == (0.05, 2.5)
    assert first.gray_noise_prob == second.gray_noise_prob == 0.4
    assert first.jpeg_range == second.jpeg_range == (30.0, 95.0)
    assert first.sinc_cutoff_small == (math.pi / 3, math.pi) and first.sinc_cutoff_large == (math.pi / 5, math.pi)
    assert cfg.final_sinc_cutoff == (math.pi / 3, math.pi)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"blur_sigma": (3.0, 0.2)}, "ordered range"),
        ({"kernel_prob": (0.5, 0.5, 0.1, 0.0, 0.0, 0.0)}, "sum to 1"),
        ({"kernel_sizes": (7, 8)}, "odd sizes"),
        ({"kernel_sizes": (43,)}, "odd sizes"),
        ({"resize_prob": (0.2, 0.7)}, "3 probabilities"),
        ({"sinc_prob": 1.5}, "probability"),
        ({"jpeg_range": (30.0, 101.0)}, "above 100"),
        ({"kernel_list": ("iso", "box"), "kernel_prob": (0.5, 0.5)}, "distinct families"),
        ({"resize_range": (1.2, 1.5)}, "contain 1"),
        ({"resize_modes": ("nearest",)}, "subset"),
    ],
)
def test_stage_validation_messages(change, message):
    with pytest.raises(ConfigError, match=message):
        StageConfig(**change)


def test_config_validation_messages():
    with pytest.raises(ConfigError, match="scale must be one of"):
        DegradationConfig(scale=3)
    with pytest.raises(ConfigError, match="at least one"):
        DegradationConfig(stages=())
    with pytest.raises(ConfigError, match="kernel_pad_to"):
        DegradationConfig(kernel_pad_to=15)


def test_order_is_a_config_change():
    third = DegradationConfig().with_order(3)
    assert third.order == 3 and third.stages[2] == third.stages[1]
    assert DegradationConfig().with_order(1).stages == (DegradationConfig().stages[0],)


def test_toml_round_trip_of_defaults_and_orders():
    for cfg in (DegradationConfig(), DegradationConfig(scale=2, per_sample=True).with_order(3)):
        assert DegradationConfig.from_toml(cfg.to_toml()) == cfg


def test_unknown_keys_and_wrong_types_are_rejected():
    with pytest.raises(ConfigError, match="unknown key 'scael'"):
        DegradationConfig.from_toml("scael = 4\n")
    with pytest.raises(ConfigError, match=r"unknown key 'blur_sigmaa' in \[stages\[0\]\]"):
        DegradationConfig.from_toml("[[stages]]\nblur_sigmaa = [0.2, 3.0]\n")
    with pytest.raises(ConfigError, match="scale: expected an integer"):
        DegradationConfig.from_toml('scale = "4"\n')
    with pytest.raises(ConfigError, match="invalid TOML"):
        DegradationConfig.from_toml("scale = \n")


def test_load_names_the_file(tmp_path):
    path = tmp_path / "deg.toml"
    path.write_text("scale = 3\n")
    with pytest.raises(ConfigError, match=r"deg\.toml.*scale must be one of"):
        DegradationConfig.load(path)
    with pytest.raises(ConfigError, match="cannot read"):
        DegradationConfig.load(tmp_path / "missing.toml")


def test_overrides_parse_toml_literals_without_eval():
    cfg = apply_overrides(DegradationConfig, to_dict(DegradationConfig()),
                          ["scale=2", "stages.1.jpeg_range=[40, 90]", "per_sample=true", "final_resize_modes=['area']"])
    assert cfg.scale == 2 and cfg.stages[1].jpeg_range == (40.0, 90.0) and cfg.per_sample
    assert cfg.final_resize_modes == ("area",)
    with pytest.raises(ConfigError):
        apply_overrides(DegradationConfig, to_dict(DegradationConfig()), ["__import__('os').system('true')"])
    assert parse_value("bicubic") == "bicubic" and parse_value("[1, 2]") == [1, 2]


@given(degradation_configs())
def test_property_toml_round_trip(cfg):
    assert from_toml(DegradationConfig, to_toml(cfg)) == cfg


@given(degradation_configs(), st.integers(0, 2), st.floats(0, 1))
def test_property_set_override_is_inverse_of_dump(cfg, stage, value):
    stage = min(stage, cfg.order - 1)
    updated = apply_overrides(DegradationConfig, to_dict(cfg), [f"stages.{stage}.gray_noise_prob={value!r}"])
    expected_stage = dataclasses.replace(cfg.stages[stage], gray_noise_prob=value)
    assert updated.stages[stage] == expected_stage


def test_typed_values_are_applied_as_data_after_the_texts():
    base = to_dict(DegradationConfig())
    cfg = apply_overrides(DegradationConfig, base, ["scale=2"], {"stages.1.jpeg_range": (40, 90), "scale": 1})
    assert cfg.scale == 1 and cfg.stages[1].jpeg_range == (40.0, 90.0)  # values come after the texts
    text = apply_overrides(DegradationConfig, base, ["stages.1.jpeg_range=[40, 90]", "final_resize_modes=['area']"])
    data = apply_overrides(DegradationConfig, base, values={"stages.1.jpeg_range": [40, 90],
                                                           "final_resize_modes": ("area",)})
    assert data == text
    with pytest.raises(ConfigError, match=r"stages\.9 is not an index below 2"):
        apply_overrides(DegradationConfig, base, values={"stages.9.jpeg_range": (40, 90)})
    with pytest.raises(ConfigError, match=r"scale: expected an integer, got '2'"):  # typed values are not parsed
        apply_overrides(DegradationConfig, base, values={"scale": "2"})
    assert base == to_dict(DegradationConfig())  # the base is not modified
