"""The wheel scripts/build_wheel.sh makes installs into a fresh virtual environment with no compiler on
PATH and no package index, and works there against the local server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# What a manylinux wheel may leave to the system (everything else must travel inside it).
ALLOWED = ("linux-vdso", "libc.so", "libm.so", "libstdc++.so", "libgcc_s.so", "ld-linux", "libpthread")

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
print("round trip ok", s3torch._core.__file__)
"""


def test_wheel_installs_and_works_without_compiler_or_index(seaweed_server, seaweed_bucket, tmp_path):
    dist = tmp_path / "dist"
    built = subprocess.run(
        [str(REPO / "scripts" / "build_wheel.sh"), str(dist)], capture_output=True, text=True, timeout=900
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-4000:]
    wheels = list(dist.glob("s3torch-*-manylinux_*.whl"))
    assert len(wheels) == 1, os.listdir(dist)

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

    # Every shared library the extension needs resolves, and beyond the manylinux base set comes
    # from the wheel itself (its libcrypto).
    ldd = subprocess.run(["ldd", core], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "not found" not in ldd, ldd
    for line in ldd.splitlines():
        name = os.path.basename(line.strip().split(" ", 1)[0])
        if not name.startswith(ALLOWED):
            assert "s3torch.libs" in line, f"{name} is not carried by the wheel:\n{ldd}"
