"""Claims of Lin, "On the Interaction Between Differential Privacy and Gradient Compression in Deep
Learning" (arXiv 2211.00734; ``docs/sources.md §S0``).

1. Without DP, top-k and random-k at 1 % and 10 % and low rank (rank 1 and 4) cost test accuracy
   against dense SGD (``*_costs_accuracy_without_dp``, direction "less").
2. Under DP at epsilon 1, 3 and 8, the same compression reduces the accuracy lost to privacy: the
   paper's relative reduction of the gap, ``1 - gap(compressed) / gap(dense)`` with ``gap`` the
   non-private minus the private accuracy of the same method (``*_reduces_privacy_gap_eps*``).
3. Noise-then-compress (top-k of the noisy update, post-processing) against compress-then-noise
   (each example keeps its own top-k before clipping, noise on every coordinate) at epsilon 3.

Private compressors: top-k of the noisy update; random-k with a fresh data-independent mask after
clipping and noise on the kept coordinates only; low rank, one power iteration on the noisy update.
Without DP the same compressors act on the clean minibatch gradient. Data: digits
(``sims.claims.arms``), the smallest bundled set on which a 4810-parameter MLP's accuracy moves
visibly at 1 % of the coordinates.
"""
from __future__ import annotations

from . import arms as A
from .record import Claim

__all__ = ["SOURCE", "COMPRESSORS", "EPSILONS", "claims", "slug"]

SOURCE = "S0"
EPSILONS = (1.0, 3.0, 8.0)
_D = 4810  # parameters of the 64-64-10 MLP
#: name -> (private chain, non-private chain): the compressor after (or around) clip and noise
COMPRESSORS = {
    "top-k 1%": (lambda k=_D // 100: [A.CLIP_T, A.NOISE_T, {"name": "top_k", "k": k, "mode": "noisy"}],
                 lambda k=_D // 100: [{"name": "top_k", "k": k, "mode": "clean"}]),
    "top-k 10%": (lambda k=_D // 10: [A.CLIP_T, A.NOISE_T, {"name": "top_k", "k": k, "mode": "noisy"}],
                  lambda k=_D // 10: [{"name": "top_k", "k": k, "mode": "clean"}]),
    "random-k 1%": (lambda k=_D // 100: [A.CLIP_T, {"name": "random_k", "k": k}, A.NOISE_T],
                    lambda k=_D // 100: [{"name": "random_k", "k": k}]),
    "random-k 10%": (lambda k=_D // 10: [A.CLIP_T, {"name": "random_k", "k": k}, A.NOISE_T],
                     lambda k=_D // 10: [{"name": "random_k", "k": k}]),
    "low-rank 1": (lambda: [A.CLIP_T, A.NOISE_T, {"name": "low_rank", "rank": 1}],
                   lambda: [{"name": "low_rank", "rank": 1, "order": "compress_then_noise"}]),
    "low-rank 4": (lambda: [A.CLIP_T, A.NOISE_T, {"name": "low_rank", "rank": 4}],
                   lambda: [{"name": "low_rank", "rank": 4, "order": "compress_then_noise"}]),
}


def slug(name: str) -> str:
    """The part of a claim name that names a compressor: ``"top-k 1%"`` -> ``"top_k_1pct"``."""
    return name.replace("-", "_").replace(" ", "_").replace("%", "pct")


def _costs(m):
    out = []
    for name, (_, plain) in COMPRESSORS.items():
        out.append(Claim(
            name=f"lin.{slug(name)}_costs_accuracy_without_dp",
            source=f"{SOURCE}: 'compression generally costs accuracy without DP' ({name})",
            arms={"treatment": A.nonprivate(m, *plain()), "control": A.nonprivate(m)},
            metric="test_accuracy", direction="less", min_effect=0.01, n_seeds=m.n_seeds, lr_grid=m.lr_grid,
            labels={"treatment": f"{name}, no DP", "control": "dense SGD, no DP"}))
    return out


def _gaps(m, epsilons):
    out = []
    for name, (private, plain) in COMPRESSORS.items():
        for eps in epsilons:
            out.append(Claim(
                name=f"lin.{slug(name)}_reduces_privacy_gap_eps{eps:g}",
                source=f"{SOURCE}: 'under DP, compression can reduce the accuracy loss' ({name}, epsilon {eps:g})",
                arms={"treatment": A.digits(m, private(), epsilon=eps), "control": A.dense(m, eps),
                      "treatment_ref": A.nonprivate(m, *plain()), "control_ref": A.nonprivate(m)},
                metric="test_accuracy", comparison="gap_reduction", direction="greater", min_effect=0.1,
                ci_method="bootstrap", n_seeds=m.n_seeds, lr_grid=m.lr_grid,
                labels={"treatment": f"{name}, DP", "control": "dense DP-SGD", "treatment_ref": f"{name}, no DP",
                        "control_ref": "dense SGD, no DP"}))
    return out


def _order(m):
    k = _D // 10
    return [Claim(
        name="lin.noise_then_compress_beats_compress_then_noise",
        source=f"{SOURCE}: where compression sits relative to the noise is not stated [I]; top-k 10 %, epsilon 3",
        arms={"treatment": A.digits(m, [A.CLIP_T, A.NOISE_T, {"name": "top_k", "k": k, "mode": "noisy"}], epsilon=3.0),
              "control": A.digits(m, [{"name": "top_k", "k": k, "mode": "per_example"}, A.CLIP_T, A.NOISE_T],
                                  epsilon=3.0)},
        metric="test_accuracy", direction="greater", min_effect=0.01, n_seeds=m.n_seeds, lr_grid=m.lr_grid,
        labels={"treatment": "noise, then top-k", "control": "per-example top-k, then noise"},
        notes=("the paper leaves the order open; this records our hypothesis (noise-then-compress keeps the "
               "large coordinates of signal plus noise) so that the verdict can contradict it",))]


def claims(m) -> list:
    """The claims of this paper at mode ``m`` (:class:`sims.claims.arms.Mode`); the quick mode
    keeps epsilon 3 only."""
    eps = (3.0,) if m.name == "quick" else EPSILONS
    return _costs(m) + _gaps(m, eps) + _order(m)
