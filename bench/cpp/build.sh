#!/usr/bin/env bash
# Builds the C++ microbenchmarks into build/microbench/ (Release, against the same cached AWS CRT as the
# wheel) and prints the binary's path. Google Benchmark comes from the distribution: Debian's
# libbenchmark-dev, installed here with apt-get when it is missing and we may (root).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
if ! dpkg -s libbenchmark-dev >/dev/null 2>&1 && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get install -y -q libbenchmark-dev >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q libbenchmark-dev >/dev/null; }
fi
# The venv's cmake and ninja (scripts/setup.sh installs them); its Python fetches the CRT sources once.
export PATH="$(dirname "$PYTHON"):$PATH"
cmake -S . -B build/microbench -G Ninja -DCMAKE_BUILD_TYPE=Release -DS3TORCH_BUILD_BENCH=ON \
  -DPython_EXECUTABLE="$PYTHON" >build/microbench.log 2>&1 || { cat build/microbench.log >&2; exit 1; }
cmake --build build/microbench --target s3torch_microbench >>build/microbench.log 2>&1 \
  || { tail -50 build/microbench.log >&2; exit 1; }
echo "$PWD/build/microbench/bench/cpp/s3torch_microbench"
