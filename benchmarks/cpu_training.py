"""Image training on CPU: every path, plain and with Jumpstart, side by side.

For each net and path, a plain model and the same model with
:class:`jumpstart.Jumpstart` attached (same initial weights) take SGD steps
(momentum 0.9, batch 128, 32x32 RGB inputs) in turn, in alternating order;
the table gives each one's median step time, images per second, and the
median over the pairs of Jumpstart's time over the plain step's, with its
range. The paths are those a user tries: NCHW float32 with denormals on,
NCHW float32 with denormals flushed, channels-last float32, NCHW bfloat16
autocast, channels-last bfloat16 (the last four with denormals flushed; the
last is :mod:`jumpstart.train.fast_path`'s default on a CPU with native
bfloat16). Target: Jumpstart at most 1.10x the plain step on the fast path.

    python benchmarks/cpu_training.py [--steps 8] [--threads 2] [--nets vgg,conv]

Nets: NR's CIFAR ``VGG(19, 8)`` (16 convs of 8-64 channels, no BatchNorm)
and ``Rectangular(30, 16, kind="conv", head="maxavg")`` (CPAIOR's plain 3x3
conv net). Inputs are one fixed batch of CIFAR-10 images from the shared
``cifar10-10k`` subset when it is there (standardized per channel), else
Gaussian noise; the first two steps of each model are not timed.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from jumpstart import Jumpstart
from jumpstart.models import VGG, Rectangular
from jumpstart.train.fast_path import FastPath

#: (label, memory format, precision, denormals flushed)
PATHS = [
    ("NCHW fp32, denormals on", "contiguous", "32", False),
    ("NCHW fp32, flush denormal", "contiguous", "32", True),
    ("channels-last fp32", "channels_last", "32", True),
    ("NCHW bf16 autocast", "contiguous", "bf16", True),
    ("channels-last bf16", "channels_last", "bf16", True),
]
NETS = {
    "vgg": ("VGG(19, 8)", lambda: VGG(19, 8, 10, in_channels=3)),
    "conv": ("Rectangular(30, 16, conv, maxavg)",
             lambda: Rectangular(30, 16, 3, 10, kind="conv", head="maxavg", input_size=(32, 32))),
}


def batch(n: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` CIFAR-10 training images ``(n, 3, 32, 32)`` and labels, or noise."""
    try:
        from jumpstart.data import load_dataset

        data = load_dataset("cifar10-10k", seed=0)
        return data.x_train[:n].clone(), data.y_train[:n].clone()
    except (FileNotFoundError, ValueError):
        g = torch.Generator().manual_seed(0)
        return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


class Stepper:
    """One model on one path, with or without Jumpstart, stepping on one batch."""

    def __init__(self, build, path: FastPath, x, y, jumpstart: bool) -> None:
        torch.manual_seed(0)
        self.path, self.model = path, path.apply(build())
        self.x, self.y = path.layout(x), y
        self.js = Jumpstart(self.model) if jumpstart else None
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)

    def step(self) -> float:
        """Seconds of one forward, loss, backward and SGD step."""
        t0 = time.perf_counter()
        with self.path.autocast(self.x.device):
            loss = nn.functional.cross_entropy(self.model(self.x).float(), self.y)
            if self.js is not None:
                loss = loss + 1e-3 * self.js.penalty()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return time.perf_counter() - t0


def measure(build, path: FastPath, flush: bool, x, y, steps: int) -> dict:
    """Median step times and ratios of a plain and a Jumpstart model, in turn."""
    torch.set_flush_denormal(flush)
    plain, js = Stepper(build, path, x, y, False), Stepper(build, path, x, y, True)
    for _ in range(2):
        plain.step(), js.step()
    tp, tj = [], []
    for i in range(steps):
        if i % 2:
            b, a = js.step(), plain.step()
        else:
            a, b = plain.step(), js.step()
        tp.append(a), tj.append(b)
    ratios = [b / a for a, b in zip(tp, tj)]
    return {"plain": statistics.median(tp), "js": statistics.median(tj),
            "ratio": statistics.median(ratios), "lo": min(ratios), "hi": max(ratios)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="timed pairs per row")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--nets", default="vgg,conv", help="comma-separated: vgg, conv")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x, y = batch()
    print(f"torch {torch.__version__}, {args.threads} threads, batch {len(x)}, "
          f"{args.steps} timed pairs per row\n")
    print("| net | path | plain ms | Jumpstart ms | Jumpstart x (median [range]) "
          "| plain img/s | Jumpstart img/s | plain speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for key in args.nets.split(","):
        label, build = NETS[key]
        first = None
        for name, layout, precision, flush in PATHS:
            r = measure(build, FastPath(precision, layout, flush, args.threads), flush, x, y,
                        args.steps)
            first = first or r["plain"]
            print(f"| {label} | {name} | {r['plain'] * 1e3:.0f} | {r['js'] * 1e3:.0f} "
                  f"| {r['ratio']:.2f} [{r['lo']:.2f}, {r['hi']:.2f}] "
                  f"| {len(x) / r['plain']:.0f} | {len(x) / r['js']:.0f} "
                  f"| {first / r['plain']:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
