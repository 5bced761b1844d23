"""The recording / fault-injecting proxy, checked with boto3 and http.client (not with s3torch)."""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import pytest
from botocore.exceptions import (  # noqa: E402
    ClientError,
    ConnectionClosedError,
    ResponseStreamingError,
)

from s3torch.testing import Fault, S3Proxy, S3Server, delay, parse_range, reset, respond

MiB = 1 << 20
ProxyFactory = Callable[[S3Server], S3Proxy]


def test_parse_range() -> None:
    assert parse_range("bytes=0-0") == (0, 1)
    assert parse_range("bytes=10-19") == (10, 20)
    assert parse_range("bytes=10-") == (10, None)
    assert parse_range("bytes=-5") == (-5, None)
    assert parse_range(" Bytes = 3-4") == (3, 5)
    for bad in (None, "", "bytes=1-2,5-6", "items=1-2", "bytes=a-b", "bytes=5"):
        assert parse_range(bad) is None


def test_upstream_must_be_loopback() -> None:
    for url in ("http://10.0.0.1:80", "https://127.0.0.1:443", "http://example.com:80"):
        with pytest.raises(ValueError):
            S3Proxy(url)


def test_forwards_large_get_bit_identically(
    server: S3Server, bucket: str, proxy_factory: ProxyFactory
) -> None:
    proxy = proxy_factory(server)
    # Signed for the proxy's host:port; SeaweedFS verifies the signature through the proxy.
    client = server.boto3_client(endpoint=proxy.endpoint, max_attempts=1)
    data = os.urandom(32 * MiB)
    client.put_object(Bucket=bucket, Key="obj", Body=data)
    body = client.get_object(Bucket=bucket, Key="obj")["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    ranged = client.get_object(Bucket=bucket, Key="obj", Range="bytes=1048576-2097151")
    assert ranged["Body"].read() == data[MiB : 2 * MiB]

    assert proxy.wait_idle()
    assert proxy.count("PUT") == 1 and proxy.count("GET") == 2 and proxy.count() == 3
    put, get, get_range = proxy.requests
    assert (put.method, put.path, put.status, put.bytes_received) == (
        "PUT",
        f"/{bucket}/obj",
        200,
        len(data),
    )
    assert (get.status, get.bytes_sent, get.range) == (200, len(data), None)
    assert (get_range.status, get_range.bytes_sent, get_range.range) == (206, MiB, (MiB, 2 * MiB))
    assert get_range.headers["range"] == "bytes=1048576-2097151"
    assert proxy.errors == []

    proxy.reset()
    assert proxy.requests == []
    client.list_objects_v2(Bucket=bucket, Prefix="o")
    assert proxy.wait_idle()
    (listing,) = proxy.requests
    assert listing.query["list-type"] == "2" and listing.query["prefix"] == "o"


def test_keep_alive_and_concurrency(
    seaweed_server: S3Server, seaweed_bucket: str, proxy_factory: ProxyFactory
) -> None:
    proxy = proxy_factory(seaweed_server)
    client = seaweed_server.boto3_client(
        endpoint=proxy.endpoint, max_attempts=1, max_pool_connections=8
    )
    objects = {f"k{i}": os.urandom(256 * 1024 + i) for i in range(8)}
    for key, data in objects.items():
        client.put_object(Bucket=seaweed_bucket, Key=key, Body=data)

    def fetch(i: int) -> bool:
        key = f"k{i % 8}"
        got = client.get_object(Bucket=seaweed_bucket, Key=key)["Body"].read()
        return got == objects[key]

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(fetch, range(80)))
    assert proxy.wait_idle()
    assert proxy.count("GET") == 80
    # Connections are reused: at most one per client pool slot, not one per request.
    assert proxy.connections <= 9
    assert proxy.errors == []


# -- faults ----------------------------------------------------------------------------------------


