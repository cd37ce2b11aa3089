"""Population training: many small dense nets of one depth trained at once.

Thousands of tiny networks are dominated by per-operation overhead, not
arithmetic. A population stacks the weights of ``P`` Rectangular nets of the
same depth into ``(P, out, in)`` tensors and runs every layer as one batched
matmul. Narrower nets are zero-padded to the widest: a padded unit has zero
incoming weights and bias, so its pre-activation is exactly 0, ReLU's gradient
at 0 is 0, and its outgoing weights multiply an output of 0; it therefore gets
and sends no gradient, Adam leaves it at zero, and the penalty and the status
exclude it. Adam is elementwise, so one Adam over the stacked tensors is each
member's own Adam. Each member starts from exactly the weights
``train_run`` would build for it (same seed), so a member follows the
single-run trajectory up to float rounding (different matmul summation order).

Members may differ in width, seed and ``lam``; they share the data set, depth,
epochs, learning rate, batch size and Jumpstart options.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.regularizer import CONSTRAINTS
from ..core.status import activation_status
from ..data import DATASETS
from ..models import Rectangular


@dataclass(frozen=True)
class Member:
    """One network of a population: its width, init seed and Jumpstart ``lam``."""

    width: int
    seed: int
    lam: float = 0.0


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
        model: the trained member as a standalone ``Rectangular``.
    """

    metrics: dict
    curves: dict
    model: Rectangular


def _extremes(g: Tensor, offsets: tuple[Tensor, Tensor], tie_break: str) -> list[Tensor]:
    """Unit max/min ``(P, W)`` (over samples) and point max/min ``(P, N)`` (over
    real units) of one layer's pre-activations ``g`` of shape ``(P, N, W)``.

    ``offsets`` are ``(P, 1, W)`` tensors, 0 on real units and -inf / +inf on
    padded ones, so padded units never win a point reduction; their unit
    extremes are dropped later by the mask.
    """
    lo_off, hi_off = offsets
    g_hi, g_lo = g + lo_off, g + hi_off
    if tie_break == "average":
        return [g.amax(1), g.amin(1), g_hi.amax(2), g_lo.amin(2)]
    return [g.max(1).values, g.min(1).values, g_hi.max(2).values, g_lo.min(2).values]


def _penalty(ext: list[list[Tensor]], mask: Tensor, n_points: int, *, margin: float,
             aggregation: str, sign_balance: float, constraints, tie_break: str) -> Tensor:
    """Per-member penalty ``P`` (shape ``(P,)``) from per-layer extremes.

    The same deficits and aggregation as :func:`jumpstart.core.aggregate`,
    batched over members, with padded units (``mask`` False, shape ``(P, W)``)
    left out of every reduction and every count.
    """
    u_max, u_min, p_max, p_min = (torch.stack(t) for t in zip(*ext))  # (L, P, W|N)
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
    layers = u_max.shape[0]
    if unit is not None:
        unit = unit * mask  # padded units' terms are dropped
    n_units = mask.sum(1).to(u_max.dtype) * layers  # (P,)
    counts = torch.full_like(n_units, layers * n_points)
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


