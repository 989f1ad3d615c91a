"""Broken plugins: each fault is isolated, shown by `bitnet devices`, skipped by auto with one
warning line, an error in strict mode, and survivable on the next run."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from bitnet.hal import API_VERSION
from bitnet.registry import BackendSelectionError, list_devices, select


def _row(rows, backend):
    matches = [r for r in rows if r.backend == backend]
    assert len(matches) == 1, [r.backend for r in rows]
    return matches[0]


def _run(args, env, timeout=240):
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


FAULTS = [
    # (fake, stage, words in the cause or remedy)
    ("fakebroken", "import", "libfakegpu.so.1"),
    ("fakeprobe", "probe", "fake driver exploded"),
    ("fakefuture", "api", f"the plugin speaks 99..99, bitnet speaks {API_VERSION}"),
    ("fakewrong", "validate", "linear_ternary"),
    ("fakenotdesc", "import", "not a BackendDescriptor"),
]


@pytest.mark.parametrize("fake,stage,words", FAULTS, ids=[f[0] for f in FAULTS])
def test_fault_is_recorded_and_auto_skips_it(fake_plugins, caplog, fake, stage, words):
    fake_plugins(fake)
    rows = list_devices()
    row = _row(rows, fake)
    assert row.status == "failed"
    assert row.stage == stage
    assert words in row.cause + row.remedy
    assert _row(rows, "reference").status == "ok"
    with caplog.at_level(logging.INFO, logger="bitnet"):
        selection = select("auto")
    assert selection.device.backend == "reference"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert fake in warnings[0].getMessage() and stage in warnings[0].getMessage()


@pytest.mark.parametrize("fake", [f[0] for f in FAULTS])
def test_strict_mode_turns_the_fault_into_an_error(fake_plugins, monkeypatch, fake):
    fake_plugins(fake)
    monkeypatch.setenv("BITNET_STRICT", "1")
    with pytest.raises(BackendSelectionError, match=f"BITNET_STRICT=1.*{fake}"):
        select("auto")


def test_explicit_broken_device_is_an_error_naming_cause_and_fix(fake_plugins):
    fake_plugins("fakewrong", "fakeprobe")
    with pytest.raises(BackendSelectionError) as err:
        select("fakewrong")
    text = str(err.value)
    assert "failed at stage validate" in text and "bitnet validate --device fakewrong:0" in text
    with pytest.raises(BackendSelectionError, match="fake driver exploded"):
        select("fakeprobe:0")


def test_api_mismatch_is_refused_before_the_heavy_import(fake_plugins):
    fake_plugins("fakefuture")
    row = _row(list_devices(), "fakefuture")
    assert row.stage == "api"
    assert "99..99" in row.cause and f"bitnet speaks {API_VERSION}" in row.cause  # both versions named
    assert "upgrade bitnet" in row.remedy and "scripts/install.sh" in row.remedy
    assert "bitnet_fakes.heavy" not in sys.modules


def test_unavailable_is_not_a_failure(fake_plugins, monkeypatch):
    fake_plugins("fakeabsent")
    monkeypatch.setenv("BITNET_STRICT", "1")
    row = _row(list_devices(), "fakeabsent")
    assert row.status == "unavailable"
    assert row.remedy == "plug in the fake accelerator"
    assert select("auto").device.backend == "reference"  # strict: unavailable is fine
    with pytest.raises(BackendSelectionError, match="no fake accelerator found"):
        select("fakeabsent")


def test_wrong_numbers_are_cached_as_a_failure(fake_plugins, monkeypatch):
    cache = fake_plugins("fakewrong")
    assert _row(list_devices(), "fakewrong").validated is False
    files = list((cache / "validation").glob("*.json"))
    assert files, "the verdict was not cached"
    # the cached verdict is used without re-running the suite
    import bitnet.registry.device_checks as checks

    def boom(self, check):
        raise AssertionError("the suite ran again despite a cached verdict")

    monkeypatch.setattr(checks.Checker, "run_suite", boom)
    assert _row(list_devices(), "fakewrong").stage == "validate"


def test_import_bitnet_and_cli_survive_every_fault(fake_env):
    env = fake_env(*[f[0] for f in FAULTS], "fakeabsent")
    done = _run(["-c", "import bitnet; print(bitnet.__version__)"], env)
    assert done.returncode == 0, done.stderr
    done = _run(["-m", "bitnet.cli", "devices"], env)
    assert done.returncode == 0, done.stderr
    for fake, stage, words in FAULTS:
        line = next(ln for ln in done.stdout.splitlines() if ln.startswith(fake))
        assert f"failed at stage {stage}" in line and words in line, line
    assert "unavailable: no fake accelerator found" in done.stdout
    strict = dict(env, BITNET_STRICT="1")
    done = _run(["-m", "bitnet.cli", "devices"], strict)
    assert done.returncode == 1 and "BITNET_STRICT=1" in done.stderr


CRASH_SELECT = "from bitnet.registry import select; print('chose', select('auto').device.spec)"


@pytest.mark.slow
def test_a_backend_that_crashes_validation_is_quarantined(fake_env):
    env = fake_env("fakecrash")
    first = _run(["-c", CRASH_SELECT], env)
    assert first.returncode == 86, first.stderr  # the fake killed the process mid-validation
    second = _run(["-c", CRASH_SELECT], env)
    assert second.returncode == 0, second.stderr
    assert "chose reference:0" in second.stdout
    warning = [ln for ln in second.stderr.splitlines() if "fakecrash" in ln]
    assert len(warning) == 1 and "crashed the process in a previous run" in warning[0]
    devices = _run(["-m", "bitnet.cli", "devices"], env)
    assert devices.returncode == 0
    assert "failed at stage validate: crashed the process in a previous run" in devices.stdout
    strict = _run(["-c", CRASH_SELECT], dict(env, BITNET_STRICT="1"))
    assert strict.returncode == 1 and "crashed the process" in strict.stderr
    retry = _run(["-m", "bitnet.cli", "devices", "--revalidate"], env)
    assert retry.returncode == 86  # --revalidate really retries (and this fake crashes again)
