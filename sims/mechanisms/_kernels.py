"""Fused noise-and-release kernel of the Gaussian noise stage, with its plain-NumPy reference.

The noise stage of DP-SGD releases ``u_c = (s_c + std z_j) * f`` on the coordinates ``c = idx[j]``
that receive noise (all ``d`` coordinates, or the kept ones of a sparse update), with
``f = scale / B`` and ``z = sims.noise.standard_normal(k, seed, dtype)`` (Abadi et al. 2016,
Alg. 1; noise on the kept coordinates only as in Zhu & Blaschko, arXiv 2112.00845). Unfused this
is a gather, a length-k normal draw, an axpy, a scale and a scatter (four temporaries); the kernel
does it in one O(k) pass, and also returns ``sum_j s_c^2`` and ``sum_j z_j^2`` (float64) for the
noise-to-signal metrics.

Each ``z_j`` is the counter-based normal ``j`` of ``sims.rng`` (key ``key_from_seed(seed,
DOMAIN_NORMAL)``; float32 element ``j`` uses half ``j & 1`` of word ``j >> 1``), so the values do
not depend on the thread count; the metric sums are reduced per fixed chunk of 8192 elements and
then in chunk order, so they do not either.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

from sims import rng as _r
from sims.noise import standard_normal, step_kernel_threads

__all__ = ["noisy_release"]  # noisy_release_reference: the plain-NumPy twin the tests compare with

_CHUNK = 8192            # even, so a float32 word's two halves never straddle two chunks
_PARALLEL_MIN = 1 << 15  # below this one thread beats waking the pool (values never depend on it)


@numba.njit(inline="always", cache=True)
def _range64(s, idx, dense, compact, out, key, std, fac, start, stop, zx, zr):
    """float64 elements ``start <= j < stop``; returns (sum s_c^2, sum z_j^2). ``compact``: the
    signal of coordinate ``idx[j]`` is ``s[j]`` (a kept-only vector), else ``s[idx[j]]``."""
    sig = 0.0
    nz = 0.0
    for j in range(start, stop):
        c = j if dense else idx[j]
        z = _r.normal64(key, j, zx, zr)
        v = s[j] if compact else s[c]
        out[c] = (v + std * z) * fac
        sig += v * v
        nz += z * z
    return sig, nz


@numba.njit(inline="always", cache=True)
def _range32(s, idx, dense, compact, out, key, std, fac, start, stop, zx32, zr32, zx, zr):
    """float32 elements ``start <= j < stop`` (``start`` even); float64 sums."""
    sig = 0.0
    nz = 0.0
    for p in range(start >> 1, (stop + 1) >> 1):
        w = _r.word(key, p)
        for half in range(2):
            j = 2 * p + half
            if j >= stop:
                break
            h = (w >> np.uint64(32)) if half else (w & np.uint64(0xFFFFFFFF))
            z = _r.normal32_from_half(key, j, h, zx32, zr32, zx, zr)
            c = j if dense else idx[j]
            v = s[j] if compact else s[c]
            out[c] = (v + std * z) * fac
            sig += np.float64(v) * np.float64(v)
            nz += np.float64(z) * np.float64(z)
    return sig, nz


@numba.njit(parallel=True, cache=True)
def _release64_parallel(s, idx, dense, compact, n, out, seed, std, fac, zx, zr, acc):
    key = _r.key_from_seed(seed, _r.DOMAIN_NORMAL)
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        acc[c, 0], acc[c, 1] = _range64(s, idx, dense, compact, out, key, std, fac, c * _CHUNK,
                                        min(n, (c + 1) * _CHUNK), zx, zr)


@numba.njit(parallel=True, cache=True)
def _release32_parallel(s, idx, dense, compact, n, out, seed, std, fac, zx32, zr32, zx, zr, acc):
    key = _r.key_from_seed(seed, _r.DOMAIN_NORMAL)
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        acc[c, 0], acc[c, 1] = _range32(s, idx, dense, compact, out, key, std, fac, c * _CHUNK,
                                        min(n, (c + 1) * _CHUNK), zx32, zr32, zx, zr)


_EMPTY_IDX = np.zeros(0, dtype=np.int64)


def noisy_release(s: np.ndarray, idx, std: float, factor: float, seed: int, *, size=None):
    """Fused ``u[c] = (s[c] + std z_j) * factor`` for ``c = idx[j]`` (or every ``c`` when ``idx is None``).

    With ``size`` (an int, ``idx`` given) ``s`` is COMPACT: a vector of length ``len(idx)`` whose
    entry ``j`` is the signal of coordinate ``idx[j]`` (the kept-only clipped sum of the sparse
    clip path), and ``u`` has length ``size``: ``u[idx[j]] = (s[j] + std z_j) * factor``.

    Internal fast path of :func:`sims.mechanisms.gaussian_noise` (arguments are trusted: the stage
    has validated them). ``s`` is a C-contiguous float32/float64 vector of length d; ``idx`` is None
    or a sorted int64 array of distinct coordinates; the returned ``u`` has ``s``'s dtype and is 0
    off ``idx``. ``std`` and ``factor`` are rounded to that dtype first, and each element is
    computed in it as ``(s_c + std z_j) * factor``, exactly as :func:`noisy_release_reference`.

    Returns
    -------
    u : ndarray (d,)
    signal_sq : float
        ``sum_j s_c^2`` (float64 accumulation).
    z_sq : float
        ``sum_j z_j^2`` (float64 accumulation).
    """
    dt = s.dtype
    compact = size is not None
    d = int(size) if compact else s.shape[0]
    if idx is None:
        n, dense, ix, out = d, True, _EMPTY_IDX, np.empty(d, dtype=dt)
    else:
        n, dense, ix, out = idx.shape[0], False, idx, np.zeros(d, dtype=dt)
    if n == 0:
        return out, 0.0, 0.0
    seed = np.uint64(seed)  # the kernel derives key_from_seed(seed, DOMAIN_NORMAL) itself
    acc = np.empty(((n + _CHUNK - 1) // _CHUNK, 2))
    std_t, fac_t = dt.type(std), dt.type(factor)
    # Small n, or BLAS threads spinning after the step's GEMMs (sims.noise.blas_spins): one thread.
    # The parallel kernel is used either way: Numba compiles it ~5x faster per element than the
    # same loop without prange here.
    with step_kernel_threads(n, _PARALLEL_MIN):
        if dt == np.float64:
            _release64_parallel(s, ix, dense, compact, n, out, seed, std_t, fac_t, _r.ZIG_X, _r.ZIG_R, acc)
        else:
            _release32_parallel(s, ix, dense, compact, n, out, seed, std_t, fac_t, _r._ZX32, _r._ZR32,
                                _r.ZIG_X, _r.ZIG_R, acc)
    if acc.shape[0] == 1:  # one chunk (n <= 8192): its sums as they are (what acc.sum(axis=0) gives)
        return out, float(acc[0, 0]), float(acc[0, 1])
    tot = acc.sum(axis=0)
    return out, float(tot[0]), float(tot[1])


def noisy_release_reference(s: np.ndarray, idx, std: float, factor: float, seed: int, *, size=None):
    """Plain-NumPy twin of :func:`noisy_release`: gather, ``sims.noise.standard_normal``, axpy, scatter."""
    dt = s.dtype
    d = s.shape[0] if size is None else int(size)
    ix = np.arange(d) if idx is None else np.asarray(idx)
    z = standard_normal(ix.shape[0], seed, dtype=dt)
    v = s[ix] if size is None else s
    out = np.zeros(d, dtype=dt)
    out[ix] = (v + dt.type(std) * z) * dt.type(factor)
    v64, z64 = v.astype(np.float64), z.astype(np.float64)
    return out, float(np.dot(v64, v64)), float(np.dot(z64, z64))

