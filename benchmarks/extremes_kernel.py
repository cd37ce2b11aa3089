"""One conv layer's deficits on CPU: the fused extremes kernel against a
ReLU over the same tensor (one pass over memory) and against the PyTorch
reductions it replaces.

Per row: median microseconds over ``--calls`` calls (10 untimed first) of
``torch.relu(g)``, :func:`jumpstart.core.extremes.margin_extremes` (the
kernel), the deficits' whole forward (``_MarginDeficits``, no grad: the kernel
and the ops around it) and the PyTorch reductions (``_reduced``, the path
where the kernel does not apply), on a pre-activation ``g`` of ``--shape``
(N, C, H, W), bfloat16 and float32, channels-last and standard.

    python benchmarks/extremes_kernel.py [--shape 128,8,28,28] [--threads 1,2] [--calls 200]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from jumpstart.core.deficits import _layout, _MarginDeficits, _reduced
from jumpstart.core.extremes import margin_extremes


def median_us(f, calls: int) -> float:
    """Median microseconds of ``calls`` calls of ``f`` (10 untimed first)."""
    for _ in range(10):
        f()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="128,8,28,28")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    n, c, h, w = (int(v) for v in args.shape.split(","))
    print(f"torch {torch.__version__}, g of shape ({n}, {c}, {h}, {w}), median of "
          f"{args.calls} calls, microseconds\n")
    print("| threads | dtype | layout | relu | kernel | deficits forward | PyTorch reductions |")
    print("|---|---|---|---|---|---|---|")
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for dtype in (torch.bfloat16, torch.float32):
            for layout in (torch.channels_last, torch.contiguous_format):
                g = torch.randn(n, c, h, w).to(dtype).contiguous(memory_format=layout)
                gf = g.reshape(n, c, -1)
                sign, stride, offset = _layout(n, c, dtype, g.device)

                def forward():
                    with torch.no_grad():
                        _MarginDeficits.apply(g, 1.0, False, False, 1)

                row = [median_us(lambda: torch.relu(g), args.calls),
                       median_us(lambda: margin_extremes(gf), args.calls),
                       median_us(forward, args.calls),
                       median_us(lambda: _reduced(gf, 1.0, False, sign, stride, offset),
                                 args.calls)]
                name = "channels-last" if layout == torch.channels_last else "standard"
                print(f"| {threads} | {str(dtype)[6:]} | {name} | "
                      + " | ".join(f"{v:.0f}" for v in row) + " |", flush=True)


if __name__ == "__main__":
    main()
