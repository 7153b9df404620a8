"""Top-k sparsification in three variants with different privacy semantics (docs/theory.md §1.6).

``noisy``        top-k of the released noisy update (post-processing; noise on all d): private.
``per_example``  each example keeps its own top-k ``|g_i|`` before clipping, then clip, sum, and
                 noise on ALL d coordinates: private (each clipped contribution still has norm
                 <= C; the support is hidden by dense noise). Needs materialised per-example
                 gradients: done in chunks of ``chunk_size`` examples (memory ``chunk_size * d``).
``clean``        top-k of the clean clipped sum with noise only on its support: NOT private (the
                 support is a function of private un-noised data); refused unless
                 ``allow_non_private``.

``k`` is global (of d) or per layer (``layerwise``). Exactly k are kept: magnitudes above the k-th
largest, then the lowest indices among ties (``_util.top_k_mask``; ``per_example`` rows by
``np.argpartition``, whose choice among tied magnitudes is arbitrary). Reported
``phi`` = captured energy fraction ``||top_k(x)||^2 / ||x||^2`` (mean over examples for
``per_example``; 1.0 when ``x = 0``). Top-k is a contraction: ``||x - top_k x||^2 <= (1 - k/d)||x||^2``
(Stich, Cordonnier & Jaggi 2018, Def. 2.1).
"""
from __future__ import annotations

from dptheory.validation import check_choice, check_int

import numpy as np

from ._util import blocks, check_k, sq, top_k_mask
from .base import Effect, PerExampleMap, Transform

__all__ = ["top_k", "MODES"]

MODES = ("noisy", "per_example", "clean")


def _phi(x, keep) -> float:
    total = sq(x)
    return sq(x[keep]) / total if total > 0 else 1.0


def top_k(k, mode: str = "noisy", *, layerwise: bool = False, chunk_size: int = 64) -> Transform:
    """Keep the ``k`` largest-magnitude coordinates (see the module docstring for the modes).

    Parameters
    ----------
    k : int in [1, d] (per layer: ``[1, smallest layer size]``; checked at ``init``)
    mode : "noisy", "per_example" or "clean"
    layerwise : bool
    chunk_size : int >= 1
        Examples materialised at once in the ``per_example`` mode.
    """
    k = check_int("k", k, low=1)
    mode = check_choice("mode", mode, MODES)
    layerwise = bool(layerwise)
    chunk_size = check_int("chunk_size", chunk_size, low=1)

    def init(ctx):
        check_k("k", k, ctx.layout, layerwise)
        return ()

    if mode == "noisy":
        def update(ctx, state, work):
            u = work.update
            keep = top_k_mask(u, k, work.layout, layerwise)
            work.report(phi=_phi(u, keep))
            work.restrict(keep, "all")  # zeroes the released update outside keep
            return state

        def compress(ctx, state, x):
            keep = top_k_mask(x, k, ctx.layout, layerwise)
            y = x.copy()
            y[~keep] = 0
            return y, state

        return Transform("top_k[noisy]", Effect("post_noise", "all", "noised"), init, update,
                         compress=compress, info={"k": k})
    if mode == "per_example":
        def rows(G, layout):  # each row keeps its own top-k |g| (per block): a row-wise map
            S = np.zeros_like(G)
            for sl in blocks(layout, layerwise):
                seg = G[:, sl]
                n = seg.shape[1]
                if k >= n:
                    S[:, sl] = seg
                    continue
                idx = np.argpartition(np.abs(seg), n - k, axis=1)[:, n - k:]
                np.put_along_axis(S[:, sl], idx, np.take_along_axis(seg, idx, axis=1), axis=1)
            return S

        def keep_state(ctx, state, work):  # the selection is the map, run by the clip stage
            return state

        return Transform("top_k[per_example]", Effect("pre_clip", "all", "per_example"), init, keep_state,
                         per_example=PerExampleMap(rows, chunk_size), info={"k": k})

    def update(ctx, state, work):
        s = work.clipped_sum
        keep = top_k_mask(s, k, work.layout, layerwise)
        work.report(phi=_phi(s, keep))
        work.restrict(keep, "kept")  # zeroes the clipped sum outside keep
        return state

    return Transform("top_k[clean]", Effect("post_clip", "kept", "private"), init, update, info={"k": k})
