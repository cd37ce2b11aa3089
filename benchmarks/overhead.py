"""Cost of Jumpstart against plain training of the same model.

Prints, per model, the median step time (forward, loss, backward, Adam step)
and the bytes autograd saves for backward in one forward, with and without
Jumpstart, and their ratios (time: the median over steps of the ratio of two
steps run back to back, which cancels the drift of a shared machine). Targets (issue 2): at most 1.10x step time and
1.05x saved bytes.

    python benchmarks/overhead.py [--steps 30] [--threads 2] [--device cpu] [--repeats 1]
        [--models cnn,cnn-fast,resnet18,vgg11,vit,resnet50]

``--repeats K`` measures each row K times over (fresh models each time) and
prints the median time ratio with its range: on a shared VM one measurement
of the thin CNN has moved between 1.07x and 1.34x.

Two more columns (CPU, eager rows) say where a ratio comes from:
``penalty ms``, the time of Jumpstart's own work in one step (its deficits'
forward and backward nodes, from ``torch.profiler`` over 5 steps; hooks and
the aggregation, about 0.3 ms, not counted) and ``penalty x``, one plus that
over the plain step; and ``faults/step`` (plain, Jumpstart), the minor page
faults of one step. On glibc's allocator a step that faults has its memory
returned to the system and taken back each step; on the thin CNN that alone
has moved the plain forward between 30 and 59 ms and moves ``time x`` away
from ``penalty x``, either way, from run to run
(``MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=4294967296``
keeps the memory; both steps then fault almost never).

Denormals are flushed to zero, as in every jumpstart trainer. Models: a
20-layer, 8-filter 3x3 CNN on 28x28 inputs, batch 128 (CPU, 2 threads, NCHW
float32; and ``cnn-fast``: the same on the fast path of a conv net on a CPU,
channels-last with bfloat16 autocast); resnet18 (the toolkit's) and vgg11 (torchvision's, or its layout
when torchvision does not import) at batch 8, 64x64, eager and
``torch.compile``d (both nets compiled); a ViT-style stack (4 pre-norm blocks, attention and a GELU
MLP on ``(N, T, D)`` tokens, D 192, T 65, batch 8); on CUDA also the plain ResNet-50 (no BatchNorm, no skips; IEEE Access
2025) at batch 128, 224x224, bf16 autocast, channels-last, with the peak CUDA
memory of a training step (issue 5 targets: 1.05x step time, 1.05x peak memory).
"""

from __future__ import annotations

import argparse
import statistics
import time

try:
    import resource
except ImportError:  # not on Windows: no fault counts
    resource = None

import torch
from torch import nn

from jumpstart import Jumpstart


#: the rows ``--models`` picks from (resnet18 and vgg11: eager and compiled; resnet50:
#: CUDA only)
MODELS = ("cnn", "cnn-fast", "resnet18", "vgg11", "vit", "resnet50")


def thin_cnn(depth: int = 20, width: int = 8, side: int = 28, classes: int = 10) -> nn.Module:
    layers: list[nn.Module] = []
    channels = 1
    for _ in range(depth):
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
        channels = width
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(width * side * side, classes))


def saved_bytes(model: nn.Module, x: torch.Tensor, y: torch.Tensor, js: Jumpstart | None,
                bf16: bool = False) -> int:
    """Bytes of distinct storages autograd saves for backward in one training step."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor):
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = _loss(model, x, y, js, bf16)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(storages.values())


def _loss(model, x, y, js, bf16: bool):
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = nn.functional.cross_entropy(model(x).float(), y)
        if js is not None:
            loss = loss + 1e-3 * js.penalty()
    return loss


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource else 0


def step_times(model, x, y, js, steps: int, sync, bf16: bool = False,
               faults: list[int] | None = None) -> list[float]:
    """Seconds of each of ``steps`` training steps (a fresh Adam); the minor
    page faults of each step are appended to ``faults`` when given."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for _ in range(steps):
        sync()
        f0, t0 = _faults(), time.perf_counter()
        loss = _loss(model, x, y, js, bf16)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        times.append(time.perf_counter() - t0)
        if faults is not None:
            faults.append(_faults() - f0)
    return times


