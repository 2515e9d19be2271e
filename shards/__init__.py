"""Everything about shards: preparing GT patches into WebDataset tar shards and streaming them back.

Writing (`python cli.py shard`, `shards.prepare.prepare_shards`):
    sources.py (named datasets / folders) -> decode.py (bit depth, channels, EXIF, bad files)
    -> multiscale.py (ref. §5.1) -> crop.py (ref. §5.2) -> write.py (deterministic tar)
    -> manifest.py (manifest.json), orchestrated, resumable and parallel, by prepare.py.

Reading (training): read.py (`LoaderConfig`, `ShardStream`: per-rank infinite, resumable stream of
GT batches) built from the iterator stages in stages.py, seeded through seeds.py; validation reads its
paired shards through the same tar stage (`stages.tar_members`).

On a Dask cluster: cluster.py (the shard job; its connection and rerun counting are reused by the
`degrade` job in pipelines/data_jobs/). shards/ is storage only: it imports nothing from `degrade`,
`models` or `pipelines` (tests/test_layout.py); the offline pair job, which degrades, is
`pipelines.data_jobs.pairs`.

Glossary: gt/hr = high-resolution ground truth; lq/lr = degraded low-resolution input; a *patch* or
*sample* is one cropped GT image stored as `KEY.png` + `KEY.json` in a shard; a *variant* is one
multiscale copy of a source image.
"""
