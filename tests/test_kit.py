"""kit.py, the two-command set-up: the environment is created once, reused while its stamp matches, refreshed
when pyproject.toml or the torch choice changes, and commands are dispatched to cli.py / pytest inside it."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def kit(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("kit_under_test", ROOT / "kit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    monkeypatch.setattr(module, "ROOT", tmp_path)
    monkeypatch.setattr(module, "ENV_DIR", tmp_path / ".venv")
    monkeypatch.setattr(module, "STAMP", tmp_path / ".venv" / ".kit-stamp")
    monkeypatch.delenv("KIT_TORCH", raising=False)
    calls: list[list[str]] = []
    envs: list[dict | None] = []

    def fake_create(self, env_dir):  # a venv without the cost: only the interpreter path must exist
        python = Path(env_dir) / "bin" / "python"
        python.parent.mkdir(parents=True)
        python.write_text("")

    def fake_run(args, check=False, cwd=None, env=None):
        calls.append([str(a) for a in args])
        envs.append(env)
        return subprocess.CompletedProcess(args, 0)

    monkeypatch.setattr(module.venv.EnvBuilder, "create", fake_create)
    monkeypatch.setattr(module.subprocess, "run", fake_run)
    monkeypatch.setattr(module.os, "name", "posix")
    module.calls = calls
    module.envs = envs
    return module


def _pip_installs(calls):
    return [c[c.index("install") + 1:] for c in calls if "pip" in c and "install" in c]


def test_first_call_installs_cpu_torch_before_the_toolkit(kit):
    kit.ensure_env()
    installs = _pip_installs(kit.calls)
    torch_at = next(i for i, c in enumerate(installs) if "torch==2.13.0" in c)
    toolkit_at = next(i for i, c in enumerate(installs) if "-e" in c)
    assert torch_at < toolkit_at
    assert kit.STAMP.exists()


def test_second_call_reuses_the_environment(kit):
    kit.ensure_env()
    kit.calls.clear()
    kit.ensure_env()
    assert kit.calls == []


def test_changed_pyproject_or_torch_choice_refreshes(kit, monkeypatch):
    kit.ensure_env()
    kit.calls.clear()
    (kit.ROOT / "pyproject.toml").write_text("[project]\nname = 'y'\n")
    kit.ensure_env()
    assert any("-e" in c for c in _pip_installs(kit.calls))
    kit.calls.clear()
    monkeypatch.setenv("KIT_TORCH", "torch==9.9 --index-url https://example.invalid/cu")
    kit.ensure_env()
    assert ["--quiet", "torch==9.9", "--index-url", "https://example.invalid/cu"] in _pip_installs(kit.calls)


def test_dispatch_runs_cli_commands_and_pytest_in_the_environment(kit):
    assert kit.main(["quickstart", "--out", "x"]) == 0
    assert kit.calls[-1][1:] == [str(kit.ROOT / "cli.py"), "quickstart", "--out", "x"]
    assert kit.calls[-1][0] == str(kit.env_python())
    assert kit.main(["test", "-m", "not slow"]) == 0
    assert kit.calls[-1][1:] == ["-m", "pytest", "-q", "-m", "not slow"]
    # run as if activated: `python` / `torchrun` started by name inside the tests are the environment's
    path = kit.envs[-1]["PATH"].split(kit.os.pathsep)
    assert path[0] == str(kit.env_python().parent) and kit.envs[-1]["VIRTUAL_ENV"] == str(kit.ENV_DIR)


def test_readme_starts_with_the_two_kit_commands():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["python3 kit.py quickstart", "python3 kit.py test"]
    assert "python3.11 kit.py test" in (ROOT / ".ci" / "run").read_text()
