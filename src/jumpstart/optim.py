"""Optimizers and learning-rate schedules of a run, and optimizer-state surgery.

A run names its optimizer with the options in :data:`OPTIMIZER_OPTIONS`
(``optimizer`` ``"adam"`` by default, ``"adamw"`` or ``"sgd"``; ``momentum``,
``nesterov``, ``weight_decay``; a step schedule ``lr_milestones`` /
``lr_gamma``), because the techniques compared here were published with
different ones (Neural Rejuvenation: SGD with momentum and step decay; ReDo and
Continual Backprop: Adam). :func:`build_optimizer` and :func:`build_schedule`
turn them into ``torch.optim`` objects. :class:`MemberAdam` is the Adam of the
population trainers (per-member learning rates, gradients from buffers).

:func:`zero_state` is the one helper techniques use to reset the optimizer
state of chosen entries of a parameter (re-initialized units: ReDo, Continual
Backprop) for ``torch.optim.Adam`` / ``AdamW`` / ``SGD`` and :class:`MemberAdam`
alike.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from .core.options import Option, choice, filled, number

OPTIMIZERS = ("adam", "adamw", "sgd")


def _milestones(v) -> bool:
    return (isinstance(v, (list, tuple)) and all(isinstance(m, int) and not isinstance(m, bool)
                                                 and m >= 1 for m in v)
            and list(v) == sorted(set(v)))


#: the optimizer options of a run and their defaults (the one definition)
OPTIMIZER_OPTIONS: dict[str, Option] = {
    "optimizer": Option("adam", *choice(OPTIMIZERS)),
    "momentum": Option(0.0, *number(lambda v: 0 <= v < 1, "a number in [0, 1)")),
    "nesterov": Option(False, lambda v: isinstance(v, bool), "true or false"),
    "weight_decay": Option(0.0, *number(lambda v: v >= 0, "a number >= 0")),
    "lr_milestones": Option((), _milestones, "a strictly increasing list of epochs >= 1"),
    "lr_gamma": Option(0.1, *number(lambda v: 0 < v <= 1, "a number in (0, 1]")),
}


def check_optimizer(**options) -> dict:
    """The optimizer options with defaults filled in, validated.

    Raises:
        ValueError: an unknown name, a value outside its range (the message
            says what is allowed), ``momentum`` or ``nesterov`` with an
            optimizer other than SGD, ``nesterov`` without momentum.
    """
    out = filled(options, OPTIMIZER_OPTIONS, "optimizer")
    if out["optimizer"] != "sgd" and (out["momentum"] or out["nesterov"]):
        raise ValueError(f"momentum and nesterov apply to optimizer sgd; got optimizer "
                         f"{out['optimizer']!r} with momentum {out['momentum']!r}, "
                         f"nesterov {out['nesterov']!r}")
    if out["nesterov"] and not out["momentum"] > 0:
        raise ValueError("nesterov needs momentum > 0")
    out["lr_milestones"] = tuple(out["lr_milestones"])
    return out


def is_plain_adam(config: dict) -> bool:
    """Whether a run config's optimizer options (its keys in
    :data:`OPTIMIZER_OPTIONS`; others ignored) are plain Adam: no weight decay,
    no schedule (what the population trainers run).

    Raises:
        ValueError: as :func:`check_optimizer`.
    """
    o = check_optimizer(**{k: v for k, v in config.items() if k in OPTIMIZER_OPTIONS})
    return o["optimizer"] == "adam" and o["weight_decay"] == 0 and not o["lr_milestones"]


def build_optimizer(params, lr: float, **options) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimizer the options name, over ``params``.

    ``adam``: ``torch.optim.Adam`` (``weight_decay`` added to the gradient, L2);
    ``adamw``: ``torch.optim.AdamW`` (decoupled decay, ``weight_decay`` default
    0 here, not torch's 0.01); ``sgd``: ``torch.optim.SGD`` with ``momentum``,
    ``nesterov``, ``weight_decay``. Betas and eps are torch's defaults.

    Raises:
        ValueError: as :func:`check_optimizer`; ``lr <= 0``.
    """
    o = check_optimizer(**options)
    if isinstance(lr, (int, float)) and not math.isfinite(lr):
        raise ValueError(f"lr must be finite; got {lr!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0; got {lr!r}")
    if o["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=o["momentum"], nesterov=o["nesterov"],
                               weight_decay=o["weight_decay"])
    cls = torch.optim.AdamW if o["optimizer"] == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, weight_decay=o["weight_decay"])