def test_fault_respond_503_then_recovers(
    seaweed_server: S3Server, seaweed_bucket: str, proxy_factory: ProxyFactory
) -> None:
    proxy = proxy_factory(seaweed_server)
    client = seaweed_server.boto3_client(endpoint=proxy.endpoint, max_attempts=1)
    client.put_object(Bucket=seaweed_bucket, Key="obj", Body=b"payload")
    fault = proxy.add_fault(Fault(respond(503), method="GET", path="/obj", nth=2, times=2))

    outcomes = []
    for _ in range(4):
        try:
            outcomes.append(client.get_object(Bucket=seaweed_bucket, Key="obj")["Body"].read())
        except ClientError as exc:
            error = exc.response["Error"]
            outcomes.append((exc.response["ResponseMetadata"]["HTTPStatusCode"], error["Code"]))
    assert outcomes == [b"payload", (503, "SlowDown"), (503, "SlowDown"), b"payload"]
    assert (fault.matched, fault.fired) == (3, 2)  # counting stops once exhausted
    assert proxy.wait_idle()
    assert [r.status for r in proxy.requests[-4:]] == [200, 503, 503, 200]
    assert [r.fault is not None for r in proxy.requests[-4:]] == [False, True, True, False]
    # Answered by the proxy on the same kept-alive connection.
    assert proxy.connections == 1


def test_fault_respond_500_to_put_with_expect_continue(
    moto_server: S3Server, moto_bucket: str, proxy_factory: ProxyFactory
) -> None:
    proxy = proxy_factory(moto_server)
    client = moto_server.boto3_client(endpoint=proxy.endpoint, max_attempts=1)
    proxy.add_fault(Fault(respond(500), method="PUT"))
    with pytest.raises(ClientError) as info:
        client.put_object(Bucket=moto_bucket, Key="obj", Body=b"x" * MiB)
    assert info.value.response["Error"]["Code"] == "InternalError"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    client.put_object(Bucket=moto_bucket, Key="obj", Body=b"y" * MiB)
    assert client.get_object(Bucket=moto_bucket, Key="obj")["Body"].read() == b"y" * MiB
    assert proxy.wait_idle()
    assert [r.status for r in proxy.requests] == [500, 200, 200]
    assert proxy.requests[0].headers.get("expect") == "100-continue"


def test_fault_reset_before_forwarding(
    seaweed_server: S3Server, seaweed_bucket: str, proxy_factory: ProxyFactory
) -> None:
    proxy = proxy_factory(seaweed_server)
    client = seaweed_server.boto3_client(endpoint=proxy.endpoint, max_attempts=1)
    client.put_object(Bucket=seaweed_bucket, Key="obj", Body=b"payload")
    proxy.add_fault(Fault(reset(), method="GET"))
    with pytest.raises(ConnectionClosedError):
        client.get_object(Bucket=seaweed_bucket, Key="obj")
    assert client.get_object(Bucket=seaweed_bucket, Key="obj")["Body"].read() == b"payload"
    assert proxy.wait_idle()
    failed = proxy.requests[-2]
    assert (failed.status, failed.error, failed.bytes_sent) == (None, "reset by fault", 0)


@pytest.mark.parametrize("abortive", [True, False])
def test_fault_reset_mid_body(
    seaweed_server: S3Server,
    seaweed_bucket: str,
    proxy_factory: ProxyFactory,
    abortive: bool,
) -> None:
    proxy = proxy_factory(seaweed_server)
    client = seaweed_server.boto3_client(endpoint=proxy.endpoint, max_attempts=1)
    data = os.urandom(4 * MiB)
    client.put_object(Bucket=seaweed_bucket, Key="obj", Body=data)
    proxy.add_fault(Fault(reset(after_bytes=MiB + 1, abortive=abortive), method="GET"))
    response = client.get_object(Bucket=seaweed_bucket, Key="obj")
    assert response["ContentLength"] == len(data)
    with pytest.raises(ResponseStreamingError):
        response["Body"].read()
    assert proxy.wait_idle()
    record = proxy.requests[-1]
    assert (record.status, record.bytes_sent, record.error) == (200, MiB + 1, "reset by fault")
    assert client.get_object(Bucket=seaweed_bucket, Key="obj")["Body"].read() == data


