"""One torch.distributed rank of test_datasets' sharding test: joins a gloo group of WORLD_SIZE ranks,
reads two shuffled epochs of an S3IterableDataset through a DataLoader with two worker processes, and
writes the keys it got, one file per epoch."""

from __future__ import annotations

import os
import sys

import torch.distributed as dist
from torch.utils.data import DataLoader

from s3torch import S3ClientConfig, S3IterableDataset


def key(reader) -> str:
    return reader.key


def main() -> None:
    rank, out = int(sys.argv[1]), sys.argv[2]
    dist.init_process_group("gloo", rank=rank, world_size=int(os.environ["WORLD_SIZE"]))
    ds = S3IterableDataset.from_prefix(
        os.environ["URI"],
        region=os.environ["REGION"],
        endpoint=os.environ["ENDPOINT"],
        transform=key,
        s3client_config=S3ClientConfig(force_path_style=True),
        enable_sharding=True,
        shuffle=True,
        seed=1234,
    )
    for epoch in range(2):
        ds.set_epoch(epoch)
        loader = DataLoader(ds, batch_size=16, num_workers=2, multiprocessing_context="fork")
        keys = [k for batch in loader for k in batch]
        with open(f"{out}.{epoch}", "w") as f:
            f.write("\n".join(keys))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
