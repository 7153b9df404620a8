"""Claims of Watson et al., "Inference and Interference: The Role of Clipping, Pruning and Loss
Landscapes in DP-SGD" (arXiv 2311.06839; ``docs/sources.md §S2``).

1. Clipping hurts more than noise: the noise-only ablation (DP-SGD's noise std at epsilon 3, no
   clipping) beats the clip-only ablation (clipping, no noise).
2. The clipping penalty grows with dimension: (clip-only minus plain SGD) is more negative at the
   widest network than at the narrowest (a difference in differences).
3. Heavy magnitude pruning (80 % of the weights) improves DP-SGD at a fixed epsilon, for masks from
   the initial weights, from weights pre-trained on a public split, and from the DP iterate
   (re-pruned every 50 steps). All arms of these claims share the same 10 % public split, so
   dense DP-SGD trains on the same private rows.

4. The late phase decides: a run that switches from DP-SGD to SGD at the midpoint ends better than
   one that switches from SGD to DP-SGD (``training.switch_at = 0.5``), and DP-SGD then SGD is on
   par with SGD throughout (within 2 points). The DP phases use DP-SGD's noise multiplier at
   epsilon 3; switched runs are non-private ablations.

Data: digits (``sims.claims.arms``).
"""
from __future__ import annotations

from . import arms as A
from .record import Claim

__all__ = ["SOURCE", "PRUNE_SOURCES", "claims"]

SOURCE = "S2"
EPSILON = 3.0
PRUNE_FRACTION = 0.8
PRUNE_SOURCES = {"init": {}, "public": {}, "current": {"every": 50}}


def _noise_only(m, sigma, **kw):
    return A.digits(m, A.noise_only_chain(sigma), non_private=True, **kw)


def _ablation(m):
    sigma = A.noise_multiplier(m, EPSILON)
    return [Claim(
        name="watson.clipping_hurts_more_than_noise",
        source=f"{SOURCE}: 'clipping hurts more than noise' (noise std of DP-SGD at epsilon {EPSILON:g})",
        arms={"treatment": _noise_only(m, sigma), "control": A.digits(m, [A.CLIP_T], non_private=True)},
        metric="test_accuracy", direction="greater", min_effect=0.01, n_seeds=m.n_seeds, lr_grid=m.lr_grid,
        labels={"treatment": "noise only", "control": "clipping only"},
        notes=(f"non-private ablations; sigma = {sigma:.4g} times the clip norm {A.CLIP:g}",))]


def _dimension(m):
    wide, narrow = m.widths[-1], m.widths[0]
    return [Claim(
        name="watson.clipping_penalty_grows_with_dimension",
        source=f"{SOURCE}: 'the effect grows with dimension' (hidden {wide} against {narrow})",
        arms={"treatment": A.digits(m, [A.CLIP_T], non_private=True, hidden=wide),
              "control": A.nonprivate(m, hidden=wide),
              "treatment_ref": A.digits(m, [A.CLIP_T], non_private=True, hidden=narrow),
              "control_ref": A.nonprivate(m, hidden=narrow)},
        metric="test_accuracy", comparison="difference_in_differences", direction="less", min_effect=0.01,
        n_seeds=m.n_seeds, lr_grid=m.lr_grid,
        labels={"treatment": f"clip only, width {wide}", "control": f"SGD, width {wide}",
                "treatment_ref": f"clip only, width {narrow}", "control_ref": f"SGD, width {narrow}"})]


def _pruning(m):
    out = []
    for src, extra in PRUNE_SOURCES.items():
        prune = {"name": "magnitude_prune", "fraction": PRUNE_FRACTION, "source": src, **extra}
        out.append(Claim(
            name=f"watson.magnitude_prune_{src}_improves_dpsgd",
            source=f"{SOURCE}: 'heavy magnitude pruning improves DP-SGD' (mask from the {src} weights, "
                   f"{100 * PRUNE_FRACTION:g} % pruned, epsilon {EPSILON:g})",
            arms={"treatment": A.digits(m, [prune, A.CLIP_T, A.NOISE_T], epsilon=EPSILON, public_fraction=0.1),
                  "control": A.dense(m, EPSILON, public_fraction=0.1)},
            metric="test_accuracy", direction="greater", min_effect=0.01, n_seeds=m.n_seeds, lr_grid=m.lr_grid,
            labels={"treatment": f"magnitude pruning ({src})", "control": "dense DP-SGD"}))
    return out


def _switched(m, first, then):
    cfg = A.digits(m, first, non_private=True)
    cfg["switch_mechanism"] = then
    cfg["training"]["switch_at"] = 0.5
    return cfg


def _phases(m):
    sigma = A.noise_multiplier(m, EPSILON)
    dp = [A.CLIP_T, {"name": "gaussian_noise", "noise_multiplier": sigma}]
    sgd = [{"name": "clip", "clip_norm": None}]
    dp_sgd, sgd_dp = _switched(m, dp, sgd), _switched(m, sgd, dp)
    note = (f"non-private ablations; the DP phase is clip {A.CLIP:g} and noise sigma = {sigma:.4g}; the "
            f"optimizer restarts at the switch (plain SGD has no state)",)
    return [
        Claim(name="watson.late_phase_decides_final_accuracy",
              source=f"{SOURCE}: 'the late epochs decide the final result' (switch at the midpoint)",
              arms={"treatment": dp_sgd, "control": sgd_dp}, metric="test_accuracy", direction="greater",
              min_effect=0.01, n_seeds=m.n_seeds, lr_grid=m.lr_grid, notes=note,
              labels={"treatment": "DP-SGD, then SGD", "control": "SGD, then DP-SGD"}),
        Claim(name="watson.dp_then_sgd_on_par_with_sgd",
              source=f"{SOURCE}: 'DP-SGD is slower early on, but the late epochs decide' (DP-SGD then SGD vs SGD)",
              arms={"treatment": dp_sgd, "control": A.nonprivate(m)}, metric="test_accuracy",
              direction="equivalent", min_effect=0.02, n_seeds=m.n_seeds, lr_grid=m.lr_grid, notes=note,
              labels={"treatment": "DP-SGD, then SGD", "control": "SGD throughout"}),
    ]


def claims(m) -> list:
    """The claims of this paper at mode ``m`` (:class:`sims.claims.arms.Mode`)."""
    return _ablation(m) + _dimension(m) + _pruning(m) + _phases(m)
