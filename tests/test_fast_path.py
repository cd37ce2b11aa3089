"""The fast path's options: how "auto" resolves, what a run records, and the
denormal state around a run."""

import pytest
import torch
from torch import nn

import jumpstart.train.fast_path as fast_path
from jumpstart.data import Dataset
from jumpstart.experiments.config import SweepError, sweep_from_doc
from jumpstart.experiments.sweep import worker_threads
from jumpstart.models import Rectangular
from jumpstart.techniques import make_technique
from jumpstart.train import fit
from jumpstart.train.fast_path import denormals_flushed, resolve_fast_path

CPU = torch.device("cpu")


def conv_net():
    torch.manual_seed(0)
    return Rectangular(3, 4, 1, 3, kind="conv", head="maxavg", input_size=(6, 6))


def images(n=24):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 1, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g)
    return Dataset("tiny-images", x[:16], y[:16], x[16:], y[16:], num_classes=3)


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_and_channels_last_for_conv_nets_on_a_native_bf16_cpu(native, monkeypatch):
    monkeypatch.setattr(fast_path, "native_bf16", lambda: native)
    path = resolve_fast_path(conv_net(), torch.zeros(1, 1, 6, 6), CPU)
    assert (path.precision, path.memory_format) == ("bf16" if native else "32", "channels_last")
    assert path.flush_denormal and path.threads == torch.get_num_threads()


def test_auto_leaves_dense_nets_in_float32(monkeypatch):
    monkeypatch.setattr(fast_path, "native_bf16", lambda: True)
    dense = Rectangular(3, 4, 36, 3)
    path = resolve_fast_path(dense, torch.zeros(1, 1, 6, 6), CPU)  # flattened images
    assert (path.precision, path.memory_format) == ("32", "contiguous")
    # and a conv net fed flat inputs is no image model either
    assert resolve_fast_path(conv_net(), torch.zeros(1, 36), CPU).precision == "32"


def test_explicit_values_win_and_bad_ones_are_named(monkeypatch):
    monkeypatch.setattr(fast_path, "native_bf16", lambda: True)
    path = resolve_fast_path(conv_net(), torch.zeros(1, 1, 6, 6), CPU, precision="32",
                             memory_format="contiguous", flush_denormal=False)
    assert (path.precision, path.memory_format, path.flush_denormal) == ("32", "contiguous",
                                                                         False)
    with pytest.raises(ValueError, match="precision must be one of auto, 32, bf16; got '16'"):
        resolve_fast_path(conv_net(), torch.zeros(1, 1, 6, 6), CPU, precision="16")
    with pytest.raises(ValueError, match="memory_format"):
        resolve_fast_path(conv_net(), torch.zeros(1, 1, 6, 6), CPU, memory_format="nhwc")


def test_fit_records_its_path_and_trains_channels_last_in_bf16(monkeypatch):
    monkeypatch.setattr(fast_path, "native_bf16", lambda: True)
    model = conv_net()
    result = fit(model, images(), epochs=2, batch_size=8, lr=1e-3,
                 technique=make_technique("jumpstart"))
    assert result.metrics()["fast_path"] == {"precision": "bf16",
                                             "memory_format": "channels_last",
                                             "flush_denormal": True,
                                             "threads": torch.get_num_threads()}
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert conv.weight.dtype == torch.float32  # autocast: the parameters stay float32
    assert all(torch.isfinite(torch.tensor(v)) for v in result.history["loss"])


def test_precision_32_restores_full_float32(monkeypatch):
    monkeypatch.setattr(fast_path, "native_bf16", lambda: True)
    seen = []

    class Spy(nn.Module):
        def forward(self, x):
            seen.append((x.dtype, x.is_contiguous()))
            return x

    model = nn.Sequential(Spy(), conv_net())
    result = fit(model, images(), epochs=1, batch_size=8, precision="32",
                 memory_format="contiguous")
    assert result.fast_path.precision == "32"
    assert set(seen) == {(torch.float32, True)}


def test_denormals_are_flushed_while_training_and_restored_after():
    seen = []

    class Spy(nn.Module):
        def forward(self, x):
            if self.training:
                seen.append(denormals_flushed())
            return x

    torch.set_flush_denormal(False)
    model = nn.Sequential(Spy(), conv_net())
    fit(model, images(), epochs=1, batch_size=8)
    assert seen and all(seen)
    assert not denormals_flushed()
    fit(model, images(), epochs=1, batch_size=8, flush_denormal=False)
    assert not any(seen[-2:])


def test_sweep_files_take_the_fast_path_options():
    doc = {"name": "t", "fixed": {"dataset": "moons", "depth": 2, "width": 3,
                                  "technique": "baseline", "precision": "32",
                                  "memory_format": "contiguous", "flush_denormal": False}}
    (config,) = list(sweep_from_doc(doc, "t.toml").iter_runs())
    assert (config["precision"], config["memory_format"], config["flush_denormal"]) == (
        "32", "contiguous", False)
    doc["fixed"]["precision"] = "fp8"
    with pytest.raises(SweepError, match="precision"):
        list(sweep_from_doc(doc, "t.toml").iter_runs())


@pytest.mark.parametrize("cores,workers,threads", [(16, 2, 8), (2, 2, 1), (1, 4, 1), (6, 4, 1)])
def test_each_worker_gets_its_share_of_the_cores(cores, workers, threads, monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)))
    assert worker_threads(workers) == threads
