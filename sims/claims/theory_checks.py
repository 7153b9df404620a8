"""The report's "theory checks": closed forms of ``dptheory`` against the simulator, each with a
verdict computed by a rule stated here (not worded by hand).

* **NSR of clip-then-mask random-k** (``docs/theory.md §2``): flat in k and equal to dense DP-SGD's.
  Verdict "agrees" when every measured NSR is within ``z`` standard errors of the closed form,
  ``z = 4.4`` (two-sided, Bonferroni over the k's: false failure below ``1e-5 x`` the number of k's).
* **NSR of mask-then-clip random-k** (perturbation moderation): its closed form is an
  approximation (the all-clipped regime), so the rule is a tolerance: "agrees" when every
  measured / closed-form ratio is in ``[0.9, 1.1]``.
* **Convex bound** (``dptheory.convergence.convex_bound``): "holds" when the averaged-iterate
  suboptimality plus 4.4 standard errors is below the bound at every T, and the ratio range is
  reported (a bound is useful only when it is not too loose).
* **Keep-fraction trade-off** (``dptheory.noise_signal.optimal_keep_fraction``): the best kept
  fraction on validation at the fixed step against rho*; "agrees" when they are within a factor
  of 2 of each other (the grid's resolution), else "disagrees".
"""
from __future__ import annotations

import math

from .. import experiments as ex
from .. import figures as fg

__all__ = ["Z", "plan", "verdicts"]

Z = 4.4


def plan(quick: bool) -> list:
    """``[(name, run, plot)]`` of the theory-check experiments (:mod:`sims.experiments`)."""
    return [
        ("accounting_curves", lambda: ex.accounting_curves(n_points=5 if quick else 12), fg.plot_accounting),
        ("nsr_vs_k", lambda: ex.nsr_vs_k(n_k=4 if quick else 9, repeats=40 if quick else 200), fg.plot_nsr_vs_k),
        ("convex_bound_vs_steps", lambda: ex.convex_bound_vs_steps(
            steps_grid=(25, 100) if quick else (25, 50, 100, 200, 400, 800),
            n_replicates=20 if quick else 200), fg.plot_convex_bound),
        ("keep_fraction_tradeoff", lambda: ex.keep_fraction_tradeoff(
            fractions=(0.1, 1.0) if quick else (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0),
            lrs=(0.5, 2.0) if quick else (0.5, 0.125, 0.25, 1.0, 2.0),
            epochs=2 if quick else 20, seeds=(0, 1) if quick else (0, 1, 2)), fg.plot_tradeoff),
    ]


def _nsr(res) -> list:
    ctm, mtc = res["clip_then_mask"], res["mask_then_clip"]
    theory = res["nsr_dense_theory"]
    z = max(abs(n - theory) / se for n, se in zip(ctm["nsr"], ctm["nsr_se"]))
    ratios = [n / t for n, t in zip(mtc["nsr"], mtc["nsr_theory"])]
    return [
        ("NSR, clip-then-mask random-k = dense", "agrees" if z <= Z else "disagrees",
         f"closed form {theory:.4g} at every k; largest deviation {z:.2f} standard errors (rule: <= {Z})"),
        ("NSR, mask-then-clip random-k ~ rho x dense", "agrees" if all(0.9 <= r <= 1.1 for r in ratios) else "disagrees",
         f"measured / closed form {min(ratios):.3f} .. {max(ratios):.3f} over k (rule: within [0.9, 1.1])"),
    ]


def _convex(res) -> tuple:
    m, se, b = res["measured"], res["measured_se"], res["bound"]
    ok = all(mi + Z * si <= bi for mi, si, bi in zip(m, se, b))
    r = [mi / bi for mi, bi in zip(m, b)]
    return ("convex bound, averaged iterate", "holds" if ok else "violated",
            f"measured / bound {min(r):.2g} .. {max(r):.2g} over T = {res['steps']} (rule: measured + {Z} SE <= bound)")


def _tradeoff(res) -> tuple:
    best, star = res["rho_best_measured"], res["rho_star_theory"]
    ok = abs(math.log(best / star)) <= math.log(2.0)
    return ("keep-fraction trade-off, rho*", "agrees" if ok else "disagrees",
            f"best rho on validation at lr {res['lrs'][0]:g}: {best:.3g}; rho* (no assumption on the gradients, "
            f"assumed L = 1): {star:.3g}; spread-out gradients: {res['rho_star_theory_spread_out']:.3g}; "
            f"re-tuned step: best rho {res['rho_best_tuned']:.3g} (rule: within a factor 2)")


def verdicts(results: dict) -> list:
    """``[(check, verdict, detail)]`` for the experiments of :func:`plan` present in ``results``."""
    out = []
    if "nsr_vs_k" in results:
        out += _nsr(results["nsr_vs_k"])
    if "convex_bound_vs_steps" in results:
        out.append(_convex(results["convex_bound_vs_steps"]))
    if "keep_fraction_tradeoff" in results:
        out.append(_tradeoff(results["keep_fraction_tradeoff"]))
    return out
