"""Lightning callback and the torchmetrics status metric, alone and under DDP
(2 CPU processes, gloo)."""

import atexit
import json

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("lightning.pytorch")

from jumpstart import Jumpstart, activation_status  # noqa: E402
from jumpstart.integrations import ActivationStatusMetric, JumpstartCallback  # noqa: E402
from jumpstart.models import Rectangular  # noqa: E402


def _destroy_process_group():
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def data(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 2, generator=g)
    return x, (x[:, 0] > 0).long()


class Module(pl.LightningModule):
    def __init__(self, out=None, lr=0.0):
        super().__init__()
        torch.manual_seed(0)
        self.net = Rectangular(6, 3, 2, 1)
        self.status = ActivationStatusMetric(self.net)
        self.out, self.lr, self.batches = out, lr, []

    def training_step(self, batch, i):
        x, y = batch
        self.batches.append(x.detach().clone())
        return torch.nn.functional.binary_cross_entropy_with_logits(self.net(x)[:, 0], y.float())

    def on_fit_start(self):
        if torch.distributed.is_initialized():
            # destroy the gloo group before the spawned process exits: a group
            # left to the C++ destructors can abort at exit ("terminate called
            # without an active exception") after all the work is done
            atexit.register(_destroy_process_group)

    def validation_step(self, batch, i):
        self.status.update(batch[0])

    def on_validation_epoch_end(self):
        ratios = self.status.compute()
        if self.out is not None:
            rank = self.global_rank
            penalty = self.trainer.callbacks[0].last_penalty
            (self.out / f"rank{rank}.json").write_text(json.dumps({
                "ratios": ratios, "penalty": penalty,
                "batch": self.batches[0].tolist() if self.batches else None}))
        self.status.reset()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def loaders(batch_size):
    x, y = data()
    ds = TensorDataset(x, y)
    return DataLoader(ds, batch_size=batch_size), DataLoader(ds, batch_size=16)


def trainer(**kw):
    return pl.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0, **kw)


def test_callback_adds_penalty_and_metric_matches_activation_status(tmp_path):
    module = Module(out=tmp_path)
    train, val = loaders(64)
    cb = JumpstartCallback(lam=0.5)
    trainer(devices=1, callbacks=[cb]).fit(module, train, val)
    got = json.loads((tmp_path / "rank0.json").read_text())
    x, _ = data()
    js = Jumpstart(module.net)
    module.net.train()
    module.net(x)
    assert got["penalty"] == pytest.approx(js.penalty().item(), rel=1e-5)
    js.remove()
    assert got["ratios"] == pytest.approx(activation_status(module.net, x).ratios())
    assert module.training_step.__func__ is Module.training_step  # unwrapped after fit
    with pytest.raises(ValueError, match="lam must be"):
        JumpstartCallback(lam=-1)
    with pytest.raises(ValueError, match="unknown aggregation"):
        JumpstartCallback(aggregation="max")


def test_ddp_two_processes(tmp_path):
    """Each rank's penalty is that of its own batch; the synced status equals
    the single-process status on the union of the ranks' data."""
    module = Module(out=tmp_path)
    train, val = loaders(32)  # one training batch of 32 per rank
    try:
        trainer(devices=2, strategy="ddp_spawn", callbacks=[JumpstartCallback(lam=0.5)]).fit(
            module, train, val)
    except torch.multiprocessing.ProcessExitedException as exc:
        # gloo can abort a spawned process at interpreter exit, after its
        # work is done ("terminate called without an active exception"); the
        # results below are what this test is about, so only a crash before
        # both ranks wrote them fails it
        if exc.signal_name != "SIGABRT" or not all((tmp_path / f"rank{r}.json").exists()
                                                for r in (0, 1)):
            raise
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    x, _ = data()
    torch.manual_seed(0)
    net = Rectangular(6, 3, 2, 1)  # lr 0: the weights every rank used
    expected = activation_status(net, x).ratios()
    js = Jumpstart(net)
    net.train()
    for got in ranks:
        assert got["ratios"] == pytest.approx(expected)
        batch = torch.tensor(got["batch"])
        assert batch.shape == (32, 2)
        net(batch)
        assert got["penalty"] == pytest.approx(js.penalty().item(), rel=1e-5)
    assert ranks[0]["batch"] != ranks[1]["batch"]  # the ranks saw different data
    js.remove()
