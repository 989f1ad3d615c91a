"""scripts/test.sh and .ci/run: a failing suite, or one that runs no tests, fails the run.

Each test copies the two scripts into a scratch project whose venv python is this interpreter and
runs them with BITNET_SKIP_INSTALL=1, so only the suite-running logic is exercised."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / "scripts" / "test.sh", tmp_path / "scripts" / "test.sh")
    shutil.copy(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "python").symlink_to(sys.executable)
    (tmp_path / "tests").mkdir()
    (tmp_path / "plugins" / "demo" / "tests").mkdir(parents=True)
    for suite in (tmp_path / "tests", tmp_path / "plugins" / "demo" / "tests"):
        (suite / "test_ok.py").write_text("def test_ok():\n    assert True\n")
    return tmp_path


def _run(project: Path, script: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["BITNET_VENV"] = str(project / "venv")
    env["BITNET_SKIP_INSTALL"] = "1"
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # a faster start; these suites need none
    return subprocess.run(["bash", str(project / script)], cwd=project, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_passing_suites_pass_and_ci_run_agrees(project):
    assert _run(project, "scripts/test.sh").returncode == 0
    assert _run(project, ".ci/run").returncode == 0


@pytest.mark.slow
def test_a_suite_with_no_tests_fails(project):
    (project / "plugins" / "demo" / "tests" / "test_ok.py").unlink()
    done = _run(project, ".ci/run")
    assert done.returncode == 1
    assert "plugin demo (no tests)" in done.stderr


@pytest.mark.slow
def test_a_failing_test_fails(project):
    (project / "tests" / "test_bad.py").write_text("def test_bad():\n    assert 1 == 2\n")
    done = _run(project, ".ci/run")
    assert done.returncode == 1
    assert "core (exit 1)" in done.stderr


SHELL_SCRIPTS = sorted(str(p.relative_to(ROOT)) for p in [
    *ROOT.glob("scripts/*.sh"), *ROOT.glob("benchmarks/*.sh"), ROOT / ".ci" / "run"])


@pytest.mark.parametrize("script", SHELL_SCRIPTS)
def test_shell_scripts_parse(script):
    """Every shell script at least parses (bash -n): some, like benchmarks/gpu_check.sh, only
    run on machines CI never has."""
    p = subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_gpu_check_refuses_an_unknown_mode():
    p = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "bogus"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "usage:" in p.stderr
