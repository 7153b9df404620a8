"""Claims of DataLens (Wang et al., CCS 2021, arXiv 2103.11109; ``docs/sources.md §S3``): TopAgg.

TopAgg adapted to DP-SGD with per-example teachers (``sims.mechanisms.topagg``): each example
keeps the signs of its top-k gradient coordinates (k = 10 % of the 4810 parameters), the votes
are summed, Gaussian noise of std ``sigma sqrt(k)`` is added on every coordinate (the vote sum's
add/remove sensitivity is ``sqrt(k)``) and the sign of the noisy vote is the update. The run
config calibrates the EFFECTIVE noise multiplier to the same epsilon as dense DP-SGD, so the stage's
own multiplier carries TopAgg's ``sqrt(k)`` calibration.

Claim: TopAgg beats DP-SGD "in most cases", at epsilon 1, 3 and 8. Sign updates have unit size per
coordinate, so TopAgg's step sizes are on another scale: its fixed step is 0.01 and its grid
is the dense grid divided by 50. Data: digits (``sims.claims.arms``).
"""
from __future__ import annotations

from . import arms as A
from .record import Claim

__all__ = ["SOURCE", "EPSILONS", "claims"]

SOURCE = "S3"
EPSILONS = (1.0, 3.0, 8.0)
K = 481
FIXED_LR = 0.01


def _topagg(m, eps):
    cfg = A.digits(m, [{"name": "topagg", "k": K}], epsilon=eps)
    cfg["optimizer"]["lr"] = FIXED_LR
    return cfg


def claims(m) -> list:
    """The claims of this paper at mode ``m`` (:class:`sims.claims.arms.Mode`); quick: epsilon 3 only."""
    eps_list = (3.0,) if m.name == "quick" else EPSILONS
    return [Claim(
        name=f"datalens.topagg_beats_dpsgd_eps{eps:g}",
        source=f"{SOURCE}: 'TopAgg beats DP-SGD in most cases' (per-example teachers, k = {K}, epsilon {eps:g})",
        arms={"treatment": _topagg(m, eps), "control": A.dense(m, eps)},
        metric="test_accuracy", direction="greater", min_effect=0.01, n_seeds=m.n_seeds,
        lr_grid={"treatment": tuple(lr / 50 for lr in m.lr_grid), "control": m.lr_grid},
        labels={"treatment": "TopAgg", "control": "dense DP-SGD"}) for eps in eps_list]
