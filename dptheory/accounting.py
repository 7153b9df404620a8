"""Privacy accounting of DP-SGD: Renyi DP of the (Poisson-subsampled) Gaussian mechanism.

Conventions (docs/theory.md §1): add/remove adjacency, Poisson sampling at rate ``q``,
noise multiplier ``sigma`` (noise std divided by the L2 sensitivity), ``T`` steps.

* :func:`rdp_gaussian`, :func:`rdp_subsampled_gaussian` -- RDP curves eps(alpha) of one step.
* :func:`epsilon_from_rdp`, :func:`epsilon_from_rdp_classic` -- RDP -> (eps, delta) conversions.
* :func:`epsilon` -- composed over ``T`` steps and optimised over the order; ``accountant="pld"``
  delegates to dp-accounting's privacy-loss-distribution accountant (optional dependency).
* :func:`calibrate_noise` -- the smallest noise multiplier meeting an (eps, delta) target.

Typed privacy events (:class:`~dptheory.events.Gaussian`, :class:`~dptheory.events.PoissonGaussian`,
:class:`~dptheory.events.NonPrivate`) and :func:`~dptheory.events.epsilon_of` live in
:mod:`dptheory.events`, which builds on this module (never the reverse).

Numerics: RDP values are rigorous UPPER bounds (never 0 for q > 0, monotone in the order; see
:func:`rdp_subsampled_gaussian`), computed in log space as ``A - 1`` so that tiny values keep their
relative precision. Integer orders use the exact finite sum (all terms positive); fractional orders
the two-sided series of Mironov, Talwar & Zhang (2019) Sec. 3.3, whose tail alternates and decays
only polynomially (like ``i^-(alpha+2)``; dp-accounting's plain truncation at 1000 terms fails for
e.g. q=0.256, sigma=2.2, alpha in 1.1..1.6). The tail is summed with the Euler (van Wijngaarden)
transform, i.e. repeated averaging of partial sums, whose error is bounded rigorously here because
the term magnitudes are completely monotone; rounding errors are bounded and added.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import optimize, special

from .validation import check_choice, check_finite_array, check_int, check_real

__all__ = [
    "DEFAULT_ORDERS",
    "ACCOUNTANTS",
    "check_orders",
    "require_dp_accounting",
    "rdp_gaussian",
    "rdp_subsampled_gaussian",
    "epsilon_from_rdp",
    "epsilon_from_rdp_classic",
    "epsilon",
    "calibrate_noise",
    "calibrate_noise_gaussian_closed_form",
    "steps_per_epoch",
    "steps_for_epochs",
]

#: default order grid {1 + x/10 : x = 1..99} U {12, ..., 63} (as in Opacus / dp-accounting).
DEFAULT_ORDERS = np.concatenate([1.0 + np.arange(1, 100) / 10.0, np.arange(12, 64, dtype=float)])

#: the accountants of :func:`epsilon`: Renyi DP (this module) and PLD (dp-accounting, optional).
ACCOUNTANTS = ("rdp", "pld")
_CONVERSIONS = ("balle", "classic")
_EULER_K = 40          # rounds of repeated averaging of partial sums (Euler transform)
_SERIES_EXTRA = 128    # terms beyond ceil(alpha) in the first pass of the fractional series
_SERIES_MAX = 1 << 16  # cap on the number of terms of the fractional series
_INT_BLOCK = 256       # integer orders up to this are summed together in one array
_ULP = float(np.finfo(float).eps)
_ULPS = 16.0 * _ULP    # error allowed per unit of magnitude of every addend (16 ulps)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


# --------------------------------------------------------------------------- validation helpers
def check_orders(orders) -> np.ndarray:
    """Renyi orders as a 1-D float array, each > 1 (``ValueError`` naming ``orders`` otherwise)."""
    arr = check_finite_array("orders", np.atleast_1d(np.asarray(orders, dtype=float)))
    if arr.ndim != 1:
        raise ValueError(f"orders must be a scalar or a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("orders must contain at least one order in (1, inf)")
    if np.any(arr <= 1.0):
        raise ValueError(f"orders must all be in (1, inf), got min {arr.min()!r}")
    return arr


def _check_q(q) -> float:
    return check_real("sampling_rate", q, low=0.0, high=1.0, low_open=True)


def _check_sigma(sigma) -> float:
    return check_real("noise_multiplier", sigma, low=0.0, low_open=True)


def _check_delta(delta) -> float:
    return check_real("delta", delta, low=0.0, high=1.0, low_open=True, high_open=True)


def _check_steps(steps) -> int:
    return check_int("steps", steps, low=1)


# --------------------------------------------------------------------------- RDP curves
def rdp_gaussian(orders, noise_multiplier) -> np.ndarray:
    r"""RDP of the Gaussian mechanism with sensitivity 1 and noise std ``noise_multiplier``.

    .. math:: \varepsilon(\alpha) = \frac{\alpha}{2\sigma^2}

    the Renyi divergence of order alpha between N(1, sigma^2) and N(0, sigma^2)
    (Mironov 2017, "Renyi Differential Privacy", Prop. 7; docs/theory.md §1.1).

    Parameters
    ----------
    orders : float or array_like
        Renyi orders, each in (1, inf).
    noise_multiplier : float
        sigma > 0.

    Returns
    -------
    numpy.ndarray
        One RDP value per order (``inf`` if 1/sigma^2 overflows).
    """
    a = check_orders(orders)
    s = _check_sigma(noise_multiplier)
    return a * _inv_var(s) / 2.0


def _inv_var(sigma: float) -> float:
    """1/sigma^2, or inf when it overflows (no warning)."""
    return 1.0 / (sigma * sigma) if sigma > 1e-150 else math.inf


def _log_abs_expm1(c: np.ndarray):
    """(log|e^c - 1|, sign(e^c - 1)) for real c != 0, accurate for small and large |c|."""
    big = c > 1.0
    with np.errstate(over="ignore", divide="ignore"):
        e = np.expm1(np.where(big, 0.0, c))
        out = np.where(big, c + np.log1p(-np.exp(-np.where(big, c, 1.0))), np.log(np.abs(e)))
    return out, np.where(c > 0, 1.0, -1.0)


def _log_sum(lt: np.ndarray, axis=-1):
    """``(m, s)`` with sum(exp(lt)) = exp(m) * s along ``axis`` (m = the max; s = 0 if all -inf)."""
    m = np.max(lt, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return m, np.sum(np.exp(lt - m), axis=axis, keepdims=True)


def _log_am1_int(q: float, sigma: float, alpha: np.ndarray) -> np.ndarray:
    """Upper bounds on log(A_alpha - 1) for integer orders alpha >= 2 (vectorised), 0 < q < 1.

    A - 1 = sum_{i=2}^{alpha} C(alpha,i) q^i (1-q)^(alpha-i) (e^{(i^2-i)/(2 sigma^2)} - 1): the
    binomial weights sum to one and the i = 0, 1 terms vanish, so every term is positive and the
    relative error of the sum is at most the largest relative error of a term plus the summation's.
    """
    out = np.empty(alpha.shape)
    small = alpha <= _INT_BLOCK
    groups = [np.flatnonzero(small)] + [np.array([k]) for k in np.flatnonzero(~small)]
    lq, l1q = math.log(q), math.log1p(-q)
    for idx in groups:
        if idx.size == 0:
            continue
        a = alpha[idx][:, None]
        i = np.arange(2.0, a.max() + 1.0)[None, :]
        j = a - i
        ga, gi, gj = special.gammaln(a + 1.0), special.gammaln(i + 1.0), special.gammaln(j + 1.0)
        c = (i * i - i) / (2.0 * sigma * sigma)
        le, _ = _log_abs_expm1(c)
        lt = np.where(j >= 0, ga - gi - gj + i * lq + j * l1q + le, -np.inf)
        # ulps of the magnitudes of the addends of each log-term (gammaln, log, expm1 and the sums)
        mag = np.abs(ga) + np.abs(gi) + np.abs(gj) + np.abs(i * lq) + np.abs(j * l1q) + np.abs(le) + c + 8.0
        m, s = _log_sum(lt)
        w = np.exp(lt - m) / s
        rel = np.sum(w * np.expm1(np.minimum(np.where(w > 0, _ULPS * mag, 0.0), 700.0)), axis=1, keepdims=True)
        lam = m + np.log(s)
        out[idx] = (lam + rel + _ULPS * (np.abs(lam) + i.size + 4.0))[:, 0]
    return out


def _frac_terms(q: float, sigma: float, alpha: np.ndarray, n: int):
    """Terms 0..n-1 of the series (*) of :func:`_log_am1_frac`, for each order (rows).

    Returns ``(lt, sign, mag, la, lb, s_tail)``: ``lt``, ``sign`` and ``mag`` of shape (3, orders, n)
    are log|part|, sign and an error bound (in ulps, of log|part|) of the three parts of each term;
    ``la``, ``lb`` of shape (orders, n) are log |C_i| a_i and log |C_i| b_i, the tail magnitudes of
    the series for A and of the binomial series summing to 1; ``s_tail`` is sign(C_i).
    """
    lq, l1q = math.log(q), math.log1p(-q)
    s2 = sigma * sigma
    z0 = s2 * (l1q - lq) + 0.5
    a = alpha[:, None]
    fl = np.floor(a)
    fr = a - fl
    i = np.arange(float(n))[None, :]
    j = a - i
    # log|C(alpha, i)|: Gamma(alpha-i+1) for i < alpha; for i > alpha the reflection formula
    # |Gamma(alpha-i+1)| = pi / (|sin(pi fr)| Gamma(i-alpha)) keeps full accuracy near the poles.
    above = i > a
    x = np.where(above, i - a, j + 1.0)
    ga, gi, gx = special.gammaln(a + 1.0), special.gammaln(i + 1.0), special.gammaln(x)
    lsin = np.log(np.sin(math.pi * np.minimum(fr, 1.0 - fr)) / math.pi)
    log_comb = np.where(above, ga - gi + gx + lsin, ga - gi - gx)
    sign_c = np.where(above & ((i - fl) % 2.0 == 0.0), -1.0, 1.0)
    mag_c = np.abs(ga) + np.abs(gi) + np.abs(gx) + 2.0 * x * (np.log1p(x) + 1.0) + np.abs(lsin) + 4.0
    lp, lr = i * lq + j * l1q, j * lq + i * l1q        # log p_i, log r_i
    mag_p = np.abs(i * lq) + np.abs(j * l1q)
    mag_r = np.abs(j * lq) + np.abs(i * l1q)
    c_i, c_j = (i * i - i) / (2.0 * s2), (j * j - j) / (2.0 * s2)

    def log_phi(shift, sign_z0):
        """log Phi((shift + sign_z0 z0)/sigma) and its error bound in ulps (the rounding of the
        argument times the slope phi/Phi, plus log_ndtr's own error)."""
        arg = (shift + sign_z0 * z0) / sigma
        ln = special.log_ndtr(arg)
        slope = np.exp(-0.5 * arg * arg - _LOG_SQRT_2PI - ln)
        return ln, np.abs(ln) + 2.0 + 2.0 * slope * (np.abs(arg) + (np.abs(shift) + abs(z0)) / sigma)

    n_lo, e_lo = log_phi(-i, 1.0)          # Phi((z0 - i)/s)
    n_hi, e_hi = log_phi(j, -1.0)          # Phi((j - z0)/s)
    lo_part = lp + c_i + n_lo
    hi_part = lr + c_j + n_hi
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        if q <= 0.5:
            n_c, e_c = log_phi(i, -1.0)    # Phi((i - z0)/s)
            le, se = _log_abs_expm1(np.where(i >= 2, c_i, 1.0))
            parts = [(np.where(i >= 2, lp + le + n_lo, -np.inf), se, mag_p + np.abs(le) + c_i + e_lo),
                     (lp + n_c, -1.0, mag_p + e_c),
                     (hi_part, 1.0, mag_r + np.abs(c_j) + e_hi)]
            lb = log_comb + lp
        else:
            n_c, e_c = log_phi(-j, 1.0)    # Phi((z0 - j)/s)
            le, se = _log_abs_expm1(c_j)
            parts = [(lr + le + n_hi, se, mag_r + np.abs(le) + np.abs(c_j) + e_hi),
                     (lr + n_c, -1.0, mag_r + e_c),
                     (lo_part, 1.0, mag_p + c_i + e_lo)]
            lb = log_comb + lr
        la = log_comb + np.logaddexp(lo_part, hi_part)
    lt = np.stack([log_comb + p[0] for p in parts])
    sign = np.stack([sign_c * p[1] for p in parts])
    mag = np.stack([mag_c + p[2] for p in parts])
    return lt, sign, mag, la, lb, sign_c


def _euler_halving(d: np.ndarray, rounds: int, diff: bool) -> np.ndarray:
    """``rounds`` rounds of d_k <- (d_k + d_{k+1})/2 (averages) or (d_k - d_{k+1})/2 (differences)."""
    for _ in range(rounds):
        d = 0.5 * (d[:, :-1] - d[:, 1:]) if diff else 0.5 * (d[:, :-1] + d[:, 1:])
    return d[:, 0]


def _log_am1_frac(q: float, sigma: float, alpha: np.ndarray) -> np.ndarray:
    r"""Upper bounds on log(A_alpha - 1) for non-integer orders (vectorised), 0 < q < 1.

    Series (*): with z0 = sigma^2 log(1/q - 1) + 1/2, p_i = q^i (1-q)^(alpha-i), r_i = p_(alpha-i),
    c(x) = x (x-1) / (2 sigma^2), Phi_i^lo = Phi((z0-i)/sigma), Phi_i^hi = Phi((alpha-i-z0)/sigma),
    the two-sided series of Mironov, Talwar & Zhang (2019, Sec. 3.3) is
    A = sum_i C(alpha,i) [p_i e^{c(i)} Phi_i^lo + r_i e^{c(alpha-i)} Phi_i^hi]. For q <= 1/2,
    sum_i C(alpha,i) p_i = 1 (the binomial series of (1-q+q)^alpha) and Phi(x) = 1 - Phi(-x) give

        A - 1 = sum_i C(alpha,i) [p_i expm1(c(i)) Phi_i^lo - p_i (1 - Phi_i^lo) + r_i e^{c(alpha-i)} Phi_i^hi]

    (for q > 1/2 the same with the roles of p and r exchanged). The leading small-q term
    C(alpha,2) q^2 (1-q)^(alpha-2) expm1(1/sigma^2) Phi_2^lo is then one term computed with expm1,
    not a difference of terms of size 1, q, q^2: A - 1 keeps its relative precision however small.

    Tail (rigorous): for i > alpha the terms alternate, and |C(alpha,i)|, p_i e^{c(i)} Phi_i^lo =
    (1-q)^alpha E[X^i; z<z0] with X = qL/(1-q) in [0,1], r_i e^{c(alpha-i)} Phi_i^hi and p_i are
    moment sequences in i, hence completely monotone. For such a series, averaging the partial sums
    S_N..S_{N+K} K times (binomial weights) leaves an error of the sign of the first omitted term
    and of size at most (-Delta)^K a_{N+1} / 2^K (K even). Bounding the A-series and the binomial
    series separately bounds the error of the estimate of A - 1 from above.

    Rounding: each log-part has an error of at most ``_ULPS`` times the sum of the magnitudes of
    its addends (gammaln, log, log_ndtr with the slope times the rounding of its argument); the
    summation and the averaging add at most (n + K + 4) ulps of sum |parts|.
    """
    out = np.full(alpha.shape, np.nan)
    todo = np.arange(alpha.size)
    n = int(math.ceil(alpha.max())) + _SERIES_EXTRA
    K = _EULER_K
    while todo.size:
        lt, sign, mag, la, lb, s_tail = _frac_terms(q, sigma, alpha[todo], n)
        m = np.max(lt, axis=(0, 2))[:, None]
        m = np.where(np.isfinite(m), m, 0.0)
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            parts = sign * np.exp(lt - m)
            partial = np.cumsum(np.sum(parts, axis=0), axis=1)
            # window S_N..S_{N+K} (N = n-K-2) and the tail magnitudes a_{N+1}..a_{N+K+1}
            est = _euler_halving(partial[:, n - K - 2:n - 1], K, diff=False)
            a_win, b_win = np.exp(la[:, n - K - 1:] - m), np.exp(lb[:, n - K - 1:] - m)
            d_a = np.abs(_euler_halving(a_win, K, diff=True))
            d_b = np.abs(_euler_halving(b_win, K, diff=True))
            abs_parts = np.abs(parts)
            err = np.expm1(np.minimum(np.where(abs_parts > 0, _ULPS * mag, 0.0), 700.0))
            rnd = (np.sum(abs_parts * err, axis=(0, 2))
                   + _ULP * (n + K + 4.0) * np.sum(abs_parts, axis=(0, 2))
                   + _ULPS * (K + 4.0) * (np.sum(a_win, axis=1) + np.sum(b_win, axis=1)))
        trunc = np.where(s_tail[:, n - K - 1] > 0, d_a, d_b)
        done = (np.maximum(d_a, d_b) <= np.maximum(1e-14 * np.abs(est), rnd)) | (n >= _SERIES_MAX)
        up = (est + trunc + rnd) * (1.0 + _ULPS)
        with np.errstate(divide="ignore", invalid="ignore"):
            lam = m[:, 0] + np.log(up)
        out[todo[done]] = np.where(up > 0, lam + _ULPS * np.abs(lam), np.nan)[done]
        todo = todo[~done]
        n *= 2
    return out


def _rdp_upper(orders: np.ndarray, q: float, sigma: float) -> np.ndarray:
    """Per-order upper bounds on the RDP for 0 < q < 1 and finite 1/sigma^2 (no monotone envelope).

    Fractional orders below ``_INT_BLOCK`` take the smaller of the series bound and the chord of
    the convex K(alpha) = log A_alpha (the cumulant generating function of the privacy loss under
    mu0, with K(1) = 0) between the neighbouring integer orders: rigorous, it caps the series where
    its rounding bound is loose (q near 1/2 with large sigma). Above, the chord is only a fallback
    (it would double the cost of a large order).
    """
    is_int = orders == np.floor(orders)
    lam = np.empty(orders.shape)
    if np.any(is_int):
        lam[is_int] = _log_am1_int(q, sigma, orders[is_int])
    frac = np.flatnonzero(~is_int)
    if frac.size == 0:
        series = chord_at = frac
    else:
        with np.errstate(over="ignore", under="ignore"):
            series = _log_am1_frac(q, sigma, orders[frac])
        chord_at = np.flatnonzero((orders[frac] < _INT_BLOCK) | ~np.isfinite(series))
        lam[frac] = series
    if chord_at.size:
        a = orders[frac[chord_at]]
        fl = np.floor(a)
        ints = np.unique(np.concatenate([fl[fl >= 2], fl + 1.0]))
        with np.errstate(over="ignore", divide="ignore"):
            k_int = np.logaddexp(0.0, _log_am1_int(q, sigma, ints))
            k_lo = np.where(fl >= 2, k_int[np.searchsorted(ints, np.maximum(fl, 2.0))], 0.0)
            k_hi = k_int[np.searchsorted(ints, fl + 1.0)]
            chord = np.log(np.expm1(((fl + 1.0 - a) * k_lo + (a - fl) * k_hi) * (1.0 + _ULPS)))
        s = series[chord_at]
        lam[frac[chord_at]] = np.where(np.isfinite(s), np.minimum(s, chord), chord)
    with np.errstate(over="ignore"):
        k = np.logaddexp(0.0, lam)      # log A = log(1 + (A - 1))
    return np.nextafter(k / (orders - 1.0) * (1.0 + 4.0 * _ULP), np.inf)


def rdp_subsampled_gaussian(orders, sampling_rate, noise_multiplier) -> np.ndarray:
    r"""RDP of one step of the Poisson-subsampled Gaussian mechanism (sampled Gaussian mechanism).

    .. math::
        \varepsilon(\alpha) = \frac{\log A_\alpha}{\alpha - 1},\qquad
        A_\alpha = \mathbb{E}_{z\sim\mu_0}\Big[\Big(\frac{\mu(z)}{\mu_0(z)}\Big)^\alpha\Big],

    with mu0 = N(0, sigma^2) and mu = (1-q) N(0, sigma^2) + q N(1, sigma^2) (add/remove adjacency).
    Integer alpha: A = sum_i C(alpha,i) q^i (1-q)^(alpha-i) exp((i^2-i)/(2 sigma^2)).
    Fractional alpha: the two-sided series of Mironov, Talwar & Zhang 2019, "Renyi Differential
    Privacy of the Sampled Gaussian Mechanism", Sec. 3.3 (docs/theory.md §1.2). For q = 1 this is the
    plain Gaussian alpha / (2 sigma^2).

    **Every value is an upper bound on the true RDP, > 0 for q > 0, and the curve is
    non-decreasing in the order** (for q < 1):

    1. ``A - 1`` is summed directly, never ``A`` followed by ``- 1``. Integer orders: the finite
       sum of positive terms sum_{i>=2} C(alpha,i) q^i (1-q)^(alpha-i) expm1((i^2-i)/(2 sigma^2)).
       Fractional orders: the MTZ series with ``1 = sum_i C(alpha,i) q^i (1-q)^(alpha-i)`` taken out
       term by term (see ``_log_am1_frac``), so the leading term
       C(alpha,2) q^2 expm1(1/sigma^2) (small-q expansion eps ~ alpha q^2 (e^{1/sigma^2}-1)/2) is
       computed as one term. Tiny RDP values keep their relative precision (before, q = 1e-9,
       sigma = 1, alpha = 1.4 gave 0).
    2. An upper error bound is added: the alternating tail of the fractional series is summed by
       the Euler transform (repeated averaging of partial sums) with a rigorous bound of the
       truncation error (the term magnitudes are completely monotone), and a floating-point
       error bound assuming every elementary result (gammaln, log_ndtr, log, ...) is within 16
       ulps of its magnitude. Fractional orders below 256 are also capped by the chord of the
       convex log A_alpha between the neighbouring integer orders (rigorous; also the fallback if
       the series ever failed). The result is rounded up (4 ulps and one step further), so it is
       never 0.
    3. A running maximum over the sorted orders keeps the curve monotone (the true RDP is
       non-decreasing in the order, van Erven & Harremoes 2014, Thm 3, so raising a value to that of
       a smaller order keeps it an upper bound).

    The excess over the true value (measured against mpmath, tests/test_accounting_small_q.py) is
    below 1e-9 relative over q in [1e-12, 1], sigma in [0.3, 200], alpha in (1, 64], except (a) for
    fractional orders with q within about 1/sigma of 1/2, where the series itself cancels (parts
    ~ 1 sum to A - 1 ~ 1/sigma^2) and the rounding bound adds about 1e-12 sigma^2 / (alpha - 1)
    (3e-6 at q = 1/2, sigma = 200, alpha = 1.01; the chord caps it), and (b) at large orders,
    about 4e-14 alpha log(alpha) (the rounding of gammaln; 1.5e-8 at alpha = 9e4).

    Parameters
    ----------
    orders : float or array_like
        Renyi orders in (1, inf), integer or fractional.
    sampling_rate : float
        Poisson sampling probability q in (0, 1].
    noise_multiplier : float
        sigma > 0.

    Returns
    -------
    numpy.ndarray
        RDP of ONE step per order (compose ``T`` steps by multiplying by ``T``), each an upper
        bound on the true value and > 0; ``inf`` where 1/sigma^2 overflows.
    """
    a = check_orders(orders)
    q = _check_q(sampling_rate)
    s = _check_sigma(noise_multiplier)
    inv = _inv_var(s)
    if not math.isfinite(inv):
        return np.full(a.shape, np.inf)
    if q == 1.0:
        return a * inv / 2.0
    order = np.argsort(a, kind="stable")
    out = np.empty(a.shape)
    out[order] = np.maximum.accumulate(_rdp_upper(a[order], q, s))
    return out


# --------------------------------------------------------------------------- conversions
def _balle(orders: np.ndarray, rdp: np.ndarray, delta: float) -> np.ndarray:
    """Order-wise Balle et al. (2020) Thm 21 epsilon, with dp-accounting's KL shortcut."""
    with np.errstate(over="ignore", invalid="ignore"):
        eps = rdp + np.log1p(-1.0 / orders) - (math.log(delta) + np.log(orders)) / (orders - 1.0)
        # KL shortcut: TV <= sqrt(1 - exp(-KL)) (Bretagnolle-Huber) and KL <= RDP of any order > 1,
        # so TV <= delta, i.e. (0, delta)-DP, when 1 - exp(-rdp) < delta^2; a relative margin of
        # 1e-12 keeps a rounding error from deciding a borderline case. Sound only because rdp is
        # an upper bound (rdp_subsampled_gaussian never returns 0 for q > 0).
        eps = np.where(delta * delta * (1.0 - 1e-12) + np.expm1(-rdp) > 0.0, 0.0, eps)
    return eps


def _classic(orders: np.ndarray, rdp: np.ndarray, delta: float) -> np.ndarray:
    return rdp + math.log(1.0 / delta) / (orders - 1.0)


def _check_rdp_pair(orders, rdp):
    a = check_orders(orders)
    r = np.atleast_1d(np.asarray(rdp, dtype=float))
    if r.shape != a.shape:
        raise ValueError(f"rdp must have the same shape as orders {a.shape}, got {r.shape}")
    if np.any(np.isnan(r)) or np.any(r < 0):
        raise ValueError("rdp must contain values in [0, inf]")
    return a, r


def _best_over_orders(orders, rdp, delta, convert):
    """``min`` over the given orders of a conversion, as ``(epsilon >= 0, order)``."""
    a, r = _check_rdp_pair(orders, rdp)
    eps = convert(a, r, _check_delta(delta))
    k = int(np.argmin(eps))
    return max(0.0, float(eps[k])), float(a[k])


def epsilon_from_rdp(orders, rdp, delta):
    r"""Tight RDP -> (eps, delta) conversion, minimised over the given orders.

    .. math:: \varepsilon = \min_\alpha\; R(\alpha) + \log\frac{\alpha-1}{\alpha}
              - \frac{\log\delta + \log\alpha}{\alpha - 1}

    Balle, Barthe, Gaboardi, Hsu & Sato 2020, "Hypothesis testing interpretations and Renyi
    differential privacy", Thm 21; identical to Canonne, Kamath & Steinke 2020 (proved in
    ``proofs.accounting``). An order whose RDP satisfies 1 - exp(-R) < delta^2 (up to a 1e-12
    relative margin) gives eps = 0: KL <= R and TV <= sqrt(1 - exp(-KL)) (Bretagnolle-Huber) give
    TV <= delta (the shortcut of dp-accounting). This needs R to be an upper bound (a 0 from a
    rounding error would give eps = 0). The result is clipped below at 0.

    Parameters
    ----------
    orders, rdp : array_like
        Orders in (1, inf) and the (composed) RDP at each order, in [0, inf].
    delta : float
        Target delta in (0, 1).

    Returns
    -------
    (float, float)
        (epsilon, the order attaining it).
    """
    return _best_over_orders(orders, rdp, delta, _balle)


def epsilon_from_rdp_classic(orders, rdp, delta):
    r"""Classic RDP -> (eps, delta) conversion: eps = min_alpha R(alpha) + log(1/delta)/(alpha-1).

    Mironov 2017, "Renyi Differential Privacy", Prop. 3. Looser than :func:`epsilon_from_rdp`
    by log(alpha/(alpha-1)) + log(alpha)/(alpha-1) > 0 at every order; kept for comparison.

    Returns
    -------
    (float, float)
        (epsilon, the order attaining it).
    """
    return _best_over_orders(orders, rdp, delta, _classic)


# --------------------------------------------------------------------------- epsilon
def _optimise_order(q, sigma, steps, delta, convert):
    """Grid over DEFAULT_ORDERS (extended upward), then bounded Brent refinement."""
    orders = DEFAULT_ORDERS
    rdp = rdp_subsampled_gaussian(orders, q, sigma)
    eps = convert(orders, steps * rdp, delta)
    while int(np.argmin(eps)) == orders.size - 1 and orders[-1] < 2.0**20:
        top = orders[-1]
        extra = np.unique(np.round(np.geomspace(top + 1.0, 2.0 * top, 16)))
        rdp_x = rdp_subsampled_gaussian(extra, q, sigma)
        orders = np.concatenate([orders, extra])
        eps = np.concatenate([eps, convert(extra, steps * rdp_x, delta)])
    k = int(np.argmin(eps))
    best_eps, best_order = float(eps[k]), float(orders[k])
    if not math.isfinite(best_eps):
        return best_eps, best_order
    lo = orders[k - 1] if k > 0 else 1.0 + (orders[0] - 1.0) / 10.0
    hi = orders[k + 1] if k + 1 < orders.size else orders[k]
    if hi > lo:
        def f(alpha):
            a = np.array([alpha])
            return float(convert(a, steps * rdp_subsampled_gaussian(a, q, sigma), delta)[0])

        res = optimize.minimize_scalar(f, bounds=(lo, hi), method="bounded",
                                       options={"xatol": 1e-7 * hi})
        if res.fun < best_eps:
            best_eps, best_order = float(res.fun), float(res.x)
    return max(0.0, best_eps), best_order


def require_dp_accounting(what: str):
    """Import and return the optional ``dp_accounting`` package, or raise an install hint."""
    try:
        import dp_accounting
    except ImportError as exc:  # depends on the environment; tested by hiding the module
        raise ImportError(f'{what} needs dp-accounting: pip install "dpsparse[pld]"') from exc
    return dp_accounting


def _pld_epsilon(q, sigma, steps, delta):
    dp_accounting = require_dp_accounting('accountant="pld"')
    event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))

    def run(interval):
        acc = dp_accounting.pld.PLDAccountant(value_discretization_interval=interval)
        acc.compose(event, steps)
        return float(acc.get_epsilon(delta))

    # A coarse pass sets the scale, then dp-accounting's default discretisation 1e-4, made finer
    # (down to 2e-6) when epsilon is below 0.1 so that it stays ~1/1000 of epsilon. The pessimistic
    # PLD then overestimates epsilon by well under 0.5 % (measured: 1e-8 at T=1 to 4e-3 at T=1e6
    # with 1e-3; 1e-4 is ten times finer).
    coarse = run(1e-2)
    return run(min(1e-4, max(2e-6, coarse / 1000.0)))


