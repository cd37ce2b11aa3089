"""Trained weights kept (train --out, sweeps with save_weights) and
`jumpstart compress` on them."""

import json

import pytest
import torch

from jumpstart.cli import main
from jumpstart.experiments import load_sweep, run_sweep
from jumpstart.experiments.config import SweepError
from jumpstart.experiments.store import ResultsStore
from jumpstart.train import read_checkpoint, rebuild_model, train_run


def test_checkpoint_rebuilds_the_trained_model(tmp_path):
    run = train_run(dataset="moons", depth=3, width=4, technique="redo", redo_every=5,
                    epochs=10, lr=0.01, seed=2)
    run.save(tmp_path)
    ckpt = read_checkpoint(tmp_path)  # the folder or its model.pt
    assert ckpt["config"]["technique"] == "redo" and ckpt["widths"] == [4, 4, 4, 1]
    model, data = rebuild_model(ckpt)
    with torch.no_grad():
        assert torch.equal(model(data.x_train), run.model.eval()(data.x_train))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        read_checkpoint(tmp_path / "nothing")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a jumpstart checkpoint"):
        read_checkpoint(tmp_path / "bad.pt")


def _sweep(tmp_path, save_weights="true"):
    path = tmp_path / "s.toml"
    path.write_text(f'name = "w"\nsave_weights = {save_weights}\n[fixed]\ndataset = "moons"\n'
                    'epochs = 30\ndepth = 2\nwidth = 3\nlr = 0.01\n'
                    '[grid]\ntechnique = ["baseline", "redo"]\n')
    return path


def test_sweep_stores_weights_and_compress_reads_them(tmp_path, capsys):
    sweep = load_sweep(_sweep(tmp_path))
    assert sweep.save_weights
    db = tmp_path / "r.db"
    assert run_sweep(sweep, db, workers=1, progress=False)["done"] == 2
    with ResultsStore(db) as store:
        keys = sorted(store.keys())
        key, config, blob = store.weights(keys[0][:10])
    assert key == keys[0] and read_checkpoint(blob)["config"] == config
    assert main(["compress", keys[0][:12], "--db", str(db), "--json",
                 "--out", str(tmp_path / "p.pt")]) == 0
    report = json.loads(capsys.readouterr().out)
    # depth 2 x width 3 on 2 inputs, one logit: (2*3+3) + (3*3+3) + (3*1+1) = 25 parameters
    assert report["params_before"] == 25
    assert report["relative_diff"] <= 1e-5
    assert [r["name"] for r in report["layers"]] == ["linears.0", "linears.1", "output"]
    pruned = torch.load(tmp_path / "p.pt", weights_only=False)
    assert sum(p.numel() for p in pruned.parameters()) == report["params_after"]


def test_compress_errors(tmp_path, capsys):
    db = tmp_path / "r.db"
    run_sweep(load_sweep(_sweep(tmp_path, "false")), db, workers=1, progress=False)
    with ResultsStore(db) as store:
        key = sorted(store.keys())[0]
    assert main(["compress", key, "--db", str(db)]) == 2
    assert "stored without weights; run its sweep with save_weights = true" in \
        capsys.readouterr().err
    assert main(["compress", "zzzz", "--db", str(db)]) == 2
    assert "no runs match key 'zzzz'" in capsys.readouterr().err
    assert main(["compress", str(tmp_path / "none")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    path = _sweep(tmp_path, '"yes"')
    with pytest.raises(SweepError, match="save_weights must be true or false"):
        load_sweep(path)


def test_compress_a_sweeps_selected_runs(tmp_path, capsys):
    from jumpstart.experiments.compression import compress_selected

    path = tmp_path / "t.toml"
    path.write_text('name = "tab"\nsave_weights = true\n[fixed]\ndataset = "iris"\n'
                    'epochs = 20\ndepth = 3\nwidth = 4\n[grid]\n'
                    'technique = ["baseline", "redo"]\nlr = [0.01, 0.001]\nseed = [0, 1]\n')
    db = tmp_path / "r.db"
    assert run_sweep(load_sweep(path), db, workers=1, progress=False)["done"] == 8
    frame = compress_selected(db, techniques=["baseline"])
    assert sorted(frame["seed"]) == [0, 1] and set(frame["technique"]) == {"baseline"}
    # 3 x 4 net on iris (4 features, 3 classes): (4*4+4) + 2 * (4*4+4) + (4*3+3) = 75
    assert set(frame["params_before"]) == {75}
    assert (frame["relative_diff"] <= 1e-5).all()
    assert main(["compress", "--db", str(db), "--out", str(tmp_path / "c")]) == 0
    text = capsys.readouterr().out
    assert "| technique | runs |" in text and (tmp_path / "c" / "compression.md").exists()
    assert len(open(tmp_path / "c" / "compression.csv").readlines()) == 1 + 4
