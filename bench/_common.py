"""Helpers the benchmark scripts share (they run as scripts: this directory is on sys.path)."""

from __future__ import annotations

from typing import Any


def materialize(obj: Any, touch: bool = True) -> Any:
    """A state_dict structure with its (meta) tensors replaced by zero CPU tensors, touched now so
    that page faults do not land in a measured load; ``touch=False``: torch.empty, untouched."""
    import torch

    if isinstance(obj, dict):
        return {k: materialize(v, touch) for k, v in obj.items()}
    if isinstance(obj, torch.Tensor):
        make = torch.zeros if touch else torch.empty
        return make(obj.shape, dtype=obj.dtype)
    return obj


def save_with_s3torch(server: Any, uri: str, state: Any) -> None:
    """dcp.save of ``state`` to ``uri`` on ``server`` with s3torch's writer."""
    import torch.distributed.checkpoint as dcp

    from s3torch import S3ClientConfig
    from s3torch.dcp import S3StorageWriter

    writer = S3StorageWriter(
        server.region, uri, s3client_config=S3ClientConfig(force_path_style=True), endpoint=server.endpoint
    )
    dcp.save(state, storage_writer=writer)


def storage_reader(tool: str, spec: Any, **kwargs: Any) -> Any:
    """An S3StorageReader of ``tool`` ("s3torchconnector" or s3torch) for spec's uri on spec's endpoint.

    s3torchconnector's reader takes no endpoint: its file system's client is replaced by the client type
    it builds itself, with the endpoint set. ``kwargs`` go to s3torch's reader only.
    """
    if tool == "s3torchconnector":
        from s3torchconnector import S3ClientConfig as RefConfig
        from s3torchconnector._s3client import S3Client
        from s3torchconnector.dcp import S3StorageReader as RefReader

        reader = RefReader(spec["region"], spec["uri"], s3client_config=RefConfig(force_path_style=True))
        reader.fs._client = S3Client(
            spec["region"], endpoint=spec["endpoint"], s3client_config=RefConfig(force_path_style=True)
        )
        return reader
    from s3torch import S3ClientConfig
    from s3torch.dcp import S3StorageReader

    return S3StorageReader(
        spec["region"],
        spec["uri"],
        s3client_config=S3ClientConfig(force_path_style=True),
        endpoint=spec["endpoint"],
        **kwargs,
    )
