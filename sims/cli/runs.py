"""``python -m sims run CONFIG.toml``: train one run config (:mod:`sims.config`) and print its summary."""
from __future__ import annotations

import argparse
import json

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


def summary_line(rec: dict) -> str:
    """``"<id[:12]>: test accuracy A, epsilon E (delta D), S steps, sigma N, W s"``."""
    return (f"{rec['id'][:12]}: test accuracy {rec['test_accuracy']:.4f}, epsilon {rec['epsilon']:.4g} "
            f"(delta {rec['delta']:.3g}), {rec['steps']} steps, noise multiplier {rec['noise_multiplier']:.4g}, "
            f"{rec['wall_time']:.1f} s")


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
        print(json.dumps({k: v for k, v in rec.items() if k not in ("history",) + tuple(cfg)}))
    else:
        print(summary_line(rec))
    return 0
