"""Fast, reproducible Gaussian noise for DP-SGD updates.

``standard_normal(n, seed)`` returns n i.i.d. N(0, 1) draws that depend only on
``(seed, n, dtype)`` -- not on the number of Numba threads -- because element ``e``
is computed from the counter-based word ``(seed, e)`` (see :mod:`sims.rng`:
SplitMix64 words, Marsaglia-Tsang/Doornik ziggurat). A prefix property also holds:
``standard_normal(m, s)`` equals ``standard_normal(n, s)[:m]`` for m <= n
(float64 always; float32 too, element e uses half ``e & 1`` of word ``e >> 1``).

``gaussian_at(indices, std, seed, out)`` adds N(0, std^2) only at the given
coordinates, at cost O(k) (k = len(indices)): the noise a sparse update needs.

Callers derive the seed from their ``np.random.Generator``:
``seed = int(rng.integers(2**63))``.
"""
from __future__ import annotations

import contextlib
import os

import numba
import numpy as np
from numba import prange

from dptheory.validation import check_choice, check_int, check_real

from . import rng as _r

__all__ = ["standard_normal", "uniform", "gaussian_at", "one_thread_if_small", "step_kernel_threads", "blas_spins"]

_CHUNK = 8192            # elements per parallel work item (values never depend on it)
_PARALLEL_MIN = 1 << 15  # below this one thread is faster than waking the pool


# ----------------------------------------------------------------------------- kernels
@numba.njit(cache=True)
def _fill_normal64_serial(out, key, zx, zr):
    for e in range(out.size):
        out[e] = _r.normal64(key, e, zx, zr)


@numba.njit(parallel=True, cache=True)
def _fill_normal64_parallel(out, key, zx, zr):
    n = out.size
    n_chunks = (n + _CHUNK - 1) // _CHUNK
    for c in prange(n_chunks):
        stop = min(n, (c + 1) * _CHUNK)
        for e in range(c * _CHUNK, stop):
            out[e] = _r.normal64(key, e, zx, zr)


