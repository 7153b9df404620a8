"""``python -m sims audit [RUN.toml] [--out DIR] [--trials N] [--quick] ...``: the privacy audit of a
run config's chain, or of every built-in chain (:mod:`sims.audit`, docs/audit.md)."""
from __future__ import annotations

import argparse
import json
import time

from .paths import output_dir

__all__ = ["main"]


def _audit_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sims audit", description=main.__doc__)
    p.add_argument("config", nargs="?", help="a run config (TOML, sims.config): audit its chain on its model; "
                                              "without it, every built-in chain and the non-private variants")
    p.add_argument("--out", default="results", help="output directory (default: results)")
    p.add_argument("--trials", type=int, default=2000, help="trials per world of each game (default 2000)")
    p.add_argument("--canaries", type=int, default=1000, help="canaries of the one-run audit (0: skip; default 1000)")
    p.add_argument("--noise-multiplier", type=float, nargs="+", default=[1.0, 2.0, 4.0],
                   help="noise multipliers of the built-in chains (default 1 2 4; not with a run config)")
    p.add_argument("--sampling-rate", type=float, default=1.0, help="the canary's sampling rate q (default 1)")
    p.add_argument("--steps", type=int, default=1, help="composed steps per trial (default 1)")
    p.add_argument("--full-length", action="store_true",
                   help="with a run config: audit the whole run (its own sampling rate and steps) against its epsilon")
    p.add_argument("--confidence", type=float, default=0.95, help="confidence of the lower bounds (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="random_state of the audit (default 0)")
    p.add_argument("--quick", action="store_true", help="200 trials, 200 canaries, sigma 2 only (a smoke test)")
    return p


def main(argv) -> int:
    """``python -m sims audit [RUN.toml]``: audit chains, write ``DIR/privacy_audit.{json,md}`` and the figure.

    Exit code 0, or 1 when a private built-in chain (or the run config's chain) shows a VIOLATION
    (the non-private variants are expected to), or 2 on a bad argument or config (message on stderr).
    """
    from .. import audit

    args = _audit_parser().parse_args(argv)
    if args.quick:
        args.trials, args.canaries, args.noise_multiplier = 200, 200, [2.0]
    kw = {"trials": args.trials, "canaries": args.canaries, "sampling_rate": args.sampling_rate,
          "steps": args.steps, "confidence": args.confidence, "random_state": args.seed}
    out = output_dir(args.out)  # before minutes of auditing
    t0 = time.perf_counter()
    if args.full_length and not args.config:
        raise ValueError("--full-length needs a run config")
    if args.config:  # a bad config is a ValueError: one line and exit 2 (sims.cli)
        if args.full_length:
            kw = {k: v for k, v in kw.items() if k not in ("sampling_rate", "steps")}
        records = [audit.audit_run_config(args.config, full_length=args.full_length, **kw)]
    else:
        records = audit.audit_catalogue(args.noise_multiplier, **kw)
    (out / "privacy_audit.json").write_text(json.dumps({"arguments": vars(args), "records": records}, indent=1))
    fig = audit.plot_audit(records, out / "figures" / "privacy_audit.png")
    (out / "privacy_audit.md").write_text(audit.audit_section(records, "figures/privacy_audit.png"))
    for r in records:
        one = f"{r['one_run']['epsilon_lower_bound']:.3g}" if "one_run" in r else "-"
        claim = "-" if r["claimed_epsilon"] is None else f"{r['claimed_epsilon']:.3g}"
        print(f"{r['name']:<46} claimed {claim:>6}  lower bound {r['epsilon_lower_bound']:.3g} "
              f"(one run {one})  {r['verdict']}")
    print(f"privacy audit: {time.perf_counter() - t0:.1f} s -> {fig}", flush=True)
    own = ("built-in", "run config")
    return int(any(r["kind"] in own and r["verdict"].startswith("VIOLATION") for r in records))
