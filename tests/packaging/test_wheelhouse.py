"""The extras resolve: every distribution (root + plugins/*) is built into a local wheelhouse with
the runtime dependencies, and ``bitnet[cpu,opencl,cuda,metal]`` installs from it alone
(``--no-index``) into a fresh venv, whose ``bitnet devices --json`` lists every plugin (cuda and
metal as unavailable here, with their reasons). bitnet-cuda and bitnet-metal also install on
their own, each into a venv of its own.

bitnet and bitnet-* never come from PyPI here (the name is taken there by another project): they
are built from this checkout, and third-party requirements are fetched by name only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKED_EXTRAS = ("cpu", "opencl", "cuda", "metal")
ALONE = ("cuda", "metal")  # the GPU plugins: installed without the others
_IGNORE = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__",
                                 ".bench", "wheelhouse", ".pytest_cache", ".hypothesis", "*.so")


def _pip(*args: str, python: str = sys.executable, timeout: int = 900) -> None:
    done = subprocess.run([python, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=timeout)
    output = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert done.returncode == 0, f"pip {' '.join(args)}\n{output}"


def _third_party(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    deps = project.get("dependencies", [])
    return [d for d in deps if not re.match(r"\s*bitnet", d, re.IGNORECASE)]


def _plugins() -> list[Path]:
    return sorted(p for p in (ROOT / "plugins").glob("*") if (p / "pyproject.toml").is_file())


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> tuple[Path, list[str]]:
    present = [e for e in CHECKED_EXTRAS if (ROOT / "plugins" / e / "pyproject.toml").is_file()]
    if not present:
        pytest.skip(f"plugins/{{{','.join(CHECKED_EXTRAS)}}}/pyproject.toml do not exist yet")
    tmp = tmp_path_factory.mktemp("wheelhouse")
    house = tmp / "wheelhouse"
    source = tmp / "src"
    shutil.copytree(ROOT, source, ignore=_IGNORE)  # build from a copy: no artefacts in the repo
    requirements = _third_party(source / "pyproject.toml")
    _pip("wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(house), str(source))
    for plugin in _plugins():
        _pip("wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(house),
             str(source / "plugins" / plugin.name))
        requirements += _third_party(plugin / "pyproject.toml")
    # runtime dependencies, by name only (never bitnet*): from the pip cache, else PyPI
    _pip("download", "--quiet", "--dest", str(house), *sorted(set(requirements)))
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = str(env_dir / "bin" / "python")
    spec = f"bitnet[{','.join(present)}]"
    _pip("install", "--quiet", "--no-index", "--find-links", str(house), spec, python=python)
    return env_dir, present, house


@pytest.mark.slow
@pytest.mark.parametrize("extra", CHECKED_EXTRAS)
def test_extra_installs_from_the_wheelhouse(fresh_venv, extra, tmp_path):
    env_dir, present, _ = fresh_venv
    if extra not in present:
        pytest.skip(f"plugins/{extra}/pyproject.toml does not exist yet")
    env = _clean_env(tmp_path)
    backends = _listed(env_dir, env, tmp_path)
    assert extra in backends, sorted(backends)
    assert "reference" in backends
    assert backends[extra]["plugin_version"] == "0.1.0"
    # the installed package is the wheel, not this checkout
    where = subprocess.run([str(env_dir / "bin" / "python"), "-c",
                            "import bitnet; print(bitnet.__file__)"], env=env, cwd=tmp_path,
                           capture_output=True, text=True)
    assert str(env_dir) in where.stdout


@pytest.mark.slow
def test_the_wheel_carries_the_package_data(fresh_venv, tmp_path):
    """The installed wheel has the demo model and every file of the chat page."""
    env_dir, _, _ = fresh_venv
    wanted = [("bitnet.data", "demo-b158-i2_s.gguf")] + [
        ("bitnet.server", f"static/{p.name}") for p in (ROOT / "bitnet/server/static").iterdir()]
    code = ("import sys; from importlib import resources; import bitnet; print(bitnet.__file__); "
            "[print(package, name, resources.files(package).joinpath(name).is_file()) "
            "for package, name in (a.split(':') for a in sys.argv[1:])]")
    done = subprocess.run([str(env_dir / "bin" / "python"), "-c", code,
                           *(f"{package}:{name}" for package, name in wanted)],
                          env=_clean_env(tmp_path), cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    where, *found = done.stdout.splitlines()
    assert str(env_dir) in where  # the wheel, not this checkout
    assert found == [f"{package} {name} True" for package, name in wanted]


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """This process's environment without bitnet's settings or Python paths, and a fresh cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BITNET_", "PYTHON"))}
    env["BITNET_CACHE_DIR"] = str(tmp_path / "cache")
    return env


def _listed(env_dir: Path, env: dict[str, str], cwd: Path) -> dict[str, dict]:
    """The venv's ``bitnet devices --json --no-validate`` rows, by backend."""
    done = subprocess.run([str(env_dir / "bin" / "bitnet"), "devices", "--json", "--no-validate"],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return {r["backend"]: r for r in json.loads(done.stdout)}


@pytest.mark.slow
@pytest.mark.parametrize("plugin", ALONE)
def test_gpu_plugin_installs_alone(fresh_venv, plugin, tmp_path):
    """``pip install bitnet-<plugin>`` by itself: bitnet comes with it, no other plugin does, and
    the plugin is listed (unavailable on this machine, with the reason)."""
    _, _, house = fresh_venv
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    _pip("install", "--quiet", "--no-index", "--find-links", str(house), f"bitnet-{plugin}",
         python=str(env_dir / "bin" / "python"))
    backends = _listed(env_dir, _clean_env(tmp_path), tmp_path)
    assert set(backends) == {plugin, "reference"}, sorted(backends)
    row = backends[plugin]
    assert row["plugin_version"] == "0.1.0"
    assert row["status"] == "unavailable", row  # no NVIDIA driver / not macOS here
    assert row.get("reason"), row
