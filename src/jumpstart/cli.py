"""The ``jumpstart`` command: ``train`` one run, ``demo`` the MOONS comparison, ``sweep``
and ``report`` experiments, ``compress`` a trained net."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from .core.regularizer import AGGREGATIONS, JUMPSTART_OPTIONS
from .models import MODEL_FAMILIES
from .optim import OPTIMIZERS
from .train.run_options import RUN_OPTIONS

_JS = {k: o.default for k, o in JUMPSTART_OPTIONS.items()}
#: the run options' defaults (:data:`jumpstart.train.run_options.RUN_OPTIONS`)
_RUN = {k: o.default for k, o in RUN_OPTIONS.items()}

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Jumpstart regularization for plain, thin, deep ReLU networks.",
)


class UsageError(Exception):
    """A bad argument: reported as one line, exit status 2."""


@app.callback()
def _root() -> None:
    """Jumpstart regularization for plain, thin, deep ReLU networks."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise UsageError(message)


def _check_folder(path: Path, flag: str) -> None:
    """Before any work: ``path`` is a folder that exists or can be made, and is writable."""
    import os

    _check(not (path.exists() and not path.is_dir()), f"{flag} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{flag} {path} cannot be created: {exc}") from None
    _check(os.access(path, os.W_OK), f"{flag} {path} is not writable")


