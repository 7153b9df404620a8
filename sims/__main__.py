"""``python -m sims [--out DIR] [--quick]``: the main job.

Runs the headline experiments of :mod:`sims.experiments`, stores each result as JSON in ``DIR``,
draws the figures of :mod:`sims.figures` into ``DIR/figures`` and prints a summary with a verdict
for each theory-vs-simulation comparison.

``python -m sims audit [RUN.toml] [--out DIR] [--trials N] [--quick] ...``: the privacy audit of a
run config's chain, or of every built-in chain (:mod:`sims.audit`, docs/audit.md).
"""
from __future__ import annotations

import os

# OpenBLAS worker threads spin for up to ~0.1 s after each matrix product; a Numba kernel launched
# right after one then waits for a core (measured: 118 ms instead of 6 ms per step on 2 cores, see
# benchmarks/README.md). A short spin timeout avoids it; it must be set before NumPy is imported.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import argparse  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from . import experiments as ex
from . import figures as fg


def _verdicts(results):
    """One line per claim: what theory says, what simulation shows, agreed or not."""
    lines = []
    nsr = results["nsr_vs_k"]
    ctm, mtc = nsr["clip_then_mask"], nsr["mask_then_clip"]
    spread = max(ctm["nsr"]) / min(ctm["nsr"])
    lines.append(f"[NSR] clip-then-mask NSR is flat in k (theory: = dense {nsr['nsr_dense_theory']:.3g}); "
                 f"measured max/min over k = {spread:.3f}")
    flat = max(mtc["signal"]) / min(mtc["signal"])
    lines.append(f"[NSR] mask-then-clip signal flat in k, NSR ~ rho * dense (perturbation moderation); "
                 f"measured signal max/min = {flat:.3f}, NSR at smallest k = {mtc['nsr'][0]:.3g} "
                 f"(theory {mtc['nsr_theory'][0]:.3g})")
    cb = results["convex_bound_vs_steps"]
    ok = all(m <= b for m, b in zip(cb["measured"], cb["bound"]))
    lines.append(f"[convex] averaged-iterate suboptimality under the bound at every T: {'yes' if ok else 'NO'} "
                 f"(ratio measured/bound {min(m / b for m, b in zip(cb['measured'], cb['bound'])):.2g}"
                 f"..{max(m / b for m, b in zip(cb['measured'], cb['bound'])):.2g})")
    tr = results["keep_fraction_tradeoff"]
    lines.append(f"[trade-off] rho* (theory, assumed L=1) = {tr['rho_star_theory']:.3g} with no assumption on the "
                 f"gradients ({tr['rho_star_theory_spread_out']:.3g} if they are spread out); best rho on validation at "
                 f"lr {tr['lrs'][0]:g} = {tr['rho_best_measured']:.3g} (test accuracy {tr['acc_at_best']:.3f} "
                 f"+- {tr['acc_se'][tr['fractions'].index(tr['rho_best_measured'])]:.3f} vs dense "
                 f"{tr['acc_mean'][-1]:.3f} +- {tr['acc_se'][-1]:.3f})")
    lines.append(f"[trade-off, lr re-tuned per rho over {tr['lrs']} on validation] best rho = "
                 f"{tr['rho_best_tuned']:.3g} (test accuracy {tr['acc_tuned_at_best']:.3f} vs dense "
                 f"{tr['acc_tuned'][-1]:.3f} at lr {tr['lr_tuned'][-1]:g})")
    ut = results["mechanism_utility"]
    lines.append(f"[utility] test accuracy at epsilon={ut['epsilon']}, lr {ut['lrs'][0]:g} / best lr: " + "; ".join(
        f"{n}: {a:.3f} / {t:.3f}" for n, a, t in zip(ut["mechanisms"], ut["acc_mean"], ut["acc_tuned"]))
        + f"; non-private {ut['nonprivate_acc']:.3f}")
    return lines


