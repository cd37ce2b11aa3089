"""Unit groups of any model from Torch-Pruning's dependency graph.

A *unit group* is the set of channels that must be removed together because
layers are coupled: a conv's output channel with its BatchNorm entry and the
next conv's input channel; a residual stream's channel with every block that
writes or reads it; a concatenated feature map's channel with every later
layer that reads the concatenation. Torch-Pruning
(``torch_pruning.DependencyGraph``, Fang et al., "DepGraph: Towards Any
Structural Pruning", CVPR 2023) traces the model once and gives, for a root
module's output channels, every coupled ``(module, indices)`` pair, with the
root channel each index comes from. It is an optional dependency:
``pip install 'jumpstart[surgery]'``.

What is ours, not Torch-Pruning's: which channels are dead (every module that
*reads* the group sees exactly zero there on the data, :meth:`UnitGraph.dead`),
the refusal of groups whose removal could not be exact (a LayerNorm or
GroupNorm over the channels, layer-scale parameters, attention's q/k/v split:
:data:`EXACT_OPS`), the check that the logits did not move after each group
(undone and reported when they did), and the optimizer state of the
survivors (:func:`jumpstart.optim.move_state`; Torch-Pruning re-creates the
parameters and does not touch an optimizer).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd

from ..optim import move_state

#: the graph node types a group may contain for its removal to be exact:
#: weighted layers (``CONV``, ``DEPTHWISE_CONV``, ``LINEAR``), per-channel
#: BatchNorm (``BN``), and ops that move channels without mixing them
#: (``ELEMENTWISE``: activations, residual adds; ``RESHAPE``: flatten;
#: ``CONCAT``, ``SPLIT``). Any other (``LN``, ``GN``, ``IN``, ``PARAMETER``,
#: ``UNBIND``, ``EXPAND``, ``SLICE``, ``MHA``, ``EMBED``, ``PRELU``, ...)
#: refuses the group.
EXACT_OPS = ("CONV", "DEPTHWISE_CONV", "LINEAR", "BN", "ELEMENTWISE", "RESHAPE", "CONCAT",
             "SPLIT")
#: substrings of the autograd op (or module class) names of activations
_ACTIVATION_NAMES = ("relu", "hardtanh", "gelu", "silu", "swish", "elu", "mish", "sigmoid",
                     "tanh", "softplus")
_SHAPE_ATTRS = ("in_channels", "out_channels", "in_features", "out_features", "num_features",
                "groups")


def require_torch_pruning():
    """The ``torch_pruning`` module.

    Raises:
        ImportError: not installed (the message says how).
    """
    try:
        import torch_pruning
    except ImportError as err:  # pragma: no cover - exercised where it is absent
        raise ImportError("surgery on a model outside the toolkit's own nets needs "
                          "Torch-Pruning's dependency graph: pip install 'jumpstart[surgery]'"
                          ) from err
    return torch_pruning


@dataclass
class UnitGroup:
    """One root module's output channels and every module coupled to them.

    Attributes:
        name: qualified name of the root (a Conv2d or Linear whose output
            channels are the group's units; ``width`` of them).
        root: the root module.
        width: number of units (root output channels).
        readers: ``(name, module, positions, units)`` per module that reads
            the units: a conv or linear layer's input channels (a depthwise
            conv's too), ``positions`` ``(K,)`` the input channel (dim 1 of a
            conv's input, the last dim of a linear layer's) and ``units``
            ``(K,)`` the unit each position carries (a flatten gives one unit
            several positions).
        writers: ``(name, module, positions, units)`` per module whose
            output channels or entries carry the units (the root, BatchNorms,
            depthwise convs, the other branches of a residual add; a
            BatchNorm over a concatenation holds a unit at an offset position).
        activations: the activation ops the channels pass through (autograd
            names such as ``ReluBackward0``, or module class names).
        refusal: why removing units of this group could not be exact
            (``None``: it can be).
    """

    name: str
    root: nn.Module
    width: int
    readers: list[tuple[str, nn.Module, Tensor, Tensor]]
    writers: list[tuple[str, nn.Module, Tensor, Tensor]]
    activations: tuple[str, ...] = ()
    refusal: str | None = None

    @property
    def simple(self) -> bool:
        """One weighted writer (the root, with at most one BatchNorm), an
        activation, and readers that read each unit at one input channel: a
        hidden layer :class:`~jumpstart.surgery.HiddenLayer` can describe (a
        linear bottleneck, with no activation, is not one)."""
        return (self.refusal is None and len(self.readers) > 0 and len(self.activations) > 0
                and all(len(p) == self.width and bool((p == u).all())
                        for _, m, p, u in self.readers)
                and not any(_depthwise(m) for _, m, _, _ in self.readers)
                and len(self.writers) <= 2)


def _depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups == m.out_channels and m.out_channels > 1


@dataclass
class UnitGraph:
    """The unit groups of ``model``, traced once on ``example_inputs``.

    Args:
        model: any ``nn.Module`` whose forward takes one tensor.
        example_inputs: ``(N, ...)`` a batch the model accepts (``N >= 1``).

    Attributes:
        groups: one :class:`UnitGroup` per root (every Conv2d and Linear with
            prunable output channels but the model's output layer), input to
            output.

    Raises:
        ImportError: Torch-Pruning not installed.
        ValueError: ``example_inputs`` not a tensor of at least one sample.
    """

    model: nn.Module
    example_inputs: Tensor
    groups: list[UnitGroup] = field(init=False)

    def __post_init__(self) -> None:
        tp = require_torch_pruning()
        if not isinstance(self.example_inputs, Tensor) or self.example_inputs.shape[0] < 1:
            raise ValueError("example_inputs must be a tensor of at least one sample")
        self.names = {m: n for n, m in self.model.named_modules()}
        self.example_inputs = self.example_inputs.to(model_device(self.model))
        was = self.model.training
        self.model.eval()
        try:
            with torch.enable_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # its notes on unwrapped parameters
                self.dg = tp.DependencyGraph().build_dependency(
                    self.model, example_inputs=self.example_inputs, verbose=False)
        finally:
            self.model.train(was)
        groups = [self._group(g) for g in self.dg.get_all_groups()]
        order = self._call_order()
        self.groups = sorted((g for g in groups if g is not None),
                             key=lambda g: order.get(g.root, len(order)))

    def _call_order(self) -> dict[nn.Module, int]:
        order: dict[nn.Module, int] = {}

        def seen(module, inputs) -> None:
            order.setdefault(module, len(order))

        handles = [m.register_forward_pre_hook(seen) for m in self.model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        try:
            self.logits(self.example_inputs[:1])
        finally:
            for h in handles:
                h.remove()
        return order

    def _items(self, group):
        for item in group.items:
            dep = item.dep
            out = self.dg.is_out_channel_pruning_fn(dep.handler)
            yield dep.target.module, dep.target.type.name, out, item.idxs, item.root_idxs

    def _group(self, group) -> UnitGroup | None:
        root = group[0].dep.target.module
        readers, writers, other, acts = [], [], set(), []
        for module, kind, out, idxs, roots in self._items(group):
            if kind not in EXACT_OPS:
                other.add(kind)
            if kind == "ELEMENTWISE":
                op = str(getattr(module, "_grad_fn", type(module).__name__))
                if any(a in op.lower() for a in _ACTIVATION_NAMES):
                    acts.append(op)
            if not isinstance(module, nn.Module) or kind not in ("CONV", "DEPTHWISE_CONV",
                                                                   "LINEAR", "BN"):
                continue
            entry = (self.names.get(module, kind), module, torch.as_tensor(idxs, dtype=torch.long),
                     torch.as_tensor(roots, dtype=torch.long))
            if not out or kind == "DEPTHWISE_CONV":
                readers.append(entry)
            if out:
                writers.append(entry)
        if not readers:
            return None  # the output layer: its units are the logits
        refusal = (f"its channels pass through {', '.join(sorted(other))}, which mix or "
                   "scale them (removal would not be exact)") if other else None
        width = int(root.weight.shape[0])
        return UnitGroup(self.names[root], root, width, readers, writers, tuple(acts), refusal)

    def norm_after(self, module: nn.Module) -> nn.Module | None:
        """The BatchNorm that normalizes ``module``'s output directly (its
        only consumer in the traced graph), or ``None``."""
        node = self.dg.module2node.get(module)
        outs = node.outputs if node is not None else []
        if len(outs) == 1 and isinstance(outs[0].module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            return outs[0].module
        return None

    @torch.no_grad()
    def dead(self, data: Tensor, *, batch_size: int = 256) -> dict[str, Tensor]:
        """Per unit group (by root name): the units that every reader sees
        as exactly 0 on every sample and position of ``data`` (one no-grad
        forward in eval mode). A dead ReLU unit outputs 0 and is read as 0
        wherever it goes; removing such units leaves the logits on ``data``
        unchanged. Refused groups are left out.

        Args:
            data: ``(N, ...)`` inputs.
            batch_size: samples per forward.

        Returns:
            root name -> ``(K,)`` sorted unit indices (``K`` may be 0).
        """
        peak: dict[nn.Module, Tensor] = {}

        def hook(module, inputs):
            x = inputs[0].detach()
            dims = [d for d in range(x.dim()) if d != (1 if isinstance(module, _ConvNd)
                                                        else x.dim() - 1)]
            m = x.abs().amax(dim=dims).float()
            peak[module] = m if module not in peak else torch.maximum(peak[module], m)

        modules = {m for g in self.groups if g.refusal is None for _, m, _, _ in g.readers}
        handles = [m.register_forward_pre_hook(hook) for m in modules]
        was = self.model.training
        self.model.eval()
        device = model_device(self.model)
        try:
            for x in data.split(batch_size):
                self.model(x.to(device))
        finally:
            self.model.train(was)
            for h in handles:
                h.remove()
        out = {}
        for g in self.groups:
            if g.refusal is not None:
                continue
            live = torch.zeros(g.width, dtype=torch.bool)
            for _, module, positions, units in g.readers:
                live[units[peak[module].cpu()[positions] > 0]] = True
            out[g.name] = (~live).nonzero().flatten()
        return out

    def remove(self, group: UnitGroup, units: Tensor, *,
               check: tuple[Tensor, Tensor] | None = None, optimizer=None,
               tolerance: float = 1e-5) -> str | None:
        """Remove ``units`` of ``group`` and every coupled channel, in place.

        With ``check = (inputs (M, ...), logits (M, K))`` (the logits to
        keep, e.g. :meth:`logits` of the model before any removal), the
        logits after are compared with them (eval mode); a change above
        ``tolerance`` relative to ``max(1, max |logit|)`` undoes the removal
        (the modules get their old parameters back). Given an ``optimizer``, each replaced parameter
        takes the old one's place with the survivors' state
        (:func:`jumpstart.optim.move_state`), once the check has passed.

        Returns:
            ``None`` when removed, else why not (the removal was undone).

        Raises:
            ValueError: a refused group, a unit out of range or repeated, or
                every unit of the group.
        """
        if group.refusal is not None:
            raise ValueError(f"group {group.name}: {group.refusal}")
        units = torch.as_tensor(units, dtype=torch.long).flatten()
        if len(units.unique()) != len(units) or (len(units) and not (
                0 <= int(units.min()) and int(units.max()) < group.width)):
            raise ValueError(f"group {group.name}: units must be distinct, in [0, "
                             f"{group.width}); got {units.tolist()}")
        if len(units) >= group.width:
            raise ValueError(f"group {group.name}: a group keeps at least one unit")
        if not len(units):
            return None
        tp_group = self.dg.get_pruning_group(group.root, self.dg.get_pruner_of_module(
            group.root).prune_out_channels, idxs=units.tolist())
        touched, removed = {}, {}
        for module, kind, out, idxs, _ in self._items(tp_group):
            if not isinstance(module, nn.Module):
                continue
            if module not in touched:
                touched[module] = (dict(module._parameters), dict(module._buffers),
                                   {a: getattr(module, a) for a in _SHAPE_ATTRS
                                    if hasattr(module, a)})
            removed.setdefault((module, 0 if out else 1), set()).update(int(i) for i in idxs)
        tp_group.prune(record_history=False)
        if check is not None:
            inputs, before = check
            after = self.logits(inputs)
            moved = float((after - before).abs().max()) if after.shape == before.shape \
                else float("inf")
            if not moved <= tolerance * max(1.0, float(before.abs().max())):
                self._restore(touched)
                return (f"removing its units moved the logits by {moved:.3g} (relative "
                        f"tolerance {tolerance:g}); undone")
        if optimizer is not None:
            self._move_state(optimizer, touched, removed)
        return None

    @staticmethod
    def _restore(touched: dict) -> None:
        for module, (params, buffers, attrs) in touched.items():
            module._parameters.update(params)
            module._buffers.update(buffers)
            for a, v in attrs.items():
                setattr(module, a, v)

    @staticmethod
    def _move_state(optimizer, touched: dict, removed: dict) -> None:
        """Each changed parameter's survivors: along dim 0 the entries its
        module's output side kept, along dim 1 its input side's."""
        for module, (params, _, _) in touched.items():
            for name, old in params.items():
                new = module._parameters.get(name)
                if old is None or new is None or new is old or new.shape == old.shape:
                    continue
                changed = [d for d in range(old.dim()) if old.shape[d] != new.shape[d]]
                if len(changed) != 1:
                    raise RuntimeError(f"{name} of {type(module).__name__} changed in "
                                       f"{len(changed)} dims; cannot carry its state")
                dim = changed[0]
                gone = removed.get((module, dim), set())
                keep = torch.tensor([i for i in range(old.shape[dim]) if i not in gone],
                                    dtype=torch.long)
                if len(keep) != new.shape[dim]:
                    raise RuntimeError(f"{name} of {type(module).__name__}: {len(keep)} "
                                       f"entries kept along dim {dim}, {new.shape[dim]} left")
                move_state(optimizer, old, new, dim=dim, src=keep,
                           dst=torch.arange(len(keep)))

    def logits(self, x: Tensor) -> Tensor:
        """:func:`eval_logits` of the traced model."""
        return eval_logits(self.model, x)


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (CPU for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def eval_logits(model: nn.Module, x: Tensor, batch_size: int = 1024) -> Tensor:
    """``model``'s logits ``(M, K)`` on ``x`` ``(M, ...)``, float32 on the
    CPU: no-grad forwards of ``batch_size`` samples in eval mode (the
    model's mode is restored)."""
    was = model.training
    model.eval()
    device = model_device(model)
    try:
        with torch.no_grad():
            return torch.cat([model(b.to(device)).float().cpu() for b in x.split(batch_size)])
    finally:
        model.train(was)

