"""Population training: many small ReLU nets trained at once.

Thousands of tiny networks are dominated by per-operation overhead, not
arithmetic. A population stacks the weights of ``P`` nets into
``(P, out, in)`` tensors and runs each pass over all members at once: the
dense stack in fused kernels that loop over each member's own units
(:mod:`jumpstart.train.kernels`), the MOONS conv stack as batched matmuls.
Narrower nets are zero-padded to the widest: a padded unit has zero
incoming weights and bias, so its pre-activation is exactly 0, ReLU's gradient
at 0 is 0, and its outgoing weights multiply an output of 0; it therefore gets
and sends no gradient, Adam leaves it at zero, and the penalty and the status
exclude it. Adam is elementwise, so one Adam over the stacked tensors is each
member's own Adam. Each member starts from exactly the weights
``train_run`` would build for it (same seed), so a member follows the
single-run trajectory up to float rounding (different matmul summation order).

Members may differ in width, depth, seed and ``lam``; they share the data set,
epochs, learning rate, batch size and Jumpstart options. Members shallower
than the deepest run through exact pass-through layers (see
:mod:`jumpstart.train.stacks`), so one population can hold a whole grid.

Per-operation overhead is the cost that matters here, so the backward pass
is written out by hand (a ReLU net's backward is a few matmuls per layer)
and the gradients land in one buffer per parameter group: hidden
weights of all layers are one ``(L-1, P, W, W)`` tensor, and Adam runs on six
tensors whatever the depth. Only the small deficit-to-penalty part (per-layer
extremes to ``P``) goes through autograd; its gradient is scattered back to
the extreme elements (tie-break ``single``) or split over ties (``average``),
exactly as :func:`jumpstart.core.margin_deficits` does. Members with
``lam > 0`` are stacked first, so the extremes and the penalty gradient are
computed over a leading slice and unregularized members (the baseline) cost
no reduction; results come back in the caller's order.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..core.regularizer import CONSTRAINTS, check_options
from ..core.status import activation_status
from ..data import DATASETS
from ..models import MoonsConv, Rectangular
from .loop import check_schedule
from .stacks import DenseStack, MoonsConvStack


@dataclass(frozen=True)
class Member:
    """One network of a population: its width, init seed, Jumpstart ``lam``
    and depth (``None``: the population's ``depth``)."""

    width: int
    seed: int
    lam: float = 0.0
    depth: int | None = None


@dataclass
class MemberResult:
    """What one member's training measured (same keys as ``FitResult.metrics``).

    Attributes:
        metrics: ``train_acc``, ``best_train_acc``, ``val_acc``,
            ``best_val_acc``, ``final_loss``, ``epochs``, ``seconds`` (the
            population's wall time divided by its size), ``diverged``, and
            ``status`` (ratios on the training set at the end).
        curves: dict of lists ``epoch``, ``loss``, ``penalty``, ``train_acc``,
            ``val_acc`` every ``curve_every`` epochs (and the last one).
        model: the trained member as a standalone Rectangular or MoonsConv.
    """

    metrics: dict
    curves: dict
    model: torch.nn.Module


def _penalty(u_max: Tensor, u_min: Tensor, p_max: Tensor, p_min: Tensor, mask: Tensor,
             layers: Tensor, n_points: int, *, margin: float, aggregation: str,
             sign_balance: float, constraints, tie_break: str) -> Tensor:
    """Per-member penalty ``P`` (shape ``(P,)``) from stacked extremes.

    ``u_max``/``u_min``: unit extremes over samples, ``(L, P, W)``;
    ``p_max``/``p_min``: point extremes over real units, ``(L, P, N)``. The
    same deficits (CPAIOR eqs. (9)-(12)) and aggregation as
    :func:`jumpstart.core.aggregate`, batched over members, with padded units
    (``mask`` False, shape ``(P, W)``) and pass-through layers (``layers``
    0, shape ``(L, P)``) left out of every term and count.
    """
    s = sign_balance
    unit = point = None
    if "unit+" in constraints:
        unit = s * torch.relu(margin - u_max)
    if "unit-" in constraints:
        t = (1 - s) * torch.relu(margin + u_min)
        unit = t if unit is None else unit + t
    if "point+" in constraints:
        point = s * torch.relu(margin - p_max)
    if "point-" in constraints:
        t = (1 - s) * torch.relu(margin + p_min)
        point = t if point is None else point + t
    if unit is not None:
        unit = unit * mask * layers[..., None]  # padded units' terms are dropped
    if point is not None:
        point = point * layers[..., None]
    depth = layers.sum(0)  # (P,) each member's own layers
    n_units = mask.sum(1).to(u_max.dtype) * depth
    counts = depth * n_points
    groups = [(t, n) for t, n in ((unit, n_units), (point, counts)) if t is not None]
    if aggregation == "balanced":
        return sum(t.sum((0, 2)) / n for t, n in groups)
    if aggregation in ("sum", "mean"):
        total = sum(t.sum((0, 2)) for t, _ in groups)
        return total if aggregation == "sum" else total / sum(n for _, n in groups)
    flat = torch.cat([t.transpose(0, 1).reshape(t.shape[1], -1) for t, _ in groups], dim=1)
    if aggregation == "l2":
        return torch.linalg.vector_norm(flat, dim=1)
    return flat.square().sum(1)


#: floor of Adam's second moment before the square root (see :class:`Adam`)
TINY = 1e-30


class Adam:
    """Adam (Kingma & Ba) over a few tensors with external gradient buffers.

    The same update as ``torch.optim.Adam`` (betas 0.9, 0.999, eps 1e-8, no
    weight decay), written out because the gradients are not ``.grad`` fields
    and because population members may each have their own learning rate:
    ``lr`` is one float, or one tensor per parameter that broadcasts against
    it (e.g. shape ``(P, 1, 1)`` for a ``(P, W, F)`` weight).

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


def train_population(
    members: list[Member],
    *,
    dataset: str = "moons",
    model: str = "rectangular",
    depth: int | None = None,
    epochs: int = 5000,
    lr: float = 0.01,
    batch_size: int | None = None,
    jumpstart: dict | None = None,
    curve_every: int = 50,
    progress=None,
) -> list[MemberResult]:
    """Train a population of same-depth ReLU nets at once.

    ``model`` is ``"rectangular"`` (dense) or ``"moons_conv"`` (the CPAIOR
    Keras MOONS net, deficits with granularity ``"position"``, full batch).
    Numerically each member is ``train_run(dataset=..., model=model,
    depth=member.depth, width=member.width, lam=member.lam, seed=member.seed, ...)``:
    the same initialization, minibatch order (``batch_size`` set), loss
    ``task + lam * P`` (CPAIOR eq. (7)) and Adam, up to float rounding. A
    member whose loss becomes NaN/inf stops being recorded there and is
    reported diverged (its metrics are those of its last finite epoch).

    Args:
        members: the networks, ``len >= 1``.
        depth: the depth of members that do not set their own.
        dataset, epochs, lr, batch_size: shared training settings.
        jumpstart: shared Jumpstart options (``margin``, ``aggregation``,
            ``sign_balance``, ``constraints``, ``tie_break``).
        curve_every: record curves every this many epochs (and at the end).
        progress: optional callable ``progress(epochs_done)``.

    Returns:
        One :class:`MemberResult` per member, in order.

    Raises:
        ValueError: no members, unknown data set or options, bad sizes, a
            member without a depth when ``depth`` is not given.
    """
    if not members:
        raise ValueError("a population needs at least one member")
    if any(m.depth is None for m in members):
        if depth is None:
            raise ValueError("give depth, or a depth for every member")
        members = [m if m.depth is not None else replace(m, depth=depth) for m in members]
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; allowed: {', '.join(DATASETS)}")
    opts = {"margin": 1.0, "aggregation": "balanced", "sign_balance": 0.5,
            "constraints": CONSTRAINTS, "tie_break": "single", "granularity": None,
            **(jumpstart or {})}
    if any(m.lam > 0 for m in members):
        opts["constraints"] = check_options(opts["margin"], opts["aggregation"],
                                             opts["sign_balance"], opts["constraints"],
                                             opts["tie_break"])
    check_schedule(lr, epochs, batch_size)
    if any(not m.lam >= 0 for m in members):
        raise ValueError(f"lam must be >= 0; got {[m.lam for m in members]}")
    if model not in ("rectangular", "moons_conv"):
        raise ValueError(f"unknown model {model!r}; allowed: rectangular, moons_conv")
    # regularized members first, so the stack reduces extremes over a leading slice
    placement = sorted(range(len(members)), key=lambda i: members[i].lam == 0)
    members = [members[i] for i in placement]
    data = DATASETS[dataset]()
    if data.num_classes != 2:
        raise ValueError("population training supports binary data sets (one logit) for now")
    x_tr, y_tr = data.x_train.flatten(1), data.y_train.float()
    x_va, y_va = data.x_val.flatten(1), data.y_val
    n, features = x_tr.shape
    pop = len(members)
    nets = []
    for m in members:  # each member's own initialization, as train_run builds it
        torch.manual_seed(m.seed)
        nets.append(MoonsConv(m.depth, m.width) if model == "moons_conv"
                    else Rectangular(m.depth, m.width, features, 1))
    if model == "moons_conv":
        if opts["granularity"] not in (None, "position"):
            raise ValueError("MoonsConv populations use granularity 'position'")
        if batch_size is not None:
            raise ValueError("MoonsConv populations train full batch")
        stack = MoonsConvStack(nets)
    else:
        stack = DenseStack(nets)
    granularity = "position" if model == "moons_conv" else "channel"
    opts.pop("granularity", None)
    lam_all = torch.tensor([m.lam for m in members])
    reg = int((lam_all > 0).sum())
    use_js = reg > 0
    lam = lam_all[:reg]
    stack.regularize(reg)
    average = opts["tie_break"] == "average"
    stack.keep_g = average
    unit_mask, layer_mask = stack.unit_mask, stack.layer_mask
    adam = Adam(stack.params, lr)
    bs = n if batch_size is None else min(batch_size, n)
    generators = [torch.Generator().manual_seed(m.seed) for m in members] if bs < n else None

    alive = torch.ones(pop, dtype=torch.bool)
    done_epochs = torch.zeros(pop, dtype=torch.long)
    best_train = torch.zeros(pop, dtype=torch.float64)
    best_val = torch.zeros(pop, dtype=torch.float64)
    last = {k: torch.zeros(pop, dtype=torch.float64)
            for k in ("loss", "penalty", "train_acc", "val_acc")}
    curves = {k: [] for k in ("epoch", "loss", "penalty", "train_acc", "val_acc")}
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        loss_sum = torch.zeros(pop, dtype=torch.float64)
        pen_sum = torch.zeros(pop, dtype=torch.float64)
        correct = torch.zeros(pop, dtype=torch.float64)
        if generators is not None:
            order = torch.stack([torch.randperm(n, generator=g) for g in generators])
        for lo in range(0, n, bs):
            if generators is None:
                xb, yb = x_tr, y_tr.expand(pop, n)
            else:
                idx = order[:, lo : lo + bs]
                xb, yb = x_tr[idx], y_tr[idx]
            rows = yb.shape[1]
            logits = stack.forward(xb, extremes=use_js)
            task = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, yb, reduction="none").mean(1)
            total = task
            if use_js:
                leaves = stack.extremes(rows)
                units, points = leaves
                pen = _penalty(units[0], units[1], points[0], points[1], unit_mask, layer_mask,
                               rows * stack.rows_per_point, **opts)
                extra = torch.cat([lam * pen.detach(), task.new_zeros(pop - reg)])
                total = task + extra
            alive &= torch.isfinite(total)
            live = alive.to(torch.float64)
            penalty = None
            if use_js:
                coefs = torch.autograd.grad(torch.where(alive[:reg], lam * pen, 0.0).sum(),
                                            leaves)
                coefs = [c.contiguous() for c in coefs]
                penalty = (coefs, average)
            # d mean-BCE / d logits, zero for diverged members
            dz = torch.where(alive[:, None], (torch.sigmoid(logits) - yb) / rows, 0.0)
            stack.backward(xb, dz, penalty)
            adam.step(stack.grads)
            loss_sum += task.double() * rows * live
            if use_js:
                pen_sum += extra.double() * rows * live
            correct += ((logits > 0).to(yb.dtype) == yb).sum(1).double()
        with torch.no_grad():
            val_correct = ((stack.forward(x_va) > 0).long() == y_va).sum(1)
        now = {"loss": loss_sum / n, "penalty": pen_sum / n, "train_acc": correct / n,
               "val_acc": val_correct.double() / max(1, x_va.shape[0])}
        for k, v in now.items():
            last[k] = torch.where(alive, v, last[k])
        best_train = torch.where(alive, torch.maximum(best_train, now["train_acc"]), best_train)
        best_val = torch.where(alive, torch.maximum(best_val, now["val_acc"]), best_val)
        done_epochs = torch.where(alive, epoch, done_epochs)
        if epoch % curve_every == 0 or epoch == epochs:
            curves["epoch"].append(epoch)
            for k in ("loss", "penalty", "train_acc", "val_acc"):
                curves[k].append(now[k].clone())
        if progress is not None:
            progress(epoch)
        if not bool(alive.any()):
            break
    seconds = time.perf_counter() - start

    results = []
    for p in range(pop):
        net = stack.member(p)
        status = activation_status(net, data.x_train, granularity=granularity)
        diverged = not bool(alive[p])
        metrics = {
            "train_acc": float(last["train_acc"][p]), "best_train_acc": float(best_train[p]),
            "val_acc": float(last["val_acc"][p]), "best_val_acc": float(best_val[p]),
            "final_loss": float(last["loss"][p]), "epochs": int(done_epochs[p]),
            "seconds": round(seconds / pop, 3), "diverged": diverged,
            "status": status.ratios(),
        }
        keep = [i for i, e in enumerate(curves["epoch"]) if e <= int(done_epochs[p])]
        member_curves = {"epoch": [curves["epoch"][i] for i in keep]}
        for k in ("loss", "penalty", "train_acc", "val_acc"):
            member_curves[k] = [float(curves[k][i][p]) for i in keep]
        results.append(MemberResult(metrics, member_curves, net))
    restored = [None] * pop  # back to the caller's member order
    for position, original in enumerate(placement):
        restored[original] = results[position]
    return restored
