"""One run end to end: seed, data, model, training, activation status."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import strict_json
from ..core.status import ActivationStatus, NonFiniteError, activation_status, undefined_ratios
from ..data import Dataset, FolderData, load_run_data
from ..diversification import diversity
from .build import build_model
from .checkpoint import checkpoint_bytes
from .history import MemberResult
from .loop import FitResult, fit
from .run_options import RunConfig, parse_run


@dataclass
class RunResult:
    """A finished run: its config, the trained model, the fit and the status.

    ``status`` is measured on the training set after training (CPAIOR
    Definitions 1 and 2); ``None`` when it is undefined (a diverged net whose
    pre-activations are non-finite: every ratio NaN in ``metrics()``).
    ``metrics()`` is what ``jumpstart train --json`` prints. ``at_init``:
    what was measured on the net before any step: ``params_at_init`` (its
    parameter count; a technique may replace the net later), and with the run
    option ``init_diversity`` the :func:`init_diversity` keys.
    """

    config: dict
    model: nn.Module
    fit: FitResult
    status: ActivationStatus | None
    split: dict | None = None
    at_init: dict = field(default_factory=dict)

    def metrics(self) -> dict:
        """Config, accuracies, timings, ``diverged``, ``status`` ratios, what
        was measured at initialization (:attr:`at_init`), and ``split`` when
        the loader did more than a plain split (rare classes)."""
        ratios = self.status.ratios() if self.status is not None else undefined_ratios()
        return {**self.config, **self.fit.metrics(), "status": ratios, **self.at_init,
                **({"split": self.split} if self.split else {})}

    def save(self, out: str | Path) -> Path:
        """Write ``run.json``, ``curves.csv``, ``model.pt`` (the trained
        weights: :func:`~jumpstart.train.checkpoint.read_checkpoint`) and
        ``status.png`` into ``out``."""
        import pandas as pd

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "model.pt").write_bytes(checkpoint_bytes(self.config, self.model))
        (out / "run.json").write_text(strict_json.dumps(self.metrics(), indent=2) + "\n")
        pd.DataFrame(self.fit.history).to_csv(out / "curves.csv", index=False)
        c = self.config
        if self.status is None:  # undefined: a diverged net
            return out
        self.status.plot(
            out / "status.png",
            title=f"{c['dataset']} depth {c['depth']} width {c['width']} {c['technique']}: "
                  "status on the training set",
        )
        return out


DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cpu"``; ``"cuda"``.

    Raises:
        ValueError: unknown name, or ``"cuda"`` with no CUDA device.
    """
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; allowed: {', '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda asked for, but torch sees no CUDA device")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def train_run(run: RunConfig | Mapping | None = None, *, data: Dataset | FolderData | None = None,
              device: str = "auto", progress: bool = False, **config) -> RunResult:
    """Train one ReLU net on a named data set under a technique and measure it.

    The run is a flat config of run keys (:data:`~jumpstart.train.run_options.RUN_OPTIONS`:
    each key's default, check and meaning) and technique options, given as
    keyword arguments (``train_run(dataset="moons", depth=6, width=2,
    technique="jumpstart", lam=1e-3)``), as a mapping, or already parsed
    (:class:`~jumpstart.train.run_options.RunConfig`). ``model`` names a
    registered family (:data:`jumpstart.models.MODEL_FAMILIES`):

    - ``"rectangular"``: dense :class:`~jumpstart.models.Rectangular`;
    - ``"conv"``: Rectangular with 3x3 convs and ``head`` ``"flatten"`` or
      ``"maxavg"``, for image data (CPAIOR Sec. 4);
    - ``"moons_conv"``: the CPAIOR Keras MOONS net (:class:`~jumpstart.models.MoonsConv`);
    - ``"resnet"``: :class:`~jumpstart.models.ResNet` of ``depth`` 18, 34,
      50, 101 or 152 with ``width`` as its width multiplier, no BN and no
      skips unless the technique adds them (``batchnorm+skip`` is the
      standard net; the IEEE Access 2025 ImageNet model is ``depth=50,
      width=2`` under ``jumpstart``). Its blocks fix where skips go, so the
      ``skip`` technique's ``skip_every`` does not apply there;
    - ``"vgg"``: Neural Rejuvenation's CIFAR :class:`~jumpstart.models.VGG`
      of ``depth`` 19 whose first conv has ``width`` channels (64 is the
      paper's), plain unless the technique adds BatchNorm (``batchnorm``,
      ``nr``);
    - ``"cifar_resnet"``: Neural Rejuvenation's CIFAR bottleneck
      :class:`~jumpstart.models.CifarResNet` of ``depth`` ``9 n + 2`` (164:
      the paper's) with ``width`` as its width multiplier; always with
      BatchNorm and shortcuts.

    The technique's model options shape the net. ``dataset`` is any name
    :func:`jumpstart.data.load_dataset` takes (tables split by ``seed``;
    ``imagenet`` is streamed from ``data_dir`` by DataLoaders with
    ``loader_workers`` processes; ``test_split`` holds out that share of the
    validation part as a test part). The status (CPAIOR Definitions 1 and 2)
    is measured on the training set after training, with the eval transform
    for streamed images; it uses the technique's ``granularity`` when it has
    one (Jumpstart), else ``"channel"``. ``precision``, ``memory_format`` and
    ``flush_denormal`` are the fast path (:mod:`jumpstart.train.fast_path`;
    ``"auto"``: bfloat16 autocast on a CPU with native bfloat16 and
    channels-last for conv nets on images; ``precision="32"`` trains in
    float32).

    ``torch.manual_seed(seed)`` fixes the initialization and the minibatch
    order, so runs of different techniques with the same seed start from the
    same weights (when the technique leaves the architecture alone). Binary
    tasks use one output logit (CPAIOR Sec. 4).

    Args:
        run: the run config (a mapping, merged under ``config``) or a parsed
            one (then ``config`` must be empty).
        data: the data set already loaded (as :func:`jumpstart.data.load_run_data`
            returns it for the run), to share one load between runs;
            ``None`` loads it.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"``.
        progress: show a progress bar.
        **config: run keys and technique options; ``technique`` may also be a
            :class:`~jumpstart.techniques.Technique` already built (then no
            technique option is given).

    Returns:
        :class:`RunResult`; its ``config`` is the run's record
        (:attr:`~jumpstart.train.run_options.RunConfig.record`: the config a
        sweep would store for it).

    Raises:
        ValueError: before any training: as :func:`~jumpstart.train.run_options.parse_run`
            (an unknown key, a bad value, a missing ``depth`` or ``width``),
            an unknown device, a model that does not fit the data; the
            message names the bad value.
        FileNotFoundError: an unknown data set name or missing files.
    """
    if isinstance(run, RunConfig):
        if config:
            raise ValueError(f"train_run got a parsed run and key(s) {sorted(config)}; give "
                             "one or the other")
    else:
        run = parse_run({**(run or {}), **config})
    dev = resolve_device(device)
    if data is None:
        data = load_run_data(run.values)
    streamed = isinstance(data, FolderData)
    shape = data.feature_shape if streamed else tuple(data.x_train.shape[1:])
    torch.manual_seed(run["seed"])
    net = build_model(run["model"], run.technique, data.num_classes, shape,
                      dataset=run["dataset"], depth=run["depth"], width=run["width"],
                      init=run["init"], head=run["head"], init_steps=run["init_steps"],
                      init_lr=run["init_lr"])
    net.to(dev)
    at_init = {"params_at_init": sum(p.numel() for p in net.parameters())}
    if run["init_diversity"]:
        if streamed:
            raise ValueError("init_diversity is measured on in-memory data only")
        at_init.update(init_diversity(net, data.x_train))
    result = fit(net, data, lr=run["lr"], epochs=run["epochs"], batch_size=run.batch_size,
                 seed=run["seed"], technique=run.technique, loader_workers=run["loader_workers"],
                 progress=progress, augment=run["augment"], **run.fast_path, **run.optimizer)
    net = result.model
    if streamed:
        from torch.utils.data import DataLoader

        inputs = DataLoader(data.train.eval_view(), batch_size=run.batch_size,
                            num_workers=run["loader_workers"])
    else:
        inputs = data.x_train
    try:
        status = activation_status(net, inputs, granularity=run.technique.granularity)
    except NonFiniteError:
        status = None
    return RunResult(run.record, net, result, status, getattr(data, "split", None), at_init)


