"""Population training in hand-written stacks: many small ReLU nets at once.

Thousands of tiny networks are dominated by per-operation overhead, not
arithmetic. A population stacks the weights of ``P`` nets into
``(P, out, in)`` tensors and runs each pass over all members at once: the
dense stack in fused kernels that loop over each member's own units
(:mod:`jumpstart.train.stacks.kernels`), the MOONS conv stack as batched matmuls.
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
:mod:`jumpstart.train.stacks.layers`), so one population can hold a whole grid.

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

import copy
import time
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ...core.deficits import Deficits
from ...core.regularizer import JUMPSTART_OPTIONS, aggregate, check_options
from ...core.status import status_ratios
from ...data import DATASETS
from ...models import MoonsConv, Rectangular
from ...models.registry import MODEL_FAMILIES, model_family
from ...optim import MemberAdam, is_plain_adam
from ..fast_path import flushing
from ..history import History, MemberResult
from ..loop import check_schedule
from ..run_options import RunConfig, group_by
from .layers import DenseStack, MoonsConvStack


@dataclass(frozen=True)
class Member:
    """One network of a population: its width, init seed, Jumpstart ``lam``
    and depth (``None``: the population's ``depth``)."""

    width: int
    seed: int
    lam: float = 0.0
    depth: int | None = None


def refusal(run: RunConfig) -> str | None:
    """Why :func:`train_stacked` cannot run this run exactly, or ``None``.

    The stacks take runs whose whole effect is a Jumpstart penalty (the
    technique declares ``"stacks"``), on a built-in binary data set, a model
    family that declares ``"stacks"`` (dense, MoonsConv) with Glorot init,
    float32, plain Adam (no weight decay, no schedule); for MoonsConv also
    per-position deficits and full batch.
    """
    technique = run.technique
    if "stacks" not in technique.supports:
        return f"technique {technique.name!r} does not declare stacks support"
    if run["dataset"] not in DATASETS:
        return f"data set {run['dataset']!r} is not a built-in binary data set"
    if "stacks" not in model_family(run["model"]).supports:
        return (f"model {run['model']!r} is not a family the stacks build ("
                + ", ".join(n for n, f in MODEL_FAMILIES.items() if "stacks" in f.supports)
                + ")")
    if run["init"] != "glorot":
        return "the stacks build Glorot-initialized nets only"
    if run["precision"] == "bf16":
        return "the stacks train in float32 only"
    if run["augment"] != "none":
        return "the stacks train on unaugmented data only"
    if run["test_split"] is not None:
        return "the stacks hold no test part (test_split)"
    if run["init_diversity"]:
        return "the diversity at init is measured by the single-run loop"
    if not is_plain_adam(run.optimizer):
        return "the stacks train with plain Adam only (no weight decay, no lr schedule)"
    if run["model"] == "moons_conv" and not (
            technique.config.get("granularity") in (None, "position")
            and run.batch_size is None):
        return "MoonsConv stacks take granularity 'position' and full batch only"
    return None


def stack_spec(technique) -> tuple[float, dict]:
    """``(lam, Jumpstart options)`` of a technique that runs in the stacks: its
    whole effect is the Jumpstart penalty its config describes (``lam`` 0 and
    no options when it has none, e.g. the baseline)."""
    config = technique.config
    return (float(config.get("lam", 0.0)),
            {k: config[k] for k in JUMPSTART_OPTIONS if k != "lam" and k in config})


def stack_parts(runs: list[RunConfig]) -> list[list[RunConfig]]:
    """Populations for the stacks: one per learning rate and penalty options;
    unpenalized runs (``lam = 0``, e.g. the baseline) join the first
    population of their learning rate, where they cost no penalty work."""
    specs = {id(r): stack_spec(r.technique) for r in runs}
    parts = []
    for same_lr in group_by(runs, lambda r: r["lr"]):
        plain = [r for r in same_lr if specs[id(r)][0] == 0]
        penalized = group_by([r for r in same_lr if specs[id(r)][0] > 0],
                             lambda r: specs[id(r)][1])
        if penalized:
            penalized[0] += plain
        parts += penalized or [plain]
    return parts


def train_runs(runs: list[RunConfig], data_of=None) -> list[tuple[RunConfig, MemberResult]]:
    """The stacks' entry for a group of runs (:mod:`jumpstart.train.group`):
    they share data set, model, epochs, batch size and curve spacing and each
    passes :func:`refusal`; trained as the populations of :func:`stack_parts`
    (``data_of`` is unused: the stacks load their built-in data set).

    Returns:
        ``(run, result)`` per run, in any order.
    """
    out = []
    for part in stack_parts(runs):
        first = part[0]
        members = [Member(r["width"], r["seed"], stack_spec(r.technique)[0], r["depth"])
                   for r in part]
        results = train_stacked(
            members, dataset=first["dataset"], model=first["model"], epochs=first["epochs"],
            lr=first["lr"], batch_size=first.batch_size,
            jumpstart=stack_spec(first.technique)[1], curve_every=first["curve_every"])
        out += zip(part, results)
    return out


def _member_terms(t: Tensor) -> Tensor:
    """``(L, P, X)`` per-layer values as ``(P, L * X)`` per-member terms."""
    return t.transpose(0, 1).reshape(t.shape[1], -1)


def _penalty(u_max: Tensor, u_min: Tensor, p_max: Tensor, p_min: Tensor,
             masks: tuple[Tensor, Tensor], *, margin: float, **aggregation) -> Tensor:
    """Per-member penalty ``P`` (shape ``(P,)``) from stacked extremes.

    ``u_max``/``u_min``: unit extremes over samples, ``(L, P, W)``;
    ``p_max``/``p_min``: point extremes over real units, ``(L, P, N)``. The
    deficits of CPAIOR eqs. (9)-(12), aggregated by
    :func:`jumpstart.core.aggregate` per member with ``masks`` (unit and point
    weights, :func:`_masks`) leaving padded units and pass-through layers out
    of every term and count.
    """
    m = margin
    deficits = Deficits(*(_member_terms(t) for t in (
        torch.relu(m - u_max), torch.relu(m + u_min), torch.relu(m - p_max),
        torch.relu(m + p_min))))
    return aggregate([deficits], masks=masks, **aggregation)


def _masks(unit_mask: Tensor, layer_mask: Tensor, points: int) -> tuple[Tensor, Tensor]:
    """0/1 weights of the per-member unit terms ``(P, L * W)`` (a unit of a
    member's own layer) and point terms ``(P, L * points)`` (a member's own
    layer), from ``unit_mask`` ``(P, W)`` and ``layer_mask`` ``(L, P)``."""
    layers = layer_mask.to(torch.float32)
    units = layers[..., None] * unit_mask.to(torch.float32)[None]
    return _member_terms(units), _member_terms(layers[..., None].expand(-1, -1, points))


@flushing()  # denormals flushed while training, as in every trainer
def train_stacked(
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
    """Train a population of ReLU nets at once in the hand-written stacks.

    ``model`` is ``"rectangular"`` (dense) or ``"moons_conv"`` (the CPAIOR
    Keras MOONS net, deficits with granularity ``"position"``, full batch).
    Numerically each member is ``train_run(dataset=..., model=model,
    depth=member.depth, width=member.width, lam=member.lam, seed=member.seed, ...)``:
    the same initialization, minibatch order (``batch_size`` set), loss
    ``task + lam * P`` (CPAIOR eq. (7)) and Adam, up to float rounding. A
    member whose loss becomes NaN/inf stops being recorded there and is
    reported diverged, as :func:`~jumpstart.train.fit` reports it: metrics of
    its last finished epoch (NaN with none), status of the net as it was at
    that step (NaN where undefined).

    Args:
        members: the networks, ``len >= 1``.
        depth: the depth of members that do not set their own.
        dataset, epochs, lr, batch_size: shared training settings.
        jumpstart: shared Jumpstart options (``margin``, ``aggregation``,
            ``sign_balance``, ``constraints``, ``tie_break``; defaults from
            :data:`~jumpstart.core.regularizer.JUMPSTART_OPTIONS`).
        curve_every: record curves every this many epochs (and at the end).
        progress: optional callable ``progress(epochs_done)``.

    Returns:
        One :class:`~jumpstart.train.history.MemberResult` per member, in order.

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
    given = dict(jumpstart or {})
    if "lam" in given:
        raise ValueError("train_stacked takes lam per member (Member.lam), not in jumpstart=")
    if model == "moons_conv":
        given.setdefault("granularity", "position")
    opts = check_options(**given)
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
        if opts["granularity"] != "position":
            raise ValueError("MoonsConv populations use granularity 'position'")
        if batch_size is not None:
            raise ValueError("MoonsConv populations train full batch")
        stack = MoonsConvStack(nets)
    else:
        stack = DenseStack(nets)
    granularity = "position" if model == "moons_conv" else "channel"
    aggregation = {k: opts[k] for k in ("aggregation", "sign_balance", "constraints")}
    lam_all = torch.tensor([m.lam for m in members])
    reg = int((lam_all > 0).sum())
    use_js = reg > 0
    lam = lam_all[:reg]
    stack.regularize(reg)
    average = opts["tie_break"] == "average"
    stack.keep_g = average
    masks = {}  # by batch rows
    adam = MemberAdam(stack.params, lr)
    bs = n if batch_size is None else min(batch_size, n)
    generators = [torch.Generator().manual_seed(m.seed) for m in members] if bs < n else None
    history = History(pop, epochs, curve_every, keys=("loss", "penalty", "train_acc", "val_acc"))
    frozen: dict = {}  # diverged members (placement order), at their last finite step
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
                if rows not in masks:
                    masks[rows] = _masks(stack.unit_mask, stack.layer_mask,
                                         rows * stack.rows_per_point)
                leaves = stack.extremes(rows)
                units, points = leaves
                pen = _penalty(units[0], units[1], points[0], points[1], masks[rows],
                               margin=opts["margin"], **aggregation)
                extra = torch.cat([lam * pen.detach(), task.new_zeros(pop - reg)])
                total = task + extra
            for p in history.stop(torch.isfinite(total)):
                frozen[p] = copy.deepcopy(stack.member(p))  # before this update, as fit stops
            alive = history.alive
            live = alive.to(torch.float64)
            penalty = None
            if use_js:
                coefs = torch.autograd.grad(torch.where(alive[:reg], lam * pen, 0.0).sum(),
                                            leaves, allow_unused=True)
                # a constraint subset leaves the unit or the point extremes unused
                coefs = [torch.zeros_like(t) if c is None else c.contiguous()
                         for c, t in zip(coefs, leaves)]
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
        history.record(epoch, {"loss": loss_sum / n, "penalty": pen_sum / n,
                               "train_acc": correct / n,
                               "val_acc": val_correct.double() / max(1, x_va.shape[0])})
        if progress is not None:
            progress(epoch)
        if not bool(history.alive.any()):
            break
    seconds = time.perf_counter() - start

    results = []
    for p in range(pop):
        net = frozen[p] if p in frozen else stack.member(p)
        metrics = {**history.metrics(p, seconds / pop),
                   "status": status_ratios(net, data.x_train, granularity=granularity)}
        results.append(MemberResult(metrics, history.member_curves(p), net))
    restored = [None] * pop  # back to the caller's member order
    for position, original in enumerate(placement):
        restored[original] = results[position]
    return restored
