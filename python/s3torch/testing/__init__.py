"""Test infrastructure: local S3 servers (moto, SeaweedFS) and a fault-injecting loopback proxy.

Pure Python (stdlib only at import; boto3 and cryptography are imported inside the functions that
need them), so it works without the native ``s3torch._core``. ``make_tls_files`` and
``server_context`` put the proxy behind HTTPS with a throwaway CA (trust it with AWS_CA_BUNDLE).
"""

from ._ports import free_port, free_ports
from .helpers import make_client, unique_bucket_name
from .proxy import (
    Chance,
    Corrupt,
    CorruptResponse,
    Delay,
    Fault,
    FaultAction,
    RecordedRequest,
    Reset,
    Respond,
    S3Proxy,
    corrupt,
    corrupt_response,
    delay,
    parse_range,
    random_faults,
    reset,
    respond,
)
from .servers import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    S3Server,
    ServerStartError,
    find_weed,
    start_moto,
    start_seaweedfs,
    start_server,
)
from .tls import TlsFiles, make_tls_files, server_context

__all__ = [
    "ACCESS_KEY",
    "REGION",
    "SECRET_KEY",
    "Chance",
    "Corrupt",
    "CorruptResponse",
    "Delay",
    "Fault",
    "FaultAction",
    "RecordedRequest",
    "Reset",
    "Respond",
    "S3Proxy",
    "S3Server",
    "ServerStartError",
    "TlsFiles",
    "corrupt",
    "corrupt_response",
    "delay",
    "find_weed",
    "free_port",
    "free_ports",
    "make_client",
    "make_tls_files",
    "parse_range",
    "random_faults",
    "reset",
    "respond",
    "server_context",
    "start_moto",
    "start_seaweedfs",
    "start_server",
    "unique_bucket_name",
]
