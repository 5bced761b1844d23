#!/usr/bin/env bash
# Creates (or updates) the virtual environment .venv with torch==2.13.0, the build tools and s3torch
# itself built from this checkout (extras: test, dcp; S3TORCH_EXTRAS=test,dcp,bench adds the benchmark
# suite's chart). Safe to re-run: the AWS CRT build is cached in
# ~/.cache/s3torch and the C++ build in build/, so a re-run after a C++ edit takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${S3TORCH_VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
pip_install() { "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@"; }
# torch first and pinned: an unpinned torch would pull several GB of CUDA packages.
pip_install "torch==2.13.0"
pip_install "scikit-build-core>=0.10" "nanobind==3.1.0" cmake ninja
# No build isolation: the build uses the tools above, and its CMake can run this venv's pip to fetch the
# pinned awscrt sources the first time.
pip_install --no-build-isolation ".[${S3TORCH_EXTRAS:-test,dcp}]"
echo "s3torch installed in $VENV"
