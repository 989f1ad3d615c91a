"""The bitnet CLI skeleton and the devices / validate subcommands."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

import bitnet
from bitnet.cli import main as cli


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"bitnet {bitnet.__version__}"


def test_python_dash_m_works():
    done = subprocess.run([sys.executable, "-m", "bitnet.cli", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0
    for name in ("devices", "validate", "run"):
        assert name in done.stdout


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_only_the_named_subcommand_is_imported(monkeypatch):
    imported = []
    real = importlib.import_module

    def spy(name, *args):
        imported.append(name)
        return real(name, *args)

    monkeypatch.setattr(cli.importlib, "import_module", spy)
    cli.build_parser(["devices", "--json"])
    assert imported == ["bitnet.cli.devices"]


def test_a_missing_or_broken_subcommand_does_not_break_the_others(monkeypatch, capsys):
    real = importlib.import_module

    def fake_import(name, *args):
        if name == "bitnet.cli.serve":
            raise RuntimeError("uvicorn exploded")
        if name == "bitnet.cli.nosuch":
            raise ModuleNotFoundError("No module named 'bitnet.cli.nosuch'", name=name)
        return real(name, *args)

    monkeypatch.setattr(cli.importlib, "import_module", fake_import)
    monkeypatch.setattr(cli, "SUBCOMMANDS", (*cli.SUBCOMMANDS, "nosuch"))
    assert cli.main(["serve"]) == 2
    assert "bitnet serve is unavailable: RuntimeError: uvicorn exploded" in capsys.readouterr().err
    assert cli.main(["nosuch"]) == 2
    assert "not part of this installation" in capsys.readouterr().err
    assert cli.main(["devices", "--json", "--no-validate"]) == 0
    assert json.loads(capsys.readouterr().out)


def test_devices_json_and_table(capsys):
    assert cli.main(["devices", "--json"]) == 0
    rows = {r["backend"]: r for r in json.loads(capsys.readouterr().out)}
    ref = rows["reference"]
    for key in ("plugin_version", "device", "name", "kind", "memory_total", "status",
                "validated", "score", "stage", "cause", "remedy", "reason"):
        assert key in ref
    assert ref["status"] == "ok" and ref["validated"] is True and ref["device"] == "reference:0"
    assert cli.main(["devices"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header == ["BACKEND", "VERSION", "DEVICE", "NAME", "KIND", "MEMORY", "VALIDATED",
                      "SCORE", "STATUS"]
    assert any(line.startswith("reference ") and line.rstrip().endswith("ok")
               for line in out.splitlines())


def test_devices_explain(capsys):
    assert cli.main(["devices", "--explain"]) == 0
    out = capsys.readouterr().out
    assert "chosen: reference:0" in out and "won" in out
    assert cli.main(["devices", "--explain", "--device", "cuda!"]) == 1
    assert "accepted: auto" in capsys.readouterr().err


def test_validate_prints_each_case(capsys):
    assert cli.main(["validate", "--device", "reference"]) == 0
    out = capsys.readouterr().out
    assert "reference:0  PASS linear_ternary[i2_s-n1-k128-m7]" in out
    assert "reference:0: PASSED" in out
    assert cli.main(["validate", "--device", "reference", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["passed"] and all(c["passed"] for c in result["cases"])


def test_validate_unknown_backend_is_an_error(capsys):
    assert cli.main(["validate", "--device", "nosuch"]) == 2
    assert "'nosuch' is not installed" in capsys.readouterr().err
