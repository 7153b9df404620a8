"""Numba kernels of the stacked DP-SGD step (one thread per run), each with a plain-NumPy twin.

* :func:`gather_batches`: the Poisson batches of R runs as zero-padded ``(R, B_max, d_in)`` inputs
  with a 0/1 row-validity mask (variable batch sizes, never resampled to a fixed size);
* :func:`noisy_releases`: the Gaussian release of DP-SGD (Abadi et al. 2016, Alg. 1) for R runs,
  ``u_c = (s_c + std_r z_j) f_r`` on the noised coordinates ``c`` (the ``j``-th noised coordinate
  gets the ``j``-th normal of the run's stream), 0 elsewhere, with
  ``z = sims.noise.standard_normal(k, seed_r)`` (key ``key_from_seed(seed_r, DOMAIN_NORMAL)``,
  counter-based ziggurat of :mod:`sims.rng`): the numbers of
  :func:`sims.mechanisms.gaussian_noise`'s fused pass;
* :func:`top_k_rows`: top-k (by magnitude) of each run's released update, the rest zeroed, and the
  captured energy ``phi = ||top_k(u)||^2 / ||u||^2`` (Stich, Cordonnier & Jaggi 2018);
* :func:`convex_clipped_sums`: the clipped gradient sums of linear and logistic regression straight
  from the batch indices (no gathered batch, no GEMM), the per-example norm by the norm trick.

float64 only (the stacked engine refuses float32 models).
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

from sims import rng as _r
from sims.noise import standard_normal

__all__ = ["gather_batches", "gather_batches_reference", "noisy_releases", "noisy_releases_reference",
           "top_k_rows", "top_k_rows_reference", "norm_quantiles", "norm_quantiles_reference", "convex_clipped_sums",
           "CONVEX_HEADS"]


@numba.njit(parallel=True, cache=True)
def _gather_kernel(X, y, idx, counts, xb, yb, valid):
    for r in prange(idx.shape[0]):
        k = counts[r]
        for i in range(xb.shape[1]):
            if i < k:
                xb[r, i, :] = X[idx[r, i], :]
                yb[r, i] = y[idx[r, i]]
                valid[r, i] = 1.0
            else:
                xb[r, i, :] = 0.0
                yb[r, i] = 0
                valid[r, i] = 0.0


def gather_batches(X: np.ndarray, y: np.ndarray, idx: np.ndarray, counts: np.ndarray, rows: int | None = None):
    """``(xb, yb, valid)``: ``xb[r, i] = X[idx[r, i]]`` for ``i < counts[r]``, zero rows after, up to
    ``rows`` (default ``B_max = max(counts)``); ``yb`` likewise (0 in the padding); ``valid[r, i] = 1.0``
    iff ``i < counts[r]``.

    ``X`` C-contiguous float64 ``(n, d_in)``, ``y`` float64 or int64 ``(n,)``, ``idx`` ``(R, >= max(counts))``
    int64, ``rows >= max(counts)``. Reference: :func:`gather_batches_reference`.
    """
    R = idx.shape[0]
    bmax = _rows(counts, rows)
    xb = np.empty((R, bmax, X.shape[1]), dtype=X.dtype)
    yb = np.empty((R, bmax), dtype=y.dtype)
    valid = np.empty((R, bmax), dtype=X.dtype)
    _gather_kernel(X, y, idx, counts, xb, yb, valid)
    return xb, yb, valid


def _rows(counts, rows) -> int:
    top = int(counts.max()) if counts.shape[0] else 0
    if rows is None:
        return top
    if rows < top:
        raise ValueError(f"rows must be >= max(counts) = {top}, got {rows}")
    return int(rows)


def gather_batches_reference(X, y, idx, counts, rows=None):
    """Plain-NumPy twin of :func:`gather_batches`."""
    R = idx.shape[0]
    bmax = _rows(counts, rows)
    xb = np.zeros((R, bmax, X.shape[1]), dtype=X.dtype)
    yb = np.zeros((R, bmax), dtype=y.dtype)
    valid = np.zeros((R, bmax), dtype=X.dtype)
    for r in range(R):
        k = int(counts[r])
        xb[r, :k] = X[idx[r, :k]]
        yb[r, :k] = y[idx[r, :k]]
        valid[r, :k] = 1.0
    return xb, yb, valid


@numba.njit(parallel=True, cache=True)
def _release_kernel(s, keep, masked, seeds, std, fac, out, sums, zx, zr):
    d = s.shape[1]
    for r in prange(s.shape[0]):
        key = _r.key_from_seed(seeds[r], _r.DOMAIN_NORMAL)
        sig = 0.0
        nz = 0.0
        j = 0
        for c in range(d):
            if masked and not keep[r, c]:
                out[r, c] = 0.0
                continue
            z = _r.normal64(key, j, zx, zr)
            v = s[r, c]
            out[r, c] = (v + std[r] * z) * fac[r]
            sig += v * v
            nz += z * z
            j += 1
        sums[r, 0] = sig
        sums[r, 1] = nz


_NO_MASK = np.ones((1, 1), dtype=np.bool_)


def noisy_releases(s: np.ndarray, keep, seeds: np.ndarray, std: np.ndarray, fac: np.ndarray):
    """Gaussian releases of R runs: ``(u (R, d), signal_sq (R,), z_sq (R,))``.

    ``u[r, c] = (s[r, c] + std[r] z_{r, j(c)}) fac[r]`` where ``j(c)`` is the rank of ``c`` among
    the kept coordinates of run ``r`` (``keep`` a bool ``(R, d)`` array, or None for all ``d``) and
    ``z_r = sims.noise.standard_normal(k_r, seeds[r])``; ``u = 0`` off ``keep``.
    ``signal_sq[r] = sum_kept s^2`` and ``z_sq[r] = sum_j z^2`` (float64, in coordinate order).
    Reference: :func:`noisy_releases_reference`.
    """
    R, d = s.shape
    out = np.empty((R, d), dtype=np.float64)
    sums = np.empty((R, 2), dtype=np.float64)
    masked = keep is not None
    _release_kernel(np.ascontiguousarray(s), _NO_MASK if keep is None else np.ascontiguousarray(keep), masked,
                    np.ascontiguousarray(seeds, dtype=np.uint64), np.ascontiguousarray(std, dtype=np.float64),
                    np.ascontiguousarray(fac, dtype=np.float64), out, sums, _r.ZIG_X, _r.ZIG_R)
    return out, sums[:, 0], sums[:, 1]


def noisy_releases_reference(s, keep, seeds, std, fac):
    """Plain-NumPy twin of :func:`noisy_releases` (``sims.noise.standard_normal`` per run)."""
    R, d = s.shape
    out = np.zeros((R, d))
    sig, nz = np.empty(R), np.empty(R)
    for r in range(R):
        ix = np.arange(d) if keep is None else np.flatnonzero(keep[r])
        z = standard_normal(ix.shape[0], int(seeds[r]))
        out[r, ix] = (s[r, ix] + std[r] * z) * fac[r]
        sig[r], nz[r] = float(np.dot(s[r, ix], s[r, ix])), float(np.dot(z, z))
    return out, sig, nz


@numba.njit(parallel=True, cache=True)
def _top_k_kernel(u, k, phi):
    d = u.shape[1]
    for r in prange(u.shape[0]):
        a = np.abs(u[r])
        for c in range(d):
            if np.isnan(a[c]):
                a[c] = np.inf  # kept as the largest: a non-finite update stays visible (top_k_mask's rule)
        kr = k[r]
        total = 0.0
        for c in range(d):
            total += u[r, c] * u[r, c]
        if kr >= d:
            phi[r] = 1.0
            continue
        thr = np.partition(a, d - kr)[d - kr]
        ties = kr
        for c in range(d):
            if a[c] > thr:
                ties -= 1
        kept = 0.0
        for c in range(d):
            if a[c] > thr or (a[c] == thr and ties > 0):
                if a[c] == thr:
                    ties -= 1
                kept += u[r, c] * u[r, c]
            else:
                u[r, c] = 0.0
        phi[r] = kept / total if total > 0 else 1.0


def top_k_rows(u: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Keep the ``k[r]`` largest ``|u[r, c]|`` of each row IN PLACE (the rest set to 0); returns ``phi``.

    ``phi[r] = ||top_k(u_r)||^2 / ||u_r||^2`` (1.0 when ``u_r = 0``), the metric of
    :func:`sims.mechanisms.top_k`. The kept set has exactly ``k`` coordinates: ``{c : |u_c| > t_r}``
    with ``t_r`` the ``k``-th largest magnitude, then the lowest-index ``c`` with ``|u_c| = t_r``
    (the tie rule of :func:`sims.mechanisms._util.top_k_mask`). Reference: :func:`top_k_rows_reference`.
    """
    phi = np.empty(u.shape[0], dtype=np.float64)
    _top_k_kernel(u, np.ascontiguousarray(k, dtype=np.int64), phi)
    return phi


