"""A loopback HTTP/1.1 reverse proxy that records S3 requests and injects faults.

The proxy relays every request and response byte for byte: nothing is rewritten, not even the
Host header. SigV4 signs the Host header, and the client signs the proxy's ``127.0.0.1:PORT``; the
upstream then verifies against that same Host, so signature-checking servers (SeaweedFS) accept
proxied requests, and moto (which checks nothing) does too. An upstream that rebuilt the signed
host from its own address would reject them.

One thread per client connection, one upstream connection per client connection (kept alive as
long as both sides keep it alive, and closed towards the client when the upstream closes it), so
the connection pattern the client chooses is what the server sees. Requests on one connection are
handled one at a time. Bodies (Content-Length, chunked, or until close) are relayed in blocks of up
to 1 MiB, never parsed, except chunk-size lines.

Faults (``add_fault``) are matched against each request before it is forwarded: ``respond``
answers without contacting the upstream, ``reset`` aborts the client connection (before
forwarding, or after N response body bytes), ``delay`` sleeps (before forwarding, or after N
response body bytes).
"""

from __future__ import annotations

import contextlib
import random
import select
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Callable, Optional, Union
from urllib.parse import parse_qsl, urlsplit

from ._ports import LOOPBACK

_BLOCK = 1 << 20  # relay block size
_MAX_HEAD = 64 * 1024  # larger request/response heads are refused
_ALLOWED_UPSTREAM_HOSTS = ("127.0.0.1", "localhost")


class _ProtocolError(Exception):
    """The peer sent something this proxy cannot relay."""


class _Abort(Exception):
    """A fault asked for the client connection to be dropped."""

    def __init__(self, abortive: bool) -> None:
        super().__init__("fault: connection dropped")
        self.abortive = abortive


# -- records -------------------------------------------------------------------------------------


def parse_range(value: Optional[str]) -> Optional[tuple[int, Optional[int]]]:
    """An HTTP ``Range`` header as a Python slice ``(start, end)``, end exclusive.

    ``bytes=a-b`` -> ``(a, b + 1)``; ``bytes=a-`` -> ``(a, None)``; the suffix form ``bytes=-n`` ->
    ``(-n, None)`` (as in ``data[-n:]``). None when absent, multi-range or malformed.
    """
    if not value:
        return None
    unit, _, spec = value.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if not first:
            return (-int(last), None) if last else None
        start = int(first)
        return (start, int(last) + 1) if last else (start, None)
    except ValueError:
        return None