def epsilon(sampling_rate, noise_multiplier, steps, delta, *, orders=None, accountant="rdp",
            conversion="balle"):
    r"""(epsilon, delta)-DP of ``steps`` steps of the Poisson-subsampled Gaussian mechanism.

    RDP accountant (default): R(alpha) = T * eps_SGM(alpha) (RDP composes additively; the cost
    does not grow with T), converted with Balle et al. 2020 Thm 21 (:func:`epsilon_from_rdp`) or
    the classic Mironov 2017 Prop. 3 (``conversion="classic"``). With ``orders=None`` the default
    grid {1 + x/10 : x=1..99} U {12..63} is used, extended upward while the optimum sits at its
    top edge, and the best grid order is refined by a bounded scalar minimisation between its
    neighbours (the result is never worse than the grid). With explicit ``orders``, only those.

    PLD accountant (``accountant="pld"``): delegates to dp-accounting's privacy loss distribution
    accountant (``PoissonSampledDpEvent(q, GaussianDpEvent(sigma))`` composed ``steps`` times),
    which is tight up to its pessimistic discretisation; returns ``(epsilon, None)``.

    Parameters
    ----------
    sampling_rate : float in (0, 1]
    noise_multiplier : float > 0
    steps : int >= 1
    delta : float in (0, 1)
    orders : array_like, optional
        Orders in (1, inf) (RDP accountant only).
    accountant : {"rdp", "pld"}
    conversion : {"balle", "classic"}
        RDP -> DP conversion (RDP accountant only).

    Returns
    -------
    (float, float or None)
        (epsilon, optimal order); the order is None for the PLD accountant.
    """
    q = _check_q(sampling_rate)
    s = _check_sigma(noise_multiplier)
    t = _check_steps(steps)
    d = _check_delta(delta)
    check_choice("accountant", accountant, ACCOUNTANTS)
    check_choice("conversion", conversion, _CONVERSIONS)
    if accountant == "pld":
        return _pld_epsilon(q, s, t, d), None
    convert = _balle if conversion == "balle" else _classic
    if orders is not None:
        a = check_orders(orders)
        eps = convert(a, t * rdp_subsampled_gaussian(a, q, s), d)
        k = int(np.argmin(eps))
        return max(0.0, float(eps[k])), float(a[k])
    return _optimise_order(q, s, t, d, convert)


