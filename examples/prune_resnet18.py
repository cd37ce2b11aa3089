"""Prune the dead units of a torchvision ResNet-18 trained on cifar10-10k.

Run in the zoo environment (torchvision beside torch, `make test-zoo` creates it):

    .venv-zoo/bin/python examples/prune_resnet18.py --epochs 3 --out docs/results/prune-resnet18

Trains ``torchvision.models.resnet18(num_classes=10)`` (random init, 11.2M
parameters) on the 10,000 cifar10-10k training images at 32 x 32 with
crop+flip, Adam 1e-3, batch 128, for ``--epochs`` epochs, one seed; then
removes every unit dead on the training images (``prune_dead``, through
Torch-Pruning's dependency graph) and writes ``units.png``, ``layers.csv``
and ``README.md`` (parameters, multiply-adds, held-out accuracy before and
after, max logit change) to ``--out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torchvision.models as tvm

from jumpstart.data import load_dataset
from jumpstart.surgery import prune_dead
from jumpstart.train import fit


def accuracy(model, x, y) -> float:
    model.eval()
    with torch.no_grad():
        return float((torch.cat([model(b).argmax(1) for b in x.split(500)]) == y).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("prune-resnet18"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    data = load_dataset("cifar10-10k", seed=args.seed)
    model = tvm.resnet18(num_classes=10)
    start = time.perf_counter()
    fit(model, data, lr=1e-3, epochs=args.epochs, batch_size=128, seed=args.seed,
        optimizer="adam", augment="crop_flip", progress=True)
    trained = time.perf_counter() - start
    acc = accuracy(model, data.x_val, data.y_val)
    start = time.perf_counter()
    pruned, report = prune_dead(model, data.x_train, batch_size=500)
    took = time.perf_counter() - start
    acc_pruned = accuracy(pruned, data.x_val, data.y_val)
    report.figure(title=f"torchvision resnet18, cifar10-10k, {args.epochs} epochs, seed "
                        f"{args.seed}: units dead on the 10,000 training images removed"
                  ).savefig(args.out / "units.png", dpi=150)
    report.to_frame().to_csv(args.out / "layers.csv", index=False)
    t = report.totals()
    changed = [r for r in report.layers if r["units_after"] < r["units_before"]]
    (args.out / "README.md").write_text(f"""# prune-resnet18 (dead units of a torchvision ResNet-18)

`.venv-zoo/bin/python examples/prune_resnet18.py --epochs {args.epochs} --out {args.out}`:
torchvision `resnet18(num_classes=10)`, random init, trained on cifar10-10k (10,000 training
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
