"""Named dataset layouts, custom folders, the not-found error and reading only regular files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shards.decode import UNREADABLE, ImageSkipped
from shards.sources import SourceNotFound, list_source_files, read_regular_file, resolve_sources


def touch(root: Path, *rels: str) -> Path:
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    return root


def resolved(spec: str, root: Path, multiscale: str = "auto") -> list[tuple[str, str, bool]]:
    return [(d.dataset, d.path.relative_to(root).as_posix(), d.multiscale)
            for d in resolve_sources(spec, root, multiscale)]


def test_div2k_and_flickr2k_layouts(tmp_path: Path):
    root = touch(tmp_path, "DIV2K/DIV2K_train_HR/0001.png", "Flickr2K/Flickr2K_HR/000001.png")
    assert resolved("DIV2K", root) == [("DIV2K", "DIV2K/DIV2K_train_HR", True)]
    assert resolved("flickr2k", root) == [("Flickr2K", "Flickr2K/Flickr2K_HR", True)]  # case-insensitive
    flat = touch(tmp_path / "flat", "DIV2K_train_HR/0001.png", "Flickr2K_HR/000001.png")
    assert resolved("DIV2K+Flickr2K", flat) == [("DIV2K", "DIV2K_train_HR", True),
                                                ("Flickr2K", "Flickr2K_HR", True)]


def test_df2k_prefers_df2k_hr_then_composes(tmp_path: Path):
    root = touch(tmp_path / "a", "DIV2K/DIV2K_train_HR/0001.png", "Flickr2K/Flickr2K_HR/000001.png")
    assert resolved("DF2K", root) == [("DIV2K", "DIV2K/DIV2K_train_HR", True),
                                      ("Flickr2K", "Flickr2K/Flickr2K_HR", True)]
    touch(root, "DF2K/DF2K_HR/0001.png")
    assert resolved("DF2K", root) == [("DF2K", "DF2K/DF2K_HR", True)]
    flat = touch(tmp_path / "b", "DF2K_HR/x.png")
    assert resolved("DF2K", flat) == [("DF2K", "DF2K_HR", True)]


def test_ost_categories_scanned_recursively_without_multiscale(tmp_path: Path):
    root = touch(tmp_path, "OST/OutdoorSceneTrain_v2/animal/a1.png", "OST/OutdoorSceneTrain_v2/sky/s1.png",
                 "OST/OutdoorSceneTrain_v2/sky/s0.png", "OST/OutdoorSceneTest300/t.png",
                 "OST/OutdoorSceneTrain_v2/water/readme.txt")
    dirs = resolve_sources("OST", root)
    assert [(d.dataset, d.multiscale) for d in dirs] == [("OST", False)]
    files, ignored = list_source_files(dirs, root)
    assert [f.rel for f in files] == ["OST/OutdoorSceneTrain_v2/animal/a1.png",
                                      "OST/OutdoorSceneTrain_v2/sky/s0.png", "OST/OutdoorSceneTrain_v2/sky/s1.png"]
    assert ignored == ["OST/OutdoorSceneTrain_v2/water/readme.txt"]
    # The test set beside it is not used. A bare OST folder of categories is accepted too.
    other = touch(tmp_path / "o", "OST/building/b.png")
    assert resolved("OST", other) == [("OST", "OST", False)]


def test_df2k_plus_ost_multiscale_modes(tmp_path: Path):
    root = touch(tmp_path, "DF2K_HR/1.png", "OutdoorSceneTrain_v2/grass/g.png")
    assert resolved("DF2K+OST", root) == [("DF2K", "DF2K_HR", True), ("OST", "OutdoorSceneTrain_v2", False)]
    assert [m for *_, m in resolved("DF2K+OST", root, "all")] == [True, True]
    assert [m for *_, m in resolved("DF2K+OST", root, "none")] == [False, False]


def test_custom_folder_relative_to_root_or_cwd(tmp_path: Path, monkeypatch):
    root = touch(tmp_path / "root", "mine/b/2.jpg", "mine/a/1.PNG", "mine/notes.md")
    dirs = resolve_sources("mine", root)
    assert [(d.dataset, d.multiscale) for d in dirs] == [("mine", False)]
    files, ignored = list_source_files(dirs, root)
    assert [f.rel for f in files] == ["mine/a/1.PNG", "mine/b/2.jpg"]  # sorted, suffix case-insensitive
    assert ignored == ["mine/notes.md"]
    outside = touch(tmp_path / "elsewhere", "photos/p.png") / "photos"
    monkeypatch.chdir(tmp_path / "elsewhere")
    dirs = resolve_sources("photos", root)
    files, _ = list_source_files(dirs, root)
    assert dirs[0].path.resolve() == outside.resolve() and [f.rel for f in files] == ["photos/p.png"]
    files, _ = list_source_files(resolve_sources(str(outside), root), root)
    assert [f.rel for f in files] == ["photos/p.png"]  # outside the root: relative to the folder's parent


def test_symlinked_folders_followed_once(tmp_path: Path):
    root = touch(tmp_path, "mine/a/1.png", "real/2.png")
    (root / "mine" / "linked").symlink_to(root / "real")
    (root / "mine" / "a" / "loop").symlink_to(root / "mine")
    files, _ = list_source_files(resolve_sources("mine", root), root)
    assert [f.rel for f in files] == ["mine/a/1.png", "mine/linked/2.png"]


def test_not_found_lists_paths_and_downloads(tmp_path: Path):
    with pytest.raises(SourceNotFound) as info:
        resolve_sources("DF2K+OST", tmp_path)
    message = str(info.value)
    for rel in ("DF2K/DF2K_HR", "DF2K_HR", "DIV2K/DIV2K_train_HR", "DIV2K_train_HR", "Flickr2K/Flickr2K_HR",
                "Flickr2K_HR"):
        assert str(tmp_path / rel) in message
    assert "ETH Zurich" in message and "SNU CVLab" in message
    touch(tmp_path, "DIV2K_train_HR/1.png", "DF2K_HR/1.png")
    with pytest.raises(SourceNotFound) as info:
        resolve_sources("DF2K+OST", tmp_path)
    message = str(info.value)
    assert "OutdoorSceneTrain_v2" in message and "SFTGAN" in message and str(tmp_path / "OST") in message
    with pytest.raises(SourceNotFound, match="only .*DIV2K_train_HR"):
        resolve_sources("DF2K", touch(tmp_path / "half", "DIV2K_train_HR/1.png"))
    with pytest.raises(SourceNotFound, match="nothere"):
        resolve_sources("nothere", tmp_path)
    with pytest.raises(ValueError, match="empty part"):
        resolve_sources("DF2K++OST", tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need a POSIX system")
def test_only_regular_files_are_read(tmp_path: Path):
    (tmp_path / "ok.png").write_bytes(b"\x89PNG data")
    os.mkfifo(tmp_path / "pipe.png")
    assert read_regular_file(tmp_path / "ok.png") == b"\x89PNG data"
    # No writer ever opens the FIFO: a plain open() would block here forever.
    with pytest.raises(ImageSkipped, match="FIFO .*not a regular file") as info:
        read_regular_file(tmp_path / "pipe.png")
    assert info.value.kind == UNREADABLE
    with pytest.raises(ImageSkipped, match="a folder") as info:
        read_regular_file(tmp_path)
    with pytest.raises(ImageSkipped, match="FileNotFoundError") as info:
        read_regular_file(tmp_path / "gone.png")
