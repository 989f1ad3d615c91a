#!/usr/bin/env bash
# Install bitnet and every plugin in plugins/ into .venv (idempotent: re-running is cheap).
#
#   scripts/install.sh            system packages (Debian/Ubuntu, needs root or sudo) + .venv
#   BITNET_SKIP_APT=1 scripts/install.sh    skip the system packages
#
# bitnet and bitnet-* are only ever installed from local paths: the name `bitnet` on PyPI
# belongs to an unrelated project. Plugins go in with --no-deps; their other requirements are
# installed from their pyproject (scripts/plugin_deps.py). A plugin whose requirements cannot be
# installed here (PyCUDA without the CUDA toolkit, say) is still installed: `bitnet devices` then
# says why it is unavailable. A plugin that fails to build makes the script fail (at the end,
# after trying the others).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${BITNET_VENV:-$ROOT/.venv}"
PLUGIN_EXTRAS="${BITNET_PLUGIN_EXTRAS:-pocl}"  # optional plugin extras to include when defined
# what running needs: a C toolchain and OpenMP for the cpu plugin, lavapipe for Vulkan. The
# test-only packages (cross compilers, qemu, shader and kernel-source tools) are test.sh's.
APT_PACKAGES=(build-essential libgomp1 mesa-vulkan-drivers libvulkan1
              python3 python3-venv python3-dev)

log() { printf '[install] %s\n' "$*" >&2; }

find_python() {
    for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [[ -n "$candidate" ]] || continue
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    log "bitnet needs Python >= 3.11 (set PYTHON=/path/to/python3.11)"
    exit 1
}

"$ROOT/scripts/system_packages.sh" "${APT_PACKAGES[@]}"
if [[ ! -x "$VENV/bin/python" ]]; then
    PY="$(find_python)"
    log "creating $VENV with $PY"
    "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install --quiet --upgrade pip "setuptools>=77" wheel "Cython>=3.0"

log "installing bitnet (core, reference backend, CLI) from $ROOT"
"${PIP[@]}" install --quiet --no-build-isolation -e "$ROOT"

broken=()
for plugin in "$ROOT"/plugins/*/; do
    plugin="${plugin%/}"
    if [[ ! -f "$plugin/pyproject.toml" ]]; then
        log "skipping $plugin (no pyproject.toml yet)"
        continue
    fi
    mapfile -t deps < <("$VENV/bin/python" "$ROOT/scripts/plugin_deps.py" "$plugin" \
                        $PLUGIN_EXTRAS)
    if [[ ${#deps[@]} -gt 0 ]]; then
        "${PIP[@]}" install --quiet "${deps[@]}" \
            || log "WARNING: requirements of $(basename "$plugin") failed to install" \
                   "(${deps[*]}); its backend will report itself unavailable"
    fi
    log "installing plugin $(basename "$plugin")"
    "${PIP[@]}" install --quiet --no-deps --no-build-isolation -e "$plugin" \
        || broken+=("$(basename "$plugin")")
done
if [[ ${#broken[@]} -gt 0 ]]; then
    log "ERROR: plugins that failed to build or install: ${broken[*]} (pip output above)"
    exit 1
fi
log "done: $VENV/bin/bitnet devices"
