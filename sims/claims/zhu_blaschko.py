"""Claims of Zhu & Blaschko, "Improving DP-SGD via Randomly Sparsified Gradients" (arXiv 2112.00845;
``docs/sources.md §S1``).

Random freeze (``sims.mechanisms.random_freeze``): a data-independent mask, frozen share ramped
linearly to ``r_final`` over the epochs, applied before clipping, noise on the kept coordinates
only, no rescaling, so it spends exactly the privacy of dense DP-SGD.

1. Random freeze with ``r_final`` 0.7 and 0.9 keeps the accuracy of dense DP-SGD at the same
   number of steps and the same epsilon (an equivalence within 2 accuracy points).
2. Its gain grows with the width of the network: per width, freeze minus dense; and the gain at
   the widest network minus the gain at the narrowest (a difference in differences).
3. The trade-off exists only when both clipping and noise are on: with clipping only, or noise
   only (DP-SGD's noise std, no clipping), freezing gives no gain (equivalence claims).
4. Whether the gain survives re-tuning the step size is the tuned-step verdict of every claim.

The measured best kept fraction against ``dptheory``'s rho* is a theory check of the report.
Data: digits (``sims.claims.arms``); widths 64, 256 and 1024 hidden units (16 and 64 in quick
mode) take the parameter count from 4.8 k to 77 k, where the sparsity trade-off should move.
"""
from __future__ import annotations

from . import arms as A
from .record import Claim

__all__ = ["SOURCE", "R_FINALS", "claims"]

SOURCE = "S1"
R_FINALS = (0.7, 0.9)
EPSILON = 3.0
_MARGIN = 0.02


def _freeze(r):
    return {"name": "random_freeze", "r_final": r}


def _keeps(m):
    return [Claim(
        name=f"zhu.freeze_{int(100 * r)}_keeps_dense_accuracy",
        source=f"{SOURCE}: 'up to 70 % sparsity with accuracy maintained' (r_final {r:g}, epsilon {EPSILON:g})",
        arms={"treatment": A.digits(m, [_freeze(r), A.CLIP_T, A.NOISE_T], epsilon=EPSILON),
              "control": A.dense(m, EPSILON)},
        metric="test_accuracy", direction="equivalent", min_effect=_MARGIN, n_seeds=m.n_seeds, lr_grid=m.lr_grid,
        labels={"treatment": f"random freeze {r:g}", "control": "dense DP-SGD"}) for r in R_FINALS]


def _width_arms(m, w):
    return (A.digits(m, [_freeze(0.9), A.CLIP_T, A.NOISE_T], epsilon=EPSILON, hidden=w), A.dense(m, EPSILON, hidden=w))


def _widths(m):
    out = []
    for w in m.widths:
        t, c = _width_arms(m, w)
        out.append(Claim(
            name=f"zhu.freeze_gain_width{w}", source=f"{SOURCE}: random freeze improves DP-SGD (hidden {w}, r_final 0.9)",
            arms={"treatment": t, "control": c}, metric="test_accuracy", direction="greater", min_effect=0.01,
            n_seeds=m.n_seeds, lr_grid=m.lr_grid,
            labels={"treatment": f"random freeze 0.9, width {w}", "control": f"dense DP-SGD, width {w}"}))
    (tw, cw), (tn, cn) = _width_arms(m, m.widths[-1]), _width_arms(m, m.widths[0])
    out.append(Claim(
        name="zhu.freeze_gain_grows_with_width",
        source=f"{SOURCE}: 'gains larger for big networks' (hidden {m.widths[-1]} against {m.widths[0]})",
        arms={"treatment": tw, "control": cw, "treatment_ref": tn, "control_ref": cn},
        metric="test_accuracy", comparison="difference_in_differences", direction="greater", min_effect=0.01,
        n_seeds=m.n_seeds, lr_grid=m.lr_grid,
        labels={"treatment": f"freeze, width {m.widths[-1]}", "control": f"dense, width {m.widths[-1]}",
                "treatment_ref": f"freeze, width {m.widths[0]}", "control_ref": f"dense, width {m.widths[0]}"}))
    return out


def _ablations(m):
    sigma = A.noise_multiplier(m, EPSILON)
    variants = {
        "clip_only": ([A.CLIP_T], "clipping only"),
        "noise_only": (A.noise_only_chain(sigma), "noise only"),
    }
    return [Claim(
        name=f"zhu.freeze_no_gain_{key}",
        source=f"{SOURCE}: 'the trade-off exists only when both clipping and noise are on' ({what})",
        arms={"treatment": A.digits(m, [_freeze(0.9), *chain], non_private=True),
              "control": A.digits(m, chain, non_private=True)},
        metric="test_accuracy", direction="equivalent", min_effect=_MARGIN, n_seeds=m.n_seeds, lr_grid=m.lr_grid,
        labels={"treatment": f"random freeze 0.9, {what}", "control": f"dense, {what}"},
        notes=(f"non-private ablation; noise only uses DP-SGD's noise std at epsilon {EPSILON:g} "
               f"(sigma = {sigma:.4g}, times the clip norm {A.CLIP:g}) without clipping",))
        for key, (chain, what) in variants.items()]


def claims(m) -> list:
    """The claims of this paper at mode ``m`` (:class:`sims.claims.arms.Mode`)."""
    return _keeps(m) + _widths(m) + _ablations(m)