def top_k_rows_reference(u, k):
    """Plain-NumPy twin of :func:`top_k_rows` (a stable sort by decreasing magnitude per row)."""
    phi = np.empty(u.shape[0])
    d = u.shape[1]
    for r in range(u.shape[0]):
        total = float(np.dot(u[r], u[r]))
        keep = np.zeros(d, dtype=bool)
        mag = np.abs(u[r])
        mag[np.isnan(mag)] = np.inf
        keep[np.argsort(-mag, kind="stable")[:int(k[r])]] = True
        phi[r] = float(np.dot(u[r, keep], u[r, keep])) / total if total > 0 else 1.0
        u[r, ~keep] = 0.0
    return phi


_QS = (0.1, 0.5, 0.9)


@numba.njit(parallel=True, cache=True)
def _quantile_kernel(norms, counts, qs, out):
    for r in prange(norms.shape[0]):
        n = counts[r]
        if n == 0:
            for j in range(qs.shape[0]):
                out[r, j] = 0.0
            continue
        x = np.sort(norms[r, :n])
        for j in range(qs.shape[0]):
            v = (n - 1) * qs[j]
            lo = int(np.floor(v))
            if v >= n - 1:
                out[r, j] = x[n - 1]
                continue
            a, b = x[lo], x[lo + 1]
            g = v - lo
            diff = b - a
            out[r, j] = b - diff * (1 - g) if g >= 0.5 else a + diff * g


