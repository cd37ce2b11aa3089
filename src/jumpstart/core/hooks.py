"""Finding and tapping hidden-layer pre-activations of any ``nn.Module``.

One place for the rule both the regularizer and the status use (DESIGN.md,
"The method in one screen"): a hidden layer's pre-activation is the *input* of
every call of a module whose type is in ``activations`` (a module called k
times per forward gives k layers, in call order), or, when ``layers`` is given,
the *output* of each listed module. The network output (logits) is never a
hidden layer.

**Unit axis.** The units of a pre-activation are the features of the layer
that produced it: the channels (dim 1) of a convolution or a BatchNorm in
either memory format, the last dim of a ``Linear`` or ``LayerNorm`` output of
any rank (``(N, T, D)``: units are the ``D`` features, the ``T`` positions
reduce like spatial ones). The producer is found once, at hooking: for an
activation module, the nearest preceding module in registration order that
is one of :data:`CHANNEL_FIRST` or :data:`CHANNEL_LAST`; for a listed layer,
the layer itself. It is checked on the first call (its feature size must
match the tensor's size on that axis); a 2-dim tensor's units are dim 1.
When no producer is known or the size does not match, the units are dim 1
and the layer is marked ``guessed`` (:attr:`PreActivationHooks.seen`);
``unit_dim=`` overrides the rule. Every tap receives the tensor with its unit
axis moved to dim 1 (a view, no copy), so what follows reads ``(N, C, *rest)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

Tap = Callable[[str, Tensor], None]

#: the default activation module types whose inputs are the hidden
#: pre-activations, for :class:`~jumpstart.Jumpstart`,
#: :func:`~jumpstart.activation_status` and every technique
HIDDEN_ACTIVATIONS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.GELU)


#: modules whose output features are along dim 1 (channels in either memory format)
CHANNEL_FIRST: tuple[type[nn.Module], ...] = (
    nn.modules.conv._ConvNd, nn.modules.batchnorm._NormBase, nn.GroupNorm)
#: modules whose output features are along the last dim
CHANNEL_LAST: tuple[type[nn.Module], ...] = (nn.Linear, nn.Bilinear, nn.LayerNorm, nn.Embedding,
                                              *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()))


def _describe(types: Sequence[type]) -> str:
    return ", ".join(t.__name__ for t in types)


def feature_axis(module: nn.Module) -> tuple[str, int] | None:
    """``("first" | "last", size)``: where ``module``'s output features lie
    and how many there are, or ``None`` when ``module`` is neither of
    :data:`CHANNEL_FIRST` nor :data:`CHANNEL_LAST` (the size is ``-1`` when
    the module does not say it)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return "first", module.out_channels
    if isinstance(module, nn.modules.batchnorm._NormBase):
        return "first", module.num_features
    if isinstance(module, nn.GroupNorm):
        return "first", module.num_channels
    if isinstance(module, (nn.Linear, nn.Bilinear)):
        return "last", module.out_features
    if isinstance(module, nn.Embedding):
        return "last", module.embedding_dim
    if isinstance(module, CHANNEL_LAST):  # LayerNorm, RMSNorm
        shape = module.normalized_shape
        return "last", int(shape[-1]) if shape else -1
    return None


class HookedLayer(NamedTuple):
    """What was hooked for one hidden layer (one call of a module), from its
    first call: ``activation`` the module's type name (``"output of Linear"``
    for a listed layer), ``unit_dim`` the unit axis of the original tensor
    (non-negative), ``units`` its size there, ``shape`` the tensor's shape
    on that call, ``guessed`` whether the unit axis fell back to dim 1
    because no producing layer matched (see the module docstring)."""

    activation: str
    unit_dim: int
    units: int
    shape: tuple[int, ...]
    guessed: bool


