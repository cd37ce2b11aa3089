"""Per-seed view of the moons-paper comparison: each technique's setting
chosen per problem (as the comparison report chooses it, on validation), its
test accuracy per depth as median [min-max] over seeds, and paired per
(problem, seed) against Jumpstart: wins/draws/losses and the two-sided
Wilcoxon signed-rank p (scipy, draws dropped).

    python docs/results/comparison-moons/seed_pairs.py runs/compare.db
"""

import sys

from scipy.stats import wilcoxon

from jumpstart.experiments.compare import load_comparison
from jumpstart.experiments.comparison_report import benchmark_runs
from jumpstart.experiments.selection import ACCURACY, selected_runs
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
    diff = (acc[label] - acc["jumpstart"]).dropna()
    wdl = f"{(diff > 0).sum()}/{(diff == 0).sum()}/{(diff < 0).sum()}"
    p = wilcoxon(diff[diff != 0]).pvalue if (diff != 0).any() and label != "jumpstart" else None
    print(f"| {label} | {cells[0]} | {cells[1]} | {'' if label == 'jumpstart' else wdl} "
          f"| {'' if p is None else f'{p:.3f}'} |")