@app.command()
def train(
    dataset: str = typer.Option(_RUN["dataset"], help="Data set name."),
    depth: int = typer.Option(..., help="Hidden layers (>= 1)."),
    width: float = typer.Option(..., help="Units per hidden layer (an integer >= 1); for "
                                "model resnet the width multiplier (> 0)."),
    technique: str = typer.Option("jumpstart", help="Technique, e.g. baseline, jumpstart, "
                                  "batchnorm, skip, gelu, jumpstart+batchnorm."),
    lam: Optional[float] = typer.Option(None, help=f"Jumpstart coefficient (default {_JS['lam']})."),
    aggregation: Optional[str] = typer.Option(
        None, help=f"Jumpstart aggregation, one of {', '.join(AGGREGATIONS)} "
                   f"(default {_JS['aggregation']})."),
    margin: Optional[float] = typer.Option(
        None, help=f"Jumpstart margin m > 0 (default {_JS['margin']})."),
    epochs: int = typer.Option(_RUN["epochs"], help="Epochs (full batch by default)."),
    lr: float = typer.Option(_RUN["lr"], help="Initial learning rate."),
    optimizer: str = typer.Option(_RUN["optimizer"], help=f"One of {', '.join(OPTIMIZERS)}."),
    momentum: float = typer.Option(_RUN["momentum"], help="SGD momentum."),
    nesterov: bool = typer.Option(_RUN["nesterov"], help="SGD with Nesterov momentum."),
    weight_decay: float = typer.Option(_RUN["weight_decay"], help="Weight decay (L2 for "
                                       "adam and sgd, decoupled for adamw)."),
    lr_milestones: str = typer.Option("", help="Comma-separated epochs after which the "
                                      "learning rate is multiplied by --lr-gamma."),
    lr_gamma: float = typer.Option(_RUN["lr_gamma"], help="Step-schedule factor."),
    batch_size: Optional[int] = typer.Option(None, help="Minibatch size; default full batch."),
    seed: int = typer.Option(_RUN["seed"], help="Seed of the initialization and batch order."),
    init: str = typer.Option(_RUN["init"], help="Weight init: glorot, kaiming, zero, orthogonal "
                             "or decorrelated (-o init_steps=N -o init_lr=R)."),
    augment: str = typer.Option(_RUN["augment"], help="Training augmentation of in-memory images: none "
                                "or crop_flip (4-pixel padded random crop, horizontal flip)."),
    model: str = typer.Option(_RUN["model"], help="Model family: " + "; ".join(
        f"{name}: {family.text}" for name, family in MODEL_FAMILIES.items()) + "."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    precision: str = typer.Option(
        _RUN["precision"], help="auto (bf16 autocast for conv nets on images on a CPU with "
        "native bf16, else 32), 32 or bf16."),
    memory_format: str = typer.Option(
        _RUN["memory_format"], help="auto (channels_last for conv nets on images), "
        "contiguous or channels_last."),
    flush_denormal: bool = typer.Option(
        _RUN["flush_denormal"], help="Flush denormal floats to zero while training (CPU)."),
    data_dir: Optional[Path] = typer.Option(None, help="Folder of the data set's files."),
    target: str = typer.Option(_RUN["target"], help="Class column of a table."),
    loader_workers: int = typer.Option(_RUN["loader_workers"], help="DataLoader processes for data read from disk "
                                       "(imagenet)."),
    option: list[str] = typer.Option(
        [], "--option", "-o", help="A technique option KEY=VALUE (repeatable), e.g. -o "
        "tie_break=average -o 'constraints=[\"unit+\"]' -o skip_every=3; VALUE is read as "
        "JSON when it parses, else as text."),
    out: Optional[Path] = typer.Option(None, help="Write run.json, curves.csv, status.png here."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Train one ReLU net and report accuracy and dead/linear status.

    DATASET is moons, a UCI/PMLB table name or file (see `jumpstart.data.tabular`),
    an image set (mnist-5k, mnist, fashion-mnist, cifar10, cifar100) or imagenet
    (an ImageFolder tree DATA_DIR/{train,val}/CLASS/IMAGE).
    """
    from .train import train_run

    width = int(width) if float(width).is_integer() else width
    if out is not None:
        _check_folder(out, "--out")
    options = {k: v for k, v in (("lam", lam), ("aggregation", aggregation), ("margin", margin))
               if v is not None}
    for item in option:
        key, sep, text = item.partition("=")
        _check(bool(sep) and bool(key), f"--option must be KEY=VALUE; got {item!r}")
        _check(key not in options, f"option {key} given twice")
        try:
            options[key] = json.loads(text)
        except json.JSONDecodeError:
            options[key] = text
    try:
        milestones = [int(m) for m in lr_milestones.split(",") if m.strip()]
    except ValueError:
        raise UsageError(f"--lr-milestones must be comma-separated integers; "
                         f"got {lr_milestones!r}") from None
    given = {"optimizer": optimizer, "momentum": momentum, "nesterov": nesterov,
             "weight_decay": weight_decay, "lr_milestones": milestones, "lr_gamma": lr_gamma}
    optimizer_options = {k: v for k, v in given.items() if v != _RUN[k] and v != []}
    try:
        run = train_run(
            dataset=dataset, model=model, depth=depth, width=width, technique=technique,
            epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, init=init, augment=augment,
            device=device,
            precision=precision, memory_format=memory_format, flush_denormal=flush_denormal,
            data_dir=data_dir, target=target,
            loader_workers=loader_workers, progress=sys.stderr.isatty(), **options,
            **optimizer_options,
        )
    except (ValueError, FileNotFoundError) as exc:  # validated before training
        raise UsageError(str(exc)) from None
    if out is not None:
        run.save(out)
    metrics = run.metrics()
    if as_json:
        from . import strict_json

        typer.echo(strict_json.dumps(metrics))
        return
    s = metrics["status"]
    what = " ".join([run.config["technique"]]
                    + [f"{k}={v}" for k, v in run.config.items() if k in options])
    typer.echo(
        f"{dataset} depth={depth} width={width} {what}: "
        f"train acc {metrics['train_acc']:.3f} (best {metrics['best_train_acc']:.3f}), "
        f"val acc {metrics['val_acc']:.3f} (best {metrics['best_val_acc']:.3f}), "
        + (f"test acc at best val {metrics['best_val_test_acc']:.3f}, "
           if "best_val_test_acc" in metrics else "")
        + f"{metrics['epochs']} epochs in {metrics['seconds']:.1f} s"
        + (" [DIVERGED]" if metrics["diverged"] else "")
    )
    typer.echo(
        f"units: {s['unit_dead_ratio']:.0%} dead, {s['unit_linear_ratio']:.0%} linear, "
        f"{s['unit_dormant_ratio']:.0%} tau-dormant (ReDo, tau 0.1); "
        f"points dead at some layer: {s['point_dead_ratio']:.0%}; "
        f"point efficiency {s['point_efficiency']:.2f}"
    )
    if out is not None:
        typer.echo(f"wrote {out}/run.json, curves.csv, status.png")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-out"), help="Folder for the tables and status figures."),
    width: int = typer.Option(3, help="Units per hidden layer."),
    depths: str = typer.Option("10,30", help="Comma-separated depths."),
    lam: float = typer.Option(_JS["lam"], help="Jumpstart coefficient."),
    aggregation: str = typer.Option(_JS["aggregation"], help=f"One of {', '.join(AGGREGATIONS)}."),
    epochs: int = typer.Option(5000, help="Epochs, full batch."),
    seeds: int = typer.Option(5, help="Seeds per cell (0..K-1); cells show median [min-max]."),
    lrs: str = typer.Option("0.01,0.001", help="Comma-separated Adam learning rates."),
    workers: int = typer.Option(2, help="Parallel processes (one population per lr)."),
    compare: bool = typer.Option(True, help="End with every technique on three UCI tables "
                                 "(out/comparison/)."),
) -> None:
    """MOONS, baseline vs Jumpstart on deep thin nets (CPAIOR Fig. 2 settings), over seeds;
    then every technique on three UCI tables (`jumpstart compare`'s uci-demo benchmark)."""
    from .demo import run_demo, run_demo_comparison

    try:
        depth_list = [int(d) for d in depths.split(",") if d.strip()]
        lr_list = [float(v) for v in lrs.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--depths must be comma-separated integers and --lrs numbers; got "
                         f"{depths!r}, {lrs!r}") from None
    _check(bool(depth_list) and min(depth_list) >= 1, f"--depths must be integers >= 1; got {depths!r}")
    _check(bool(lr_list) and min(lr_list) > 0, f"--lrs must be numbers > 0; got {lrs!r}")
    _check(width >= 1, f"--width must be >= 1; got {width}")
    _check(lam > 0, f"--lam must be > 0; got {lam}")
    _check(aggregation in AGGREGATIONS,
           f"unknown --aggregation {aggregation!r}; allowed: {', '.join(AGGREGATIONS)}")
    _check(epochs >= 1, f"--epochs must be >= 1; got {epochs}")
    _check(seeds >= 1, f"--seeds must be >= 1; got {seeds}")
    _check(workers >= 1, f"--workers must be >= 1; got {workers}")
    run_demo(out=out, width=width, depths=depth_list, lam=lam, aggregation=aggregation,
             epochs=epochs, seeds=seeds, lrs=lr_list, workers=workers)
    if compare:
        try:
            run_demo_comparison(out=out, workers=workers)
        except (ValueError, FileNotFoundError) as exc:
            raise UsageError(str(exc)) from None


@app.command()
def sweep(
    preset_or_file: str = typer.Argument(..., help="Preset name (e.g. moons-paper) or .toml path."),
    db: Path = typer.Option(..., help="Results database (SQLite); created if missing."),
    workers: int = typer.Option(2, help="Worker processes (local) or CPUs (local Ray)."),
    seeds: Optional[int] = typer.Option(None, help="Replace the seed axis with 0..K-1."),
    backend: str = typer.Option("local", help="local or ray."),
    address: Optional[str] = typer.Option(None, help="Ray cluster HOST:PORT; default local Ray."),
    retry_failed: bool = typer.Option(False, help="Re-run runs recorded as failed."),
    data_dir: Optional[Path] = typer.Option(
        None, help="Folder of tables for tabular sweeps (default ../shared/data/uci)."),
    lease_seconds: Optional[float] = typer.Option(
        None, help="Seconds without a heartbeat before another process takes over a run "
        "(a killed sweep's runs wait this long; default: run_sweep's LEASE_SECONDS, 120)."),
) -> None:
    """Run the runs of a sweep that the database does not hold yet (resumable)."""
    from .experiments import load_sweep, run_sweep
    from .experiments.sweep import LEASE_SECONDS

    try:
        spec = load_sweep(preset_or_file, seeds=seeds, data_dir=data_dir)
        start = time.perf_counter()
        counts = run_sweep(spec, db, workers=workers, backend=backend, address=address,
                           retry_failed=retry_failed,
                           lease_seconds=LEASE_SECONDS if lease_seconds is None else lease_seconds)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    typer.echo(
        f"{spec.name}: {counts['total']} runs, {counts['skipped']} already in {db}; "
        f"this call: {counts['done']} done, {counts['diverged']} diverged, "
        f"{counts['failed']} failed"
        + (f", {counts['elsewhere']} by other processes" if counts["elsewhere"] else "")
        + f" in {time.perf_counter() - start:.0f} s"
    )
    if counts["failed"] or counts["skipped"]:
        from .experiments import load
        from .experiments.selection import left_out

        for name, why in left_out(load(db, sweep=spec.name)).items():
            typer.echo(f"  data set {name}: every run failed ({why})")


@app.command()
def compare(
    db: Path = typer.Option(..., help="Results database (SQLite); created if missing."),
    out: Path = typer.Option(Path("comparison"), help="Folder for comparison.md/.csv/.png."),
    benchmarks: Optional[str] = typer.Option(
        None, help="Comma-separated benchmarks (default: the comparison file's list: "
        "uci-paper, mnist-5k-cpu, cifar10-10k-cpu, moons-paper)."),
    techniques: Optional[str] = typer.Option(
        None, help="Comma-separated technique labels (default: all of the file's)."),
    comparison: str = typer.Option("default", help="A shipped comparison or a .toml path."),
    workers: int = typer.Option(2, help="Worker processes (local) or CPUs (local Ray)."),
    seeds: Optional[int] = typer.Option(None, help="Replace every seed axis with 0..K-1."),
    backend: str = typer.Option("local", help="local or ray."),
    address: Optional[str] = typer.Option(None, help="Ray cluster HOST:PORT; default local Ray."),
    retry_failed: bool = typer.Option(False, help="Re-run runs recorded as failed."),
    data_dir: Optional[Path] = typer.Option(None, help="Folder of tables for the table "
                                            "benchmarks (default ../shared/data/uci); image "
                                            "benchmarks read the shared data folder."),
    report_only: bool = typer.Option(False, help="Train nothing: write the report from the "
                                     "runs already in --db (a part-run comparison says how "
                                     "many runs each benchmark still lacks)."),
) -> None:
    """Run (or resume) every technique on each benchmark with its own protocol and write
    one report: test accuracy, trainability, convergence, dead and linear units, cost, and
    wins/draws/losses against Jumpstart."""
    from .experiments.compare import load_comparison, run_comparison
    from .experiments.comparison_report import write_comparison_report

    _check_folder(out, "--out")
    try:
        spec = load_comparison(comparison, benchmarks=_names(benchmarks),
                               techniques=_names(techniques), seeds=seeds, data_dir=data_dir)
        if report_only:
            _check(db.is_file(), f"--db {db}: no such file (--report-only reads a store)")
        counts = {} if report_only else run_comparison(
            spec, db, workers=workers, backend=backend, address=address,
            retry_failed=retry_failed)
        paths = write_comparison_report(spec, db, out,
                                        {k: c["wall_seconds"] for k, c in counts.items()})
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    for name, c in counts.items():
        typer.echo(f"{name}: {c['total']} runs, {c['skipped']} already in {db}; this call: "
                   f"{c['done']} done, {c['diverged']} diverged, {c['failed']} failed in "
                   f"{c['wall_seconds']:.0f} s")
    typer.echo(paths[1].read_text().split("\n## ")[0])
    for path in paths:
        typer.echo(f"wrote {path}")


def _names(text: Optional[str]) -> Optional[list[str]]:
    """A comma-separated list option as names (``None`` when not given)."""
    return None if text is None else [n.strip() for n in text.split(",") if n.strip()]


@app.command()
def report(
    db: Path = typer.Argument(..., help="Results database written by `jumpstart sweep`."),
    out: Path = typer.Option(..., help="Folder for the figures and tables."),
    sweep: Optional[str] = typer.Option(None, help="Report only this sweep's runs."),
    threshold: float = typer.Option(0.9, help="Best train accuracy from which a cell trains."),
    strict: bool = typer.Option(False, help="Exit 1 when a data set was left out (all its "
                                "runs failed)."),
    by: list[str] = typer.Option([], help="Config key that splits a technique into variants "
                                 "reported apart, e.g. --by div_kind (repeat the option)."),
) -> None:
    """Figures and tables of a sweep: a depth x width grid (MOONS, CPAIOR Fig. 2) or a
    tabular benchmark (UCI, IEEE Access 2025: results, key metrics, wins/draws/losses)."""
    from .experiments.report import write_report

    _check_folder(out, "--out")
    try:
        paths = write_report(db, out, sweep=sweep, threshold=threshold, by=by)
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    for path in paths:
        typer.echo(f"wrote {path}")
    main_table = next((p for p in paths if p.name in ("key_metrics.md", "trainable_depth.md",
                                                      "table1_mnist.md")), None)
    if main_table is not None:
        typer.echo(main_table.read_text())
    from .experiments import load
    from .experiments.selection import left_out

    missing = left_out(load(db, sweep=sweep))
    for name, why in missing.items():
        typer.echo(f"left out: data set {name} ({why})", err=True)
    if strict and missing:
        raise typer.Exit(1)


@app.command()
def compress(
    run: Optional[str] = typer.Argument(None, help="A run folder or model.pt (jumpstart train "
                                        "--out), or a run key or its prefix (with --db); "
                                        "omitted with --db: the selected runs of a sweep."),
    db: Optional[Path] = typer.Option(None, help="Results database of a sweep run with "
                                      "save_weights = true; RUN is then a key."),
    data: Optional[str] = typer.Option(None, help="Data set whose training part defines dead "
                                       "(default: the run's), split with the run's seed."),
    out: Optional[Path] = typer.Option(None, help="Write the pruned model here (torch.save of "
                                       "the module; torch.load(FILE, weights_only=False)); "
                                       "for a sweep, a folder for compression.md/.csv."),
    sweep: Optional[str] = typer.Option(None, help="Without RUN: only this sweep's runs."),
    technique: list[str] = typer.Option([], help="Without RUN: only these techniques "
                                        "(repeat the option)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
) -> None:
    """Remove every unit dead on a data set, exactly: parameters and multiply-adds
    before and after per layer, and the largest change of the logits (at most 1e-5
    relative, else exit 1). Without RUN, every selected run of a tabular sweep in
    --db (the configuration chosen per data set and technique, each seed)."""
    if run is None:
        _check(db is not None, "give a RUN (folder, model.pt or key with --db), or --db for "
                               "a sweep's selected runs")
        _compress_sweep(db, sweep, technique or None, out)
        return
    from .data import load_run_data
    from .experiments.store import ResultsStore
    from .surgery import prune_dead
    from .train import read_checkpoint, rebuild_model

    if out is not None:
        _check(not out.is_dir(), f"--out {out} is a folder; give a file name")
        _check(out.parent.exists() or out.parent == Path(""), f"--out: no folder {out.parent}")
    try:
        if db is not None:
            _check(db.is_file(), f"--db {db}: no such file")
            with ResultsStore(db) as store:
                _, _, blob = store.weights(run)
            ckpt = read_checkpoint(blob)
        else:
            ckpt = read_checkpoint(run)
        config = ckpt["config"]
        dataset = None
        if data is not None:
            # the run's split of another data set (a test part leaves x_train as it is)
            dataset = load_run_data({**config, "dataset": data, "test_split": None})
        model, dataset = rebuild_model(ckpt, dataset)
        _check(hasattr(dataset, "x_train"), "compress needs a data set held in memory")
        pruned, report = prune_dead(model, dataset.x_train)
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from None
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    if out is not None:
        import torch

        torch.save(pruned, out)
    totals = report.totals()
    if as_json:
        from . import strict_json

        typer.echo(strict_json.dumps({"layers": report.layers, **totals,
                                      "max_logit_diff": report.max_logit_diff,
                                      "relative_diff": report.relative_diff,
                                      "emptied": report.emptied}))
    else:
        typer.echo(report.to_frame().to_string(index=False))
        typer.echo(f"parameters {totals['params_before']} -> {totals['params_after']} "
                   f"({totals['params_removed']:.1%} removed); multiply-adds per sample "
                   f"{totals['macs_before']} -> {totals['macs_after']}; largest logit "
                   f"difference {report.max_logit_diff:.3g} ({report.relative_diff:.3g} relative)"
                   + (f"; emptied {', '.join(report.emptied)}" if report.emptied else ""))
        if out is not None:
            typer.echo(f"wrote {out}")
    if report.relative_diff > 1e-5:
        typer.echo(f"the pruned logits differ by {report.relative_diff:.3g} relative (> 1e-5)",
                   err=True)
        raise typer.Exit(1)


def _compress_sweep(db: Path, sweep: str | None, techniques, out: Path | None) -> None:
    """``jumpstart compress --db DB``: the selected runs of a tabular sweep."""
    from .experiments.compression import compress_selected, summary
    from .experiments.selection import markdown_table

    _check(db.is_file(), f"--db {db}: no such file")
    if out is not None:
        _check_folder(out, "--out")
    try:
        frame = compress_selected(db, sweep=sweep, techniques=techniques)
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from None
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    table = summary(frame)
    text = markdown_table(table, floatfmt=".3g")
    typer.echo(text)
    if out is not None:
        frame.to_csv(out / "compression.csv", index=False)
        (out / "compression.md").write_text(
            f"Exact compression of the selected runs of {db.name}: units dead on each run's "
            "training part removed (jumpstart compress).\n\n" + text + "\n")
        typer.echo(f"wrote {out}/compression.md, compression.csv")
    if float(frame["relative_diff"].max()) > 1e-5:
        typer.echo("some pruned logits differ by more than 1e-5 relative", err=True)
        raise typer.Exit(1)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI; bad arguments print one ``error:`` line, exit 2."""
    args = sys.argv[1:] if argv is None else list(argv)
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args or ["--help"], prog_name="jumpstart", standalone_mode=False)
    except UsageError as exc:
        print(f"jumpstart: error: {exc}", file=sys.stderr)
        return 2
    except typer.TyperException as exc:  # typer's own parse errors (exit code 2)
        print(f"jumpstart: error: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        print("jumpstart: aborted", file=sys.stderr)
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
