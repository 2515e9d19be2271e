"""How fast can fp32 RRDBNet run on this CPU at all? The convolution ceiling behind the upscale goal.

Prints JSON. Three measurements, each the median of --repeats runs at --threads threads:

  conv       oneDNN direct 3x3 convolutions (torch, channels_last) of the shapes RRDBNet runs at a --size
             LR tile: the dense block's five (64/96/128/160/192 -> 32/32/32/32/64) and the 64 -> 64 trunk
             conv, as GFLOP/s (2 per multiply-add).
  winograd   the matrix products a Winograd F(4x4, 3x3) convolution would run for the same layers: 36
             batched (tiles x C_in) @ (C_in x C_out) products per layer (torch.bmm -> MKL), as GFLOP/s of
             *those* products and as the equivalent direct-convolution GFLOP/s (x 4: F(4, 3) needs 36
             multiplies per 4x4 outputs where direct needs 144), transforms not counted (a lower bound
             on Winograd's time).
  network    RRDBNet x4 (23 blocks, 64 features, random weights) forward on one --size tile, channels_last,
             as seconds and GFLOP/s with the FLOPs counted from the layer shapes.

From these: the time the network's convolutions need at the measured direct-convolution rate (the floor for
any direct-convolution route: torch, onnxruntime, OpenVINO on AVX2), and at the Winograd product rate.

    python bench/conv_ceiling.py --threads 2 --size 96 --out bench/results/conv_ceiling_96.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from models.rrdbnet import RRDBNet  # noqa: E402
from pipelines.hardware import describe  # noqa: E402

RDB_CONVS = ((64, 32), (96, 32), (128, 32), (160, 32), (192, 64))  # (C_in, C_out) of a dense block's convs


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: oneDNN primitive creation, page faults
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def network_flops(size: int, blocks: int = 23, feat: int = 64) -> float:
    """FLOPs (2 per multiply-add) of RRDBNet x4's convolutions on one size x size LR tile (biases ignored)."""
    lr, mid, hr = size * size, (2 * size) ** 2, (4 * size) ** 2
    rdb = sum(9 * cin * cout for cin, cout in RDB_CONVS) * lr
    trunk = 3 * blocks * rdb + 9 * (3 * feat + feat * feat) * lr  # conv_first, conv_body
    upsampling = 9 * feat * feat * (mid + 2 * hr) + 9 * feat * 3 * hr  # conv_up1, conv_up2, conv_hr, conv_last
    return 2.0 * (trunk + upsampling)


def conv_rates(size: int, repeats: int) -> dict:
    rows = {}
    for cin, cout in (*RDB_CONVS, (64, 64)):
        x = torch.rand(1, cin, size, size).contiguous(memory_format=torch.channels_last)
        w = torch.rand(cout, cin, 3, 3).contiguous(memory_format=torch.channels_last)
        seconds = median_seconds(lambda x=x, w=w: F.conv2d(x, w, padding=1), repeats)
        rows[f"{cin}->{cout}"] = round(2 * 9 * cin * cout * size * size / seconds / 1e9, 1)
    return rows


def winograd_rates(size: int, repeats: int) -> dict:
    tiles = math.ceil(size / 4) ** 2  # 4x4 output tiles
    rows = {}
    for cin, cout in (*RDB_CONVS, (64, 64)):
        u, v = torch.rand(36, tiles, cin), torch.rand(36, cin, cout)
        seconds = median_seconds(lambda u=u, v=v: torch.bmm(u, v), repeats)
        product = 2 * 36 * tiles * cin * cout / seconds / 1e9
        rows[f"{cin}->{cout}"] = {"product_gflops": round(product, 1),
                                  "direct_equivalent_gflops": round(4 * product, 1)}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--network-repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report = {"benchmark": "conv_ceiling", "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
              "torch": torch.__version__, "size": args.size, "cpu_count": os.cpu_count(),
              **describe(torch.device("cpu")),
              "command": " ".join(["bench/conv_ceiling.py", *sys.argv[1:]]),
              "machine_shared": "yes: other jobs may run on the same cores (see loadavg)",
              "loadavg_at_start": list(os.getloadavg())}
    with torch.inference_mode():
        report["conv_gflops"] = conv_rates(args.size, args.repeats)
        report["winograd_f43_gflops"] = winograd_rates(args.size, args.repeats)
        net = RRDBNet(generator=torch.Generator().manual_seed(0)).eval().to(memory_format=torch.channels_last)
        x = torch.rand(1, 3, args.size, args.size).contiguous(memory_format=torch.channels_last)
        seconds = median_seconds(lambda: net(x), args.network_repeats)
    flops = network_flops(args.size)
    dense = [report["conv_gflops"][f"{cin}->{cout}"] for cin, cout in RDB_CONVS]
    direct_rate = statistics.median(dense)
    winograd_rate = statistics.median(report["winograd_f43_gflops"][f"{cin}->{cout}"]["direct_equivalent_gflops"]
                                      for cin, cout in RDB_CONVS)
    report["network"] = {"gflop": round(flops / 1e9, 1), "seconds": round(seconds, 3),
                         "gflops": round(flops / seconds / 1e9, 1),
                         "direct_conv_floor_seconds": round(flops / direct_rate / 1e9, 3),
                         "winograd_products_floor_seconds": round(flops / winograd_rate / 1e9, 3),
                         "share_of_direct_rate": round(flops / seconds / 1e9 / direct_rate, 3)}
    report["loadavg_at_end"] = list(os.getloadavg())
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
