"""Neural Rejuvenation (Qiao, Lin, Zhang, Yuille, CVPR 2019), as the
authors' code does it (``../shared/papers/neural-rejuvenation.md``, checked
against github joe-siyuan-qiao/NeuralRejuvenation-CVPR19 at 8f1f2aa)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..core.options import Option, choice, int_at_least, number
from .base import Technique, TrainContext

#: a channel is dead when ``|gamma_j| < DEAD_FRACTION * max_k |gamma_k|`` in its layer (Sec. 1)
DEAD_FRACTION = 0.01
#: a whole layer is dead when ``max |gamma| < LAYER_DEAD`` (Sec. 1)
LAYER_DEAD = 1e-3
DETECTORS = ("bn", "status")


def _vgg(model: nn.Module):
    from ..models.vgg import VGG

    if not isinstance(model, VGG):
        raise ValueError(f"technique 'nr' rejuvenates model vgg (NR's CIFAR VGG, "
                         f"jumpstart.models.VGG); got {type(model).__name__}")
    return model


def batch_norms(model) -> list[nn.BatchNorm2d]:
    """The BatchNorm after each hidden conv of a :class:`~jumpstart.models.VGG`,
    input to output (empty for a plain net)."""
    return [m for m in _vgg(model).features if isinstance(m, nn.BatchNorm2d)]


def live_channels(model, *, detect: str = "bn", data=None) -> list[Tensor]:
    """Live output channels of each hidden conv of a VGG (NR Sec. 1).

    ``detect="bn"`` (the paper): channel ``j`` of a layer is dead when
    ``|gamma_j| < 0.01 max_k |gamma_k|``, the whole layer when
    ``max |gamma| < 1e-3``. ``detect="status"`` (our variant, for nets with or
    without BatchNorm): dead when its ReLU input is ``<= 0`` on every sample
    and position of ``data`` (:func:`~jumpstart.activation_status`, CPAIOR
    Definition 1). Either way a layer with no live input is dead (in a chain,
    what follows a dead layer reads a constant).

    Args:
        model: a :class:`~jumpstart.models.VGG`.
        detect: ``"bn"`` or ``"status"``.
        data: inputs ``(N, C, H, W)`` or batches, for ``"status"``.

    Returns:
        One bool tensor ``(C_l,)`` per hidden conv.

    Raises:
        ValueError: not a VGG; ``"bn"`` on a model without BatchNorm;
            ``"status"`` without data; unknown ``detect``.
    """
    convs = _vgg(model).convs()
    if detect == "bn":
        bns = batch_norms(model)
        if len(bns) != len(convs):
            raise ValueError("nr detects dead channels by their BatchNorm scales, and this "
                             "model has no BatchNorm (norm=None); use nr_detect='status' to "
                             "detect them from the activations")
        gammas = [bn.weight.detach().abs() for bn in bns]
        masks = [torch.zeros_like(g, dtype=torch.bool) if g.max() < LAYER_DEAD
                 else g >= DEAD_FRACTION * g.max() for g in gammas]
    elif detect == "status":
        if data is None:
            raise ValueError("nr_detect='status' needs the training inputs")
        from ..core.status import DEAD, activation_status

        status = activation_status(model, data)
        masks = [torch.as_tensor(s != DEAD) for s in status.unit_status]
    else:
        raise ValueError(f"unknown detect {detect!r}; allowed: {', '.join(DETECTORS)}")
    for i in range(1, len(masks)):
        if not masks[i - 1].any():
            masks[i] = torch.zeros_like(masks[i])
    return masks


def utilization(model, live: list[Tensor]) -> float:
    """``u = sum_l |live_in_l| |live_out_l| kh kw / sum_l numel(W_l)`` over the
    hidden convs (NR Sec. 2; the classifier and BatchNorm not counted; the
    network input's channels all live).

    Args:
        model: a :class:`~jumpstart.models.VGG`.
        live: :func:`live_channels` of ``model``.
    """
    convs = _vgg(model).convs()
    used = total = 0
    live_in = convs[0].in_channels
    for conv, mask in zip(convs, live, strict=True):
        k = conv.kernel_size[0] * conv.kernel_size[1]
        used += live_in * int(mask.sum()) * k
        total += conv.weight.numel()
        live_in = int(mask.sum())
    return used / total


def rejuvenate(model, live: list[Tensor], *, mode: str = "split"):
    """The rejuvenated copy of a VGG (NR Sec. 4): ``r = sqrt(1 / u)``; each
    hidden conv gets ``max(1, int(live_l * r))`` channels, its ``live_l``
    survivors first (the last layers' ``live`` rows and the previous layer's
    live columns copied into the top-left block), the rest drawn from
    ``N(0, 2 / (k k C_out_new))``; in a layer whose inputs and outputs both
    grew the cross blocks are 0. BatchNorm: survivors keep scale, shift and
    running statistics, new channels get scale 0.5, shift 0, mean 0,
    variance 1. Classifier: survivor columns and the bias copied, new columns
    from ``N(0, 0.01^2)``. Dead channels' BatchNorm shifts are not folded
    into the next layer (as the authors): in ``"split"`` mode the old half
    computes the pruned network (dead channels' outputs removed). A layer
    with no live channel keeps one fresh channel (PyTorch has no empty conv;
    the spec's chain case the authors leave unhandled).

    Args:
        model: a :class:`~jumpstart.models.VGG`, unsplit.
        live: :func:`live_channels` of ``model``.
        mode: ``"split"`` or ``"cross"`` (:class:`~jumpstart.models.SplitConv2d`).

    Returns:
        ``(new_model, r)``: a new VGG on ``model``'s device with widths
        ``[[live_l, new_l], ...]``, and the expansion factor.

    Raises:
        ValueError: not a VGG, already rejuvenated, or no live channel at all.
    """
    from ..models.vgg import VGG

    model = _vgg(model)
    convs = model.convs()
    if any(c.old_out is not None for c in convs):
        raise ValueError("this VGG was rejuvenated already (NR rejuvenates once)")
    u = utilization(model, live)
    if u == 0:
        raise ValueError("no live channel in the first layers: nothing to rejuvenate")
    r = math.sqrt(1.0 / u)
    counts = [int(m.sum()) for m in live]
    widths = [[c, max(1, int(c * r)) - c] for c in counts]
    device = model.classifier.weight.device
    new = VGG(model.depth, 1, model.classifier.out_channels, in_channels=convs[0].in_channels,
              norm=model.norm, widths=widths, mode=mode).to(device)
    new_convs = new.convs()
    old_bns = {id(c): bn for c, bn in _following_bn(model)}
    new_bns = {id(c): bn for c, bn in _following_bn(new)}
    prev = torch.arange(convs[0].in_channels, device=device)
    with torch.no_grad():
        for old, nc, mask in zip(convs, new_convs, live, strict=True):
            rows = mask.nonzero().flatten().to(device)
            c, p = len(rows), len(prev)
            nc.weight[:c, :p] = old.weight[rows][:, prev]
            if nc.is_split:
                nc.weight[:c, p:] = 0
                nc.weight[c:, :p] = 0
            if old.bias is not None:
                nc.bias[:c] = old.bias[rows]
            if id(old) in old_bns:
                ob, nb = old_bns[id(old)], new_bns[id(nc)]
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(nb, name)[:c] = getattr(ob, name)[rows]
                nb.num_batches_tracked.copy_(ob.num_batches_tracked)
            prev = rows
        new.classifier.weight[:, :len(prev)] = model.classifier.weight[:, prev]
        new.classifier.bias.copy_(model.classifier.bias)
    new.train(model.training)
    return new, r


def _following_bn(model) -> list[tuple[nn.Module, nn.BatchNorm2d]]:
    layers = list(model.features)
    return [(m, layers[i + 1]) for i, m in enumerate(layers[:-1])
            if isinstance(m, nn.Conv2d) and isinstance(layers[i + 1], nn.BatchNorm2d)]


class NeuralRejuvenation(Technique):
    """Neural Rejuvenation (CVPR 2019; the spec's Secs. 1-5), on
    :class:`~jumpstart.models.VGG` (``model = "vgg"``).

    Before rejuvenation, an L1 penalty ``nr_lam * sum |gamma|`` on every
    hidden BatchNorm scale (Sec. 1): under SGD as a loss term, whose gradient
    ``nr_lam * sign(gamma)`` is what the authors add to ``gamma.grad`` (weight
    decay and momentum act on the sum either way); under Adam or AdamW
    applied decoupled after each step, ``gamma -= lr * nr_lam * sign(gamma)``
    (Sec. 7: Adam would rescale the gradient term, so the SGD values would
    not transfer). After each epoch, the utilization ``u``
    (:func:`utilization` of :func:`live_channels`) is logged
    (``utilization``); the first time ``u <= nr_target``, or at epoch
    ``nr_max_epochs`` (a cap the authors' code lacks; Sec. 3), the model is
    :func:`rejuvenate`\\ d once and handed to the trainer
    (:meth:`~jumpstart.techniques.TrainContext.replace_model`): fresh
    optimizer at the initial learning rate, milestones shifted by the epochs
    done, and with ``nr_extend`` the epoch budget too (the authors' CIFAR
    schedule runs in full after rejuvenation). Logged at that epoch:
    ``rejuvenated`` 1 and ``nr_capped`` (1 when the cap fired, 0 when the
    target did). The penalty is off afterwards.

    After rejuvenation, ``nr_mode = "split"`` (CIFAR): old and new channels
    are two networks sharing the input; the loss is
    ``CE(z_old) + CE(z_new)`` with the classifier applied to each half and
    one shared bias (:meth:`task_loss`), the prediction the argmax of the
    sum. ``"cross"`` (ImageNet): the halves exchange cross-attention in every
    conv, one classifier, the plain task loss.

    ``nr_detect = "status"`` is **our variant** (not the paper's): dead
    channels from :func:`~jumpstart.activation_status` on the training inputs,
    so it runs on plain nets (``norm=None``, no sparsity penalty: there is no
    BatchNorm scale to shrink). With ``"bn"`` the model is built with
    BatchNorm.

    Options: ``nr_lam`` (1.5e-4, the authors' VGG-19 CIFAR-10 value),
    ``nr_target`` (0.25), ``nr_max_epochs`` (50), ``nr_mode`` (split),
    ``nr_detect`` (bn), ``nr_extend`` (True). Single-run loop only.

    Raises (at attach):
        ValueError: the model is not a VGG, or has no BatchNorm with ``"bn"``.
    """

    name = "nr"
    options = {
        "nr_lam": Option(1.5e-4, *number(lambda v: v >= 0, "a number >= 0")),
        "nr_target": Option(0.25, *number(lambda v: 0 < v < 1, "a number in (0, 1)")),
        "nr_max_epochs": Option(50, *int_at_least(1)),
        "nr_mode": Option("split", *choice(("split", "cross"))),
        "nr_detect": Option("bn", *choice(DETECTORS)),
        "nr_extend": Option(True, *choice((True, False))),
    }

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.rejuvenated = False

    def model_options(self, options: dict) -> dict:
        if self.config["nr_detect"] == "bn":
            return {**self._need(options, "norm"), "norm": "batch"}
        return dict(options)

    def attach(self, ctx: TrainContext) -> None:
        if not self.rejuvenated and self.config["nr_detect"] == "bn":
            live_channels(ctx.model)  # refuses a model without BatchNorm, before any step
        self._sgd = isinstance(ctx.optimizer, torch.optim.SGD)

    def _scales(self, ctx: TrainContext) -> list[Tensor]:
        if self.rejuvenated or self.config["nr_lam"] == 0:
            return []
        return [bn.weight for bn in batch_norms(ctx.model)]

    def loss(self, ctx: TrainContext) -> Tensor | None:
        scales = self._scales(ctx) if self._sgd else []
        if not scales:
            return None
        return self.config["nr_lam"] * sum(g.abs().sum() for g in scales)

    def after_step(self, ctx: TrainContext) -> None:
        if self._sgd:
            return
        scales = self._scales(ctx)
        if scales:
            lr = ctx.optimizer.param_groups[0]["lr"]
            with torch.no_grad():
                for g in scales:
                    g.sub_(lr * self.config["nr_lam"] * torch.sign(g))

    def task_loss(self, ctx: TrainContext, logits: Tensor, y: Tensor) -> Tensor | None:
        halves = getattr(ctx.model, "halves", None)
        if not self.rejuvenated or ctx.model.head_split is None or halves is None:
            return None
        return ctx.criterion(halves[0].float(), y) + ctx.criterion(halves[1].float(), y)

    def after_epoch(self, ctx: TrainContext) -> None:
        data = getattr(ctx.data, "x_train", None)
        live = live_channels(ctx.model, detect=self.config["nr_detect"], data=data)
        u = utilization(ctx.model, live)
        ctx.log("utilization", u)
        if self.rejuvenated:
            return
        capped = ctx.epoch >= self.config["nr_max_epochs"] and u > self.config["nr_target"]
        if u <= self.config["nr_target"] or capped:
            new, _ = rejuvenate(ctx.model, live, mode=self.config["nr_mode"])
            self.rejuvenated = True
            ctx.log("rejuvenated", 1.0)
            ctx.log("nr_capped", float(capped))
            ctx.replace_model(new, shift_schedule=True, extend=self.config["nr_extend"])