@dataclass
class RecordedRequest:
    """One request seen by the proxy. ``status`` and the byte counts fill in as it progresses
    (call ``S3Proxy.wait_idle()`` before reading them). Header names are lower case."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    range: Optional[tuple[int, Optional[int]]]
    target: str = ""  # the request target as sent: path and query, still percent-encoded
    status: Optional[int] = None
    bytes_sent: int = 0  # response body bytes relayed to the client
    bytes_received: int = 0  # request body bytes received from the client
    fault: Optional[str] = None  # the fault action applied to this request, if any
    error: Optional[str] = None  # why relaying stopped early, if it did
    started: float = field(default_factory=time.monotonic)
    finished: Optional[float] = None


# -- faults --------------------------------------------------------------------------------------


class FaultAction:
    """What a fault does; build one with ``respond``, ``reset`` or ``delay``."""


@dataclass(frozen=True)
class Respond(FaultAction):
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Reset(FaultAction):
    after_bytes: Optional[int] = None
    abortive: bool = True


@dataclass(frozen=True)
class Delay(FaultAction):
    seconds: float
    after_bytes: Optional[int] = None


@dataclass(frozen=True)
class Corrupt(FaultAction):
    at_byte: int


@dataclass(frozen=True)
class CorruptResponse(FaultAction):
    at_byte: int


_S3_ERRORS = {
    400: ("BadRequest", "Bad Request"),
    403: ("AccessDenied", "Access Denied"),
    404: ("NoSuchKey", "The specified key does not exist."),
    416: ("InvalidRange", "The requested range is not satisfiable"),
    500: ("InternalError", "We encountered an internal error. Please try again."),
    503: ("SlowDown", "Please reduce your request rate."),
}


def respond(
    status: int,
    body: Union[bytes, str, None] = None,
    *,
    code: Optional[str] = None,
    headers: Optional[dict[str, str]] = None,
) -> Respond:
    """Answer with ``status`` instead of forwarding. The default body is an S3 XML error whose
    Code matches the status (500 InternalError, 503 SlowDown, ...), or ``code`` if given."""
    if body is None:
        default_code, message = _S3_ERRORS.get(status, ("InternalError", "Injected error"))
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code or default_code}</Code><Message>{message}</Message>"
            "<RequestId>S3TORCHPROXYFAULT</RequestId></Error>"
        )
    if isinstance(body, str):
        body = body.encode()
    return Respond(status, body, tuple((headers or {}).items()))


def reset(after_bytes: Optional[int] = None, *, abortive: bool = True) -> Reset:
    """Drop the client connection. ``after_bytes=None``: right after reading the request head,
    nothing is forwarded; ``after_bytes=N``: forward, relay the response head and the first N body
    bytes (all of it if shorter), then drop. ``abortive``: TCP RST (SO_LINGER 0); False: a plain
    close (FIN), which the client sees as a truncated response."""
    return Reset(after_bytes, abortive)


def delay(seconds: float, *, after_bytes: Optional[int] = None) -> Delay:
    """Sleep ``seconds`` before forwarding the request, or (``after_bytes=N``) after relaying the
    response head and the first N body bytes (a stalled download)."""
    return Delay(seconds, after_bytes)


def corrupt(at_byte: int) -> Corrupt:
    """Forward the request, but flip every bit of request body byte ``at_byte`` (as sent on the wire,
    framing included) on the way: a body damaged in transit, which the server must refuse."""
    return Corrupt(at_byte)


def corrupt_response(at_byte: int) -> CorruptResponse:
    """Forward the request, but flip every bit of response body byte ``at_byte`` (chunk framing not
    counted) on its way back: a download damaged in transit, which only a checksum can reveal."""
    return CorruptResponse(at_byte)


@dataclass
class Fault:
    """Apply ``action`` to matching requests: method equal to ``method`` (any if None), path
    containing ``path`` (any if None) and ``when(request)`` true (if given). It fires on the
    ``nth`` matching request (1-based) and the following ones, ``times`` times in all (None:
    forever). ``matched`` and ``fired`` count what happened."""

    action: FaultAction
    method: Optional[str] = None
    path: Optional[str] = None
    nth: int = 1
    times: Optional[int] = 1
    when: Optional[Callable[[RecordedRequest], bool]] = None
    matched: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    def _matches(self, request: RecordedRequest) -> bool:
        if self.method is not None and request.method != self.method.upper():
            return False
        if self.path is not None and self.path not in request.path:
            return False
        return self.when is None or bool(self.when(request))

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times


class Chance:
    """A seeded, thread-safe coin for ``Fault(when=...)``: true on about ``rate`` of the requests
    it is asked about (the proxy serves connections in threads)."""

    def __init__(self, rate: float, seed: int) -> None:
        self._rng = random.Random(seed)
        self._rate = rate
        self._lock = threading.Lock()

    def __call__(self, request: RecordedRequest) -> bool:
        with self._lock:
            return self._rng.random() < self._rate


def random_faults(proxy: S3Proxy, method: str, seed: int, rate: float = 0.05) -> list[Fault]:
    """Adds faults that hit about ``rate`` of ``method`` requests at random, in equal shares: a reset
    before the response, a body cut after 2 MiB, 500 InternalError, 503 SlowDown, a 0.2 s delay."""
    cut = reset(after_bytes=2 * 1024 * 1024, abortive=False)
    actions = [reset(), cut, respond(500), respond(503), delay(0.2)]
    share = rate / len(actions)
    return [
        proxy.add_fault(Fault(action, method=method, times=None, when=Chance(share, seed * 100 + i)))
        for i, action in enumerate(actions)
    ]


# -- socket plumbing -----------------------------------------------------------------------------


class _Peer:
    """A socket with a read buffer: heads and chunk lines are parsed from the buffer, bodies are
    relayed in large blocks straight from the socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.closed = False

    def has_buffered(self) -> bool:
        """Bytes already received but not consumed (ours, or decrypted and held by TLS), which a
        select() on the socket would not report."""
        pending = getattr(self.sock, "pending", None)
        return bool(self.buf) or (pending is not None and pending() > 0)

    def _fill(self) -> bool:
        data = self.sock.recv(_BLOCK)
        if not data:
            return False
        self.buf += data
        return True

    def read_head(self) -> Optional[bytes]:
        """The next message head (through the blank line); None on a clean close before it."""
        start = 0
        while True:
            end = self.buf.find(b"\r\n\r\n", start)
            if end >= 0:
                head = bytes(self.buf[: end + 4])
                del self.buf[: end + 4]
                return head
            if len(self.buf) > _MAX_HEAD:
                raise _ProtocolError("message head too large")
            start = max(0, len(self.buf) - 3)
            if not self._fill():
                if self.buf:
                    raise _ProtocolError("connection closed inside a message head")
                return None

    def readline(self) -> bytes:
        start = 0
        while True:
            end = self.buf.find(b"\r\n", start)
            if end >= 0:
                line = bytes(self.buf[: end + 2])
                del self.buf[: end + 2]
                return line
            if len(self.buf) > _MAX_HEAD:
                raise _ProtocolError("line too long")
            start = max(0, len(self.buf) - 1)
            if not self._fill():
                raise _ProtocolError("connection closed inside a chunked body")

    def relay(
        self, n: Optional[int], send: Callable[[memoryview], None], scratch: memoryview
    ) -> None:
        """Pass the next ``n`` bytes (None: everything until the peer closes) to ``send``."""
        if self.buf:
            take = len(self.buf) if n is None else min(n, len(self.buf))
            data = bytes(self.buf[:take])
            del self.buf[:take]
            send(memoryview(data))
            if n is not None:
                n -= take
        while n is None or n > 0:
            want = len(scratch) if n is None else min(n, len(scratch))
            got = self.sock.recv_into(scratch, want)
            if got == 0:
                if n is None:
                    return
                raise _ProtocolError("connection closed inside a body")
            send(scratch[:got])
            if n is not None:
                n -= got

    def relay_chunked(
        self,
        send_framing: Callable[[bytes], None],
        send_data: Callable[[memoryview], None],
        scratch: memoryview,
    ) -> None:
        """Relay a chunked body: framing lines as they are, chunk data through ``send_data``."""
        while True:
            line = self.readline()
            send_framing(line)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise _ProtocolError(f"bad chunk size line {line!r}") from exc
            if size == 0:
                while True:  # trailers, then the final blank line
                    trailer = self.readline()
                    send_framing(trailer)
                    if trailer == b"\r\n":
                        return
            self.relay(size, send_data, scratch)
            crlf = self.readline()
            if crlf != b"\r\n":
                raise _ProtocolError("chunk data not followed by CRLF")
            send_framing(crlf)


