"""Training precision: what `auto` resolves to, forced bf16 on CPU, the fp16 gradient scaler, resume in bf16."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest
import torch

from models.discriminator import UNetDiscriminatorSN
from pipelines.hardware import cpu_capabilities, native_bf16
from pipelines.training.checkpoint import load_checkpoint
from pipelines.training.step import resolve_precision
from pipelines.training.steps import discriminator_step
from pipelines.training.train import train
from pipelines.training.train_config import ConfigError, load_train_config
from tests.pipelines.test_train import _config, _quiet

CPU = torch.device("cpu")
AVX2_ONLY = {"architecture": "x86_64", "avx2": True, "avx512_f": False, "amx_bf16": False, "avx512_bf16": False}


def _proc_cpuinfo_flags() -> set[str] | None:
    path = Path("/proc/cpuinfo")
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64") or not path.is_file():
        return None
    for line in path.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


def test_auto_is_bf16_exactly_where_the_cpu_has_amx_or_avx512_bf16() -> None:
    assert resolve_precision("auto", CPU, AVX2_ONLY) == "fp32"
    assert resolve_precision("auto", CPU, {**AVX2_ONLY, "amx_bf16": True, "amx_tile": True}) == "bf16"
    assert resolve_precision("auto", CPU, {**AVX2_ONLY, "avx512_f": True, "avx512_bf16": True}) == "bf16"
    assert resolve_precision("auto", CPU, {**AVX2_ONLY, "avx512_f": True}) == "fp32"  # AVX-512 without BF16
    assert resolve_precision("auto", CPU, {"architecture": "arm64", "neon": True, "bf16": True}) == "bf16"
    for forced in ("fp32", "bf16"):  # an explicit choice is kept whatever the hardware
        assert resolve_precision(forced, CPU, AVX2_ONLY) == forced


def test_this_cpus_bf16_detection_agrees_with_the_kernel_flags() -> None:
    # An independent source: the flags the Linux kernel reports, not torch's cpuinfo.
    flags = _proc_cpuinfo_flags()
    if flags is None:
        pytest.skip("needs Linux on x86_64 to read /proc/cpuinfo flags")
    kernel_says = "avx512_bf16" in flags or "amx_bf16" in flags
    assert native_bf16(CPU) == kernel_says
    assert resolve_precision("auto", CPU) == ("bf16" if kernel_says else "fp32")
    assert bool(cpu_capabilities().get("avx2")) == ("avx2" in flags)


def test_auto_on_cuda_follows_the_runtimes_bf16_support(monkeypatch) -> None:
    cuda = torch.device("cuda", 0)
    for supported, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True, s=supported: s)
        assert resolve_precision("auto", cuda) == expected
    assert resolve_precision("fp16", cuda) == "fp16"


def test_fp16_on_cpu_and_unknown_precisions_are_clear_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="precision fp16 needs a CUDA device"):
        resolve_precision("fp16", CPU)
    with pytest.raises(ConfigError, match="precision"):
        load_train_config("net", None, ["precision='half'"])
    old = tmp_path / "old.toml"
    old.write_text("bf16 = true\n")
    with pytest.raises(ConfigError, match=r"old.toml: the key bf16 was replaced by precision"):
        load_train_config("net", old)


def _d_update(scaler, loss_offset: float = 0.0) -> dict[str, torch.Tensor]:
    net_d = UNetDiscriminatorSN(3, 8, True, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(net_d.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    real, fake = torch.rand(2, 3, 16, 16, generator=g), torch.rand(2, 3, 16, 16, generator=g) + loss_offset
    discriminator_step(net_d, opt, real, fake, scaler=scaler)
    if scaler is not None:
        scaler.update()
    return {k: v.clone() for k, v in net_d.state_dict().items()}


def test_gradient_scaler_path_gives_the_unscaled_update_and_skips_overflow() -> None:
    # Scaling the loss by 2^16 and the gradients back is exact in fp32 (powers of two), so the scaled D update
    # must equal the plain one bit for bit; an infinite input makes the gradients overflow, and the step is skipped.
    plain = _d_update(None)
    scaled = _d_update(torch.amp.GradScaler("cpu", init_scale=2.0**16))
    assert all(torch.equal(plain[k], scaled[k]) for k in plain)
    start = UNetDiscriminatorSN(3, 8, True, generator=torch.Generator().manual_seed(0)).state_dict()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    skipped = _d_update(scaler, loss_offset=float("inf"))
    weights = [k for k in start if not k.endswith(("_u", "_v"))]  # spectral-norm power iterates move in forward
    assert all(torch.equal(start[k], skipped[k]) for k in weights)
    assert scaler.get_scale() == 2.0**15  # backoff after the overflow


@pytest.mark.parametrize("stage", ["net", pytest.param("gan", marks=pytest.mark.slow)])
def test_forced_bf16_training_on_cpu_runs_with_finite_losses_close_to_fp32(tmp_path, shards, stage) -> None:  # noqa: F811
    lines: list[str] = []
    bf16 = train(_config(stage, shards, tmp_path / "bf16", "total_iter=2", "precision='bf16'"), device="cpu",
                 log=lines.append)
    fp32 = train(_config(stage, shards, tmp_path / "fp32", "total_iter=2", "precision='fp32'"), device="cpu",
                 log=_quiet)
    assert any(line.startswith("precision bf16 (config: bf16)") for line in lines)
    assert all(torch.isfinite(torch.tensor(v)) for v in bf16.last_logs.values())
    # Same data and initial weights: the loss terms differ only by bf16 rounding in the forwards
    # (8-bit mantissa, relative step 2^-8 = 0.4 %); 3 % leaves room for two iterations of accumulation.
    pix32, pix16 = fp32.last_logs["l_g_pix"], bf16.last_logs["l_g_pix"]
    assert pix16 != pix32 and abs(pix16 - pix32) <= 0.03 * abs(pix32)


def test_resume_in_bf16_is_bit_identical(tmp_path, shards) -> None:  # noqa: F811
    extra = ["total_iter=4", "precision='bf16'"]
    straight = train(_config("net", shards, tmp_path / "a", *extra), device="cpu", log=_quiet)
    train(_config("net", shards, tmp_path / "b", *extra), device="cpu", stop_at=2, log=_quiet)
    resumed = train(_config("net", shards, tmp_path / "b", *extra), device="cpu", resume=True, log=_quiet)
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    for name in ("net_g", "net_g_ema"):
        for key, tensor in a[name].items():
            assert torch.equal(tensor, b[name][key]), f"{name}.{key} differs after a bf16 resume"
    # A run cannot switch precision on resume, whether asked for directly or through `auto` on another machine.
    with pytest.raises(ConfigError, match="trained in bf16, but precision 'fp32' gives fp32"):
        train(_config("net", shards, tmp_path / "b", "total_iter=5", "precision='fp32'"), device="cpu", resume=True,
              log=_quiet)
    auto = _config("net", shards, tmp_path / "b", "total_iter=5", "precision='auto'")
    if native_bf16(CPU):  # auto is bf16 here: the same computation, so the run continues
        assert train(auto, device="cpu", resume=True, log=_quiet).iteration == 5
    else:
        with pytest.raises(ConfigError, match="trained in bf16, but precision 'auto' gives fp32 on cpu"):
            train(auto, device="cpu", resume=True, log=_quiet)
