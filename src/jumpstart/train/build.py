"""The net of a run config: the registered model family
(:data:`jumpstart.models.MODEL_FAMILIES`) built and shaped by the run's
technique (:func:`build_model`)."""

from __future__ import annotations

from torch import nn

from ..models.rectangular import DECORRELATE_LR, DECORRELATE_STEPS
from ..models.registry import MODEL_OPTIONS, ModelRequest, model_family


def build_model(model: str, tech, num_classes: int, shape: tuple[int, ...], *, dataset: str,
                depth: int, width, init: str, head: str, init_steps: int = DECORRELATE_STEPS,
                init_lr: float = DECORRELATE_LR, widths: list | None = None) -> nn.Module:
    """The net :func:`~jumpstart.train.train_run` trains: the registered
    family ``model`` (:func:`~jumpstart.models.registry.model_family`) shaped
    by the technique ``tech``'s model options, for inputs of feature ``shape``
    and ``num_classes`` classes (one logit when 2). Initialized from torch's
    global RNG (seed it first). ``widths`` (:func:`~jumpstart.models.layer_widths`
    of a trained model) rebuilds a model a technique reshaped (Neural
    Rejuvenation: ``[old, new]`` entries); the run's ``nr_mode`` must then be
    in ``tech``'s config.

    Raises:
        ValueError: an unknown family, a model that does not fit the data
            (shape, channels, data set) or the technique (GELU on a ResNet),
            or bad sizes.
    """
    family = model_family(model)
    if family.datasets is not None and dataset not in family.datasets:
        raise ValueError(f"model {model} takes the {', '.join(family.datasets)} data set "
                         "only")
    if family.images and len(shape) != 3:
        raise ValueError(f"model {model} needs image data (N, C, H, W); {dataset} has "
                         f"features of shape {shape}")
    options = tech.model_options(dict(MODEL_OPTIONS) if family.model_options else {})
    request = ModelRequest(depth, width, tuple(shape), 1 if num_classes == 2 else num_classes,
                           dataset, init, init_steps, init_lr, head, widths,
                           tech.config.get("nr_mode", "split"), options)
    return family.build(request)