@dataclass
class _Head:
    raw: bytes
    start_line: str
    headers: list[tuple[str, str]]

    def get(self, name: str) -> Optional[str]:
        values = [v for k, v in self.headers if k == name]
        return ", ".join(values) if values else None

    def has_token(self, name: str, token: str) -> bool:
        value = self.get(name)
        return value is not None and token in [t.strip().lower() for t in value.split(",")]


def _parse_head(raw: bytes) -> _Head:
    lines = raw.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise _ProtocolError(f"bad header line {line!r}")
        headers.append((name.strip().lower(), value.strip()))
    return _Head(raw, lines[0], headers)


def _body_length(head: _Head) -> Union[int, str, None]:
    """Framing of a message body: a byte count, "chunked", or None for "until close"."""
    if head.has_token("transfer-encoding", "chunked"):
        return "chunked"
    length = head.get("content-length")
    if length is not None:
        try:
            return int(length.split(",")[0])
        except ValueError as exc:
            raise _ProtocolError(f"bad Content-Length {length!r}") from exc
    return None


def _drop(sock: Optional[socket.socket], abortive: bool = False) -> None:
    if sock is None:
        return
    with contextlib.suppress(OSError):
        if abortive:
            # Linger 0: close() sends RST instead of FIN, like a crashed or reset peer.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


