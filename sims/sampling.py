"""Batch samplers for DP-SGD: Poisson subsampling and shuffled fixed-size batches.

Poisson sampling (Abadi et al. 2016, "Deep Learning with Differential Privacy", Sec. 3.1;
Mironov-Talwar-Zhang 2019, Sec. 3.3) includes every example independently with
probability ``q``; the batch size is then ``Binomial(n, q)`` and the privacy analysis of
the subsampled Gaussian mechanism (``dptheory.accounting``) applies.

Shuffled fixed-size batches (one random permutation per epoch, cut into consecutive
batches) are what most data loaders do. The RDP accountant for the Poisson-subsampled
Gaussian does NOT cover them; :func:`sims.train.train` says so in its privacy report.

Randomness: each function consumes exactly the draws documented in its docstring from
the ``numpy.random.Generator`` it is given, so a reference implementation can replay it.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from dptheory.validation import check_int, check_real

__all__ = ["poisson_mask", "poisson_batch", "shuffled_batches", "n_shuffled_batches", "PoissonSampler",
           "take_rows"]


def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def poisson_mask(n: int, sampling_rate: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean inclusion mask of one Poisson-sampled batch.

    Example ``i`` is in the batch iff ``u_i < q`` with ``u = rng.random(n)`` (float64, one call,
    exactly ``n`` uniforms consumed). Hence the events are independent with probability ``q`` and
    the batch size is ``Binomial(n, q)``.

    Parameters
    ----------
    n : int
        Number of examples, ``n >= 1``.
    sampling_rate : float
        ``q`` in ``(0, 1]``.
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of bool, shape ``(n,)``

    Notes
    -----
    Source: Abadi et al. 2016, Sec. 3.1 ("lot" sampled with probability ``L/N``);
    the RDP of this sampling scheme is Mironov, Talwar & Zhang 2019, Sec. 3.3.
    """
    n = check_int("n", n, low=1)
    q = check_real("sampling_rate", sampling_rate, low=0.0, high=1.0, low_open=True)
    rng = _check_rng(rng)
    return rng.random(n) < q


def poisson_batch(n: int, sampling_rate: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices (int64) of one Poisson-sampled batch: ``np.flatnonzero(poisson_mask(...))``.

    Consumes the same ``n`` uniforms as :func:`poisson_mask`. May be empty.
    """
    return np.flatnonzero(poisson_mask(n, sampling_rate, rng)).astype(np.int64, copy=False)


def n_shuffled_batches(n: int, batch_size: int) -> int:
    """Number of batches per epoch of :func:`shuffled_batches`: ``ceil(n / batch_size)``."""
    n = check_int("n", n, low=1)
    batch_size = check_int("batch_size", batch_size, low=1, high=n)
    return math.ceil(n / batch_size)


def shuffled_batches(n: int, batch_size: int, rng: np.random.Generator) -> list:
    """One epoch of shuffled fixed-size batches.

    ``perm = rng.permutation(n)`` (one call), cut into consecutive chunks of ``batch_size``;
    the last chunk holds the ``n mod batch_size`` leftover examples when ``batch_size`` does not
    divide ``n`` (so every example appears exactly once per epoch).

    Parameters
    ----------
    n : int
        Number of examples, ``n >= 1``.
    batch_size : int
        In ``[1, n]``.
    rng : numpy.random.Generator

    Returns
    -------
    list of ndarray (int64)
        ``ceil(n / batch_size)`` index arrays.

    Notes
    -----
    The Poisson-subsampled Gaussian RDP bound does not apply to this sampler (sampling without
    replacement of a fixed batch, all batches of an epoch disjoint); see the privacy caveat in
    :func:`sims.train.train`.
    """
    n_batches = n_shuffled_batches(n, batch_size)
    rng = _check_rng(rng)
    perm = rng.permutation(n).astype(np.int64, copy=False)
    return [perm[i * batch_size:(i + 1) * batch_size] for i in range(n_batches)]


@numba.njit(cache=True)
def _below_kernel(u, q, out):
    """``out[:k] = flatnonzero(u < q)``; returns ``k`` (one pass, no mask array)."""
    k = 0
    for i in range(u.shape[0]):
        if u[i] < q:
            out[k] = i
            k += 1
    return k


class PoissonSampler:
    """:func:`poisson_batch` for many steps, drawn into buffers allocated once.

    ``indices(rng)`` consumes exactly the draws of :func:`poisson_mask` (``rng.random(n)``, float64)
    and returns the same sorted indices, ``np.flatnonzero(u < q)``, as a view into a buffer that
    the next call overwrites (a training loop uses each batch once). Arguments are checked here,
    once, not at every step.
    """

    __slots__ = ("n", "q", "_u", "_idx")

    def __init__(self, n: int, sampling_rate: float):
        self.n = check_int("n", n, low=1)
        self.q = check_real("sampling_rate", sampling_rate, low=0.0, high=1.0, low_open=True)
        self._u = np.empty(self.n)
        self._idx = np.empty(self.n, dtype=np.int64)

    def indices(self, rng: np.random.Generator) -> np.ndarray:
        """Sorted int64 indices of one Poisson batch (a view, valid until the next call)."""
        u = rng.random(self.n, out=self._u)
        return self._idx[:_below_kernel(u, self.q, self._idx)]


@numba.njit(cache=True)
def _take_rows_kernel(X, idx, out):
    for r in range(idx.shape[0]):
        out[r, :] = X[idx[r], :]


def take_rows(X: np.ndarray, idx: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[:len(idx)] = X[idx]`` for a C-contiguous float32/float64 ``X`` and int64 ``idx`` in range
    (trusted: internal fast path of the training loop's batch gather); returns that view.

    A compiled row copy into a buffer reused across steps (a fresh ``X[idx]`` of a 256 x 784 batch
    is a new allocation and its page faults every step). Other dtypes use ``np.take``.
    Reference: ``np.take(X, idx, axis=0)``.
    """
    view = out[:idx.shape[0]]
    if X.dtype.char in "fd" and X.flags.c_contiguous and out.flags.c_contiguous:
        _take_rows_kernel(X, idx, view)
    else:
        np.take(X, idx, axis=0, out=view)
    return view
