"""ImageFolder trees: layout, the standard transforms worked out by hand,
error cases, and a ResNet run streamed through DataLoaders."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from jumpstart.cli import main
from jumpstart.data import FolderData, load_dataset
from jumpstart.data.folder import (MEAN, STD, ImageFolder, eval_transform, image_folder,
                                   random_resized_crop_box, train_transform)
from jumpstart.experiments.config import SweepError, load_sweep
from jumpstart.train import fit, train_run
from jumpstart.models import Rectangular


def _write(path, w, h, color=(0, 0, 0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), color).save(path)


def _tree(root, classes=("cat", "dog"), per_class=3):
    """train/ and val/ with ``per_class`` PNGs per class of assorted sizes."""
    sizes = [(40, 30), (24, 50), (33, 33)]
    for split in ("train", "val"):
        for c, name in enumerate(classes):
            for i in range(per_class):
                w, h = sizes[i % 3]
                _write(root / split / name / f"{i}.png", w, h, (60 * c + 20 * i, 100, 200))
    return root


def _normalized(rgb):
    return torch.tensor([(v / 255 - m) / s for v, m, s in zip(rgb, MEAN, STD)])


def test_layout_classes_sorted_and_val_uses_train_ids(tmp_path):
    _tree(tmp_path, classes=("zebra", "ant", "mole"), per_class=2)
    data = image_folder(tmp_path, size=16, resize=20)
    assert isinstance(data, FolderData) and data.num_classes == 3
    assert data.train.classes == ["ant", "mole", "zebra"] == data.val.classes
    assert len(data.train) == 6 and len(data.val) == 6
    assert [y for _, y in data.train.samples] == [0, 0, 1, 1, 2, 2]
    assert data.feature_shape == (3, 16, 16)
    x, y = data.val[4]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and y == 2


def test_eval_transform_constant_image_is_normalized_colour():
    x = eval_transform(Image.new("RGB", (50, 30), (10, 128, 250)), size=16, resize=20)
    assert x.shape == (3, 16, 16)
    expected = _normalized((10, 128, 250)).view(3, 1, 1).expand(3, 16, 16)
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-6)


def test_eval_transform_crops_the_centre():
    # 40 x 20 image, shorter side already 20: no resize; centre crop 16 starts at
    # left round((40 - 16) / 2) = 12, top round((20 - 16) / 2) = 2.
    a = np.zeros((20, 40, 3), dtype=np.uint8)
    a[..., 0] = np.arange(40)[None, :] * 5
    a[..., 1] = np.arange(20)[:, None] * 10
    x = eval_transform(Image.fromarray(a), size=16, resize=20)
    red = x[0] * STD[0] + MEAN[0]
    green = x[1] * STD[1] + MEAN[1]
    torch.testing.assert_close(red[0] * 255, torch.arange(12, 28, dtype=torch.float32) * 5,
                               rtol=0, atol=1e-3)
    torch.testing.assert_close(green[:, 0] * 255, torch.arange(2, 18, dtype=torch.float32) * 10,
                               rtol=0, atol=1e-3)


def test_random_resized_crop_box_bounds_area_and_ratio():
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        top, left, h, w = random_resized_crop_box(60, 80, generator=g)
        assert 0 <= top and top + h <= 60 and 0 <= left and left + w <= 80
        # rounding w and h to integers moves area and ratio by at most a pixel
        assert 0.08 * 4800 - (h + w + 1) <= h * w <= 4800
        assert 3 / 4 * (h - 1) / h - 1e-9 <= w / h <= 4 / 3 * (h + 1) / h + 1e-9 or (h, w) == (60, 80)


def test_random_resized_crop_box_fallback_by_hand():
    # 1000 x 10: a crop of >= 8% area (800 px) with aspect <= 4/3 needs h >= 24 > 10,
    # so all ten tries fail; the fallback clamps the aspect to 4/3: h 10, w round(13.33)
    # = 13, centred: left (1000 - 13) // 2 = 493.
    assert random_resized_crop_box(10, 1000) == (0, 493, 10, 13)
    # tall image: w 10, h round(10 / (3/4)) = 13, top (1000 - 13) // 2 = 493
    assert random_resized_crop_box(1000, 10) == (493, 0, 13, 10)


def test_train_transform_shape_and_flip():
    a = np.zeros((16, 16, 3), dtype=np.uint8)
    a[:, :8] = 255  # left half white
    image = Image.fromarray(a)
    lefts = set()
    for seed in range(20):
        torch.manual_seed(seed)
        with torch.no_grad():
            x = train_transform(image, size=8)
        assert x.shape == (3, 8, 8)
        lefts.add(bool(x[0, :, 0].mean() > x[0, :, -1].mean()))
    assert lefts == {True, False}  # both orientations occur


@pytest.mark.parametrize("case, error, fragment", [
    ("no-train", FileNotFoundError, "train not found"),
    ("no-classes", FileNotFoundError, "has no class folders"),
    ("empty-class", FileNotFoundError, "holds no image"),
    ("val-missing-class", FileNotFoundError, "lacks class folder(s) ['dog']"),
    ("val-extra-class", ValueError, "['emu'] in"),
    ("one-class", ValueError, "at least 2 class folders"),
])
def test_tree_errors(tmp_path, case, error, fragment):
    _tree(tmp_path)
    if case == "no-train":
        for f in (tmp_path / "train").rglob("*.png"):
            f.unlink()
        for d in sorted((tmp_path / "train").rglob("*"), reverse=True):
            d.rmdir()
        (tmp_path / "train").rmdir()
    elif case == "no-classes":
        for d in ("cat", "dog"):
            for f in (tmp_path / "train" / d).iterdir():
                f.unlink()
            (tmp_path / "train" / d).rmdir()
    elif case == "empty-class":
        (tmp_path / "train" / "emu").mkdir()
    elif case == "val-missing-class":
        for f in (tmp_path / "val" / "dog").iterdir():
            f.unlink()
        (tmp_path / "val" / "dog").rmdir()
    elif case == "val-extra-class":
        _write(tmp_path / "val" / "emu" / "0.png", 8, 8)
    elif case == "one-class":
        for split in ("train", "val"):
            for f in (tmp_path / split / "dog").iterdir():
                f.unlink()
            (tmp_path / split / "dog").rmdir()
    with pytest.raises(error) as info:
        image_folder(tmp_path, size=16, resize=20)
    assert fragment in str(info.value)


def test_unreadable_image_names_the_file(tmp_path):
    _tree(tmp_path)
    bad = tmp_path / "train" / "cat" / "9.jpg"
    bad.write_bytes(b"not an image")
    data = image_folder(tmp_path, size=16, resize=20)
    index = [str(p) for p, _ in data.train.samples].index(str(bad))
    with pytest.raises(ValueError, match="9.jpg: not a readable image"):
        data.train[index]


def test_size_larger_than_resize_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="1 <= size <= resize"):
        image_folder(_tree(tmp_path), size=32, resize=20)


def test_fit_needs_a_batch_size_for_streamed_data(tmp_path):
    data = image_folder(_tree(tmp_path), size=16, resize=20)
    net = Rectangular(2, 3, 3, 1, kind="conv", input_size=(16, 16))
    with pytest.raises(ValueError, match="give a batch_size"):
        fit(net, data, epochs=1)


def test_streamed_fit_sees_every_image_each_epoch(tmp_path):
    data = image_folder(_tree(tmp_path, per_class=5), size=16, resize=20)
    net = Rectangular(2, 3, 3, 1, kind="conv", input_size=(16, 16))
    seen = []
    net.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0])
                                  if m.training else None)
    result = fit(net, data, epochs=2, batch_size=4, loader_workers=0, lr=1e-3)
    assert result.epochs == 2 and not result.diverged
    assert seen == [4, 4, 2] * 2  # 10 training images in batches of 4
    assert all(0 <= a <= 1 for a in result.history["val_acc"])


def test_resnet_run_on_an_image_folder_is_reproducible(tmp_path):
    _tree(tmp_path)
    kwargs = dict(dataset="imagenet", data_dir=str(tmp_path), model="resnet", depth=18,
                  width=1, technique="jumpstart", lam=1e-3, epochs=2, lr=1e-4,
                  batch_size=4, loader_workers=1, seed=3)
    a = train_run(**kwargs)
    b = train_run(**kwargs)
    assert a.fit.history == b.fit.history
    assert a.config["model"] == "resnet" and a.fit.epochs == 2
    # 1 stem ReLU + 8 basic blocks x 2 ReLUs; the status saw the 6 training images
    assert a.status.point_status.shape == (6, 17)
    assert sum(p.numel() for p in a.model.parameters()) > 10_000_000


def test_resnet_run_checks_the_data_and_technique(tmp_path):
    with pytest.raises(ValueError, match="RGB images"):
        train_run(dataset="mnist-5k", model="resnet", depth=18, width=1, epochs=1,
                  batch_size=8)
    with pytest.raises(ValueError, match="ReLU activations only"):
        train_run(dataset="imagenet", data_dir=str(_tree(tmp_path)), model="resnet",
                  depth=18, width=1, technique="gelu", epochs=1, batch_size=4)


def test_resnet_options_follow_the_technique(tmp_path):
    run = train_run(dataset="imagenet", data_dir=str(_tree(tmp_path)), model="resnet",
                    depth=18, width=1, technique="batchnorm+skip", epochs=1, batch_size=6,
                    loader_workers=0)
    net = run.model
    assert net.blocks[0].skip and isinstance(net.norm1, torch.nn.BatchNorm2d)
    plain = train_run(dataset="imagenet", data_dir=str(tmp_path), model="resnet", depth=18,
                      width=1, technique="baseline", epochs=1, batch_size=6, loader_workers=0)
    assert not plain.model.blocks[0].skip
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.model.modules())


def test_cli_trains_a_resnet_on_an_image_folder(tmp_path, capsys):
    _tree(tmp_path)
    code = main(["train", "--dataset", "imagenet", "--data-dir", str(tmp_path), "--model",
                 "resnet", "--depth", "18", "--width", "0.5", "--epochs", "1",
                 "--batch-size", "6", "--loader-workers", "0", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["width"] == 0.5 and out["epochs"] == 1 and math.isfinite(out["final_loss"])


def test_imagenet_preset_needs_its_folder_and_expands(tmp_path):
    with pytest.raises(SweepError, match="give data_dir"):
        load_sweep("imagenet-plain-resnet50")
    runs = load_sweep("imagenet-plain-resnet50", data_dir=_tree(tmp_path)).runs
    assert [r["technique"] for r in runs] == ["jumpstart", "batchnorm+skip"]
    assert all(r["model"] == "resnet" and r["depth"] == 50 and r["width"] == 2
               and r["lr"] == 3e-5 and r["precision"] == "bf16" for r in runs)
    assert runs[0]["lam"] == 0.001


def test_fractional_width_only_for_resnet(tmp_path):
    sweep = tmp_path / "s.toml"
    sweep.write_text('name = "s"\n[fixed]\ndataset = "moons"\ndepth = 2\n'
                     '[grid]\nwidth = [1.5]\ntechnique = ["baseline"]\n')
    with pytest.raises(SweepError, match="width must be an integer >= 1 for model rectangular"):
        load_sweep(sweep)


def test_load_dataset_returns_folder_data(tmp_path):
    data = load_dataset("imagenet", directory=_tree(tmp_path))
    assert isinstance(data, FolderData) and data.feature_shape == (3, 224, 224)
    assert isinstance(data.train, ImageFolder) and data.train.train and not data.val.train


def test_matches_torchvision_eval_transform_when_installed():
    try:
        from torchvision import transforms as T
    except Exception:  # noqa: BLE001 - absent or not importable beside this torch
        pytest.skip("torchvision not importable here")
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8))
    ref = T.Compose([T.Resize(32), T.CenterCrop(28), T.ToTensor(), T.Normalize(MEAN, STD)])
    torch.testing.assert_close(eval_transform(image, size=28, resize=32), ref(image))


def test_image_folder_sweep_runs_and_reports(tmp_path):
    from jumpstart.experiments import load, run_sweep
    from jumpstart.experiments.report import write_report

    root = _tree(tmp_path / "tree")
    sweep = tmp_path / "s.toml"
    sweep.write_text(
        'name = "tiny-imagenet"\n[fixed]\ndataset = "imagenet"\nmodel = "resnet"\n'
        'depth = 18\nwidth = 1\nepochs = 2\nbatch_size = 6\nlr = 1e-4\nloader_workers = 0\n'
        'curve_every = 1\n[jumpstart]\nlam = 0.001\n'
        '[grid]\ntechnique = ["baseline", "jumpstart"]\n')
    db = tmp_path / "r.db"
    counts = run_sweep(load_sweep(sweep, data_dir=root), db, workers=1, progress=False)
    assert counts["done"] + counts["diverged"] == 2 and counts["failed"] == 0
    runs = load(db)
    assert set(runs["technique"]) == {"baseline", "jumpstart"}
    assert (runs["epochs_done"] == 2).all() and (runs["params"] > 10_000_000).all()
    # the stored run equals the same run alone
    alone = train_run(dataset="imagenet", data_dir=str(root), model="resnet", depth=18,
                      width=1, technique="jumpstart", lam=1e-3, epochs=2, lr=1e-4,
                      batch_size=6, loader_workers=0)
    stored = runs[runs["technique"] == "jumpstart"].iloc[0]
    assert stored["best_val_acc"] == alone.fit.metrics()["best_val_acc"]
    assert stored["final_loss"] == pytest.approx(alone.fit.metrics()["final_loss"], rel=1e-6)
    names = [p.name for p in write_report(db, tmp_path / "rep")]
    assert names == ["imagenet_results.csv", "imagenet_results.md", "imagenet_curves.png"]
