"""Integrations: a Lightning callback that adds Jumpstart to any
``LightningModule``, and a torchmetrics metric of activation status that
reduces correctly across processes. Needs ``pip install 'jumpstart[lightning]'``."""

from .lightning import JumpstartCallback
from .metrics import ActivationStatusMetric

__all__ = ["ActivationStatusMetric", "JumpstartCallback"]
