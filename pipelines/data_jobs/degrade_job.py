"""The offline `degrade` job as the command line runs it: progress bar, summary, clean errors.

The work itself is `pipelines.data_jobs.pairs.make_pairs`; this module only reports on it.
"""

from __future__ import annotations

import click

from pipelines.common import SnapshotBar
from pipelines.data_jobs.pairs import PairConfig, PairReport, make_pairs
from shards.atomic import FolderBusy, folder_lock
from shards.cluster import ClusterError
from shards.manifest import ManifestError
from shards.prepare import ShardJobError
from shards.stages import ShardReadError


def run_degrade(cfg: PairConfig) -> PairReport:
    """Make degraded pairs with a progress bar and print a summary; user errors become ClickException."""
    bar = SnapshotBar("degrade", "pair")
    try:
        with folder_lock(cfg.out, "degrade job"):
            report = make_pairs(cfg, progress=bar)
    except (ShardJobError, ShardReadError, ManifestError, ValueError, FolderBusy, ClusterError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        bar.close()
    pairs = report.manifest["totals"]["pairs"]
    if report.already_complete:
        click.echo(f"{report.out} is already complete ({pairs} pairs): nothing to do.")
    else:
        what = f"{report.manifest['totals']['shards']} shards" if cfg.format == "shards" else "HR/, LR/, meta_info.txt"
        click.echo(f"{'resumed; ' if report.resumed else ''}wrote {report.pairs_written} pairs "
                   f"({pairs} in total, {what}) to {report.out} in {report.elapsed_s:.1f} s; "
                   f"parameter records: {'records.jsonl' if cfg.format == 'folders' else 'KEY.json members'}")
        if report.retried_tasks is not None:
            click.echo(f"dask: {report.retried_tasks} task(s) rerun after their worker died (output unaffected)")
    return report
