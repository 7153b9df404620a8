"""``python -m sims [reproduce] [--out DIR] [--quick]``: the main job (the verb may be omitted).

Runs the headline experiments of :mod:`sims.experiments`, stores each result as JSON in ``DIR``,
draws the figures of :mod:`sims.figures` into ``DIR/figures`` and prints a summary with a verdict
for each theory-vs-simulation comparison. Other verbs: ``python -m sims --help``.
"""
from __future__ import annotations

import argparse
import json
import time

from .. import experiments as ex
from .. import figures as fg
from .paths import output_dir

__all__ = ["main"]


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


def main(argv) -> int:
    """The main job: the headline experiments, their JSON, figures and summary (module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m sims reproduce", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results", help="output directory (default: results)")
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test of the pipeline)")
    args = parser.parse_args(argv)
    out = output_dir(args.out)

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
