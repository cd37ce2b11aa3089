"""Rare classes in real tables, and benchmarks that never drop a data set quietly."""

import logging

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.model_selection import train_test_split

from jumpstart.cli import main
from jumpstart.data import tabular
from jumpstart.data.tabular import RARE_ROWS

# classes with original ids 5, 6, 7, 8 of 40, 10, 2 and 1 rows; "rid" is the row id
COUNTS = {5: 40, 6: 10, 7: 2, 8: 1}


def table(path, counts=COUNTS, seed=0):
    y = np.repeat(list(counts), list(counts.values()))
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"rid": np.arange(len(y), dtype=float),
                          "noise": rng.normal(size=len(y)), "target": y})
    frame.to_csv(path, sep="\t", index=False)
    return path


def _rids(d, part, mean, std):
    """Row ids of a part, undoing the standardization of column ``rid``."""
    x = getattr(d, f"x_{part}")[:, 0].double().numpy()
    return sorted(np.rint(x * std + mean).astype(int).tolist())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rare_rows_go_to_training_and_the_rest_is_stratified(tmp_path, seed, caplog):
    path = table(tmp_path / "rare.tsv")
    with caplog.at_level(logging.WARNING, logger="jumpstart.data"):
        d = tabular(path, seed=seed)
    assert RARE_ROWS == 5
    # by hand: rows 50, 51 (class 7) and 52 (class 8) are rare; rows 0-49 are split
    # 60/20/20 stratified over classes 5 and 6, as scikit-learn splits them alone
    y = np.repeat([0, 1], [40, 10])
    common = np.arange(50)
    tr, rest = train_test_split(common, test_size=0.4, stratify=y, random_state=seed)
    va, te = train_test_split(rest, test_size=0.5, stratify=y[rest], random_state=seed)
    train = sorted([*tr.tolist(), 50, 51, 52])
    mean, std = np.mean(train), np.std(train)
    assert _rids(d, "train", mean, std) == train
    assert _rids(d, "val", mean, std) == sorted(va.tolist())
    assert _rids(d, "test", mean, std) == sorted(te.tolist())
    assert d.num_classes == 4
    assert torch.bincount(d.y_train, minlength=4).tolist() == [24, 6, 2, 1]
    assert torch.bincount(d.y_val, minlength=4).tolist() == [8, 2, 0, 0]
    assert torch.bincount(d.y_test, minlength=4).tolist() == [8, 2, 0, 0]
    assert d.split == {"rare_classes": [7, 8], "rare_rows": 3}
    said = [r.getMessage() for r in caplog.records]
    assert said == ["rare: placed 3 rows of rare class(es) [7, 8] (fewer than 5 rows) in "
                    "the training part only"]


def test_min_class_rows_drops_the_rare_classes_instead(tmp_path):
    path = table(tmp_path / "rare.tsv")
    d = tabular(path, seed=0, min_class_rows=3)  # drops 7 (2 rows) and 8 (1 row)
    assert d.num_classes == 2
    assert d.split == {"dropped_classes": [7, 8], "dropped_rows": 3}
    assert len(d.y_train) + len(d.y_val) + len(d.y_test) == 50
    d = tabular(path, seed=0, min_class_rows=2)  # drops 8; 7 is still rare
    assert d.num_classes == 3
    assert d.split == {"dropped_classes": [8], "dropped_rows": 1, "rare_classes": [7],
                       "rare_rows": 2}
    assert torch.bincount(d.y_train).tolist() == [24, 6, 2]
    with pytest.raises(ValueError, match="min_class_rows must be None or an integer >= 1"):
        tabular(path, min_class_rows=0)
    with pytest.raises(ValueError, match="a single class .* after dropping"):
        tabular(path, min_class_rows=11)


SWEEP = """
name = "three"
[fixed]
epochs = 3
depth = 2
width = 3
batch_size = "full"
data_dir = "{folder}"
[grid]
dataset = ["*"]
technique = ["baseline", "jumpstart"]
seed = [0, 1]
"""


def test_a_benchmark_names_the_table_it_could_not_run(tmp_path, capsys):
    folder = tmp_path / "tables"
    folder.mkdir()
    table(folder / "good-rare.tsv")
    table(folder / "good-plain.tsv", counts={0: 30, 1: 20})
    table(folder / "bad.tsv", counts={3: 10, 4: 2})  # one class left to stratify over
    sweep = tmp_path / "three.toml"
    sweep.write_text(SWEEP.format(folder=folder))
    db = tmp_path / "r.db"
    assert main(["sweep", str(sweep), "--db", str(db), "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "this call: 8 done, 0 diverged, 4 failed" in printed
    assert ("data set bad: every run failed (4 failed runs: ValueError: " in printed
            and "1 class(es) with 5 rows or more" in printed)
    from jumpstart.experiments import load

    runs = load(db)
    rare = runs[runs["dataset"] == "good-rare"]
    assert set(rare["split"]) == {'{"rare_classes": [7, 8], "rare_rows": 3}'}
    out = tmp_path / "report"
    assert main(["report", str(db), "--out", str(out)]) == 0
    for name in ("uci_results.md", "key_metrics.md", "wins_draws_losses.md"):
        head = (out / name).read_text().splitlines()[0]
        assert head.startswith("Data sets: 3 asked for, 2 ran; left out: bad (4 failed runs: "
                               "ValueError: "), head
    assert "left out: data set bad" in capsys.readouterr().err
    assert main(["report", str(db), "--out", str(out), "--strict"]) == 1
