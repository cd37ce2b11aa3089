"""Time of the dense population stack's fused kernels per training epoch.

    python benchmarks/stack_kernels.py [--depth 50] [--calls 300]

Builds the ``moons-paper`` population of one depth (widths 1-25, baseline and
Jumpstart: 18 members, 9 regularized), then times, on one thread, the calls
one epoch makes: the validation forward (15 points), the training forward
with the penalty's extremes (85 points) and the backward with the penalty
gradient. Each figure is the best of 5 repeats of ``calls / 5`` calls, which
is steadier on a shared machine than timing whole training runs.
"""

from __future__ import annotations

import argparse
import time

import torch

from jumpstart.data import DATASETS
from jumpstart.models import Rectangular
from jumpstart.train.stacks.layers import DenseStack

WIDTHS = (1, 2, 3, 4, 5, 10, 15, 20, 25)


def best_ms(call, calls: int) -> float:
    """Best of 5 repeats of ``calls // 5`` calls, in ms per call."""
    best = float("inf")
    for _ in range(5):
        for _ in range(5):
            call()
        start = time.perf_counter()
        for _ in range(max(1, calls // 5)):
            call()
        best = min(best, (time.perf_counter() - start) / max(1, calls // 5) * 1e3)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    nets = []
    for _ in ("jumpstart", "baseline"):  # regularized members first, as populations stack them
        for width in WIDTHS:
            torch.manual_seed(0)
            nets.append(Rectangular(args.depth, width, 2, 1))
    stack = DenseStack(nets)
    stack.regularize(len(WIDTHS))
    data = DATASETS["moons"]()
    x, n = data.x_train, data.x_train.shape[0]
    dz = torch.randn(len(nets), n) * 0.01
    stack.forward(x, extremes=True)
    coefs = [torch.zeros_like(t).contiguous() for t in stack.extremes(n)]
    rows = [("validation forward", lambda: stack.forward(data.x_val)),
            ("forward + extremes", lambda: stack.forward(x, extremes=True)),
            ("backward + penalty", lambda: stack.backward(x, dz, (coefs, False)))]
    times = [(name, best_ms(call, args.calls)) for name, call in rows]
    print(f"depth {args.depth}, {len(nets)} members, one thread (best of 5)")
    print(f"{'call':<22}{'ms':>8}")
    for name, ms in times:
        print(f"{name:<22}{ms:>8.2f}")
    print(f"{'epoch (sum)':<22}{sum(ms for _, ms in times):>8.2f}")


if __name__ == "__main__":
    main()
