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

import functools
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.module import (register_module_forward_hook,
                                     register_module_forward_pre_hook)
from torch.overrides import TorchFunctionMode

from .activations import (CLASSES, FUNCTIONS, KINDS, kind_of_module, pieces_of,
                          post_activation)

Tap = Callable[[str, Tensor], None]

#: the activation module classes jumpstart knows (:mod:`~jumpstart.core.activations`);
#: with ``activations=None`` modules are also matched by behaviour
HIDDEN_ACTIVATIONS: tuple[type[nn.Module], ...] = CLASSES
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
    pieces: tuple[tuple[float, int], ...]
    post: Callable[[Tensor], Tensor]


def _functional_post(kind: str, args: tuple, kwargs: dict) -> Callable[[Tensor], Tensor]:
    """``f(g)`` of a functional call, out of place, with the call's parameters."""
    if kind == "leaky_relu":
        slope = args[1] if len(args) > 1 else kwargs.get("negative_slope", 0.01)
        return lambda g: F.leaky_relu(g, slope)
    if kind == "prelu":
        weight = args[1] if len(args) > 1 else kwargs["weight"]
        return lambda g: F.prelu(g, weight)
    if kind == "hardtanh":
        (lo, _), (hi, _), _ = pieces_of(kind, None, args, kwargs)
        return lambda g: F.hardtanh(g, lo, hi)
    if kind == "gelu":
        approximate = kwargs.get("approximate", args[1] if len(args) > 1 else "none")
        return lambda g: F.gelu(g, approximate=approximate)
    return KINDS[kind].reference


class _Tapping(threading.local):
    """How deep this thread is inside taps (any instance's): a tap's own
    torch calls (deficits, status) are never activations of the model.
    Set per thread in ``__init__`` (not a class default): a forward traced by
    ``torch.compile`` before any eager one would otherwise guard on the
    attribute's absence and fail that guard in the same frame."""

    def __init__(self) -> None:
        self.depth = 0


_TAPPING = _Tapping()


class _Functional(TorchFunctionMode):
    """Sees every torch function a forward calls (while ``model``'s forward
    runs): taps the functional activations no hooked module covers, and
    follows the last producer op (``F.linear``, ``F.conv2d``, norms) for
    their unit axis."""

    def __init__(self, owner: "PreActivationHooks") -> None:
        super().__init__()
        self.owner = owner
        self.producer: tuple[str, int] | None = None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        owner = self.owner
        kind = None if _TAPPING.depth else FUNCTIONS.get(func)
        if kind is not None and args and isinstance(args[0], Tensor) and args[0].dim() >= 2:
            owner._functional_call(func, kind, args, kwargs, self.producer)
        elif func in UNSUPPORTED and not _TAPPING.depth:
            owner.unhooked[func.__name__] = owner.unhooked.get(func.__name__, 0) + 1
        out = func(*args, **kwargs)
        if func in _WEIGHTED_OPS:
            owner._weighted_ops += 1
        axis = _PRODUCER_OPS.get(func)
        if axis is not None and isinstance(out, Tensor) and out.dim() >= 2:
            self.producer = (axis, out.shape[1] if axis == "first" else out.shape[-1])
        return out


#: activation functions jumpstart has no regions for: counted, never hooked
UNSUPPORTED = frozenset({F.elu, F.selu, F.celu, F.mish, F.softplus, torch.tanh, Tensor.tanh})
#: ops that apply weights: an activation after the last of them feeds no hidden layer
_WEIGHTED_OPS = frozenset({F.linear, F.bilinear, F.conv1d, F.conv2d, F.conv3d,
                           F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d,
                           torch.matmul, Tensor.__matmul__, Tensor.__rmatmul__, Tensor.matmul,
                           torch.mm, Tensor.mm, torch.bmm, Tensor.bmm, torch.addmm,
                           torch.baddbmm, torch.addbmm, torch.einsum})
_PRODUCER_OPS = {F.linear: "last", F.layer_norm: "last", F.embedding: "last",
                 F.conv1d: "first", F.conv2d: "first", F.conv3d: "first",
                 F.batch_norm: "first", F.group_norm: "first", F.instance_norm: "first"}


