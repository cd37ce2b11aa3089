"""Unit surgery on models outside the toolkit, through Torch-Pruning's
dependency graph: hand-built residual, concatenation and attention blocks
(no torchvision needed). Dead units are planted by hand; the logits after
removal are compared with the original model's, and the surviving units'
weights and optimizer state with the original rows."""

import warnings

import pytest
import torch
from torch import nn

pytest.importorskip("torch_pruning")

from jumpstart.surgery import UnitGraph, hidden_layers, prune_dead  # noqa: E402
from jumpstart.techniques import make_technique  # noqa: E402


class Residual(nn.Module):
    """stem conv-BN-ReLU, two basic blocks on one 8-channel stream, a
    pooled linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
        self.blocks = nn.ModuleList(nn.ModuleDict({
            "conv1": nn.Conv2d(8, 6, 3, padding=1, bias=False), "bn1": nn.BatchNorm2d(6),
            "conv2": nn.Conv2d(6, 8, 3, padding=1, bias=False), "bn2": nn.BatchNorm2d(8)})
            for _ in range(2))
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        for b in self.blocks:
            h = torch.relu(b["bn1"](b["conv1"](x)))
            x = torch.relu(x + b["bn2"](b["conv2"](h)))
        return self.head(x.mean((2, 3)))


class Concat(nn.Module):
    """two conv branches concatenated (4 + 5 channels), read by a conv, then
    flattened into a linear head (each channel read at 16 columns)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 4, 3, padding=1)
        self.b = nn.Conv2d(2, 5, 3, padding=1)
        self.mix = nn.Conv2d(9, 6, 3, stride=2, padding=1)
        self.head = nn.Linear(6 * 4 * 4, 3)

    def forward(self, x):
        h = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1)
        return self.head(torch.relu(self.mix(h)).flatten(1))


class Block(nn.Module):
    """a pre-norm transformer block: LayerNorm, single-matrix q/k/v
    attention with 2 heads, LayerNorm, GELU MLP of 12 hidden units."""

    def __init__(self, dim=8, heads=2, hidden=12):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, -1) @ v
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(nn.functional.gelu(self.fc1(self.norm2(x))))


class Transformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(5, 8)
        self.block = Block()
        self.head = nn.Linear(8, 3)

    def forward(self, x):  # x: (N, tokens, 5)
        return self.head(self.block(self.embed(x)).mean(1))


def _kill_bn(bn, units):
    with torch.no_grad():  # scale 0, shift -1: the BN outputs -1, the ReLU 0
        bn.weight[units] = 0
        bn.bias[units] = -1.0


def test_residual_stream_channel_goes_only_when_every_branch_writing_it_is_dead():
    torch.manual_seed(0)
    net = Residual().eval()
    _kill_bn(net.blocks[0]["bn1"], [1, 4])  # internal units of block 0
    _kill_bn(net.stem[1], [2, 5])  # stream channels 2 and 5 dead at the stem ...
    _kill_bn(net.blocks[0]["bn2"], [2, 5])
    _kill_bn(net.blocks[1]["bn2"], [2])  # ... but block 1 writes channel 5 (not dead)
    with torch.no_grad():
        net.blocks[1]["bn2"].bias[5] = 3.0
    x = torch.randn(32, 3, 8, 8)
    with torch.no_grad():
        before = net(x)
    pruned, report = prune_dead(net, x)
    assert pruned.blocks[0]["conv1"].out_channels == 4  # units 1 and 4 gone
    assert pruned.blocks[0]["conv2"].in_channels == 4
    # the stream loses channel 2 everywhere it is written or read; channel 5 stays
    assert pruned.stem[0].out_channels == 7 and pruned.head.in_features == 7
    assert [pruned.blocks[i]["conv2"].out_channels for i in (0, 1)] == [7, 7]
    assert [pruned.blocks[i]["conv1"].in_channels for i in (0, 1)] == [7, 7]
    with torch.no_grad():
        assert torch.allclose(pruned(x), before, atol=1e-5)
    assert net.stem[0].out_channels == 8  # not in place: the original is untouched
    # parameters by hand: stem conv 3*8*9=216 -> 189, stem BN 16 -> 14, block-0 conv1
    # 8*6*9=432 -> 7*4*9=252, bn1 12 -> 8, conv2 6*8*9=432 -> 4*7*9=252, ...
    rows = {r["name"]: r for r in report.layers}
    assert (rows["stem.0"]["params_before"], rows["stem.0"]["params_after"]) == (216, 189)
    assert (rows["blocks.0.conv1"]["params_after"], rows["blocks.0.conv2"]["params_after"]) \
        == (252, 252)
    assert (rows["head"]["params_before"], rows["head"]["params_after"]) == (36, 32)
    assert report.relative_diff <= 1e-5


