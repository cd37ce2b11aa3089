"""Conv Rectangular nets, the ResNet family, and the image loaders."""

import gzip
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from conftest import cifar_batch
from jumpstart import Jumpstart
from jumpstart.data import load_dataset, mnist
from jumpstart.data.images import cifar, read_idx
from jumpstart.models import Rectangular, ResNet, resnet50


def test_conv_rectangular_heads_and_shapes():
    net = Rectangular(3, 4, 1, 10, kind="conv", input_size=(6, 5))
    assert all(isinstance(c, nn.Conv2d) and c.kernel_size == (3, 3) and c.padding == (1, 1)
               for c in net.linears)
    assert net.output.in_features == 4 * 6 * 5  # flatten head
    assert net(torch.randn(2, 1, 6, 5)).shape == (2, 10)
    pooled = Rectangular(3, 4, 3, 7, kind="conv", head="maxavg")
    assert pooled.output.in_features == 8  # max and average per channel
    x = torch.randn(2, 3, 9, 9)
    feats = []
    pooled.output.register_forward_hook(lambda m, a, o: feats.append(a[0]))
    pooled(x)
    h = x
    for conv, act in zip(pooled.linears, pooled.activations):
        h = act(conv(h))
    assert torch.allclose(feats[0], torch.cat([h.amax((2, 3)), h.mean((2, 3))], 1), atol=1e-6)
    with pytest.raises(ValueError, match="needs input_size"):
        Rectangular(2, 2, 1, 10, kind="conv")


def test_conv_deficits_reduce_over_batch_and_space_per_channel():
    """Jumpstart on a conv net: unit deficits per channel over (N, H, W), point
    deficits per sample over (C, H, W)."""
    net = Rectangular(1, 3, 1, 2, kind="conv", head="maxavg")
    js = Jumpstart(net)
    net.train()
    x = torch.randn(4, 1, 5, 5)
    net(x)
    g = net.linears[0](x)
    d = js.deficits()[0].deficits
    assert torch.allclose(d.unit_pos, torch.relu(1 - g.amax((0, 2, 3))))
    assert torch.allclose(d.unit_neg, torch.relu(1 + g.amin((0, 2, 3))))
    assert torch.allclose(d.point_pos, torch.relu(1 - g.amax((1, 2, 3))))
    assert torch.allclose(d.point_neg, torch.relu(1 + g.amin((1, 2, 3))))


def _bottleneck_params(norm: bool, skip: bool, multiplier: float = 1.0) -> int:
    """ResNet-50 parameter count by formula (torchvision layout, no conv bias)."""
    total = 3 * 64 * 49 + (2 * 64 if norm else 0)  # stem conv + BN
    inplanes = 64
    for planes, blocks in zip((64, 128, 256, 512), (3, 4, 6, 3)):
        inner, out = int(planes * multiplier), planes * 4
        for b in range(blocks):
            total += inplanes * inner + 9 * inner * inner + inner * out
            if norm:
                total += 2 * (inner + inner + out)
            if skip and b == 0:  # projection: stride or width changes
                total += inplanes * out + (2 * out if norm else 0)
            inplanes = out
    return total + 2048 * 1000 + 1000