def test_fault_delay(
    seaweed_server: S3Server, seaweed_bucket: str, proxy_factory: ProxyFactory
) -> None:
    proxy = proxy_factory(seaweed_server)
    client = seaweed_server.boto3_client(endpoint=proxy.endpoint, max_attempts=1)
    data = os.urandom(2 * MiB)
    client.put_object(Bucket=seaweed_bucket, Key="obj", Body=data)

    def timed_get() -> float:
        start = time.monotonic()
        assert client.get_object(Bucket=seaweed_bucket, Key="obj")["Body"].read() == data
        return time.monotonic() - start

    baseline = timed_get()
    proxy.add_fault(Fault(delay(0.4), method="GET"))
    assert timed_get() >= 0.4
    proxy.add_fault(Fault(delay(0.4, after_bytes=MiB), method="GET"))
    response = client.get_object(Bucket=seaweed_bucket, Key="obj")
    start = time.monotonic()
    first = response["Body"].read(MiB)  # arrives before the stall
    assert time.monotonic() - start < 0.3
    assert first + response["Body"].read() == data
    assert time.monotonic() - start >= 0.4
    assert timed_get() < baseline + 0.3  # both faults are spent


# -- framing, against a minimal local upstream -----------------------------------------------------


class _EchoHandler(BaseHTTPRequestHandler):
    """PUT: answers the request body back, chunked. GET /close: a body delimited by the close."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def do_PUT(self) -> None:
        body = self._read_body()
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(0, len(body), 100_000):
            piece = body[i : i + 100_000]
            self.wfile.write(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\nx-trailer: yes\r\n\r\n")

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"until-close " * 1000)
        self.close_connection = True

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "12345")
        self.end_headers()


@pytest.fixture
def echo_upstream() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_chunked_bodies_head_and_close_delimited(echo_upstream: str) -> None:
    with S3Proxy(echo_upstream) as proxy:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        payload = os.urandom(3 * MiB + 5)
        pieces = [payload[i : i + 70_000] for i in range(0, len(payload), 70_000)]
        conn.request("PUT", "/b/k", body=iter(pieces), encode_chunked=True)
        response = conn.getresponse()
        assert response.getheader("Transfer-Encoding") == "chunked"
        assert response.read() == payload
        # Same connection: HEAD has a Content-Length but no body.
        conn.request("HEAD", "/b/k")
        response = conn.getresponse()
        assert response.getheader("Content-Length") == "12345" and response.read() == b""
        conn.request("GET", "/close")
        response = conn.getresponse()
        assert response.read() == b"until-close " * 1000
        conn.close()
        assert proxy.wait_idle()
        put, head, get = proxy.requests
        assert (put.bytes_received, put.bytes_sent) == (len(payload), len(payload))
        assert (head.status, head.bytes_sent) == (200, 0)
        assert get.bytes_sent == 12 * 1000
        assert proxy.connections == 1
        assert proxy.errors == []


def test_expect_continue_with_eager_body(echo_upstream: str) -> None:
    # A client that sends its body without waiting for 100 Continue must not stall the proxy.
    with S3Proxy(echo_upstream) as proxy:
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        body = b"eager" * 1000
        sock.sendall(
            b"PUT /b/k HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        sock.close()
        assert received.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
        assert proxy.wait_idle()
        (record,) = proxy.requests
        assert (record.status, record.bytes_received, record.bytes_sent) == (200, 5000, 5000)


def test_stop_closes_open_connections(echo_upstream: str) -> None:
    proxy = S3Proxy(echo_upstream).start()
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    conn.request("PUT", "/b/k", body=b"abc")
    assert conn.getresponse().read() == b"abc"
    proxy.stop()
    with pytest.raises((OSError, http.client.HTTPException)):
        conn.request("PUT", "/b/k", body=b"abc")
        conn.getresponse().read()
    with pytest.raises(OSError):
        http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=1).connect()
