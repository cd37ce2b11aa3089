"""Integrations: a Lightning callback that adds Jumpstart to any
``LightningModule`` (needs ``pip install 'jumpstart[lightning]'``), and a
torchmetrics metric of activation status that reduces correctly across
processes (needs only ``pip install 'jumpstart[metrics]'``: it imports without
Lightning). Each is imported when first used."""

from importlib import import_module

_WHERE = {"JumpstartCallback": ".lightning", "ActivationStatusMetric": ".metrics"}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ActivationStatusMetric", "JumpstartCallback"]
