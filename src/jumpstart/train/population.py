"""Generic population training: ``P`` Rectangular nets of one architecture,
any technique, trained at once with autograd.

:class:`PopulationNet` holds the weights of ``P`` identical-architecture
:class:`~jumpstart.models.Rectangular` nets stacked along a leading member
dimension and runs each layer as one batched matmul, so per-operation overhead
is paid once for the whole population. Members are independent: no parameter,
normalization statistic or loss term couples two of them, so the gradient of
the summed member losses is each member's own gradient, and Adam (elementwise,
:class:`~jumpstart.optim.MemberAdam`) with a per-member learning rate is
each member's own Adam. Each member therefore follows the trajectory of
:func:`jumpstart.train.fit` on its own net, up to float rounding.

Techniques that declare ``"population"`` in ``supports`` reach the population
through their usual hooks (:class:`~jumpstart.techniques.TrainContext`): model
options shape every member alike (batch normalization, skips, GELU), hooks see
pre-activations of shape ``(P, N, W)``, the optimizer is a
:class:`~jumpstart.optim.MemberAdam` over parameters with a leading member
dimension; a population advertises itself with ``model.members = P`` (the
Jumpstart technique then takes deficits per member). Other techniques are
refused with a message.
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.hooks import ActivationRecorder
from ..core.status import status_ratios
from ..data.base import Dataset
from ..models import Rectangular
from ..models.registry import model_family
from ..data import FOLDER_SETS, IMAGE_SETS
from ..optim import MemberAdam, is_plain_adam
from ..techniques import Technique, TrainContext
from .fast_path import flushing
from .history import History, MemberResult
from .loop import check_schedule, predict, task_loss
from .build import build_model
from .run_options import RunConfig, group_by


def _stack(tensors) -> Tensor:
    return torch.stack([t.detach().clone() for t in tensors])


class PopulationNet(nn.Module):
    """``P`` Rectangular nets of one architecture as one module.

    Parameters (member dimension first): ``w_first`` ``(P, W, F)``,
    ``w_hidden`` ``(P, L-1, W, W)``, ``b_hidden`` ``(P, L, W)`` (without
    batch normalization only), ``w_out``
    ``(P, K, W)``, ``b_out`` ``(P, K)``; with batch normalization ``bn_weight``
    and ``bn_bias`` ``(P, L, W)`` and buffers ``running_mean`` /
    ``running_var`` ``(L, P * W)`` (PyTorch's BatchNorm1d per (member, unit)).

    Args:
        nets: ``P >= 1`` Rectangular nets of equal depth, width, input and
            output sizes, activation, norm and skip; their current weights
            are copied.

    Raises:
        ValueError: no nets, or nets of different architectures.
    """

    def __init__(self, nets: list[Rectangular]) -> None:
        super().__init__()
        if not nets:
            raise ValueError("a population needs at least one net")
        t = nets[0]
        if any(n.kind != "dense" for n in nets):
            raise ValueError("population nets must be dense Rectangular nets")
        arch = [(n.depth, n.width, n.linears[0].in_features, n.output.out_features, n.skip,
                 type(n.activations[0]), type(n.norms[0])) for n in nets]
        if len(set(arch)) != 1:
            raise ValueError(f"population nets differ in architecture: {sorted(set(map(str, arch)))}")
        self.members, self.depth, self.width, self.skip = len(nets), t.depth, t.width, t.skip
        self._template = [copy.deepcopy(t)]  # a list: not registered as a submodule
        self.w_first = nn.Parameter(_stack(n.linears[0].weight for n in nets))
        self.w_hidden = nn.Parameter(_stack(
            torch.stack([lin.weight for lin in n.linears[1:]]) if t.depth > 1
            else torch.zeros(0, t.width, t.width) for n in nets))
        self.norm = isinstance(t.norms[0], nn.BatchNorm1d)
        if not self.norm:  # normalized layers have no bias (Rectangular)
            self.b_hidden = nn.Parameter(_stack(torch.stack([lin.bias for lin in n.linears])
                                                for n in nets))
        self.w_out = nn.Parameter(_stack(n.output.weight for n in nets))
        self.b_out = nn.Parameter(_stack(n.output.bias for n in nets))
        if self.norm:
            self.bn_weight = nn.Parameter(_stack(torch.stack([b.weight for b in n.norms])
                                                 for n in nets))
            self.bn_bias = nn.Parameter(_stack(torch.stack([b.bias for b in n.norms])
                                               for n in nets))
            for name in ("running_mean", "running_var"):
                per = _stack(torch.stack([getattr(b, name) for b in n.norms]) for n in nets)
                self.register_buffer(name, per.transpose(0, 1).reshape(t.depth, -1).contiguous())
            self.momentum, self.eps = t.norms[0].momentum, t.norms[0].eps
            self.batches_tracked = 0  # BatchNorm1d.num_batches_tracked of every member
        self.activations = nn.ModuleList(type(a)() for a in t.activations)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(P, N, K)`` for ``x`` of shape ``(N, F)`` (shared) or ``(P, N, F)``."""
        k = self.skip
        residual = x
        if self.norm and self.training:
            self.batches_tracked += 1
        for i, act in enumerate(self.activations):
            if k and i >= 1 and (i - 1) % k == 0:
                residual = x
            w = self.w_first if i == 0 else self.w_hidden[:, i - 1]
            g = torch.matmul(x, w.transpose(1, 2))
            if not self.norm:
                g = g + self.b_hidden[:, i, None, :]
            else:
                p, n, width = g.shape
                flat = g.transpose(0, 1).reshape(n, p * width)
                flat = F.batch_norm(flat, self.running_mean[i], self.running_var[i],
                                    self.bn_weight[:, i].reshape(-1),
                                    self.bn_bias[:, i].reshape(-1),
                                    self.training, self.momentum, self.eps)
                g = flat.reshape(n, p, width).transpose(0, 1)
            if k and i >= 1 and i % k == 0:
                g = g + residual
            x = act(g)
        return torch.baddbmm(self.b_out[:, None, :], x, self.w_out.transpose(1, 2))

    def member_lr(self, lr: Tensor) -> list[Tensor]:
        """Per-parameter views of per-member learning rates ``lr`` ``(P,)``, for Adam."""
        return [lr.view(-1, *[1] * (p.dim() - 1)) for p in self.parameters()]

    def member(self, p: int) -> Rectangular:
        """Member ``p`` as a standalone :class:`~jumpstart.models.Rectangular` (a copy)."""
        net = copy.deepcopy(self._template[0])
        with torch.no_grad():
            net.linears[0].weight.copy_(self.w_first[p])
            for i, lin in enumerate(net.linears):
                if not self.norm:
                    lin.bias.copy_(self.b_hidden[p, i])
                if i:
                    lin.weight.copy_(self.w_hidden[p, i - 1])
            net.output.weight.copy_(self.w_out[p])
            net.output.bias.copy_(self.b_out[p])
            if self.norm:
                w = self.width
                for i, bn in enumerate(net.norms):
                    bn.weight.copy_(self.bn_weight[p, i])
                    bn.bias.copy_(self.bn_bias[p, i])
                    bn.running_mean.copy_(self.running_mean[i, p * w:(p + 1) * w])
                    bn.running_var.copy_(self.running_var[i, p * w:(p + 1) * w])
                    bn.num_batches_tracked.fill_(self.batches_tracked)
        return net.eval()


def _stack_parts(datas: list[Dataset], part: str) -> tuple[Tensor, Tensor]:
    xs = [getattr(d, f"x_{part}").flatten(1) for d in datas]
    ys = [getattr(d, f"y_{part}") for d in datas]
    if all(d is datas[0] for d in datas):
        return xs[0], ys[0].expand(len(datas), -1)
    if len({x.shape for x in xs}) != 1:
        raise ValueError(f"population members' {part} parts differ in shape: "
                         f"{sorted({tuple(x.shape) for x in xs})}")
    return torch.stack(xs), torch.stack(ys)


def _no_replacement(technique: Technique, ctx: TrainContext) -> None:
    if ctx.replacement is not None:
        raise ValueError(f"technique {technique.name!r} replaced the model, which population "
                         "training cannot do; it must not declare population support")


def technique_refusal(technique: Technique) -> str | None:
    """Why :func:`train_population` cannot run ``technique``, or ``None``: it
    must declare ``"population"`` and, when it has a ``granularity``,
    ``"channel"``."""
    if "population" not in technique.supports:
        return (f"technique {technique.name!r} does not declare population support "
                "(supports: " + (", ".join(sorted(technique.supports)) or "none") + "); "
                "train it with fit / train_run")
    if technique.granularity != "channel":
        return "population deficits are per channel (granularity 'channel') only"
    return None


def refusal(run: RunConfig) -> str | None:
    """Why :func:`train_population` cannot run ``run`` exactly, or ``None``:
    the technique as :func:`technique_refusal`; the run a family that
    declares ``"population"`` (the dense net) in float32 under plain Adam (no
    weight decay, no learning-rate schedule) on in-memory, unaugmented flat
    features, with the decorrelated init at its default steps and rate."""
    reason = technique_refusal(run.technique)
    if reason is not None:
        return reason
    if "population" not in model_family(run["model"]).supports:
        return f"model {run['model']!r} is not a dense rectangular net"
    if run["precision"] == "bf16":
        return "population training is float32 only"
    if run["dataset"] in FOLDER_SETS:
        return "population training needs in-memory data"
    if run["augment"] != "none":
        return "population training takes no augmentation"
    if run["dataset"] in IMAGE_SETS:
        return "population training takes flat features, not images"
    if not is_plain_adam(run.optimizer):
        return "population training uses plain Adam only (no weight decay, no lr schedule)"
    if run["init_diversity"]:
        return "the diversity at init is measured by the single-run loop"
    if "init_steps" in run.record or "init_lr" in run.record:
        return "the decorrelated init's steps and rate are options of the single-run loop"
    return None


def train_runs(runs: list[RunConfig], data_of) -> list[tuple[RunConfig, MemberResult]]:
    """The population trainer's entry for a group of runs
    (:mod:`jumpstart.train.group`): each passes :func:`refusal`; runs equal
    but for seed and learning rate train as one population, member ``p`` on
    ``data_of(run)``.

    Returns:
        ``(run, result)`` per run, in any order.
    """
    out = []
    for part in group_by(runs, lambda r: {k: v for k, v in r.record.items()
                                          if k not in ("seed", "lr")}):
        first = part[0]
        results = train_population(
            [data_of(r) for r in part], technique=first.technique, depth=first["depth"],
            width=first["width"], seeds=[r["seed"] for r in part],
            lrs=[r["lr"] for r in part], epochs=first["epochs"], batch_size=first.batch_size,
            init=first["init"], curve_every=first["curve_every"])
        out += zip(part, results)
    return out


@flushing()  # denormals flushed while training, as in every trainer
def train_population(
    datas: list[Dataset],
    *,
    technique: Technique,
    depth: int,
    width: int,
    seeds: list[int],
    lrs: list[float],
    epochs: int,
    batch_size: int | None = None,
    init: str = "glorot",
    curve_every: int = 50,
) -> list[MemberResult]:
    """Train ``P`` dense nets, member ``p`` on ``datas[p]`` with seed ``seeds[p]``
    and Adam learning rate ``lrs[p]``, all with ``technique``.

    Member ``p`` is numerically :func:`jumpstart.train.fit` of the net
    ``train_run`` builds for that seed (``torch.manual_seed(seed)`` then
    ``Rectangular(depth, width, F, K, **technique.model_options(...))``), up to
    float rounding: same initialization, minibatch order (a generator seeded
    with ``seed``), loss ``task + technique.loss(ctx)`` and Adam. A member whose
    loss becomes NaN/inf is reported diverged with the net as it was at that
    step (as :func:`~jumpstart.train.fit` stops there): metrics of its last
    finished epoch, status of that net (undefined, NaN, when its
    pre-activations are non-finite). (With
    Jumpstart's tie-break ``"single"`` the gradient of a max goes to one
    element; where two candidates are equal up to rounding, the batched and
    the single computation may pick different ones, after which the two
    trajectories part; both are valid runs of the method. ``"average"`` has no
    such point.)

    Per epoch: ``train_acc`` of the training forwards, then ``val_acc`` and
    ``test_acc`` (when the data have a test part) in eval mode. The metrics
    add ``best_val_test_acc``: test accuracy at the first epoch of best
    validation accuracy (early stopping, IEEE Access 2025 protocol with a
    held-out test part). Status: on the training set after the last epoch.

    Args:
        datas: one :class:`Dataset` per member; parts of equal shapes (the
            same object for all members is cheapest).
        technique: built technique, shared by all members.
        depth, width, init: the Rectangular architecture.
        seeds, lrs: per member.
        epochs, batch_size (``None``: full batch), curve_every: as :func:`fit`.

    Returns:
        One :class:`~jumpstart.train.history.MemberResult` per member.

    Raises:
        ValueError: a technique without population support (:func:`refusal`),
            mismatched lengths, bad sizes, parts of unequal shapes, a
            technique the model family cannot take.
    """
    reason = technique_refusal(technique)
    if reason is not None:
        raise ValueError(f"the population trainer refuses this run: {reason}")
    pop = len(datas)
    if not pop or len(seeds) != pop or len(lrs) != pop:
        raise ValueError(f"need equally many (>= 1) datas, seeds and lrs; got "
                         f"{pop}, {len(seeds)}, {len(lrs)}")
    for lr in lrs:
        check_schedule(lr, epochs, batch_size)
    first = datas[0]
    if first.x_train.dim() != 2:
        raise ValueError(f"population training takes flat features (N, F); {first.name} has "
                         f"shape {tuple(first.x_train.shape[1:])}: train it with fit / train_run")
    nets = []
    for seed in seeds:  # each member as train_run builds it
        torch.manual_seed(seed)
        nets.append(build_model("rectangular", technique, first.num_classes,
                                tuple(first.x_train.shape[1:]), dataset=first.name,
                                depth=depth, width=width, init=init, head="flatten"))
    model = PopulationNet(nets)
    x_tr, y_tr = _stack_parts(datas, "train")
    x_va, y_va = _stack_parts(datas, "val")
    has_test = first.x_test is not None
    x_eval, y_eval, n_val = x_va, y_va, y_va.shape[1]
    if has_test:  # eval mode: samples are independent, so one forward serves both parts
        x_te, y_te = _stack_parts(datas, "test")
        x_eval, y_eval = torch.cat([x_va, x_te], dim=-2), torch.cat([y_va, y_te], dim=1)
    n = y_tr.shape[1]
    bs = n if batch_size is None else min(batch_size, n)
    generators = [torch.Generator().manual_seed(s) for s in seeds] if bs < n else None
    params = list(model.parameters())
    adam = MemberAdam(params, model.member_lr(torch.tensor(lrs, dtype=torch.float32)))
    keys = ("loss", "penalty", "train_acc", "val_acc") + (("test_acc",) if has_test else ())
    history = History(pop, epochs, curve_every, keys=keys)
    rows = torch.arange(pop)[:, None]
    frozen: dict[int, Rectangular] = {}  # diverged members, at their last finite step
    ctx = TrainContext(model, adam)
    recorder = ActivationRecorder(model) if technique.needs_activations else None
    technique.attach(ctx)
    start = time.perf_counter()
    try:
        for epoch in range(1, epochs + 1):
            ctx.epoch = epoch
            model.train()
            loss_sum = torch.zeros(pop, dtype=torch.float64)
            extra_sum = torch.zeros(pop, dtype=torch.float64)
            correct = torch.zeros(pop, dtype=torch.float64)
            order = (torch.stack([torch.randperm(n, generator=g) for g in generators])
                     if generators is not None else None)
            for lo in range(0, n, bs):
                if order is None:
                    xb, yb = x_tr, y_tr
                else:
                    idx = order[:, lo:lo + bs]
                    xb = x_tr[idx] if x_tr.dim() == 2 else x_tr[rows, idx]
                    yb = y_tr[rows, idx]
                ctx.batch = (xb, yb)
                logits = model(xb)
                if recorder is not None:
                    ctx.activations = recorder.last
                task = task_loss(logits, yb)
                extra = technique.loss(ctx)
                total = task if extra is None else task + extra
                for p in history.stop(torch.isfinite(total.detach())):
                    frozen[p] = model.member(p)  # as fit leaves it: before this update
                for p in params:
                    p.grad = None
                torch.where(history.alive, total, 0.0).sum().backward()
                adam.step([p.grad if p.grad is not None else torch.zeros_like(p) for p in params])
                ctx.step += 1
                technique.after_step(ctx)
                _no_replacement(technique, ctx)
                m = yb.shape[1]
                loss_sum += task.detach().double() * m
                if extra is not None:
                    extra_sum += extra.detach().double() * m
                correct += (predict(logits.detach()) == yb).sum(1).double()
            ctx.batch = None
            model.eval()
            with torch.no_grad():  # validation and test parts in one forward
                hits = (predict(model(x_eval)) == y_eval).double()
            now = {"loss": loss_sum / n, "penalty": extra_sum / n, "train_acc": correct / n,
                   "val_acc": hits[:, :n_val].mean(1)}
            if has_test:
                now["test_acc"] = hits[:, n_val:].mean(1)
            technique.after_epoch(ctx)
            _no_replacement(technique, ctx)
            history.record(epoch, now, logged=ctx.logged)
            ctx.logged.clear()
            if not bool(history.alive.any()):
                break
    finally:
        if recorder is not None:
            recorder.remove()
        technique.detach(ctx)
    seconds = time.perf_counter() - start

    results = []
    for p in range(pop):
        net = frozen[p] if p in frozen else model.member(p)
        metrics = {**history.metrics(p, seconds / pop),
                   "status": status_ratios(net, datas[p].x_train)}
        results.append(MemberResult(metrics, history.member_curves(p), net))
    return results
