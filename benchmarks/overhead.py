"""Cost of Jumpstart against plain training of the same model.

Prints, per model, the median step time (forward, loss, backward, Adam step)
and the bytes autograd saves for backward in one forward, with and without
Jumpstart, and their ratios. Targets (issue 2): at most 1.10x step time and
1.05x saved bytes.

    python benchmarks/overhead.py [--steps 30] [--threads 2] [--device cpu]

Models: a 20-layer, 8-filter 3x3 CNN on 28x28 inputs, batch 128 (CPU, 2
threads); on CUDA also a plain ResNet-50 (no BatchNorm, no skips) at batch 64
when ``jumpstart.models.resnet50`` exists.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from jumpstart import Jumpstart


def thin_cnn(depth: int = 20, width: int = 8, side: int = 28, classes: int = 10) -> nn.Module:
    layers: list[nn.Module] = []
    channels = 1
    for _ in range(depth):
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
        channels = width
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(width * side * side, classes))


def saved_bytes(model: nn.Module, x: torch.Tensor, y: torch.Tensor, js: Jumpstart | None) -> int:
    """Bytes of distinct storages autograd saves for backward in one training step."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor):
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = nn.functional.cross_entropy(model(x), y)
        if js is not None:
            loss = loss + 1e-3 * js.penalty()
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(storages.values())


def step_times(model, x, y, js, steps: int, sync) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for _ in range(steps):
        sync()
        t0 = time.perf_counter()
        loss = nn.functional.cross_entropy(model(x), y)
        if js is not None:
            loss = loss + 1e-3 * js.penalty()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def measure(name: str, make_model, x, y, steps: int, device) -> dict:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    plain = make_model().to(device)
    torch.manual_seed(0)
    regular = make_model().to(device)
    js = Jumpstart(regular)
    bytes_plain = saved_bytes(plain, x, y, None)
    bytes_js = saved_bytes(regular, x, y, js)
    step_times(plain, x, y, None, 3, sync)  # warm-up
    step_times(regular, x, y, js, 3, sync)
    t_plain, t_js = [], []
    for _ in range(max(1, steps // 5)):  # interleave to cancel drift
        t_plain += step_times(plain, x, y, None, 5, sync)
        t_js += step_times(regular, x, y, js, 5, sync)
    mp, mj = statistics.median(t_plain), statistics.median(t_js)
    return {"model": name, "plain ms": mp * 1e3, "jumpstart ms": mj * 1e3, "time x": mj / mp,
            "plain MiB": bytes_plain / 2**20, "jumpstart MiB": bytes_js / 2**20,
            "memory x": bytes_js / bytes_plain}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    x = torch.randn(128, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (128,), device=device)
    rows.append(measure("cnn 20x8 3x3, 28x28, batch 128", thin_cnn, x, y, args.steps, device))
    if device.type == "cuda":
        try:
            from jumpstart.models import resnet50
        except ImportError:
            print("(plain ResNet-50 not measured: jumpstart.models.resnet50 is not there yet)")
        else:
            x = torch.randn(64, 3, 224, 224, device=device)
            y = torch.randint(0, 1000, (64,), device=device)
            rows.append(measure("plain resnet50, batch 64",
                                lambda: resnet50(norm=None, skip=False), x, y, args.steps, device))
    print(f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    header = list(rows[0])
    print(" | ".join(f"{h:>14}" if i else f"{h:<32}" for i, h in enumerate(header)))
    for r in rows:
        print(" | ".join(f"{v:>14.3f}" if i else f"{v:<32}" for i, v in enumerate(r.values())))


if __name__ == "__main__":
    main()
