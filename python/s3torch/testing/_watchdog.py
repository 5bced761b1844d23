"""Run a test server and make sure it dies with the test process.

Usage: python _watchdog.py MAX_LIFETIME_S WORKDIR -- ARGV...

Run as a script (by path, so the s3torch package and its native core are never imported) as the
leader of a new process group, with its stdin a pipe from the test process. The server runs as
its child in the same group. The whole group is killed when

- the test process goes away, even by SIGKILL (its end of the pipe closes: EOF on stdin), or
- MAX_LIFETIME_S seconds have passed (a hard limit on any server's life);

and then WORKDIR (the server's temporary directory) is removed, as ``S3Server.stop()`` would.

The test process stops a server by signalling the group (``os.killpg``); this watchdog ignores
SIGTERM and exits as soon as the server does, with its exit status.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import time


def _kill_group(child: subprocess.Popen[bytes], workdir: str) -> None:
    os.killpg(os.getpgrp(), signal.SIGTERM)  # ignored by this process
    try:
        child.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    shutil.rmtree(workdir, ignore_errors=True)
    os.killpg(os.getpgrp(), signal.SIGKILL)  # this process too: the end


def main() -> int:
    if len(sys.argv) < 5 or sys.argv[3] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    max_lifetime = float(sys.argv[1])
    workdir = sys.argv[2]
    deadline = time.monotonic() + max_lifetime if max_lifetime > 0 else float("inf")
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The server gets the default SIGTERM disposition back (ignored signals are inherited).
    child = subprocess.Popen(
        sys.argv[4:],
        stdin=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL),
        # Descriptors the test process passed on (a listening socket) go on to the server; all
        # others are non-inheritable anyway.
        close_fds=False,
    )
    stdin = sys.stdin.fileno()
    parent_alive = True
    # One thread, short polls: no daemon thread can be cut off half-way through the cleanup.
    while True:
        code = child.poll()
        if code is not None:
            return code
        if time.monotonic() >= deadline:
            print(f"watchdog: server outlived {max_lifetime:.0f}s, killing it", file=sys.stderr)
            _kill_group(child, workdir)
            return 124
        if parent_alive:
            readable, _, _ = select.select([stdin], [], [], 0.1)
            if readable and not os.read(stdin, 4096):
                parent_alive = False  # EOF: the test process is gone
                _kill_group(child, workdir)
        else:
            time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
