"""The model registry: each family a run can name registers itself where it
is defined (in the style of timm's ``@register_model``).

A family is a name, a builder and what it supports. The builder takes one
:class:`ModelRequest` (sizes, init, the technique's model options) and returns
the net; :func:`jumpstart.train.build.build_model` fills the request from a
run config, routing asks :attr:`ModelFamily.supports`, and sweep validation
asks :attr:`ModelFamily.datasets` and :attr:`ModelFamily.fractional_width`.
A user's own family is one file::

    from jumpstart.models.registry import register_model

    @register_model("wide_mlp", supports={"population"})
    def wide_mlp(request):
        ...  # an nn.Module for request.shape -> request.out_features
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

#: what a family may support (:attr:`ModelFamily.supports`):
#: ``"population"``: dense nets the generic population trainer stacks
#: (:mod:`jumpstart.train.population`); ``"stacks"``: nets the hand-written
#: MOONS stacks build (:mod:`jumpstart.train.stacks`)
MODEL_CAPABILITIES = frozenset({"population", "stacks"})

#: the model options a technique shapes (``Technique.model_options``), at the
#: values of a plain net: what a family that takes model options reads
MODEL_OPTIONS = {"activation": "relu", "norm": None, "skip": None}


@dataclass(frozen=True)
class ModelRequest:
    """What a builder is asked to build.

    Attributes:
        depth, width: the run's ``depth`` and ``width`` (a width multiplier
            for the ResNet families).
        shape: feature shape of one input, e.g. ``(2,)`` or ``(3, 32, 32)``.
        out_features: logits (1 for a binary task, CPAIOR Sec. 4).
        dataset: the data set's name (for messages and families tied to one).
        init, init_steps, init_lr, head: the run keys of the same names.
        widths, mode: a reshaped net's per-layer widths
            (:func:`~jumpstart.models.layer_widths`) and Neural Rejuvenation's
            ``nr_mode``; ``None`` / ``"split"`` for a fresh net.
        options: the technique's model options (:data:`MODEL_OPTIONS` after
            ``Technique.model_options``; what the technique returned from
            ``{}`` for a family that takes none).
    """

    depth: int
    width: int | float
    shape: tuple[int, ...]
    out_features: int
    dataset: str
    init: str
    init_steps: int
    init_lr: float
    head: str
    widths: list | None
    mode: str
    options: dict


@dataclass(frozen=True)
class ModelFamily:
    """One registered family.

    Attributes:
        name: the run key ``model``'s value.
        build: ``build(request) -> nn.Module``; raises ValueError for a
            request it cannot build (the message says why).
        supports: a subset of :data:`MODEL_CAPABILITIES`.
        images: takes image inputs ``(C, H, W)`` only.
        datasets: the only data sets it takes (``None``: any).
        fractional_width: ``width`` may be a non-integer (a multiplier).
        model_options: whether the technique's model options
            (:data:`MODEL_OPTIONS`) apply; a family with none gets ``{}``.
        text: one line for ``--help`` and the docs.
    """

    name: str
    build: Callable[[ModelRequest], nn.Module]
    supports: frozenset
    images: bool
    datasets: tuple[str, ...] | None
    fractional_width: bool
    model_options: bool
    text: str


MODEL_FAMILIES: dict[str, ModelFamily] = {}


def register_model(name: str, *, text: str, supports=(), images: bool = False,
                   datasets: tuple[str, ...] | None = None, fractional_width: bool = False,
                   model_options: bool = True):
    """Decorator registering a builder as model family ``name``.

    Raises:
        ValueError: the name is taken, or ``supports`` names a capability
            outside :data:`MODEL_CAPABILITIES`.
    """
    supports = frozenset(supports)
    if not supports <= MODEL_CAPABILITIES:
        raise ValueError(f"model {name!r}: unknown capabilities "
                         f"{sorted(supports - MODEL_CAPABILITIES)}; allowed: "
                         f"{', '.join(sorted(MODEL_CAPABILITIES))}")

    def add(build: Callable[[ModelRequest], nn.Module]):
        if name in MODEL_FAMILIES:
            raise ValueError(f"model family {name!r} is already registered")
        MODEL_FAMILIES[name] = ModelFamily(name, build, supports, images, datasets,
                                           fractional_width, model_options, text)
        return build

    return add


def model_family(name: str) -> ModelFamily:
    """The registered family ``name``.

    Raises:
        ValueError: an unknown name (the message lists the registered ones).
    """
    if name not in MODEL_FAMILIES:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(MODEL_FAMILIES)}")
    return MODEL_FAMILIES[name]
