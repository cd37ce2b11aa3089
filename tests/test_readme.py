"""The README's Python example runs as written (with fewer epochs)."""

import re

import pytest
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    code = blocks[0].replace("range(500)", "range(20)")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    status = namespace["status"]
    assert 0.0 <= status.unit_dead_ratio <= 1.0
    assert (tmp_path / "status.png").stat().st_size > 0


def test_readme_technique_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    code = next(b for b in blocks if "make_technique" in b).replace("epochs=1000", "epochs=5")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert 0.0 <= namespace["result"].metrics()["best_val_acc"] <= 1.0


def test_architecture_worked_example_runs():
    """docs/architecture.md's technique example works as written (registered for the test)."""
    from jumpstart.techniques import TECHNIQUES, register
    from jumpstart.train import train_run

    doc = (README.parent / "docs" / "architecture.md").read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", doc, flags=re.S) if "Revive" in b)
    code = code.replace("from ..surgery", "from jumpstart.surgery").replace(
        "from .base", "from jumpstart.techniques.base")
    namespace: dict = {}
    exec(compile(code, "architecture.md", "exec"), namespace)
    register(namespace["Revive"])
    try:
        run = train_run(dataset="moons", depth=6, width=2, technique="revive", revive_every=1,
                        epochs=20, lr=0.05, seed=0)
    finally:
        TECHNIQUES.pop("revive")
    logged = [k for k in run.fit.history if k.startswith("revived/")]
    assert logged == [f"revived/linears.{i}" for i in range(6)]
    assert sum(sum(run.fit.history[k]) for k in logged) > 0  # dead units were revived


def test_readme_compression_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    code = next(b for b in blocks if "prune_dead" in b).replace("epochs=300", "epochs=20")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    report = namespace["report"]
    assert report.relative_diff <= 1e-5
    assert len(namespace["result"].history["dormant"]) == 20


def test_readme_any_model_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    code = next(b for b in blocks if "js.summary()" in b)
    exec(compile(code, "README.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["1", "GELU", "2", "64", "8x10x64"]


def test_readme_own_model_pruning_example_runs(tmp_path, monkeypatch):
    pytest.importorskip("torch_pruning")
    import torch
    from torch import nn

    class Own(nn.Module):  # not one of the toolkit's nets: traced
        def __init__(self):
            super().__init__()
            self.a, self.b, self.head = nn.Conv2d(3, 6, 3), nn.Conv2d(6, 6, 3), nn.Linear(6, 2)

        def forward(self, x):
            return self.head(torch.relu(self.b(torch.relu(self.a(x)))).mean((2, 3)))

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    code = next(b for b in blocks if "report.figure()" in b)
    model = Own()
    with torch.no_grad():
        model.a.weight[2] = 0
        model.a.bias[2] = -1.0
    monkeypatch.chdir(tmp_path)
    scope = {"model": model, "x_train": torch.randn(8, 3, 8, 8)}
    exec(code, scope)
    assert scope["pruned"].a.out_channels <= 5 and (tmp_path / "units.png").exists()
