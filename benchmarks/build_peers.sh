#!/usr/bin/env bash
# Build the two CPU peers' llama-bench outside this repository (never commit their code):
#
#   benchmarks/build_peers.sh bitnet.cpp BITNET_GITDIR LINUX_GITDIR [OUT=$PEERS/bitnet.cpp]
#   benchmarks/build_peers.sh llama.cpp [SRC_DIR] [OUT=$PEERS/llama.cpp]
#
# PEERS defaults to /work/peers. What each step is and why: ../shared/bitnet-cpp.md.
# - bitnet.cpp (the I2_S peer): microsoft/BitNet@01eb415 with its llama.cpp fork taken from
#   ygqdan/BitNet-linux@6d113cd (which vendors the fork as plain files); give bare git snapshots
#   of both repositories. gcc 12, TL2 off, the codegen setup_env.py runs for 2B-4T on x86.
# - llama.cpp (the TQ2_0 peer): the tree vendored in the llama-cpp-python 0.3.36 sdist
#   (ggml-org/llama.cpp@0c1e57098). Without SRC_DIR the sdist is fetched from PyPI with
#   `pip download` (no build, no dependencies) and unpacked.
# Each leaves OUT/build/bin/llama-bench. ~2 minutes (bitnet.cpp), ~6 minutes (llama.cpp) at -j2.
set -euo pipefail
PEERS=${PEERS:-/work/peers}
JOBS=${JOBS:-$(nproc)}
what=${1:-}
case "$what" in
bitnet.cpp)
  BN=$2; LX=$3; OUT=${4:-$PEERS/bitnet.cpp}
  rm -rf "$OUT"; mkdir -p "$OUT"
  git --git-dir="$BN" archive 01eb415 | tar -x -C "$OUT"
  # the vendored fork, blob by blob: a few test blobs (vocab files, a GIF) are missing from the
  # snapshot, so `git archive` fails on it; none of them is needed
  T=$(mktemp -d)
  git --git-dir="$LX" ls-tree -r 6d113cd | while read -r _mode type sha path; do
    [ "$type" = blob ] || continue
    mkdir -p "$T/$(dirname "$path")"
    git --git-dir="$LX" cat-file blob "$sha" > "$T/$path" 2>/dev/null || rm -f "$T/$path"
  done
  [ -f "$T/3rdparty/llama.cpp/CMakeLists.txt" ] || { echo "no 3rdparty/llama.cpp in $LX" >&2; exit 1; }
  rm -rf "$OUT/3rdparty/llama.cpp"
  cp -a "$T/3rdparty/llama.cpp" "$OUT/3rdparty/llama.cpp"
  rm -rf "$T"
  f="$OUT/3rdparty/llama.cpp/common/cmake/build-info-gen-cpp.cmake"
  if [ ! -f "$f" ]; then  # missing from the vendored copy: fill build-info.cpp without git
    mkdir -p "$(dirname "$f")"
    cat > "$f" <<'CM'
set(BUILD_NUMBER 0)
set(BUILD_COMMIT "bitnet-fork-1f86f058-vendored")
set(BUILD_COMPILER "${CMAKE_C_COMPILER_ID} ${CMAKE_C_COMPILER_VERSION}")
set(BUILD_TARGET "x86_64-linux-gnu")
set(TEMPLATE_FILE "${CMAKE_CURRENT_SOURCE_DIR}/common/build-info.cpp.in")
set(OUTPUT_FILE "${CMAKE_CURRENT_SOURCE_DIR}/common/build-info.cpp")
configure_file(${TEMPLATE_FILE} ${OUTPUT_FILE})
CM
  fi
  cd "$OUT"
  python3 utils/codegen_tl2.py --model bitnet_b1_58-3B --BM 160,320,320 --BK 96,96,96 \
    --bm 32,32,32 >/dev/null
  cmake -B build -DCMAKE_BUILD_TYPE=Release -DBITNET_X86_TL2=OFF -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DCMAKE_C_COMPILER=gcc-12 \
    -DCMAKE_CXX_COMPILER=g++-12 >/dev/null
  cmake --build build -j"$JOBS" --target llama-bench >/dev/null
  ;;
llama.cpp)
  SRC=${2:-}; OUT=${3:-$PEERS/llama.cpp}
  if [ -z "$SRC" ]; then
    dl=$(mktemp -d)
    python3 -m pip download --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36 \
      -d "$dl" >/dev/null
    sdist=$(ls "$dl"/llama_cpp_python-0.3.36.tar.gz)
    tar -xzf "$sdist" -C "$dl"
    SRC=$dl/llama_cpp_python-0.3.36/vendor/llama.cpp
  fi
  rm -rf "$OUT"; mkdir -p "$OUT"
  cp -a "$SRC"/. "$OUT"/
  cd "$OUT"
  cmake -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF >/dev/null
  cmake --build build -j"$JOBS" --target llama-bench >/dev/null
  ;;
*)
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
  [ "$what" = -h ] || [ "$what" = --help ] && exit 0
  exit 2
  ;;
esac
echo "built $OUT/build/bin/llama-bench"
