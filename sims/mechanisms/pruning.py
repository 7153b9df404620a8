"""Magnitude pruning (Watson et al., arXiv 2311.06839): pruned coordinates get no update and no noise.

Mask: keep the ``d - floor(fraction d)`` coordinates with the largest ``|w|`` (global over the flat
vector, biases included) of

``init``     the initial weights (data-independent);
``public``   weights pre-trained non-privately on the public split (``public_epochs`` epochs of
             mini-batch SGD from the initial weights; reads public data only);
``current``  the current DP iterate ``ctx.params`` (post-processing of released weights),
             recomputed every ``every`` steps (``every=None``: once, at the first step).

Applied before clipping (mask-then-clip) with noise only on kept coordinates: the accounting of
dense DP-SGD (docs/sources.md §S2 [I]; docs/theory.md §1.6). The chain only stops updates of pruned
coordinates; setting their weights to 0 is the training loop's choice (``chain.frozen_mask``).
"""
from __future__ import annotations


import numpy as np

from dptheory.validation import check_choice, check_int, check_real
from dptheory.noise_signal import n_frozen
from sims.models.pergrad import weighted_sum

from ._util import top_k_mask
from .base import Effect, Transform
from .public_selection import require_public_split

__all__ = ["magnitude_prune", "magnitude_mask", "mask_due", "pretrain_public", "SOURCES_"]

SOURCES_ = ("init", "public", "current")


def magnitude_mask(w, fraction, layout) -> np.ndarray:
    """Bool mask keeping the ``d - floor(fraction d)`` largest ``|w|`` (global)."""
    d = layout.n_params
    return top_k_mask(np.asarray(w), d - int(n_frozen(fraction, d)), layout, False)


def pretrain_public(model, params, public, *, epochs, lr, batch_size, rng) -> np.ndarray:
    """Plain (non-private) mini-batch SGD on the public split: ``w <- w - lr * mean grad``.

    ``public`` is a :class:`sims.data.PublicSplit`."""
    from sims.models.dense import backprop

    X, y = public.X, public.y
    w = np.array(params, copy=True)
    n = len(X)
    for _ in range(epochs):
        order = rng.permutation(n)
        for s in range(0, n, batch_size):
            idx = order[s:s + batch_size]
            bp = backprop(model, w, X[idx], y[idx])
            w -= w.dtype.type(lr) * weighted_sum(bp, np.full(len(idx), 1.0 / len(idx), dtype=w.dtype))
    return w


def mask_due(step: int, last: int, every) -> bool:
    """Whether ``magnitude_prune(source="current", every=...)`` recomputes its mask at ``step``:
    ``every`` steps or more after the step ``last`` of the previous mask (never for ``every=None``).
    One rule for :func:`magnitude_prune` and the stacked engine."""
    return every is not None and step - last >= every


def magnitude_prune(fraction, source: str = "init", *, every=None, public_epochs: int = 3,
                    public_lr: float = 0.1, public_batch_size: int = 64) -> Transform:
    """Prune the smallest-magnitude ``fraction`` of the weights (see the module docstring).

    Parameters
    ----------
    fraction : float in [0, 1)
    source : "init", "public" or "current"
    every : None or int >= 1 (only with ``source="current"``)
    public_epochs, public_lr, public_batch_size : pre-training on the public split (``source="public"``)
    """
    fraction = check_real("fraction", fraction, low=0.0, high=1.0, high_open=True)
    source = check_choice("source", source, SOURCES_)
    if every is not None:
        every = check_int("every", every, low=1)
        if source != "current":
            raise ValueError(f"every must be None unless source='current' (got every={every}, source={source!r})")
    public_epochs = check_int("public_epochs", public_epochs, low=1)
    public_lr = check_real("public_lr", public_lr, low=0.0, low_open=True)
    public_batch_size = check_int("public_batch_size", public_batch_size, low=1)

    def init(ctx):
        if source == "public":
            require_public_split(ctx, "magnitude_prune(source='public')")
            w = pretrain_public(ctx.model, ctx.params, ctx.public, epochs=public_epochs, lr=public_lr,
                                batch_size=public_batch_size, rng=ctx.rng)
        else:
            w = ctx.params
        return {"keep": magnitude_mask(w, fraction, ctx.layout), "last": 0}

    def update(ctx, state, work):
        if source == "current" and mask_due(ctx.step, state["last"], every):
            state = {"keep": magnitude_mask(ctx.params, fraction, work.layout), "last": ctx.step}
        work.restrict(state["keep"], "kept")
        return state

    reads = {"init": "none", "public": "public", "current": "noised"}[source]
    return Transform(f"magnitude_prune[{source}]", Effect("pre_clip", "kept", reads), init, update,
                     frozen=lambda s: ~s["keep"], info={"fraction": fraction})
