"""Neural Rejuvenation (Qiao, Lin, Zhang, Yuille, CVPR 2019), as the
authors' code does it (``../shared/papers/neural-rejuvenation.md``, checked
against github joe-siyuan-qiao/NeuralRejuvenation-CVPR19 at 8f1f2aa)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..core.options import Option, choice, int_at_least, number
from ..models import Rectangular
from ..models.split import CLASSIFIER_STD, he_fan_out_
from ..surgery import hidden_layers
from .base import Technique, TrainContext

#: a channel is dead when ``|gamma_j| < DEAD_FRACTION * max_k |gamma_k|`` in its layer (Sec. 1)
DEAD_FRACTION = 0.01
#: a whole layer is dead when ``max |gamma| < LAYER_DEAD`` (Sec. 1)
LAYER_DEAD = 1e-3
#: BatchNorm scale of a rejuvenated channel (Sec. 4)
NEW_BN_SCALE = 0.5
DETECTORS = ("bn", "status")


def nr_layers(model) -> list:
    """The convs of a model Neural Rejuvenation can rebuild, as a list of
    :class:`~jumpstart.models.split.NRLayer` (``model.nr_layers()``:
    :class:`~jumpstart.models.VGG`, :class:`~jumpstart.models.CifarResNet`,
    :class:`~jumpstart.models.Rectangular` without skips).

    Raises:
        ValueError: any other model.
    """
    if not callable(getattr(model, "nr_layers", None)):
        raise ValueError(f"technique 'nr' rejuvenates models vgg, cifar_resnet, rectangular and "
                         f"conv (NR's CIFAR VGG and ResNet, our Rectangular nets); got "
                         f"{type(model).__name__}")
    return model.nr_layers()


def batch_norms(model) -> list[nn.BatchNorm2d]:
    """The BatchNorms the sparsity penalty shrinks: those after the prunable
    (not fixed) convs (empty for a plain net); NR Sec. 1.

    Raises:
        ValueError: a model without ``nr_layers`` (:func:`nr_layers`).
    """
    return [layer.bn for layer in nr_layers(model) if not layer.fixed and layer.bn is not None]


def live_channels(model, *, detect: str = "bn", data=None) -> list[Tensor]:
    """Live output channels of each conv of ``model`` (NR Sec. 1), in
    :func:`nr_layers` order.

    ``detect="bn"`` (the paper): channel ``j`` of a prunable conv is dead when
    ``|gamma_j| < 0.01 max_k |gamma_k|``, the whole layer when
    ``max |gamma| < 1e-3``. ``detect="status"`` (our variant, for nets with or
    without BatchNorm): dead when its ReLU input is ``<= 0`` on every sample
    and position of ``data`` (:func:`~jumpstart.activation_status`, CPAIOR
    Definition 1). Either way a prunable conv reading a layer with no live
    channel is dead, and a fixed conv's channels are all live: the authors'
    fixed layers are never penalized, and a residual add keeps every stream
    channel live (Sec. 1); a residual branch whose prunable convs all died
    stays as one fresh channel each after rejuvenation (the authors delete
    it), its fixed last conv reading nothing live.

    Args:
        model: a model with ``nr_layers()``.
        detect: ``"bn"`` or ``"status"``.
        data: inputs ``(N, C, H, W)`` or batches, for ``"status"``.

    Returns:
        One bool tensor ``(C_l,)`` per conv.

    Raises:
        ValueError: a model without ``nr_layers``; ``"bn"`` on a model without
            BatchNorm; ``"status"`` without data; unknown ``detect``.
    """
    layers = nr_layers(model)
    if detect == "bn":
        if any(layer.bn is None for layer in layers):
            raise ValueError("nr detects dead channels by their BatchNorm scales, and this "
                             "model has no BatchNorm (norm=None); use nr_detect='status' to "
                             "detect them from the activations")

        def mask(layer):
            g = layer.bn.weight.detach().abs()
            return (torch.zeros_like(g, dtype=torch.bool) if g.max() < LAYER_DEAD
                    else g >= DEAD_FRACTION * g.max())
    elif detect == "status":
        if data is None:
            raise ValueError("nr_detect='status' needs the training inputs")
        from ..core.status import DEAD, activation_status

        status = activation_status(model, data)
        modules = dict(model.named_modules())
        dead = {id(modules[name.split("#")[0]]): s == DEAD
                for name, s in zip(status.layer_names, status.unit_status)}

        def mask(layer):
            return torch.as_tensor(~dead[id(layer.act)])
    else:
        raise ValueError(f"unknown detect {detect!r}; allowed: {', '.join(DETECTORS)}")
    masks = []
    for layer in layers:
        m = (torch.ones(layer.conv.weight.shape[0], dtype=torch.bool) if layer.fixed
             else mask(layer).cpu())
        if not layer.fixed and layer.source is not None and not masks[layer.source].any():
            m = torch.zeros_like(m)  # reads a constant; a fixed conv writes a residual stream
        masks.append(m)
    return masks


def _classifier(model) -> nn.Module:
    """The layer reading the features: ``classifier`` (VGG, CIFAR ResNet) or ``output``."""
    return model.classifier if hasattr(model, "classifier") else model.output


def _head_columns(model, units: Tensor) -> Tensor:
    """The classifier's input columns reading ``units`` of the head conv, in
    the order a rejuvenated net reads its survivors first:
    :class:`~jumpstart.models.Rectangular` nets take them from
    :func:`~jumpstart.surgery.hidden_layers` (``H W`` columns per unit for
    the flatten head, the maxima then the means for the max+avg head); a
    pooled classifier (VGG, CIFAR ResNet) has one column per channel."""
    if not isinstance(model, Rectangular):
        return units
    last = hidden_layers(model)[-1]
    return last.readers[0].columns(units, last.width)


def utilization(model, live: list[Tensor]) -> float:
    """``u = sum_l |live_in_l| |live_out_l| kh kw / sum_l numel(W_l)`` over
    every conv, fixed ones included (NR Sec. 2; the classifier and BatchNorm
    not counted; the network input's channels all live).

    Args:
        model: a model with ``nr_layers()``.
        live: :func:`live_channels` of ``model``.
    """
    used = total = 0
    for layer, mask in zip(nr_layers(model), live, strict=True):
        conv = layer.conv
        fan_in = conv.weight.shape[1]
        live_in = fan_in if layer.source is None else int(live[layer.source].sum())
        used += live_in * int(mask.sum()) * conv.weight[0, 0].numel()
        total += conv.weight.numel()
    return used / total


def rejuvenate(model, live: list[Tensor], *, mode: str = "split"):
    """The rejuvenated copy of a model (NR Sec. 4): ``r = sqrt(1 / u)``; each
    prunable conv gets ``max(1, int(live_l * r))`` channels, each fixed one
    ``int(C_l * r)``, survivors first (their live rows over the source's live
    columns copied into the top-left block), the rest drawn from
    ``N(0, 2 / (k k C_out_new))``; in a conv whose inputs and outputs both
    grew the cross blocks are 0. BatchNorm: survivors keep scale, shift and
    running statistics, new channels get scale 0.5, shift 0, mean 0,
    variance 1. Classifier: survivor columns and the bias copied, new columns
    from ``N(0, 0.01^2)``. Dead channels' BatchNorm shifts are not folded
    into the next layer (as the authors): in ``"split"`` mode the old half
    computes the pruned network (dead channels' outputs removed). A conv with
    no live channel keeps one fresh channel (PyTorch has no empty conv; the
    authors delete such a layer, which a plain chain cannot survive).

    Args:
        model: a model with ``nr_layers()`` and ``rejuvenated(widths, mode)``, unsplit.
        live: :func:`live_channels` of ``model``.
        mode: ``"split"`` or ``"cross"`` (:class:`~jumpstart.models.SplitConv2d`).

    Returns:
        ``(new_model, r)``: a new model of the same family on ``model``'s
        device with widths ``[[old_l, new_l], ...]``, and the expansion factor.

    Raises:
        ValueError: a model without ``nr_layers``, already rejuvenated, or
            with no live channel in its first convs.
    """
    layers = nr_layers(model)
    if any(getattr(layer.conv, "old_out", None) is not None for layer in layers):
        raise ValueError("this model was rejuvenated already (NR rejuvenates once)")
    u = utilization(model, live)
    if u == 0:
        raise ValueError("no live channel in the first convs: nothing to rejuvenate")
    r = math.sqrt(1.0 / u)
    widths = []
    for layer, mask in zip(layers, live):
        c = int(mask.sum())
        grown = int(c * r) if layer.fixed else max(1, int(c * r))
        widths.append([c, grown - c])
    new = model.rejuvenated(widths, mode)
    device = layer.conv.weight.device
    rows = [m.nonzero().flatten().to(device) for m in live]
    with torch.no_grad():
        for layer, fresh, out in zip(layers, nr_layers(new), rows):
            he_fan_out_(fresh.conv.weight)  # new kernels; survivors are copied over
            if fresh.conv.bias is not None:
                fresh.conv.bias.zero_()
            cols = (torch.arange(layer.conv.weight.shape[1], device=device) if layer.source is None
                    else rows[layer.source])
            c, p = len(out), len(cols)
            fresh.conv.weight[:c, :p] = layer.conv.weight[out][:, cols]
            if fresh.conv.is_split:
                fresh.conv.weight[:c, p:] = 0
                fresh.conv.weight[c:, :p] = 0
            if layer.conv.bias is not None:
                fresh.conv.bias[:c] = layer.conv.bias[out]
            if layer.bn is not None:
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(fresh.bn, name)[:c] = getattr(layer.bn, name)[out]
                fresh.bn.weight[c:] = NEW_BN_SCALE
                fresh.bn.num_batches_tracked.copy_(layer.bn.num_batches_tracked)
        head = rows[next(i for i, layer in enumerate(layers) if layer.head)]
        old_head, new_head = _classifier(model), _classifier(new)
        w_new = new_head.weight.view(new_head.weight.shape[0], -1)
        head = _head_columns(model, head)  # the new net reads its survivors first
        w_new[:, len(head):].normal_(0.0, CLASSIFIER_STD)
        w_new[:, :len(head)] = old_head.weight.view(old_head.weight.shape[0], -1)[:, head]
        new_head.bias.copy_(old_head.bias)
    new.train(model.training)
    return new, r


class NeuralRejuvenation(Technique):
    """Neural Rejuvenation (CVPR 2019; the spec's Secs. 1-5), on
    :class:`~jumpstart.models.VGG` (``model = "vgg"``) and
    :class:`~jumpstart.models.CifarResNet` (``model = "cifar_resnet"``), and
    the toolkit's :class:`~jumpstart.models.Rectangular` nets (``rectangular``
    and ``conv`` with either head, no skips; our extension).

    Before rejuvenation, an L1 penalty ``nr_lam * sum |gamma|`` on every
    prunable conv's BatchNorm scale (Sec. 1): under SGD as a loss term, whose gradient
    ``nr_lam * sign(gamma)`` is what the authors add to ``gamma.grad`` (weight
    decay and momentum act on the sum either way); under Adam or AdamW
    applied decoupled after each step, ``gamma -= lr * nr_lam * sign(gamma)``
    (Sec. 7: Adam would rescale the gradient term, so the SGD values would
    not transfer). After each epoch, the utilization ``u``
    (:func:`utilization` of :func:`live_channels`) is logged
    (``utilization``); the first time ``u <= nr_target``, or at epoch
    ``nr_max_epochs`` (a cap the authors' code lacks; Sec. 3), the model is
    :func:`rejuvenate`-d once and handed to the trainer
    (:meth:`~jumpstart.techniques.TrainContext.replace_model`): fresh
    optimizer at the initial learning rate; with ``nr_extend`` the epoch
    budget and the milestones are shifted by the epochs done (the authors'
    CIFAR schedule runs in full after rejuvenation), without it the schedule
    goes on where it was (same epochs and milestones as a run without
    rejuvenation). Before rejuvenation the run's own milestones apply (the
    authors shift them every pre-rejuvenation epoch, so their rate never
    decays before it: keep ``nr_max_epochs`` below the first milestone to
    match), and a cap beyond ``epochs`` never fires. Logged every epoch from then
    on: ``rejuvenation_epoch``, ``rejuvenation_u`` (the utilization that
    fired it) and ``nr_capped`` (1 when the cap fired, 0 when the target
    did). The penalty is off afterwards.

    After rejuvenation, ``nr_mode = "split"`` (CIFAR): old and new channels
    are two networks sharing the input; the loss is
    ``CE(z_old) + CE(z_new)`` with the classifier applied to each half and
    one shared bias (:meth:`task_loss`), the prediction the argmax of the
    sum. ``"cross"`` (ImageNet): the halves exchange cross-attention in every
    conv, one classifier, the plain task loss. (In split mode the logged
    training ``loss`` is then the two-head sum, about twice a single
    cross-entropy.)

    ``nr_detect = "status"`` is **our variant** (not the paper's): dead
    channels from :func:`~jumpstart.activation_status` on the training inputs,
    so it runs on plain nets (``norm=None``, no sparsity penalty: there is no
    BatchNorm scale to shrink). With ``"bn"`` the model is built with
    BatchNorm.

    Options: ``nr_lam`` (1.5e-4, the authors' VGG-19 CIFAR-10 value),
    ``nr_target`` (0.25), ``nr_max_epochs`` (50), ``nr_mode`` (split),
    ``nr_detect`` (bn), ``nr_extend`` (True). Single-run loop only.

    Raises (at attach):
        ValueError: a model without ``nr_layers`` (not vgg, cifar_resnet,
            rectangular or conv), a Rectangular net with skips,
            or one without BatchNorm with ``"bn"``.
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
        self.fired: dict[str, float] = {}

    def model_options(self, options: dict) -> dict:
        if self.config["nr_detect"] == "bn":
            return {**self._need(options, "norm"), "norm": "batch"}
        return dict(options)

    def attach(self, ctx: TrainContext) -> None:
        if not self.rejuvenated and self.config["nr_detect"] == "bn":
            live_channels(ctx.model)  # refuses a model without BatchNorm, before any step
        if self.config["nr_detect"] == "status" and getattr(ctx.data, "x_train", None) is None:
            raise ValueError("nr_detect='status' measures the training inputs in memory; this "
                             "run's data are not (on-disk data: use nr_detect='bn')")
        self._sgd = isinstance(ctx.optimizer, torch.optim.SGD)
        # the scales the penalty shrinks, found once per model (not on every step)
        self._scales = ([] if self.rejuvenated or self.config["nr_lam"] == 0
                        else [bn.weight for bn in batch_norms(ctx.model)])

    def loss(self, ctx: TrainContext) -> Tensor | None:
        if not (self._sgd and self._scales):
            return None
        return self.config["nr_lam"] * sum(g.abs().sum() for g in self._scales)

    def after_step(self, ctx: TrainContext) -> None:
        if self._sgd:
            return
        scales = self._scales
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
        if not self.rejuvenated:
            capped = ctx.epoch >= self.config["nr_max_epochs"] and u > self.config["nr_target"]
            if u <= self.config["nr_target"] or capped:
                new, _ = rejuvenate(ctx.model, live, mode=self.config["nr_mode"])
                self.rejuvenated = True  # attach (to the new model) then drops the scales
                self.fired = {"rejuvenation_epoch": float(ctx.epoch), "nr_capped": float(capped),
                              "rejuvenation_u": u}
                extend = self.config["nr_extend"]
                ctx.replace_model(new, shift_schedule=extend, extend=extend)
        for name, value in self.fired.items():  # every epoch from then on,
            ctx.log(name, value)  # so the curves' last point has them whatever curve_every
