"""Typed training configuration with the paper's defaults, TOML loading, overrides and validation.

Precedence: stage defaults (the paper's values for `net` or `gan`) < TOML file (`--config`) <
`--set key=value` overrides < typed values (`--init-from`, programs such as the quickstart). Defaults
come from Real-ESRGAN `options/train_realesrnet_x4plus.yml` (stage net) and `train_realesrgan_x4plus.yml`
(stage gan); the official runs use 4 GPUs with a batch of 12 per GPU. Everything is validated before any
work starts, with messages that say how to fix it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from degrade import DegradationConfig
from degrade.config import SUPPORTED_SCALES
from degrade.tomlio import ConfigError, from_dict, override_data, override_keys, to_dict, to_toml
from models.compact import CompactSpec
from models.ema import EMA_DECAY, check_decay
from models.rrdbnet import RRDBNetSpec
from shards.read import LoaderConfig

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib

__all__ = ["DataConfig", "NetworkConfig", "OptimConfig", "LossConfig", "TrainConfig", "stage_defaults",
           "load_train_config", "ConfigError"]

PERCEPTUAL_LAYERS = ("conv1_2", "conv2_2", "conv3_4", "conv4_4", "conv5_4")


# DataConfig fields that are LoaderConfig fields of the same name and meaning: their defaults are LoaderConfig's
# and `DataConfig.loader_config` passes them on (tests/pipelines/test_train_config_sources.py checks both).
LOADER_FIELDS = ("batch_size", "patch_size", "shuffle_buffer", "hflip", "rot", "num_workers", "strict", "max_pixels")


@dataclass(frozen=True)
class DataConfig:
    """Training data: shards of HR patches (from `cli.py shard`); the loader settings default to LoaderConfig's."""

    # A shard folder with manifest.json, a brace pattern, or URLs. SECURITY: a "pipe:CMD" URL runs CMD in a shell
    # (webdataset), so a config is as trusted as a shell script; names read from a manifest never are commands.
    shards: str = ""
    manifest: str = ""  # a local manifest.json for remote shards
    batch_size: int = LoaderConfig.batch_size  # per process (12)
    patch_size: int = LoaderConfig.patch_size  # GT patch fed to the degradation (the dataset's crop_pad_size, 400)
    gt_size: int = 256  # GT crop after degradation; the LQ crop is gt_size / scale
    num_workers: int = LoaderConfig.num_workers  # loader processes per training process (5 per GPU)
    shuffle_buffer: int = LoaderConfig.shuffle_buffer
    hflip: bool = LoaderConfig.hflip
    rot: bool = LoaderConfig.rot
    strict: bool = LoaderConfig.strict  # a corrupt or missing shard is fatal instead of skipped with a warning
    max_pixels: int = LoaderConfig.max_pixels  # a sample declaring more pixels is a bad sample, never decoded (0: off)

    def loader_config(self, seed: int) -> LoaderConfig:
        """The streaming loader's config for these settings (the seed is the run's)."""
        return LoaderConfig(self.shards, seed=seed, manifest=self.manifest or None,
                            **{name: getattr(self, name) for name in LOADER_FIELDS})


@dataclass(frozen=True)
class NetworkConfig:
    """Generator (RRDBNet or SRVGGNetCompact) and U-Net discriminator sizes (the paper's, reference §3).

    The generator's sizes default to `models.rrdbnet.RRDBNetSpec`'s (x4plus) and become a spec with
    `generator_spec(scale)`, which also checks them. ``arch = "compact"`` builds SRVGGNetCompact(num_feat,
    num_conv, act_type) as realesr-general-x4v3 (num_feat 64, num_conv 32, prelu) / animevideov3 (num_conv 16);
    num_block / num_grow_ch are RRDBNet-only.
    """

    arch: Literal["rrdbnet", "compact"] = "rrdbnet"
    num_feat: int = RRDBNetSpec.num_feat
    num_block: int = RRDBNetSpec.num_block
    num_grow_ch: int = RRDBNetSpec.num_grow_ch
    num_conv: int = 32  # compact only: realesr-general-x4v3's (CompactSpec defaults to animevideov3's 16)
    act_type: Literal["prelu", "leakyrelu", "relu"] = CompactSpec.act_type  # compact only
    disc_num_feat: int = 64
    disc_skip_connection: bool = True

    def generator_spec(self, scale: int) -> RRDBNetSpec | CompactSpec:
        """The generator these settings describe (``models.weights.build_generator`` builds it)."""
        if self.arch == "compact":
            return CompactSpec(scale, self.num_feat, self.num_conv, self.act_type)
        return RRDBNetSpec(scale, self.num_block, self.num_feat, self.num_grow_ch)


