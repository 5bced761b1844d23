"""Serve moto's S3 API on a listening socket inherited from the test process.

Usage: python _moto_main.py FD

The test process binds 127.0.0.1:0 and listens before starting this script, so the port is never
free for another process to take in between (``python -m moto.server -p PORT`` would need a port
chosen in advance). Run by path, without importing s3torch.
"""

from __future__ import annotations

import sys


def main() -> None:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    fd = int(sys.argv[1])
    app = DomainDispatcherApplication(create_backend_app)
    # threaded=True also makes werkzeug speak HTTP/1.1; moto still closes the connection after
    # every response (it sends "Connection: close").
    server = make_server(
        "127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler, fd=fd
    )
    server.serve_forever()


if __name__ == "__main__":
    main()
