"""A process that used the client exits cleanly: no request state a CRT thread releases after the
interpreter stopped may need the GIL. (A Python-made EtagPin handed to requests once made about one
exit in ten crash with SIGSEGV or abort with "terminate called without an active exception".)"""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = r"""
import os
from s3torch import S3Client, S3ClientConfig
client = S3Client(os.environ["REGION"], endpoint=os.environ["ENDPOINT"],
                  s3client_config=S3ClientConfig(force_path_style=True))
payload = os.urandom(9 * 1024 * 1024 + 5)
with client.put_object(os.environ["BUCKET"], "exit") as writer:
    writer.write(payload)
assert client.get_object_stream(os.environ["BUCKET"], "exit").read() == payload
assert client.get_object(os.environ["BUCKET"], "exit").read() == payload
info = client.head_object(os.environ["BUCKET"], "exit")
assert client.get_object(os.environ["BUCKET"], "exit", object_info=info).read() == payload
print("ok")
"""


def test_processes_exit_cleanly_right_after_their_requests(seaweed_server, seaweed_bucket):
    env = dict(
        os.environ,
        **seaweed_server.env(),
        REGION=seaweed_server.region,
        ENDPOINT=seaweed_server.endpoint,
        BUCKET=seaweed_bucket,
    )
    codes = []
    for _ in range(24):
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60
        )
        assert "ok" in done.stdout, done.stderr[-2000:]
        codes.append(done.returncode)
    assert codes == [0] * len(codes), codes