@dataclass(frozen=True)
class OptimConfig:
    """Adam for both networks and a MultiStepLR schedule (milestone at the end: constant LR, §4.4)."""

    lr_g: float = 2e-4
    lr_d: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    milestones: tuple[int, ...] = ()  # iterations where the LR is multiplied by gamma; () = constant
    gamma: float = 0.5
    warmup_iter: int = 0  # linear warm-up from 0 (the reference has none)


@dataclass(frozen=True)
class LossConfig:
    """Loss weights (reference §4.1-4.2). Perceptual and GAN terms are used by stage `gan` only."""

    pixel_weight: float = 1.0
    perceptual_weight: float = 1.0
    perceptual_layer_weights: tuple[float, float, float, float, float] = (0.1, 0.1, 1.0, 1.0, 1.0)
    gan_weight: float = 0.1
    # VGG19 weights: "" finds torchvision's vgg19-dcbb9e9d.pth (env ESRGAN_KIT_VGG19_WEIGHTS or the torch hub
    # cache), a path names the file, and "random" (smoke tests only) builds untrained weights.
    perceptual_weights: str = ""
    sharpen_gt: bool = True  # L1/perceptual targets are the USM-sharpened GT (l1_gt_usm, percep_gt_usm)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; saved with the run and in every checkpoint."""

    stage: Literal["net", "gan"] = "net"
    scale: int = 4
    total_iter: int = 1_000_000
    seed: int = 0
    run_dir: str = "runs/realesrnet_x4plus"
    init_from: str = ""  # weights file or builtin name; stage gan starts from the net stage's EMA weights
    init_key: str = "params_ema"
    ema_decay: float = EMA_DECAY  # in [0, 1): models.ema.check_decay
    queue_size: int = 180  # training-pair pool per process; 0 disables it
    crop_before_degrade: bool = False  # crop the 256 GT before degrading (~2x cheaper, see README)
    log_every: int = 100
    checkpoint_every: int = 5000
    val_every: int = 5000
    val_shards: str = ""  # paired shards from `cli.py degrade`; "" disables validation
    val_max_images: int = 16
    val_select: str = "psnr"  # best checkpoint by psnr | ssim | niqe | none -> models/net_g_best.pth (gan: niqe)
    val_lq: str = ""  # folder of real LR images (no GT) scored by NIQE at each validation; "" disables it
    keep_checkpoints: int = 5  # newest checkpoints kept (the latest and the best validated are never deleted; 0: all)
    compile: bool = False  # torch.compile the generator (and discriminator)
    # Gradient accumulation: each batch's G and D updates run in this many equal micro-batches (the same
    # step within float rounding, 1/k of the activation memory); data.batch_size must be divisible by it.
    accumulate: int = 1
    channels_last: bool = True  # on CUDA only: measured slower for CPU training (README)
    # Autocast precision of the networks (the degradation always runs in fp32): "auto" is bf16 where the
    # device runs it natively (CUDA with bf16, CPUs with AMX or AVX512-BF16), else fp32; fp16 (with a
    # gradient scaler) needs CUDA. See pipelines.training.step.resolve_precision.
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    dist_timeout_s: float = 1800.0  # a collective waiting longer ends the run naming the stalled rank
    data: DataConfig = field(default_factory=DataConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    degradation: DegradationConfig = field(default_factory=DegradationConfig)

    def __post_init__(self) -> None:
        check_config(self)

    @property
    def lq_size(self) -> int:
        return self.data.gt_size // self.scale

    def to_dict(self) -> dict:
        return to_dict(self)

    def to_toml(self) -> str:
        return to_toml(self)


def _fail(message: str) -> None:
    raise ConfigError(message)


def _validate_network(cfg: TrainConfig) -> None:
    # arch / act_type values are checked by their Literal types when the config is read.
    if cfg.network.num_conv < 0:
        _fail(f"network.num_conv must be >= 0, got {cfg.network.num_conv}")
    if cfg.scale == 3:
        # SRVGGNetCompact runs at x3 (pixel shuffle 3; upscale / export accept it), but the degradation
        # model (degrade.config.SUPPORTED_SCALES) is defined for 1, 2 and 4 only, as the reference's.
        _fail("scale must be 1, 2 or 4 for training, got 3: the compact network runs at x3 (upscale / export "
              "accept it), but the degradation pipeline supports scales 1, 2 and 4 only "
              "(degrade.config.SUPPORTED_SCALES). Train x4 and resize, or use the released realesr-animevideov3-x3")


def check_config(cfg: TrainConfig) -> None:
    """Cross-field checks of the footguns users hit (reference issues on scale, gt_size, pool, iterations)."""
    data = cfg.data
    _validate_network(cfg)
    if cfg.scale not in (1, 2, 4):
        _fail(f"scale must be 1, 2 or 4 (RRDBNet uses pixel-unshuffle for 2 and 1), got {cfg.scale}")
    if cfg.degradation.scale != cfg.scale:
        _fail(f"degradation.scale ({cfg.degradation.scale}) must equal scale ({cfg.scale}): leave degradation.scale "
              f"out (it follows scale) or set both, e.g. --set scale={cfg.scale} --set degradation.scale={cfg.scale}")
    try:
        cfg.network.generator_spec(cfg.scale)
    except ValueError as error:
        _fail(f"network: {error}")
    if data.gt_size % cfg.scale or data.patch_size % cfg.scale:
        _fail(f"data.gt_size ({data.gt_size}) and data.patch_size ({data.patch_size}) must be divisible by "
              f"scale ({cfg.scale})")
    if data.gt_size > data.patch_size:
        _fail(f"data.gt_size ({data.gt_size}) cannot exceed data.patch_size ({data.patch_size}), the GT patch "
              f"the degradation sees; lower gt_size or raise patch_size")
    if cfg.lq_size < 8 or (cfg.stage == "gan" and data.gt_size % 8):
        _fail(f"data.gt_size ({data.gt_size}) gives an LQ crop of {cfg.lq_size}; it must be at least 8 pixels "
              f"(and gt_size divisible by 8 for the U-Net discriminator)")
    if data.batch_size < 1:
        _fail(f"data.batch_size must be at least 1, got {data.batch_size}")
    if cfg.accumulate < 1 or data.batch_size % cfg.accumulate:
        divisors = ", ".join(str(k) for k in range(1, data.batch_size + 1) if data.batch_size % k == 0)
        _fail(f"accumulate ({cfg.accumulate}) must divide data.batch_size ({data.batch_size}) into equal "
              f"micro-batches: use one of {divisors}")
    if cfg.queue_size < 0 or (cfg.queue_size and cfg.queue_size % data.batch_size):
        multiple = max(1, cfg.queue_size // data.batch_size) * data.batch_size
        _fail(f"queue_size ({cfg.queue_size}) must be a multiple of the per-process batch size "
              f"({data.batch_size}), e.g. {multiple}, or 0 to disable the training-pair pool")
    if not cfg.dist_timeout_s > 0:
        _fail(f"dist_timeout_s must be > 0 seconds, got {cfg.dist_timeout_s}")
    if cfg.total_iter < 1:
        _fail(f"total_iter must be at least 1, got {cfg.total_iter}")
    for name in ("log_every", "checkpoint_every", "val_every"):
        if getattr(cfg, name) < 1:
            _fail(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if any(m < 1 for m in cfg.optim.milestones) or list(cfg.optim.milestones) != sorted(cfg.optim.milestones):
        _fail(f"optim.milestones must be increasing positive iterations, got {list(cfg.optim.milestones)}")
    try:
        check_decay(cfg.ema_decay, "ema_decay")
    except ValueError as error:
        _fail(str(error))
    if cfg.val_select not in ("psnr", "ssim", "niqe", "none"):
        _fail(f"val_select must be psnr, ssim, niqe or none, got {cfg.val_select!r}")
    _validate_ranges(cfg)


MAX_NUM_WORKERS = 64  # loader processes per training process; more only costs memory and start-up time


def _validate_ranges(cfg: TrainConfig) -> None:
    """Values that are accepted by the types but make no sense (found by trying them)."""
    optim, loss = cfg.optim, cfg.loss
    for name in ("lr_g", "lr_d"):
        if not getattr(optim, name) > 0:
            _fail(f"optim.{name} must be > 0, got {getattr(optim, name)} (the paper: 2e-4 net, 1e-4 gan)")
    if len(optim.betas) != 2 or not all(0 <= b < 1 for b in optim.betas):
        _fail(f"optim.betas must be two numbers in [0, 1), got {list(optim.betas)} (the paper: [0.9, 0.99])")
    if optim.weight_decay < 0:
        _fail(f"optim.weight_decay must be >= 0, got {optim.weight_decay}")
    if not 0 < optim.gamma <= 1:
        _fail(f"optim.gamma must be in (0, 1] (the LR factor at each milestone), got {optim.gamma}")
    if optim.warmup_iter < 0:
        _fail(f"optim.warmup_iter must be >= 0, got {optim.warmup_iter}")
    for name in ("pixel_weight", "perceptual_weight", "gan_weight"):
        if getattr(loss, name) < 0:
            _fail(f"loss.{name} must be >= 0 (0 switches the term off), got {getattr(loss, name)}")
    if any(w < 0 for w in loss.perceptual_layer_weights):
        _fail(f"loss.perceptual_layer_weights must be >= 0, got {list(loss.perceptual_layer_weights)}")
    if not 0 <= cfg.data.num_workers <= MAX_NUM_WORKERS:
        _fail(f"data.num_workers = {cfg.data.num_workers} must be in [0, {MAX_NUM_WORKERS}] loader processes per "
              f"training process (0: load in the training process); use about the CPU cores per GPU (the paper: 5)")
    if cfg.data.max_pixels < 0:
        _fail(f"data.max_pixels must be >= 0 (0: no limit), got {cfg.data.max_pixels}")
    if cfg.keep_checkpoints < 0:
        _fail(f"keep_checkpoints must be >= 0 (0 keeps all), got {cfg.keep_checkpoints}")


def stage_defaults(stage: str) -> dict:
    """The paper's defaults of a stage as nested dicts (the base the TOML file and --set apply to)."""
    if stage == "net":
        cfg = TrainConfig()
    elif stage == "gan":
        cfg = TrainConfig(stage="gan", total_iter=400_000, run_dir="runs/realesrgan_x4plus",
                          optim=OptimConfig(lr_g=1e-4, lr_d=1e-4), val_select="niqe")
    else:
        raise ConfigError(f"stage must be 'net' or 'gan', got {stage!r}")
    return to_dict(cfg)


def load_train_config(stage: str | None = None, path: Path | None = None, overrides: Sequence[str] = (),
                      values: Mapping[str, Any] | None = None) -> TrainConfig:
    """Stage defaults < TOML file < ``overrides`` (``key=value`` texts, as ``--set``) < ``values`` (dotted key ->
    typed value, for programs and flags: nothing is turned into TOML text). The stage comes from ``stage``, else
    the file, else net."""
    file_data: dict = {}
    if path is not None:
        try:
            file_data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as error:
            raise ConfigError(f"cannot read training config {path}: {error.strerror}") from error
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: invalid TOML: {error}") from error
    if "bf16" in file_data:
        raise ConfigError(f"{path}: the key bf16 was replaced by precision: write precision = \"bf16\" "
                          f"(or \"auto\", \"fp32\", \"fp16\") instead of bf16 = {str(file_data['bf16']).lower()}")
    chosen = stage or file_data.get("stage") or "net"
    if stage and file_data.get("stage") not in (None, stage):
        raise ConfigError(f"{path} is a config for stage {file_data['stage']!r} but --stage {stage} was given")
    base = stage_defaults(chosen)
    merged = _merge(base, file_data)
    merged["stage"] = chosen
    try:
        data = override_data(merged, overrides, values)
        return from_dict(TrainConfig, _follow_scale(data, file_data, override_keys(overrides, values)))
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}" if path else str(error)) from error


def _follow_scale(data: dict, file_data: dict, overridden: set[str]) -> dict:
    """One source: ``degradation.scale`` follows ``scale`` unless the file or an override sets it (check_config() then
    checks that they agree), so ``--set scale=2`` is enough. A scale the degradation does not support is left to
    check_config(), whose message says why (x3)."""
    in_file = isinstance(file_data.get("degradation"), dict) and "scale" in file_data["degradation"]
    if not in_file and "degradation.scale" not in overridden and data.get("scale") in SUPPORTED_SCALES \
            and isinstance(data.get("degradation"), dict):
        data["degradation"]["scale"] = data["scale"]
    return data


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
