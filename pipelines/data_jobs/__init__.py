"""Data jobs: making, degrading, inspecting and fitting training data (storage itself is `shards/`).

    shard_job.py         `shard` as the command line runs it (progress, summary, errors); the work is shards.prepare
    pairs.py             `degrade`: offline (GT, LQ, record) pairs from GT shards, as shards or folders, resumable
    pairs_cluster.py     the `degrade` job on Dask, one task per output pair shard
    degrade_job.py       `degrade` as the command line runs it
    preview.py           `preview-degradations`: the contact sheet and records
    calibrate.py         `calibrate`: fit a DegradationConfig to a user's images by simulation
    calibrate_start.py   its moment-matched start in an LQ-size model
    calibrate_mixture.py its final compression mixture (codecs, chroma subsampling, qualities) read from the files
    calibrate_report.py  the calibrate job's outputs (TOML, report.json, report.png)
"""
