"""Population training for thin conv nets on CPU: does one step of K stacked
nets beat K separate steps? (issue 30, item 4)

Three ways to train K plain 3x3 conv nets with the max+avg head
(``Rectangular(depth, width, kind="conv", head="maxavg")``, the nets of
preset ``cifar10-10k-cpu``) on one batch each step, on the fast path
(channels-last, bfloat16 autocast, denormals flushed):

- ``separate``: K models, each its own forward, backward and SGD step (what
  the sweep's single-run loop does, one run after another);
- ``vmap``: the K models' parameters stacked (``torch.func.stack_module_state``)
  and one ``vmap(functional_call)`` forward over them, one backward, one SGD
  step on the stacked tensors;
- ``grouped``: one net of K * width channels whose convolutions have
  ``groups=K`` (the first reads the shared input with K * width filters), a
  per-member linear head: the same arithmetic as K nets in one kernel per
  layer.

Each way takes steps in turn (alternating order, the first two untimed); the
table gives the median seconds per step of all K members and each way's
speed over ``separate`` (above 1: the population pays). Run on a quiet
machine:

    python benchmarks/image_population.py [--members 5] [--threads 1,2] [--steps 6]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from jumpstart.models import Rectangular
from jumpstart.train.fast_path import FastPath

#: (depth, width) cells of preset cifar10-10k-cpu
CELLS = [(10, 4), (20, 8), (30, 16)]


def conv_net(depth: int, width: int) -> nn.Module:
    """One member: CPAIOR's plain conv net with the max+avg head, 32x32 RGB."""
    return Rectangular(depth, width, 3, 10, kind="conv", head="maxavg", input_size=(32, 32))


class Grouped(nn.Module):
    """K conv nets as one: ``depth`` 3x3 convolutions of ``K * width``
    channels (``groups=K`` after the first), ReLU, global max and mean per
    channel, a linear head per member. Logits ``(K, N, 10)`` for ``x``
    ``(N, 3, 32, 32)``."""

    def __init__(self, members: int, depth: int, width: int) -> None:
        super().__init__()
        self.k, c = members, members * width
        self.convs = nn.ModuleList([nn.Conv2d(3, c, 3, padding=1)] + [
            nn.Conv2d(c, c, 3, padding=1, groups=members) for _ in range(depth - 1)])
        self.head = nn.Parameter(torch.randn(members, 2 * width, 10) / (2 * width) ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = torch.relu(conv(x))
        n = x.shape[0]
        pooled = torch.cat([x.amax(dim=(2, 3)).view(n, self.k, -1),
                            x.mean(dim=(2, 3)).view(n, self.k, -1)], dim=2)
        return torch.einsum("nkc,kco->kno", pooled, self.head)


class Way:
    """One way of stepping K members on the fast path."""

    def __init__(self, name: str, members: int, depth: int, width: int, path: FastPath,
                 x: torch.Tensor, y: torch.Tensor) -> None:
        torch.manual_seed(0)
        self.name, self.path, self.k = name, path, members
        self.x, self.y = path.layout(x), y
        if name == "separate":
            self.models = [path.apply(conv_net(depth, width)) for _ in range(members)]
            self.opts = [torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
                         for m in self.models]
        elif name == "vmap":
            models = [path.apply(conv_net(depth, width)) for _ in range(members)]
            self.params, self.buffers = stack_module_state(models)
            self.base = conv_net(depth, width).to("meta")
            self.opts = [torch.optim.SGD(self.params.values(), lr=0.01, momentum=0.9)]
        else:
            self.net = path.apply(Grouped(members, depth, width))
            self.opts = [torch.optim.SGD(self.net.parameters(), lr=0.01, momentum=0.9)]

    def _loss(self, logits: torch.Tensor) -> torch.Tensor:
        """Sum over members of the cross-entropy, ``logits`` ``(K, N, 10)``."""
        return nn.functional.cross_entropy(logits.float().flatten(0, 1),
                                           self.y.repeat(self.k)) * self.k

    def step(self) -> float:
        """Seconds of one step of all K members."""
        t0 = time.perf_counter()
        with self.path.autocast(self.x.device):
            if self.name == "separate":
                losses = [nn.functional.cross_entropy(m(self.x).float(), self.y)
                          for m in self.models]
            elif self.name == "vmap":
                def member(params, buffers, x):
                    return functional_call(self.base, (params, buffers), (x,))

                losses = [self._loss(vmap(member, in_dims=(0, 0, None))(
                    self.params, self.buffers, self.x))]
            else:
                losses = [self._loss(self.net(self.x))]
        for opt in self.opts:
            opt.zero_grad(set_to_none=True)
        for loss in losses:  # separate: K backward passes, as K runs take them
            loss.backward()
        for opt in self.opts:
            opt.step()
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=5, help="K nets per population")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per way")
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (args.batch,), generator=g)
    print(f"torch {torch.__version__}, {args.members} members, batch {args.batch}, "
          f"{args.steps} timed steps per way, channels-last bf16\n")
    print("| threads | depth x width | separate s | vmap s | grouped s "
          "| vmap speed-up | grouped speed-up |")
    print("|---|---|---|---|---|---|---|")
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        path = FastPath("bf16", "channels_last", True, threads)
        torch.set_flush_denormal(True)
        for depth, width in CELLS:
            ways = [Way(name, args.members, depth, width, path, x, y)
                    for name in ("separate", "vmap", "grouped")]
            times = {w.name: [] for w in ways}
            for _ in range(2):
                for w in ways:
                    w.step()
            for i in range(args.steps):
                for w in (ways if i % 2 == 0 else ways[::-1]):
                    times[w.name].append(w.step())
            med = {k: statistics.median(v) for k, v in times.items()}
            print(f"| {threads} | {depth} x {width} | {med['separate']:.3f} | {med['vmap']:.3f} "
                  f"| {med['grouped']:.3f} | {med['separate'] / med['vmap']:.2f}x "
                  f"| {med['separate'] / med['grouped']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
