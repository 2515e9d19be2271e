"""Training (`python cli.py train`): the paper's two stages, Real-ESRNet (L1) and Real-ESRGAN (L1 + VGG + GAN).

    train.py          the loop for both stages: build the run, then iterate, log, checkpoint, validate
    train_config.py   typed TrainConfig with the paper's defaults, TOML, overrides, validation
    step.py           TrainStep: one iteration (degrade -> crop -> pool -> G -> D -> EMA), precision, layout
    steps.py          the pair-making and the G / D update functions the step calls
    pool.py           the training-pair pool of the reference
    checkpoint.py     atomic checkpoints and their discovery
    safety.py         run-dir, init and resume guards; checkpoint pruning
    dist.py           torchrun setup and ordered teardown
    elastic.py        torchrun restarts, world-size changes, stalled ranks
    validate.py       the fixed degraded validation set: reading it (shard stages), PSNR / SSIM, the image grid
    val_quality.py    after each validation: NIQE, the best checkpoint, curves.png, TensorBoard
    metrics.py        PSNR / SSIM on uint8 images as BasicSR computes them, and the metrics.jsonl writer
"""
