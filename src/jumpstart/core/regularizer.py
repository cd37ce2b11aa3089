"""Jumpstart regularization: the penalty ``lam * P(xi+, xi-, psi+, psi-)``.

CPAIOR 2022, Sec. 3, eq. (7); the aggregation ``"balanced"`` and the
``sign_balance`` / constraint-subset / tie-break options are those of the IEEE
Access 2025 sequel's code (see ``shared/papers/jumpstart-experiments.md``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
import warnings
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .deficits import (GRANULARITIES, TIE_BREAKS, Deficits, margin_deficits,
                       member_deficits)
from .hooks import HIDDEN_ACTIVATIONS, PreActivationHooks
from .options import Option, choice, number, reject_unknown, subset

AGGREGATIONS = ("balanced", "sum", "mean", "l2", "sq")
CONSTRAINTS = ("unit+", "unit-", "point+", "point-")

#: Jumpstart's options and defaults, the one definition every layer reads
#: (:class:`Jumpstart`, the ``jumpstart`` technique, the MOONS stacks, the
#: Lightning callback, the command line). ``lam`` is the coefficient of the
#: penalty in the loss ``task + lam * P`` (CPAIOR eq. (7)); 1e-4 is the CPAIOR
#: MOONS value. The rest are :class:`Jumpstart`'s constructor options.
JUMPSTART_OPTIONS: dict[str, Option] = {
    "lam": Option(1e-4, *number(lambda v: v >= 0, "a number >= 0")),
    "aggregation": Option("balanced", *choice(AGGREGATIONS)),
    "margin": Option(1.0, *number(lambda v: v > 0, "a number > 0")),
    "sign_balance": Option(0.5, *number(lambda v: 0 <= v <= 1, "a number in [0, 1]")),
    "constraints": Option(CONSTRAINTS, *subset(CONSTRAINTS)),
    "tie_break": Option("single", *choice(TIE_BREAKS)),
    "granularity": Option("channel", *choice(GRANULARITIES)),
}
_CHOICES = {"aggregation": AGGREGATIONS, "tie_break": TIE_BREAKS, "granularity": GRANULARITIES}


def _in_backward() -> bool:
    """Whether autograd is running a backward (a checkpointed forward recomputed)."""
    return (not torch.compiler.is_compiling()  # traced: a forward, by definition
            and torch._C._current_graph_task_id() != -1)


class LayerDeficits(NamedTuple):
    """Deficits of one hidden layer (one call of an activation module).

    Attributes:
        name: qualified module name, ``"#k"`` appended for its k-th reuse.
        deficits: the four vectors, see :class:`~jumpstart.core.deficits.Deficits`.
    """

    name: str
    deficits: Deficits


def check_options(**options) -> dict:
    """Jumpstart options with defaults filled in (:data:`JUMPSTART_OPTIONS`),
    validated; ``constraints`` comes back as a tuple (a single name is
    accepted). Only the names given, plus every name but ``lam``, are returned.

    Raises:
        ValueError: an unknown option name; ``margin <= 0``, ``lam < 0``,
            ``sign_balance`` outside [0, 1]; an unknown aggregation, tie-break,
            granularity or constraint (the message names the bad value and the
            allowed ones).
    """
    reject_unknown(options, JUMPSTART_OPTIONS, "Jumpstart")
    out = {}
    for name, option in JUMPSTART_OPTIONS.items():
        if name == "lam" and name not in options:
            continue
        value = options.get(name, option.default)
        if name == "constraints":
            value = (value,) if isinstance(value, str) else tuple(value)
        if not option.check(value):
            if name in _CHOICES:
                raise ValueError(f"unknown {name} {value!r}; allowed: "
                                 f"{', '.join(_CHOICES[name])}")
            raise ValueError(f"{name} must be {option.text}; got {value!r}")
        out[name] = value
    return out


def aggregate(
    layers: Sequence[Deficits],
    *,
    aggregation: str = JUMPSTART_OPTIONS["aggregation"].default,
    sign_balance: float = JUMPSTART_OPTIONS["sign_balance"].default,
    constraints: Iterable[str] = CONSTRAINTS,
    masks: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Combine per-layer deficits into the penalty ``P`` of CPAIOR eq. (7).

    Per layer, the unit term of unit ``c`` is ``s*xi+[c] + (1-s)*xi-[c]`` and
    the point term of sample ``i`` is ``s*psi+[i] + (1-s)*psi-[i]``, with
    ``s = sign_balance``; a deficit outside ``constraints`` is left out but the
    others keep their weights (``("unit+",)`` alone gives ``s*xi+``). With
    ``T`` all selected unit and point terms of all layers concatenated:

    - ``"balanced"``: ``mean(unit terms) + mean(point terms)`` (IEEE default);
      a group with no selected deficit contributes 0;
    - ``"sum"``: ``sum(T)`` (the L1 norm: terms are >= 0);
    - ``"mean"``: ``mean(T)``;
    - ``"l2"``: ``||T||_2``;
    - ``"sq"``: ``sum(T**2)`` (squared L2, what the CPAIOR Keras code ran).

    Args:
        layers: deficits per layer; unit vectors ``(C_l,)``, point ``(N,)``
            (``(C_l * S_l,)`` and ``(N * S_l,)`` with granularity ``"position"``);
            or, for a population of ``P`` networks, ``(P, C_l)`` and ``(P, N)``
            (:func:`~jumpstart.core.deficits.member_deficits`), each member
            aggregated on its own.
        masks: optional 0/1 weights ``(unit, point)`` shaped as the unit terms
            and the point terms of all layers concatenated (``(..., sum C_l)``
            and ``(..., L * N)``); a term of weight 0 is left out of every sum
            and every count (the MOONS stacks' padded units and pass-through
            layers, :mod:`jumpstart.train.stacks.layers`).

    Returns:
        0-dim tensor (shape ``(P,)`` for a population), differentiable, ``>= 0``.

    Raises:
        ValueError: unknown aggregation or constraint, ``sign_balance``
            outside [0, 1], or no layers.
    """
    constraints = check_options(aggregation=aggregation, sign_balance=sign_balance,
                                constraints=constraints)["constraints"]
    if not layers:
        raise ValueError("no layer deficits to aggregate")
    s = float(sign_balance)

    def joined(i):  # one deficit over all layers
        return layers[0][i] if len(layers) == 1 else torch.cat([d[i] for d in layers], dim=-1)

    groups, counts = [], []
    for g, (key, pos, neg) in enumerate((("unit", 0, 1), ("point", 2, 3))):
        parts = []
        if f"{key}+" in constraints:
            parts.append(s * joined(pos))
        if f"{key}-" in constraints:
            parts.append((1 - s) * joined(neg))
        if parts:
            group = parts[0] if len(parts) == 1 else parts[0] + parts[1]
            if masks is not None:
                group = group * masks[g]
                counts.append(masks[g].sum(-1))
            groups.append(group)
    if aggregation == "balanced":
        if masks is not None:
            return sum(group.sum(-1) / n for group, n in zip(groups, counts))
        return sum(group.mean(-1) for group in groups)
    terms = torch.cat(groups, dim=-1)
    if aggregation == "sum":
        return terms.sum(-1)
    if aggregation == "mean":
        return terms.mean(-1) if masks is None else terms.sum(-1) / sum(counts)
    if aggregation == "l2":
        return torch.linalg.vector_norm(terms, dim=-1)
    return terms.square().sum(-1)