def test_concatenated_channels_map_to_their_branch_and_to_the_flattened_head():
    torch.manual_seed(1)
    net = Concat().eval()
    with torch.no_grad():
        net.b.weight[[0, 3]] = 0  # branch b's units 0 and 3: concat channels 4 and 7
        net.b.bias[[0, 3]] = -1.0
        net.mix.weight[2] = 0  # mix unit 2: 16 columns of the flattened head
        net.mix.bias[2] = -1.0
    x = torch.randn(20, 2, 8, 8)
    with torch.no_grad():
        before = net(x)
    pruned, report = prune_dead(net, x)
    assert (pruned.a.out_channels, pruned.b.out_channels, pruned.mix.in_channels) == (4, 3, 7)
    assert pruned.mix.out_channels == 5 and pruned.head.in_features == 5 * 16
    with torch.no_grad():  # the survivors are the original rows and columns
        assert torch.equal(pruned.b.weight, net.b.weight[[1, 2, 4]])
        assert torch.equal(pruned.mix.weight, net.mix.weight[[0, 1, 3, 4, 5]][:, [0, 1, 2, 3,
                                                                                  5, 6, 8]])
        keep = [c for c in range(96) if not 32 <= c < 48]
        assert torch.equal(pruned.head.weight, net.head.weight[:, keep])
        assert torch.allclose(pruned(x), before, atol=1e-5)


def test_attention_block_prunes_mlp_units_and_refuses_what_layernorm_and_qkv_couple():
    torch.manual_seed(2)
    net = Transformer().eval()
    with torch.no_grad():  # GELU(-100) is exactly 0 in float32: units 3, 9 output 0
        net.block.fc1.weight[[3, 9]] = 0
        net.block.fc1.bias[[3, 9]] = -100.0
    x = torch.randn(10, 6, 5)
    with torch.no_grad():
        before = net(x)
    pruned, report = prune_dead(net, x)
    assert pruned.block.fc1.out_features == 10 and pruned.block.fc2.in_features == 10
    assert pruned.block.qkv.out_features == 24 and pruned.embed.out_features == 8
    assert any("LN" in why for why in report.skipped.values())  # the residual stream
    assert any("UNBIND" in why for why in report.skipped.values())  # q/k/v
    with torch.no_grad():
        assert torch.allclose(pruned(x), before, atol=1e-5)


def test_in_place_removal_carries_adam_moments_of_the_survivors():
    torch.manual_seed(3)
    net = Residual()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(16, 3, 8, 8)
    net(x).pow(2).mean().backward()
    opt.step()
    net.eval()
    _kill_bn(net.blocks[1]["bn1"], [0, 5])
    w = net.blocks[1]["conv1"].weight
    moments = {k: v.clone() for k, v in opt.state[w].items()}
    reader = net.blocks[1]["conv2"].weight
    reader_moments = opt.state[reader]["exp_avg_sq"].clone()
    pruned, _ = prune_dead(net, x, inplace=True, optimizer=opt)
    assert pruned is net
    w2, r2 = net.blocks[1]["conv1"].weight, net.blocks[1]["conv2"].weight
    assert w2.shape[0] == 4 and any(w2 is p for p in opt.param_groups[0]["params"])
    assert torch.equal(opt.state[w2]["exp_avg"], moments["exp_avg"][1:5])
    assert torch.equal(opt.state[w2]["step"], moments["step"])
    assert torch.equal(opt.state[r2]["exp_avg_sq"], reader_moments[:, 1:5])
    assert not any(p is w for p in opt.param_groups[0]["params"])
    opt.step()  # the optimizer still works on the new parameters


