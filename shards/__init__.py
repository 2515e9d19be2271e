"""Everything about shards: preparing GT patches into WebDataset tar shards and streaming them back.

Writing (`python cli.py shard`, `shards.prepare.prepare_shards`):
    sources.py (named datasets / folders) -> decode.py (bit depth, channels, EXIF, bad files)
    -> multiscale.py (ref. §5.1) -> crop.py (ref. §5.2) -> write.py (deterministic tar)
    -> manifest.py (manifest.json), orchestrated, resumable and parallel, by prepare.py.

Reading (training): read.py (`LoaderConfig`, `ShardStream`: per-rank infinite, resumable stream of
GT batches) built from the iterator stages in stages.py, seeded through seeds.py.

Offline pairs (`python cli.py degrade`): pairs.py, using the `degrade` library.

Glossary: gt/hr = high-resolution ground truth; lq/lr = degraded low-resolution input; a *patch* or
*sample* is one cropped GT image stored as `KEY.png` + `KEY.json` in a shard; a *variant* is one
multiscale copy of a source image.
"""
