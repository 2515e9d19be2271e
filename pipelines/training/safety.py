"""Guards that keep a training run from losing work or training on the wrong thing.

* ``check_run_dir`` / ``clear_run_dir``: a fresh run (no ``--resume``) never writes into a ``run_dir``
  that already holds a run, unless asked to replace it (``--overwrite``), in which case the old run's
  files are removed first, so a later ``--resume`` cannot pick up the old run's higher-numbered checkpoints.
* ``check_init_report``: ``--init-from`` weights that fit too little of the model (another architecture,
  another size, random keys) stop the run instead of training from random weights.
* ``prune_checkpoints``: keep the newest ``keep`` checkpoints (never the latest one).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from degrade.tomlio import ConfigError

__all__ = ["RUN_FILES", "check_run_dir", "clear_run_dir", "check_init_report", "INIT_MIN_SHARE",
           "prune_checkpoints"]

# What a training run writes into its run_dir (pipelines/training/train.py); nothing else is ever removed.
RUN_FILES = ("checkpoints", "models", "val", "metrics.jsonl", "config.toml")
# --init-from must fill at least this share of the model's tensors, and use this share of the file's:
# x4 -> x2 weights skip only conv_first (1 of 42+ tensors); a compact model or random keys fill none.
INIT_MIN_SHARE = 0.5


def _existing_run(run_dir: Path) -> list[str]:
    found = []
    checkpoints = run_dir / "checkpoints"
    if checkpoints.is_dir() and (count := sum(1 for p in checkpoints.iterdir() if p.suffix == ".pt")):
        found.append(f"{count} checkpoint{'s' if count != 1 else ''}")
    found += [name for name in ("models/net_g_latest.pth", "config.toml", "metrics.jsonl")
              if (run_dir / name).exists()]
    return found


def check_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse a fresh run into a run_dir that holds a previous run, unless ``overwrite``."""
    if resume or overwrite:
        return
    found = _existing_run(run_dir)
    if found:
        raise ConfigError(f"run_dir {run_dir} already holds a run ({', '.join(found)}): continue it with --resume, "
                          f"choose a new run_dir (--set run_dir=...), or pass --overwrite to replace it")


def clear_run_dir(run_dir: Path) -> list[Path]:
    """Remove what a previous run wrote (``RUN_FILES`` only); returns the removed paths."""
    removed = []
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(path)
    return removed


def check_init_report(report, source: str) -> None:
    """Stop when ``--init-from`` fitted too little of the model (``report``: models.weights.LoadReport).

    Generic on the load report, so it holds for any architecture the weights loader recognises: the
    share of the model's tensors that were loaded, and the share of the file's tensors that were used.
    """
    loaded = len(report.loaded)
    model_total = loaded + len(report.skipped) + len(report.missing)
    file_total = loaded + len(report.skipped) + len(report.unexpected)
    if model_total == 0:
        return
    if loaded < INIT_MIN_SHARE * model_total or loaded < INIT_MIN_SHARE * file_total:
        raise ConfigError(
            f"init_from {source}: only {loaded} of the model's {model_total} tensors loaded ({file_total} in the "
            f"file) -- these weights are for another architecture or size; set network.* to match them "
            f"or use an RRDBNet checkpoint ({report.summary()[:300]})")


def best_validated_iteration(metrics_path: Path) -> int | None:
    """The iteration with the highest validation PSNR in ``metrics.jsonl`` (None without validation)."""
    import json

    best: tuple[float, int] | None = None
    if not metrics_path.is_file():
        return None
    for line in metrics_path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line cut by a crash
            continue
        score = record.get("val", {}).get("psnr") if isinstance(record.get("val"), dict) else None
        if isinstance(score, int | float) and (best is None or score > best[0]):
            best = (float(score), int(record["iter"]))
    return None if best is None else best[1]


def prune_checkpoints(run_dir: Path, keep: int, best_iter: int | None = None) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints; the latest one and ``best_iter``'s are never deleted.

    ``keep = 0`` keeps everything. Returns the deleted paths.
    """
    from pipelines.training.checkpoint import checkpoint_iterations

    if keep <= 0:
        return []
    found = checkpoint_iterations(run_dir)
    if not found:
        return []
    newest = {it for it, _ in found[-keep:]} | {found[-1][0]}
    deleted = []
    for iteration, path in found:
        if iteration in newest or iteration == best_iter:
            continue
        path.unlink(missing_ok=True)
        deleted.append(path)
    return deleted


def _flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def changed_config_keys(saved: dict, now: dict, defaults: dict, allowed: set[str]) -> list[str]:
    """Dotted keys whose value differs between a checkpoint's config and this run's.

    A key the checkpoint does not have (added to the toolkit after it was written) counts as
    unchanged while this run keeps its default, so an old run stays resumable. ``allowed`` holds
    keys (or top-level tables) that may change.
    """
    old, new, base = _flatten(saved), _flatten(now), _flatten(defaults)
    changed = []
    for key in sorted(set(old) | set(new)):
        if key in allowed or key.split(".")[0] in allowed:
            continue
        if key not in old and key in base and new.get(key) == base[key]:
            continue
        if old.get(key) != new.get(key):
            changed.append(key)
    return changed


def load_resume_checkpoint(run_dir: Path) -> tuple[Path, dict]:
    """The latest checkpoint of ``run_dir``, loaded; a corrupt one names the previous good one as the way out."""
    from pipelines.training.checkpoint import CheckpointError, checkpoint_iterations, load_checkpoint

    found = checkpoint_iterations(run_dir)
    if not found:
        raise FileNotFoundError(f"--resume: no checkpoint in {run_dir / 'checkpoints'}; start without --resume")
    latest = found[-1][1]
    try:
        return latest, load_checkpoint(latest)
    except CheckpointError as error:
        previous = next((p for _, p in reversed(found[:-1]) if _loads(p)), None)
        way_out = (f"move it away (mv {latest} {latest}.bad) and --resume continues from {previous}" if previous
                   else "no earlier checkpoint loads either: start a new run")
        raise CheckpointError(f"the latest checkpoint {latest} is corrupt ({str(error.__cause__)[:120]}); "
                              f"{way_out}") from error


def _loads(path: Path) -> bool:
    from pipelines.training.checkpoint import CheckpointError, load_checkpoint

    try:
        load_checkpoint(path)
    except CheckpointError:
        return False
    return True


def trim_metrics(path: Path, last_iter: int) -> int:
    """Drop ``metrics.jsonl`` records after ``last_iter`` (written after the checkpoint a run resumes from).

    Without this, a resumed run logs those iterations a second time. Returns the number of lines dropped;
    the file is rewritten atomically, and a line cut by a crash is dropped too.
    """
    import json

    from shards.atomic import write_bytes_atomic

    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and int(record.get("iter", 0)) <= last_iter:
            kept.append(line)
    if len(kept) != len(lines):
        write_bytes_atomic(path, "".join(f"{line}\n" for line in kept).encode("utf-8"), fsync=True)
    return len(lines) - len(kept)
