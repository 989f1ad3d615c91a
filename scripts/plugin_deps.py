"""Print a plugin's third-party requirements, one per line, never a ``bitnet*`` one.

    python scripts/plugin_deps.py plugins/opencl [EXTRA ...]

Used by install.sh: plugins are installed from their local paths with ``--no-deps`` so that pip
can never resolve ``bitnet`` or ``bitnet-*`` from PyPI (the name ``bitnet`` there is an unrelated
project); their other dependencies are installed from this list. Extras named on the command line
are included when the plugin defines them (e.g. ``pocl`` for OpenCL on CPU-only machines).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0].lower()


def requirements(plugin_dir: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads((plugin_dir / "pyproject.toml").read_text())["project"]
    wanted = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        wanted += optional.get(extra, [])
    return [r for r in wanted if not _name(r).replace("_", "-").startswith("bitnet")]


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    for requirement in requirements(Path(sys.argv[1]), sys.argv[2:]):
        print(requirement)
    return 0


if __name__ == "__main__":
    sys.exit(main())
