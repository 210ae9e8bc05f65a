#!/usr/bin/env bash
# Builds twostage against official LibTorch 2.x with CUDA (the torch wheel from PyPI) into build-libtorch2/ and runs
# the whole test suite on the CPU there: the check that the code users build (LibTorch 2.x, often with CUDA) still
# compiles, links and passes, while CI builds against Debian's LibTorch 1.13.1. Run ./setup.sh first (packages).
#   ./setup_libtorch2.sh          download (once, into .cache/), build
#   ./setup_libtorch2.sh test     ... and run CTest
# The CUDA toolkit (nvcc, cuBLAS, cuDNN) must be installed; no GPU is needed. The wheel carries LibTorch's headers,
# libraries and CMake config; the CUDA libraries it links that the toolkit lacks (cuFile, cuSPARSELt, NVSHMEM) or has
# in an older version (NCCL) come from their own PyPI wheels, unpacked beside it and found before the toolkit's.
set -euo pipefail
cd "$(dirname "$0")"

mode=${1:-build}
case "$mode" in build|test) ;; *) echo "usage: ./setup_libtorch2.sh [build|test]" >&2; exit 2 ;; esac

torch_version=2.15.0
# The versions torch $torch_version's wheel requires (its METADATA's Requires-Dist). NCCL too: the toolkit's is older
# than the one libtorch_cuda.so was linked against, and lacks symbols it names.
wheels=(torch=="$torch_version" nvidia-cusparselt-cu13==0.8.1 nvidia-nvshmem-cu13==3.7.2 "nvidia-cufile==1.17.1.22.*"
        nvidia-nccl-cu13==2.30.7)
# pip from the parity tests' virtual environment (Debian's python3 comes without it); also run by `test` below.
tests/parity/install.sh
python=.cache/python/bin/python
python_tag=cp$("$python" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
root=.cache/libtorch-$torch_version
cuda=${CUDA_HOME:-/usr/local/cuda}

if [ ! -f "$root/torch/share/cmake/Torch/TorchConfig.cmake" ] || [ ! -f "$root/nvidia-lib/libnccl.so.2" ]; then
  mkdir -p .cache/wheels "$root/nvidia-lib"
  echo "setup_libtorch2: downloading ${wheels[*]} (about 1.1 GB, once)"
  # For this machine's Python (the wheel names carry its tag), which the unzip below expects.
  "$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --dest .cache/wheels "${wheels[@]}"
  unzip -q -o .cache/wheels/torch-"$torch_version"-"$python_tag"-*.whl 'torch/include/*' 'torch/lib/*' 'torch/share/*' \
    -d "$root"
  for wheel in .cache/wheels/nvidia_{cusparselt,nvshmem,cufile,nccl}*.whl; do
    unzip -q -o -j "$wheel" '*/lib/*.so*' -d "$root/nvidia-lib"
  done
fi

if [ ! -f build-libtorch2/build.ninja ]; then
  # One CUDA architecture is enough to prove the CUDA path compiles and links; users set their own.
  # rpath-link: the linker must see the libraries libtorch_cuda.so itself needs, which no -L names.
  cmake -S . -B build-libtorch2 -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$PWD/$root/torch" \
    -DCMAKE_CUDA_COMPILER="$cuda/bin/nvcc" -DCMAKE_CUDA_ARCHITECTURES=75 \
    -DCMAKE_EXE_LINKER_FLAGS="-Wl,-rpath-link,$PWD/$root/nvidia-lib:$PWD/$root/torch/lib:$cuda/lib64" >/dev/null
fi
# The build runs the test binaries too (Catch's test discovery), so the libraries must be found from here on.
export LD_LIBRARY_PATH="$PWD/$root/nvidia-lib:$PWD/$root/torch/lib:$cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cmake --build build-libtorch2 -j "$(nproc)"
build-libtorch2/twostage --version
if [ "$mode" = test ]; then
  ctest --test-dir build-libtorch2 --output-on-failure -j "$(nproc)"
fi
