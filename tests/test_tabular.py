"""UCI/PMLB tables: the split, the scaling, the errors."""

import gzip

import numpy as np
import pandas as pd
import pytest
import torch

from jumpstart.data import load_dataset, table_names, tabular


def write(path, frame, sep="\t"):
    text = frame.to_csv(sep=sep, index=False)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def toy(n_per_class=(30, 20, 10), seed=0):
    rng = np.random.default_rng(seed)
    rows = sum(n_per_class)
    y = np.repeat([3, 7, 9], n_per_class)  # class ids re-coded to 0, 1, 2
    return pd.DataFrame({"a": rng.normal(5, 2, rows), "b": rng.integers(0, 4, rows),
                         "const": np.ones(rows), "target": y})


def test_split_is_stratified_60_20_20_and_seeded(tmp_path):
    path = write(tmp_path / "toy.tsv.gz", toy())
    d = tabular(path, seed=1)
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (36, 12, 12)
    assert d.num_classes == 3
    assert torch.bincount(d.y_train).tolist() == [18, 12, 6]
    assert torch.bincount(d.y_val).tolist() == [6, 4, 2]
    assert torch.bincount(d.y_test).tolist() == [6, 4, 2]
    again, other = tabular(path, seed=1), tabular(path, seed=2)
    assert torch.equal(again.x_train, d.x_train)
    assert not torch.equal(other.x_train, d.x_train)


def test_scaling_uses_training_statistics_only(tmp_path):
    from sklearn.model_selection import train_test_split

    frame = toy()
    frame.loc[frame.index[-1], "a"] = 1e3  # an outlier: whole-table statistics would differ
    path = write(tmp_path / "toy.csv", frame, sep=",")
    d = tabular(path, seed=0)
    x_tr = d.x_train.double()
    assert torch.allclose(x_tr[:, :2].mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(x_tr[:, :2].std(0, unbiased=False),
                          torch.ones(2, dtype=torch.float64), atol=1e-6)
    assert torch.all(x_tr[:, 2] == 0)  # a constant feature is centred, not divided by 0
    # the documented split, redone by hand: validation and test rows are
    # scaled with the training rows' mean and standard deviation
    raw, y = frame[["a", "b"]].to_numpy(), frame["target"].to_numpy()
    idx = np.arange(len(y))
    tr, rest = train_test_split(idx, test_size=0.4, stratify=y, random_state=0)
    va, te = train_test_split(rest, test_size=0.5, stratify=y[rest], random_state=0)
    mean, std = raw[tr].mean(0), raw[tr].std(0)
    for part, rows in ((d.x_val, va), (d.x_test, te)):
        assert np.allclose(part[:, :2].numpy(), (raw[rows] - mean) / std, atol=1e-5)
    whole = (raw[va] - raw.mean(0)) / raw.std(0)
    assert not np.allclose(d.x_val[:, :2].numpy(), whole, atol=1e-3)


def test_target_column_by_name(tmp_path):
    frame = toy().rename(columns={"target": "label"})
    path = write(tmp_path / "toy.tsv", frame)
    assert tabular(path, target="label").num_classes == 3
    with pytest.raises(ValueError, match="no target column 'target'; columns: a, b, const, label"):
        tabular(path)
    from jumpstart.cli import main

    assert main(["train", "--dataset", str(path), "--target", "label", "--technique", "skip",
                 "--depth", "3", "--width", "3", "--epochs", "2", "--json"]) == 0


@pytest.mark.parametrize("edit, fragment", [
    (lambda f: f.assign(a=f["a"].where(f.index != 4, np.nan)), "NaN or inf (rows [4]"),
    (lambda f: f.assign(a=f["a"].where(f.index != 2, np.inf)), "NaN or inf"),
    (lambda f: f.assign(target=1), "a single class"),
    (lambda f: f.head(5).assign(target=[0, 1, 2, 3, 4]), "0 class(es) with 5 rows or more"),
    # class 1 is rare (2 rows, placed in training): one class left to stratify over
    (lambda f: f.assign(target=[0] * 58 + [1, 1]), "1 class(es) with 5 rows or more"),
    (lambda f: f.assign(a="x"), "non-numeric feature column(s) ['a']"),
    (lambda f: f.assign(target=f["target"] + 0.5), "must hold integer class ids"),
])
def test_bad_tables_fail_before_training(tmp_path, edit, fragment):
    path = write(tmp_path / "bad.tsv", edit(toy()))
    with pytest.raises(ValueError) as err:
        tabular(path)
    assert fragment in str(err.value) and str(path) in str(err.value)


def test_names_resolve_in_the_data_folder(tmp_path, monkeypatch):
    write(tmp_path / "alpha.tsv.gz", toy())
    write(tmp_path / "beta.csv", toy(), sep=",")
    monkeypatch.setenv("JUMPSTART_DATA", str(tmp_path))
    assert table_names() == ["alpha", "beta"]
    assert load_dataset("beta", seed=0).num_classes == 3
    with pytest.raises(FileNotFoundError, match="no table 'gamma' in .*; known: alpha, beta"):
        tabular("gamma")
    with pytest.raises(FileNotFoundError, match="not found"):
        tabular(tmp_path / "missing.tsv")


def test_shared_uci_tables_load():
    names = table_names()
    assert len(names) == 24 and "iris" in names
    d = tabular("iris", seed=0)
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (90, 30, 30)
    assert torch.bincount(d.y_test).tolist() == [10, 10, 10]
