"""Prune the dead units of a model that is not one of the toolkit's nets.

    python examples/prune_own_model.py --model plain --epochs 3 --out docs/results/prune-plain
    .venv-zoo/bin/python examples/prune_own_model.py --model resnet18 --epochs 3 \
        --out docs/results/prune-resnet18          # torchvision: the zoo environment

``--model plain``: :class:`PlainNet` below, a user's own deep thin CNN
(``--depth`` convs of ``--width`` channels, default 20 x 16, ReLU, no BatchNorm, PyTorch's default init, a global
average pool and a linear head; written as a plain ``nn.Module``, so
surgery traces it). ``--model resnet18``: ``torchvision.models.resnet18(
num_classes=10)``, random init. Either is trained on the 10,000 cifar10-10k
training images at 32 x 32 with crop+flip, Adam 1e-3, batch 128, for
``--epochs`` epochs, one seed; then every unit dead on the training images
is removed (``prune_dead``, through Torch-Pruning's dependency graph) and
``units.png``, ``layers.csv`` and ``README.md`` (parameters, multiply-adds,
validation accuracy before and after, max logit change) go to ``--out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from jumpstart.data import load_dataset
from jumpstart.surgery import prune_dead
from jumpstart.train import fit


class PlainNet(nn.Module):
    """``depth`` 3x3 convs of ``width`` channels with ReLU, global average
    pool, linear head: input ``(N, 3, H, W)``, logits ``(N, 10)``."""

    def __init__(self, depth: int = 20, width: int = 16) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(3 if i == 0 else width, width, 3, padding=1)
                                   for i in range(depth))
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        for conv in self.convs:
            x = torch.relu(conv(x))
        return self.head(x.mean((2, 3)))


def build(name: str, depth: int, width: int) -> nn.Module:
    if name == "plain":
        return PlainNet(depth, width)
    import torchvision.models as tvm  # the zoo environment

    return tvm.resnet18(num_classes=10)


def accuracy(model, x, y) -> float:
    model.eval()
    with torch.no_grad():
        return float((torch.cat([model(b).argmax(1) for b in x.split(500)]) == y).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["plain", "resnet18"], default="plain")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--depth", type=int, default=20, help="plain: conv layers")
    parser.add_argument("--width", type=int, default=16, help="plain: channels per layer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("prune-own-model"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    data = load_dataset("cifar10-10k", seed=args.seed)
    model = build(args.model, args.depth, args.width)
    start = time.perf_counter()
    fit(model, data, lr=1e-3, epochs=args.epochs, batch_size=128, seed=args.seed,
        optimizer="adam", augment="crop_flip", progress=True)
    trained = time.perf_counter() - start
    acc = accuracy(model, data.x_val, data.y_val)
    start = time.perf_counter()
    pruned, report = prune_dead(model, data.x_train, batch_size=500)
    took = time.perf_counter() - start
    acc_pruned = accuracy(pruned, data.x_val, data.y_val)
    label = {"plain": f"a plain {args.depth} x {args.width} conv net (no BatchNorm)",
             "resnet18": "torchvision resnet18"}[args.model]
    report.figure(title=f"{label}, cifar10-10k, {args.epochs} epochs, seed "
                        f"{args.seed}: units dead on the 10,000 training images removed"
                  ).savefig(args.out / "units.png", dpi=150)
    report.to_frame().to_csv(args.out / "layers.csv", index=False)
    t = report.totals()
    changed = [r for r in report.layers if r["units_after"] < r["units_before"]]
    env = ".venv-zoo/bin/python" if args.model == "resnet18" else "python"
    dims = f" --depth {args.depth} --width {args.width}" if args.model == "plain" else ""
    (args.out / "README.md").write_text(f"""# {args.out.name} (dead units of {label})

`{env} examples/prune_own_model.py --model {args.model}{dims} --epochs {args.epochs} --out {args.out}`:
{label} ({t['params_before']:,} parameters), random init, trained on cifar10-10k (10,000 training
images, 32 x 32, crop+flip), Adam 1e-3, batch 128, **{args.epochs} epochs, one seed
({args.seed})**; validation part 2,000 images, chance 0.10. Training took {trained:.0f} s
here (2 CPU cores), `prune_dead` {took:.0f} s.

| | before | after |
|---|---|---|
| parameters | {t['params_before']:,} | {t['params_after']:,} (-{t['params_removed']:.2%}) |
| multiply-adds per image | {t['macs_before']:,} | {t['macs_after']:,} (-{t['macs_removed']:.2%}) |
| validation accuracy | {acc:.4f} | {acc_pruned:.4f} |

Max |logit change| on the training images: {report.max_logit_diff:.2e} (largest logit
{report.max_logit:.2f}). Layers that lost units: {len(changed)} of
{sum(1 for r in report.layers if r['macs_before'] > 0)} weighted layers; groups not touched
(their channels pass a norm or split that mixes them): {len(report.skipped)}.
Dead is measured on the training images only: a unit dead there may be live on other inputs.

![units per layer](units.png)
""")
    print((args.out / "README.md").read_text())


if __name__ == "__main__":
    main()
