"""Finding source images: named datasets in their download layouts, or any folder of images.

`--src` is a `+`-separated list. Each part is one of the named datasets below (case-insensitive),
looked up under `--root` at the listed places in order, or else a folder scanned recursively (a
custom dataset; tried as ROOT/VALUE, then as VALUE itself).

| name | looked up at (first that exists) | multiscale by default |
| --- | --- | --- |
| DIV2K | DIV2K/DIV2K_train_HR, DIV2K_train_HR | yes |
| Flickr2K | Flickr2K/Flickr2K_HR, Flickr2K_HR | yes |
| DF2K | DF2K/DF2K_HR, DF2K_HR, else DIV2K + Flickr2K as above | yes |
| OST | OST/OutdoorSceneTrain_v2, OST_dataset/OutdoorSceneTrain_v2, OutdoorSceneTrain_v2, OST | no |

Real-ESRGAN trains on DF2K (multiscale) + OST (ref. §4.6); OST's training set keeps its category
subfolders (animal, building, grass, mountain, plant, sky, water), which are scanned recursively.
Files are visited in sorted order of their path so the job is deterministic; files without an
image suffix are listed as ignored; symlinked folders are followed (each real folder once).
Only regular files are read: a FIFO, socket or device named like an image is skipped as unreadable
with the reason (opening a FIFO for reading would otherwise block the job forever).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from shards.decode import IMAGE_SUFFIXES, UNREADABLE, ImageSkipped

DOWNLOADS = {
    "DIV2K": "DIV2K_train_HR.zip from the DIV2K page of ETH Zurich's Computer Vision Lab",
    "Flickr2K": "Flickr2K.tar from SNU CVLab (the EDSR authors' mirror)",
    "OST": "OutdoorSceneTrain_v2 from the OST dataset section of the SFTGAN project page",
}

_CANDIDATES = {
    "DIV2K": ("DIV2K/DIV2K_train_HR", "DIV2K_train_HR"),
    "Flickr2K": ("Flickr2K/Flickr2K_HR", "Flickr2K_HR"),
    "DF2K": ("DF2K/DF2K_HR", "DF2K_HR"),
    "OST": ("OST/OutdoorSceneTrain_v2", "OST_dataset/OutdoorSceneTrain_v2", "OutdoorSceneTrain_v2", "OST"),
}
NAMED = ("DIV2K", "Flickr2K", "DF2K", "OST")
MULTISCALE_BY_DEFAULT = frozenset({"DIV2K", "Flickr2K", "DF2K"})
MULTISCALE_MODES = ("auto", "all", "none")


class SourceNotFound(FileNotFoundError):
    """A named dataset or a folder that is not where it was looked for."""


@dataclass(frozen=True)
class SourceDir:
    """One folder of source images, the dataset name it reports and whether it gets multiscale."""

    dataset: str
    path: Path
    multiscale: bool


@dataclass(frozen=True)
class SourceFile:
    """One candidate image file. `rel` is the POSIX path recorded in provenance (relative to root)."""

    dataset: str
    path: Path
    rel: str
    multiscale: bool


def _find(root: Path, name: str, tried: list[Path]) -> Path | None:
    for rel in _CANDIDATES[name]:
        candidate = root / rel
        tried.append(candidate)
        if candidate.is_dir():
            return candidate
    return None


def _not_found(what: str, tried: list[Path], names: tuple[str, ...]) -> SourceNotFound:
    lines = [f"{what} not found; looked for these folders:"] + [f"  {p}" for p in tried]
    lines += [f"{n} comes from {DOWNLOADS[n]}." for n in names if n in DOWNLOADS]
    return SourceNotFound("\n".join(lines))


def _named(name: str, root: Path) -> list[tuple[str, Path]]:
    tried: list[Path] = []
    if name != "DF2K":
        found = _find(root, name, tried)
        if found is None:
            raise _not_found(f"dataset {name} under --root {root}", tried, (name,))
        return [(name, found)]
    found = _find(root, "DF2K", tried)
    if found is not None:
        return [("DF2K", found)]
    div2k, flickr2k = _find(root, "DIV2K", tried), _find(root, "Flickr2K", tried)
    if div2k is None or flickr2k is None:
        found = next((f" (found only {p})" for p in (div2k, flickr2k) if p is not None), "")
        raise _not_found(f"dataset DF2K (a DF2K_HR folder, or DIV2K and Flickr2K){found} under --root {root}",
                         tried, ("DIV2K", "Flickr2K"))
    return [("DIV2K", div2k), ("Flickr2K", flickr2k)]


def _custom(value: str, root: Path) -> list[tuple[str, Path]]:
    path = Path(value).expanduser()
    tried = [path] if path.is_absolute() else [root / path, path]
    for candidate in tried:
        if candidate.is_dir():
            return [(candidate.resolve().name, candidate)]
    raise _not_found(f"source {value!r} (not a named dataset: {', '.join(NAMED)}; read as a folder)", tried, ())


def resolve_sources(spec: str, root: Path, multiscale: str = "auto") -> list[SourceDir]:
    """Resolve a `--src` value such as "DF2K+OST" into source folders, in the order given.

    Args:
        spec: `+`-separated dataset names or folders.
        root: the data root named datasets are looked up in.
        multiscale: "auto" (DIV2K, Flickr2K, DF2K get multiscale copies), "all" or "none".

    Raises:
        SourceNotFound: with every path tried and, for named datasets, where to download them.
    """
    if multiscale not in MULTISCALE_MODES:
        raise ValueError(f"multiscale must be one of {MULTISCALE_MODES}, got {multiscale!r}")
    parts = [p.strip() for p in spec.split("+")]
    if not spec.strip() or any(not p for p in parts):
        raise ValueError(f"--src {spec!r} has an empty part; use names or folders joined by '+'")
    by_lower = {n.lower(): n for n in NAMED}
    dirs: list[SourceDir] = []
    for part in parts:
        name = by_lower.get(part.lower())
        found = _named(name, Path(root)) if name else _custom(part, Path(root))
        for dataset, path in found:
            use_ms = multiscale == "all" or (multiscale == "auto" and dataset in MULTISCALE_BY_DEFAULT)
            dirs.append(SourceDir(dataset, path, use_ms))
    return dirs


def _relative(path: Path, root: Path, folder: Path) -> str:
    """Path relative to root when inside it, else relative to the source folder's parent."""
    for base in (root, folder.parent):
        try:
            return path.relative_to(base).as_posix()
        except ValueError:
            continue
    return path.as_posix()