def _audit_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sims audit", description=audit_main.__doc__)
    p.add_argument("config", nargs="?", help="a run config (TOML, sims.config): audit its chain on its model; "
                                              "without it, every built-in chain and the non-private variants")
    p.add_argument("--out", default="results", help="output directory (default: results)")
    p.add_argument("--trials", type=int, default=2000, help="trials per world of each game (default 2000)")
    p.add_argument("--canaries", type=int, default=1000, help="canaries of the one-run audit (0: skip; default 1000)")
    p.add_argument("--noise-multiplier", type=float, nargs="+", default=[1.0, 2.0, 4.0],
                   help="noise multipliers of the built-in chains (default 1 2 4; not with a run config)")
    p.add_argument("--sampling-rate", type=float, default=1.0, help="the canary's sampling rate q (default 1)")
    p.add_argument("--steps", type=int, default=1, help="composed steps per trial (default 1)")
    p.add_argument("--confidence", type=float, default=0.95, help="confidence of the lower bounds (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="random_state of the audit (default 0)")
    p.add_argument("--quick", action="store_true", help="200 trials, 200 canaries, sigma 2 only (a smoke test)")
    return p


def audit_main(argv) -> int:
    """``python -m sims audit [RUN.toml]``: audit chains, write ``DIR/privacy_audit.{json,md}`` and the figure.

    Exit code 0, or 1 when a private built-in chain (or the run config's chain) shows a VIOLATION
    (the non-private variants are expected to), or 2 on a bad argument or config (message on stderr).
    """
    from . import audit

    args = _audit_parser().parse_args(argv)
    if args.quick:
        args.trials, args.canaries, args.noise_multiplier = 200, 200, [2.0]
    kw = {"trials": args.trials, "canaries": args.canaries, "sampling_rate": args.sampling_rate,
          "steps": args.steps, "confidence": args.confidence, "random_state": args.seed}
    t0 = time.perf_counter()
    try:
        if args.config:
            records = [audit.audit_run_config(args.config, **kw)]
        else:
            records = audit.audit_catalogue(args.noise_multiplier, **kw)
    except (ValueError, OSError) as exc:
        print(f"python -m sims audit: error: {exc}", file=sys.stderr)
        return 2
    out = pathlib.Path(args.out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
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


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["audit"]:
        return audit_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m sims", description=__doc__)
    parser.add_argument("--out", default="results", help="output directory (default: results)")
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test of the pipeline)")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    (out / "figures").mkdir(parents=True, exist_ok=True)

    quick = args.quick
    plan = [
        ("accounting_curves", lambda: ex.accounting_curves(n_points=5 if quick else 12), fg.plot_accounting),
        ("nsr_vs_k", lambda: ex.nsr_vs_k(n_k=4 if quick else 9, repeats=40 if quick else 200), fg.plot_nsr_vs_k),
        ("convex_bound_vs_steps", lambda: ex.convex_bound_vs_steps(
            steps_grid=(25, 100) if quick else (25, 50, 100, 200, 400, 800),
            n_replicates=20 if quick else 200), fg.plot_convex_bound),
        ("keep_fraction_tradeoff", lambda: ex.keep_fraction_tradeoff(
            fractions=(0.1, 1.0) if quick else (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0),
            lrs=(0.5, 2.0) if quick else (0.5, 0.125, 0.25, 1.0, 2.0),
            epochs=2 if quick else 20, seeds=(0, 1) if quick else (0, 1, 2)), fg.plot_tradeoff),
        ("mechanism_utility", lambda: ex.mechanism_utility(
            epochs=2 if quick else 20, lrs=(0.5, 2.0) if quick else (0.5, 0.125, 0.25, 1.0, 2.0),
            seeds=(0, 1) if quick else (0, 1, 2)), fg.plot_utility),
    ]
    results = {}
    for name, run, plot in plan:
        t0 = time.perf_counter()
        res = run()
        results[name] = res
        (out / f"{name}.json").write_text(json.dumps(res, indent=1))
        fig = plot(res, out / "figures" / f"{name}.png")
        print(f"{name}: {time.perf_counter() - t0:.1f} s -> {fig}", flush=True)

    from dptheory.__main__ import main as dptheory_main

    print("\nPrivacy accounting, standard settings:")
    dptheory_main(["table"])
    print("\nTheory vs simulation:")
    summary = _verdicts(results)
    for line in summary:
        print(" ", line)
    (out / "summary.txt").write_text("\n".join(summary) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
