"""`python -m s3torch.demo` runs end to end (small size) and always stops its server."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _env() -> dict:
    import s3torch

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(s3torch.__file__).parents[1]), env.get("PYTHONPATH", "")])
    return env


def _port_open(endpoint: str) -> bool:
    host, port = endpoint.removeprefix("http://").split(":")
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, int(port))) == 0


def test_demo_small(tmp_path: Path) -> None:
    from s3torch.testing import find_weed

    if find_weed() is None:
        pytest.skip("SeaweedFS not installed")
    out = subprocess.run(
        [sys.executable, "-m", "s3torch.demo", "--size-gb", "0.02", "--no-progress"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    for phase in (
        "save (S3StorageWriter)",
        "load sequential",
        "load range_based",
        "load dcp_optimized (default)",
        "partial 10% dcp_optimized",
    ):
        assert phase in out.stdout
    assert "values equal" in out.stdout
    endpoint = re.search(r"(http://127\.0\.0\.1:\d+)", out.stderr).group(1)
    assert not _port_open(endpoint), "the demo's server must be stopped at exit"


def test_demo_stops_server_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "s3torch.demo", "--size-gb", "0.3", "--no-progress"],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        endpoint = None
        deadline = time.monotonic() + 120
        assert proc.stderr is not None
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            m = re.search(r" at (http://127\.0\.0\.1:\d+)", line)
            if m:
                endpoint = m.group(1)
                break
        assert endpoint, "the demo did not report its server"
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        assert proc.returncode != 0
        deadline = time.monotonic() + 10
        while _port_open(endpoint) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _port_open(endpoint)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
