"""Claims of Adamczewski & Park, "Differential Privacy Meets Neural Network Pruning" (arXiv 2303.04612;
``docs/sources.md §S4``).

All arms share a 10 % public split of the digits training rows (the dense arm too, so every arm
trains on the same private rows and the seeds pair them); features are not standardised (the
fixed 1/16 scaling only), so the public split's shift acts on the selection alone. 75 % of the parameters are frozen (or not selected) in every sparse arm.

1. Parameter freezing from public data (``public_freeze``: one mask, chosen once from the public
   gradient at initialisation) beats dense DP-SGD at epsilon 3.
2. Parameter selection from public data (``public_select``: a mask chosen at every step from the
   public gradient at the current DP iterate) beats dense DP-SGD.
3. Random selection is on par with magnitude selection: an equivalence within 2 points.
4. Closeness matters: selection with a public split shifted by 0.5 (pixels scaled to [0, 1],
   along a random direction) does worse than with an unshifted one.

Data: digits (``sims.claims.arms``), whose 1347 training rows leave 135 public ones: few enough
that the public signal is noisy, as in the paper's setting of scarce public data.
"""
from __future__ import annotations

from . import arms as A
from .record import Claim

__all__ = ["SOURCE", "claims"]

SOURCE = "S4"
EPSILON = 3.0
FRACTION = 0.75
SHIFT = 0.5


def _arm(m, transform, shift=0.0):
    return A.digits(m, [transform, A.CLIP_T, A.NOISE_T], epsilon=EPSILON, public_fraction=0.1, public_shift=shift)


def _claim(m, name, source, treatment, control, labels, **kw):
    return Claim(name=f"adamczewski.{name}", source=f"{SOURCE}: {source}", arms={"treatment": treatment,
                 "control": control}, metric="test_accuracy", n_seeds=m.n_seeds, lr_grid=m.lr_grid,
                 labels=dict(zip(("treatment", "control"), labels)), **{"min_effect": 0.01, **kw})


def claims(m) -> list:
    """The claims of this paper at mode ``m`` (:class:`sims.claims.arms.Mode`)."""
    dense = A.dense(m, EPSILON, public_fraction=0.1)
    freeze = _arm(m, {"name": "public_freeze", "fraction": FRACTION})
    select = _arm(m, {"name": "public_select", "fraction": FRACTION})
    rand = _arm(m, {"name": "public_select", "fraction": FRACTION, "criterion": "random"})
    shifted = _arm(m, {"name": "public_select", "fraction": FRACTION}, shift=SHIFT)
    return [
        _claim(m, "public_freeze_beats_dpsgd", "'parameter freezing from public data' beats dense DP-SGD",
               freeze, dense, ("public freezing 75 %", "dense DP-SGD"), direction="greater"),
        _claim(m, "public_select_beats_dpsgd", "'parameter selection from public data' beats dense DP-SGD",
               select, dense, ("public selection 75 %", "dense DP-SGD"), direction="greater"),
        _claim(m, "random_selection_on_par_with_magnitude", "'random selection performs on par with magnitude'",
               rand, select, ("random selection", "magnitude selection"), direction="equivalent", min_effect=0.02),
        _claim(m, "closeness_of_public_data_matters", f"'depends on how close public and private data are' "
               f"(public split shifted by {SHIFT:g})", select, shifted,
               ("selection, close public data", "selection, shifted public data"), direction="greater"),
    ]