def train_population(
    members: list[Member],
    *,
    dataset: str = "moons",
    depth: int,
    epochs: int = 5000,
    lr: float = 0.01,
    batch_size: int | None = None,
    jumpstart: dict | None = None,
    curve_every: int = 50,
    progress=None,
) -> list[MemberResult]:
    """Train a population of Rectangular ReLU nets of one depth at once.

    Numerically each member is ``train_run(dataset=..., depth=depth,
    width=member.width, lam=member.lam, seed=member.seed, ...)``: the same
    initialization, minibatch order (``batch_size`` set), loss ``task +
    lam * P`` (CPAIOR eq. (7)) and Adam, up to float rounding. A member whose
    loss becomes NaN/inf is frozen there and reported diverged.

    Args:
        members: the networks, ``len >= 1``.
        dataset, depth, epochs, lr, batch_size: shared training settings.
        jumpstart: shared Jumpstart options (``margin``, ``aggregation``,
            ``sign_balance``, ``constraints``, ``tie_break``).
        curve_every: record curves every this many epochs (and at the end).
        progress: optional callable ``progress(epochs_done)``.

    Returns:
        One :class:`MemberResult` per member, in order.

    Raises:
        ValueError: no members, unknown data set or options, bad sizes.
    """
    if not members:
        raise ValueError("a population needs at least one member")
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; allowed: {', '.join(DATASETS)}")
    opts = {"margin": 1.0, "aggregation": "balanced", "sign_balance": 0.5,
            "constraints": CONSTRAINTS, "tie_break": "single", **(jumpstart or {})}
    if any(m.lam > 0 for m in members):
        from ..core.regularizer import _check_options

        opts["constraints"] = _check_options(opts["margin"], opts["aggregation"],
                                             opts["sign_balance"], opts["constraints"],
                                             opts["tie_break"])
    if not (isinstance(epochs, int) and epochs >= 1):
        raise ValueError(f"epochs must be an integer >= 1; got {epochs!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0; got {lr!r}")
    if any(not m.lam >= 0 for m in members):
        raise ValueError(f"lam must be >= 0; got {[m.lam for m in members]}")
    data = DATASETS[dataset]()
    if data.num_classes != 2:
        raise ValueError("population training supports binary data sets (one logit) for now")
    x_tr, y_tr = data.x_train.flatten(1), data.y_train.float()
    x_va, y_va = data.x_val.flatten(1), data.y_val
    n, features = x_tr.shape
    pop = len(members)
    wmax = max(m.width for m in members)

    # Stack each member's own initialization, zero-padded to wmax.
    singles = []
    for m in members:
        torch.manual_seed(m.seed)
        singles.append(Rectangular(depth, m.width, features, 1))
    weights, biases = [], []
    for layer in range(depth + 1):
        rows = 1 if layer == depth else wmax
        cols = features if layer == 0 else wmax
        w = torch.zeros(pop, rows, cols)
        b = torch.zeros(pop, rows)
        for p, net in enumerate(singles):
            lin = net.output if layer == depth else net.linears[layer]
            w[p, : lin.out_features, : lin.in_features] = lin.weight.detach()
            b[p, : lin.out_features] = lin.bias.detach()
        weights.append(w.requires_grad_())
        biases.append(b.requires_grad_())
    params = [t for pair in zip(weights, biases) for t in pair]
    mask = torch.arange(wmax)[None, :] < torch.tensor([m.width for m in members])[:, None]
    lam = torch.tensor([m.lam for m in members])
    use_js = bool((lam > 0).any())
    optimizer = torch.optim.Adam(params, lr=lr, foreach=True)
    bs = n if batch_size is None else min(batch_size, n)
    generators = [torch.Generator().manual_seed(m.seed) for m in members] if bs < n else None

    offsets = (torch.zeros(pop, 1, wmax).masked_fill(~mask[:, None, :], -math.inf),
               torch.zeros(pop, 1, wmax).masked_fill(~mask[:, None, :], math.inf))

    def forward(x: Tensor, keep: list[list[Tensor]] | None) -> Tensor:
        h = x
        for layer in range(depth):
            w, b = weights[layer], biases[layer]
            g = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2)) if h.dim() == 3 else \
                torch.matmul(h, w.transpose(1, 2)) + b.unsqueeze(1)
            if keep is not None:
                keep.append(_extremes(g, offsets, opts["tie_break"]))
            h = torch.relu(g)
        return torch.baddbmm(biases[depth].unsqueeze(1), h, weights[depth].transpose(1, 2))[..., 0]

    alive = torch.ones(pop, dtype=torch.bool)
    done_epochs = torch.zeros(pop, dtype=torch.long)
    best_train = torch.zeros(pop)
    best_val = torch.zeros(pop)
    last = {k: torch.zeros(pop) for k in ("loss", "penalty", "train_acc", "val_acc")}
    curves = {k: [] for k in ("epoch", "loss", "penalty", "train_acc", "val_acc")}
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        loss_sum = torch.zeros(pop)
        pen_sum = torch.zeros(pop)
        correct = torch.zeros(pop)
        if generators is not None:
            order = torch.stack([torch.randperm(n, generator=g) for g in generators])
        for lo in range(0, n, bs):
            if generators is None:
                xb, yb = x_tr, y_tr.expand(pop, n)
            else:
                idx = order[:, lo : lo + bs]
                xb, yb = x_tr[idx], y_tr[idx]
            gs: list[list[Tensor]] | None = [] if use_js else None
            logits = forward(xb, gs)
            task = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, yb.expand_as(logits), reduction="none").mean(1)
            total = task
            if use_js:
                pen = _penalty(gs, mask, yb.shape[-1], **opts)
                total = task + lam * pen
                pen_sum += pen.detach() * yb.shape[-1]
            alive &= torch.isfinite(total.detach())
            optimizer.zero_grad(set_to_none=True)
            torch.where(alive, total, 0.0).sum().backward()
            if not bool(alive.all()):  # freeze diverged members where they are
                for t in params:
                    t.grad[~alive] = 0
            optimizer.step()
            loss_sum += task.detach() * yb.shape[-1]
            correct += ((logits.detach() > 0).float() == yb.expand_as(logits)).sum(1)
        with torch.no_grad():
            val_correct = ((forward(x_va, None) > 0).long() == y_va).sum(1)
        now = {"loss": loss_sum / n, "penalty": pen_sum / n, "train_acc": correct / n,
               "val_acc": val_correct.float() / max(1, x_va.shape[0])}
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
    for p, (m, net) in enumerate(zip(members, singles)):
        with torch.no_grad():
            for layer in range(depth + 1):
                lin = net.output if layer == depth else net.linears[layer]
                lin.weight.copy_(weights[layer][p, : lin.out_features, : lin.in_features])
                lin.bias.copy_(biases[layer][p, : lin.out_features])
        status = activation_status(net, data.x_train)
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
    return results
