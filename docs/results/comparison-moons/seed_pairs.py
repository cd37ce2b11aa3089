"""Per-seed view of the moons-paper comparison: each technique's setting
chosen per problem (as the comparison report chooses it, on validation), its
test accuracy per depth as median [min-max] over seeds, and paired per
(problem, seed) against Jumpstart: wins/draws/losses and the two-sided
Wilcoxon signed-rank p (:mod:`jumpstart.experiments.statistics`, as
the comparison report: draws dropped).

    python docs/results/comparison-moons/seed_pairs.py runs/compare.db
"""

import sys

from jumpstart.experiments.compare import load_comparison
from jumpstart.experiments.comparison_report import benchmark_runs
from jumpstart.experiments.selection import ACCURACY, selected_runs
from jumpstart.experiments.statistics import paired_record, paired_test
from jumpstart.experiments.store import load

bench = load_comparison(benchmarks=["moons-paper"]).benchmarks[0]
runs = selected_runs(benchmark_runs(bench, load(sys.argv[1])))
acc = runs.pivot_table(index=["depth", "seed"], columns="technique", values=ACCURACY)
print("| technique | depth 10 | depth 30 | vs Jumpstart per (depth, seed): w/d/l | Wilcoxon p |")
print("|---|---|---|---|---|")
for label in acc.mean().sort_values(ascending=False).index:
    cells = []
    for depth in (10, 30):
        v = acc.loc[depth, label]
        cells.append(f"{v.median():.3f} [{v.min():.3f}-{v.max():.3f}]")
    if label == "jumpstart":
        print(f"| {label} | {cells[0]} | {cells[1]} |  |  |")
        continue
    wdl = "/".join(map(str, paired_record(acc[label], acc["jumpstart"])))
    p = paired_test(acc[label], acc["jumpstart"])[0]
    print(f"| {label} | {cells[0]} | {cells[1]} | {wdl} | {p:.3f} |")
