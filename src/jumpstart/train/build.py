"""The net of a run config: the model families a run can name, built and
shaped by the run's technique (:func:`build_model`)."""

from __future__ import annotations

import math

from torch import nn

from ..models import VGG, CifarResNet, MoonsConv, Rectangular, ResNet
from ..models.rectangular import DECORRELATE_LR, DECORRELATE_STEPS

MODELS = ("rectangular", "conv", "moons_conv", "resnet", "vgg", "cifar_resnet")


def build_model(model: str, tech, num_classes: int, shape: tuple[int, ...], *, dataset: str,
                depth: int, width, init: str, head: str, init_steps: int = DECORRELATE_STEPS,
                init_lr: float = DECORRELATE_LR, widths: list | None = None) -> nn.Module:
    """The net :func:`train_run` trains: family ``model`` (one of
    :data:`MODELS`) shaped by the technique ``tech``'s model options, for
    inputs of feature ``shape`` and ``num_classes`` classes (one logit when
    2). Initialized from torch's global RNG (seed it first). ``widths``
    (:func:`~jumpstart.models.layer_widths` of a trained model) rebuilds a
    model a technique reshaped (Neural Rejuvenation: ``[old, new]`` entries); the run's ``nr_mode``
    must then be in ``tech``'s config.

    Raises:
        ValueError: a model that does not fit the data (shape, channels,
            data set) or the technique (GELU on a ResNet), or bad sizes.
    """
    out_features = 1 if num_classes == 2 else num_classes
    if model == "moons_conv":
        if dataset != "moons":
            raise ValueError("model moons_conv takes the moons data set only")
        tech.model_options({})
        return MoonsConv(depth, width)
    options = tech.model_options({"activation": "relu", "norm": None, "skip": None})
    if model == "rectangular":  # images are flattened (an MLP on pixels)
        return Rectangular(depth, width, math.prod(shape), out_features, init=init,
                           init_steps=init_steps, init_lr=init_lr, widths=widths,
                           mode=tech.config.get("nr_mode", "split"), **options)
    if len(shape) != 3:
        raise ValueError(f"model {model} needs image data (N, C, H, W); {dataset} has "
                         f"features of shape {shape}")
    if model == "conv":
        return Rectangular(depth, width, shape[0], out_features, init=init, kind="conv",
                           head=head, input_size=shape[1:], init_steps=init_steps,
                           init_lr=init_lr, widths=widths,
                           mode=tech.config.get("nr_mode", "split"), **options)
    if model == "cifar_resnet":
        if options["activation"] != "relu" or options["skip"] is not None:
            raise ValueError("model cifar_resnet has ReLU, BatchNorm and shortcuts built in; "
                             "the technique asks for other activations or skips")
        return CifarResNet(depth, float(width), out_features, in_channels=shape[0],
                           widths=widths, mode=tech.config.get("nr_mode", "split"))
    if model == "vgg":
        if options["activation"] != "relu" or options["skip"] is not None:
            raise ValueError("model vgg is a plain ReLU chain; the technique asks for "
                             f"{options['activation']} activations or skips")
        return VGG(depth, width, out_features, in_channels=shape[0], norm=options["norm"],
                   widths=widths, mode=tech.config.get("nr_mode", "split"))
    if options["activation"] != "relu":
        raise ValueError(f"model resnet has ReLU activations only; the technique asks for "
                         f"{options['activation']}")
    if shape[0] != 3:
        raise ValueError(f"model resnet takes RGB images (3 channels); {dataset} has {shape[0]}")
    if not (isinstance(width, (int, float)) and width > 0):
        raise ValueError(f"width (the width multiplier) must be > 0 for model resnet; got {width!r}")
    return ResNet(depth, norm=options["norm"], skip=options["skip"] is not None,
                  width_multiplier=float(width), num_classes=out_features)