def norm_quantiles(norms: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``(R, 3)`` quantiles 0.1, 0.5, 0.9 of each run's per-example norms ``norms[r, :counts[r]]``
    (NumPy's default linear method, Hyndman & Fan 1996 def. 7, as
    :func:`sims.mechanisms._util`'s metric; 0.0 for an empty batch).
    Reference: :func:`norm_quantiles_reference`."""
    out = np.empty((norms.shape[0], len(_QS)))
    _quantile_kernel(np.ascontiguousarray(norms), np.ascontiguousarray(counts, dtype=np.int64),
                     np.array(_QS), out)
    return out


def norm_quantiles_reference(norms, counts):
    """Plain-NumPy twin of :func:`norm_quantiles`: ``np.quantile`` per run."""
    return np.array([np.quantile(norms[r, :int(c)], _QS) if c else np.zeros(len(_QS))
                     for r, c in enumerate(counts)])


# ----------------------------------------------------------------------------- single-output linear models
#: the heads :func:`convex_clipped_sums` runs (linear and logistic regression)
CONVEX_HEADS = {"logistic": 0, "squared": 1}


@numba.njit(inline="always", cache=True)
def _residual(z, yi, head):
    """``dl/dz``: ``sigmoid(z) - y`` (logistic, computed without overflow) or ``z - y`` (squared)."""
    if head == 1:
        return z - yi
    if z >= 0:
        return 1.0 / (1.0 + np.exp(-z)) - yi
    e = np.exp(z)
    return e / (1.0 + e) - yi


@numba.njit(parallel=True, cache=True)
def _convex_kernel(X, sqx, y, idx, counts, P, C, keep, masked, bias, head, S, norms, nclip):
    din = X.shape[1]
    d = P.shape[1]
    for r in prange(idx.shape[0]):
        for j in range(d):
            S[r, j] = 0.0
        kb = 1.0 if (bias and (not masked or keep[r, din])) else 0.0
        nc = 0
        for t in range(counts[r]):
            i = idx[r, t]
            z = P[r, din] if bias else 0.0
            mx = 0.0
            for j in range(din):
                z += P[r, j] * X[i, j]
                if masked and keep[r, j]:
                    mx += X[i, j] * X[i, j]
            res = _residual(z, y[i], head)
            base = (mx if masked else sqx[i]) + kb
            n = np.sqrt(res * res * base)
            f = 1.0
            if n > C[r]:
                f = C[r] / n
                nc += 1
            norms[r, t] = n
            coef = f * res
            for j in range(din):
                S[r, j] += coef * X[i, j]
            if bias:
                S[r, din] += coef
        nclip[r] = nc


def convex_clipped_sums(X, sqx, y, idx, counts, P, C, keep, *, bias: bool, head: str):
    """Clipped per-example gradient sums of R single-output linear models, straight from the batch indices.

    For ``z_i = w.x_i + b`` the per-example gradient is ``g_i = r_i [x_i, 1]`` with the residual
    ``r_i = dl/dz`` (``sigmoid(z_i) - y_i`` logistic, ``z_i - y_i`` squared), so
    ``||m * g_i||^2 = r_i^2 (sum_j m_j x_ij^2 + m_b)`` (``||x_i||^2 + 1`` unmasked: ``sqx``) and
    ``S_r = sum_i min(1, C_r / ||m * g_i||) g_i`` (Abadi et al. 2016, Alg. 1; the mask ``m`` is
    applied to ``S`` by the caller). One thread per run, each run's examples in batch order, so a
    run's sums do not depend on the runs stacked with it. Returns ``(S (R, d), n_clipped (R,),
    norms (R, max(1, max counts)))``. Reference: the engine's ``backprop_stacked`` +
    ``masked_sq_norms_stacked`` + ``weighted_sum_stacked`` (``tests/test_stacked.py``).
    """
    R, d = P.shape
    width = max(1, int(counts.max()) if R else 1)
    S = np.empty((R, d))
    norms = np.zeros((R, width))
    nclip = np.empty(R, dtype=np.int64)
    masked = keep is not None
    _convex_kernel(X, sqx, np.ascontiguousarray(y, dtype=np.float64), idx, counts, np.ascontiguousarray(P),
                   np.ascontiguousarray(C, dtype=np.float64), _NO_MASK if keep is None else np.ascontiguousarray(keep),
                   masked, bool(bias), CONVEX_HEADS[head], S, norms, nclip)
    return S, nclip, norms
