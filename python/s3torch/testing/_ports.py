"""Free loopback ports for test servers."""

from __future__ import annotations

import contextlib
import random
import socket
from typing import Iterable

LOOPBACK = "127.0.0.1"


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((LOOPBACK, port))
    except OSError:
        sock.close()
        raise
    return sock


def free_port() -> int:
    """One free TCP port on 127.0.0.1 (the kernel picks it: bind to port 0)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1.

    All sockets stay bound until every port is chosen, so the kernel never hands out the same port
    twice. The ports are released before returning: a server must bind them soon after (a small race
    with other processes remains; callers retry when the server fails to bind).
    """
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(_bind(0))
        return [s.getsockname()[1] for s in socks]
    finally:
        _close_all(socks)


def free_port_pair(
    offset: int, exclude: Iterable[int] = (), low: int = 20000, high: int = 55000
) -> tuple[int, int]:
    """A free port ``p`` such that ``p + offset`` is free too.

    Some servers derive one port from another (SeaweedFS: gRPC = HTTP + 10000) in places that ignore
    the explicit flag, so both must be free.
    """
    excluded = set(exclude)
    for _ in range(200):
        port = random.randint(low, high)
        if port in excluded or port + offset in excluded:
            continue
        socks: list[socket.socket] = []
        try:
            socks.append(_bind(port))
            socks.append(_bind(port + offset))
            return port, port + offset
        except OSError:
            continue
        finally:
            _close_all(socks)
    raise RuntimeError(f"no free loopback port pair with offset {offset}")


def _close_all(socks: Iterable[socket.socket]) -> None:
    for s in socks:
        with contextlib.suppress(OSError):
            s.close()
