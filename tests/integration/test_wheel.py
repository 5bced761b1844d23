"""The wheel scripts/build_wheel.sh makes installs into a fresh virtual environment with no compiler on
PATH and no package index, and works there against the local server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# What the cluster wheel may leave to the system: glibc (before 2.34 split into these libraries).
ALLOWED = ("linux-vdso", "libc.so", "libm.so", "ld-linux", "libpthread", "libdl.so", "librt.so")

ROUND_TRIP = """
import os, sys
import s3torch
from s3torch import S3Client, S3ClientConfig
assert os.path.realpath(s3torch.__file__).startswith(os.path.realpath(sys.prefix)), s3torch.__file__
client = S3Client(os.environ["REGION"], endpoint=os.environ["ENDPOINT"],
                  s3client_config=S3ClientConfig(force_path_style=True))
payload = os.urandom(9 * 1024 * 1024 + 5)
with client.put_object(os.environ["BUCKET"], "from-wheel") as writer:
    writer.write(payload)
assert client.get_object_stream(os.environ["BUCKET"], "from-wheel").read() == payload
assert client.get_object(os.environ["BUCKET"], "from-wheel").read() == payload
# HTTPS too: the wheel's own crypto (aws-lc) verifies the proxy's certificate against AWS_CA_BUNDLE.
tls = S3Client(os.environ["REGION"], endpoint=os.environ["TLS_ENDPOINT"],
               s3client_config=S3ClientConfig(force_path_style=True))
assert tls.get_object(os.environ["BUCKET"], "from-wheel").read() == payload
# The wheel's toolchain (zig) fills in no CPU feature table at load: the checksum kernels must see the CPU.
with open("/proc/cpuinfo") as f:
    flags = set(next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []))
kernels = s3torch._core._crc32_kernels()
if "pclmulqdq" in flags and "sse4_1" in flags:
    assert "pclmul" in kernels, kernels
if "vpclmulqdq" in flags and "avx512f" in flags:
    assert kernels[-1] == "vpclmul", kernels
print("round trip ok", s3torch._core.__file__)
"""


def test_wheel_installs_and_works_without_compiler_or_index(
    seaweed_server, seaweed_bucket, tmp_path, request
):
    from s3torch.testing import S3Proxy, make_tls_files, server_context

    dist = tmp_path / "dist"
    built = subprocess.run(
        [str(REPO / "scripts" / "build_wheel.sh"), str(dist)], capture_output=True, text=True, timeout=1500
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-4000:]
    wheels = list(dist.glob("s3torch-*-manylinux_*.whl"))
    assert len(wheels) == 1, os.listdir(dist)
    # The cluster wheel installs on RHEL 8 and its rebuilds (glibc 2.28) and anything newer.
    tag = re.search(r"manylinux_(\d+)_(\d+)_", wheels[0].name)
    assert tag and (int(tag[1]), int(tag[2])) <= (2, 28), wheels[0].name
    assert "s3torch.libs" not in subprocess.run(
        [sys.executable, "-m", "zipfile", "-l", str(wheels[0])], capture_output=True, text=True, check=True
    ).stdout, "nothing needs vendoring: crypto is the CRT's own aws-lc, libc++ is linked in"
    (tmp_path / "tls").mkdir()
    tls_files = make_tls_files(tmp_path / "tls")
    proxy = S3Proxy(seaweed_server.endpoint, tls=server_context(tls_files)).start()
    request.addfinalizer(proxy.stop)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-index", "--no-deps", "-q", str(wheels[0])],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]

    path = str(venv / "bin")  # nothing else: no compiler, no system tools
    assert shutil.which("cc", path=path) is None and shutil.which("gcc", path=path) is None
    env = {
        "PATH": path,
        "HOME": str(tmp_path),
        "REGION": seaweed_server.region,
        "ENDPOINT": seaweed_server.endpoint,
        "BUCKET": seaweed_bucket,
        "TLS_ENDPOINT": proxy.endpoint,
        "AWS_CA_BUNDLE": str(tls_files.ca_file),
        "NO_PROXY": "127.0.0.1,localhost",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
    }
    ran = subprocess.run(
        [str(python), "-c", ROUND_TRIP], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-4000:]
    assert "round trip ok" in ran.stdout
    core = ran.stdout.split("round trip ok", 1)[1].strip()
    package = Path(core).parent
    assert (package / "py.typed").is_file() and (package / "_core.pyi").is_file(), "type information"

    # Every shared library the extension needs resolves and is part of glibc: no libcrypto, no libstdc++.
    ldd = subprocess.run(["ldd", core], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "not found" not in ldd, ldd
    for line in ldd.splitlines():
        name = os.path.basename(line.strip().split(" ", 1)[0])
        assert name.startswith(ALLOWED), f"{name} is neither glibc nor carried by the wheel:\n{ldd}"
    assert "libcrypto" not in ldd and "libstdc++" not in ldd, ldd