class Jumpstart:
    """Jumpstart regularizer attached to a model by forward hooks.

    Captures every hidden layer's pre-activation during forward passes made in
    training mode with gradients enabled, computes the margin deficits of
    CPAIOR eqs. (9)-(12), and returns their aggregation ``P`` (eq. (7)) from
    :meth:`penalty`. The training loss is ``task_loss + lam * js.penalty()``.
    Forwards in eval mode or under ``torch.no_grad()`` collect nothing and do
    not disturb the last collected pass.

    On the input of an activation of a known kind, each layer's deficits pass
    their sparse gradient into the activation's gradient in place, with no
    tensor of the layer's size made in backward
    (:func:`~jumpstart.core.deficits.margin_deficits`, ``pass_through``);
    a ``layers=[...]`` output or a listed type of no known kind gets the
    dense gradient (same values).

    Example::

        model = jumpstart.models.Rectangular(30, 3, 2, 1)
        js = jumpstart.Jumpstart(model)
        loss = loss_fn(model(x), y) + 1e-4 * js.penalty()

    Args:
        model: any ``nn.Module``.
        margin: ``m > 0`` of constraints (3)-(6), in pre-activation units.
        aggregation: ``P``; one of ``balanced``, ``sum``, ``mean``, ``l2``,
            ``sq`` (see :func:`aggregate`).
        sign_balance: ``s`` in [0, 1], weight of the positive deficits.
        constraints: subset of ``unit+``, ``unit-``, ``point+``, ``point-``.
        tie_break: ``"single"`` (gradient of a max/min to one element; saves
            only indices) or ``"average"`` (split over ties; saves one byte
            per pre-activation element).
        granularity: ``"channel"`` (a conv unit is a channel, a point a
            sample; CPAIOR Sec. 3, last paragraph) or ``"position"`` (each
            spatial position of a channel is its own unit, of a sample its own
            point; the CPAIOR Keras MOONS code, see
            :func:`~jumpstart.core.deficits.margin_deficits`).
        activations: ``None`` (default): every activation module of a known
            kind (ReLU, ReLU6, LeakyReLU, PReLU, Hardtanh, Hardswish, GELU,
            SiLU; by class or by behaviour) and every functional call of one
            (:class:`~jumpstart.core.hooks.PreActivationHooks`); or module
            types whose *input* is a pre-activation. A module called k times
            per forward gives k layers.
        layers: instead of ``activations``, modules whose *output* is a
            pre-activation (for activations applied functionally).
        unit_dim: the unit axis: ``None`` finds it per layer (channels of a
            convolution, the last dim of a ``Linear`` output of any rank;
            :mod:`~jumpstart.core.hooks`), an ``int`` sets it for every
            layer, a dict from module name to ``int`` for some;
            :meth:`summary` shows what was found.
        members: the model is a population of independent networks whose
            pre-activations carry a leading member dimension ``(P, N, C, ...)``
            (:mod:`jumpstart.train.population`); deficits are taken per member
            (granularity ``"channel"``) and :meth:`penalty` has shape ``(P,)``.

    Raises:
        ValueError: an option outside its allowed values (the message names
            the value and the allowed ones), or no activation module / layer
            found in ``model``; at forward time, a hooked tensor that is the
            model's output (logits are never penalized).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        margin: float = JUMPSTART_OPTIONS["margin"].default,
        aggregation: str = JUMPSTART_OPTIONS["aggregation"].default,
        sign_balance: float = JUMPSTART_OPTIONS["sign_balance"].default,
        constraints: Iterable[str] = JUMPSTART_OPTIONS["constraints"].default,
        tie_break: str = JUMPSTART_OPTIONS["tie_break"].default,
        granularity: str = JUMPSTART_OPTIONS["granularity"].default,
        activations: Iterable[type] | None = None,
        layers: Sequence[nn.Module] | None = None,
        unit_dim: int | dict[str, int] | None = None,
        members: bool = False,
    ) -> None:
        self.constraints = check_options(
            margin=margin, aggregation=aggregation, sign_balance=sign_balance,
            constraints=constraints, tie_break=tie_break, granularity=granularity)["constraints"]
        self.margin = float(margin)
        self.aggregation = aggregation
        self.sign_balance = float(sign_balance)
        self.tie_break = tie_break
        self.granularity = granularity
        self.members = bool(members)
        if self.members and granularity != "channel":
            raise ValueError("population (members=True) deficits use granularity 'channel'")
        self._pending: list[LayerDeficits] | None = None
        self._pending_inputs: list[Tensor] = []
        # the last training pass: None before any, [] when it captured nothing
        self._last: list[LayerDeficits] | None = None
        self._spent = False  # the last pass's penalty went through a backward
        self._no_grad: list[str] = []  # layers of this pass that ran without gradients
        self._model = model
        activations = None if activations is None else tuple(activations)
        self._manual = False
        self._hooks = PreActivationHooks(
            model,
            self._tap,
            activations=activations,
            layers=layers,
            on_start=lambda: None if self._manual else self._start(),
            on_end=lambda output: None if self._manual else self._end(output),
            unit_dim=1 if self.members else unit_dim,  # members: (P, N, C, ...) as it is
            hidden_only=True,
            move_units=False,  # margin_deficits reads the unit axis in place
        )
        # an activation's input: the activation's backward sends a gradient tensor of
        # its own, which the deficits' gradient joins in place (margin_deficits'
        # pass_through). Not a listed layer's output, nor the input of a listed module
        # type of no known kind, whose backward may pass one tensor to two places.
        self._through = layers is None and (activations is None or all(
            issubclass(t, HIDDEN_ACTIVATIONS) for t in activations))

    @contextmanager
    def collect(self) -> Iterator[None]:
        """Treat everything run inside this block as one forward pass.

        For models whose training forward does not go through ``model``'s own
        ``forward`` (e.g. a ``LightningModule`` whose ``training_step`` calls
        its sub-networks): the pre-activations of every hooked module called
        in the block (training mode, gradients on) are what :meth:`penalty`
        uses afterwards. The model's own forward hooks are ignored meanwhile.
        Without it, such a forward is still collected: a pass then runs from
        the first hooked call after the last pass ended (``model(...)``
        returned, or :meth:`penalty` was taken) to the next :meth:`penalty`.
        """
        self._manual = True
        self._start()
        try:
            yield
        finally:
            self._manual = False
            self._end(None)

    def _start(self) -> None:
        collecting = self._model.training and torch.is_grad_enabled()
        self._pending = [] if collecting else None
        self._pending_inputs = []
        self._no_grad = []

    def _tap(self, name: str, g: Tensor) -> None:
        if not (self._model.training and torch.is_grad_enabled() and g.requires_grad):
            if self._pending is not None and not torch.is_grad_enabled():
                self._no_grad.append(name)  # re-entrant checkpointing, or no_grad inside
            return
        # a checkpointed block recomputed in backward computes its deficits
        # again (the checkpoint matches what was saved) but starts no pass
        in_backward = _in_backward()
        if self._pending is None and not in_backward:  # a forward bypassing model(...)
            self._start()
        if self.members:
            deficits = member_deficits(g, self.margin, self.tie_break)
        else:
            deficits = margin_deficits(g, self.margin, self.tie_break, self.granularity,
                                       unit_dim=self._hooks.seen[name].unit_dim,
                                       pass_through=self._through)
        if not in_backward:
            self._pending_inputs.append(g)
            self._pending.append(LayerDeficits(name, deficits))

    def _end(self, output: object) -> None:
        pending, inputs, no_grad = self._pending, self._pending_inputs, self._no_grad
        self._pending, self._pending_inputs, self._no_grad = None, [], []
        self._hooks.new_pass()
        if no_grad:
            warnings.warn(
                f"Jumpstart: {len(no_grad)} hooked layer(s) ran without gradients inside a "
                f"training forward ({', '.join(no_grad[:3])}{', ...' if len(no_grad) > 3 else ''})"
                " and are left out of the penalty: re-entrant checkpointing (use "
                "use_reentrant=False) or a no_grad block in the forward", stacklevel=3)
        if pending and self._hooks.dropped:  # not hidden after all (first forward)
            keep = [d.name not in self._hooks.dropped for d in pending]
            pending = [d for d, k in zip(pending, keep) if k]
            inputs = [g for g, k in zip(inputs, keep) if k]
        if pending is None:  # not a training pass: the last one stands
            return
        if not pending:  # a training pass that captured nothing: no earlier pass stands in
            if not _in_backward():  # (a checkpointed model recomputed in backward is no pass)
                self._last = []
            return
        if isinstance(output, Tensor) and not torch.compiler.is_compiling() and any(
                g.data_ptr() == output.data_ptr() and g.numel() == output.numel()
                for g in inputs):
            raise ValueError(
                "a hooked layer produces the model's output; logits are never penalized: "
                "leave the output module out of layers=[...]"
            )
        self._last, self._spent = pending, False

    def deficits(self) -> list[LayerDeficits]:
        """Per-layer deficits of the last collected forward pass, in call order.

        Each holds ``xi+``/``xi-`` of shape ``(C_l,)`` and ``psi+``/``psi-`` of
        shape ``(N,)`` (``(C_l * S_l,)`` and ``(N * S_l,)`` with granularity
        ``"position"``, ``S_l`` the layer's number of spatial positions), still
        attached to the graph (``.detach()`` for logging). A pass collected
        from a forward that bypassed ``model(...)`` ends here.

        Raises:
            RuntimeError: no training-mode forward with gradients has run, or
                the last one captured no pre-activation (a compiled forward's
                functional activations, frozen layers): no earlier pass stands in.
        """
        if self._pending and not self._manual:  # a pass that bypassed model(...)
            self._end(None)
        if self._last == []:
            raise RuntimeError(
                "Jumpstart: the last training forward captured no pre-activation: no hooked "
                "layer ran with gradients. A torch.compile'd forward hooks activation modules "
                "only (functional calls such as F.relu are captured in eager forwards only: "
                "pass layers=[...], the modules whose outputs are pre-activations, or use "
                "activation modules); a layer whose input needs no gradient (a frozen part) "
                "is not penalized")
        if self._last is None:
            raise RuntimeError(
                "Jumpstart has no pre-activations yet: run a forward pass of the model in "
                "training mode (model.train()) with gradients enabled first"
            )
        return list(self._last)

    def penalty(self) -> Tensor:
        """Penalty ``P`` of the last collected forward pass, eq. (7): a 0-dim
        tensor, or shape ``(P,)`` (one per member) with ``members=True``.

        A pass's penalty goes through one backward: once gradients have
        flowed from it, asking again without a new training forward raises
        (never a stale penalty from an earlier step).

        Raises:
            RuntimeError: no training-mode forward with gradients has run, the
                last one captured no pre-activation (see :meth:`deficits`), or
                the last pass's penalty already went through a backward.
        """
        layers = self.deficits()
        if self._spent:
            raise RuntimeError(
                "Jumpstart: the penalty of the last collected forward pass already went "
                "through a backward, and no training forward has run since; run one "
                "(model(x) in train mode, or the calls inside `with js.collect():`). A "
                "torch.compile'd model skips hooks added after another module of its class "
                "was compiled: set torch._dynamo.config.skip_nnmodule_hook_guards = False "
                "before compiling anything, or call torch._dynamo.reset()")
        penalty = aggregate(
            [d.deficits for d in layers],
            aggregation=self.aggregation,
            sign_balance=self.sign_balance,
            constraints=self.constraints,
        )
        if penalty.requires_grad:
            penalty.register_hook(self._mark_spent)
        return penalty

    def _mark_spent(self, grad: Tensor) -> None:
        self._spent = True

    def summary(self) -> str:
        """What was hooked, one line per hidden layer seen in the forwards so
        far: layer name, activation type, unit axis of the hooked tensor
        (``(guessed)`` where no producing layer told it), units, shape."""
        return self._hooks.summary()

    @property
    def layer_names(self) -> list[str]:
        """Names of the modules hooked (one per module, not per call)."""
        return list(self._hooks.module_names)

    def remove(self) -> None:
        """Detach every hook and drop collected deficits; idempotent."""
        self._hooks.remove()
        self._last = None

    def __enter__(self) -> "Jumpstart":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