class PreActivationHooks:
    """Calls ``tap(layer_name, g)`` for every hidden pre-activation ``g``.

    ``g`` has shape ``(N, C, *rest)``, its units ``C`` at dim 1: the hooked
    tensor with its unit axis moved there (a view; see the module docstring).
    ``layer_name`` is the module's qualified name, with ``"#k"`` appended for
    its k-th call (k >= 1) within one forward pass. ``on_start()`` runs
    before each forward of ``model`` and ``on_end(output)`` after it.
    :attr:`seen` maps each layer name to its :class:`HookedLayer`.

    Args:
        unit_dim: ``None`` (the rule of the module docstring), an ``int``
            for every layer, or a dict from module name (without ``"#k"``)
            to ``int`` for some (the rest by the rule). Negative values count
            from the end.

    Raises:
        ValueError: ``activations`` is empty or holds a non-module type; a
            ``layers`` entry is not a submodule of ``model``; no module to
            hook is found; ``unit_dim`` names a module not hooked or is not
            an integer; at forward time, a ``unit_dim`` outside the tensor's
            dims.
    """

    def __init__(
        self,
        model: nn.Module,
        tap: Tap,
        *,
        activations: Iterable[type] = HIDDEN_ACTIVATIONS,
        layers: Sequence[nn.Module] | None = None,
        on_start: Callable[[], None] | None = None,
        on_end: Callable[[object], None] | None = None,
        unit_dim: int | dict[str, int] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        self._tap = tap
        self._calls: dict[str, int] = {}
        self._dims: dict[str, int] = {}
        self.seen: dict[str, HookedLayer] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        names = {id(m): n for n, m in model.named_modules()}
        if layers is not None:
            layers = list(layers)
            if not layers:
                raise ValueError("layers must name at least one module; got an empty list")
            for i, m in enumerate(layers):
                if id(m) not in names:
                    raise ValueError(
                        f"layers[{i}] ({type(m).__name__}) is not a submodule of the model"
                    )
            targets = [(names[id(m)], m) for m in layers]
        else:
            activations = tuple(activations)
            if not activations or not all(
                isinstance(t, type) and issubclass(t, nn.Module) for t in activations
            ):
                raise ValueError(
                    f"activations must be a non-empty tuple of nn.Module types; got {activations!r}"
                )
            targets = [(n, m) for n, m in model.named_modules() if isinstance(m, activations)]
            if not targets:
                raise ValueError(
                    f"no activation module of type ({_describe(activations)}) found in "
                    f"{type(model).__name__}; pass activations=(...) with the model's "
                    "activation types, or layers=[...] for functional activations"
                )
        self.module_names = [n for n, _ in targets]
        overrides = unit_dim if isinstance(unit_dim, dict) else {}
        for key, value in ({"unit_dim": unit_dim} if not overrides else overrides).items():
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError(f"unit_dim must be an integer or a dict of integers; "
                                 f"got {value!r} for {key}")
        unknown = set(overrides) - set(self.module_names)
        if unknown:
            raise ValueError(f"unit_dim names module(s) not hooked: {sorted(unknown)}; "
                             f"hooked: {', '.join(self.module_names)}")
        producer = None
        kinds: dict[str, tuple[str, int] | None] = {}
        for n, m in model.named_modules():  # the nearest preceding producer
            producer = feature_axis(m) or producer
            kinds[n] = producer
        self._rule = {}
        for name, module in targets:
            fixed = overrides.get(name, unit_dim if not overrides else None)
            if layers is not None:
                what, kind = f"output of {type(module).__name__}", feature_axis(module)
                hook = self._make_output_hook(name)
                self._handles.append(module.register_forward_hook(hook))
            else:
                what, kind = type(module).__name__, kinds.get(name)
                hook = self._make_input_hook(name)
                self._handles.append(module.register_forward_pre_hook(hook))
            self._rule[name] = (what, kind, fixed)

        def start(_module, _args):
            self._calls.clear()
            if on_start is not None:
                on_start()

        self._handles.append(model.register_forward_pre_hook(start))
        if on_end is not None:
            self._handles.append(model.register_forward_hook(lambda _m, _a, out: on_end(out)))

    def new_pass(self) -> None:
        """Start counting calls afresh (the next call of each module is its
        first): for a pass that does not begin with ``model``'s forward."""
        self._calls.clear()

    def _name(self, name: str) -> str:
        k = self._calls.get(name, 0)
        self._calls[name] = k + 1
        return name if k == 0 else f"{name}#{k}"

    def _unit_dim(self, module_name: str, layer: str, g: Tensor) -> int:
        """The unit axis of layer ``layer``'s tensor ``g`` (decided on its first call)."""
        dim = self._dims.get(layer)
        if dim is not None:
            return dim
        what, kind, fixed = self._rule[module_name]
        guessed = False
        if fixed is not None:
            if not -g.dim() <= fixed < g.dim():
                raise ValueError(f"unit_dim {fixed} is outside the {g.dim()} dims of layer "
                                 f"{layer}'s pre-activation (shape {tuple(g.shape)})")
            dim = fixed % g.dim()
        elif g.dim() <= 2:
            dim = 1
        elif kind is not None and kind[0] == "last" and kind[1] in (-1, g.shape[-1]):
            dim = g.dim() - 1
        else:
            dim = 1
            guessed = kind is None or kind[1] not in (-1, g.shape[1])
        self._dims[layer] = dim
        self.seen[layer] = HookedLayer(what, dim, int(g.shape[dim]), tuple(g.shape), guessed)
        return dim

    def _emit(self, module_name: str, g: Tensor) -> None:
        layer = self._name(module_name)
        dim = self._unit_dim(module_name, layer, g)
        self._tap(layer, g if dim == 1 else g.movedim(dim, 1))

    def _make_input_hook(self, name: str):
        def hook(_module, args):
            if args and isinstance(args[0], Tensor):
                self._emit(name, args[0])

        return hook

    def _make_output_hook(self, name: str):
        def hook(_module, _args, output):
            if isinstance(output, Tensor):
                self._emit(name, output)

        return hook

    def summary(self) -> str:
        """One line per hidden layer seen so far: name, activation, unit axis,
        units, and the tensor's shape (``guessed`` where the unit axis fell
        back to dim 1)."""
        if not self.seen:
            return "no layer seen yet: run a forward pass first"
        rows = [("layer", "activation", "unit dim", "units", "shape")]
        for name, h in self.seen.items():
            rows.append((name, h.activation, f"{h.unit_dim}{' (guessed)' if h.guessed else ''}",
                         str(h.units), "x".join(map(str, h.shape))))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                         for r in rows)

    def remove(self) -> None:
        """Detach every hook; idempotent."""
        for h in self._handles:
            h.remove()
        self._handles.clear()


