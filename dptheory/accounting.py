"""Privacy accounting of DP-SGD: Renyi DP of the (Poisson-subsampled) Gaussian mechanism.

Conventions (docs/theory.md §1): add/remove adjacency, Poisson sampling at rate ``q``,
noise multiplier ``sigma`` (noise std divided by the L2 sensitivity), ``T`` steps.

* :func:`rdp_gaussian`, :func:`rdp_subsampled_gaussian` -- RDP curves eps(alpha) of one step.
* :func:`epsilon_from_rdp`, :func:`epsilon_from_rdp_classic` -- RDP -> (eps, delta) conversions.
* :func:`epsilon` -- composed over ``T`` steps and optimised over the order; ``accountant="pld"``
  uses dp-accounting's privacy loss distribution (optional dependency) through :func:`epsilon_pld`:
  min(PLD, RDP), with which bound it is and the accuracy reached (:class:`PLDInfo`).
* :func:`calibrate_noise` -- the smallest noise multiplier meeting an (eps, delta) target, by the
  search :func:`calibrate_sigma` (shared with :func:`dptheory.selection.calibrate_noise_selected`).

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
the term magnitudes are completely monotone; rounding errors are bounded and added. Integer orders
above 256 sum only windows around the peaks of their terms, with a rigorous bound of the rest
(:func:`_log_am1_int_windowed`), so that a call costs the same at any order and any ``T``.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import special

from .validation import check_choice, check_finite_array, check_int, check_real

__all__ = [
    "DEFAULT_ORDERS",
    "compose_pld",
    "ACCOUNTANTS",
    "check_orders",
    "require_dp_accounting",
    "rdp_gaussian",
    "rdp_subsampled_gaussian",
    "epsilon_from_rdp",
    "epsilon_from_rdp_classic",
    "epsilon",
    "epsilon_pld",
    "pld_loss_scale",
    "PLD_ACCURACY",
    "calibrate_noise",
    "calibrate_noise_gaussian_closed_form",
    "calibrate_sigma",
    "sigma_guess",
    "steps_per_epoch",
    "steps_for_epochs",
]

#: default order grid {1 + x/10 : x = 1..99} U {12, ..., 63} (as in Opacus / dp-accounting).
DEFAULT_ORDERS = np.concatenate([1.0 + np.arange(1, 100) / 10.0, np.arange(12, 64, dtype=float)])

#: the accountants of :func:`epsilon`: Renyi DP (this module) and PLD (dp-accounting, optional).
ACCOUNTANTS = ("rdp", "pld")
_CONVERSIONS = ("balle", "classic")
#: target relative gap between the two discretisations of :func:`epsilon_pld`.
PLD_ACCURACY = 2e-3
_PLD_START_POINTS = 2**13   # points of one step's loss at the coarsest PLD grid, at least
_PLD_MAX_GRIDS = 5          # PLD grids h, h/2, ..., h/16 at most
_PLD_MAX_INTERVAL = 100.0   # coarsest PLD grid interval
_PLD_COST_STEP = 8.0        # cost of one point of one step's PMF (build, window; about microseconds here)
_PLD_COST_OUT = 0.8         # cost of one point of the composed PMF (FFT and scan)
_PLD_BUDGET = 3.0e6         # cost of all PLD grids of one call (about 3 s here)
_PLD_NOISE = 1e-2           # FFT noise allowed in the composed PLD, as a fraction of delta
_EULER_K = 40          # rounds of repeated averaging of partial sums (Euler transform)
_SERIES_EXTRA = 128    # terms beyond ceil(alpha) in the first pass of the fractional series
_SERIES_MAX = 1 << 16  # cap on the number of terms of the fractional series
_INT_BLOCK = 256       # integer orders up to this are summed together in one array
_WINDOW_HALF = 32      # initial half-width of the windows of a larger integer order
_LOG_TAIL_REL = math.log(1e-18)  # the terms left out of the windows: at most this relative
_FRACTIONAL_MAX = 4096.0  # the optimiser refines over fractional orders up to this
_ORDER_MAX = 2.0**20   # ... and extends its grid upward (integer orders) while below this
_GROWTH = 2.0**0.25    # ratio of consecutive orders of the upward extension
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


def _int_log_terms(q: float, sigma: float, a: np.ndarray, i: np.ndarray, *, expm1: bool = True):
    """Log-terms of the finite sum for integer orders ``a`` (column) at indices ``i`` (row), i >= 2.

    Returns ``(lt, mag)``: lt = log[C(a,i) q^i (1-q)^(a-i) f(c_i)] with c_i = (i^2 - i)/(2 sigma^2)
    and f = expm1 (the terms t_i of A - 1) or f = exp (``expm1=False``: the majorant v_i >= t_i of
    the tail bounds); ``-inf`` where i > a. ``mag`` bounds the error of lt in units of ``_ULPS``
    (the sum of the magnitudes of its addends: gammaln, log, expm1 and the sums).
    """
    lq, l1q = math.log(q), math.log1p(-q)
    j = a - i
    ga, gi, gj = special.gammaln(a + 1.0), special.gammaln(i + 1.0), special.gammaln(j + 1.0)
    c = (i * i - i) / (2.0 * sigma * sigma)
    le = _log_abs_expm1(c)[0] if expm1 else c
    lt = np.where(j >= 0, ga - gi - gj + i * lq + j * l1q + le, -np.inf)
    mag = np.abs(ga) + np.abs(gi) + np.abs(gj) + np.abs(i * lq) + np.abs(j * l1q) + np.abs(le) + c + 8.0
    return lt, mag


def _log_sum_upper(lt: np.ndarray, mag: np.ndarray) -> np.ndarray:
    """Upper bound on log sum_i exp(lt_i) per row, each lt_i within ``_ULPS * mag_i`` of the truth.

    The relative error of a sum of positive terms is at most the weighted mean of the terms'
    relative errors plus the summation's (row length + 4 ulps of the result's magnitude).
    """
    m, s = _log_sum(lt)
    w = np.exp(lt - m) / s
    rel = np.sum(w * np.expm1(np.minimum(np.where(w > 0, _ULPS * mag, 0.0), 700.0)), axis=1, keepdims=True)
    lam = m + np.log(s)
    return (lam + rel + _ULPS * (np.abs(lam) + lt.shape[1] + 4.0))[:, 0]


def _log_am1_int(q: float, sigma: float, alpha: np.ndarray) -> np.ndarray:
    """Upper bounds on log(A_alpha - 1) for integer orders alpha >= 2 (vectorised), 0 < q < 1.

    A - 1 = sum_{i=2}^{alpha} C(alpha,i) q^i (1-q)^(alpha-i) (e^{(i^2-i)/(2 sigma^2)} - 1): the
    binomial weights sum to one and the i = 0, 1 terms vanish, so every term is positive and the
    relative error of the sum is at most the largest relative error of a term plus the summation's.
    Orders up to ``_INT_BLOCK`` are summed together in full; larger ones over the windows of
    :func:`_log_am1_int_windowed`, with a rigorous bound of the terms left out.
    """
    out = np.empty(alpha.shape)
    small = alpha <= _INT_BLOCK
    if np.any(small):
        a = alpha[small][:, None]
        out[small] = _log_sum_upper(*_int_log_terms(q, sigma, a, np.arange(2.0, a.max() + 1.0)[None, :]))
    for k in np.flatnonzero(~small):
        out[k] = _log_am1_int_windowed(q, sigma, float(alpha[k]))
    return out


# --------------------------------------------------------------------------- large integer orders
def _ratio_log(q: float, sigma: float, a: float, x: float):
    """g(x) = log(v_{x+1} / v_x) = log((a-x)/(x+1)) + log(q/(1-q)) + x / sigma^2 and its error bound.

    v_i = C(a,i) q^i (1-q)^(a-i) e^{(i^2-i)/(2 sigma^2)}; g is continuous in x on [0, a-1] with
    g'(x) = 1/sigma^2 - 1/(a-x) - 1/(x+1).
    """
    parts = (math.log(a - x), -math.log1p(x), math.log(q), -math.log1p(-q), x / (sigma * sigma))
    return math.fsum(parts), _ULPS * (sum(abs(p) for p in parts) + 4.0)


def _ratio_pieces(sigma: float, a: float):
    """Breakpoints of g (where g' = 0): (a-x)(x+1) = sigma^2 (a+1), i.e. x = (a-1)/2 -+ sqrt(D),
    D = ((a+1)/2)^2 - sigma^2 (a+1). g decreases on [0, x1], increases on [x1, x2] and decreases on
    [x2, a-1] (1/(a-x) + 1/(x+1) is convex); for D <= 0 it decreases throughout. Returns (x1, x2)."""
    d = ((a + 1.0) / 2.0) ** 2 - sigma * sigma * (a + 1.0)
    if d <= 0.0:
        return ()
    r = math.sqrt(d)
    return ((a - 1.0) / 2.0 - r, (a - 1.0) / 2.0 + r)


def _peak_centres(q: float, sigma: float, a: float, bps) -> list:
    """The ends 2 and a and the local maxima of v_i: the down-crossings of g on its decreasing
    pieces (bisection). Only the speed depends on these being right, never the bound."""
    edges = [0.0, *bps, a - 1.0]
    centres = [2.0, a]
    for lo, hi in zip(edges[0::2], edges[1::2]):   # the decreasing pieces [0, x1], [x2, a-1]
        lo, hi = max(lo, 0.0), min(hi, a - 1.0)
        if lo > hi:
            continue
        if _ratio_log(q, sigma, a, lo)[0] <= 0.0:
            centres.append(lo)
        elif _ratio_log(q, sigma, a, hi)[0] >= 0.0:
            centres.append(hi + 1.0)
        else:
            for _ in range(64):
                mid = 0.5 * (lo + hi)
                if hi - lo < 0.5:
                    break
                lo, hi = (mid, hi) if _ratio_log(q, sigma, a, mid)[0] > 0.0 else (lo, mid)
            centres.append(hi)
    return centres


def _windows(centres, half: int, bps, a: float) -> list:
    """Disjoint sorted integer intervals [lo, hi] in [2, a]: centre +- half, breakpoint +- 2."""
    spans = [(c - half, c + half) for c in centres] + [(b - 2.0, b + 3.0) for b in bps]
    spans = sorted((max(2.0, math.floor(lo)), min(a, math.ceil(hi))) for lo, hi in spans)
    out = []
    for lo, hi in spans:
        if lo > hi:
            continue
        if out and lo <= out[-1][1] + 1.0:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _gap_shape(sigma: float, a: float, lo: float, hi: float):
    """"concave" if g decreases on [lo, hi] (then v_i is log-concave on [lo, hi + 1]), "convex" if
    it increases, None if neither is certain. g' = 1/sigma^2 - H with H(x) = 1/(a-x) + 1/(x+1)
    convex, so g' <= 0 on [lo, hi] iff H >= 1/sigma^2 at the clamp of its minimiser (a-1)/2, and
    g' >= 0 iff H <= 1/sigma^2 at both ends (10^-10 relative margins for the rounding)."""
    inv = 1.0 / (sigma * sigma)

    def h(x):
        return 1.0 / (a - x) + 1.0 / (x + 1.0)

    if h(min(max((a - 1.0) / 2.0, lo), hi)) >= inv * (1.0 + 1e-10):
        return "concave"
    if max(h(lo), h(hi)) <= inv * (1.0 - 1e-10):
        return "convex"
    return None


def _concave_top(q: float, sigma: float, a: float, lo: float, hi: float, w_lo: float, w_hi: float) -> float:
    """Upper bound on max_{lo <= i <= hi} log v_i where g decreases on [lo, hi - 1].

    Then log v_i <= w_lo + (i - lo) g(lo) and log v_i <= w_hi - (hi - i) g(hi - 1) (the
    increments g(j) lie between g(hi-1) and g(lo)); the smaller of the two lines is concave and
    piecewise linear, so its maximum is at an end or where the lines cross.
    """
    g_lo, e_lo = _ratio_log(q, sigma, a, lo)
    g_hi, e_hi = _ratio_log(q, sigma, a, hi - 1.0)
    s1, s2 = g_lo + e_lo, g_hi - e_hi

    def lower_line(x):
        return min(w_lo + (x - lo) * s1, w_hi - (hi - x) * s2)

    pts = [lo, hi]
    if s1 != s2:
        pts.append(min(max(lo + (w_hi - w_lo - (hi - lo) * s2) / (s1 - s2), lo), hi))
    top = max(lower_line(x) for x in pts)
    return top + _ULPS * (abs(w_lo) + abs(w_hi) + (hi - lo) * (abs(s1) + abs(s2)) + 4.0)


def _log_tail_bound(q: float, sigma: float, a: float, gaps) -> float | None:
    """Upper bound on log sum_{i in gaps} t_i (None where the shape of a gap is not certain).

    t_i <= v_i; over each gap [lo, hi], sum v_i <= (hi - lo + 1) max v_i, the maximum being at an
    end where log v is convex (:func:`_gap_shape`) and bounded by :func:`_concave_top` where it is
    concave.
    """
    ends = np.array(sorted({x for gap in gaps for x in gap}))
    lt, mag = _int_log_terms(q, sigma, np.array([[a]]), ends[None, :], expm1=False)
    w = dict(zip(ends.tolist(), (lt + 2.0 * _ULPS * mag)[0].tolist()))
    logs = []
    for lo, hi in gaps:
        top = max(w[lo], w[hi])
        if hi - lo >= 2:
            shape = _gap_shape(sigma, a, lo, hi - 1.0)
            if shape is None:
                return None
            if shape == "concave":
                top = _concave_top(q, sigma, a, lo, hi, w[lo], w[hi])
        logs.append(math.log(hi - lo + 1.0) + top)
    return float(np.logaddexp.reduce(logs))


def _log_am1_int_windowed(q: float, sigma: float, a: float) -> float:
    r"""Upper bound on log(A_a - 1) for one integer order a > ``_INT_BLOCK``, in time O(window).

    The terms t_i of the finite sum (:func:`_log_am1_int`) are summed exactly over windows around
    the ends i = 2, a and the local maxima of the majorant v_i = C(a,i) q^i (1-q)^(a-i)
    e^{(i^2-i)/(2 sigma^2)} >= t_i; the terms in between are bounded by :func:`_log_tail_bound`
    (rigorous whatever the windows). The windows grow 4-fold until that bound is below
    10^-18 of the sum, so the result is the full sum's bound up to 10^-18 relative (it sums fewer
    terms, so its rounding allowance is smaller); at worst the windows cover [2, a] and it is the
    full sum.
    """
    bps = _ratio_pieces(sigma, a)
    centres = _peak_centres(q, sigma, a, bps)
    col = np.array([[a]])
    half = _WINDOW_HALF
    while True:
        wins = _windows(centres, half, bps, a)
        idx = np.concatenate([np.arange(lo, hi + 1.0) for lo, hi in wins])
        lam = float(_log_sum_upper(*_int_log_terms(q, sigma, col, idx[None, :]))[0])
        gaps = [(h1 + 1.0, l2 - 1.0) for (_, h1), (l2, _) in zip(wins[:-1], wins[1:])]
        if not gaps:
            return lam
        tail = _log_tail_bound(q, sigma, a, gaps)
        if tail is not None and tail <= lam + _LOG_TAIL_REL:
            # log(e^lam + e^tail) = lam + log1p(e^(tail-lam)) <= lam + e^(tail-lam), rounded up
            return float(np.nextafter(lam + math.exp(tail - lam), math.inf))
        half = 4 * half if tail is not None else int(a)


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
def _eps_at(orders, q, sigma, steps, delta, convert) -> np.ndarray:
    """The conversion of T times the RDP bound at each order (an epsilon bound per order)."""
    a = np.asarray(orders, dtype=float)
    return convert(a, steps * rdp_subsampled_gaussian(a, q, sigma), delta)


def _fminbound(f, lo: float, hi: float, xatol: float, maxfun: int = 500):
    """Brent's (1973, ch. 5) bounded scalar minimisation: golden sections and parabolic steps.

    A line-by-line port of ``scipy.optimize.minimize_scalar(method="bounded")`` (same steps, same
    result), so that :func:`epsilon` does not import scipy.optimize. Returns ``(x, f(x))``.
    """
    sqrt_eps, golden = math.sqrt(2.2e-16), 0.5 * (3.0 - math.sqrt(5.0))
    a, b = lo, hi
    fulc = nfc = xf = a + golden * (b - a)
    rat = e = 0.0
    fx = ffulc = fnfc = f(xf)
    num = 1
    xm = 0.5 * (a + b)
    tol1 = sqrt_eps * abs(xf) + xatol / 3.0
    tol2 = 2.0 * tol1
    while abs(xf - xm) > tol2 - 0.5 * (b - a) and num < maxfun:
        use_golden = True
        if abs(e) > tol1:                                   # try a parabolic fit
            use_golden = False
            r = (xf - nfc) * (fx - ffulc)
            p_q = (xf - fulc) * (fx - fnfc)
            p = (xf - fulc) * p_q - (xf - nfc) * r
            p_q = 2.0 * (p_q - r)
            p = -p if p_q > 0.0 else p
            p_q, r, e = abs(p_q), e, rat
            if abs(p) < abs(0.5 * p_q * r) and _inside(p, p_q, a - xf, b - xf):
                rat = (p + 0.0) / p_q
                x = xf + rat
                if (x - a) < tol2 or (b - x) < tol2:
                    rat = tol1 * (-1.0 if xm - xf < 0 else 1.0)
            else:
                use_golden = True
        if use_golden:
            e = (a - xf) if xf >= xm else (b - xf)
            rat = golden * e
        x = xf + (-1.0 if rat < 0 else 1.0) * max(abs(rat), tol1)
        fu = f(x)
        num += 1
        if fu <= fx:
            a, b = (xf, b) if x >= xf else (a, xf)
            fulc, ffulc, nfc, fnfc, xf, fx = nfc, fnfc, xf, fx, x, fu
        else:
            a, b = (x, b) if x < xf else (a, x)
            if fu <= fnfc or nfc == xf:
                fulc, ffulc, nfc, fnfc = nfc, fnfc, x, fu
            elif fu <= ffulc or fulc == xf or fulc == nfc:
                fulc, ffulc = x, fu
        xm = 0.5 * (a + b)
        tol1 = sqrt_eps * abs(xf) + xatol / 3.0
        tol2 = 2.0 * tol1
    return xf, fx


def _inside(p, q, lo, hi) -> bool:
    """p / q strictly inside (lo, hi) for q >= 0, without dividing (the parabola test)."""
    return q * lo < p < q * hi


def _golden_int(f, lo: float, mid: float, hi: float, f_mid: float):
    """Integer golden-section search on lo < mid < hi with f(mid) <= f(lo), f(hi).

    Shrinks the bracket by about 0.618 per evaluation until hi - lo <= 2; returns the best
    ``(order, f(order))`` seen (a minimum if f is unimodal on [lo, hi]; any order is a bound).
    """
    while hi - lo > 2.0:
        if mid - lo > hi - mid:
            x = min(max(mid - round(0.381966 * (mid - lo)), lo + 1.0), mid - 1.0)
        else:
            x = max(min(mid + round(0.381966 * (hi - mid)), hi - 1.0), mid + 1.0)
        fx = f(x)
        if fx < f_mid:
            lo, hi = (lo, mid) if x < mid else (mid, hi)
            mid, f_mid = x, fx
        else:
            lo, hi = (x, hi) if x < mid else (lo, x)
    return mid, f_mid


def _search_up(q, sigma, steps, delta, convert, orders, eps):
    """Extend the order grid upward while its best order is the last one: integer orders
    a * 2^(k/4), k = 1..4, per round, up to ``_ORDER_MAX``. Returns the orders and epsilons."""
    while int(np.argmin(eps)) == orders.size - 1 and orders[-1] < _ORDER_MAX:
        top = orders[-1]
        extra = np.unique(np.maximum(np.round(top * _GROWTH ** np.arange(1, 5)), top + np.arange(1, 5)))
        orders = np.concatenate([orders, extra])
        eps = np.concatenate([eps, _eps_at(extra, q, sigma, steps, delta, convert)])
    return orders, eps


def _optimise_order(q, sigma, steps, delta, convert):
    """The order minimising the epsilon bound (every order gives an upper bound).

    The grid DEFAULT_ORDERS, extended upward while its optimum is its last order
    (:func:`_search_up`); above the grid the best integer order between the neighbours of the best
    grid order is found by :func:`_golden_int`; then, if that bracket ends at or below
    ``_FRACTIONAL_MAX``, bounded Brent (:func:`_fminbound`) over fractional orders between the
    neighbouring integers (between the grid neighbours inside DEFAULT_ORDERS). The result is never
    worse than the best grid order. Above ``_FRACTIONAL_MAX`` only integer orders are tried (a
    fractional order there costs a series of ~alpha terms): moving from the best fractional order
    to an integer one raises the bound by at most (log(1/delta) + log a) / (a - 1)^2 in absolute
    terms (the slope of the conversion term; the RDP term only falls), i.e. at most about 1/a
    relative (2.4e-4 at a = 4096), and about 1/(8 a^2) where eps is smooth in the order.
    """
    orders, eps = _search_up(q, sigma, steps, delta, convert, DEFAULT_ORDERS,
                             _eps_at(DEFAULT_ORDERS, q, sigma, steps, delta, convert))
    k = int(np.argmin(eps))
    best = (float(eps[k]), float(orders[k]))
    if not math.isfinite(best[0]):
        return best

    def f(alpha):
        return float(_eps_at([alpha], q, sigma, steps, delta, convert)[0])

    lo = orders[k - 1] if k > 0 else 1.0 + (orders[0] - 1.0) / 10.0
    hi = orders[k + 1] if k + 1 < orders.size else orders[k]
    if k >= DEFAULT_ORDERS.size - 1 and hi > best[1]:   # above the grid: the best integer order
        a, e = _golden_int(f, lo, best[1], hi, best[0])
        best = min(best, (e, a))
        lo, hi = max(lo, best[1] - 1.0), min(hi, best[1] + 1.0)
    if hi <= _FRACTIONAL_MAX and hi > lo:
        x, fx = _fminbound(f, lo, hi, 1e-7 * hi)
        best = min(best, (fx, x))
    return max(0.0, best[0]), best[1]


def require_dp_accounting(what: str):
    """Import and return the optional ``dp_accounting`` package, or raise an install hint."""
    try:
        import dp_accounting
    except ImportError as exc:  # depends on the environment; tested by hiding the module
        raise ImportError(f'{what} needs dp-accounting: pip install "dpsparse[pld]"') from exc
    return dp_accounting


def pld_loss_scale(sampling_rate, noise_multiplier) -> float:
    r"""Scale of the privacy loss of ONE step: s1 = min(q sqrt(e^{1/sigma^2} - 1), 1/sigma).

    q sqrt(e^{1/sigma^2} - 1) is the standard deviation of the likelihood ratio mu/mu0 - 1 under
    mu0 (the chi-square divergence is q^2 (e^{1/sigma^2} - 1)), hence of the privacy loss for
    small q; 1/sigma is the loss's standard deviation at q = 1. :func:`epsilon_pld` discretises
    the loss on a grid proportional to it.
    """
    q = _check_q(sampling_rate)
    s = _check_sigma(noise_multiplier)
    inv = _inv_var(s)
    return min(q * math.sqrt(math.expm1(inv)), 1.0 / s) if inv < 700.0 else 1.0 / s


class PLDInfo(NamedTuple):
    """What :func:`epsilon_pld` (and ``epsilon(..., accountant="pld")``) computed.

    Fields: ``epsilon`` -- the value returned, min(PLD, RDP) (the RDP bound alone when the PLD is
    unstable); ``gap`` -- the accuracy reached: an estimate of how far ``epsilon`` can lie above the
    exact epsilon (``inf`` when unknown); ``bound`` -- ``"pld"`` or ``"rdp"``, which of the two
    ``epsilon`` is; ``status`` -- ``"settled"`` (the PLD met its accuracy target), ``"unsettled"``
    (monotone in the grid but the target was not met within the cost budget) or ``"unstable"``
    (the PLD rose as the grid was refined, or the FFT noise of the composition reached 1e-2 delta:
    its values are not used); ``pld`` -- the PLD epsilon at the finest grid; ``pld_gap`` -- its
    difference to the previous grid; ``rdp`` -- the rigorous RDP upper bound of the same run;
    ``intervals``, ``values`` -- the grids evaluated and their PLD epsilons.
    """
    epsilon: float
    gap: float
    bound: str
    status: str
    pld: float
    pld_gap: float
    rdp: float
    intervals: tuple
    values: tuple


class PLDEpsilon(tuple):
    """``(epsilon, gap)`` of :func:`epsilon_pld`, a plain 2-tuple to unpack, with the full record in
    ``.info`` (a :class:`PLDInfo`)."""

    def __new__(cls, info: PLDInfo):
        self = super().__new__(cls, (info.epsilon, info.gap))
        self.info = info
        return self

    def __getnewargs__(self):
        return (self.info,)

    def __repr__(self) -> str:
        i = self.info
        return f"PLDEpsilon(epsilon={i.epsilon!r}, gap={i.gap!r}, bound={i.bound!r}, status={i.status!r})"


def _pld_pmfs(q: float, sigma: float, interval: float):
    """The dense pessimistic (connect-the-dots) PMFs of ONE step (remove, and add if it differs)."""
    dp_accounting = require_dp_accounting('accountant="pld"')
    pld = dp_accounting.pld.privacy_loss_distribution.from_gaussian_mechanism(
        standard_deviation=sigma, sampling_prob=q, value_discretization_interval=interval)
    pmfs = [pld._pmf_remove] if pld._pmf_add is pld._pmf_remove else [pld._pmf_remove, pld._pmf_add]
    return [p.to_dense_pmf() for p in pmfs]


_PLD_TAIL = 1e-15   # mass the composed PLD may drop at each end (as dp-accounting's self_compose)


def _pld_window(probs: np.ndarray, steps: int):
    """(lo, hi): index window of the ``steps``-fold self-convolution of ``probs`` outside which at most
    1e-15 / 2 of the mass lies at each end, by the Chernoff bound (T log M(l) + log(2 / 1e-15)) / l
    over orders l (dp-accounting's ``compute_self_convolve_bounds``, with log-spaced orders up to
    1e5 / n besides its 1/n .. 20/n: 2-3 times narrower windows for tiny q or heavy tails)."""
    n = probs.size
    g = np.geomspace(1e-2, 1e5, 16)
    orders = np.concatenate((-g, g, np.arange(-20.0, 0.0), np.arange(1.0, 21.0))) / n
    with np.errstate(divide="ignore"):
        logp = np.log(np.maximum(probs, 0.0))
    idx = np.arange(n, dtype=float)
    lo, hi = 0, (n - 1) * steps
    for chunk in np.array_split(orders, 8):
        x = logp[None, :] + chunk[:, None] * idx[None, :]
        m = np.max(x, axis=1)
        log_mgf = m + np.log(np.sum(np.exp(x - m[:, None]), axis=1))
        bound = (steps * log_mgf + math.log(2.0 / _PLD_TAIL)) / chunk
        for o, b in zip(chunk, bound):
            if math.isfinite(b):
                hi, lo = (min(hi, math.ceil(b)), lo) if o > 0 else (hi, max(lo, math.floor(b)))
    return lo, max(hi, lo)


def _pld_self_compose(pmf, steps: int, window):
    """``steps``-fold composition of a dense PMF by one FFT power on ``window`` (as dp-accounting's
    ``DensePLDPmf.self_compose``; the dropped upper tail, at most 1e-15, counts as infinite loss)."""
    dp_accounting = require_dp_accounting('accountant="pld"')
    from scipy import fft
    lo, hi = window
    size = hi - lo + 1
    n = fft.next_fast_len(max(size, pmf.size))
    out = np.roll(np.real(fft.ifft(fft.fft(pmf._probs, n) ** steps)), -lo)[:size]
    inf_mass = _PLD_TAIL - math.expm1(steps * math.log1p(-pmf._infinity_mass))
    return dp_accounting.pld.pld_pmf.DensePLDPmf(pmf._discretization, pmf._lower_loss * steps + lo, out,
                                                  inf_mass, True)


def _pld_sizes(pmfs, steps: int):
    """(points of one step, points of the composed PMFs, their windows)."""
    windows = [_pld_window(p._probs, steps) for p in pmfs]
    return sum(p.size for p in pmfs), sum(hi - lo + 1 for lo, hi in windows), windows


def _pld_cost(sizes) -> float:
    """Cost of one grid (about microseconds here): building a step point, composing a point."""
    return _PLD_COST_STEP * sizes[0] + _PLD_COST_OUT * sizes[1]


def _pld_epsilon_for_delta(pmf, delta: float):
    """(epsilon, noise) of a composed dense PMF: the smallest eps >= 0 with
    delta(eps) = inf_mass + sum_{l_i > eps} p_i (1 - e^{eps - l_i}) <= ``delta`` (dp-accounting's
    ``get_epsilon_for_delta``, vectorised: on [l_{j-1}, l_j) delta(eps) = U_j - e^eps L_j with the
    upper sums U_j = inf + sum_{i>=j} p_i, L_j = sum_{i>=j} p_i e^{-l_i}; the largest j with
    delta(l_{j-1}) > delta gives eps = log((U_j - delta) / L_j)), and the FFT noise above it:
    twice the negative mass at losses above eps (the noise has both signs)."""
    inf = float(pmf._infinity_mass)
    if inf > delta:
        return math.inf, 0.0
    p = np.asarray(pmf._probs, dtype=float)
    loss = (pmf._lower_loss + np.arange(p.size)) * pmf._discretization
    upper = inf + np.cumsum(p[::-1])[::-1]
    k = np.nonzero(upper > delta)[0]
    if k.size == 0 or loss[k[-1]] <= 0.0:
        return 0.0, 2.0 * float(-np.sum(np.minimum(p[loss > 0.0], 0.0)))
    k = int(k[-1])
    ref = float(loss[k])                    # eps <= l_k; delta(ref - 700) > delta, so start there
    s0 = int(np.searchsorted(loss, ref - 700.0))
    w = p[s0:k + 1] * np.exp(ref - loss[s0:k + 1])
    low = np.cumsum(w[::-1])[::-1] + float(np.sum(p[k + 1:] * np.exp(ref - loss[k + 1:])))
    up = upper[s0:k + 1]
    d_at = up[1:] - np.exp(loss[s0:k] - ref) * low[1:]      # delta(l_{j-1}), j = s0+1 .. k
    bad = np.nonzero(d_at > delta)[0]
    j = int(bad[-1]) + 1 if bad.size else 0
    eps = max(0.0, ref + math.log((up[j] - delta) / low[j])) if low[j] > 0.0 else max(0.0, ref)
    return eps, 2.0 * float(-np.sum(np.minimum(p[loss > eps], 0.0)))


def _pld_compose(pmfs, steps: int, delta: float, windows):
    """(epsilon, noise): the larger epsilon of the two directions after ``steps`` compositions
    (FFT, :func:`_pld_self_compose`; tail truncation 1e-15 to infinity) and the larger FFT noise
    above it (:func:`_pld_epsilon_for_delta`)."""
    eps, noise = 0.0, 0.0
    for p, w in zip(pmfs, windows):
        e, n = _pld_epsilon_for_delta(_pld_self_compose(p, steps, w), delta)
        eps, noise = max(eps, e), max(noise, n)
    return eps, noise


def compose_pld(pmfs, steps: int, delta: float) -> tuple:
    """``(epsilon, unstable)`` of ``steps`` compositions of the one-step dense PLD PMFs ``pmfs``
    (dp-accounting ``DensePLDPmf``, one per neighbouring direction): the larger epsilon of the
    directions for ``delta`` after the FFT composition of :func:`epsilon_pld`, and whether its
    floating-point noise above that epsilon reaches ``1e-2 delta`` (then the value cannot be trusted:
    the noise has both signs and can pull epsilon below the truth). One composition for every PLD
    of the package, so each gets the same check."""
    _, _, windows = _pld_sizes(pmfs, steps)
    eps, noise = _pld_compose(pmfs, steps, delta, windows)
    return eps, noise >= _PLD_NOISE * delta


def _pld_extent(q: float, sigma: float) -> float:
    """Width of ONE step's privacy loss that dp-accounting keeps: r1 - log(1 - q), with
    r1 = log(1 - q + q e^{(1 + 20 sigma)/(2 sigma^2)}) the loss at z = 1 + 10 sigma."""
    r1 = float(np.logaddexp(math.log1p(-q) if q < 1.0 else -math.inf,
                            math.log(q) + (1.0 + 20.0 * sigma) / (2.0 * sigma * sigma)))
    return r1 - (math.log1p(-q) if q < 1.0 else -r1)


def _pld_ladder(q: float, sigma: float, steps: int, delta: float, rho: float):
    """The PLD epsilons on the grids h, h/2, h/4, ... (see :func:`epsilon_pld`), with the noise of
    each: ``(intervals, values, noises)``."""
    h = min(max(2.0 * math.sqrt(rho / 0.3) * pld_loss_scale(q, sigma),
                _pld_extent(q, sigma) / _PLD_START_POINTS), _PLD_MAX_INTERVAL)
    pmfs = _pld_pmfs(q, sigma, h)
    sizes = _pld_sizes(pmfs, steps)
    while _pld_cost(sizes) * (1.0 + 2.5) > _PLD_BUDGET and h * 2.0 <= _PLD_MAX_INTERVAL:
        h *= 2.0                       # the two first grids must fit the budget
        pmfs = _pld_pmfs(q, sigma, h)
        sizes = _pld_sizes(pmfs, steps)
    intervals, values, noises, outs = [], [], [], []
    spent = 0.0
    while True:
        e, n = _pld_compose(pmfs, steps, delta, sizes[2])
        spent += _pld_cost(sizes)
        intervals.append(h)
        values.append(e)
        noises.append(n)
        outs.append(sizes[1])
        if len(values) >= 2:
            a, b = values[-2], values[-1]
            if (b > a * (1.0 + 1e-9) + 1e-12 or not math.isfinite(b) or max(noises) > _PLD_NOISE * delta
                    or (math.isfinite(a) and a - b <= rho * b + 1e-9) or len(values) >= _PLD_MAX_GRIDS):
                break
        grow = max(2.0, outs[-1] / outs[-2]) if len(outs) >= 2 and outs[-2] > 0 else 2.5
        if len(values) >= 2 and spent + _PLD_COST_STEP * 2.0 * sizes[0] + _PLD_COST_OUT * grow * sizes[1] > _PLD_BUDGET:
            break
        h /= 2.0
        pmfs = _pld_pmfs(q, sigma, h)
        sizes = _pld_sizes(pmfs, steps)
    return tuple(intervals), tuple(values), tuple(noises)


def _pld_gap(values, rho: float) -> float:
    """The accuracy claimed for the finest of the monotone ``values``: the last gap g; when it misses
    the target (g > rho eps) and an earlier gap g' exists, g / (r - 1) with r = g'/g if that is
    larger (the rest of a geometric series of ratio 1/r), or inf when the gaps do not shrink."""
    a, b = values[-2], values[-1]
    if not math.isfinite(a):
        return math.inf
    g = max(a - b, 0.0)
    if g <= rho * b + 1e-9 or len(values) < 3 or not math.isfinite(values[-3]):
        return g
    r = (values[-3] - a) / g
    return g * max(1.0, 1.0 / (r - 1.0)) if r > 1.0 else math.inf


def epsilon_pld(sampling_rate, noise_multiplier, steps, delta, *, accuracy=PLD_ACCURACY) -> PLDEpsilon:
    r"""PLD epsilon of ``steps`` Poisson-subsampled Gaussian steps, never above the RDP bound.

    dp-accounting's privacy loss distribution (Doroshenko, Ghazi, Kamath, Kumar & Manurangsi 2022,
    "Connect the dots", pessimistic: an upper bound up to floating point and its 1e-15 tail
    truncations; the one-step PMF of ``from_gaussian_mechanism``, composed ``T`` times by FFT) on the
    grids :math:`h, h/2, h/4, \dots` (at most ``_PLD_MAX_GRIDS``), starting from

    .. math:: h = \max\Big(2 \sqrt{\rho / 0.3}\; s_1,\ \frac{w}{2^{13}}\Big),\qquad
              s_1 = \min(q\sqrt{e^{1/\sigma^2}-1},\, 1/\sigma)

    (:func:`pld_loss_scale`; ``rho`` = ``accuracy``; ``w`` the width of one step's loss,
    :func:`_pld_extent`), coarsened until its first two grids fit the cost budget. The
    connect-the-dots PMF on the grid ``h`` is a mean-preserving spread (in e^{-L}) of the one on
    ``h/2``, so in exact arithmetic epsilon can only fall as the grid is refined, towards the exact
    epsilon; refinement stops when the last gap eps(2h') - eps(h') is at most ``rho eps + 1e-9``
    ("settled"), or when the next grid would exceed the budget (about 3 s here; its cost is
    predicted from the grid sizes, so the result does not depend on the machine: "unsettled").
    Measured (benchmarks): the error is second order where the loss is about Gaussian (the finest
    value is within about gap/3 of the exact one) and between first and second order for tiny q.

    The PLD is "unstable", and not used, when it rises as the grid is refined or when the FFT noise
    of the composition (twice its negative mass above epsilon) reaches 1e-2 delta:
    for tiny delta and many steps the FFT's relative error ~T * 1e-16 swamps the tail (q = 1e-6,
    sigma = 0.5, T = 1e6, delta = 1e-10 gave 0.92, 9.84, 0.80, 0.92, 11.7 on successive grids).

    Returned: ``min(PLD, RDP)``, with RDP the rigorous bound of :func:`epsilon` (Balle et al.
    conversion) of the same run; the RDP bound alone when the PLD is unstable. The gap is the
    accuracy reached (:func:`_pld_gap`): the last difference between grids (widened by the ratio of
    the last two differences when the target was missed, ``inf`` when they do not shrink or the
    PLD is unstable). Since min(PLD, RDP) <= PLD, it bounds the returned value's excess over the
    exact epsilon whenever it bounds the PLD's.

    Parameters
    ----------
    sampling_rate, noise_multiplier, steps, delta
        As for :func:`epsilon`.
    accuracy : float in (0, 0.1]
        Target relative gap between the last two grids.

    Returns
    -------
    PLDEpsilon
        The tuple ``(epsilon, gap)``; ``.info`` is the :class:`PLDInfo` record (which bound,
        status, the PLD and RDP values, the grids).
    """
    q = _check_q(sampling_rate)
    s = _check_sigma(noise_multiplier)
    t = _check_steps(steps)
    d = _check_delta(delta)
    rho = check_real("accuracy", accuracy, low=0.0, high=0.1, low_open=True)
    rdp = epsilon(q, s, t, d)[0]
    intervals, values, noises = _pld_ladder(q, s, t, d, rho)
    a, b = values[-2], values[-1]
    unstable = (b > a * (1.0 + 1e-9) + 1e-12 or max(noises) > _PLD_NOISE * d
                or any(y > x * (1.0 + 1e-9) + 1e-12 for x, y in zip(values, values[1:])))
    pld_gap = a - b if math.isfinite(a) and math.isfinite(b) else math.inf
    if unstable or not math.isfinite(b):
        gap, status, eps, bound = math.inf, "unstable" if unstable else "unsettled", rdp, "rdp"
    else:
        gap = _pld_gap(values, rho)
        status = "settled" if pld_gap <= rho * b + 1e-9 else "unsettled"
        eps, bound = (b, "pld") if b <= rdp else (rdp, "rdp")
    return PLDEpsilon(PLDInfo(eps, gap, bound, status, b, pld_gap, rdp, intervals, values))


def epsilon(sampling_rate, noise_multiplier, steps, delta, *, orders=None, accountant="rdp",
            conversion="balle"):
    r"""(epsilon, delta)-DP of ``steps`` steps of the Poisson-subsampled Gaussian mechanism.

    RDP accountant (default): R(alpha) = T * eps_SGM(alpha) (RDP composes additively; the cost
    does not grow with T), converted with Balle et al. 2020 Thm 21 (:func:`epsilon_from_rdp`) or
    the classic Mironov 2017 Prop. 3 (``conversion="classic"``). With ``orders=None`` the default
    grid {1 + x/10 : x=1..99} U {12..63} is used, extended upward while the optimum sits at its
    top edge, and the best grid order is refined by a bounded scalar minimisation between its
    neighbours (the result is never worse than the grid). With explicit ``orders``, only those.

    PLD accountant (``accountant="pld"``): :func:`epsilon_pld`, dp-accounting's privacy loss
    distribution of the same steps on a ladder of grids chosen from ``T`` and the accuracy target,
    never above the RDP bound: returns ``(min(PLD, RDP), info)`` with ``info`` a :class:`PLDInfo`
    (``info.bound`` says which of the two the value is, ``info.gap`` the accuracy reached,
    ``info.status`` whether the PLD settled; an unstable PLD gives the RDP bound).

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
    (float, float) or (float, PLDInfo)
        (epsilon, optimal order) for the RDP accountant; (epsilon, :class:`PLDInfo`) for the PLD one.
    """
    q = _check_q(sampling_rate)
    s = _check_sigma(noise_multiplier)
    t = _check_steps(steps)
    d = _check_delta(delta)
    check_choice("accountant", accountant, ACCOUNTANTS)
    check_choice("conversion", conversion, _CONVERSIONS)
    if accountant == "pld":
        res = epsilon_pld(q, s, t, d)
        return res[0], res.info
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


def _root_bracketed(g, lo: float, g_lo: float, hi: float, g_hi: float, xtol: float) -> float:
    """The end ``hi`` of a bracket [lo, hi] with g(lo) > 0 >= g(hi), shrunk to width <= xtol.

    Illinois false position (Dowell & Jarratt 1971: the value kept at an end retained twice is
    halved, so both ends converge superlinearly), bisecting when a value is not finite or a step
    fails to halve the bracket; ``g(hi) <= 0`` holds at every step (it was evaluated).
    """
    side = stalls = 0   # side: the end moved last (-1 lo, +1 hi); stalls: steps not halving
    for _ in range(200):
        width = hi - lo
        if width <= xtol:
            break
        x = 0.5 * (lo + hi)
        if math.isfinite(g_lo) and math.isfinite(g_hi) and stalls < 2:
            x = min(max(hi - g_hi * width / (g_hi - g_lo), lo + 0.25 * xtol), hi - 0.25 * xtol)
        gx = g(x)
        if gx > 0:
            g_hi = g_hi / 2.0 if side == -1 else g_hi
            lo, g_lo, side = x, gx, -1
        else:
            g_lo = g_lo / 2.0 if side == 1 else g_lo
            hi, g_hi, side = x, gx, 1
        stalls = stalls + 1 if hi - lo > 0.5 * width else 0
    return hi


def sigma_guess(sampling_rate, steps, epsilon, delta) -> float:
    r"""Start of the bracket search of :func:`calibrate_sigma`, clipped to :math:`[2^{-2}, 2^{40}]`:

    .. math:: \sigma_0 = \frac{q\sqrt{2T\log(1/\delta)}}{\varepsilon}

    (for large sigma the subsampled Gaussian composed ``T`` times is about mu-GDP with
    :math:`\mu = q\sqrt{T}/\sigma`, and mu-GDP gives :math:`\varepsilon \approx \mu\sqrt{2\log(1/\delta)}`;
    Bu, Dong, Long & Su 2020). Only the speed of the search depends on it.

    Parameters
    ----------
    sampling_rate : float in (0, 1]
    steps : int >= 1
    epsilon : float > 0
    delta : float in (0, 1)

    Returns
    -------
    float
    """
    q, t = _check_q(sampling_rate), _check_steps(steps)
    e = check_real("epsilon", epsilon, low=0.0, low_open=True)
    d = _check_delta(delta)
    return min(max(q * math.sqrt(2.0 * t * math.log(1.0 / d)) / e, 0.25), 2.0**40)


def _unreachable(target: float) -> ValueError:
    return ValueError(f"epsilon={target!r} cannot be reached with noise_multiplier <= 2**60")


def calibrate_sigma(eps_of_sigma, target, sigma0, *, rtol=1e-7, error=None) -> float:
    r"""Smallest sigma with ``eps_of_sigma(sigma) <= target``, for a non-increasing ``eps_of_sigma``.

    The search shared by :func:`calibrate_noise` and
    :func:`dptheory.selection.calibrate_noise_selected`. With
    :math:`g(x) = \varepsilon(e^x) - \text{target}` on :math:`x = \log\sigma`:

    1. bracket: from :math:`x_0 = \log\sigma_0`, step by :math:`\log 2` up while
       :math:`g > 0` (raise ``error`` once :math:`\sigma > 2^{60}`), or down while :math:`g \le 0`
       (return the last sigma meeting the target once :math:`\sigma < 2^{-30}`);
    2. shrink the bracket :math:`[x_{lo}, x_{hi}]`, :math:`g(x_{lo}) > 0 \ge g(x_{hi})`, by Illinois
       false position (Dowell & Jarratt 1971) until :math:`x_{hi} - x_{lo} \le` ``rtol``.

    Returns :math:`\sigma_{hi} = e^{x_{hi}}`, an evaluated point meeting the target; every sigma at
    or below :math:`\sigma_{hi} e^{-\mathrm{rtol}}` misses it when ``eps_of_sigma`` is non-increasing.

    Parameters
    ----------
    eps_of_sigma : callable
        ``eps_of_sigma(sigma) -> float``, non-increasing in sigma (a value may be ``inf``).
    target : float > 0
        The epsilon to meet.
    sigma0 : float > 0
        Where the bracket search starts (e.g. :func:`sigma_guess`); only the speed depends on it.
    rtol : float in [1e-12, 0.1]
        Width of the final bracket on log sigma (default 1e-7).
    error : ValueError, optional
        Raised when the target is missed at every sigma up to :math:`2^{60}` (default: one naming
        ``epsilon`` and the bound).

    Returns
    -------
    float
        The noise multiplier, in :math:`[2^{-30}, 2^{60}]`.

    Raises
    ------
    ValueError
        Naming the parameter for an invalid argument, or ``error`` for an unreachable target.
    """
    if not callable(eps_of_sigma):
        raise ValueError(f"eps_of_sigma must be a callable sigma -> epsilon, got {eps_of_sigma!r}")
    target = check_real("target", target, low=0.0, low_open=True)
    x0 = math.log(check_real("sigma0", sigma0, low=0.0, low_open=True))
    tol = check_real("rtol", rtol, low=1e-12, high=0.1)

    def g(log_sigma):
        return eps_of_sigma(math.exp(log_sigma)) - target

    bracket = _bracket_log_sigma(g, x0)
    if bracket is None:
        raise _unreachable(target) if error is None else error
    if len(bracket) == 1:
        return math.exp(bracket[0])
    return math.exp(_root_bracketed(g, *bracket, tol))


def _bracket_log_sigma(g, x0: float):
    """``(lo, g_lo, hi, g_hi)`` with g(lo) > 0 >= g(hi), stepping log 2 from ``x0``; ``(hi,)`` when
    g <= 0 still below sigma = 2^-30; None when g > 0 still above 2^60 (:func:`calibrate_sigma`)."""
    step = math.log(2.0)
    lo = hi = x0
    g_lo = g_hi = g(hi)
    if g_hi > 0:
        while g_hi > 0:
            lo, g_lo, hi = hi, g_hi, hi + step
            if hi > math.log(2.0**60):
                return None
            g_hi = g(hi)
    else:
        while g_lo <= 0:
            hi, g_hi, lo = lo, g_lo, lo - step
            if lo < math.log(2.0**-30):
                return (hi,)
            g_lo = g(lo)
    return lo, g_lo, hi, g_hi


def calibrate_noise(sampling_rate, steps, epsilon, delta, *, accountant="rdp", conversion="balle"):
    r"""Smallest noise multiplier sigma with epsilon(q, sigma, T, delta) <= ``epsilon``.

    epsilon is strictly decreasing in sigma (docs/theory.md §1.4), so the target is bracketed by
    doubling / halving sigma from the guess sigma0 = q sqrt(2 T log(1/delta)) / epsilon (clipped
    to [1/4, 2^40]; :func:`sigma_guess`) and the crossing is found on log sigma by Illinois false
    position to a relative tolerance of 1e-7 (the task asks for 1e-4), by :func:`calibrate_sigma`.
    The returned sigma is the upper end of the final bracket, so it always meets the target.

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
        The noise multiplier (at most 2^60; 2^-30 if even that meets the target).
    """
    q = _check_q(sampling_rate)
    t = _check_steps(steps)
    target = check_real("epsilon", epsilon, low=0.0, low_open=True)
    d = _check_delta(delta)
    check_choice("accountant", accountant, ACCOUNTANTS)
    check_choice("conversion", conversion, _CONVERSIONS)
    eps_fn = globals()["epsilon"]

    def eps_of_sigma(sigma):
        return eps_fn(q, sigma, t, d, accountant=accountant, conversion=conversion)[0]

    return calibrate_sigma(eps_of_sigma, target, sigma_guess(q, t, target, d))


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