# --------------------------------------------------------------------------- calibration
def steps_per_epoch(sampling_rate) -> int:
    """Steps in one epoch of Poisson sampling at rate ``q``: ``max(1, round(1/q))``.

    An "epoch" of Poisson-sampled DP-SGD has no exact length (batches are random); the toolkit uses
    this one convention everywhere (training loop, calibration, tables), so that a run of ``E`` epochs
    takes ``E * steps_per_epoch(q)`` steps and is accounted for exactly those steps.
    """
    q = _check_q(sampling_rate)
    return max(1, int(round(1.0 / q)))


def steps_for_epochs(sampling_rate, epochs) -> int:
    """``epochs * steps_per_epoch(sampling_rate)``: the number of steps of an ``epochs``-epoch run."""
    return check_int("epochs", epochs, low=1) * steps_per_epoch(sampling_rate)


def calibrate_noise(sampling_rate, steps, epsilon, delta, *, accountant="rdp", conversion="balle"):
    r"""Smallest noise multiplier sigma with epsilon(q, sigma, T, delta) <= ``epsilon``.

    epsilon is strictly decreasing in sigma (docs/theory.md §1.4), so the target is bracketed by
    doubling / halving sigma and the crossing is found by Brent's method on log sigma, to a
    relative tolerance of 1e-6 (the task asks for 1e-4). The returned sigma always meets the
    target (it is nudged up if the root lands a hair on the wrong side).

    Parameters
    ----------
    sampling_rate : float in (0, 1]
    steps : int >= 1
    epsilon : float > 0
    delta : float in (0, 1)
    accountant : {"rdp", "pld"}
    conversion : {"balle", "classic"}

    Returns
    -------
    float
        The noise multiplier.
    """
    q = _check_q(sampling_rate)
    t = _check_steps(steps)
    target = check_real("epsilon", epsilon, low=0.0, low_open=True)
    d = _check_delta(delta)
    check_choice("accountant", accountant, ACCOUNTANTS)
    check_choice("conversion", conversion, _CONVERSIONS)
    eps_fn = globals()["epsilon"]

    def g(log_sigma):
        return eps_fn(q, math.exp(log_sigma), t, d, accountant=accountant, conversion=conversion)[0] - target

    lo = hi = 0.0  # log sigma
    if g(hi) > 0:
        while g(hi) > 0:
            lo, hi = hi, hi + math.log(2.0)
            if hi > math.log(2.0**60):
                raise ValueError(f"epsilon={target!r} cannot be reached with noise_multiplier <= 2**60")
    else:
        while g(lo) <= 0:
            hi, lo = lo, lo - math.log(2.0)
            if lo < math.log(2.0**-30):
                return math.exp(hi)
    root = optimize.brentq(g, lo, hi, xtol=1e-9, rtol=1e-12)
    for _ in range(60):
        if g(root) <= 0:
            break
        root += 1e-9
    return math.exp(root)


def calibrate_noise_gaussian_closed_form(steps, epsilon, delta) -> float:
    r"""Closed-form sigma for q = 1, continuous orders and the classic conversion.

    eps = T/(2 sigma^2) + sqrt(2 T log(1/delta))/sigma is inverted by
    sigma = sqrt(T/2) / (sqrt(log(1/delta) + eps) - sqrt(log(1/delta)))  (docs/theory.md §1.4, derived and
    proved in ``proofs.accounting``). Useful as a sanity check of :func:`calibrate_noise`.
    """
    t = _check_steps(steps)
    e = check_real("epsilon", epsilon, low=0.0, low_open=True)
    d = _check_delta(delta)
    lg = math.log(1.0 / d)
    return math.sqrt(t / 2.0) / (math.sqrt(lg + e) - math.sqrt(lg))
