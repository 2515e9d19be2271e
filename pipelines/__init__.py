"""The jobs: each composes `degrade/`, `shards/` and `models/` into one thing a person runs from `cli.py`.

Grouped by job family (the files are flat; the groups are the map):

Training
    train.py          the loop for both stages: build the run, then iterate, log, checkpoint, validate
    train_config.py   typed TrainConfig with the paper's defaults, TOML, overrides, validation
    step.py           TrainStep: one iteration (degrade → crop → pool → G → D → EMA), precision, layout
    steps.py          the pair-making and the G / D update functions the step calls
    pool.py           the training-pair pool of the reference
    hardware.py       what the device runs natively (bf16) and the autocast for a precision
    checkpoint.py     atomic checkpoints and their discovery
    safety.py         run-dir, init and resume guards; checkpoint pruning
    dist.py           torchrun setup and ordered teardown
    elastic.py        torchrun restarts, world-size changes, stalled ranks
    validate.py       the fixed degraded validation set: reading it, PSNR / SSIM, the image grid
    val_quality.py    after each validation: NIQE, the best checkpoint, curves.png, TensorBoard
    metrics.py        PSNR / SSIM as BasicSR and the metrics.jsonl writer

Inference, evaluation and export
    upscale.py        `upscale`: files and folders, all image kinds, overwrite rules
    tiling.py         seam-free tiled inference
    backends.py       torch / onnxruntime / OpenVINO and the precision of a run
    quality.py        PSNR, SSIM and NIQE (batched, on the images' device)
    evaluate.py       `evaluate`: methods × test sets → results.json / csv
    evaluate_report.py  table.md and comparison.png of an evaluation
    export.py         `export`: ONNX, ncnn, .pth, .safetensors with a check inference

Data jobs
    shard_job.py      `shard` as the command line runs it (progress, summary, errors)
    degrade_job.py    `degrade` (offline pairs) as the command line runs it
    preview.py        `preview-degradations`: the contact sheet and records
    calibrate.py      `calibrate`: fit a DegradationConfig to a user's images by simulation
    calibrate_report.py  the calibrate job's outputs (TOML, report.json, report.png)

Shared
    common.py         small helpers (atomic image writes)
    quickstart.py     `quickstart`: the whole toolkit on the bundled photos
"""
