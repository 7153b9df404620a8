"""Parameter freezing and parameter selection from public data (Adamczewski & Park, arXiv 2303.04612).

``public_freeze``  one fixed mask, chosen once at ``init`` on the public split (keep the
                   coordinates with the largest ``|mean public gradient|`` at the initial
                   parameters) or uniformly at random;
``public_select``  a new mask every step, from the public-data gradient at the current (released)
                   parameters, or uniformly at random.

The mask is applied before clipping (mask-then-clip) and noise is drawn on the kept coordinates
only. The choice reads only public data (or nothing), so the accounting is that of dense DP-SGD
(docs/sources.md §S4; docs/theory.md §1.6). A magnitude criterion without a public split raises ``ValueError``
at ``init``. ``fraction`` is the fraction NOT updated: ``n_keep = d - floor(fraction * d)``.
"""
from __future__ import annotations


import numpy as np

from dptheory.validation import check_choice, check_int, check_real
from dptheory.noise_signal import n_frozen
from sims.models.pergrad import weighted_sum

from ._util import top_k_mask
from .base import Effect, Transform

__all__ = ["public_freeze", "public_select", "public_gradient", "selection_mask", "require_public_split", "CRITERIA"]

CRITERIA = ("magnitude", "random")


def require_public_split(ctx, who: str):
    """The checked public split of ``ctx`` for the public-data mechanism ``who``, or ``ValueError``.

    Only a :class:`sims.data.PublicSplit` is accepted: it is made by :func:`sims.data.public_split`,
    which refuses a public split in which any row equals a private training row (so a public-data
    mechanism can never read a private example).
    """
    from sims.data import PublicSplit

    if ctx.public is None:
        raise ValueError(f"public: {who} needs a public split (InitContext.public is None); "
                         f"use criterion='random' or give the dataset a public split (sims.data.split_public)")
    if not isinstance(ctx.public, PublicSplit):
        raise ValueError(f"public: {who} needs a sims.data.PublicSplit (made by sims.data.public_split, which "
                         f"checks that no public row is a private row), got {type(ctx.public).__name__}")
    return ctx.public


def public_gradient(model, params, public, rng=None, batch_size=None) -> np.ndarray:
    """Mean gradient of the model loss over the public split (or a random public batch).

    ``public`` is a :class:`sims.data.PublicSplit`.

    ``g = (1/n) sum_i grad l(x_i, y_i)`` via ``sims.models.backprop`` and the per-example sum.
    """
    from sims.models.dense import backprop

    X, y = public.X, public.y
    if batch_size is not None and batch_size < len(X):
        idx = rng.choice(len(X), size=batch_size, replace=False)
        X, y = X[idx], y[idx]
    bp = backprop(model, params, X, y)
    n = bp.batch_size
    return weighted_sum(bp, np.full(n, 1.0 / n, dtype=bp.losses.dtype))


def _n_keep(fraction, d):
    return d - int(n_frozen(fraction, d))


def selection_mask(layout, model, params, public, fraction, criterion, rng, batch_size=None) -> np.ndarray:
    """The keep mask of :func:`public_freeze` / :func:`public_select` at ``params``: the
    ``d - floor(fraction d)`` coordinates with the largest ``|public gradient|`` (``"magnitude"``;
    the whole public split, or a batch of ``batch_size`` public rows drawn from ``rng``), or a
    uniform subset of that size drawn from ``rng`` (``"random"``)."""
    d = layout.n_params
    keep_n = _n_keep(fraction, d)
    if criterion == "random":
        keep = np.zeros(d, dtype=bool)
        keep[rng.choice(d, size=keep_n, replace=False)] = True
        return keep
    g = public_gradient(model, params, public, rng, batch_size)
    return top_k_mask(g, keep_n, layout, False)


def _choose(ctx, criterion, fraction, params, batch_size):
    return selection_mask(ctx.layout, ctx.model, params, ctx.public, fraction, criterion, ctx.rng, batch_size)


def _validate(fraction, criterion, public_batch_size):
    fraction = check_real("fraction", fraction, low=0.0, high=1.0, high_open=True)
    criterion = check_choice("criterion", criterion, CRITERIA)
    if public_batch_size is not None:
        public_batch_size = check_int("public_batch_size", public_batch_size, low=1)
    return fraction, criterion, public_batch_size


def public_freeze(fraction, criterion: str = "magnitude", *, public_batch_size=None) -> Transform:
    """Freeze a fixed ``fraction`` of the coordinates, chosen once at ``init``.

    Parameters
    ----------
    fraction : float in [0, 1)
        Fraction of coordinates frozen for the whole run.
    criterion : "magnitude" (largest ``|public gradient|`` kept; needs a public split) or "random"
    public_batch_size : None or int >= 1
        Public examples used for the gradient (None = the whole public split).
    """
    fraction, criterion, pbs = _validate(fraction, criterion, public_batch_size)

    def init(ctx):
        if criterion == "magnitude":
            require_public_split(ctx, "public_freeze(criterion='magnitude')")
        return {"keep": _choose(ctx, criterion, fraction, ctx.params, pbs)}

    def update(ctx, state, work):
        work.restrict(state["keep"], "kept")
        return state

    reads = "public" if criterion == "magnitude" else "none"
    return Transform(f"public_freeze[{criterion}]", Effect("pre_clip", "kept", reads), init, update,
                     frozen=lambda s: ~s["keep"], info={"fraction": fraction})


def public_select(fraction, criterion: str = "magnitude", *, public_batch_size=None) -> Transform:
    """Each step, update only ``d - floor(fraction d)`` coordinates chosen from public data or at random.

    The magnitude criterion uses the public gradient at the current parameters ``ctx.params``
    (released DP iterate: post-processing) on the whole public split or a random public batch.
    Parameters as in :func:`public_freeze`.
    """
    fraction, criterion, pbs = _validate(fraction, criterion, public_batch_size)

    def init(ctx):
        if criterion == "magnitude":
            require_public_split(ctx, "public_select(criterion='magnitude')")
        return {"keep": None}

    def update(ctx, state, work):
        keep = _choose(ctx, criterion, fraction, ctx.params, pbs)
        work.restrict(keep, "kept")
        return {"keep": keep}

    reads = "public" if criterion == "magnitude" else "none"
    return Transform(f"public_select[{criterion}]", Effect("pre_clip", "kept", reads), init, update,
                     frozen=lambda s: None if s["keep"] is None else ~s["keep"], info={"fraction": fraction})