#: training inputs :func:`init_diversity` is measured on (the first ones)
DIVERSITY_SAMPLES = 2000


def init_diversity(model: nn.Module, x: torch.Tensor) -> dict:
    """Redundancy of a net at initialization, as a run records it
    (:func:`jumpstart.diversity` on the first :data:`DIVERSITY_SAMPLES` rows
    of the training inputs ``x`` ``(N, ...)``): ``init_weight_corr_mean`` and
    ``init_act_corr_mean`` (mean |correlation| between units' weight rows and
    between their activations, averaged over the hidden layers) and
    ``init_constant_units`` (units constant over the samples, summed over the
    layers). The init report reads them (Kovalenko et al. 2021's diagnostics,
    reconstructed: :mod:`jumpstart.diversification`).

    Raises:
        ValueError: as :func:`jumpstart.diversity`.
    """
    d = diversity(model, x[:DIVERSITY_SAMPLES])
    return {"init_weight_corr_mean": sum(d.weight_corr_mean) / len(d.units),
            "init_act_corr_mean": sum(d.act_corr_mean) / len(d.units),
            "init_constant_units": sum(d.constant_units)}


def refusal(run: RunConfig) -> None:
    """The single-run loop runs every run: never a reason to refuse."""
    return None


def train_runs(runs: list[RunConfig], data_of) -> list[tuple[RunConfig, MemberResult]]:
    """The single-run loop's entry for a group of runs (:mod:`jumpstart.train.group`):
    each run alone (:func:`train_run` on ``data_of(run)``), its curves kept
    every ``curve_every`` epochs and at the last, as the population trainers
    keep them.

    Returns:
        ``(run, result)`` per run, in order.
    """
    out = []
    for run in runs:
        result = train_run(run, data=data_of(run))
        h, every = result.fit.history, run["curve_every"]
        keep = [i for i, e in enumerate(h["epoch"]) if e % every == 0 or e == run["epochs"]]
        metrics = {**result.fit.metrics(), "status": result.metrics()["status"],
                   **result.at_init}
        out.append((run, MemberResult(metrics, {k: [h[k][i] for i in keep] for k in h},
                                      result.model)))
    return out
