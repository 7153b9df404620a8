"""``python -m sims sweep | results | figure``: a sweep file run into a results store, read back, drawn."""
from __future__ import annotations

import argparse
import pathlib

from .paths import CLIError, input_file

__all__ = ["sweep_main", "results_main", "figure_main", "varying_columns", "METRICS"]

#: The per-run metrics that ``sims.config.sweep_run`` records (the columns ``results`` shows by default).
METRICS = ("test_accuracy", "train_loss", "epsilon", "noise_multiplier", "steps")
_FMT = argparse.RawDescriptionHelpFormatter


def _default_db(sweep_file) -> pathlib.Path:
    return pathlib.Path("results") / (pathlib.Path(sweep_file).stem + ".db")


def _sweep_parser():
    p = argparse.ArgumentParser(prog="python -m sims sweep", formatter_class=_FMT,
                                description="Run every config of a sweep file that the store does not hold yet "
                                            "(docs/runs.md, docs/store.md); later and concurrent runs resume.",
                                epilog="example:\n  python -m sims sweep examples/sweep_random_freeze.toml "
                                       "--db results/freeze.db --workers 2\n  python -m sims figure results/freeze.db "
                                       "--x 'mechanism[0].r_final'")
    p.add_argument("sweep", help="a sweep file (TOML): [base], [grid], [[points]], seeds")
    p.add_argument("--db", help="the SQLite results store (default: results/<sweep file name>.db)")
    p.add_argument("--workers", type=int, default=None, help="local worker processes (default: the CPU count)")
    p.add_argument("--dask", metavar="ADDRESS", help="run on Dask: 'local' (a LocalCluster on loopback) or "
                                                     "tcp://HOST:PORT (needs dpsparse[dask])")
    p.add_argument("--serial", action="store_true", help="run in this process, one config after another")
    p.add_argument("--quick", action="store_true", help="every run cut to 3 steps (a smoke test of the sweep)")
    return p


def sweep_main(argv) -> int:
    """Exit 0 when every config is done, 1 when some failed, 2 on a bad argument."""
    from sims import config, sweep, sweep_spec

    args = _sweep_parser().parse_args(argv)
    cfgs = sweep_spec.load(input_file(args.sweep, "sweep file"))
    if args.quick:
        cfgs = [config.validate({**c, "training": {**c["training"], "epochs": None, "steps": 3}}) for c in cfgs]
    db = pathlib.Path(args.db) if args.db else _default_db(args.sweep)
    if db.exists() and not db.is_file():
        raise CLIError(f"--db {str(db)!r} is not a file")
    db.parent.mkdir(parents=True, exist_ok=True)
    if sum(bool(x) for x in (args.serial, args.dask)) > 1:
        raise CLIError("give at most one of --serial and --dask")
    kw = dict(store=db, n_workers=args.workers)
    try:
        if args.dask:
            with sweep.dask_client(args.dask, n_workers=args.workers) as client:
                recs = sweep.run_sweep(config.sweep_run, cfgs, store=db, executor=client)
        else:
            recs = sweep.run_sweep(config.sweep_run, cfgs, executor="serial" if args.serial else None, **kw)
    except RuntimeError as e:
        raise CLIError(str(e)) from None
    failed = [r for r in recs if "error" in r]
    print(f"{len(recs) - len(failed)} of {len(recs)} runs done, {len(failed)} failed; store {db}")
    print(_table(_rows(db), None))
    return 1 if failed else 0


def _rows(db, where=None):
    from sims import store

    return store.load(input_file(db, "store"), where=where)


def varying_columns(rows) -> list:
    """Config columns (not metrics, not ``_`` metadata) whose value differs between rows."""
    skip = set(METRICS) | {"id", "delta", "error"}
    cols = [k for k in (rows[0] if rows else {}) if not k.startswith("_") and k not in skip]
    return [k for k in cols if len({repr(r.get(k)) for r in rows}) > 1]


def _table(rows, columns) -> str:
    if not rows:
        return "(no runs)"
    cols = columns or (varying_columns(rows) + [m for m in METRICS if m in rows[0]] + ["_status"])
    cell = (lambda v: f"{v:.4g}" if isinstance(v, float) else str(v))
    body = [[cell(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


def _results_parser():
    p = argparse.ArgumentParser(prog="python -m sims results", formatter_class=_FMT,
                                description="Print a results store as a table, one row per run (the config "
                                            "columns that vary, then the metrics), or export it all as CSV.",
                                epilog="example:\n  python -m sims results results/freeze.db --where "
                                       "training.seed=0\n  python -m sims results results/freeze.db --csv freeze.csv")
    p.add_argument("db", help="the SQLite results store")
    p.add_argument("--where", action="append", default=None, metavar="KEY=VALUE",
                   help="keep rows whose flattened column KEY equals VALUE (repeatable)")
    p.add_argument("--csv", metavar="OUT", help="write every column of the selected rows to OUT as CSV")
    p.add_argument("--columns", nargs="+", help="the columns to print (default: varying config columns, metrics)")
    return p


def results_main(argv) -> int:
    from sims import store

    args = _results_parser().parse_args(argv)
    if args.csv:
        n = store.export_csv(input_file(args.db, "store"), args.csv, where=args.where)
        print(f"{n} rows -> {args.csv}")
        return 0
    print(_table(_rows(args.db, args.where), args.columns))
    return 0


def _figure_parser():
    p = argparse.ArgumentParser(prog="python -m sims figure", formatter_class=_FMT,
                                description="Draw a stored sweep: a metric against one axis, one line per value "
                                            "of another, the mean over seeds with its 95 % t-interval as a band.",
                                epilog="example:\n  python -m sims figure results/freeze.db --x 'mechanism[0].r_final'"
                                       " --metric test_accuracy --out results/figures/freeze.png")
    p.add_argument("db", help="the SQLite results store")
    p.add_argument("--x", required=True, help="the flattened config column on the horizontal axis")
    p.add_argument("--line", help="the column with one line per value (default: the other varying column, if one)")
    p.add_argument("--metric", default="test_accuracy", help="the column on the vertical axis (default test_accuracy)")
    p.add_argument("--where", action="append", default=None, metavar="KEY=VALUE", help="filter rows (repeatable)")
    p.add_argument("--out", help="the PNG to write (default: results/figures/<store name>_<metric>.png)")
    p.add_argument("--logx", action="store_true", help="logarithmic horizontal axis")
    return p


def figure_main(argv) -> int:
    from sims import figures

    args = _figure_parser().parse_args(argv)
    rows = [r for r in _rows(args.db, args.where) if r.get("_status") == "done"]
    if not rows:
        raise CLIError(f"store {args.db!r} has no finished runs to draw")
    for col in (args.x, args.metric, args.line):
        if col is not None and col not in rows[0]:
            raise CLIError(f"column {col!r} is not in the store; columns: {', '.join(sorted(rows[0]))}")
    line = args.line
    if line is None:
        others = [c for c in varying_columns(rows) if c not in (args.x, "training.seed")]
        line = others[0] if len(others) == 1 else None
    out = pathlib.Path(args.out) if args.out else (pathlib.Path("results") / "figures" /
                                                   f"{pathlib.Path(args.db).stem}_{args.metric}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    path = figures.plot_sweep(rows, x=args.x, line=line, metric=args.metric, path=out, logx=args.logx)
    print(f"figure -> {path}")
    return 0