class ActivationRecorder:
    """Keeps the hidden pre-activations of the last training forward of ``model``.

    After each forward made in training mode with gradients on, :attr:`last`
    holds ``(layer name, g)`` pairs in call order, ``g`` ``(N, C, *rest)``
    (units at dim 1, ``unit_dim`` as :class:`PreActivationHooks`) detached (no graph is
    kept alive), as :class:`PreActivationHooks` finds them. Eval-mode and
    ``no_grad`` forwards leave it unchanged. The trainers use it for
    techniques that set ``needs_activations``.

    Raises:
        ValueError: as :class:`PreActivationHooks` (no activation found).
    """

    def __init__(self, model: nn.Module, *, activations: Iterable[type] = HIDDEN_ACTIVATIONS,
                 layers: Sequence[nn.Module] | None = None,
                 unit_dim: int | dict[str, int] | None = None) -> None:
        self.last: list[tuple[str, Tensor]] = []
        self._pending: list[tuple[str, Tensor]] | None = None
        self._model = model

        def start() -> None:
            collecting = model.training and torch.is_grad_enabled()
            self._pending = [] if collecting else None

        def tap(name: str, g: Tensor) -> None:
            if self._pending is not None:
                self._pending.append((name, g.detach()))

        def end(_output) -> None:
            if self._pending:
                self.last = self._pending
            self._pending = None

        self._hooks = PreActivationHooks(model, tap, activations=activations, layers=layers,
                                         on_start=start, on_end=end, unit_dim=unit_dim)

    def remove(self) -> None:
        """Detach the hooks; idempotent."""
        self._hooks.remove()
