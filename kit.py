#!/usr/bin/env python3
"""Run the toolkit in its own environment, creating or refreshing that environment on first use.

    python3 kit.py quickstart        # any `cli.py` command: the main job on the bundled photos
    python3 kit.py test [ARGS...]    # the test suite (`python -m pytest -q ARGS...`)
    python3 kit.py env               # only create / refresh the environment, print its Python

The environment is `.venv/` beside this file. It is created with the Python that runs this script (3.10 or newer)
and filled with the CPU build of torch (`torch==2.13.0`, the pinned wheel) and the toolkit with every optional
extra its tests exercise. It is refreshed when `pyproject.toml` or the torch choice changes (a stamp file records
both), and reused otherwise, so the second call starts at once.

For a CUDA build of torch, say which one before the first call, e.g.
`KIT_TORCH="torch==2.5.1 --index-url https://download.pytorch.org/whl/cu124" python3 kit.py env`
(anything `pip install` accepts). People who manage their own environment do not need this script:
`pip install torch && pip install -e ".[test,weights]"`, then `python cli.py ...` and `python -m pytest -q`.

Standard library only: this runs before anything is installed.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ENV_DIR = ROOT / ".venv"
STAMP = ENV_DIR / ".kit-stamp"
DEFAULT_TORCH = "torch==2.13.0"
# Every extra whose features the tests exercise; `test` brings pytest, hypothesis and ruff.
EXTRAS = "test,all"


def env_python() -> Path:
    return ENV_DIR / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def wanted_stamp(torch_spec: str) -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    return f"{digest} {torch_spec} {EXTRAS}"


def pip(*args: str) -> None:
    subprocess.run([str(env_python()), "-m", "pip", "install", "--quiet", *args], check=True, cwd=ROOT)


def ensure_env() -> Path:
    """Create or refresh `.venv/` when the stamp says it is missing or stale; return its Python."""
    if sys.version_info < (3, 10):  # noqa: UP036 -- this script runs before anything checks the version
        sys.exit(f"kit.py: Python 3.10 or newer is needed (this is {sys.version.split()[0]}); run it with python3.11")
    torch_spec = os.environ.get("KIT_TORCH", DEFAULT_TORCH)
    stamp = wanted_stamp(torch_spec)
    if env_python().exists() and STAMP.exists() and STAMP.read_text().strip() == stamp:
        return env_python()
    print(f"kit.py: preparing {ENV_DIR} ({torch_spec}; first run takes a few minutes)", file=sys.stderr, flush=True)
    if not env_python().exists():
        venv.EnvBuilder(with_pip=True).create(ENV_DIR)
    pip("--upgrade", "pip")
    # torch first: a package that only asks for `torch>=2.1` would otherwise pull a multi-GB CUDA build.
    pip(*shlex.split(torch_spec))
    pip("-e", f".[{EXTRAS}]")
    STAMP.write_text(stamp + "\n")
    return env_python()


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help"}:
        print(__doc__.strip())
        return 0
    python = ensure_env()
    command, rest = argv[0], argv[1:]
    if command == "env":
        print(python)
        return 0
    # As if the environment were activated: tools the tests and commands start by name (python, torchrun) are its own.
    path = f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "VIRTUAL_ENV": str(ENV_DIR), "PATH": path}
    if command == "test":  # from the repository root, where pytest finds its configuration and tests/
        return subprocess.run([str(python), "-m", "pytest", "-q", *rest], cwd=ROOT, env=env).returncode
    return subprocess.run([str(python), str(ROOT / "cli.py"), command, *rest], env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
