"""examples/third_party_backend installs as a real distribution and is discovered, validated and
selectable, exactly as a stranger's plugin would be."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "third_party_backend"


def _run(args: list[str], env: dict[str, str], cwd: Path | None = None):
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def example_env(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("example")
    source = tmp / "src"
    shutil.copytree(EXAMPLE, source)  # build outside the repo: no build/ or egg-info left there
    target = tmp / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps",
                           "--no-build-isolation", "--no-index", "--quiet", "--target",
                           str(target), str(source)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(target), env.get("PYTHONPATH")) if p)
    env["BITNET_PLUGINS_AUTOLOAD"] = "0"
    env["BITNET_PLUGINS"] = "example"
    env["BITNET_CACHE_DIR"] = str(tmp / "cache")
    env.pop("BITNET_DEVICE", None)
    env.pop("BITNET_STRICT", None)
    return env


@pytest.mark.slow
def test_example_is_discovered_and_validated(example_env):
    done = _run(["-m", "bitnet.cli", "devices", "--json"], example_env)
    assert done.returncode == 0, done.stderr
    rows = {r["backend"]: r for r in json.loads(done.stdout)}
    assert rows["example"]["status"] == "ok"
    assert rows["example"]["validated"] is True
    assert rows["example"]["plugin_version"] == "0.1.0"


@pytest.mark.slow
def test_example_passes_bitnet_validate(example_env):
    done = _run(["-m", "bitnet.cli", "validate", "--device", "example", "--json"], example_env)
    assert done.returncode == 0, done.stdout + done.stderr
    (result,) = json.loads(done.stdout)
    assert result["passed"] and len(result["cases"]) > 30
    assert any(c["id"].startswith("layer[i2_s") for c in result["cases"])


@pytest.mark.slow
def test_example_is_selectable_and_wins_auto_over_the_reference(example_env):
    code = ("from bitnet.registry import select; "
            "print(select('example').device.spec, select('auto').device.spec)")
    done = _run(["-c", code], example_env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["example:0", "example:0"]


@pytest.mark.slow
def test_example_runs_a_model_with_device_example(example_env, tmp_path):
    from bitnet.testing.synthetic import make_synthetic_model

    model = make_synthetic_model(tmp_path / "tiny.gguf", d_model=256, n_layers=1, n_heads=4,
                                 n_kv_heads=2, d_ff=512, n_vocab=300, n_ctx=64)
    done = _run(["-m", "bitnet.cli", "run", "--model", str(model), "--device", "example",
                 "--prompt", "hello", "-n", "4", "--temp", "0", "--json"], example_env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "example" in done.stdout
