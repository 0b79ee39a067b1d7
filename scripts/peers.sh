#!/usr/bin/env bash
# Peers to measure speclsp against, built from source here (not part of scripts/test.sh).
#
#   bash scripts/peers.sh llama [native|avx512|avx2]
#       build llama.cpp's `llama-server` (CPU, Release) from the llama.cpp sources vendored
#       in the llama-cpp-python sdist on PyPI, once; prints the binary's path. "native"
#       (the default) compiles for this CPU (-march=native: AVX-512 and AMX where it has
#       them; on this project's Sapphire Rapids machines that build crashes at its first
#       forward, in the AMX path), "avx512" for AVX-512 with VNNI and BF16 but no AMX, "avx2"
#       for an ordinary AVX2 CPU (what `scripts/cpu-profile.sh avx2` emulates for torch).
#       About 30 minutes on 2 cores the first time; with ccache installed the second
#       profile recompiles only ggml's CPU kernels.
#   bash scripts/peers.sh gguf [MODEL]
#       the GGUF the registered model is converted from (default qwen2.5-coder-0.5b), as
#       llama-server serves it; prints its path.
#
# Where: $SPECLSP_PEERS (default .peers in the repository, ignored by git).
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS=${SPECLSP_PEERS:-$PWD/.peers}
LLAMA_CPP_PYTHON=0.3.36   # its sdist vendors llama.cpp (vendor/llama.cpp)
JOBS=${JOBS:-$(nproc)}

llama() {
  local profile=${1:-native} flags
  case "$profile" in
    native) flags=(-DGGML_NATIVE=ON) ;;
    avx512) flags=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
                   -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON
                   -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF) ;;
    avx2) flags=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
                 -DGGML_AVX512=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF
                 -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_AVX_VNNI=OFF) ;;
    *) echo "peers: unknown profile $profile (native, avx512 or avx2)" >&2; exit 2 ;;
  esac
  local out="$PEERS/llama-$profile/llama-server"
  if [ -x "$out" ]; then echo "$out"; return 0; fi
  mkdir -p "$PEERS"
  local src="$PEERS/src/llama_cpp_python-$LLAMA_CPP_PYTHON"
  if [ ! -d "$src/vendor/llama.cpp" ]; then
    echo "peers: fetching the llama-cpp-python $LLAMA_CPP_PYTHON sdist (llama.cpp sources)" >&2
    mkdir -p "$PEERS/src"
    python3 -m pip download -q --no-deps --no-binary=:all: "llama-cpp-python==$LLAMA_CPP_PYTHON" -d "$PEERS/src"
    tar -xzf "$PEERS/src/llama_cpp_python-$LLAMA_CPP_PYTHON.tar.gz" -C "$PEERS/src"
  fi
  command -v cmake >/dev/null || { echo "peers: cmake is needed (apt-get install cmake g++)" >&2; exit 1; }
  local build="$PEERS/build-$profile"
  echo "peers: building llama-server ($profile) in $build with $JOBS jobs (~30 min on 2 cores)" >&2
  cmake -S "$src/vendor/llama.cpp" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF \
    -DGGML_OPENMP=ON "${flags[@]}" >&2
  cmake --build "$build" --target llama-server -j "$JOBS" >&2
  mkdir -p "$(dirname "$out")"
  cp "$build/bin/llama-server" "$out"
  echo "$out"
}

gguf() {
  local name=${1:-qwen2.5-coder-0.5b}
  .venv/bin/speclsp models gguf "$name"
}

case "${1:-}" in
  llama) shift; llama "$@" ;;
  gguf) shift; gguf "$@" ;;
  *) echo "usage: $0 llama [native|avx512|avx2] | gguf [MODEL]" >&2; exit 2 ;;
esac
