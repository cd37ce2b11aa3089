"""Sweep files: validation, grid expansion, run keys."""

import pytest

from jumpstart.experiments import SweepError, load_sweep, presets, run_key


def write(tmp_path, text, name="s.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


BASIC = """
name = "t"
[fixed]
dataset = "moons"
epochs = 10
[jumpstart]
lam = 0.001
[grid]
depth = [2, 3]
width = [1, 4, 5]
technique = ["baseline", "jumpstart"]
"""


def test_expansion_counts_and_technique_options(tmp_path):
    sweep = load_sweep(write(tmp_path, BASIC))
    assert sweep.name == "t" and len(sweep.runs) == 2 * 3 * 2
    base = [r for r in sweep.runs if r["technique"] == "baseline"]
    js = [r for r in sweep.runs if r["technique"] == "jumpstart"]
    assert len(base) == len(js) == 6
    assert all("lam" not in r and "aggregation" not in r for r in base)
    assert all(r["lam"] == 0.001 and r["aggregation"] == "balanced" for r in js)
    assert all(r["epochs"] == 10 and r["lr"] == 0.01 and r["batch_size"] == "full"
               for r in sweep.runs)


def test_baseline_is_not_repeated_along_jumpstart_axes(tmp_path):
    text = BASIC.replace("[grid]", "[grid]\nlam = [0.001, 0.01]").replace("lam = 0.001\n", "")
    sweep = load_sweep(write(tmp_path, text))
    # baseline runs ignore lam: 6 of them, plus 6 x 2 jumpstart runs
    assert len(sweep.runs) == 6 + 12
    assert len({run_key(r) for r in sweep.runs}) == 18


def test_seeds_override(tmp_path):
    sweep = load_sweep(write(tmp_path, BASIC), seeds=3)
    assert sorted({r["seed"] for r in sweep.runs}) == [0, 1, 2]
    assert len(sweep.runs) == 36


def test_several_grids_give_the_union_of_their_products(tmp_path):
    text = BASIC.replace("[grid]", "[[grid]]") + """
[[grid]]
depth = [2]
width = [4, 7]
technique = ["jumpstart"]
lr = [0.1]
"""
    sweep = load_sweep(write(tmp_path, text), seeds=2)
    # first grid 2 x 3 x 2 = 12, second 1 x 2 x 1 = 2 (its width 4 run differs
    # from the first grid's by lr, so nothing repeats); seeds 2 doubles both
    assert len(sweep.runs) == (12 + 2) * 2
    second = [r for r in sweep.runs if r["lr"] == 0.1]
    assert sorted((r["width"], r["seed"]) for r in second) == [(4, 0), (4, 1), (7, 0), (7, 1)]
    assert all(r["lam"] == 0.001 and r["epochs"] == 10 for r in second)
    # a run in both grids is kept once
    dup = load_sweep(write(tmp_path, BASIC.replace("[grid]", "[[grid]]")
                           + "[[grid]]\ndepth = [2]\nwidth = [1]\ntechnique = [\"baseline\"]\n"))
    assert len(dup.runs) == 12
    bad = BASIC.replace("[grid]", "[[grid]]") + "[[grid]]\ndeptth = [1]\n"
    with pytest.raises(SweepError, match=r"unknown key\(s\) \['deptth'\] in \[grid\]"):
        load_sweep(write(tmp_path, bad))


def test_run_key_is_canonical():
    a = {"depth": 2, "width": 3, "lr": 0.01}
    b = {"lr": 0.01, "width": 3, "depth": 2}
    assert run_key(a) == run_key(b)
    assert run_key(a) != run_key({**a, "width": 4})
    assert len(run_key(a)) == 16


def test_presets_ship_and_expand():
    assert {"moons-paper", "moons-paper-keras", "moons-quick"} <= set(presets())
    paper = load_sweep("moons-paper")
    assert len(paper.runs) == 1296  # 24 depths x 9 widths x 2 techniques x 3 seeds
    assert {r["depth"] for r in paper.runs} == {1, 2, 3, 4, 5, 10, 15, 20, 25, 30, 35, 40, 45,
                                               50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150}
    keras = load_sweep("moons-paper-keras")
    js = [r for r in keras.runs if r["technique"] == "jumpstart"]
    assert all(r["model"] == "moons_conv" and r["granularity"] == "position"
               and r["aggregation"] == "sq" for r in js)


@pytest.mark.parametrize("edit, fragment", [
    (lambda t: t.replace("[grid]", "[grid]\ndeptth = [1]"), "unknown key(s) ['deptth'] in [grid]"),
    (lambda t: t.replace("depth = [2, 3]", "depth = [0, 3]"), "depth must be an integer >= 1; got 0"),
    (lambda t: t.replace("depth = [2, 3]", "depth = []"), "depth must be a non-empty list"),
    (lambda t: t.replace("depth = [2, 3]", "depth = 2"), "depth must be a non-empty list"),
    (lambda t: t.replace('dataset = "moons"', 'dataset = "nosuch"'), "no table 'nosuch'"),
    (lambda t: t.replace('"jumpstart"]', '"dropout"]'), "technique must be one of baseline"),
    (lambda t: t.replace("[grid]", "[grid]\nskip_every = [0]"), "skip_every must be an integer >= 1"),
    (lambda t: t.replace("lam = 0.001", "lam = -1"), "lam must be a number >= 0"),
    (lambda t: t.replace("lam = 0.001", 'aggregation = "max"'), "aggregation must be one of"),
    (lambda t: t.replace("epochs = 10", "epochs = 1.5"), "epochs must be an integer"),
    (lambda t: t.replace('name = "t"', ""), "needs a non-empty string 'name'"),
    (lambda t: t + "\n[extra]\nx = 1\n", "unknown top-level key(s) ['extra']"),
    (lambda t: t.replace("[fixed]", "[fixed]\nlam = 1.0"), "unknown key(s) ['lam'] in [fixed]"),
    (lambda t: t.replace('technique = ["baseline", "jumpstart"]', ""), "missing technique"),
    (lambda t: t.replace("[grid]", "[grid"), "not valid TOML"),
])
def test_bad_sweep_files_say_what_is_wrong(tmp_path, edit, fragment):
    path = write(tmp_path, edit(BASIC))
    with pytest.raises(SweepError) as err:
        load_sweep(path)
    assert fragment in str(err.value)
    assert str(path) in str(err.value) or "TOML" in str(err.value)


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(SweepError, match="unknown sweep preset 'nope'; presets: "):
        load_sweep("nope")
    with pytest.raises(SweepError, match="not found"):
        load_sweep(tmp_path / "missing.toml")


def test_a_file_extending_another_changes_only_what_it_says(tmp_path):
    """[fixed] and technique tables merge key by key, top-level values and the
    grid replace: each run is the base file's run with the changed keys."""
    write(tmp_path, BASIC, "base.toml")
    child = write(tmp_path, 'name = "c"\nextends = "base.toml"\n[fixed]\nepochs = 20\n'
                  '[jumpstart]\naggregation = "sum"\n', "child.toml")
    base, sweep = load_sweep(tmp_path / "base.toml"), load_sweep(child)
    assert sweep.name == "c" and len(sweep.runs) == len(base.runs) == 12
    expected = [{**r, "epochs": 20, **({"aggregation": "sum"} if r["technique"] == "jumpstart"
                                       else {})} for r in base.runs]
    assert sweep.runs == expected  # lam 0.001 kept from the base's [jumpstart]
    grandchild = write(tmp_path, 'name = "g"\nextends = "child.toml"\n[grid]\ndepth = [7]\n'
                       'width = [2]\ntechnique = ["jumpstart"]\n', "g.toml")
    (run,) = load_sweep(grandchild).runs
    assert (run["depth"], run["width"], run["epochs"], run["lam"], run["aggregation"]) == (
        7, 2, 20, 0.001, "sum")


def test_a_preset_extended_by_name_keeps_its_runs_but_the_change(tmp_path):
    path = write(tmp_path, 'name = "m"\nextends = "moons-paper"\n[fixed]\nlr = 0.001\n')
    preset, sweep = load_sweep("moons-paper"), load_sweep(path)
    assert sweep.runs == [{**r, "lr": 0.001} for r in preset.runs]
    assert sweep.name == "m" and preset.runs[0]["lr"] == 0.01


@pytest.mark.parametrize("text, fragment", [
    ('name = "a"\nextends = "a.toml"\n', "extends cycle"),
    ('name = "a"\nextends = 3\n', "extends must be a preset name"),
    ('name = "a"\nextends = "nope"\n', "extends unknown sweep preset 'nope'"),
    ('name = "a"\nextends = "nope.toml"\n', "extends sweep file"),
])
def test_bad_extends_say_what_is_wrong(tmp_path, text, fragment):
    path = write(tmp_path, text, "a.toml")
    with pytest.raises(SweepError) as err:
        load_sweep(path)
    assert fragment in str(err.value) and str(path) in str(err.value)
