"""S3Checkpoint (torch.save / torch.load), Lightning's CheckpointIO (a real Trainer saving and resuming),
and S3Writer's behaviour where the reference's differs from a plain file's."""

from __future__ import annotations

import threading

import lightning  # a test dependency: the Lightning case below must run, never skip
import pytest
import torch

from s3torch import S3Checkpoint, S3ClientConfig


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))


def test_torch_save_and_load_through_s3checkpoint(seaweed_server, seaweed_bucket, proxy_factory):
    proxy = proxy_factory(seaweed_server)
    checkpoint = S3Checkpoint(
        seaweed_server.region, endpoint=proxy.endpoint, s3client_config=S3ClientConfig(force_path_style=True)
    )
    model = _model()
    state = {"model": model.state_dict(), "step": 42, "big": torch.randn(3_000_000)}  # 12 MB: multipart
    uri = f"s3://{seaweed_bucket}/ckpt/model.pt"
    with checkpoint.writer(uri) as writer:
        torch.save(state, writer)
    loaded = torch.load(checkpoint.reader(uri), weights_only=True)
    assert loaded["step"] == 42 and torch.equal(loaded["big"], state["big"])
    fresh = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    fresh.load_state_dict(loaded["model"])
    x = torch.randn(5, 16)
    assert torch.equal(fresh(x), model(x))
    assert checkpoint.region == seaweed_server.region and checkpoint.endpoint == proxy.endpoint
    proxy.wait_idle()
    assert proxy.count("POST") >= 2, "a multipart upload (create and complete)"
    with pytest.raises(FileNotFoundError):
        torch.load(checkpoint.reader(f"s3://{seaweed_bucket}/ckpt/missing.pt"), weights_only=True)
    with pytest.raises(ValueError, match="Only s3:// URIs"):
        checkpoint.writer("/tmp/local.pt")


def test_a_failed_torch_save_leaves_no_object(seaweed_server, seaweed_bucket, make_client):
    checkpoint = S3Checkpoint(
        seaweed_server.region,
        endpoint=seaweed_server.endpoint,
        s3client_config=S3ClientConfig(force_path_style=True),
    )

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle this")

    with (
        pytest.raises(RuntimeError, match="cannot pickle"),
        checkpoint.writer(f"s3://{seaweed_bucket}/bad.pt") as w,
    ):
        torch.save({"x": torch.ones(10), "y": Unpicklable()}, w)
    keys = [
        o.key for page in make_client(seaweed_server).list_objects(seaweed_bucket) for o in page.object_info
    ]
    assert "bad.pt" not in keys


def test_writer_close_flush_and_writable_as_the_reference(seaweed_server, seaweed_bucket, make_client):
    client = make_client(seaweed_server)
    writer = client.put_object(seaweed_bucket, "w/obj")
    assert writer.writable()
    writer.write(b"x" * 1000)
    results = []

    def close() -> None:
        writer.close()
        results.append(client.head_object(seaweed_bucket, "w/obj").size)  # exists once close returns

    threads = [threading.Thread(target=close) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [1000] * 4
    assert writer.closed and not writer.writable()
    writer.flush()  # a no-op on a closed writer, as s3torchconnector's
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"more")


class _TinyModule(lightning.pytorch.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(8, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader():
    torch.manual_seed(1)
    data = torch.utils.data.TensorDataset(torch.randn(64, 8), torch.randn(64, 1))
    return torch.utils.data.DataLoader(data, batch_size=16)


def test_lightning_trainer_saves_to_s3_and_resumes(
    seaweed_server, seaweed_bucket, make_client, tmp_path, monkeypatch
):
    """trainer.save_checkpoint and fit(ckpt_path=...) go through the plugin. (Lightning's own
    ModelCheckpoint callback lists and makes directories through fsspec, which needs s3fs for s3://
    paths; the reference's plugin has the same limit, so the callback is off here.)"""
    from s3torch.lightning import S3LightningCheckpoint

    monkeypatch.setenv("AWS_ENDPOINT_URL", seaweed_server.endpoint)  # the plugin has endpoint= too
    plugin = S3LightningCheckpoint(
        seaweed_server.region, s3client_config=S3ClientConfig(force_path_style=True)
    )
    assert plugin._client.user_agent_prefix.endswith(f"(lightning; {lightning.__version__})")
    common = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        plugins=[plugin],
        default_root_dir=str(tmp_path),
    )
    model = _TinyModule()
    trainer = lightning.pytorch.Trainer(max_epochs=1, **common)
    trainer.fit(model, _loader())
    saved = f"s3://{seaweed_bucket}/run/epoch0.ckpt"
    trainer.save_checkpoint(saved)
    client = make_client(seaweed_server)
    assert client.head_object(seaweed_bucket, "run/epoch0.ckpt").size > 0

    loaded = plugin.load_checkpoint(saved, weights_only=False)
    assert loaded["epoch"] == 1 and loaded["global_step"] == 4  # saved after the first epoch ended
    assert torch.equal(loaded["state_dict"]["layer.weight"], model.layer.weight.detach())

    resumed = _TinyModule()
    trainer2 = lightning.pytorch.Trainer(max_epochs=2, **common)
    trainer2.fit(resumed, _loader(), ckpt_path=saved)
    assert trainer2.global_step == 8, "resumed after the first epoch's 4 steps"
    assert not torch.equal(resumed.layer.weight, model.layer.weight), "it trained on from there"

    plugin.remove_checkpoint(saved)
    with pytest.raises(FileNotFoundError):
        client.head_object(seaweed_bucket, "run/epoch0.ckpt")
    with pytest.raises(TypeError, match="not a supported type for 'path'"):
        plugin.save_checkpoint({}, tmp_path / "x.ckpt")  # type: ignore[arg-type]