def build_schedule(optimizer: torch.optim.Optimizer, /, *, done_epochs: int = 0, shift: int = 0,
                   **options) -> torch.optim.lr_scheduler.MultiStepLR:
    """The step schedule (``torch.optim.lr_scheduler.MultiStepLR``, stepped once
    per epoch): the learning rate is multiplied by ``lr_gamma`` after each
    epoch in ``lr_milestones``.

    For a schedule rebuilt mid-run (a technique replaced the model, so a fresh
    optimizer starts at its initial learning rate): ``shift`` moves every
    milestone that many epochs later (the schedule restarts at the
    replacement); ``done_epochs`` positions the schedule at that epoch (the
    learning rate is the schedule's value there).

    Raises:
        ValueError: as :func:`check_optimizer`.
    """
    o = check_optimizer(**options)
    schedule = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[m + shift for m in o["lr_milestones"]], gamma=o["lr_gamma"])
    with warnings.catch_warnings():  # advancing the schedule alone is intended here
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(done_epochs):
            schedule.step()
    return schedule


#: floor of Adam's second moment before the square root (see :class:`MemberAdam`)
TINY = 1e-30


class MemberAdam:
    """Adam (Kingma & Ba) over a few tensors with external gradient buffers.

    The same update as ``torch.optim.Adam`` (betas 0.9, 0.999, eps 1e-8, no
    weight decay), written out because the population trainers' gradients are
    not ``.grad`` fields and because population members may each have their
    own learning rate: ``lr`` is one float, or one tensor per parameter that
    broadcasts against it (e.g. shape ``(P, 1, 1)`` for a ``(P, W, F)`` weight).

    The state is laid out as torch's, so :func:`zero_state` serves both:
    ``state[param]`` holds ``exp_avg`` and ``exp_avg_sq`` (shaped as the
    parameter) and ``param_groups[0]["params"]`` lists the parameters; the
    step count :attr:`t` is shared.

    The second moment is clamped at :data:`TINY` (1e-30) before its square
    root: padded and dead entries keep ``v = 0``, and the CPU square root of
    0 takes a slow path (4-8x slower per element here). The clamp moves the
    denominator ``sqrt(v) / bc2 + eps`` by at most ``1e-15 / bc2`` against
    ``eps = 1e-8``, and only where the gradient has been below ~1e-14.
    """

    def __init__(self, params: list[Tensor], lr: float | list[Tensor]) -> None:
        self.params, self.lr, self.t = params, lr, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.param_groups = [{"params": params}]
        self.state = {p: {"exp_avg": m, "exp_avg_sq": v}
                      for p, m, v in zip(params, self.m, self.v)}

    @torch.no_grad()
    def step(self, grads: list[Tensor]) -> None:
        """One Adam update of ``params`` in place with these gradients."""
        self.t += 1
        b1, b2, eps = 0.9, 0.999, 1e-8
        bc1 = 1 - b1 ** self.t
        bc2_sqrt = math.sqrt(1 - b2 ** self.t)
        torch._foreach_lerp_(self.m, grads, 1 - b1)
        torch._foreach_mul_(self.v, b2)
        torch._foreach_addcmul_(self.v, grads, grads, 1 - b2)
        denom = torch._foreach_clamp_min(self.v, TINY)
        torch._foreach_sqrt_(denom)
        torch._foreach_div_(denom, bc2_sqrt)
        torch._foreach_add_(denom, eps)
        if isinstance(self.lr, (int, float)):
            torch._foreach_addcdiv_(self.params, self.m, denom, -self.lr / bc1)
            return
        update = torch._foreach_div(self.m, denom)
        torch._foreach_mul_(update, [lr * (-1 / bc1) for lr in self.lr])
        torch._foreach_add_(self.params, update)


