"""``python -m sims run CONFIG.toml``: train one run config (:mod:`sims.config`) and print its summary."""
from __future__ import annotations

import argparse
import json
import math

from .paths import CLIError, input_file

__all__ = ["run_main"]

_RUN_EXAMPLE = """example:
  python -m sims run examples/random_freeze.toml
  python -m sims run examples/dense.toml --json
"""


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sims run", description="Train one run config (TOML, docs in "
                                "sims/config.py) and print final test accuracy, epsilon spent, steps, wall time.",
                                epilog=_RUN_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="a run config file (TOML)")
    p.add_argument("--json", action="store_true", help="print the record as one JSON object (without the history)")
    p.add_argument("--db", help="also store the run (and its history) in this SQLite results store")
    return p


def _num(v, fmt=".4g") -> str:
    return "-" if v is None else format(v, fmt)


def summary_line(rec: dict) -> str:
    """``"<id[:12]>: test accuracy A, epsilon E (delta D), S steps, noise multiplier N, W s"``, with a
    warning when the run is not private or its epsilon is not covered by the accountant."""
    caveat = ""
    if not rec.get("private", True):
        caveat = " [NOT PRIVATE]"
    elif not rec.get("accounting_valid", True):
        caveat = " [epsilon NOT valid: the Poisson accounting does not cover shuffled batches]"
    return (f"{rec['id'][:12]}: test accuracy {_num(rec['test_accuracy'])}, epsilon {_num(rec['epsilon'])} "
            f"(delta {_num(rec['delta'], '.3g')}), {rec['steps']} steps, noise multiplier "
            f"{_num(rec['noise_multiplier'])}, {rec['wall_time']:.1f} s{caveat}")


def _json_safe(v):
    """inf / nan as the strings "inf", "-inf", "nan" (JSON has no such numbers)."""
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def run_main(argv) -> int:
    """Exit code 0, or 2 on a bad path or config (one line on stderr)."""
    from sims import config

    args = _run_parser().parse_args(argv)
    cfg = config.load(input_file(args.config, "config"))
    if args.db:  # through the store: a run already there is read back, not trained again
        import time

        from sims import sweep

        t0 = time.perf_counter()
        rec = sweep.run_sweep(config.sweep_run, [cfg], executor="serial", store=args.db)[0]
        if "error" in rec:
            raise CLIError(f"the run failed: {rec['error']}")
        rec = {**rec, "wall_time": time.perf_counter() - t0}
    else:
        rec = config.run(cfg)
    if args.json:
        print(json.dumps({k: _json_safe(v) for k, v in rec.items() if k not in ("history",) + tuple(cfg)},
                         allow_nan=False))
    else:
        print(summary_line(rec))
    return 0
