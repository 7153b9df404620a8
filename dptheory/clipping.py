"""Clipping bias ``b = E clip_C(g) - E g`` of per-example gradient clipping (docs/theory.md §4).

``clip_C(g) = g min(1, C/||g||)``. Closed forms for the 1-D Gaussian, a 2-D quadrature for isotropic
Gaussian noise in ``d`` dimensions, general moment bounds, and the Chen-Wu-Hong 2020 counterexample.
Proofs in :mod:`proofs.clipping`; Monte Carlo checks in ``tests/test_clipping.py``.
"""
from __future__ import annotations

import numpy as np
from scipy import integrate, special, stats

from .validation import check_finite_array, check_int, check_real, check_real_array, float_or_array

__all__ = [
    "bias_bound_excess", "bias_bound_second_moment", "bias_bound_koloskova",
    "clipped_mean_1d", "clip_bias_1d", "shrinkage_factor", "shrinkage_factor_highdim",
    "chen_wu_hong_fixed_points", "clipped_gd_direction_1d",
]


# ----------------------------------------------------------------------------- general bounds
def bias_bound_excess(norms, clip, weights=None):
    """``E(||g|| - C)_+``, an upper bound on ``||b||`` [D]: ``||E(clip(g) - g)|| <= E||clip(g) - g||``
    and ``||clip(g) - g|| = (||g|| - C)_+``.

    ``norms`` are samples (or the support) of ``||g||``; ``weights`` optional probabilities (sum 1).
    """
    x = check_finite_array("norms", norms, ndim=1).astype(np.float64)
    if x.size == 0 or np.any(x < 0):
        raise ValueError("norms must be a non-empty 1-D array of values >= 0")
    C = check_real("clip", clip, low=0.0, low_open=True)
    if weights is None:
        return float(np.mean(np.maximum(x - C, 0.0)))
    w = check_finite_array("weights", weights, ndim=1).astype(np.float64)
    if w.shape != x.shape or np.any(w < 0) or not np.isclose(w.sum(), 1.0, rtol=0, atol=1e-9):
        raise ValueError("weights must be a 1-D array of probabilities (>= 0, sum 1) matching norms")
    return float(np.dot(w, np.maximum(x - C, 0.0)))


def bias_bound_second_moment(second_moment, clip):
    """``E||g||^2/(4C)`` >= ``E(||g|| - C)_+`` >= ``||b||`` [S]: ``x^2/(4C) - (x - C) = (x - 2C)^2/(4C) >= 0``."""
    m2 = check_real_array("second_moment", second_moment, low=0.0)
    C = check_real_array("clip", clip, low=0.0, low_open=True)
    return float_or_array(m2 / (4 * C))


def bias_bound_koloskova(grad_norm, noise_mean_norm, noise_second_moment, clip):
    """``||b|| <= min(E||xi||, E||xi||^2/(2C))`` for ``g = grad F + xi`` with ``||grad F|| <= C/2`` [D].

    If ``||g|| > C`` then ``||xi|| > C/2`` and ``(||g|| - C)_+ <= (||xi|| - C/2)_+ <= min(||xi||, ||xi||^2/(2C))``.
    Koloskova, Hendrikx & Stich 2023 (arXiv 2305.01588) show a ``min(sigma, sigma^2/C)`` bias
    neighbourhood is unavoidable, with matching lower bounds [L]. ``grad_norm > C/2`` raises ValueError.
    """
    C = check_real_array("clip", clip, low=0.0, low_open=True)
    gn = check_real_array("grad_norm", grad_norm, low=0.0)
    if np.any(gn > C / 2):
        raise ValueError(f"grad_norm must be in [0, clip/2], got grad_norm={grad_norm!r} with clip={clip!r}")
    m1 = check_real_array("noise_mean_norm", noise_mean_norm, low=0.0)
    m2 = check_real_array("noise_second_moment", noise_second_moment, low=0.0)
    if np.any(m1 ** 2 > m2 * (1 + 1e-12)):
        raise ValueError("noise_mean_norm**2 must be <= noise_second_moment (Jensen)")
    return float_or_array(np.minimum(m1, m2 / (2 * C)))


# ----------------------------------------------------------------------------- 1-D Gaussian
def clipped_mean_1d(mean, std, clip):
    """Exact ``E clip_C(g)`` for ``g ~ N(m, s^2)`` in one dimension [D, S].

    With ``a = (-C - m)/s``, ``beta = (C - m)/s``:
    ``m [Phi(beta) - Phi(a)] + s [phi(a) - phi(beta)] + C [1 - Phi(beta)] - C Phi(a)``.
    ``std = 0`` gives ``clip(m)``. Derived by splitting the integral at ``+-C``; proved in ``proofs.clipping``.
    """
    m, s, C = check_real_array("mean", mean), check_real_array("std", std, low=0.0), check_real_array("clip", clip, low=0.0, low_open=True)
    m, s, C = np.broadcast_arrays(m, s, C)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (-C - m) / s
        b = (C - m) / s
        Pa, Pb = special.ndtr(a), special.ndtr(b)
        val = m * (Pb - Pa) + s * (stats.norm.pdf(a) - stats.norm.pdf(b)) + C * special.ndtr(-b) - C * Pa
    val = np.where(s > 0, val, np.clip(m, -C, C))
    return float_or_array(val)


def clip_bias_1d(mean, std, clip):
    """``E clip_C(g) - m`` for ``g ~ N(m, s^2)`` (see :func:`clipped_mean_1d`)."""
    return float_or_array(np.asarray(clipped_mean_1d(mean, std, clip)) - np.asarray(check_real_array("mean", mean)))


