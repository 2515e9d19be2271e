"""Time the reference (BasicSR 1.4.2 / Real-ESRGAN 0.3.0) training-step cost on CPU.

Run ONLY with the separate reference env (see bench/reference/README.md); never imported by tests or the library:

    /opt/refenv/bin/python bench/reference/ref_train_step.py --repeats 3

(a) "net_fwd_bwd": basicsr RRDBNet(3,3,64,23,32) x4, L1Loss, batch 2 of 64x64 LQ -> 256x256: zero_grad + forward
    + loss + backward (the Adam step is timed apart, "net_adam_step").
(b) "gan_iteration", batch 2, GT 400x400, everything the reference does per iteration:
      dataset kernels (3 per sample, ref_degrade.sample_kernels)
      + RealESRGANModel.feed_data (the unmodified reference method, called on a CPU state object)
      + RealESRGANModel.optimize_parameters (unmodified reference method): G forward, L1 + perceptual (basicsr
        PerceptualLoss, VGG19 conv1_2 .1, conv2_2 .1, conv3_4 1, conv4_4 1, conv5_4 1) + 0.1 GAN with
        UNetDiscriminatorSN(3,64,skip), G Adam step, D real + fake backward and step, EMA update (BaseModel.model_ema).
    The VGG19 gets random weights: basicsr would download the ImageNet weights (no internet here); the
    torchvision constructor is swapped for vgg19(weights=None). Time per op does not depend on weight values.
    The training-pair pool is in its steady (full) state, as in all but the first 15 iterations at B=12.
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import sys
import time
import types

import basicsr.archs.vgg_arch as vgg_arch
import torch
import torchvision
from basicsr.archs.discriminator_arch import UNetDiscriminatorSN
from basicsr.archs.rrdbnet_arch import RRDBNet
from basicsr.losses.basic_loss import L1Loss, PerceptualLoss
from basicsr.losses.gan_loss import GANLoss
from basicsr.models.base_model import BaseModel
from realesrgan.models.realesrgan_model import RealESRGANModel
from ref_degrade import (
    StepTimer,
    add_run_args,
    env_info,
    load_samples,
    make_state,
    prepare_batch,
    seed_all,
    stats,
    write_result,
)

ANCHORS_MS = {"net_fwd_bwd": 2570, "gan_iteration": 7600}
LAYER_WEIGHTS = {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1, "conv4_4": 1, "conv5_4": 1}  # O-gan


def _random_vgg19(pretrained: bool = False, **kwargs) -> torch.nn.Module:
    """Stand-in for torchvision vgg19(pretrained=True): same architecture, random weights (no download)."""
    return torchvision.models.vgg19(weights=None, **kwargs)


def build_networks() -> tuple[RRDBNet, RRDBNet, UNetDiscriminatorSN]:
    net_g = RRDBNet(num_in_ch=3, num_out_ch=3, scale=4, num_feat=64, num_block=23, num_grow_ch=32)
    net_d = UNetDiscriminatorSN(num_in_ch=3, num_feat=64, skip_connection=True)
    net_g_ema = copy.deepcopy(net_g)  # SRGANModel: model_ema(0) copies net_g when no pretrain path is given
    return net_g.train(), net_g_ema.eval(), net_d.train()


def time_net_fwd_bwd(repeats: int, warmup: int) -> dict:
    """(a) RRDBNet x4 forward + L1 + backward at batch 2, 64x64 -> 256x256."""
    g = torch.Generator().manual_seed(0)
    net, _, _ = build_networks()
    cri = L1Loss(loss_weight=1.0, reduction="mean")
    opt = torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.9, 0.99), weight_decay=0)
    lq, gt = torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 256, 256, generator=g)
    fb, step = [], []
    for it in range(warmup + repeats):
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = cri(net(lq), gt)
        loss.backward()
        t1 = time.perf_counter()
        opt.step()
        t2 = time.perf_counter()
        if it >= warmup:
            fb.append((t1 - t0) * 1e3)
            step.append((t2 - t1) * 1e3)
    return {"net_fwd_bwd_ms": stats(fb), "net_adam_step_ms": stats(step)}


def make_gan_state(batch: int) -> types.SimpleNamespace:
    """A CPU object carrying what feed_data / optimize_parameters / model_ema read from `self` (O-gan values)."""
    state = make_state(batch, full=True)
    net_g, net_g_ema, net_d = build_networks()
    vgg_arch.vgg = types.SimpleNamespace(vgg19=_random_vgg19)  # what VGGFeatureExtractor calls via getattr
    state.__dict__.update(
        net_g=net_g, net_g_ema=net_g_ema, net_d=net_d, net_d_iters=1, net_d_init_iters=0, ema_decay=0.999,
        cri_pix=L1Loss(loss_weight=1.0, reduction="mean"),
        cri_perceptual=PerceptualLoss(layer_weights=LAYER_WEIGHTS, vgg_type="vgg19", use_input_norm=True,
                                      range_norm=False, perceptual_weight=1.0, style_weight=0, criterion="l1"),
        cri_gan=GANLoss("vanilla", real_label_val=1.0, fake_label_val=0.0, loss_weight=0.1),
        optimizer_g=torch.optim.Adam(net_g.parameters(), lr=1e-4, betas=(0.9, 0.99), weight_decay=0),
        optimizer_d=torch.optim.Adam(net_d.parameters(), lr=1e-4, betas=(0.9, 0.99), weight_decay=0),
    )
    for name in ("model_ema", "get_bare_model", "reduce_loss_dict"):
        setattr(state, name, functools.partial(getattr(BaseModel, name), state))
    return state


def time_gan_iteration(repeats: int, warmup: int, batch: int) -> dict:
    """(b) one full GAN-stage iteration: kernels + feed_data + optimize_parameters, each timed."""
    images = load_samples()
    state = make_gan_state(batch)
    seed_all(0)
    rows = []
    for it in range(warmup + repeats):
        timer = StepTimer()
        data = prepare_batch(images, [it * batch + j for j in range(batch)], timer)
        t0 = time.perf_counter()
        RealESRGANModel.feed_data(state, data)
        t1 = time.perf_counter()
        RealESRGANModel.optimize_parameters(state, it + 1)
        t2 = time.perf_counter()
        row = {"kernels": timer.ms["kernels"], "feed_data": (t1 - t0) * 1e3, "optimize_parameters": (t2 - t1) * 1e3}
        row["total"] = sum(row.values())
        if it >= warmup:
            rows.append(row)
    assert set(state.log_dict) == {"l_g_pix", "l_g_percep", "l_g_gan", "l_d_real", "out_d_real", "l_d_fake",
                                   "out_d_fake"}, state.log_dict
    assert tuple(state.output.shape) == (batch, 3, 256, 256) and tuple(state.lq.shape) == (batch, 3, 64, 64)
    return {f"gan_{k}_ms": stats([r[k] for r in rows]) for k in rows[0]} | {"gan_last_log": state.log_dict}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of each measurement (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--only", choices=("net", "gan", "both"), default="both")
    add_run_args(p, "reference_train_step.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    env = env_info(args.threads)
    result: dict = {}
    if args.only in ("net", "both"):
        result |= time_net_fwd_bwd(args.repeats, args.warmup)
    if args.only in ("gan", "both"):
        result |= time_gan_iteration(args.repeats, args.warmup, args.batch)
    env["loadavg_at_end"] = list(os.getloadavg())
    out = {
        "benchmark": "reference_train_step",
        "what": "(a) RRDBNet x4 fwd+bwd L1, B=2 64x64; (b) full RealESRGAN GAN iteration at B=2 "
                "(kernels + feed_data + optimize_parameters with random-weight VGG19), CPU fp32",
        "contended": args.contended == "yes",
        "env": env,
        "config": {"batch": args.batch, "repeats": args.repeats, "warmup": args.warmup, "threads": args.threads,
                   "vgg19_weights": "random (torchvision vgg19(weights=None)); reference would load ImageNet",
                   "pool": "full (steady state)"},
        "issue_anchors_ms": ANCHORS_MS,
        **result,
        "command": " ".join([sys.executable, *sys.argv]),
    }
    write_result(out, args.out)


if __name__ == "__main__":
    main()
