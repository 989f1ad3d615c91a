"""bitnet.testing.conformance used the way a backend package uses it: a conftest with
``pytest_plugins`` and ``--bitnet-backend NAME``, in a separate pytest run."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _pytest(tmp_path, env, *args):
    env = dict(env, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")  # only our plugin: a faster start
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["bitnet.testing.conformance"]\n')
    return subprocess.run([sys.executable, "-m", "pytest", "-rfs", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(tmp_path), *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_good_backend_passes_with_one_test_per_case(tmp_path, fake_env):
    done = _pytest(tmp_path, fake_env("fakegood"), "--bitnet-backend", "fakegood", "-v")
    assert done.returncode == 0, done.stdout[-3000:]
    assert "conftest.py::test_validation[linear_ternary[tq2_0-n1-k256-m7]] PASSED" in done.stdout
    assert "conftest.py::test_api[buffers] PASSED" in done.stdout
    assert "conftest.py::test_edge[linear_ternary[i2_s-n64-k2560-m3]] PASSED" in done.stdout


@pytest.mark.slow
def test_wrong_numbers_fail_the_exact_cases(tmp_path, fake_env):
    done = _pytest(tmp_path, fake_env("fakewrong"), "--bitnet-backend", "fakewrong")
    assert done.returncode == 1
    assert "FAILED conftest.py::test_validation[linear_ternary[i2_s-n1-k128-m7]]" in done.stdout
    assert "test_validation[rmsnorm" not in done.stdout.split("short test summary")[-1]


@pytest.mark.slow
def test_an_unavailable_backend_is_skipped_with_its_reason(tmp_path, fake_env):
    done = _pytest(tmp_path, fake_env("fakeabsent"), "--bitnet-backend", "fakeabsent")
    assert done.returncode == 0, done.stdout[-3000:]
    assert "fakeabsent is unavailable here: no fake accelerator found" in done.stdout


@pytest.mark.slow
def test_no_backend_named_skips_with_instructions(tmp_path, fake_env):
    done = _pytest(tmp_path, fake_env())
    assert done.returncode == 0, done.stdout[-3000:]
    assert "pass --bitnet-backend NAME" in done.stdout


def _pytest_with_extras(tmp_path, env, extras: str, *args):
    env = dict(env, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["bitnet.testing.conformance"]\n'
                                          f"conformance_extras = {extras}\n")
    return subprocess.run([sys.executable, "-m", "pytest", "-rfs", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(tmp_path), *args], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_extras_add_the_op_checks_under_their_own_ids(tmp_path, fake_env):
    done = _pytest_with_extras(tmp_path, fake_env("fakegood"), '("ops",)',
                               "--bitnet-backend", "fakegood", "-v", "-k", "ops and rmsnorm")
    assert done.returncode == 0, done.stdout[-3000:]
    assert "conftest.py::ops::test_rmsnorm" in done.stdout and " PASSED" in done.stdout


@pytest.mark.slow
def test_a_misspelled_extra_is_an_error(tmp_path, fake_env):
    done = _pytest_with_extras(tmp_path, fake_env("fakegood"), '("opz",)',
                               "--bitnet-backend", "fakegood")
    assert done.returncode != 0
    assert "conformance_extras" in done.stdout + done.stderr