def test_prune_dead_refuses_an_optimizer_without_inplace():
    net = Residual()
    with pytest.raises(ValueError, match="inplace"):
        prune_dead(net, torch.randn(2, 3, 8, 8), optimizer=torch.optim.SGD(net.parameters(), 0.1))


def test_hidden_layers_of_a_traced_model_are_the_simple_groups_and_warn_on_the_rest():
    net = Residual()
    with pytest.raises(ValueError, match="example_inputs"):
        hidden_layers(net)
    with pytest.warns(UserWarning, match=r"1 layer\(s\) skipped.*conv2"):  # the stream
        layers = hidden_layers(net, torch.randn(2, 3, 8, 8))
    assert [l.name for l in layers] == ["blocks.0.conv1", "blocks.1.conv1"]
    assert layers[0].norm is net.blocks[0]["bn1"]
    assert layers[0].readers[0].module is net.blocks[0]["conv2"]
    assert layers[0].readers[0].norm is net.blocks[0]["bn2"]  # CBP's absorb moves its mean


def test_unit_graph_reads_dead_units_at_every_reader():
    net = Concat().eval()
    with torch.no_grad():
        net.a.weight[1] = 0
        net.a.bias[1] = -1.0
    graph = UnitGraph(net, torch.randn(2, 2, 8, 8))
    dead = graph.dead(torch.randn(30, 2, 8, 8))
    assert dead["a"].tolist() == [1] and dead["b"].tolist() == []


@pytest.mark.parametrize("name", ["redo", "cbp"])
def test_redo_and_cbp_train_a_residual_model_and_leave_the_stream_alone(name):
    from jumpstart.data import Dataset
    from jumpstart.train import fit

    torch.manual_seed(4)
    net = Residual()
    stream = net.stem[0].weight.detach().clone()
    inner = net.blocks[0]["conv1"].weight.detach().clone()
    x, y = torch.randn(64, 3, 8, 8), torch.randint(0, 4, (64,))
    data = Dataset("toy", x, y, x[:16], y[:16], num_classes=4)
    options = {"redo_every": 2, "redo_tau": 10.0} if name == "redo" else {
        "cbp_rho": 0.5, "cbp_maturity": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = fit(net, data, technique=make_technique(name, **options), lr=1e-30, epochs=2,
                     batch_size=16)
    assert not result.diverged
    # lr 1e-30 moves no float32 weight: only the technique changed the recycled inner
    # layers, and never the stream
    assert torch.equal(net.stem[0].weight, stream)
    assert not torch.equal(net.blocks[0]["conv1"].weight, inner)


def test_report_figure_shows_units_before_and_after_per_changed_layer():
    torch.manual_seed(5)
    net = Residual().eval()
    _kill_bn(net.blocks[1]["bn1"], [0, 2, 3])
    _, report = prune_dead(net, torch.randn(16, 3, 8, 8))
    fig = report.figure(title="toy")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    changed = [r for r in report.layers if r["macs_before"] and r["units_after"] < r["units_before"]]
    assert labels == [r["name"] for r in changed] and "blocks.1.conv1" in labels
    widths = [p.get_width() for p in ax.patches]  # the 'before' bars, then the 'after' bars
    assert widths == [r["units_before"] for r in changed] + [r["units_after"] for r in changed]
    assert ax.get_title().startswith("toy\nparameters -")
    assert [t.get_text().strip() for t in ax.texts] == [
        f"-{r['units_before'] - r['units_after']}" for r in changed]  # units removed


def test_conv1d_readers_read_units_at_dim_1():
    class Seq1d(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.head = nn.Conv1d(2, 5, 3), nn.Conv1d(5, 4, 3), nn.Linear(4, 2)

        def forward(self, x):
            return self.head(torch.relu(self.b(torch.relu(self.a(x)))).mean(2))

    net = Seq1d().eval()
    with torch.no_grad():
        net.a.weight[3] = 0
        net.a.bias[3] = -1.0
    x = torch.randn(12, 2, 9)
    with torch.no_grad():
        before = net(x)
    pruned, _ = prune_dead(net, x)
    assert pruned.a.out_channels <= 4 and pruned.b.in_channels == pruned.a.out_channels
    with torch.no_grad():
        assert torch.allclose(pruned(x), before, atol=1e-5)
