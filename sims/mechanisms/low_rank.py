"""Low-rank (PowerSGD-style) compression of each weight matrix's update (Lin, arXiv 2211.00734).

For each layer's weight block ``M`` (out x in) and a warm-started ``Q`` (in x r), one power
iteration (Vogels, Karimireddy & Jaggi 2019, PowerSGD Alg. 1): ``P = orth(M Q)``,
``Q <- M^T P``, ``M_hat = P Q^T``. Biases are passed through uncompressed. ``Q`` starts from
data-independent Gaussian draws; if ``M^T P`` is exactly 0 the old ``Q`` is kept.

Orders:
``noise_then_compress``  compress the released noisy update: post-processing, private (the
                         warm-started basis only ever sees noised updates).
``compress_then_noise``  compress the CLEAN clipped sum, then add noise: the basis is a function of
                         private un-noised data, so the released update is not covered by the
                         Gaussian mechanism's analysis. Refused unless ``allow_non_private``.
"""
from __future__ import annotations

import numpy as np

from dptheory.validation import check_choice, check_int

from .base import Effect, Transform

__all__ = ["low_rank", "power_compress"]


def power_compress(x: np.ndarray, Qs: list, layout) -> tuple:
    """Rank-r approximation of every weight block of ``x`` by one warm-started power iteration.

    Returns ``(y, new_Qs)``; ``x`` is not modified.
    """
    y = x.copy()
    out_Qs = []
    for l, Q in enumerate(Qs):
        ws = layout.weight_slice(l)
        M = x[ws].reshape(layout.sizes[l + 1], layout.sizes[l])
        P, _ = np.linalg.qr(M @ Q)
        Qn = M.T @ P
        y[ws] = (P @ Qn.T).ravel()
        out_Qs.append(Qn if np.any(Qn) else Q)
    return y, out_Qs


def low_rank(rank, order: str = "noise_then_compress") -> Transform:
    """PowerSGD-style rank-``rank`` compression of each weight matrix (see the module docstring).

    Parameters
    ----------
    rank : int >= 1 (capped at ``min(out, in)`` per layer)
    order : "noise_then_compress" or "compress_then_noise"
    """
    rank = check_int("rank", rank, low=1)
    order = check_choice("order", order, ("noise_then_compress", "compress_then_noise"))

    def init(ctx):
        lay = ctx.layout
        dt = np.asarray(ctx.params).dtype
        return {"Q": [ctx.rng.standard_normal((lay.sizes[l], min(rank, lay.sizes[l], lay.sizes[l + 1]))).astype(dt)
                      for l in range(lay.n_layers)]}

    def compress(ctx, state, x):
        y, Qs = power_compress(x, state["Q"], ctx.layout)
        return y, {"Q": Qs}

    def update(ctx, state, work):
        if order == "noise_then_compress":
            y, state = compress(ctx, state, work.update)
            work.release(y)
        else:  # a data-dependent basis: declared with an unbounded sensitivity factor (refused)
            y, state = compress(ctx, state, work.clipped_sum)
            work.replace_sum(y)
        return state

    if order == "noise_then_compress":
        eff = Effect("post_noise", "all", "noised")
    else:
        eff = Effect("post_clip", "all", "private", sensitivity_factor=float("inf"))
    return Transform(f"low_rank[{order}]", eff, init, update, compress=compress, info={"rank": rank})
