"""BasicSR 1.4.2 ``calculate_niqe``: literal values for the NIQE test cases, and its time per image.

Run ONLY with the separate reference env (see bench/reference/README.md); never imported by tests or the library:

    /opt/refenv/bin/python bench/reference/ref_niqe.py values            # values for tests/pipelines/test_quality.py
    /opt/refenv/bin/python bench/reference/ref_niqe.py time --size 2048  # one timing line (used by bench/quality.py)

``values`` scores every image of ``tests/pipelines/niqe_cases.py`` with
``calculate_niqe(img_bgr_uint8, crop_border=0, input_order='HWC', convert_to='y')`` and prints/writes
``{name: [sha256_16, niqe or "error: ..."]}``. ``time`` scores the astronaut photo resized (cv2 INTER_CUBIC) to
``size``×``size`` after one untimed call and prints ``{"seconds": [...], "niqe": ...}``.

Deviation: the installed ``basicsr`` package imports ``torchvision.transforms.functional_tensor``, which current
torchvision no longer has; as ``basicsr-fixed`` does, the module is aliased to ``torchvision.transforms.functional``
before the import (README "Patches" item 1). NIQE code does not use it.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torchvision.transforms.functional as _functional

sys.modules.setdefault("torchvision.transforms.functional_tensor", _functional)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from basicsr.metrics.niqe import calculate_niqe  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "pipelines"))
import niqe_cases  # noqa: E402


def versions() -> dict:
    import basicsr
    import scipy
    return {"basicsr": basicsr.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "opencv": cv2.__version__, "torch": torch.__version__, "python": platform.python_version()}


def values() -> dict:
    out = {}
    for name, img in niqe_cases.cases().items():
        try:
            value: float | str = float(calculate_niqe(img, 0, input_order="HWC", convert_to="y"))
        except Exception as exc:  # noqa: BLE001 - the reference's failure is itself the recorded value
            value = f"error: {type(exc).__name__}"
        out[name] = [niqe_cases.digest(img), value]
    return out


def timing(size: int, repeats: int) -> dict:
    img = cv2.resize(niqe_cases.read_photo("astronaut.png"), (size, size), interpolation=cv2.INTER_CUBIC)
    calculate_niqe(img, 0)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        value = calculate_niqe(img, 0)
        seconds.append(time.perf_counter() - start)
    return {"size": size, "seconds": seconds, "niqe": value}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=("values", "time"))
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "reference_niqe_values.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)  # its imresize runs in torch
    if args.mode == "values":
        result = {"command": "/opt/refenv/bin/python bench/reference/ref_niqe.py values", "versions": versions(),
                  "values": values()}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    else:
        result = timing(args.size, args.repeats)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