def zero_state(optimizer, param: Tensor, index) -> list[str]:
    """Zero the optimizer state of the entries ``param[index]``.

    Every per-element state tensor of ``param`` (one shaped as ``param``:
    Adam's and AdamW's first and second moments ``exp_avg`` / ``exp_avg_sq``
    and ``max_exp_avg_sq`` under amsgrad, SGD's ``momentum_buffer``, a
    per-element step count of an optimizer that keeps one) is set to 0 at
    ``index``; a scalar step count is kept (as in the ReDo authors' code).
    Entries outside ``index`` are untouched. Nothing is zeroed before the
    optimizer's first step (it has no state yet).

    Args:
        optimizer: a ``torch.optim`` optimizer or :class:`MemberAdam`.
        param: one of its parameters.
        index: anything that indexes ``param``: ``rows`` (a unit's incoming
            weights), ``(slice(None), cols)`` (the next layer's weights that
            read those units), ``(member, rows)`` for a population parameter.

    Returns:
        The names of the state entries zeroed.

    Raises:
        ValueError: ``param`` is not a parameter of ``optimizer``, or is 0-dim.
    """
    if param.dim() == 0:
        raise ValueError("zero_state needs a parameter with at least one dimension; a 0-dim "
                         "parameter's state cannot be told from its step count")
    if not any(param is p for group in optimizer.param_groups for p in group["params"]):
        raise ValueError(f"the parameter of shape {tuple(param.shape)} is not one of the "
                         "optimizer's parameters")
    zeroed = []
    with torch.no_grad():
        for name, value in optimizer.state.get(param, {}).items():
            if isinstance(value, Tensor) and value.dim() > 0 and value.shape == param.shape:
                value[index] = 0
                zeroed.append(name)
    return zeroed


def move_state(optimizer, old: Tensor, new: Tensor, *, dim: int, src: Tensor, dst: Tensor) -> None:
    """Put parameter ``new`` in the place of ``old`` in ``optimizer``,
    carrying the state of the entries that survive a change of shape.

    Along ``dim``, slice ``src[i]`` of ``old`` became slice ``dst[i]`` of
    ``new`` (a widened or pruned layer); every per-element state tensor of
    ``old`` (shaped as ``old``: Adam's moments, SGD's momentum buffer) is
    rebuilt at ``new``'s shape with those slices copied and every other entry
    0 (new entries start with fresh state); other state (a scalar step count)
    is kept as it is. Before the optimizer's first step there is no state and
    only the parameter is swapped.

    Args:
        optimizer: a ``torch.optim`` optimizer.
        old: one of its parameters.
        new: the replacement (same number of dims; may differ in size along ``dim``).
        dim: the axis that changed.
        src, dst: ``(K,)`` long indices into ``old`` and ``new`` along ``dim``.

    Raises:
        ValueError: ``old`` is not a parameter of ``optimizer``, or ``src``
            and ``dst`` differ in length.
    """
    if len(src) != len(dst):
        raise ValueError(f"src and dst must have one length; got {len(src)} and {len(dst)}")
    for group in optimizer.param_groups:
        for i, p in enumerate(group["params"]):
            if p is old:
                group["params"][i] = new
                break
        else:
            continue
        break
    else:
        raise ValueError(f"the parameter of shape {tuple(old.shape)} is not one of the "
                         "optimizer's parameters")
    state = optimizer.state.pop(old, None)
    if not state:
        return
    moved = {}
    for name, value in state.items():
        if isinstance(value, Tensor) and value.dim() > 0 and value.shape == old.shape:
            fresh = torch.zeros_like(new)
            fresh.index_copy_(dim, dst.to(value.device), value.index_select(dim, src.to(value.device)))
            moved[name] = fresh
        else:
            moved[name] = value
    optimizer.state[new] = moved
