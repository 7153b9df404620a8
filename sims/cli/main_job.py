"""``python -m sims [reproduce] [--quick|--full] [--claims NAME,...] [--out DIR] [--db FILE]``: the main job.

Runs the claims of the five source papers (:mod:`sims.claims`) through the sweep machinery and a
results store (so an interrupted run resumes), the theory checks of :mod:`sims.claims.theory_checks`
and the privacy audit of the built-in chains (:mod:`sims.audit`), then writes ``DIR/report.md``
with the verdict table, ``DIR/figures/*.png`` and ``*.pdf``, ``DIR/verdicts.json`` and
``DIR/summary.txt``, and prints the verdict table. Modes: ``--quick`` (seconds; checks the
machinery, its verdicts mean nothing), the default (the README's numbers), ``--full`` (an evening).
Other verbs: ``python -m sims --help``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .paths import output_dir

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sims reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="3 seeds, 2 epochs: a smoke test of the pipeline")
    size.add_argument("--full", action="store_true", help="32 seeds, 30 epochs, a wider step-size grid")
    p.add_argument("--claims", help="comma-separated claim names, or prefixes ending in '.' (e.g. 'zhu.,lin.')")
    p.add_argument("--out", default="results", help="output directory (default: results)")
    p.add_argument("--db", help="the results store (default: DIR/claims.db); runs already there are not redone")
    p.add_argument("--workers", type=int, help="local worker processes (default: one per core)")
    p.add_argument("--no-theory", action="store_true", help="skip the theory checks")
    p.add_argument("--no-audit", action="store_true", help="skip the privacy audit")
    return p


def _theory(out, quick):
    from ..claims import theory_checks as tc

    results, figures = {}, []
    for name, run, plot in tc.plan(quick):
        t0 = time.perf_counter()
        results[name] = run()
        (out / f"{name}.json").write_text(json.dumps(results[name], indent=1))
        figures.append(plot(results[name], out / "figures" / f"{name}.png"))
        print(f"theory check {name}: {time.perf_counter() - t0:.1f} s", flush=True)
    return tc.verdicts(results), figures


def _audit(out, quick):
    from .. import audit

    t0 = time.perf_counter()
    records = audit.audit_catalogue((2.0,) if quick else (1.0, 2.0, 4.0), trials=200 if quick else 2000,
                                    canaries=200 if quick else 1000)
    (out / "privacy_audit.json").write_text(json.dumps(records, indent=1))
    audit.plot_audit(records, out / "figures" / "privacy_audit.png")
    print(f"privacy audit: {time.perf_counter() - t0:.1f} s", flush=True)
    return audit.audit_section(records, "figures/privacy_audit.png")


def _record(r) -> dict:
    def v(x):
        return None if x is None else {k: getattr(x, k) for k in ("verdict", "effect", "ci_low", "ci_high", "level",
                                                                   "n", "method", "seeds_needed")}
    return {"claim": r.claim.name, "source": r.claim.source, "describe": r.claim.describe(), "epsilon": r.epsilon,
            "delta": r.delta,
            "fixed": v(r.fixed), "fixed_reason": r.fixed_reason, "tuned": v(r.tuned), "tuned_reason": r.tuned_reason,
            "arms": {role: {"label": a.label, "fixed_lr": a.fixed_lr, "fixed": list(a.fixed), "tuned_lr": a.tuned_lr,
                            "tuned": None if a.tuned is None else list(a.tuned), "validation": a.validation,
                            "epsilon": a.epsilon, "delta": a.delta, "diverged": a.diverged, "failed": a.failed}
                     for role, a in r.arms.items()}}


def _store_line(db, t_start) -> str:
    """``"N runs in the store: X trained by this call, Y read back; S min of run time in all"``."""
    from .. import store

    rows = store.load(db, where={"_status": "done"})
    now = sum(r["_finished"] >= t_start for r in rows)
    total = sum(r["_wall_time"] or 0.0 for r in rows) / 60
    return (f"{len(rows)} runs in the store `{Path(db).name}`: {now} trained by this call, {len(rows) - now} read "
            f"back; {total:.1f} min of run time in all (the sum over runs, on one core each)")


def _summary(results) -> list:
    lines = []
    for r in results:
        f = r.fixed.verdict if r.fixed else f"- ({r.fixed_reason})"
        t = r.tuned.verdict if r.tuned else f"- ({r.tuned_reason})"
        eff = f"{r.fixed.effect:+.3f} [{r.fixed.ci_low:+.3f}, {r.fixed.ci_high:+.3f}]" if r.fixed else "-"
        lines.append(f"{r.claim.name:<56} {eff:<28} fixed: {f:<13} tuned: {t}")
    return lines


def main(argv) -> int:
    """The main job (module docstring). Exit code 0, or 2 on a bad argument (message on stderr)."""
    from ..claims import catalog, runner
    from ..claims.report import write_report

    args = _parser().parse_args(argv)
    mode = "quick" if args.quick else "full" if args.full else "default"
    names = None if args.claims is None else [n.strip() for n in args.claims.split(",") if n.strip()]
    claims = catalog.claims(mode, names)  # a bad name: ValueError, one line, exit 2
    out = output_dir(args.out)
    db = args.db or str(out / "claims.db")
    t0, started = time.perf_counter(), time.time()
    print(f"{len(claims)} claims, mode {mode}; results store {db}", flush=True)
    results = runner.run_claims(claims, store=db, n_workers=args.workers, progress=None)
    print(f"claims: {time.perf_counter() - t0:.1f} s", flush=True)
    theory = None if args.no_theory else _theory(out, mode == "quick")
    audit = None if args.no_audit else _audit(out, mode == "quick")
    (out / "verdicts.json").write_text(json.dumps([_record(r) for r in results], indent=1, allow_nan=True))
    command = "python -m sims reproduce" + (f" --{mode}" if mode != "default" else "")
    report = write_report(out, results, mode=mode, wall_seconds=time.perf_counter() - t0, theory=theory,
                          audit=audit, command=command, runs=_store_line(db, started))
    summary = _summary(results) + [f"[theory] {c}: {v} ({d})" for c, v, d in (theory[0] if theory else [])]
    (out / "summary.txt").write_text("\n".join(summary) + "\n")
    print("\nVerdicts (effect at the fixed step, 95 % CI):")
    for line in summary:
        print(" ", line)
    print(f"\nreport: {report} ({time.perf_counter() - t0:.1f} s)", file=sys.stdout, flush=True)
    return 0