def penalty_seconds(model, x, y, js, steps: int = 5, bf16: bool = False) -> float:
    """Seconds per step spent in Jumpstart's deficits (forward and backward
    nodes, children included), from ``torch.profiler`` over ``steps`` steps."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step_times(model, x, y, js, steps, lambda: None, bf16)
    own = sum(e.cpu_time_total for e in prof.key_averages()
              if e.key in ("_MarginDeficits", "_MarginDeficitsBackward"))
    return own / 1e6 / steps


def peak_bytes(model, x, y, js, bf16: bool) -> int:
    """Peak CUDA memory of one training step (forward, loss, backward)."""
    model.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    _loss(model, x, y, js, bf16).backward()
    torch.cuda.synchronize()
    model.zero_grad(set_to_none=True)
    return torch.cuda.max_memory_allocated() - base


def vgg11(classes: int = 10) -> nn.Module:
    """torchvision's VGG-11 layout (8 3x3 convs with ReLU, 5 max-pools, adaptive
    7x7 average pool, two 4096-unit ReLU layers with dropout, then the
    classifier); torchvision itself when it imports."""
    try:
        from torchvision.models import vgg11 as tv_vgg11
    except ImportError:
        pass
    else:
        return tv_vgg11(num_classes=classes)
    layers: list[nn.Module] = []
    channels = 3
    for c in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
        if c == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(channels, c, 3, padding=1), nn.ReLU(inplace=True)]
            channels = c
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(7), nn.Flatten(),
                         nn.Linear(512 * 49, 4096), nn.ReLU(True), nn.Dropout(),
                         nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(),
                         nn.Linear(4096, classes))


class Block(nn.Module):
    """A pre-norm transformer block (timm ViT's layout): attention, then a GELU MLP."""

    def __init__(self, d: int = 192, heads: int = 3):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


def vit_stack(depth: int = 4, d: int = 192, patch: int = 8, classes: int = 10) -> nn.Module:
    class ViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Conv2d(3, d, patch, stride=patch)
            self.cls = nn.Parameter(torch.zeros(1, 1, d))
            self.blocks = nn.Sequential(*(Block(d) for _ in range(depth)))
            self.head = nn.Linear(d, classes)

        def forward(self, x):
            t = self.embed(x).flatten(2).transpose(1, 2)
            t = torch.cat([self.cls.expand(len(t), -1, -1), t], dim=1)
            return self.head(self.blocks(t)[:, 0])

    return ViT()


def measure(name: str, make_model, x, y, steps: int, device, bf16: bool = False,
            compiled: bool = False, channels_last: bool = False) -> dict:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    layout = (torch.channels_last if x.dim() == 4 and (device.type == "cuda" or channels_last)
              else None)
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        m = make_model().to(device)
        models.append(m.to(memory_format=layout) if layout else m)
    plain, regular = models
    js = Jumpstart(regular)
    if layout:
        x = x.contiguous(memory_format=layout)
    if compiled:  # hook guards on: the Jumpstart net must not reuse the plain net's graph
        torch._dynamo.config.skip_nnmodule_hook_guards = False
        plain, regular = torch.compile(plain), torch.compile(regular)
    row = {"model": name}
    if device.type == "cuda":
        peak_plain, peak_js = peak_bytes(plain, x, y, None, bf16), peak_bytes(regular, x, y, js, bf16)
    step_times(plain, x, y, None, 3, sync, bf16)  # warm-up
    step_times(regular, x, y, js, 3, sync, bf16)
    t_plain, t_js, f_plain, f_js = [], [], [], []
    for _ in range(steps):  # alternate step by step: each pair sees the same machine state
        t_plain += step_times(plain, x, y, None, 1, sync, bf16, f_plain)
        t_js += step_times(regular, x, y, js, 1, sync, bf16, f_js)
    mp, mj = statistics.median(t_plain), statistics.median(t_js)
    row.update({"plain ms": mp * 1e3, "jumpstart ms": mj * 1e3,
                "time x": statistics.median(j / p for p, j in zip(t_plain, t_js))})
    if device.type == "cpu" and not compiled:
        own = penalty_seconds(regular, x, y, js, bf16=bf16)
        row.update({"penalty ms": own * 1e3, "penalty x": 1 + own / mp,
                    "faults/step": f"{statistics.median(f_plain):.0f}, "
                                   f"{statistics.median(f_js):.0f}"})
    if device.type == "cuda":
        row.update({"plain peak MiB": peak_plain / 2**20, "js peak MiB": peak_js / 2**20,
                    "peak x": peak_js / peak_plain})
    else:
        bytes_plain = saved_bytes(plain, x, y, None, bf16)
        bytes_js = saved_bytes(regular, x, y, js, bf16)
        row.update({"plain MiB": bytes_plain / 2**20, "jumpstart MiB": bytes_js / 2**20,
                    "memory x": bytes_js / bytes_plain})
    return row


def repeated(k: int, measure_row) -> dict:
    """``measure_row()`` run ``k`` times: the first row, its ``time x`` (and
    ``penalty x``) the median of the ``k`` ratios, with ``time x min`` /
    ``time x max``."""
    rows = [measure_row() for _ in range(k)]
    if k == 1:
        return rows[0]
    ratios = [r["time x"] for r in rows]
    out = {**rows[0], "time x": statistics.median(ratios), "time x min": min(ratios),
           "time x max": max(ratios)}
    if "penalty x" in out:
        out["penalty x"] = statistics.median(r["penalty x"] for r in rows)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--models", default=",".join(MODELS),
                        help="comma-separated rows: " + ", ".join(MODELS))
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1; got {args.repeats}")
    wanted = args.models.split(",")
    if not set(wanted) <= set(MODELS):
        parser.error(f"--models: unknown {sorted(set(wanted) - set(MODELS))}; "
                     f"known: {', '.join(MODELS)}")
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as every jumpstart trainer does (jumpstart.train.fast_path)
    device = torch.device(args.device)
    rows = []

    def measured(*a, **kw) -> dict:  # a row, measured --repeats times
        return repeated(args.repeats, lambda: measure(*a, **kw))

    x = torch.randn(128, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (128,), device=device)
    if "cnn" in wanted:
        rows.append(measured("cnn 20x8 3x3, 28x28, batch 128", thin_cnn, x, y, args.steps,
                             device))
    if "cnn-fast" in wanted:  # jumpstart.train.fast_path's default for a conv net on a CPU
        rows.append(measured("cnn 20x8 3x3, 28x28, batch 128, channels-last bf16", thin_cnn, x,
                             y, args.steps, device, bf16=True, channels_last=True))
    from jumpstart.models import resnet18

    x = torch.randn(8, 3, 64, 64, device=device)
    y = torch.randint(0, 10, (8,), device=device)
    for name, make in (("resnet18", lambda: resnet18(num_classes=10)), ("vgg11", vgg11)):
        for compiled in (False, True):
            if name in wanted:
                rows.append(measured(f"{name}, 64x64, batch 8{', compiled' if compiled else ''}",
                                     make, x, y, args.steps, device, compiled=compiled))
    if "vit" in wanted:
        rows.append(measured("vit stack 4x192, 65 tokens, batch 8", vit_stack, x, y,
                             args.steps, device))
    if device.type == "cuda" and "resnet50" in wanted:
        from jumpstart.models import resnet50

        x = torch.randn(128, 3, 224, 224, device=device)
        y = torch.randint(0, 1000, (128,), device=device)
        rows.append(measured("plain resnet50, b128 224 bf16",
                            lambda: resnet50(norm=None, skip=False), x, y, args.steps, device,
                            bf16=True))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {device} ({name}), {torch.get_num_threads()} threads, torch {torch.__version__}")
    for r in rows:
        print(" | ".join(f"{k}: {v:.3f}" if isinstance(v, float) else
                         str(v) if k == "model" else f"{k}: {v}" for k, v in r.items()))


if __name__ == "__main__":
    main()