def list_source_files(dirs: list[SourceDir], root: Path) -> tuple[list[SourceFile], list[str]]:
    """All image-suffixed files of the folders (sorted per folder) and the other files (ignored).

    Symlinked folders are followed, each real folder once. A file whose name ends in an image
    suffix is a candidate even if it turns out not to be an image (it is reported later).
    """
    files: list[SourceFile] = []
    ignored: list[str] = []
    root_abs = Path(os.path.abspath(root))
    for src in dirs:
        folder = Path(os.path.abspath(src.path))
        found: list[Path] = []
        visited = {os.path.realpath(folder)}
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
            # Follow symlinked folders, but each real folder once (no loops, no double counting).
            keep = [d for d in sorted(dirnames) if os.path.realpath(os.path.join(dirpath, d)) not in visited]
            visited.update(os.path.realpath(os.path.join(dirpath, d)) for d in keep)
            dirnames[:] = keep
            found.extend(Path(dirpath) / f for f in filenames)
        for path in sorted(found, key=lambda p: p.relative_to(folder).as_posix()):
            rel = _relative(path, root_abs, folder)
            if path.suffix.lower() in IMAGE_SUFFIXES:
                files.append(SourceFile(src.dataset, path, rel, src.multiscale))
            else:
                ignored.append(rel)
    return files, ignored


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"))


def read_regular_file(path: Path) -> bytes:
    """The bytes of a regular file; anything else (FIFO, socket, device) raises ImageSkipped(UNREADABLE).

    The file is opened with O_NONBLOCK and checked with fstat on the open descriptor: opening a FIFO
    that way returns at once instead of waiting for a writer, and checking the descriptor (not the
    name) leaves no window in which the name could be swapped for a FIFO between check and read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise ImageSkipped(UNREADABLE, f"{type(exc).__name__}: {exc.strerror or exc}") from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        what = next((name for test, name in _KINDS if test(mode)), f"mode {mode:o}")
        raise ImageSkipped(UNREADABLE, f"{what}, not a regular file; only regular files are read")
    with os.fdopen(fd, "rb") as f:
        try:
            return f.read()
        except OSError as exc:
            raise ImageSkipped(UNREADABLE, f"{type(exc).__name__}: {exc.strerror or exc}") from exc
