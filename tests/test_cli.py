"""The jumpstart command line."""

import json

import pytest

from jumpstart.cli import main


def test_train_json_and_out(tmp_path, capsys):
    code = main(["train", "--depth", "3", "--width", "4", "--lam", "0.001", "--epochs", "20",
                 "--seed", "1", "--json", "--out", str(tmp_path / "run")])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("train_acc", "best_train_acc", "val_acc", "best_val_acc", "epochs",
                "seconds", "diverged", "status"):
        assert key in out
    assert out["epochs"] == 20 and out["diverged"] is False
    assert 0 <= out["status"]["unit_dead_ratio"] <= 1
    assert set(p.name for p in (tmp_path / "run").iterdir()) == {"run.json", "curves.csv",
                                                                 "status.png", "model.pt"}
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert saved["best_train_acc"] == out["best_train_acc"]
    assert len((tmp_path / "run" / "curves.csv").read_text().splitlines()) == 21


def test_train_human_summary(capsys):
    assert main(["train", "--depth", "2", "--width", "3", "--technique", "baseline",
                 "--epochs", "5"]) == 0
    text = capsys.readouterr().out
    assert "baseline" in text and "dead" in text


@pytest.mark.parametrize("args, fragment", [
    (["--dataset", "nosuch"], "no table 'nosuch'"),
    (["--technique", "dropout"], "unknown or repeated technique in 'dropout'"),
    (["--depth", "0"], "depth must be an integer >= 1; got 0"),
    (["--width", "-2"], "width must be an integer >= 1; got -2"),
    (["--lam", "-1"], "lam must be a number >= 0; got -1"),
    (["--aggregation", "max"], "aggregation must be one of balanced, sum"),
    (["--epochs", "0"], "epochs must be an integer >= 1; got 0"),
    (["--lr", "0"], "lr must be > 0; got 0"),
    (["--margin", "0"], "margin must be a number > 0"),
    (["--depth", "abc"], "Invalid value for '--depth'"),
])
def test_bad_arguments_exit_nonzero_with_one_line(args, fragment, capsys):
    base = {"--depth": "2", "--width": "2", "--lam": "0"}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    argv = ["train", *[x for kv in base.items() for x in kv]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("jumpstart: error:") and fragment in err


def test_missing_required_option(capsys):
    assert main(["train", "--depth", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Missing option" in err


def test_help_exits_zero(capsys):
    assert main([]) == 0
    assert "train" in capsys.readouterr().out
