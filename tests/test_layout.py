"""The folders are the map of the data flow: which package may import which (checked on the source, not by running it).

degrade/ is a standalone library (numpy, scipy, torch, OpenCV; PyAV only for the optional video frames, imported
where used); shards/ is storage and knows nothing of degradations, models or jobs; models/ knows nothing of the
jobs; only pipelines/ composes them.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

FIRST_PARTY = {"degrade", "shards", "models", "pipelines", "cli"}
ALLOWED = {
    # tomli: the TOML reader on Python 3.10 (tomllib from 3.11); av: optional `video` extra, imported lazily
    "degrade": {"degrade", "numpy", "scipy", "torch", "cv2", "tomli", "av"},
    "shards": {"shards", "numpy", "cv2", "torch", "PIL", "webdataset", "braceexpand", "joblib", "dask", "tqdm"},
    # shards.atomic: the one atomic file writer, shared so that models/ does not import pipelines/
    "models": {"models", "shards", "torch", "numpy", "safetensors"},
}


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(top-level module, line, imported inside a function) for every absolute import in a file."""
    tree = ast.parse(path.read_text(), str(path))
    nested = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
              for n in ast.walk(f) if n is not f}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(name.split(".")[0], node.lineno, id(node) in nested) for name in names]
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_its_place_in_the_data_flow_allows(package):
    wrong = [f"{path.relative_to(REPO_ROOT)}:{line} imports {module}"
             for path in sorted((REPO_ROOT / package).rglob("*.py"))
             for module, line, _ in _imports(path)
             if module not in sys.stdlib_module_names and module not in ALLOWED[package]]
    assert not wrong, wrong


def test_video_codec_is_imported_only_where_a_video_frame_is_made():
    eager = [(path.name, line) for path in (REPO_ROOT / "degrade").rglob("*.py")
             for module, line, inside in _imports(path) if module == "av" and not inside]
    assert not eager, f"PyAV is an optional extra; import it inside the function that needs it: {eager}"


def test_the_checker_sees_a_forbidden_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nfrom pipelines.training import train\n\ndef f():\n    import av\n")
    assert _imports(probe) == [("os", 1, False), ("pipelines", 2, False), ("av", 5, True)]