class PreActivationHooks:
    """Calls ``tap(layer_name, g)`` for every hidden pre-activation ``g``.

    ``g`` has shape ``(N, C, *rest)``, its units ``C`` at dim 1: the hooked
    tensor with its unit axis moved there (a view; see the module docstring;
    with ``move_units=False`` the hooked tensor as it is).
    ``layer_name`` is the module's qualified name, with ``"#k"`` appended for
    its k-th call (k >= 1) within one forward pass; a functional activation
    (``F.relu(x)`` in a forward) is named after the module whose forward
    called it and the function: ``"block.relu()"`` (``"relu()"`` in the
    model's own forward). ``on_start()`` runs before each forward of
    ``model`` and ``on_end(output)`` after it. :attr:`seen` maps each layer
    name to its :class:`HookedLayer`.

    Which activations (``activations=None``, the default): every module of a
    kind in :mod:`~jumpstart.core.activations` (by class, or by behaviour:
    timm's ``GELU`` counts), and every functional activation of those kinds,
    captured with a ``TorchFunctionMode`` during the model's forward. The mode
    runs in the first forward; it stays on only if that forward called a
    functional activation (otherwise the hooks cost one Python call per
    activation module). With ``hidden_only`` (the Jumpstart penalty), an
    activation after which the forward applies no more weights (no
    ``F.linear``, convolution or matmul; squeezenet's ReLU on the class maps,
    which reach the logits through pooling only) is not hidden and is left
    out: found at the end of the first forward, whose taps of such layers
    the owner drops (:attr:`dropped`). After the first forward, a warning lists activation calls seen but
    not hooked (ELU, SELU, CELU, Mish, Softplus, tanh; and, with explicit
    ``activations``, functional activations).

    Args:
        activations: ``None`` (above), or a tuple of module types: exactly
            the modules of those types (no functional capture).
        layers: instead, modules whose *output* is a pre-activation.
        unit_dim: ``None`` (the rule of the module docstring), an ``int``
            for every layer, or a dict from module name (without ``"#k"``)
            to ``int`` for some (the rest by the rule). Negative values count
            from the end.
        move_units: ``False``: ``tap`` receives the hooked tensor itself,
            its unit axis ``seen[layer_name].unit_dim`` (set before the
            tap runs), not a view with that axis moved to dim 1.

    Raises:
        ValueError: ``activations`` is empty or holds a non-module type; a
            ``layers`` entry is not a submodule of ``model``; no module to
            hook is found (and, with ``activations=None``, the first forward
            calls no functional activation either); ``unit_dim`` names a
            module not hooked or is not an integer; at forward time, a
            ``unit_dim`` outside the tensor's dims.
    """

    def __init__(
        self,
        model: nn.Module,
        tap: Tap,
        *,
        activations: Iterable[type] | None = None,
        layers: Sequence[nn.Module] | None = None,
        on_start: Callable[[], None] | None = None,
        on_end: Callable[[object], None] | None = None,
        unit_dim: int | dict[str, int] | None = None,
        hidden_only: bool = False,
        move_units: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        self._tap = tap
        self._hidden_only = hidden_only
        self._move_units = move_units
        self._calls: dict[str, int] = {}
        self._dims: dict[str, int] = {}
        self.seen: dict[str, HookedLayer] = {}
        #: activation calls seen in the first forward but not hooked, by name
        self.unhooked: dict[str, int] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._names = {id(m): n for n, m in model.named_modules()}
        self._auto = layers is None and activations is None
        kinds: dict[str, str] = {}
        if layers is not None:
            layers = list(layers)
            if not layers:
                raise ValueError("layers must name at least one module; got an empty list")
            for i, m in enumerate(layers):
                if id(m) not in self._names:
                    raise ValueError(
                        f"layers[{i}] ({type(m).__name__}) is not a submodule of the model"
                    )
            targets = [(self._names[id(m)], m) for m in layers]
        else:
            if activations is not None:
                activations = tuple(activations)
                if not activations or not all(
                    isinstance(t, type) and issubclass(t, nn.Module) for t in activations
                ):
                    raise ValueError(f"activations must be a non-empty tuple of nn.Module "
                                     f"types; got {activations!r}")
            targets = []
            for n, m in model.named_modules():
                kind = kind_of_module(m) if activations is None or isinstance(m, activations) \
                    else None
                if activations is not None and isinstance(m, activations):
                    kind = kind or "relu"  # a type the user named: ReLU regions
                if kind is not None:
                    targets.append((n, m))
                    kinds[n] = kind
            if not targets and not self._auto:
                raise ValueError(
                    f"no activation module of type ({_describe(activations)}) found in "
                    f"{type(model).__name__}; pass activations=(...) with the model's "
                    "activation types, leave activations unset to capture functional "
                    "activations, or pass layers=[...]"
                )
        self.module_names = [n for n, _ in targets]
        self._hooked_names = set(self.module_names)
        overrides = unit_dim if isinstance(unit_dim, dict) else {}
        for key, value in ({"unit_dim": unit_dim} if not overrides else overrides).items():
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError(f"unit_dim must be an integer or a dict of integers; "
                                 f"got {value!r} for {key}")
        unknown = {n for n in overrides if n not in self.module_names
                   and not (self._auto and n.endswith("()"))}  # functional: seen later
        if unknown:
            raise ValueError(f"unit_dim names module(s) not hooked: {sorted(unknown)}; "
                             f"hooked: {', '.join(self.module_names)}")
        self._overrides, self._unit_dim_all = overrides, None if overrides else unit_dim
        producer = None
        producers: dict[str, tuple[str, int] | None] = {}
        for n, m in model.named_modules():  # the nearest preceding producer
            producer = feature_axis(m) or producer
            producers[n] = producer
        self._rule: dict[str, tuple] = {}
        for name, module in targets:
            if layers is not None:
                what, where = f"output of {type(module).__name__}", feature_axis(module)
                pieces = KINDS["relu"].pieces
                hook = self._make_output_hook(name)
                self._handles.append(module.register_forward_hook(hook))
            else:
                what, where = type(module).__name__, producers.get(name)
                pieces = pieces_of(kinds[name], module)
                hook = self._make_input_hook(name)
                self._handles.append(module.register_forward_pre_hook(hook))
            self._rule[name] = (what, where, pieces, self._fixed(name),
                                functools.partial(post_activation, None if layers is not None
                                                  else module))
        self._mode: _Functional | None = None
        self._discover = layers is None  # the first forward runs the mode
        self._stack: list[str] = []
        self._record: list | None = None  # the first forward's taps
        self._weighted_ops = 0
        self._excluded: set[str] = set()
        #: layers the last forward tapped that turned out not hidden (``hidden_only``;
        #: only ever in the first forward): the tap's owner drops them from that pass
        self.dropped: set[str] = set()
        self._has_functional = False  # a functional activation was hooked

        def start(_module, _args):
            self._calls.clear()
            self._exit_mode()
            # a traced forward hooks modules only (the mode and global hooks do not trace)
            if not torch.compiler.is_compiling():
                if self._discover or self._has_functional:
                    self._enter_mode()
                if self._discover:
                    self._record, self._weighted_ops = [], 0
            if on_start is not None:
                on_start()

        def end(_module, _args, out):
            self._exit_mode()
            self.dropped = set()
            if not torch.compiler.is_compiling():
                if sys.exc_info()[1] is not None:  # the forward raised: the pass is void
                    self._record = None
                    return
                if self._discover:
                    self._end_discovery(type(model).__name__)
            if on_end is not None:
                on_end(out)

        self._handles.append(model.register_forward_pre_hook(start))
        self._handles.append(model.register_forward_hook(end, always_call=True))

    def _end_discovery(self, model_name: str) -> None:
        """After the first forward: drop the layers no weights follow
        (``hidden_only``), require a layer, list activation calls not hooked."""
        self._discover = False
        record, self._record = self._record, None
        for base, layer, ops in record:
            if ops == self._weighted_ops and self._hidden_only:  # no weight after it
                self._excluded.add(layer)  # that call only: an earlier call may be hidden
                self.dropped.add(layer)
                self.seen.pop(layer, None)
        if not self.seen and self._auto:
            raise ValueError(f"no activation found in {model_name}: no module or functional "
                             "call of a known kind (ReLU, ReLU6, LeakyReLU, PReLU, Hardtanh, "
                             "Hardswish, GELU, SiLU); pass activations=(...) or layers=[...]")
        if self.unhooked:
            warnings.warn("activation calls seen but not hooked (no dead/linear regions for "
                          "them, or not among activations=...): "
                          + ", ".join(f"{k} x{v}" for k, v in self.unhooked.items()),
                          stacklevel=3)

    def _fixed(self, name: str) -> int | None:
        return self._overrides.get(name.split("#")[0], self._unit_dim_all)

    # -- functional activations ------------------------------------------------------------
    def _enter_mode(self) -> None:
        self._mode = _Functional(self)
        self._mode.__enter__()
        self._stack.clear()
        def enter(module, _args) -> None:
            self._stack.append(self._names.get(id(module), "?"))

        def leave(_module, _args, _out) -> None:  # returns None: the output stays
            if self._stack:
                self._stack.pop()

        self._global = [register_module_forward_pre_hook(enter),
                        register_module_forward_hook(leave, always_call=True)]

    def _exit_mode(self) -> None:
        if self._mode is not None:
            for h in self._global:
                h.remove()
            self._mode.__exit__(None, None, None)
            self._mode = None

    def _functional_call(self, func, kind: str, args: tuple, kwargs: dict,
                         producer: tuple[str, int] | None) -> None:
        enclosing = self._stack[-1] if self._stack else ""
        if enclosing in self._hooked_names:
            return  # a hooked activation module's own call
        if not self._auto:
            name = getattr(func, "__name__", kind)
            self.unhooked[name] = self.unhooked.get(name, 0) + 1
            return
        self._has_functional = True  # later forwards keep the mode on
        base = f"{enclosing}.{kind}()" if enclosing else f"{kind}()"
        # each call its own producer and parameters (two F.hardtanh calls of one
        # forward may clip differently, follow a conv and a Linear)
        self._emit(base, args[0], lambda: (
            f"{kind} (functional)", producer, pieces_of(kind, None, args, kwargs),
            self._fixed(base), _functional_post(kind, args, kwargs)))

    # -- naming and unit axes --------------------------------------------------------------
    def new_pass(self) -> None:
        """Start counting calls afresh (the next call of each module is its
        first): for a pass that does not begin with ``model``'s forward."""
        self._calls.clear()

    def _name(self, name: str) -> str:
        k = self._calls.get(name, 0)
        self._calls[name] = k + 1
        return name if k == 0 else f"{name}#{k}"

    def _unit_dim(self, base: str, layer: str, g: Tensor, rule: Callable | None) -> int:
        """The unit axis of layer ``layer``'s tensor ``g`` (decided on its first
        call), by module ``base``'s rule or, for a functional call, ``rule()``."""
        dim = self._dims.get(layer)
        if dim is not None:
            return dim
        what, where, pieces, fixed, post = self._rule[base] if rule is None else rule()
        guessed = False
        if fixed is not None:
            if not -g.dim() <= fixed < g.dim():
                raise ValueError(f"unit_dim {fixed} is outside the {g.dim()} dims of layer "
                                 f"{layer}'s pre-activation (shape {tuple(g.shape)})")
            dim = fixed % g.dim()
        elif g.dim() <= 2:
            dim = 1
        elif where is not None and where[0] == "last" and where[1] in (-1, g.shape[-1]):
            dim = g.dim() - 1
        else:
            dim = 1
            guessed = where is None or where[1] not in (-1, g.shape[1])
        self._dims[layer] = dim
        self.seen[layer] = HookedLayer(what, dim, int(g.shape[dim]), tuple(g.shape), guessed,
                                       pieces, post)
        return dim

    def _emit(self, base: str, g: Tensor, rule: Callable | None = None) -> None:
        layer = self._name(base)  # counted even when excluded: later calls keep their names
        if layer in self._excluded:
            return
        dim = self._unit_dim(base, layer, g, rule)
        if self._record is not None:
            self._record.append((base, layer, self._weighted_ops))
        _TAPPING.depth += 1  # inline, not a context manager: this runs on every call
        try:
            self._tap(layer, g if dim == 1 or not self._move_units else g.movedim(dim, 1))
        finally:
            _TAPPING.depth -= 1

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
        self._exit_mode()
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

    def __init__(self, model: nn.Module, *, activations: Iterable[type] | None = None,
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