# ----------------------------------------------------------------------------- isotropic Gaussian, d dims
def _inner_w(u, s, C, dof):
    """``E_W min(1, C/sqrt(u^2 + s^2 W))`` for ``W ~ chi2_dof``, integrated over ``r = sqrt(W) ~ chi_dof``
    (smooth density, no singularity at 0 for ``dof = 1``)."""
    if dof == 0:
        return min(1.0, C / abs(u)) if u != 0 else 1.0
    w0 = (C * C - u * u) / (s * s)        # below w0 the vector is not clipped
    r0 = np.sqrt(w0) if w0 > 0 else 0.0
    lo_q, hi_q = stats.chi.ppf(1e-17, dof), stats.chi.isf(1e-17, dof)
    p_unclipped = stats.chi2.cdf(w0, dof) if w0 > 0 else 0.0
    lo = max(r0, lo_q)
    if lo >= hi_q:
        return p_unclipped
    f = lambda r: C / np.sqrt(u * u + s * s * r * r) * stats.chi.pdf(r, dof)
    mode = np.sqrt(dof - 1.0)
    val, _ = integrate.quad(f, lo, hi_q, limit=200, epsabs=1e-13, epsrel=1e-10,
                            points=[mode] if lo < mode < hi_q else None)
    return p_unclipped + val


def shrinkage_factor(mean_norm, noise_std, d, clip):
    """Shrinkage ``c`` in ``E clip_C(mu + xi) = c mu`` for ``xi ~ N(0, s^2 I_d)``, by 2-D quadrature [D].

    By rotational symmetry the clipped mean is parallel to ``mu`` (clipping shrinks, never rotates), and
    ``c = E[(m + sZ) min(1, C/sqrt((m + sZ)^2 + s^2 W))]/m`` with ``m = ||mu|| > 0``,
    ``Z ~ N(0,1)``, ``W ~ chi^2_{d-1}`` independent. Outer integral over ``z``, inner over ``r = sqrt(w)``
    (``scipy.integrate.quad``), tails beyond ``1e-17`` quantiles dropped. ``0 <= c <= 1``.
    """
    m = check_real("mean_norm", mean_norm, low=0.0, low_open=True)
    s = check_real("noise_std", noise_std, low=0.0)
    d = check_int("d", d, low=1)
    C = check_real("clip", clip, low=0.0, low_open=True)
    if s == 0:
        return min(1.0, C / m)
    zmax = 9.0
    f = lambda z: (m + s * z) * _inner_w(m + s * z, s, C, d - 1) * stats.norm.pdf(z)
    brk = [z for z in ((-C - m) / s, (C - m) / s, -m / s) if -zmax < z < zmax]
    val, _ = integrate.quad(f, -zmax, zmax, points=brk or None, limit=200, epsabs=1e-13, epsrel=1e-10)
    return float(val / m)


def shrinkage_factor_highdim(mean_norm, noise_std, d, clip):
    """High-dimensional approximation ``c ~ min(1, C/sqrt(m^2 + d s^2))`` [D].

    For large ``d``, ``||mu + xi||^2`` concentrates at ``m^2 + d s^2`` (relative spread
    ``O(1/sqrt d)``), so every sample is scaled by about the same factor.
    """
    m = check_real_array("mean_norm", mean_norm, low=0.0, low_open=True)
    s = check_real_array("noise_std", noise_std, low=0.0)
    d = check_real_array("d", d, low=1.0)
    C = check_real_array("clip", clip, low=0.0, low_open=True)
    return float_or_array(np.minimum(1.0, C / np.sqrt(m ** 2 + d * s ** 2)))


# ----------------------------------------------------------------------------- Chen-Wu-Hong
def clipped_gd_direction_1d(x, points, clip):
    """``(1/n) sum_i clip_C(x - a_i)``: clipped-GD direction for ``f = (1/n) sum (x - a_i)^2/2``, 1-D."""
    x = check_real_array("x", x)
    a = check_finite_array("points", points, ndim=1).astype(np.float64)
    if a.size == 0:
        raise ValueError("points must be a non-empty 1-D array")
    C = check_real("clip", clip, low=0.0, low_open=True)
    return float_or_array(np.mean(np.clip(np.asarray(x)[..., None] - a, -C, C), axis=-1))


def chen_wu_hong_fixed_points(points=(-3.0, 3.0), clip=1.0):
    """Closed interval ``[lo, hi]`` of fixed points of clipped GD on ``f = (1/n) sum_i (x - a_i)^2 / 2``.

    Chen, Wu & Hong 2020 (arXiv 2006.15429) [C]: with ``a = (-3, 3)`` (their ``f = 1/4 sum (x - a_i)^2``)
    and ``C = 1`` every ``x in [-2, 2]`` is a fixed point, although the minimiser is 0 only.
    ``h(x) = sum clip_C(x - a_i)`` is continuous, non-decreasing and piecewise linear with kinks at
    ``a_i +- C``; its zero set is found exactly from the values at the kinks.
    """
    a = check_finite_array("points", points, ndim=1).astype(np.float64)
    if a.size == 0:
        raise ValueError("points must be a non-empty 1-D array")
    C = check_real("clip", clip, low=0.0, low_open=True)
    kinks = np.unique(np.concatenate([a - C, a + C]))
    h = np.clip(kinks[:, None] - a, -C, C).sum(axis=1)
    zero = np.flatnonzero(h == 0)
    if zero.size:
        return float(kinks[zero[0]]), float(kinks[zero[-1]])
    j = int(np.searchsorted(h, 0.0))          # h[j-1] < 0 < h[j]; linear in between
    x = kinks[j - 1] - h[j - 1] * (kinks[j] - kinks[j - 1]) / (h[j] - h[j - 1])
    return float(x), float(x)