# -- the proxy -----------------------------------------------------------------------------------


class S3Proxy:
    """Loopback reverse proxy in front of ``upstream_endpoint`` (an http://127.0.0.1:PORT URL).

    ``endpoint`` is the proxy's own URL; point the client under test at it. Use as a context
    manager, or call ``start()`` / ``stop()``. With ``tls`` (a server-side SSLContext, see
    ``s3torch.testing.tls``) the proxy terminates TLS: ``endpoint`` is https, the upstream stays
    plain HTTP. Failed handshakes are recorded in ``tls_failures``.
    """

    def __init__(self, upstream_endpoint: str, *, tls: Optional[ssl.SSLContext] = None) -> None:
        parts = urlsplit(upstream_endpoint)
        if (
            parts.scheme != "http"
            or parts.hostname not in _ALLOWED_UPSTREAM_HOSTS
            or not parts.port
        ):
            raise ValueError(
                f"upstream must be http://127.0.0.1:PORT (loopback only), got {upstream_endpoint!r}"
            )
        self.upstream_endpoint = upstream_endpoint
        self._upstream_addr = (LOOPBACK, parts.port)
        self._tls = tls
        self.tls_failures: list[str] = []  # TLS handshakes that failed, e.g. an untrusted certificate
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._requests: list[RecordedRequest] = []
        self._faults: list[Fault] = []
        self._in_flight = 0
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._listener: Optional[socket.socket] = None
        self._accept_thread: Optional[threading.Thread] = None
        self.connections = 0  # client connections accepted so far
        self.errors: list[str] = []  # relay errors, for debugging failed tests
        self.port = 0
        self.endpoint = ""

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> S3Proxy:
        if self._listener is not None:
            return self
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, 0))
        listener.listen(128)
        # accept() is not woken by close() from another thread on Linux; poll the stop flag.
        listener.settimeout(0.1)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self.endpoint = f"{'https' if self._tls is not None else 'http'}://{LOOPBACK}:{self.port}"
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"s3proxy-accept-{self.port}", daemon=True
        )
        self._accept_thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every open connection, and wait for the threads to end."""
        self._stopping.set()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)
        if self._listener is not None:
            _drop(self._listener)
        with self._lock:
            sockets = list(self._sockets)
            threads = list(self._threads)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> S3Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- records and faults ----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """The requests seen so far, in arrival order (a snapshot list of live records)."""
        with self._lock:
            return list(self._requests)

    def count(self, method: Optional[str] = None, path: Optional[str] = None) -> int:
        """How many requests had this method (any if None) and a path containing ``path``."""
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method.upper()) and (path is None or path in r.path)
        )

    def reset(self) -> None:
        """Forget the recorded requests (faults stay; see ``clear_faults``)."""
        with self._lock:
            self._requests.clear()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no request is in flight (its status and byte counts final)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def add_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _pick_fault(self, request: RecordedRequest) -> Optional[FaultAction]:
        # Every fault counts its matches; the first one that is due fires (one per request).
        chosen: Optional[FaultAction] = None
        with self._lock:
            for fault in self._faults:
                if fault.exhausted or not fault._matches(request):
                    continue
                fault.matched += 1
                if chosen is None and fault.matched >= fault.nth:
                    fault.fired += 1
                    chosen = fault.action
        return chosen

    # -- connections -----------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            client.settimeout(None)
            thread = threading.Thread(
                target=self._serve, args=(client,), name=f"s3proxy-conn-{self.port}", daemon=True
            )
            with self._lock:
                self.connections += 1
                self._sockets.add(client)
                self._threads = [t for t in self._threads if t.is_alive()]
                self._threads.append(thread)
            thread.start()

    def _track(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._sockets.add(sock)

    def _untrack(self, sock: Optional[socket.socket]) -> None:
        if sock is not None:
            with self._lock:
                self._sockets.discard(sock)

    def _handshake(self, raw: socket.socket, tls: ssl.SSLContext) -> Optional[ssl.SSLSocket]:
        """The TLS side of an accepted connection (tracked), or None after a failed handshake."""
        # Wrapping takes over the descriptor; the handshake runs separately so that a failed one
        # still closes the connection at once (the client waits for that close).
        self._untrack(raw)
        sock = tls.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        self._track(sock)
        try:
            sock.do_handshake()
        except (OSError, ssl.SSLError) as exc:
            with self._lock:
                self.tls_failures.append(f"{type(exc).__name__}: {exc}")
            self._untrack(sock)
            _drop(sock)
            return None
        return sock

    def _serve(self, client_sock: socket.socket) -> None:
        if self._tls is None:
            self._track(client_sock)
        else:
            tls_sock = self._handshake(client_sock, self._tls)
            if tls_sock is None:
                return
            client_sock = tls_sock
        client = _Peer(client_sock)
        conn = _Connection(self, client)
        abortive = False
        try:
            while not self._stopping.is_set():
                if not conn.wait_for_request():
                    break
                head = client.read_head()
                if head is None:
                    break
                if not conn.handle(_parse_head(head)):
                    break
        except _Abort as abort:
            abortive = abort.abortive
        except (OSError, _ProtocolError) as exc:
            if not self._stopping.is_set():
                with self._lock:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            conn.close_upstream()
            self._untrack(client_sock)
            _drop(client_sock, abortive=abortive)


class _Connection:
    """State of one client connection and its upstream connection."""

    def __init__(self, proxy: S3Proxy, client: _Peer) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream: Optional[_Peer] = None
        self.scratch = memoryview(bytearray(_BLOCK))

    def close_upstream(self) -> None:
        if self.upstream is not None:
            self.proxy._untrack(self.upstream.sock)
            _drop(self.upstream.sock)
            self.upstream = None

    def wait_for_request(self) -> bool:
        """Wait for the client's next request; False if the upstream closed the idle connection
        first (passed on to the client by closing its connection too)."""
        if self.upstream is None or self.client.has_buffered():
            return True
        readable, _, _ = select.select([self.client.sock, self.upstream.sock], [], [])
        if self.upstream.sock in readable and self.client.sock not in readable:
            return False
        return True

    def _connect_upstream(self) -> _Peer:
        if self.upstream is None:
            sock = socket.create_connection(self.proxy._upstream_addr, timeout=10)
            sock.settimeout(None)
            self.proxy._track(sock)
            self.upstream = _Peer(sock)
        return self.upstream

    def _send_client(self, data: Union[bytes, bytearray, memoryview]) -> None:
        self.client.sock.sendall(data)

    def handle(self, head: _Head) -> bool:
        """Serve one request; True if the client connection stays open for another."""
        method, target, _version = (head.start_line.split(" ", 2) + ["", ""])[:3]
        parts = urlsplit(target)
        record = RecordedRequest(
            method=method.upper(),
            path=parts.path,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers={k: v for k, v in ((k, head.get(k) or "") for k, _ in head.headers)},
            range=parse_range(head.get("range")),
            target=target,
        )
        proxy = self.proxy
        with proxy._lock:
            proxy._requests.append(record)
            proxy._in_flight += 1
        try:
            return self._handle(head, record)
        except _Abort:
            record.error = "reset by fault"
            raise
        except (OSError, _ProtocolError) as exc:
            record.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            record.finished = time.monotonic()
            with proxy._idle:
                proxy._in_flight -= 1
                proxy._idle.notify_all()

    def _handle(self, head: _Head, record: RecordedRequest) -> bool:
        body = _body_length(head)
        if body is None:
            body = 0  # a request without framing headers has no body
        expect_continue = head.has_token("expect", "100-continue") and body != 0
        keep_alive = not head.has_token("connection", "close")
        action = self.proxy._pick_fault(record)
        if action is not None:
            record.fault = repr(action)

        if isinstance(action, Delay) and action.after_bytes is None:
            self.proxy._stopping.wait(action.seconds)
        if isinstance(action, Reset) and action.after_bytes is None:
            raise _Abort(action.abortive)
        if isinstance(action, Respond):
            if expect_continue:
                # The client holds its body until 100 Continue; a final answer ends the exchange.
                self._send_response(record, action, keep_alive=False)
                return False
            self._relay_request_body(body, record, sink=None)
            self._send_response(record, action, keep_alive=keep_alive)
            return keep_alive

        upstream = self._connect_upstream()
        upstream.sock.sendall(head.raw)
        response: Optional[_Head] = None
        if expect_continue:
            response = self._await_continue(body, record)
        else:
            flip = action.at_byte if isinstance(action, Corrupt) else None
            self._relay_request_body(body, record, sink=upstream.sock, flip=flip)
        body_unsent = response is not None
        if response is None:
            response = self._read_final_response_head()
        upstream_keeps = self._relay_response(head, response, record, action)
        if body_unsent or not upstream_keeps:
            # A final answer to an Expect: 100-continue request leaves it unknown whether the
            # client will still send the body: end both connections, as after an upstream close.
            self.close_upstream()
            return False
        return keep_alive

    def _relay_request_body(
        self,
        body: Union[int, str],
        record: RecordedRequest,
        sink: Optional[socket.socket],
        flip: Optional[int] = None,
    ) -> None:
        sent = 0  # body bytes on the wire so far, framing included

        def forward(data: Union[bytes, memoryview]) -> None:
            nonlocal sent
            if flip is not None and sent <= flip < sent + len(data):
                damaged = bytearray(data)
                damaged[flip - sent] ^= 0xFF
                data = damaged
            sent += len(data)
            if sink is not None:
                sink.sendall(data)

        def send_data(data: memoryview) -> None:
            record.bytes_received += len(data)
            forward(data)

        def send_framing(data: bytes) -> None:
            forward(data)

        if body == "chunked":
            self.client.relay_chunked(send_framing, send_data, self.scratch)
        elif isinstance(body, int) and body > 0:
            self.client.relay(body, send_data, self.scratch)

    def _await_continue(self, body: Union[int, str], record: RecordedRequest) -> Optional[_Head]:
        """Expect: 100-continue. Relay the upstream's 100 and then the body; if the client sends
        the body first (it stopped waiting) relay it; if the upstream answers finally, return that
        answer with the body unsent."""
        upstream = self.upstream
        assert upstream is not None
        while True:
            if not upstream.buf:
                client_sent = self.client.has_buffered()
                if not client_sent:
                    readable, _, _ = select.select([upstream.sock, self.client.sock], [], [])
                    client_sent = self.client.sock in readable and upstream.sock not in readable
                if client_sent:
                    self._relay_request_body(body, record, sink=upstream.sock)
                    return None
            response = upstream.read_head()
            if response is None:
                raise _ProtocolError("upstream closed before answering")
            parsed = _parse_head(response)
            status = _status_of(parsed)
            if status == 100:
                self._send_client(parsed.raw)
                self._relay_request_body(body, record, sink=upstream.sock)
                return None
            if 100 < status < 200:
                self._send_client(parsed.raw)
                continue
            return parsed

    def _read_final_response_head(self) -> _Head:
        assert self.upstream is not None
        while True:
            raw = self.upstream.read_head()
            if raw is None:
                raise _ProtocolError("upstream closed before answering")
            parsed = _parse_head(raw)
            status = _status_of(parsed)
            if 100 <= status < 200:
                # Interim answers (a late 100 Continue) pass through; clients skip them.
                self._send_client(parsed.raw)
                continue
            return parsed

    def _relay_response(
        self,
        request: _Head,
        response: _Head,
        record: RecordedRequest,
        action: Optional[FaultAction],
    ) -> bool:
        """Relay the response head and body; True if the upstream keeps the connection open."""
        assert self.upstream is not None
        status = _status_of(response)
        record.status = status
        self._send_client(response.raw)

        # Faults that act part-way through the body: (body offset, what to do there).
        stops: list[tuple[int, FaultAction]] = []
        if isinstance(action, (Reset, Delay)) and action.after_bytes is not None:
            stops.append((action.after_bytes, action))
        if isinstance(action, CorruptResponse):
            stops.append((action.at_byte, action))
        meter = _BodyMeter(self, record, stops)

        method = request.start_line.split(" ", 1)[0].upper()
        if method == "HEAD" or status in (204, 304):
            framing: Union[int, str, None] = 0
        else:
            framing = _body_length(response)
        if framing == "chunked":
            self.upstream.relay_chunked(self._send_client, meter.send, self.scratch)
        elif framing is None:
            self.upstream.relay(None, meter.send, self.scratch)
        elif framing > 0:
            self.upstream.relay(framing, meter.send, self.scratch)
        meter.finish()

        if framing is None:
            return False
        version = response.start_line.split(" ", 1)[0].upper()
        if version == "HTTP/1.0":
            return response.has_token("connection", "keep-alive")
        return not response.has_token("connection", "close")

    def _send_response(self, record: RecordedRequest, action: Respond, keep_alive: bool) -> None:
        record.status = action.status
        try:
            reason = HTTPStatus(action.status).phrase
        except ValueError:
            reason = "Injected"
        headers = {
            "Date": formatdate(usegmt=True),
            "Content-Type": "application/xml",
            "Content-Length": str(len(action.body)),
            "x-amz-request-id": "S3TORCHPROXYFAULT",
            "Connection": "keep-alive" if keep_alive else "close",
        }
        headers.update(dict(action.headers))
        head = f"HTTP/1.1 {action.status} {reason}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()
        )
        body = b"" if record.method == "HEAD" else action.body
        self._send_client(head.encode("latin-1") + b"\r\n" + body)
        record.bytes_sent += len(body)


class _BodyMeter:
    """Counts response body bytes sent to the client; applies mid-body faults at their offsets."""

    def __init__(
        self, conn: _Connection, record: RecordedRequest, stops: list[tuple[int, FaultAction]]
    ) -> None:
        self.conn = conn
        self.record = record
        self.stops = sorted(stops, key=lambda s: s[0])
        self.flip_next = False  # a CorruptResponse is due: damage the next byte sent

    def _fire_due(self) -> None:
        while self.stops and self.record.bytes_sent >= self.stops[0][0]:
            _, action = self.stops.pop(0)
            if isinstance(action, Delay):
                self.conn.proxy._stopping.wait(action.seconds)
            elif isinstance(action, Reset):
                raise _Abort(action.abortive)
            elif isinstance(action, CorruptResponse):
                self.flip_next = True

    def send(self, data: memoryview) -> None:
        while True:
            self._fire_due()
            if not data:
                return
            n = len(data)
            if self.stops:
                n = min(n, self.stops[0][0] - self.record.bytes_sent)
            piece: Union[memoryview, bytearray] = data[:n]
            if self.flip_next and n:
                piece = bytearray(piece)
                piece[0] ^= 0xFF
                self.flip_next = False
            self.conn._send_client(piece)
            self.record.bytes_sent += n
            data = data[n:]

    def finish(self) -> None:
        # Stops beyond the end of a short body still happen, at its end.
        while self.stops:
            self.stops[0] = (self.record.bytes_sent, self.stops[0][1])
            self._fire_due()


def _status_of(head: _Head) -> int:
    fields = head.start_line.split(" ", 2)
    if len(fields) < 2 or not fields[0].startswith("HTTP/"):
        raise _ProtocolError(f"bad status line {head.start_line!r}")
    try:
        return int(fields[1])
    except ValueError as exc:
        raise _ProtocolError(f"bad status line {head.start_line!r}") from exc
