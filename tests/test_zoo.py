"""Conformance on real model zoos: every torchvision classification model and
ten timm families take one training step with Jumpstart attached by default
(``Jumpstart(model)``), and the layers it penalizes are exactly the hidden
activation calls, counted independently.

The independent count runs the same forward without Jumpstart under a
``TorchDispatchMode`` (below autograd, so it sees what actually executes, not
how it was called): every ATen activation op of a kind jumpstart knows
(ReLU, ReLU6 / Hardtanh, LeakyReLU, PReLU, Hardswish, GELU, SiLU) is one call,
and a call is *hidden* when an op that reads a model parameter runs after it
(the last activation before the logits with no weights after it, as in
squeezenet's class maps, is not hidden). Each model must give as many
penalized layers as hidden calls.

Needs torchvision and timm beside torch: ``make test-zoo`` creates
``.venv-zoo`` with ``torch==2.14.1 torchvision==0.29.1 timm`` (about 5.5 GB
here) and runs this file; in the main environment it is skipped.
"""

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

try:
    import timm
    import torchvision.models as tvm
except Exception:  # noqa: BLE001 - absent, or not importable beside this torch
    pytest.skip("torchvision and timm not importable here (make test-zoo)",
                allow_module_level=True)

from jumpstart import Jumpstart

aten = torch.ops.aten
ACTIVATION_OPS = {aten.relu.default, aten.relu_.default, aten.hardtanh.default,
                  aten.hardtanh_.default, aten.leaky_relu.default, aten.leaky_relu_.default,
                  aten._prelu_kernel.default, aten.gelu.default, aten.gelu_.default,
                  aten.silu.default, aten.silu_.default, aten.hardswish.default,
                  aten.hardswish_.default}

#: models whose constructor takes the input size, or that need a larger one
TV_SIZE = {"inception_v3": 299, "googlenet": 128, "maxvit_t": 224, "vit_h_14": 56}
TV_KWARGS = {name: {"image_size": TV_SIZE.get(name, 64)} for name in tvm.list_models(module=tvm)
             if name.startswith("vit_")}
TIMM = ["resnet18", "convnext_atto", "vit_tiny_patch16_224", "mixer_s16_224",
        "mobilenetv3_small_100", "cspdarknet53", "efficientnet_b0", "regnetx_002",
        "densenet121", "ghostnet_100"]
TIMM_SIZE = {"vit_tiny_patch16_224": 224, "mixer_s16_224": 224}


class _Count(TorchDispatchMode):
    """Activation calls in execution order, each marked hidden when an op
    that reads one of ``params``' storages runs after it."""

    def __init__(self, params):
        super().__init__()
        self.storages = {p.untyped_storage().data_ptr() for p in params}
        self.calls = []  # weighted ops seen before each activation call
        self.weighted = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat = [a for a in (*args, *kwargs.values()) for a in (a if isinstance(a, (list, tuple))
                                                               else [a])]
        if any(isinstance(a, torch.Tensor) and a.untyped_storage().data_ptr() in self.storages
               for a in flat) and func not in ACTIVATION_OPS:
            self.weighted += 1
        if func in ACTIVATION_OPS:
            self.calls.append(self.weighted)
        return func(*args, **kwargs)

    def hidden(self) -> int:
        return sum(1 for before in self.calls if before < self.weighted)


def _logits(out):
    return out[0] if isinstance(out, tuple) else getattr(out, "logits", out)


def _check(model: nn.Module, size: int) -> None:
    torch.manual_seed(0)
    model.train()
    x, y = torch.randn(2, 3, size, size), torch.tensor([0, 1])
    counter = _Count(list(model.parameters()))
    with counter:
        model(x)
    expected = counter.hidden()
    js = Jumpstart(model)
    try:
        loss = nn.functional.cross_entropy(_logits(model(x)), y) + 1e-3 * js.penalty()
        penalized = len(js.deficits())
        assert torch.isfinite(loss)
        loss.backward()
        torch.optim.SGD(model.parameters(), lr=1e-3).step()
    finally:
        js.remove()
    assert expected > 0
    assert penalized == expected, (
        f"{type(model).__name__}: {penalized} layers penalized, {expected} hidden activation "
        f"calls counted independently\n{js.summary()}")


@pytest.mark.parametrize("name", tvm.list_models(module=tvm))
def test_torchvision_model(name):
    model = tvm.get_model(name, weights=None, **TV_KWARGS.get(name, {}))
    _check(model, TV_SIZE.get(name, 64))


@pytest.mark.parametrize("name", TIMM)
def test_timm_family(name):
    model = timm.create_model(name, pretrained=False, num_classes=10)
    _check(model, TIMM_SIZE.get(name, 64))
