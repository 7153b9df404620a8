"""The stacked chains that read each example's gradient, or select from the clipped sum per run.

* :func:`top_k_sums`: per-example top-k before clipping (``top_k(k, mode="per_example")``);
* :func:`vote_sums` and :func:`vote_release`: TopAgg with one example per teacher (Wang et al.
  2021, DataLens; :mod:`sims.mechanisms.topagg`);
* :func:`select_private`: private top-k selection of the clipped sum (one-shot Gumbel top-k,
  Durfee & Rogers 2019; :mod:`sims.mechanisms.private_top_k`).

Each works one run at a time with the functions of the single-run mechanisms themselves (the row
map of the run's chain, ``teacher_votes``, ``gumbel_top_k``), fed from the run's own random
streams, so a run takes the values of its ``train()`` call. A run's per-example gradients are
materialised as a ``rows x d`` block (:func:`sims.stacked.engine.per_example_rows`); the stack
never holds ``R x rows x d``.
"""
from __future__ import annotations

import numpy as np

from . import engine as E
from .kernels import noisy_releases

__all__ = ["top_k_sums", "vote_sums", "vote_release", "select_private"]


def _phi(G, M) -> np.ndarray:
    """Per row ``||m_i||^2 / ||g_i||^2`` (1 for ``g_i = 0``), the ``phi`` metric of the mechanisms."""
    full, kept = np.einsum("ij,ij->i", G, G), np.einsum("ij,ij->i", M, M)
    return np.where(full > 0, kept / np.where(full > 0, full, 1), 1.0)


def top_k_sums(layout, acts, deltas, valid, row_maps, clip_norms):
    """Per-example top-k of one chunk of rows of R' runs: for run ``j``, its rows' gradients ``g_i``,
    the map ``m_i = row_maps[j](g_i)`` (its chain's ``PerExampleMap``), and
    ``S_j = sum_i w_i m_i`` with ``w_i = C_j / max(||m_i||, C_j)`` (Abadi et al. 2016, Alg. 1).

    Returns ``(S (R', d), n_clipped (R',), norms (R', rows), (before, phi_sum))`` with
    ``before_j = sum_i w_i g_i`` (for ``signal_sq_before_mask``) and ``phi_sum_j`` the sum of
    ``||m_i||^2 / ||g_i||^2`` over the real rows, as ``sims.mechanisms.clip_noise``'s per-example path.
    """
    d = layout.n_params
    Rp, rows = valid.shape
    S, before = np.zeros((Rp, d)), np.zeros((Rp, d))
    norms, phi_sum, n_clipped = np.zeros((Rp, rows)), np.zeros(Rp), np.zeros(Rp, dtype=np.int64)
    for j in range(Rp):
        G = E.per_example_rows(layout, acts, deltas, j)
        M = row_maps[j](G, layout)
        phi_sum[j] = float(np.dot(_phi(G, M), valid[j]))
        f, n = E.clip_factors_stacked(np.einsum("ij,ij->i", M, M)[None, :, None], clip_norms[j:j + 1])
        S[j], before[j] = f[0] @ M, f[0] @ G
        norms[j] = n[0]
        n_clipped[j] = np.count_nonzero((n[0] > clip_norms[j]) & (valid[j] > 0))
    return S, n_clipped, norms, (before, phi_sum)


def vote_sums(layout, acts, deltas, valid, ks, rngs, options):
    """TopAgg's votes of one chunk of rows of R' runs: each real row (a teacher) votes ``sign`` (or,
    with ``options["stochastic"]``, the stochastic sign from ``rngs[j]``) on its top-``ks[j]``
    ``|g_i|`` (:func:`sims.mechanisms.topagg.teacher_votes`).

    Returns ``(vote sums (R', d), 0 clipped, teacher gradient norms (R', rows), (None, phi_sum))``.
    """
    from sims.mechanisms.topagg import teacher_votes

    stochastic = options.get("stochastic", False)
    Rp, rows = valid.shape
    V, norms, phi_sum = np.zeros((Rp, layout.n_params)), np.zeros((Rp, rows)), np.zeros(Rp)
    for j in range(Rp):
        n = int(np.count_nonzero(valid[j]))  # a chunk's real rows come first
        if not n:
            continue
        G = E.per_example_rows(layout, acts, deltas, j)[:n]
        votes, phi = teacher_votes(G, int(ks[j]), rngs[j] if stochastic else None, stochastic=stochastic,
                                   coord_clip=options.get("coord_clip"))
        V[j] = votes.sum(axis=0)
        phi_sum[j] = float(phi.sum())
        norms[j, :n] = np.sqrt(np.einsum("ij,ij->i", G, G))
    return V, np.zeros(Rp, dtype=np.int64), norms, (None, phi_sum)


def vote_release(V, phi_sum, seeds, std, expected_batch, options, counts):
    """TopAgg's release: the vote sums ``V`` plus ``N(0, std_r^2)`` on all d coordinates
    (``std_r = sigma_r sqrt(k_r)``), then ``scale * sign`` where ``|noisy vote| > beta B``, else 0.

    Returns ``(u, ||V||^2, ||z||^2, mean phi (1 for an empty batch, the metric's default),
    kept fraction)``.
    """
    R = V.shape[0]
    noisy, sig, nz = noisy_releases(V, None, seeds, std, np.ones(R))
    out = np.where(np.abs(noisy) > options.get("beta", 0.0) * expected_batch, np.sign(noisy), 0.0)
    phi = np.where(counts > 0, phi_sum / np.maximum(counts, 1), 1.0)
    return out * options.get("scale", 1.0), sig, nz, phi, np.count_nonzero(out, axis=1) / out.shape[1]


def select_private(S, ks, clip_norms, rngs, selection_epsilon, keep):
    """Private top-k of each run's clipped sum: ``ks[r]`` of the ``d`` coordinates by one-shot
    Gumbel top-k of ``|S_r|`` at scale ``2 C_r k_r / eps`` (:func:`dptheory.selection.gumbel_scale`)
    from ``rngs[r]`` (:func:`sims.mechanisms.private_top_k.gumbel_top_k`). ``S`` is zeroed outside
    the chosen sets and ``keep (R, d)`` set to them, in place.

    Returns ``(||S_r||^2 before the selection, phi_r, the noise seeds drawn after the Gumbel noise)``.
    """
    from dptheory.selection import gumbel_scale
    from sims.mechanisms.private_top_k import gumbel_top_k
    from sims.rng import derive_seed

    R = S.shape[0]
    before, phi = np.einsum("rd,rd->r", S, S), np.ones(R)
    seeds = np.empty(R, dtype=np.uint64)
    for r, g in enumerate(rngs):
        k = int(ks[r])
        keep[r] = False
        keep[r, gumbel_top_k(np.abs(S[r]), k, gumbel_scale(k, selection_epsilon, float(clip_norms[r])), g)] = True
        S[r, ~keep[r]] = 0.0
        if before[r] > 0:
            phi[r] = float(np.dot(S[r], S[r])) / before[r]
        seeds[r] = derive_seed(g)
    return before, phi, seeds
