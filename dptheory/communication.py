r"""Communication cost of one step: bits to send a ``d``-dimensional update.

Conventions: ``d`` parameters, ``k`` of them non-zero (the support), each value sent with ``b``
bits (``value_bits``: an int, or ``"float16"``/``"float32"``/``"float64"`` for 16/32/64). An
index into ``d`` coordinates takes :math:`\lceil \log_2 d \rceil` bits (fixed-length code of
``d`` symbols). Costs are per message (one worker's update, or the server's broadcast).

* :func:`dense_bits` -- every value: :math:`d b`.
* :func:`sparse_index_bits` -- ``k`` (index, value) pairs: :math:`k(\lceil\log_2 d\rceil + b)`.
* :func:`sparse_bitmap_bits` -- a ``d``-bit support bitmap plus ``k`` values: :math:`d + k b`.
* :func:`sparse_bits` -- the cheaper of the two.
* :func:`sparse_entropy_bits` -- the lower bound :math:`\log_2\binom dk + k b` of any fixed-length
  code of (support, values) messages.
* :func:`topagg_vote_bits` -- a TopAgg vote (``k`` signs): ``k`` (index, sign) pairs or a
  ternary vector with 2 bits per coordinate.
* :func:`low_rank_bits` -- rank-``r`` factors of an ``m x n`` matrix: :math:`r(m+n) b`.

Sources: the index and bitmap encodings are the usual ways to ship a sparse gradient (as in
the gradient-compression literature, e.g. Lin et al. 2018, "Deep Gradient Compression"); the
low-rank count is that of PowerSGD (Vogels et al. 2019, Algorithm 1); the counting bound is
Shannon's: ``M`` equally likely messages need :math:`\log_2 M` bits on average (Cover & Thomas
2006, Thm 5.3.1), and a fixed-length code needs :math:`\lceil\log_2 M\rceil` (pigeonhole).
Derived in ``proofs/communication.py``.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import gammaln

from .validation import (
    check_broadcast,
    check_choice,
    check_int,
    check_int_array,
    check_k_d,
)

__all__ = [
    "VALUE_BITS",
    "VOTE_ENCODINGS",
    "dense_bits",
    "index_bits",
    "low_rank_bits",
    "sparse_bitmap_bits",
    "sparse_bits",
    "sparse_entropy_bits",
    "sparse_index_bits",
    "topagg_vote_bits",
]

#: bits per value of the named floating-point formats.
VALUE_BITS = {"float16": 16, "float32": 32, "float64": 64}

#: the encodings of :func:`topagg_vote_bits`.
VOTE_ENCODINGS = ("index_sign", "ternary")


def _value_bits(value_bits) -> int:
    if isinstance(value_bits, str):
        return VALUE_BITS[check_choice("value_bits", value_bits, VALUE_BITS)]
    return check_int("value_bits", value_bits, low=1)


def _kd(k, d):
    check_broadcast(k=k, d=d)
    return check_k_d(k, d)


def _ints(x):
    """A Python int for a scalar, else an int64 array."""
    x = np.asarray(x, dtype=np.int64)
    return int(x) if x.ndim == 0 else x


def index_bits(d):
    r"""Bits of a fixed-length index into ``d`` coordinates: :math:`\lceil \log_2 d \rceil`.

    The smallest ``L`` with :math:`2^L \ge d` (``0`` for ``d = 1``), computed exactly as
    ``(d - 1).bit_length()``.

    Parameters
    ----------
    d : int or array_like of int >= 1

    Returns
    -------
    int or numpy.ndarray of int64
    """
    dd = check_int_array("d", d, low=1)
    return _ints(np.vectorize(lambda x: (int(x) - 1).bit_length(), otypes=[np.int64])(dd))


def dense_bits(d, *, value_bits=32):
    r"""Bits of a dense update: :math:`d\, b` (``b = 32`` for float32, 64 for float64).

    Parameters
    ----------
    d : int or array_like of int >= 1
    value_bits : int >= 1 or {"float16", "float32", "float64"}

    Returns
    -------
    int or numpy.ndarray of int64
    """
    return _ints(check_int_array("d", d, low=1) * _value_bits(value_bits))


def sparse_index_bits(k, d, *, value_bits=32):
    r"""Bits of ``k`` (index, value) pairs: :math:`k\,(\lceil\log_2 d\rceil + b)`.

    Parameters
    ----------
    k, d : int or array_like of int, ``1 <= k <= d`` (broadcast together)
    value_bits : int >= 1 or {"float16", "float32", "float64"}

    Returns
    -------
    int or numpy.ndarray of int64
    """
    k, d = _kd(k, d)
    return _ints(k * (np.asarray(index_bits(d)) + _value_bits(value_bits)))


def sparse_bitmap_bits(k, d, *, value_bits=32):
    r"""Bits of a support bitmap and the ``k`` values in coordinate order: :math:`d + k b`.

    Parameters
    ----------
    k, d : int or array_like of int, ``1 <= k <= d`` (broadcast together)
    value_bits : int >= 1 or {"float16", "float32", "float64"}

    Returns
    -------
    int or numpy.ndarray of int64
    """
    k, d = _kd(k, d)
    return _ints(d + k * _value_bits(value_bits))


def sparse_bits(k, d, *, value_bits=32):
    r"""Bits of the cheaper sparse encoding: :math:`\min(k(\lceil\log_2 d\rceil + b),\ d + k b)`.

    Index pairs win when :math:`k \lceil\log_2 d\rceil < d`, i.e. for supports sparser than about
    :math:`1/\log_2 d`; one flag bit would tell the receiver which encoding follows (not counted).

    Parameters
    ----------
    k, d : int or array_like of int, ``1 <= k <= d`` (broadcast together)
    value_bits : int >= 1 or {"float16", "float32", "float64"}

    Returns
    -------
    int or numpy.ndarray of int64
    """
    return _ints(np.minimum(sparse_index_bits(k, d, value_bits=value_bits),
                            sparse_bitmap_bits(k, d, value_bits=value_bits)))


def sparse_entropy_bits(k, d, *, value_bits=32):
    r"""Counting lower bound for a (support, values) message: :math:`\log_2\binom dk + k b`.

    There are :math:`\binom dk 2^{k b}` such messages; when they are equally likely, any
    uniquely decodable code needs at least :math:`\log_2` of that many bits on average (Cover &
    Thomas 2006, Thm 5.3.1), and a fixed-length one the ceiling of it. Since :math:`\binom dk \le d^k` and :math:`\binom dk \le 2^d`, it is at most
    :func:`sparse_bits`. Evaluated as
    :math:`(\ln\Gamma(d+1) - \ln\Gamma(k+1) - \ln\Gamma(d-k+1)) / \ln 2 + k b`.

    Parameters
    ----------
    k, d : int or array_like of int, ``1 <= k <= d`` (broadcast together)
    value_bits : int >= 1 or {"float16", "float32", "float64"}

    Returns
    -------
    float or numpy.ndarray
    """
    k, d = _kd(k, d)
    kf, df = np.asarray(k, dtype=np.float64), np.asarray(d, dtype=np.float64)
    log_binom = gammaln(df + 1.0) - gammaln(kf + 1.0) - gammaln(df - kf + 1.0)
    out = np.maximum(log_binom, 0.0) / math.log(2.0) + kf * _value_bits(value_bits)
    return float(out) if out.ndim == 0 else out


def topagg_vote_bits(k, d, *, encoding="index_sign"):
    r"""Bits of one TopAgg vote vector (``k`` entries ``+-1``, the rest 0).

    * ``"index_sign"``: ``k`` (index, sign) pairs, :math:`k(\lceil\log_2 d\rceil + 1)` -- a sparse
      message with 1-bit values;
    * ``"ternary"``: every coordinate as a 2-bit code of ``{-1, 0, +1}``, :math:`2d` -- the
      "2-bit votes" layout, independent of ``k`` (the noisy thresholded aggregate the server
      broadcasts is also a ternary vector and costs :math:`2d` this way).

    The counting bound is :math:`\log_2\binom dk + k` (:func:`sparse_entropy_bits` with
    ``value_bits=1``); a ternary vector of unknown support needs :math:`\lceil d\log_2 3\rceil`.

    Parameters
    ----------
    k, d : int or array_like of int, ``1 <= k <= d`` (broadcast together)
    encoding : {"index_sign", "ternary"}

    Returns
    -------
    int or numpy.ndarray of int64
    """
    check_choice("encoding", encoding, VOTE_ENCODINGS)
    if encoding == "index_sign":
        return sparse_index_bits(k, d, value_bits=1)
    k, d = _kd(k, d)
    return _ints(np.broadcast_arrays(2 * d, k)[0])


def low_rank_bits(m, n, rank, *, value_bits=32):
    r"""Bits of rank-``r`` factors ``P (m x r)`` and ``Q (n x r)`` of an ``m x n`` matrix: :math:`r(m+n)b`.

    PowerSGD sends :math:`P = M Q` and then :math:`Q` (Vogels et al. 2019, Algorithm 1), ``r (m + n)``
    values per matrix; below :math:`r < mn/(m+n)` this is cheaper than the dense :math:`mnb`.

    Parameters
    ----------
    m, n : int or array_like of int >= 1
    rank : int or array_like of int in ``[1, min(m, n)]``
    value_bits : int >= 1 or {"float16", "float32", "float64"}

    Returns
    -------
    int or numpy.ndarray of int64
    """
    check_broadcast(m=m, n=n, rank=rank)
    mm, nn = check_int_array("m", m, low=1), check_int_array("n", n, low=1)
    r = check_int_array("rank", rank, low=1)
    if np.any(r > np.minimum(mm, nn)):
        raise ValueError(f"rank must be an integer in [1, min(m, n)], got rank={rank!r} with m={m!r}, n={n!r}")
    return _ints(r * (mm + nn) * _value_bits(value_bits))
