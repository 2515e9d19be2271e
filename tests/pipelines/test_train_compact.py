"""Training with ``network.arch = "compact"``: config keys and shipped configs, scale 3 refused with a
reason, smoke runs of both stages whose exported weights are detected as SRVGGNetCompact, and a clear
error for --init-from weights of the other architecture."""

from __future__ import annotations

import pytest
import torch

from models.compact import CompactSpec, SRVGGNetCompact
from models.weights import export_generator, load_generator
from pipelines.training.train import train
from pipelines.training.train_config import ConfigError, load_train_config
from tests.conftest import REPO_ROOT

TINY = [
    "data.batch_size=2", "data.patch_size=64", "data.gt_size=32", "data.num_workers=0", "data.shuffle_buffer=8",
    "network.arch='compact'", "network.num_feat=8", "network.num_conv=2", "network.disc_num_feat=8",
    "queue_size=4", "total_iter=3", "log_every=1", "checkpoint_every=100", "loss.perceptual_weights=random",
]


@pytest.mark.parametrize(("name", "stage", "spec"), [
    ("train_realesrnet_general_x4v3.toml", "net", CompactSpec(4, 64, 32, "prelu")),
    ("train_realesrgan_general_x4v3.toml", "gan", CompactSpec(4, 64, 32, "prelu")),
    ("tiny_cpu_compact.toml", "net", CompactSpec(4, 16, 4, "prelu")),
])
def test_shipped_compact_configs(name: str, stage: str, spec: CompactSpec) -> None:
    cfg = load_train_config(None, REPO_ROOT / "configs" / name, [])
    net = cfg.network
    assert cfg.stage == stage and net.arch == "compact"
    assert CompactSpec(cfg.scale, net.num_feat, net.num_conv, net.act_type) == spec
    if stage == "gan":
        assert cfg.init_from.endswith("realesrnet_general_x4v3/models/net_g_latest.pth")


def test_compact_config_validation() -> None:
    with pytest.raises(ConfigError, match="scale must be 1, 2 or 4 for training, got 3: the compact network runs "
                                          "at x3.*the degradation pipeline supports scales 1, 2 and 4 only"):
        load_train_config("net", None, ["network.arch='compact'", "scale=3"])
    with pytest.raises(ConfigError, match=r"scale must be one of \(1, 2, 4\), got 3"):  # degrade.DegradationConfig
        load_train_config("net", None, ["network.arch='compact'", "scale=3", "degradation.scale=3"])
    with pytest.raises(ConfigError, match="network.arch: 'srvgg' is not one of 'rrdbnet', 'compact'"):
        load_train_config("net", None, ["network.arch='srvgg'"])
    with pytest.raises(ConfigError, match="network.act_type: 'gelu' is not one of 'prelu', 'leakyrelu', 'relu'"):
        load_train_config("net", None, ["network.arch='compact'", "network.act_type='gelu'"])
    with pytest.raises(ConfigError, match="network.num_conv must be >= 0, got -1"):
        load_train_config("net", None, ["network.arch='compact'", "network.num_conv=-1"])


@pytest.mark.slow
def test_compact_smoke_runs_of_both_stages(tmp_path, shards) -> None:
    net_dir, gan_dir = tmp_path / "net", tmp_path / "gan"
    cfg = load_train_config("net", None, [*TINY, f"data.shards='{shards}'", f"run_dir='{net_dir}'",
                                          "network.act_type='leakyrelu'", "scale=2", "degradation.scale=2"])
    train(cfg, device="cpu", log=lambda *_: None)
    model, resolved = load_generator(str(net_dir / "models" / "net_g_latest.pth"))
    assert isinstance(model, SRVGGNetCompact) and resolved.spec == CompactSpec(2, 8, 2, "leakyrelu")
    logs = []
    cfg = load_train_config("gan", None, [*TINY, f"data.shards='{shards}'", f"run_dir='{gan_dir}'",
                                          "network.act_type='leakyrelu'", "scale=2", "degradation.scale=2",
                                          "loss.perceptual_weight=0",  # VGG19 is not what this test is about
                                          f"init_from='{net_dir / 'models' / 'net_g_latest.pth'}'"])
    train(cfg, device="cpu", log=logs.append)
    assert any("initialised G from" in line and "missing" not in line for line in logs)
    _, resolved = load_generator(str(gan_dir / "models" / "net_g_latest.pth"))
    assert resolved.spec == CompactSpec(2, 8, 2, "leakyrelu")


def test_init_from_other_architecture_is_a_clear_error(tmp_path, shards) -> None:
    from models.rrdbnet import RRDBNet

    rrdb = RRDBNet(num_feat=8, num_block=1, num_grow_ch=4, generator=torch.Generator().manual_seed(0))
    export_generator(tmp_path / "rrdb.pth", rrdb, rrdb)
    cfg = load_train_config("net", None, [*TINY, f"data.shards='{shards}'", f"run_dir='{tmp_path / 'run'}'",
                                          f"init_from='{tmp_path / 'rrdb.pth'}'"])
    with pytest.raises(ValueError, match='weights are an RRDBNet but network.arch builds an SRVGGNetCompact'):
        train(cfg, device="cpu", log=lambda *_: None)
