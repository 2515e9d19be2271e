"""The jobs: each composes `degrade/`, `shards/` and `models/` into one thing a person runs from `cli.py`.

One sub-package per job family; each package's docstring maps its files.

    training/     `train`: the two-stage loop, its config, the one-iteration step, checkpoints, validation
    inference/    `upscale`, `evaluate`, `export`: tiled inference, backends, PSNR / SSIM / NIQE
    data_jobs/    `shard`, `degrade`, `preview-degradations`, `calibrate`: making and inspecting training data

Shared by the families (top level):
    common.py      small helpers (atomic image writes, the uint8 <-> tensor conversion, the commands' progress bar)
    hardware.py    what the device runs natively (bf16) and the autocast for a precision (training and upscaling)
    quickstart.py  `quickstart`: the whole toolkit on the bundled photos, from the three families
"""
