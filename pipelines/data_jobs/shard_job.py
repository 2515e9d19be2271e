"""The `shard` job as the command line runs it: progress bar, summary, clean error messages.

The work itself is `shards.prepare.prepare_shards`; this module only reports on it.
"""

from __future__ import annotations

import click

from pipelines.common import SnapshotBar
from shards.atomic import FolderBusy, folder_lock
from shards.cluster import ClusterError
from shards.decode import ALPHA_DROPPED, CONVERTED_16BIT, EXIF_ORIENTED, GRAY_EXPANDED
from shards.prepare import PrepareReport, ShardConfig, ShardJobError, prepare_shards
from shards.sources import SourceNotFound

_NOTE_NAMES = {CONVERTED_16BIT: "16-bit->8-bit", GRAY_EXPANDED: "gray->RGB", ALPHA_DROPPED: "alpha dropped",
               EXIF_ORIENTED: "EXIF-rotated"}


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def summary(report: PrepareReport) -> str:
    """A few lines saying what the shard folder holds and what happened to every source file."""
    m = report.manifest
    t = m["totals"]
    manifest_path = report.out / "manifest.json"
    if report.already_complete:
        return (f"{report.out} is already complete ({t['shards']} shards, {t['samples']:,} samples): "
                f"nothing to do. Manifest: {manifest_path}")
    skipped = ", ".join(f"{k} {v}" for k, v in m["counts"]["skipped"].items()) or "none"
    notes = ", ".join(f"{_NOTE_NAMES.get(k, k)} {v}" for k, v in m["counts"]["converted"].items()) or "none"
    kept = t["shards"] - report.shards_written
    lines = [
        f"{'resumed: kept ' + str(kept) + ' finished shards; ' if report.resumed else ''}"
        f"wrote {report.shards_written} shards in {_clock(report.elapsed_s)} "
        f"({report.images_processed / max(report.elapsed_s, 1e-9):.1f} images/s)",
        f"shards: {t['shards']} ({t['bytes'] / 1e9:.2f} GB), samples: {t['samples']:,} "
        f"from {t['variants']:,} image variants ({t['dropped_variants']} variants too small)",
        f"sources: {t['sources']} = used {t['used']} + skipped {t['skipped']} ({skipped}); "
        f"{t['ignored']} non-image files ignored",
        f"conversions: {notes}",
        f"manifest: {manifest_path}",
    ]
    if report.retried_tasks is not None:
        lines.append(f"dask: {report.retried_tasks} task(s) rerun after their worker died (output unaffected)")
    if m["skipped"]:
        lines.append("skipped files (first 10; all are in the manifest):")
        lines += [f"  {s['path']}: {s['reason']} ({s['detail']})" for s in m["skipped"][:10]]
    return "\n".join(lines)


def run_shard(cfg: ShardConfig) -> PrepareReport:
    """Run the shard job with a progress bar and print the summary; user errors become ClickException."""
    bar = SnapshotBar("shard", "image")
    try:
        with folder_lock(cfg.out, "shard job"):  # two jobs on one --out would interleave their shards
            report = prepare_shards(cfg, progress=bar)
    except (SourceNotFound, ShardJobError, FolderBusy, ClusterError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        bar.close()
    click.echo(summary(report))
    return report
