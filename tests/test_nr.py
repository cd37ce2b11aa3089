"""Neural Rejuvenation (`nr`): utilization, rejuvenation, the split and cross
halves, the two-head loss, the sparsity step, the schedule, a sweep run."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import cifar_batch
from jumpstart.experiments import load_sweep, run_sweep, write_report
from jumpstart.experiments.store import ResultsStore
from jumpstart.models import VGG, SplitConv2d, layer_widths
from jumpstart.techniques import TrainContext, make_technique
from jumpstart.techniques.nr import live_channels, rejuvenate, utilization
from jumpstart.train import read_checkpoint, rebuild_model
from jumpstart.train.loop import task_loss

# VGG-19 at width 1: convs of 1, 1, 2, 2, 4 x4, 8 x8 channels; one input channel
# weights per conv (in * out * 9): 1, 1, 2, 4, 8, 16, 16, 16, 32, 64 x7 -> sum 544 * 9
TOTAL = 544


def _planted(dead_layer: int | None = None) -> VGG:
    """Width-1 VGG with planted dead channels (|gamma| 1e-4 < 0.01 max): the
    first 4-wide conv keeps 2 of 4, every 8-wide conv keeps 4 of 8; with
    ``dead_layer`` that conv's scales are all 1e-4 (< 1e-3: the layer is dead)."""
    torch.manual_seed(1)
    model = VGG(19, 1, 3, in_channels=1)
    bns = [m for m in model.features if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        bns[4].weight[2:] = 1e-4
        for bn in bns[8:]:
            bn.weight[4:] = -1e-4  # the sign does not matter: |gamma|
        if dead_layer is not None:
            bns[dead_layer].weight[:] = 1e-4
        for bn in bns:  # non-trivial shifts and running statistics
            bn.bias.uniform_(-0.1, 0.1)
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
    return model


def test_utilization_by_hand():
    model = _planted()
    live = live_channels(model)
    assert [int(m.sum()) for m in live] == [1, 1, 2, 2, 2, 4, 4, 4] + [4] * 8
    # live_in * live_out: 1, 1, 2, 4, 2*2, 2*4, 16, 16, 16, 16 x7 = 180
    assert utilization(model, live) == pytest.approx(180 / TOTAL)
    # a dead layer (the 10th conv) and everything after it: 1+1+2+4+4+8+16+16+16 = 68
    dead = live_channels(_planted(dead_layer=9))
    assert [int(m.sum()) for m in dead][8:] == [4] + [0] * 7
    assert utilization(_planted(dead_layer=9), dead) == pytest.approx(68 / TOTAL)


def test_rejuvenation_widths_and_survivor_blocks_by_hand():
    model = _planted()
    live = live_channels(model)
    new, r = rejuvenate(model, live)
    assert r == pytest.approx(math.sqrt(TOTAL / 180))  # 1.738...
    # int(1 r) = 1, int(2 r) = 3, int(4 r) = 6
    assert layer_widths(new) == [[1, 0], [1, 0], [2, 1], [2, 1], [2, 1]] + [[4, 2]] * 11 + [3]
    old_convs, new_convs = model.convs(), new.convs()
    keep4 = torch.tensor([0, 1])  # the first 4-wide conv's survivors
    # conv 4 (2 -> 4 channels, 2 live): rows 0, 1 over conv 3's two live inputs
    assert torch.equal(new_convs[4].weight[:2, :2], old_convs[4].weight[keep4])
    # conv 5 reads conv 4's survivors only
    assert torch.equal(new_convs[5].weight[:4, :2], old_convs[5].weight[:, keep4])
    assert torch.equal(new_convs[9].weight[:4, :4], old_convs[9].weight[:4, :4])
    # split layers (inputs and outputs grew) start with zero cross blocks
    assert not new_convs[2].is_split and new_convs[3].is_split
    assert new_convs[9].weight[:4, 4:].abs().sum() == 0
    assert new_convs[9].weight[4:, :4].abs().sum() == 0
    # new kernels ~ N(0, 2 / (9 * 6)): the sample std of the 2x2 new blocks of convs 9-15
    fresh = torch.cat([c.weight[4:, 4:].flatten() for c in new_convs[9:]])
    assert fresh.std().item() == pytest.approx(math.sqrt(2 / 54), rel=0.25)
    new_bns = [m for m in new.features if isinstance(m, nn.BatchNorm2d)]
    old_bns = [m for m in model.features if isinstance(m, nn.BatchNorm2d)]
    assert torch.equal(new_bns[9].weight[:4], old_bns[9].weight[:4])
    assert torch.equal(new_bns[9].running_var[:4], old_bns[9].running_var[:4])
    assert new_bns[9].weight[4:].tolist() == [0.5, 0.5] and new_bns[9].bias[4:].tolist() == [0, 0]
    assert new_bns[9].running_mean[4:].tolist() == [0, 0]
    assert new_bns[9].running_var[4:].tolist() == [1, 1]
    # classifier: survivor columns and bias copied, two new columns
    assert torch.equal(new.classifier.weight[:, :4], model.classifier.weight[:, :4])
    assert torch.equal(new.classifier.bias, model.classifier.bias)
    # a dead layer keeps one fresh channel: r = sqrt(544 / 68) = 2.83; int(2.83) = 2,
    # int(5.66) = 5, int(11.3) = 11
    dead = _planted(dead_layer=9)
    grown, _ = rejuvenate(dead, live_channels(dead))
    assert layer_widths(grown)[:10] == [[1, 1], [1, 1], [2, 3], [2, 3], [2, 3], [4, 7], [4, 7],
                                        [4, 7], [4, 7], [0, 1]]
    with pytest.raises(ValueError, match="rejuvenated already"):
        rejuvenate(new, live_channels(new))


def test_the_old_half_computes_the_pruned_network():
    model = _planted().eval()
    live = live_channels(model)
    new, _ = rejuvenate(model, live, mode="split")
    pruned = _planted().eval()  # the same net with its dead channels silenced
    bns = [m for m in pruned.features if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn, mask in zip(bns, live):
            bn.weight[~mask] = 0
            bn.bias[~mask] = 0
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        new.eval()(x)
        z_old = new.halves[0]
        assert torch.allclose(z_old, pruned(x), atol=1e-6)
        assert not torch.allclose(z_old, model(x), rtol=0, atol=1e-5)  # shifts not folded


def test_two_head_loss_and_prediction_by_hand():
    model = _planted()
    new, _ = rejuvenate(model, live_channels(model), mode="split")
    x, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    logits = new.train()(x)
    h = new.features(x).mean((2, 3))
    w, b = new.classifier.weight[:, :, 0, 0], new.classifier.bias
    z_old, z_new = h[:, :4] @ w[:, :4].T + b, h[:, 4:] @ w[:, 4:].T + b
    assert torch.allclose(logits, z_old + z_new, atol=1e-6)
    nr = make_technique("nr")
    nr.rejuvenated = True
    ce = [-(z.log_softmax(1)[torch.arange(6), y]).mean() for z in (z_old, z_new)]
    loss = nr.task_loss(TrainContext(new, criterion=task_loss), logits, y)
    assert loss.item() == pytest.approx((ce[0] + ce[1]).item(), rel=1e-5)
    # before rejuvenation (or in cross mode) the trainer's loss stays
    assert make_technique("nr").task_loss(TrainContext(model), model(x), y) is None


def test_cross_attention_conv_by_hand():
    conv = SplitConv2d(5, 4, old_in=3, old_out=1, mode="cross")
    x = torch.randn(2, 5, 6, 6)
    w = conv.weight

    def c(inp, weight):
        return F.conv2d(inp, weight, padding=1)

    a, b = c(x[:, :3], w[:1, :3]), c(x[:, 3:], w[:1, 3:])
    d, e = c(x[:, 3:], w[1:, 3:]), c(x[:, :3], w[1:, :3])
    want = torch.cat([a + b * 2 * torch.sigmoid(a), d + e * 2 * torch.sigmoid(d)], 1)
    assert torch.allclose(conv(x), want, atol=1e-6)
    conv.mode = "split"
    assert torch.allclose(conv(x), torch.cat([a, d], 1), atol=1e-6)


def test_sparsity_step_sgd_loss_and_decoupled_adam():
    model = VGG(19, 1, 3, in_channels=1)
    bn = next(m for m in model.features if isinstance(m, nn.BatchNorm2d))
    with torch.no_grad():
        bn.weight[:] = torch.tensor([0.5])
    nr = make_technique("nr", nr_lam=0.01)
    adam = TrainContext(model, torch.optim.Adam(model.parameters(), lr=0.1))
    nr.attach(adam)
    assert nr.loss(adam) is None
    nr.after_step(adam)  # gamma -= lr * lam * sign(gamma)
    assert bn.weight.item() == pytest.approx(0.5 - 0.1 * 0.01)
    sgd = TrainContext(model, torch.optim.SGD(model.parameters(), lr=0.1))
    nr.attach(sgd)
    scales = [m.weight for m in model.features if isinstance(m, nn.BatchNorm2d)]
    want = 0.01 * sum(g.abs().sum() for g in scales)
    assert nr.loss(sgd).item() == pytest.approx(want.item())
    before = bn.weight.item()
    nr.after_step(sgd)
    assert bn.weight.item() == before


def test_needs_batchnorm_or_the_status_variant():
    plain = VGG(19, 1, 3, in_channels=1, norm=None)
    with pytest.raises(ValueError, match="no BatchNorm.*nr_detect='status'"):
        make_technique("nr").attach(TrainContext(plain, torch.optim.SGD(plain.parameters(), 0.1)))
    with torch.no_grad():  # the last conv's channels 1..7 never fire
        plain.convs()[-1].weight[1:] = 0
        plain.convs()[-1].bias[1:] = -1
    live = live_channels(plain, detect="status", data=torch.randn(16, 1, 8, 8))
    assert live[-1].tolist() == [True] + [False] * 7
    with pytest.raises(ValueError, match="rejuvenates models vgg, cifar_resnet, rectangular"):
        live_channels(nn.Sequential(nn.Linear(2, 2)))


class _LoggingNR(type(make_technique("nr"))):
    """nr that logs the learning rate in use each epoch."""

    def after_epoch(self, ctx):
        ctx.log("lr", ctx.optimizer.param_groups[0]["lr"])
        super().after_epoch(ctx)


@pytest.mark.parametrize("extend, lrs", [
    (True, [0.1, 0.1, 0.1, 0.01, 0.01]),  # the whole schedule after epoch 1: milestone 2 + 1
    (False, [0.1, 0.1, 0.01, 0.01]),  # the schedule goes on unshifted
])
def test_rejuvenation_restarts_and_shifts_the_schedule(extend, lrs):
    from jumpstart.data import Dataset
    from jumpstart.train import fit

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 1, 8, 8, generator=g), torch.arange(40) % 3
    data = Dataset("toy", x, y, x[:10], y[:10], 3)
    model = VGG(19, 1, 3, in_channels=1)
    nr = _LoggingNR(nr_max_epochs=1, nr_extend=extend)
    result = fit(model, data, lr=0.1, epochs=4, batch_size=20, technique=nr,
                 optimizer="sgd", lr_milestones=[2], lr_gamma=0.1)
    assert result.history["lr"] == pytest.approx(lrs)
    assert result.history["rejuvenation_epoch"] == [1.0] * len(lrs)  # from epoch 1 on
    assert result.history["nr_capped"][0] == 1 and result.history["rejuvenation_u"][0] == 1
    assert result.model is not model and isinstance(result.model.convs()[0], SplitConv2d)


def test_sweep_run_rejuvenates_stores_widths_and_rebuilds(tmp_path, figures):
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        cifar_batch(tmp_path / f"data_batch_{i}", 12, 10, rng)
    cifar_batch(tmp_path / "test_batch", 8, 10, rng)
    toml = tmp_path / "s.toml"
    toml.write_text(f'name = "nr"\nsave_weights = true\n[fixed]\ndataset = "cifar10"\n'
                    f'data_dir = "{tmp_path}"\nmodel = "vgg"\ndepth = 19\nwidth = 1\n'
                    'epochs = 2\nlr = 0.05\nbatch_size = 30\noptimizer = "sgd"\n'
                    'technique = "nr"\n[nr]\nnr_max_epochs = 1\n[grid]\nnr_mode = ["split", "cross"]\n')
    db = tmp_path / "r.db"
    assert run_sweep(load_sweep(toml), db, workers=1, progress=False)["done"] == 2
    with ResultsStore(db) as store:
        runs = store.runs()
        for key in runs["key"]:
            _, config, blob = store.weights(key)
            ckpt = read_checkpoint(blob)
            assert all(isinstance(w, list) for w in ckpt["widths"][:-1])  # rejuvenated
            model, data = rebuild_model(ckpt)
            assert model.mode == config["nr_mode"]
            with torch.no_grad():
                out = model(data.x_val)
            assert out.shape == (8, 10) and torch.isfinite(out).all()
    assert (runs["epochs_done"] == 3).all()  # one epoch before, two after
    paths = write_report(db, tmp_path / "rep")
    assert [p.name for p in paths] == ["nr_comparison.csv", "nr_comparison.md", "nr_curves.png"]
    table = pd.read_csv(paths[0]).set_index("technique")
    assert sorted(table.index) == ["nr[cross]", "nr[split]"]
    params = sum(p.numel() for p in VGG(19, 1, 10).parameters())
    # nr_lam 1.5e-4 for one epoch leaves every channel live: u = 1, r = 1, same widths
    assert (table["rejuvenation_epoch"] == 1).all() and (table["capped"] == 1).all()
    assert (table["utilization_at_rejuvenation"] == 1).all()
    assert (table["params_before"] == params).all() and (table["params_after"] == params).all()
    # the curves: one utilization line per run, labelled, in its technique's colour
    acc, util = figures["nr_curves.png"].axes
    colour = {line.get_label(): line.get_color() for line in acc.get_lines()}
    labelled = {line.get_label(): line.get_color() for line in util.get_lines()
                if not line.get_label().startswith("_")}
    assert labelled == {"nr[split], seed 0": colour["nr[split]"],
                        "nr[cross], seed 0": colour["nr[cross]"]}
    assert [t.get_text() for t in util.get_legend().get_texts()] == list(labelled)


def _planted_resnet() -> "CifarResNet":
    """ResNet-11 at width 1/4 (one bottleneck block per stage): every
    prunable conv (each block's first two) keeps its first 2 channels."""
    from jumpstart.models import CifarResNet

    torch.manual_seed(2)
    model = CifarResNet(11, 0.25, 10).eval()
    with torch.no_grad():
        for layer in model.nr_layers():
            layer.bn.bias.uniform_(-0.1, 0.1)
            layer.bn.running_var.uniform_(0.5, 2.0)
            if not layer.fixed:
                layer.bn.weight[2:] = 1e-4
    return model


def test_resnet_utilization_rejuvenation_and_old_half_by_hand():
    model = _planted_resnet()
    live = live_channels(model)
    # (in, out, k*k) per conv, fixed ones all live: stem 3-4 (9); block 1: 4-4 (1), 4-4 (9),
    # 4-16 (1), shortcut 4-16 (1); block 2: 16-8, 8-8 (9), 8-32, shortcut 16-32; block 3:
    # 32-16, 16-16 (9), 16-64, shortcut 32-64. All weights: 7756. Live: 108 + 8 + 36 + 32 + 64
    # + 32 + 36 + 64 + 512 + 64 + 36 + 128 + 2048 = 3168
    u = utilization(model, live)
    assert u == pytest.approx(3168 / 7756)
    new, r = rejuvenate(model, live, mode="split")
    assert r == pytest.approx(math.sqrt(7756 / 3168))  # 1.5647
    # fixed int(C r): 4 -> 6, 16 -> 25, 32 -> 50, 64 -> 100; prunable int(2 r) = 3
    assert layer_widths(new) == [[4, 2], [2, 1], [2, 1], [16, 9], [16, 9], [2, 1], [2, 1],
                                 [32, 18], [32, 18], [2, 1], [2, 1], [64, 36], [64, 36], 10]
    pruned = _planted_resnet()
    with torch.no_grad():
        for layer in pruned.nr_layers():
            if not layer.fixed:
                layer.bn.weight[2:] = 0
                layer.bn.bias[2:] = 0
        x = torch.randn(3, 3, 16, 16)
        new.eval()(x)
        assert torch.allclose(new.halves[0], pruned(x), atol=1e-6)


def test_a_dead_resnet_branch_keeps_the_stream_live():
    """A block whose first conv died: its second conv reads nothing live and
    is dead too; the block's fixed last conv and every later block stay live
    (a residual add keeps the stream live), and rejuvenation runs."""
    model = _planted_resnet()
    with torch.no_grad():
        model.nr_layers()[5].bn.weight[:] = 1e-4  # block 2's conv1: max |gamma| < 1e-3
    live = live_channels(model)
    assert [int(m.sum()) for m in live] == [4, 2, 2, 16, 16, 0, 0, 32, 32, 2, 2, 64, 64]
    # as the by-hand sum of the planted net, minus block 2's conv1 (32), conv2 (36) and conv3 (64)
    assert utilization(model, live) == pytest.approx((3168 - 32 - 36 - 64) / 7756)
    new, r = rejuvenate(model, live)
    widths = layer_widths(new)
    assert widths[5] == widths[6] == [0, 1] and widths[7][0] == 32
    with torch.no_grad():
        assert torch.isfinite(new.eval()(torch.randn(2, 3, 16, 16))).all()


@pytest.mark.parametrize("kind, total", [("dense", 40), ("flatten", 180), ("maxavg", 180)])
@pytest.mark.parametrize("mode", ["split", "cross"])
def test_rectangular_nets_rejuvenate_by_hand(kind, total, mode):
    """Our extension to the toolkit's nets. Dense 2-4-4-4 (weights 8 + 16 + 16)
    or conv 1-4-4 on 3x3 images with the flatten or the max+avg head
    (9 * (4 + 16)), each hidden layer keeping its first 2 units: u = live
    weights / all, r = sqrt(1/u), int(2 r) = 3 units per layer. The old part
    computes the pruned net, the head's columns of each survivor copied with
    it (the flatten head's 9 per channel, the max+avg head's max and mean):
    in split mode the old head's logits; in cross mode (cross blocks 0) the
    logits once the new channels' columns are zeroed."""
    from jumpstart.models import Rectangular

    def planted():
        torch.manual_seed(3)
        if kind == "dense":
            net = Rectangular(3, 4, 2, 3, norm="batch")
        else:
            net = Rectangular(2, 4, 1, 3, norm="batch", kind="conv", head=kind,
                              input_size=(3, 3))
        with torch.no_grad():
            for bn in net.norms:
                bn.weight[2:] = 1e-4
                bn.bias.uniform_(-0.1, 0.1)
                bn.running_var.uniform_(0.5, 2.0)
        return net.eval()

    model = planted()
    live = live_channels(model)
    used = 2 * 2 + 2 * 2 + 2 * 2 if kind == "dense" else 9 * (1 * 2 + 2 * 2)
    assert utilization(model, live) == pytest.approx(used / total)
    new, r = rejuvenate(model, live, mode=mode)
    assert r == pytest.approx(math.sqrt(total / used)) and int(2 * r) == 3
    assert layer_widths(new)[:-1] == [[2, 1]] * len(model.linears)
    pruned = planted()
    with torch.no_grad():
        for bn in pruned.norms:
            bn.weight[2:] = 0
            bn.bias[2:] = 0
        x = torch.randn(5, 2) if kind == "dense" else torch.randn(5, 1, 3, 3)
        if mode == "split":
            new.eval()(x)
            assert torch.allclose(new.halves[0], pruned(x), atol=1e-6)
        else:
            survivors = {"dense": 2, "flatten": 2 * 9, "maxavg": 2 * 2}[kind]
            new.output.weight[:, survivors:] = 0
            assert torch.allclose(new.eval()(x), pruned(x), atol=1e-6)
    with pytest.raises(ValueError, match="without skips"):
        live_channels(Rectangular(2, 4, 2, 3, norm="batch", skip=1))


@pytest.mark.parametrize("mode", ["split", "cross"])
def test_surgery_reads_a_rejuvenated_max_avg_head(mode):
    """A rejuvenated max+avg net pools old and new units apart: the columns
    surgery says read unit u are exactly the classifier columns whose logits
    change when u's BatchNorm shift changes (found by perturbing the net with
    one classifier column on at a time, not from the layout formula); its
    last layer cannot be resized."""
    from jumpstart.models import Rectangular
    from jumpstart.surgery import hidden_layers

    torch.manual_seed(4)
    net = Rectangular(2, 5, 1, 3, norm="batch", kind="conv", head="maxavg",
                      widths=[[2, 1], [2, 3]], mode=mode).eval()
    last = hidden_layers(net)[-1]
    x = torch.randn(4, 1, 3, 3)
    reads = {u: [] for u in range(last.width)}
    with torch.no_grad():
        for j in range(net.output.weight.shape[1]):
            net.output.weight.zero_()
            net.output.weight[:, j] = 1.0
            before = net(x)
            for u in reads:
                net.norms[-1].bias[u] += 5.0
                if not torch.equal(net(x), before):
                    reads[u].append(j)
                net.norms[-1].bias[u] -= 5.0
    for u, columns in reads.items():
        assert sorted(last.readers[0].columns(torch.tensor([u]), 5).tolist()) == columns
    assert not last.resizable


def test_a_rejuvenated_dense_run_is_saved_and_rebuilt(tmp_path):
    from jumpstart.train import train_run

    run = train_run(dataset="moons", depth=3, width=4, technique="nr", nr_max_epochs=2,
                    nr_lam=0.05, epochs=4, lr=0.05, optimizer="sgd", seed=1)
    assert isinstance(run.metrics()["widths"][0], list)  # [old, new]
    assert run.fit.epochs == 6  # 2 before, 4 after (nr_extend)
    run.save(tmp_path)
    model, data = rebuild_model(read_checkpoint(tmp_path))
    with torch.no_grad():
        assert torch.equal(model(data.x_val), run.model.eval()(data.x_val))


def test_runs_record_the_parameter_counts_the_report_reads():
    """The NR report reads parameter counts from the store (it rebuilds no
    net): each run records them before any step and after training."""
    from jumpstart.train import train_run
    from jumpstart.train.group import train_group

    # 2 -> 3 -> 3 -> 1 dense: (2*3 + 3) + (3*3 + 3) + (3*1 + 1)
    assert train_run(dataset="moons", depth=2, width=3, epochs=1).metrics()["params_at_init"] == 25
    config = {"dataset": "moons", "model": "rectangular", "depth": 2, "width": 3,
              "technique": "baseline", "epochs": 1, "lr": 0.01, "batch_size": "full",
              "curve_every": 1, "seed": 0}
    for trainer in ("stacks", "single"):
        (_, metrics, _, _), = train_group([config], trainer=trainer)
        assert (metrics["params_at_init"], metrics["params"], metrics["effective_params"]) == (
            25, 25, 25)
    # a rejuvenated net grows: the count before stays the fresh net's, with nr's
    # BatchNorm (scale and shift, so no linear biases): (2*4 + 2*4) + 2 * (4*4 + 2*4) + (4 + 1)
    run = train_run(dataset="moons", depth=3, width=4, technique="nr", nr_max_epochs=1,
                    nr_lam=0.05, epochs=2, lr=0.05, optimizer="sgd", seed=1)
    assert run.metrics()["params_at_init"] == 69


def test_nr_table_gives_each_technique_its_median_and_range_over_seeds():
    from jumpstart.experiments.nr_report import nr_table

    # batchnorm: 3 seeds, best 0.5 / 0.7 / 0.6 (median 0.6), final 0.4 / 0.7 / 0.5;
    # nr[cross]: 2 seeds, best 0.3 / 0.4 (median 0.35); a failed run counts nowhere
    runs = pd.DataFrame({
        "key": list("abcdef"), "state": ["done"] * 5 + ["failed"],
        "technique": ["batchnorm"] * 3 + ["nr"] * 3, "nr_mode": [None] * 3 + ["cross"] * 3,
        "best_val_acc": [0.5, 0.7, 0.6, 0.3, 0.4, 0.9],
        "val_acc": [0.4, 0.7, 0.5, 0.3, 0.2, 0.9]})
    curves = pd.DataFrame({"key": ["d", "e"], "epoch": [2, 2], "rejuvenation_epoch": [1, 2],
                           "rejuvenation_u": [0.2, 0.3], "nr_capped": [0, 1]})
    table = nr_table(runs, curves).set_index("technique")
    assert table.loc["batchnorm", ["best_acc", "best_acc_min", "best_acc_max"]].tolist() == \
        pytest.approx([0.6, 0.5, 0.7])
    assert table.loc["batchnorm", ["final_acc", "final_acc_min", "final_acc_max"]].tolist() == \
        pytest.approx([0.5, 0.4, 0.7])
    assert table.loc["nr[cross]", ["best_acc", "best_acc_min", "best_acc_max", "final_acc",
                                   "rejuvenation_epoch", "capped", "seeds"]].tolist() == \
        pytest.approx([0.35, 0.3, 0.4, 0.25, 1.5, 1, 2])
    assert list(table.columns[:6]) == ["best_acc", "best_acc_min", "best_acc_max", "final_acc",
                                       "final_acc_min", "final_acc_max"]
    assert np.isnan(table.loc["batchnorm", "rejuvenation_epoch"])  # never fired: undefined
