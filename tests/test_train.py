"""MOONS data, the training loop, one run end to end."""

import math

import pytest
import torch
from torch import nn

from jumpstart.data import Dataset, moons
from jumpstart.models import Rectangular
from jumpstart.techniques import make_technique
from jumpstart.train import fit, train_run


def test_moons_setup():
    d = moons()
    assert d.x_train.shape == (85, 2) and d.x_val.shape == (15, 2)
    x = torch.cat([d.x_train, d.x_val])
    assert (x.max() - x.min()).item() == pytest.approx(1.0)
    assert torch.cat([d.y_train, d.y_val]).sum().item() == 50  # balanced
    # noise-free: make_moons spans x in [-1, 2], so the scale is 1/3; class 0
    # lies on the unit circle at (0, 0), class 1 on the one at (1, .5).
    pts, y = x.double() * 3, torch.cat([d.y_train, d.y_val])
    centre = torch.tensor([[0.0, 0.0], [1.0, 0.5]], dtype=torch.float64)[y]
    assert torch.allclose((pts - centre).norm(dim=1), torch.ones(100, dtype=torch.float64),
                          atol=1e-5)
    assert torch.equal(moons().x_train, d.x_train)  # deterministic


def test_dataset_validation():
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="NaN or inf"):
        Dataset("d", torch.tensor([[math.nan, 0.0]]), torch.zeros(1, dtype=torch.long), x,
                torch.zeros(3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\)"):
        Dataset("d", x, torch.tensor([0, 1, 2]), x, torch.zeros(3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="do not match"):
        Dataset("d", x, torch.zeros(2, dtype=torch.long), x, torch.zeros(3, dtype=torch.long), 2)


class NaNAfter(nn.Module):
    """A model whose output becomes NaN from its k-th training forward on."""

    def __init__(self, k):
        super().__init__()
        self.net, self.k, self.calls = Rectangular(2, 3, 2, 1), k, 0

    def forward(self, x):
        out = self.net(x)
        if self.training:
            self.calls += 1
            if self.calls >= self.k:
                return out * math.nan
        return out


def test_divergence_is_recorded_not_raised():
    model = NaNAfter(3)
    r = fit(model, moons(), epochs=10, technique=make_technique("jumpstart", lam=1e-3))
    assert r.diverged and r.epochs == 2
    assert r.metrics()["diverged"] is True
    assert len(r.history["loss"]) == 2


def test_fit_records_curves_and_minibatches():
    torch.manual_seed(0)
    r = fit(Rectangular(2, 8, 2, 1), moons(), epochs=30, batch_size=16, lr=0.01,
            technique=make_technique("jumpstart", lam=1e-3))
    assert r.epochs == 30 and not r.diverged
    assert all(len(v) == 30 for v in r.history.values())
    assert r.history["loss"][-1] < r.history["loss"][0]
    assert all(p >= 0 for p in r.history["penalty"])
    m = r.metrics()
    assert m["best_train_acc"] >= m["train_acc"] - 1e-12
    assert m["best_val_acc"] == max(r.history["val_acc"])


@pytest.mark.parametrize("kwargs, fragment", [
    ({"lr": 0}, "lr"), ({"epochs": 0}, "epochs"),
    ({"batch_size": 0}, "batch_size"),
])
def test_fit_errors(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        fit(Rectangular(2, 2, 2, 1), moons(), **kwargs)


def test_fit_rejects_wrong_output_width():
    with pytest.raises(ValueError, match="does not fit 2 classes"):
        fit(Rectangular(2, 2, 2, 3), moons(), epochs=1)


def test_jumpstart_trains_deep_thin_net_that_baseline_cannot():
    """Depth 20, width 3, CPAIOR settings (Adam 0.01, full batch, lam 1e-4,
    squared L2), 500 epochs instead of 5000 to keep the test short."""
    kw = dict(dataset="moons", depth=20, width=3, epochs=500, lr=0.01, seed=0)
    base = train_run(technique="baseline", **kw).metrics()
    js = train_run(technique="jumpstart", lam=1e-4, aggregation="sq", **kw).metrics()
    assert base["best_train_acc"] < 0.6  # stuck at the majority class (44/85)
    assert base["status"]["unit_dead_ratio"] > 0.5
    assert js["best_train_acc"] >= 0.9
    assert js["status"]["unit_dead_ratio"] < base["status"]["unit_dead_ratio"]
