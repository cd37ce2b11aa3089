"""Trained weights that can be reloaded: a run's config, state dict and
layer widths in one file (``model.pt`` of ``jumpstart train --out``) or one
store blob (sweeps with ``save_weights = true``)."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import nn

from ..data import load_run_data
from ..models import layer_widths
from ..techniques import technique_of
from .build import build_model


def checkpoint_bytes(config: dict, model: nn.Module) -> bytes:
    """``torch.save`` of ``{"config", "state_dict", "widths"}`` for ``model``
    trained under run ``config`` (tensors moved to the CPU)."""
    buffer = io.BytesIO()
    torch.save({"config": dict(config),
                "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "widths": layer_widths(model)}, buffer)
    return buffer.getvalue()


def read_checkpoint(source: bytes | str | Path) -> dict:
    """A checkpoint from its bytes, a ``model.pt`` file, or a run folder holding one.

    Raises:
        FileNotFoundError: no such file (or no ``model.pt`` in the folder).
        ValueError: not a jumpstart checkpoint.
    """
    if not isinstance(source, bytes):
        path = Path(source)
        if path.is_dir():
            path = path / "model.pt"
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path} (jumpstart train --out writes "
                                    "model.pt)")
        source = path.read_bytes()
    try:
        ckpt = torch.load(io.BytesIO(source), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling error means: not ours
        raise ValueError(f"not a jumpstart checkpoint: {exc}") from None
    if not (isinstance(ckpt, dict) and {"config", "state_dict", "widths"} <= set(ckpt)):
        raise ValueError("not a jumpstart checkpoint: expected config, state_dict and widths")
    return ckpt


def rebuild_model(ckpt: dict, data=None) -> tuple[nn.Module, object]:
    """The trained model of a checkpoint, in eval mode, and the run's data set
    (loaded from its config unless ``data`` is given).

    Raises:
        ValueError: the checkpoint's widths differ from those its config
            builds (a model a technique reshaped is rebuilt from the stored
            widths only when Neural Rejuvenation grew it: ``[old, new]`` entries);
            a config the toolkit cannot build.
        FileNotFoundError: the run's data set is missing.
    """
    c = ckpt["config"]
    if data is None:
        data = load_run_data(c)
    shape = data.feature_shape if hasattr(data, "feature_shape") else tuple(data.x_train.shape[1:])
    model = build_model(c["model"], technique_of(c), data.num_classes, shape,
                        dataset=c["dataset"], depth=c["depth"], width=c["width"],
                        init=c.get("init", "glorot"), head=c.get("head", "flatten"),
                        widths=ckpt["widths"] if any(isinstance(w, list) for w in ckpt["widths"])
                        else None)
    if layer_widths(model) != list(ckpt["widths"]):
        raise ValueError(f"the checkpoint's layer widths {ckpt['widths']} differ from those "
                         f"its config builds ({layer_widths(model)}): a reshaped model")
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), data