@numba.njit(inline="always", cache=True)
def _normal32_range(out, key, start, stop, zx32, zr32, zx, zr):
    # start is even; each word gives elements 2p (low half) and 2p+1 (high half).
    for p in range(start // 2, (stop + 1) // 2):
        w = _r.word(key, p)
        e = 2 * p
        out[e] = _r.normal32_from_half(key, e, w & np.uint64(0xFFFFFFFF), zx32, zr32, zx, zr)
        if e + 1 < stop:
            out[e + 1] = _r.normal32_from_half(key, e + 1, w >> np.uint64(32), zx32, zr32, zx, zr)


@numba.njit(cache=True)
def _fill_normal32_serial(out, key, zx32, zr32, zx, zr):
    _normal32_range(out, key, 0, out.size, zx32, zr32, zx, zr)


@numba.njit(parallel=True, cache=True)
def _fill_normal32_parallel(out, key, zx32, zr32, zx, zr):
    n = out.size
    n_chunks = (n + _CHUNK - 1) // _CHUNK
    for c in prange(n_chunks):
        _normal32_range(out, key, c * _CHUNK, min(n, (c + 1) * _CHUNK), zx32, zr32, zx, zr)


@numba.njit(parallel=True, cache=True)
def _fill_uniform64(out, key):
    n = out.size
    n_chunks = (n + _CHUNK - 1) // _CHUNK
    for c in prange(n_chunks):
        for e in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
            out[e] = _r.uniform64(_r.word(key, e))


@numba.njit(parallel=True, cache=True)
def _fill_uniform32(out, key):
    n = out.size
    n_chunks = (n + _CHUNK - 1) // _CHUNK
    scale = np.float32(2.0 ** -24)
    for c in prange(n_chunks):
        stop = min(n, (c + 1) * _CHUNK)
        for p in range(c * _CHUNK // 2, (stop + 1) // 2):
            w = _r.word(key, p)
            out[2 * p] = np.float32((w & np.uint64(0xFFFFFFFF)) >> np.uint64(8)) * scale
            if 2 * p + 1 < stop:
                out[2 * p + 1] = np.float32(w >> np.uint64(40)) * scale


@numba.njit(cache=True)
def _scatter_add(out, indices, noise):
    for j in range(indices.size):
        out[indices[j]] += noise[j]


# ----------------------------------------------------------------------------- validation
_DT = {np.float32: np.dtype(np.float32), np.float64: np.dtype(np.float64),
       np.dtype(np.float32): np.dtype(np.float32), np.dtype(np.float64): np.dtype(np.float64)}


def _check_dtype(dtype) -> np.dtype:
    try:  # fast path for the two accepted dtypes (no string round trip)
        return _DT[dtype]
    except (KeyError, TypeError):
        pass
    try:
        name = np.dtype(dtype).name
    except TypeError:
        raise ValueError(f"dtype must be one of ['float32', 'float64'], got {dtype!r}") from None
    check_choice("dtype", name, ("float32", "float64"))
    return np.dtype(name)


def _check_out(out, n: int, dtype: np.dtype) -> np.ndarray:
    if out is None:
        return np.empty(n, dtype=dtype)
    if not isinstance(out, np.ndarray) or out.dtype != dtype or out.shape != (n,):
        raise ValueError(f"out must be a numpy array of shape ({n},) and dtype {dtype.name}, "
                         f"got {type(out).__name__} {getattr(out, 'shape', None)} {getattr(out, 'dtype', None)}")
    if not (out.flags.c_contiguous and out.flags.writeable):
        raise ValueError("out must be a C-contiguous, writeable array")
    return out


# ----------------------------------------------------------------------------- public API
def _prepare(n, seed, dtype, out, domain):
    """Validate the common arguments of the generators and derive the stream key of ``domain``."""
    n = check_int("n", n, low=0)
    seed = _r.check_seed(seed)
    dtype = _check_dtype(dtype)
    out = _check_out(out, n, dtype)
    return n, dtype, out, np.uint64(_r.key_from_seed(np.uint64(seed), domain))


def standard_normal(n, seed, *, dtype=np.float64, out=None) -> np.ndarray:
    """n i.i.d. standard normal draws, a pure function of ``(seed, n, dtype)``.

    Element ``e`` is ``Z(key, e)`` with ``key = key_from_seed(seed, DOMAIN_NORMAL)``:
    a SplitMix64 word of the counter ``e`` (Steele, Lea & Flood 2014) turned into
    N(0, 1) by the 128-strip ziggurat (Marsaglia & Tsang 2000; Doornik 2005); see
    :mod:`sims.rng`. The result is identical for any Numba thread count.

    Parameters
    ----------
    n : int
        Number of draws, ``n >= 0``.
    seed : int
        In ``[0, 2**64 - 1]``; derive it as ``int(rng.integers(2**63))``.
    dtype : {np.float64, np.float32}
        float32 computes the fast path (about 99% of draws) in float32 with 24-bit
        uniforms, two draws per 64-bit word.
    out : ndarray, optional
        Array of shape ``(n,)`` and dtype ``dtype`` (C-contiguous) to fill in place.

    Returns
    -------
    ndarray of shape (n,)

    Raises
    ------
    ValueError
        If ``n`` or ``seed`` is not an integer in range, ``dtype`` is not float32/float64
        or ``out`` has the wrong shape/dtype/layout.
    """
    n, dtype, out, key = _prepare(n, seed, dtype, out, _r.DOMAIN_NORMAL)
    if n == 0:
        return out
    # The chunked (prange) kernels serve every n: Numba compiles their loop body ~6x faster per
    # element than the serial kernels' (18 us vs 3 us for 785 float32 draws). Below _PARALLEL_MIN
    # they run on one thread (waking the pool costs more than the work); values never depend on it.
    with one_thread_if_small(n):
        if dtype == np.float64:
            _fill_normal64_parallel(out, key, _r.ZIG_X, _r.ZIG_R)
        else:
            _fill_normal32_parallel(out, key, _r._ZX32, _r._ZR32, _r.ZIG_X, _r.ZIG_R)
    return out


@contextlib.contextmanager
def one_thread_if_small(n: int, threshold: int | None = None, *, after_blas: bool = False):
    """Run the enclosed Numba parallel kernel on one thread when ``n < threshold`` (default
    ``_PARALLEL_MIN``): for small work, waking the thread pool costs more than the work itself.
    ``after_blas=True`` (a kernel between the BLAS calls of a training step): one thread also
    whenever :func:`blas_spins`. The kernels' values never depend on the thread count, only their
    speed does."""
    threshold = _PARALLEL_MIN if threshold is None else threshold
    serial = n < threshold or (after_blas and blas_spins())
    n_threads = numba.get_num_threads() if serial and numba.config.NUMBA_NUM_THREADS > 1 else 1
    if n_threads > 1:
        numba.set_num_threads(1)
    try:
        yield
    finally:
        if n_threads > 1:
            numba.set_num_threads(n_threads)


def step_kernel_threads(n: int, threshold: int | None = None):
    """:func:`one_thread_if_small` for a kernel inside a DP-SGD step (``after_blas=True``)."""
    return one_thread_if_small(n, threshold, after_blas=True)


_SPINS = []


def blas_spins() -> bool:
    """Whether the loaded BLAS keeps worker threads spinning after each call (decided once).

    OpenBLAS's worker threads busy-wait for ``2**OPENBLAS_THREAD_TIMEOUT`` cycles (default 2**28,
    ~0.1 s) after every multi-threaded GEMM. A Numba parallel kernel launched between two GEMMs
    then waits for a core: measured on 2 cores (``benchmarks/bench_floor.py``), the MLP
    784-256-256-10 step took 3.7x longer with two Numba threads than with one, and the 90 %-frozen
    784-1024-1024-10 step 4x. True unless every BLAS pool has one thread or
    ``OPENBLAS_THREAD_TIMEOUT`` (read by OpenBLAS at load) is at most 8, as the main job sets it.
    """
    if not _SPINS:
        t = os.environ.get("OPENBLAS_THREAD_TIMEOUT", "").strip()
        quiet = t.isdigit() and int(t) <= 8
        if not quiet:
            from threadpoolctl import threadpool_info

            quiet = all(p.get("num_threads", 1) <= 1 for p in threadpool_info() if p.get("user_api") == "blas")
        _SPINS.append(not quiet)
    return _SPINS[0]


def uniform(n, seed, *, dtype=np.float64, out=None) -> np.ndarray:
    """n i.i.d. Uniform[0, 1) draws, a pure function of ``(seed, n, dtype)``.

    float64: ``(w_e >> 11) * 2**-53`` for the SplitMix64 word ``w_e`` of counter ``e``
    (53-bit resolution); float32: bits 8..31 / 40..63 of word ``e >> 1``, times ``2**-24``.
    Uses the key ``key_from_seed(seed, DOMAIN_UNIFORM)``, so it is not correlated with
    :func:`standard_normal` for the same seed. Parameters and errors as :func:`standard_normal`.
    """
    n, dtype, out, key = _prepare(n, seed, dtype, out, _r.DOMAIN_UNIFORM)
    if n == 0:
        return out
    if dtype == np.float64:
        _fill_uniform64(out, key)
    else:
        _fill_uniform32(out, key)
    return out


def gaussian_at(indices, std, seed, out) -> np.ndarray:
    """Add N(0, std^2) noise to ``out`` at the coordinates ``indices``, in O(k).

    ``out[indices[j]] += std * z_j`` with ``z = standard_normal(k, seed, dtype=out.dtype)``
    (k = len(indices)), applied in order, so a repeated index receives independent
    noise once per occurrence (like ``np.add.at``). This is how a sparse DP update
    (random-k, frozen mask) gets its Gaussian noise on the k updated coordinates
    only: the released coordinates have the same distribution as dense noise
    restricted to them (Zhu & Blaschko, arXiv 2112.00845; docs/theory.md §2).

    Parameters
    ----------
    indices : array of int, shape (k,)
        Coordinates in ``[0, out.size - 1]``.
    std : float
        Noise standard deviation, ``std >= 0``.
    seed : int
        In ``[0, 2**64 - 1]``.
    out : ndarray, 1-D, float32 or float64, C-contiguous and writeable
        Modified in place and returned.
    """
    if not isinstance(out, np.ndarray) or out.ndim != 1:
        raise ValueError("out must be a 1-D numpy array")
    dtype = _check_dtype(out.dtype)
    if not (out.flags.c_contiguous and out.flags.writeable):
        raise ValueError("out must be a C-contiguous, writeable array")
    std = check_real("std", std, low=0.0)
    seed = _r.check_seed(seed)
    idx = np.asarray(indices)
    if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
        raise ValueError(f"indices must be a 1-D integer array, got dtype {idx.dtype} shape {idx.shape}")
    if idx.size == 0:
        return out
    if idx.min() < 0 or idx.max() >= out.size:
        raise ValueError(f"indices must be in [0, {out.size - 1}], got values in [{idx.min()}, {idx.max()}]")
    z = standard_normal(idx.size, seed, dtype=dtype)
    z *= dtype.type(std)
    _scatter_add(out, idx.astype(np.int64, copy=False), z)
    return out
