"""Switching is an import change: a script written for s3torchconnector 1.5.0, configured only through
AWS_ENDPOINT_URL and credentials in the environment (its DCP classes take no endpoint), runs unchanged
against a local SeaweedFS with only `s3torchconnector` replaced by `s3torch`: S3Checkpoint, both
datasets, and DCP save and load. The same script is first run with s3torchconnector itself, to show it
is a script for theirs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = '''
import os
import torch
import torch.distributed.checkpoint as dcp
from s3torchconnector import S3Checkpoint, S3ClientConfig, S3IterableDataset, S3MapDataset
from s3torchconnector.dcp import S3StorageReader, S3StorageWriter

REGION = os.environ["AWS_REGION"]
ROOT = f"s3://{os.environ['BUCKET']}/{os.environ['RUN']}"
config = S3ClientConfig(force_path_style=True)

checkpoint = S3Checkpoint(region=REGION, s3client_config=config)
model = torch.nn.Linear(8, 3)
with checkpoint.writer(f"{ROOT}/model.pt") as writer:
    torch.save(model.state_dict(), writer)
state = torch.load(checkpoint.reader(f"{ROOT}/model.pt"), weights_only=True)
assert torch.equal(state["weight"], model.weight)

for i in range(5):
    with checkpoint.writer(f"{ROOT}/data/{i:02d}") as writer:
        writer.write(bytes([i]) * (100 + i))
expected = [bytes([i]) * (100 + i) for i in range(5)]
mapped = S3MapDataset.from_prefix(f"{ROOT}/data/", region=REGION, s3client_config=config)
assert [mapped[i].read() for i in range(len(mapped))] == expected
iterable = S3IterableDataset.from_prefix(
    f"{ROOT}/data/", region=REGION, s3client_config=config, transform=lambda reader: reader.read()
)
assert list(iterable) == expected

tensors = {"w": torch.randn(64, 64), "b": torch.arange(10.0)}
dcp.save(tensors, storage_writer=S3StorageWriter(REGION, f"{ROOT}/dcp", s3client_config=config))
loaded = {"w": torch.zeros(64, 64), "b": torch.zeros(10)}
dcp.load(loaded, storage_reader=S3StorageReader(REGION, f"{ROOT}/dcp", s3client_config=config))
assert torch.equal(loaded["w"], tensors["w"]) and torch.equal(loaded["b"], tensors["b"])
print("switched ok")
'''


@pytest.mark.parametrize("library", ["s3torchconnector", "s3torch"])
def test_a_script_for_s3torchconnector_runs_after_the_import_change(
    library, seaweed_server, seaweed_bucket, proxy_factory, tmp_path
):
    proxy = proxy_factory(seaweed_server)
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.replace("s3torchconnector", library))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    env.update(
        AWS_ENDPOINT_URL=proxy.endpoint,  # the only place the store is named
        AWS_ACCESS_KEY_ID=seaweed_server.access_key,
        AWS_SECRET_ACCESS_KEY=seaweed_server.secret_key,
        AWS_REGION=seaweed_server.region,
        BUCKET=seaweed_bucket,
        RUN=library,
    )
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "switched ok" in done.stdout
    proxy.wait_idle()
    assert proxy.count("PUT") >= 5 and proxy.count("GET") >= 5, "the requests went to the configured store"
