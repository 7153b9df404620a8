"""``python -m sims [VERB] ...``: the command line of the toolkit.

Verbs: (none) the main job (:mod:`sims.cli.main_job`); ``run`` one run config; ``sweep``,
``results``, ``figure`` a sweep file, its results store and its figure; ``reproduce`` the main job
(the same as no verb); ``audit`` the privacy audit. ``python -m sims VERB --help`` describes each. A bad path or config is one line on
stderr and exit code 2 (set ``SIMS_TRACEBACK=1`` to see the traceback instead).
"""
from __future__ import annotations

import os
import sys

from .paths import CLIError

__all__ = ["main", "VERBS"]

VERBS = {
    "run": ("sims.cli.runs", "run_main", "train one run config (TOML) and print its summary"),
    "sweep": ("sims.cli.store_verbs", "sweep_main", "run a sweep file into an SQLite results store (resumes)"),
    "results": ("sims.cli.store_verbs", "results_main", "print a results store as a table, or export it as CSV"),
    "figure": ("sims.cli.store_verbs", "figure_main", "draw a stored sweep: metric vs an axis, CI bands over seeds"),
    "reproduce": ("sims.cli.main_job", "main", "the main job as a verb: the papers' claims with verdicts, theory checks, audit, report.md"),
    "audit": ("sims.cli.audit", "main", "empirical privacy audit of a run config's chain or of every built-in chain"),
}


def _usage() -> str:
    lines = ["usage: python -m sims [--quick|--full] [--out DIR]   the main job: the papers' claims, verdicts, report.md",
             "       python -m sims VERB [--help] ...", "", "verbs:"]
    lines += [f"  {v:<10} {doc}" for v, (_, _, doc) in VERBS.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    """Dispatch ``argv`` (default ``sys.argv[1:]``) to a verb, or to the main job."""
    import importlib

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(_usage())
        print()
    verb = argv[0] if argv and argv[0] in VERBS else None
    module, fn, _ = VERBS[verb] if verb else ("sims.cli.main_job", "main", "")
    rest = argv[1:] if verb else argv
    try:
        return getattr(importlib.import_module(module), fn)(rest)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2, already printed)
        return int(e.code or 0)
    except (CLIError, ValueError, OSError) as e:
        if os.environ.get("SIMS_TRACEBACK"):
            raise
        print(f"python -m sims{' ' + verb if verb else ''}: error: {e}", file=sys.stderr)
        return 2
