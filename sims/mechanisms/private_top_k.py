"""Private top-k support selection of the clipped sum, with noise on the selected coordinates only.

Each step: read the clipped sum ``s`` (L2 sensitivity ``C`` under add/remove, so every score
``|s_j|`` moves by at most ``C``), add independent Gumbel noise of scale ``b = 2 C k / eps`` to
the scores ``|s_j|`` of the candidate coordinates (all ``d``, or the current signal mask when an
earlier data-independent selection restricted it) and keep the ``k`` largest (the one-shot form
of the peeling exponential mechanism, Durfee & Rogers 2019, Lemma 4.2; pure budget ``eps`` for
the whole selection). The noise stage then draws Gaussian noise on the kept coordinates only.

The Gumbel draws come from the step's mechanism generator ``ctx.rng`` (before the noise stage
draws its seed). The transform declares ``reads="private"`` with ``noise_on="kept"``, which the
chain refuses for every other transform; it accepts this one because it is built here (a
registered built-in, like clip and noise) and it declares its selection budget, and the chain's
privacy event becomes :class:`dptheory.events.SelectedGaussian` (RDP
``min(alpha eps^2/(8k), eps) + alpha/(2 sigma^2)`` per batch, Poisson subsampling by Zhu & Wang
2019, Thm 6; docs/selection.md).
"""
from __future__ import annotations

import numpy as np

from dptheory.selection import gumbel_scale
from dptheory.validation import check_int, check_real

from ._util import check_k, sq
from .base import BuiltIns, Effect, Transform

__all__ = ["made_here", "private_top_k"]

_MADE = BuiltIns()


def made_here(transform) -> bool:
    """True when ``transform`` was built by :func:`private_top_k` (see :class:`BuiltIns`)."""
    return transform in _MADE


def gumbel_top_k(scores: np.ndarray, k: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of the ``k`` largest ``scores / scale + G_j`` (``G_j`` standard Gumbel from ``rng``).

    ``argmax(u/b + G)`` picks ``j`` with probability ``e^{u_j/b} / sum_i e^{u_i/b}``; the top ``k``
    is ``k`` rounds of that without replacement (Durfee & Rogers 2019, Lemma 4.2).
    """
    n = scores.shape[0]
    z = scores / scale + rng.gumbel(size=n)
    if k >= n:
        return np.arange(n)
    return np.argpartition(-z, k - 1)[:k]


def private_top_k(k, selection_epsilon) -> Transform:
    """Keep ``k`` coordinates chosen privately from the clipped sum; noise only on them (post_clip).

    Parameters
    ----------
    k : int in [1, d] (checked at ``init``)
        Number of coordinates kept per step (fewer if an earlier selection left fewer candidates).
    selection_epsilon : float > 0
        Pure-DP budget of each step's selection (split evenly over the ``k`` peeling rounds).

    Returns
    -------
    Transform
        ``Effect("post_clip", noise_on="kept", reads="private")``, registered as a built-in;
        ``info`` holds ``k`` and ``selection_epsilon`` for the chain's accounting.
    """
    k = check_int("k", k, low=1)
    eps = check_real("selection_epsilon", selection_epsilon, low=0.0, low_open=True)

    def init(ctx):
        check_k("k", k, ctx.layout, False)
        return ()

    def update(ctx, state, work):
        s = work.clipped_sum
        b = gumbel_scale(k, eps, work.sum_sensitivity)
        mask = work.mask
        cand = np.arange(work.d) if mask is None else np.flatnonzero(mask)
        chosen = cand[gumbel_top_k(np.abs(s[cand].astype(np.float64)), k, b, ctx.rng)]
        keep = np.zeros(work.d, dtype=bool)
        keep[chosen] = True
        total = sq(s)
        work.report(phi=sq(s[keep]) / total if total > 0 else 1.0)
        work.restrict(keep, "kept")   # zeroes the clipped sum outside keep; noise on keep only
        return state

    return _MADE.register(Transform("private_top_k", Effect("post_clip", noise_on="kept", reads="private"),
                                    init, update, info={"k": k, "selection_epsilon": eps}))
