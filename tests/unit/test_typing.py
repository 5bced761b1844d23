"""Type information ships with the package: py.typed and a stub of the native module that matches the
bindings (regenerate with ``python -m nanobind.stubgen -m s3torch._core -o python/s3torch/_core.pyi``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def test_py_typed_and_a_current_core_stub(tmp_path: Path) -> None:
    s3torch = pytest.importorskip("s3torch")
    pytest.importorskip("s3torch._core")
    package = Path(s3torch.__file__).parent
    assert (package / "py.typed").is_file()
    shipped = (package / "_core.pyi").read_text()
    for name in ("class Client", "class GetObjectStream", "class DirectGet", "class EtagPin", "def get_into"):
        assert name in shipped
    fresh = tmp_path / "_core.pyi"
    subprocess.run(
        [sys.executable, "-m", "nanobind.stubgen", "-q", "-m", "s3torch._core", "-o", str(fresh)],
        check=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert fresh.read_text() == shipped, "the bindings changed: regenerate python/s3torch/_core.pyi"
