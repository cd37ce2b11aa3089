"""The technique contract: what a trainer calls, when, and with what.

A technique is one way of making a deep thin net trainable (the IEEE Access
2025 UCI experiments compare baseline, Jumpstart, skip connections, batch
normalization and GELU; Neural Rejuvenation, ReDo and Continual Backprop act
on the weights and the optimizer). The trainers (:func:`jumpstart.train.fit`
and the population trainers) know no technique by name; they call these
methods at fixed points of a run, each hook with one :class:`TrainContext`:

1. :meth:`Technique.model_options` before the model is built: shape it
   (e.g. insert batch normalization) by editing the constructor options;
2. :meth:`Technique.attach` once the model and its optimizer exist: add hooks;
3. :meth:`Technique.loss` after each training forward: an extra loss term
   (and :meth:`Technique.task_loss`: a replacement of the task loss, e.g.
   Neural Rejuvenation's two-head loss; single-run loop only);
4. :meth:`Technique.after_step` after each optimizer step: weight surgery,
   optimizer-state edits (:meth:`TrainContext.zero_state`), or a new model
   (:meth:`TrainContext.replace_model`);
5. :meth:`Technique.after_epoch` after each epoch's evaluation: the same
   powers, and per-epoch metrics (:meth:`TrainContext.log`);
6. :meth:`Technique.detach` at the end of training (also after an error, and
   before a replaced model's technique is attached to the new one).

A technique says which trainers can run it exactly in :attr:`Technique.supports`
(see :data:`CAPABILITIES`); a trainer refuses, with a message, a technique that
does not declare it (:func:`jumpstart.train.route`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar

from torch import Tensor, nn

from ..core.options import Option, choice, int_at_least, number, subset
from ..optim import zero_state

#: what a technique may declare it supports, beyond the single-run loop
#: (:func:`jumpstart.train.fit`, which runs every technique):
#:
#: - ``"population"``: the generic population trainer
#:   (:func:`jumpstart.train.population.train_population`): every hook works
#:   on a population model (``model.members = P``, pre-activations
#:   ``(P, N, ...)``, a loss term of shape ``(P,)``, parameters with a leading
#:   member dimension, the optimizer :class:`~jumpstart.optim.MemberAdam`);
#: - ``"stacks"``: the hand-written MOONS stacks
#:   (:func:`jumpstart.train.stacks.train_stacked`), which call no hook: the
#:   technique's whole effect is a Jumpstart penalty whose options are in its
#:   config (``lam`` absent: no penalty).
CAPABILITIES = ("population", "stacks")


@dataclass
class TrainContext:
    """What a technique's hooks see: the run's state at that point.

    Attributes:
        model: the model being trained (a population model has ``members``).
        optimizer: its optimizer (a ``torch.optim`` optimizer or
            :class:`~jumpstart.optim.MemberAdam`); ``None`` outside training.
        step: optimizer steps taken so far in the run (global, 0 before the first).
        epoch: the current epoch, 1-based (0 before training).
        batch: the current training batch ``(x, y)`` (``x`` ``(N, ...)``,
            ``y`` ``(N,)``; population: ``(P, N)`` labels), ``None`` outside a step.
        activations: when the technique sets ``needs_activations``, the hidden
            pre-activations of the last training forward as ``(layer name, g)``
            pairs, ``g`` detached, ``(N, C, *spatial)`` (population:
            ``(P, N, C)``); apply the layer's activation for post-activations.
            ``None`` otherwise.
        logged: metrics logged this epoch (name -> value), stored in the
            run's curves beside the trainer's own.
        data: the run's data set (:class:`~jumpstart.data.Dataset`, e.g.
            ``data.x_train``), or ``None`` (population trainers, on-disk data).
        criterion: the trainer's task loss, ``(logits (N, K), labels (N,)) ->``
            0-dim (cross-entropy; binary cross-entropy when ``K = 1``), for a
            :meth:`Technique.task_loss` built from it; ``None`` outside ``fit``.
    """

    model: nn.Module
    optimizer: object | None = None
    step: int = 0
    epoch: int = 0
    batch: tuple[Tensor, Tensor] | None = None
    activations: list[tuple[str, Tensor]] | None = None
    logged: dict[str, float | Tensor] = field(default_factory=dict)
    replacement: tuple[nn.Module, bool, bool] | None = None
    data: object | None = None
    criterion: Callable[[Tensor, Tensor], Tensor] | None = None

    def zero_state(self, param: Tensor, index) -> list[str]:
        """Zero the optimizer state of ``param[index]``
        (:func:`jumpstart.optim.zero_state`); returns the state names zeroed.

        Raises:
            ValueError: no optimizer, or ``param`` is not one of its parameters.
        """
        if self.optimizer is None:
            raise ValueError("no optimizer in this context (outside training)")
        return zero_state(self.optimizer, param, index)

    def replace_model(self, model: nn.Module, *, shift_schedule: bool = False,
                      extend: bool = False) -> None:
        """Ask the trainer to continue with ``model`` after this hook.

        The trainer then detaches the technique, builds a fresh optimizer over
        ``model``'s parameters at the initial learning rate and a fresh
        schedule (milestones moved by the epochs done so far when
        ``shift_schedule``; else positioned at the current epoch), with
        ``extend`` adds the epochs done so far to the run's epoch budget (the
        whole schedule then runs after the replacement, as Neural
        Rejuvenation's CIFAR code does), attaches the technique to ``model``,
        and records ``model``'s widths in the run's result. Only
        :func:`jumpstart.train.fit` honours this; the population trainers run
        no technique that could call it.
        """
        self.replacement = (model, bool(shift_schedule), bool(extend))

    def log(self, name: str, value: float | Tensor) -> None:
        """Record a per-epoch metric (e.g. a dormant fraction) for the curves:
        a number (or 0-dim tensor), or a ``(P,)`` tensor with one value per
        population member.
        A name the trainer reports itself (``loss``, ``val_acc``, ``epochs``,
        ...) is refused by the trainer with a ``ValueError``."""
        if isinstance(value, Tensor) and value.dim() > 0:
            self.logged[name] = value.detach().clone()
        else:
            self.logged[name] = float(value)


class Technique:
    """Base class of techniques: every hook is a no-op (the ``baseline``).

    Subclasses set ``name``, ``options`` (name -> :class:`Option`), and
    ``supports`` (a subset of :data:`CAPABILITIES`), and override the hooks
    they need. ``supports`` is not inherited: a subclass that does not set it
    supports the single-run loop only, so a subclass adding a hook is never
    routed to a trainer that would skip it. Set ``needs_activations = True``
    to receive the last training forward's pre-activations in
    :attr:`TrainContext.activations`. Option names are unique across
    techniques, so a run config stays one flat dict.

    Args:
        **options: values for the names in ``options``; missing ones take
            their defaults.

    Raises:
        ValueError: an unknown option name, or a value its check rejects (the
            message names the technique, the option and what is allowed).
    """

    name: ClassVar[str] = "baseline"
    options: ClassVar[dict[str, Option]] = {}
    supports: ClassVar[frozenset[str]] = frozenset()
    needs_activations: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "supports" not in cls.__dict__:
            cls.supports = frozenset()
        unknown = set(cls.supports) - set(CAPABILITIES)
        if unknown:
            raise ValueError(f"technique class {cls.__name__}: unknown capabilities "
                             f"{sorted(unknown)}; allowed: {', '.join(CAPABILITIES)}")

    def __init__(self, **options) -> None:
        unknown = set(options) - set(self.options)
        if unknown:
            allowed = ", ".join(self.options) or "none"
            raise ValueError(f"technique {self.name!r} takes no option(s) {sorted(unknown)}; "
                             f"allowed: {allowed}")
        self.config = {k: options.get(k, o.default) for k, o in self.options.items()}
        for key, value in self.config.items():
            if not self.options[key].check(value):
                raise ValueError(f"technique {self.name!r}: {key} must be "
                                 f"{self.options[key].text}; got {value!r}")

    @property
    def granularity(self) -> str:
        """How deficits and the status pool a conv layer's positions
        (:func:`jumpstart.core.activation_status`): the technique's
        ``granularity`` option when it has one (Jumpstart), else
        ``"channel"`` (CPAIOR Sec. 3: a channel is the unit)."""
        return self.config.get("granularity", "channel")

    def model_options(self, options: dict) -> dict:
        """Return the model constructor options to use (``options`` is not modified).

        The trainer passes the options the model family takes (for
        :class:`~jumpstart.models.Rectangular`: ``activation``, ``norm``,
        ``skip``). Raises ``ValueError`` when the family lacks one this
        technique needs.
        """
        return dict(options)

    def attach(self, ctx: TrainContext) -> None:
        """Called once with the built model (``ctx.model``; a population model
        has ``ctx.model.members``), and again after a model replacement."""

    def loss(self, ctx: TrainContext) -> Tensor | None:
        """Extra loss term of the last training forward: 0-dim, or ``(P,)`` for a
        population (one per member); ``None`` for none."""
        return None

    def task_loss(self, ctx: TrainContext, logits: Tensor, y: Tensor) -> Tensor | None:
        """The task loss of the last training forward (``logits`` ``(N, K)``,
        labels ``(N,)``; 0-dim) in place of the trainer's cross-entropy;
        ``None`` keeps the trainer's. Only the single-run loop calls it: a
        technique overriding it must not declare ``"population"``."""
        return None

    def after_step(self, ctx: TrainContext) -> None:
        """Called after every optimizer step."""

    def after_epoch(self, ctx: TrainContext) -> None:
        """Called after every epoch, once the epoch's accuracies are measured."""

    def detach(self, ctx: TrainContext) -> None:
        """Called when training ends (also after an error); idempotent."""

    def _need(self, options: dict, key: str) -> dict:
        if key not in options:
            raise ValueError(f"technique {self.name!r} needs a model family with a {key!r} "
                             f"option (e.g. rectangular); this one takes {sorted(options)}")
        return dict(options)


__all__ = ["CAPABILITIES", "Option", "Technique", "TrainContext", "choice", "int_at_least",
           "number", "subset"]
