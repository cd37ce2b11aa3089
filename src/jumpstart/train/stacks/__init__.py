"""The hand-written MOONS stacks: thousands of tiny dense (and MoonsConv) nets
trained at once, one engine of its own.

- :mod:`.trainer`: :func:`~.trainer.train_stacked`, the stacks' training loop,
  and the trainer entries (``refusal``, ``train_runs``) that
  :mod:`jumpstart.train.route` calls;
- :mod:`.layers`: the stacked weights with a hand-written backward
  (``DenseStack``, ``MoonsConvStack``);
- :mod:`.kernels`: their fused Numba kernels.

The other engines: :mod:`jumpstart.train.population` (the generic population
trainer, autograd over stacked members) and :mod:`jumpstart.train.loop`
(``fit``, the single-run loop; :mod:`jumpstart.train.run` around it).
"""

from .trainer import Member, refusal, stack_parts, stack_spec, train_runs, train_stacked

__all__ = ["Member", "refusal", "stack_parts", "stack_spec", "train_runs", "train_stacked"]