def test_resnet_parameter_counts():
    def count(m):
        return sum(p.numel() for p in m.parameters())

    assert count(resnet50()) == 25_557_032 == _bottleneck_params(True, True)
    assert count(resnet50(norm=None, skip=False)) == _bottleneck_params(False, False)
    assert count(resnet50(width_multiplier=2.0)) == _bottleneck_params(True, True, 2.0)
    assert count(ResNet(18)) == 11_689_512 and count(ResNet(34)) == 21_797_672
    plain = resnet50(norm=None, skip=False, num_classes=10)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert all(b.downsample is None for b in plain.blocks)
    assert plain(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    js = Jumpstart(plain)
    plain.train()
    plain(torch.randn(2, 3, 32, 32))
    assert len(js.deficits()) == 1 + 16 * 3  # stem + 3 ReLUs per bottleneck block
    with pytest.raises(ValueError, match="unknown ResNet depth 20"):
        ResNet(20)


def _idx(path, kind, array, magic=None):
    header = (magic or {"images": 2051, "labels": 2049}[kind]).to_bytes(4, "big")
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def test_mnist_idx_files_raw_and_gz(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (50, 28, 28)), np.repeat(np.arange(10), 5)
    _idx(tmp_path / "train-images-idx3-ubyte.gz", "images", images)
    _idx(tmp_path / "train-labels-idx1-ubyte", "labels", labels)
    d = mnist(tmp_path, val_size=10, seed=0)
    assert d.x_train.shape == (40, 1, 28, 28) and d.x_val.shape == (10, 1, 28, 28)
    assert torch.bincount(d.y_val).tolist() == [1] * 10  # stratified
    assert 0 <= d.x_train.min() and d.x_train.max() <= 1
    _idx(tmp_path / "t10k-images-idx3-ubyte", "images", images[:7])
    _idx(tmp_path / "t10k-labels-idx1-ubyte", "labels", labels[:7])
    d = mnist(tmp_path)
    assert len(d.y_train) == 50 and len(d.y_val) == 7  # t10k is the validation part
    assert torch.equal(d.x_val[3, 0], torch.as_tensor(images[3] / 255, dtype=torch.float32))


def test_mnist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        mnist(tmp_path)
    images, labels = np.zeros((5, 28, 28)), np.zeros(4)
    _idx(tmp_path / "train-images-idx3-ubyte", "images", images)
    _idx(tmp_path / "train-labels-idx1-ubyte", "labels", labels)
    with pytest.raises(ValueError, match="5 images but 4 labels"):
        mnist(tmp_path)
    _idx(tmp_path / "bad", "images", images, magic=2049)
    with pytest.raises(ValueError, match="magic number 2049, expected 2051"):
        read_idx(tmp_path / "bad", "images")
    (tmp_path / "short").write_bytes((tmp_path / "train-images-idx3-ubyte").read_bytes()[:-10])
    with pytest.raises(ValueError, match="header says"):
        read_idx(tmp_path / "short", "images")


def test_shared_mnist_5k():
    d = load_dataset("mnist-5k", seed=0)
    assert d.x_train.shape == (4000, 1, 28, 28) and len(d.y_val) == 1000
    assert torch.bincount(d.y_val).tolist() == [100] * 10


def test_cifar_pickles(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        cifar_batch(tmp_path / f"data_batch_{i}", 4, 10, rng)
    cifar_batch(tmp_path / "test_batch", 3, 10, rng)
    d = cifar(tmp_path)
    assert d.x_train.shape == (20, 3, 32, 32) and d.x_val.shape == (3, 3, 32, 32)
    assert torch.allclose(d.x_train.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    c100 = tmp_path / "c100"
    c100.mkdir()
    cifar_batch(c100 / "train", 6, 100, rng)
    cifar_batch(c100 / "test", 2, 100, rng)
    assert cifar(c100, classes=100).num_classes == 100
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3 not found"):
        cifar(tmp_path)
    with open(c100 / "test", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"fine_labels": [0, 1]}, f)
    with pytest.raises(ValueError, match=r"expected \(N, 3072\)"):
        cifar(c100, classes=100)


def test_jumpstart_trains_deep_thin_mnist_net_that_baseline_cannot():
    """mnist-5k, depth 28 x width 2 conv net, 3 epochs (Adam 0.003, batch 128):
    the baseline stays at chance (0.1), Jumpstart is a successful model in
    the CPAIOR Table 1 sense (best validation accuracy above 0.5)."""
    from jumpstart.train import train_run

    kw = dict(dataset="mnist-5k", model="conv", depth=28, width=2, epochs=3, lr=0.003,
              batch_size=128, seed=0)
    base = train_run(technique="baseline", **kw).fit.metrics()
    js = train_run(technique="jumpstart", lam=1.0, **kw).fit.metrics()
    assert base["best_val_acc"] <= 0.2
    assert js["best_val_acc"] > 0.5


def test_chance_level_of_the_named_sets():
    from jumpstart.data import chance_level

    assert chance_level("cifar10-10k") == 0.1 and chance_level("cifar100") == 0.01
    assert chance_level("mnist-5k") == 0.1 and chance_level("moons-1k") == 0.5
    assert chance_level("iris") is None  # a table: its own class balance
