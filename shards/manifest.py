"""`manifest.json`: what a shard folder holds and how it was made.

Layout (all paths relative to the folder holding the manifest):

    {
      "format": "esrgan-kit-shards", "version": 1,
      "complete": true,                       # false while the job is still running or was interrupted
      "config": {...},                        # resolved options that determine the shard bytes
      "config_hash": "<sha256 of config>",
      "inputs": {"files": N, "digest": "<sha256 of (path, size) of every source file>"},
      "sources": [{"dataset": "DIV2K", "path": "DIV2K/DIV2K_train_HR", "multiscale": true}, ...],
      "shards": [{"name": "train-000000.tar", "samples": 1000, "bytes": ..., "sha256": ...}, ...],
      "totals": {"shards": .., "samples": .., "bytes": .., "sources": .., "used": .., "skipped": ..,
                 "ignored": .., "variants": .., "dropped_variants": ..},
      "counts": {"skipped": {"truncated": 1, ...}, "converted": {"converted_16bit": 2, ...}},
      "skipped": [{"path": "...", "dataset": "...", "reason": "truncated", "detail": "..."}],
      "ignored": ["DIV2K/DIV2K_train_HR/readme.txt", ...],
      "cursor": {"image": i, "patch": p}       # where the next shard starts (used to resume)
    }

Totals satisfy sources = used + skipped; `ignored` lists files without an image suffix.
The manifest is replaced atomically (write to a temporary file, then os.replace).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from shards.atomic import write_bytes_atomic
from shards.write import file_sha256

FORMAT = "esrgan-kit-shards"
VERSION = 1
MANIFEST_NAME = "manifest.json"


class ManifestError(ValueError):
    """A manifest that is missing, unreadable or not ours."""


def canonical_json(obj: object) -> str:
    """JSON with sorted keys and no whitespace: the form hashed for config and input digests."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def digest(obj: object) -> str:
    """SHA-256 hex digest of the canonical JSON of obj."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def write_manifest(folder: Path, manifest: dict) -> Path:
    """Write manifest.json atomically (``shards.atomic``: temporary file + fsync + os.replace)."""
    path = Path(folder) / MANIFEST_NAME
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"), fsync=True)
    return path


def read_manifest(path: Path) -> dict:
    """Load and check a manifest (a folder holding manifest.json, or the file itself).

    Raises:
        ManifestError: naming the file, when it is missing, not JSON, or not a shard manifest.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ManifestError(f"{path}: no shard manifest here") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read the manifest ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ManifestError(f"{path}: not a shard manifest (format is not {FORMAT!r})")
    if manifest.get("version") != VERSION:
        raise ManifestError(f"{path}: manifest version {manifest.get('version')!r}, expected {VERSION}")
    for field in ("config", "config_hash", "shards", "complete"):
        if field not in manifest:
            raise ManifestError(f"{path}: manifest lacks the field {field!r}")
    return manifest


def verify_shard(folder: Path, entry: dict, check_hash: bool = True) -> str | None:
    """None if the shard file matches its manifest entry (size, and SHA-256 if asked), else why not."""
    path = Path(folder) / entry["name"]
    if not path.is_file():
        return f"{path}: missing"
    size = path.stat().st_size
    if size != entry["bytes"]:
        return f"{path}: {size} bytes, manifest says {entry['bytes']}"
    if check_hash and file_sha256(path) != entry["sha256"]:
        return f"{path}: SHA-256 differs from the manifest"
    return None


def shard_paths(folder: Path, manifest: dict) -> list[str]:
    """Paths of the manifest's shards, in manifest order.

    A name is a plain file name inside ``folder``: never a path, a URL or a ``pipe:`` command (the
    loader opens its URLs with webdataset's gopen, which runs ``pipe:`` ones in a shell, and
    ``Path(".") / "pipe:cmd"`` is the string ``"pipe:cmd"``), so a manifest cannot run a command.
    """
    for entry in manifest["shards"]:
        name = str(entry["name"])
        if not name or name in (".", "..") or any(c in name for c in "/\\:") or name.startswith("-"):
            raise ManifestError(f"{Path(folder) / MANIFEST_NAME}: shard name {name!r} is not a plain file name "
                                f"(a path, URL or pipe: command); remake the manifest with `cli.py shard`")
    return [str(Path(folder) / entry["name"]) for entry in manifest["shards"]]


def total_samples(manifest: dict) -> int:
    """Number of samples in all listed shards."""
    return sum(int(entry["samples"]) for entry in manifest["shards"])
