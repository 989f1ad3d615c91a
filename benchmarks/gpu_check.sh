#!/usr/bin/env bash
# One prepared check of the GPU plugins on an NVIDIA machine without network (issue 15 item 6).
#
# Here (with network), once:   benchmarks/gpu_check.sh prepare [DIR]      (default DIR: .gpu)
#   downloads PyCUDA's sdist and wheels of everything the run installs, for Python 3.12 (the
#   GPU machine's; PYVER=3.11 to change). DIR is in .git/info/exclude, so it travels as a
#   carried path and is never committed.
# There (from the repository root):   benchmarks/gpu_check.sh run [DIR]
#   builds PyCUDA from its sdist, installs bitnet + cpu + cuda (+ opencl, vulkan) into
#   /tmp/site, then: devices, validation, the cuda test suite (conformance on the real GPU),
#   bench of a 2B-shaped I2_S + Q6_K model with replay off and on (host submissions per token),
#   a per-op profile, and what the Vulkan and OpenCL plugins see. Logs go to $OUT (or ./gpu-out).
# Written 2026-12-05 and checked here for syntax only: no GPU was lent to that session.
set -uo pipefail

MODE="${1:-}"
DIR="${2:-.gpu}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYVER="${PYVER:-3.12}"
WHEELS=(numpy gguf sentencepiece protobuf tokenizers jinja2 pluggy platformdirs tqdm
        "huggingface_hub>=2.4,<3" pytools mako platformdirs siphash24 typing_extensions
        pytest hypothesis Cython setuptools wheel pyopencl vulkan cffi)

prepare() {
    mkdir -p "$DIR"
    grep -qxF "/$DIR/" .git/info/exclude 2>/dev/null || echo "/$DIR/" >> .git/info/exclude
    python3 -m pip download -d "$DIR" --no-deps --no-binary :all: "pycuda==2026.1"
    python3 -m pip download -d "$DIR" --only-binary :all: --python-version "$PYVER" \
        --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 "${WHEELS[@]}"
    echo "prepared $DIR: carry it (run tool: carry=[\"$DIR\"]) and call: $0 run $DIR"
}

run() {
    local out="${OUT:-$ROOT/gpu-out}" site=/tmp/site py
    mkdir -p "$out"
    py="$(command -v python3)"
    exec > >(tee "$out/gpu_check.log") 2>&1
    nvidia-smi || echo "gpu_check: nvidia-smi failed"
    "$py" -m pip install -q --no-index --find-links "$DIR" --target "$site" "${WHEELS[@]}"
    export PYTHONPATH="$site:$ROOT" PATH="$site/bin:$PATH"
    CUDA_ROOT="${CUDA_ROOT:-/usr/local/cuda}" "$py" -m pip wheel -q --no-deps \
        --no-build-isolation -w "$DIR/built" "$DIR"/pycuda-*.tar.gz
    "$py" -m pip install -q --no-deps --target "$site" "$DIR"/built/pycuda-*.whl
    "$py" -m pip install -q --no-deps --no-build-isolation --target "$site" \
        . plugins/cpu plugins/cuda plugins/opencl plugins/vulkan
    local bitnet=("$py" -m bitnet.cli.main) model="$out/2b-i2_s-q6_k.gguf"
    export BITNET_PLUGINS_AUTOLOAD=1
    step() { echo "== $*"; local t0=$SECONDS; "$@"; echo "== exit $? in $((SECONDS - t0)) s"; }
    step "${bitnet[@]}" devices
    step "${bitnet[@]}" validate --device cuda
    step "$py" -m pytest -q -p no:cacheprovider plugins/cuda/tests
    step "$py" benchmarks/make_models.py "$out" --formats i2_s --embed q6_k
    model="$(ls "$out"/*i2_s*.gguf | head -1)"
    for replay in 0 1; do
        # --batch 8: the server's batched step (aggregate of 8 sequences; target >= 4x tg)
        BITNET_REPLAY=$replay step "${bitnet[@]}" bench -m "$model" --device cuda \
            --prompt 512 --tokens 128 -r 3 --batch 8 --json
    done
    # prompts on the dp4a GEMM: what the int8 tensor cores (sm_80+, 16 tokens and up) give
    BITNET_CUDA_MMA=0 step "${bitnet[@]}" bench -m "$model" --device cuda --prompt 512 \
        --tokens 16 -r 3 --json
    # --fused: batch-1 steps with whole decode blocks (7 launches a block) against op by op
    step "$py" benchmarks/profile_ops.py -m "$model" --device cuda --batch 1 8 --fused
    for dev in vulkan opencl; do
        step "${bitnet[@]}" validate --device "$dev"
        step "${bitnet[@]}" bench -m "$model" --device "$dev" --prompt 128 --tokens 32 -r 1 --json
    done
    rm -f "$out"/*.gguf  # too large to bring back
}

case "$MODE" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: $0 prepare|run [DIR]" >&2; exit 2 ;;
esac
