"""The README's Python example runs as written (with fewer epochs)."""

import re
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
    assert 0.0 <= namespace["result"].metrics()["best_val_test_acc"] <= 1.0
