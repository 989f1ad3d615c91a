#!/usr/bin/env bash
# Install everything plus the test requirements, then run every test suite:
# tests/ (core) and plugins/*/tests, each plugin in its own pytest session from its own directory
# (so plugins' helper modules and conftests never collide).
#
#   scripts/test.sh [extra pytest args]      e.g. scripts/test.sh -x -m "not slow"
#   BITNET_SKIP_INSTALL=1 scripts/test.sh    re-run the tests without (re)installing anything
#
# Exits non-zero when any suite fails, and also when a suite collects no tests (pytest exit 5):
# a suite that silently runs nothing must not pass.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BITNET_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
# what only the tests need: aarch64 cross compiler + qemu (the cpu plugin's NEON kernels),
# clang-15 (OpenCL kernel sources compiled offline), glslc + spirv-tools (the SPIR-V is current),
# the Vulkan validation layers, chromium + chromium-driver + a font (the chat page in a real
# browser; the font is only recommended by chromium, and with none chromedriver types only the
# first character of a text)
TEST_APT_PACKAGES=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user clang-15 glslc
                   spirv-tools vulkan-validationlayers chromium chromium-driver fonts-liberation)
if [[ "${BITNET_SKIP_INSTALL:-0}" != "1" ]]; then
    "$ROOT/scripts/install.sh" || { echo "[test] install failed" >&2; exit 1; }
    "$ROOT/scripts/system_packages.sh" "${TEST_APT_PACKAGES[@]}" \
        || { echo "[test] installing the test system packages failed" >&2; exit 1; }
    "$PY" -m pip install --quiet --disable-pip-version-check \
        "pytest>=8" "hypothesis>=6.90" "httpx>=0.25" "openai>=1.0" "schemathesis>=4" \
        "selenium>=4.11" \
        "fastapi>=0.110" "uvicorn>=0.27" "pydantic>=2.5" "prometheus-client>=0.19" \
        "ray[serve]>=2.9" "torch==2.13.0" \
        "transformers>=5,<6" "accelerate>=1.0" "safetensors>=0.4" \
        "llama-cpp-python==0.3.36" \
        || { echo "[test] installing the test requirements failed" >&2; exit 1; }
fi

# the reference backend's many small matmuls run faster on one BLAS thread than on two
# threads fighting the test's own work (and no oversubscription with the cpu plugin's OpenMP)
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
export RAY_USAGE_STATS_ENABLED=0

# the parity fixtures: shared/ beside the checkout, as CI lays it out (bitnet.testing.fixtures)
if [[ -z "${BITNET_FIXTURES:-}" && -f "$ROOT/../shared/fixtures/manifest.json" ]]; then
    export BITNET_FIXTURES="$(cd "$ROOT/../shared/fixtures" && pwd)"
fi

# one validation cache for the whole run, never the user's
export BITNET_CACHE_DIR="${BITNET_CACHE_DIR:-$(mktemp -d -t bitnet-test-cache-XXXXXX)}"

failed=()
run_suite() {  # run_suite NAME DIR TESTPATH
    local name="$1" dir="$2" path="$3"
    echo "[test] === $name ===" >&2
    (cd "$dir" && "$PY" -m pytest -p no:cacheprovider -q "$path" "${PYTEST_ARGS[@]}")
    local rc=$?
    if [[ $rc -eq 5 ]]; then
        echo "[test] $name: no tests ran (pytest exit 5): counted as a failure" >&2
        failed+=("$name (no tests)")
    elif [[ $rc -ne 0 ]]; then
        failed+=("$name (exit $rc)")
    fi
}

PYTEST_ARGS=("$@")
run_suite core "$ROOT" tests
for plugin in "$ROOT"/plugins/*/; do
    plugin="${plugin%/}"
    if [[ -d "$plugin/tests" ]]; then
        run_suite "plugin $(basename "$plugin")" "$plugin" tests
    else
        failed+=("plugin $(basename "$plugin") (no tests/ directory)")
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "[test] FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "[test] all suites passed" >&2
