"""The fast path of image training: precision, memory format and denormals,
chosen per run for speed where the result stays trustworthy.

Measured on this project's 2-core CPU (``benchmarks/cpu_training.py``), an
SGD step of NR's VGG-19 at width 8, batch 128, went from 2.6 s in NCHW
float32 with denormals on to about 0.1 s in channels-last with bfloat16
autocast and denormals flushed: deep plain nets make denormal activations
and gradients, and denormal arithmetic is tens of times slower on CPUs;
oneDNN's convolutions are faster in channels-last; bfloat16 halves the
memory traffic where the CPU computes it natively.

Three run options, declared once in :data:`FAST_OPTIONS` (a run config's
keys, ``jumpstart train``'s flags, :func:`~jumpstart.train.fit`'s arguments):

- ``precision``: ``"auto"`` (default) is ``"bf16"`` (``torch.autocast``
  with bfloat16 for the forward and the loss; the task loss in float32) for
  an image model (4-D inputs and a ``Conv2d``) on a CPU with native bfloat16
  (the ``avx512_bf16`` or ``amx_bf16`` flag), else ``"32"``; ``"32"`` or
  ``"bf16"`` forces it. On CUDA ``"auto"`` stays ``"32"`` (a GPU preset sets
  ``bf16`` itself).
- ``memory_format``: ``"auto"`` (default) is ``"channels_last"`` for an
  image model, else ``"contiguous"``; parameters and input batches use it.
- ``flush_denormal``: ``True`` (default) flushes denormal floats to zero in
  CPU arithmetic while the run trains (``torch.set_flush_denormal``, the previous state
  restored after), as GPU kernels commonly do; it changes no result a float32
  run resolves (denormals are below 1.2e-38).

What a run used is recorded in its result as ``fast_path``
(:meth:`FastPath.record`), with ``threads``, torch's intra-op threads (a
sweep gives each worker ``cores // workers``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from ..core.options import Option, choice, filled

PRECISIONS = ("auto", "32", "bf16")
MEMORY_FORMATS = ("auto", "contiguous", "channels_last")

#: the fast path's run options, their defaults and checks (the one definition)
FAST_OPTIONS: dict[str, Option] = {
    "precision": Option("auto", *choice(PRECISIONS)),
    "memory_format": Option("auto", *choice(MEMORY_FORMATS)),
    "flush_denormal": Option(True, lambda v: isinstance(v, bool), "true or false"),
}


def check_fast_path(**options) -> dict:
    """``FAST_OPTIONS`` filled with their defaults where not given.

    Raises:
        ValueError: an unknown key, or a value its check rejects (the message
            names the key, the value and what is allowed).
    """
    return filled(options, FAST_OPTIONS, "fast-path")


@dataclass(frozen=True)
class FastPath:
    """The resolved fast path of one run.

    Attributes:
        precision: ``"32"`` or ``"bf16"``.
        memory_format: ``"contiguous"`` or ``"channels_last"``.
        flush_denormal: denormals flushed to zero while training (CPU).
        threads: torch's intra-op threads when the run started.
    """

    precision: str
    memory_format: str
    flush_denormal: bool
    threads: int

    def record(self) -> dict:
        """The four fields as a dict (a run's ``fast_path`` record)."""
        return asdict(self)

    def autocast(self, device: torch.device):
        """The ``torch.autocast`` context of the forward and loss (disabled for ``"32"``)."""
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def layout(self, x: Tensor) -> Tensor:
        """``x`` in the run's memory format (image batches ``(N, C, H, W)`` only)."""
        if self.memory_format == "channels_last" and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def apply(self, model: nn.Module) -> nn.Module:
        """Lay ``model``'s 4-D parameters out in the run's memory format (in place)."""
        if self.memory_format == "channels_last":
            model.to(memory_format=torch.channels_last)
        return model


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (``avx512_bf16`` or
    ``amx_bf16`` in ``/proc/cpuinfo``; ``False`` where that cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def is_image_model(model: nn.Module, sample: Tensor) -> bool:
    """An image model: 4-D inputs ``(N, C, H, W)`` and at least one ``nn.Conv2d``."""
    return sample.dim() == 4 and any(isinstance(m, nn.Conv2d) for m in model.modules())


def resolve_fast_path(model: nn.Module, sample: Tensor, device: torch.device, *,
                      precision: str = "auto", memory_format: str = "auto",
                      flush_denormal: bool = True) -> FastPath:
    """The fast path of a run of ``model`` on inputs like ``sample`` (``(1, *feature_shape)``).

    ``"auto"`` values are resolved as the module docstring says.

    Raises:
        ValueError: a value :data:`FAST_OPTIONS` rejects.
    """
    check_fast_path(precision=precision, memory_format=memory_format,
                    flush_denormal=flush_denormal)
    image = is_image_model(model, sample)
    if precision == "auto":
        precision = "bf16" if image and device.type == "cpu" and native_bf16() else "32"
    if memory_format == "auto":
        memory_format = "channels_last" if image else "contiguous"
    return FastPath(precision, memory_format, flush_denormal, torch.get_num_threads())


def denormals_flushed() -> bool:
    """Whether float32 denormals are flushed to zero now (a denormal times one is zero)."""
    return (torch.tensor([1e-39]) * 1.0).item() == 0.0



@contextmanager
def flushing(on: bool = True) -> Iterator[None]:
    """Flush denormals to zero (``on``) or keep them while the block runs,
    then restore the state before: every trainer trains inside it
    (``fit`` with the run's ``flush_denormal``, the population trainers
    with ``True``)."""
    before = denormals_flushed()
    torch.set_flush_denormal(on)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)
