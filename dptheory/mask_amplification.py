r"""OPTIONAL amplified accounting of clip-then-mask random-k DP-SGD (issue 14 item 4).

**This is an option, not the toolkit's default.** Chains built with ``sims.mechanisms.random_k``
(and every other data-independent mask) are accounted as dense DP-SGD by
:func:`dptheory.accounting.epsilon` (docs/theory.md §1.6); that stays valid and stays the default.
The functions here give a smaller, still rigorous, epsilon for ONE specific setting, derived in
``docs/mask_amplification.md`` and ``proofs/mask_amplification.py``:

Assumptions (all of them are needed):

1. **clip then mask**: every per-example gradient is clipped to norm ``C`` on ALL ``d``
   coordinates, the clipped gradients are summed, and only then is the mask applied
   (``random_k(k, order="clip_then_mask")``). NOT mask-then-clip: there the masked gradient is
   clipped after masking, its norm can be ``C`` whatever the mask, and nothing is gained.
2. **fresh, data-independent, uniform mask each step**: a uniformly random ``k``-subset ``S`` of
   the ``d`` coordinates, drawn independently of the data and of all previous steps (with
   ``steps_per_mask > 1``: one mask shared by each block of that many consecutive steps, see below).
3. **noise only on the kept coordinates**: ``N(0, sigma^2 C^2)`` on each coordinate of ``S``;
4. **the support is released**: the adversary sees ``S`` and the kept noisy values (the bound
   does not rely on ``S`` being secret).
5. Poisson sampling at rate ``q``, add/remove adjacency (the toolkit's conventions).

Result. Write ``f = k/d`` (the keep fraction) and ``A_alpha(x)`` for the Renyi moment of the
Poisson-subsampled Gaussian at squared sensitivity ``x`` (in units of ``C^2``). Given ``S`` the step
is that mechanism with ``x_S = ||Delta_S||^2 / C^2 in [0, 1]`` (``Delta`` the canary's clipped
gradient); ``S`` has the same law in both worlds, so the joint moment is ``E_S[A_alpha(x_S)]``. For
an INTEGER order ``alpha >= 2``, ``A_alpha(x) = sum_j C(alpha, j) (1-q)^(alpha-j) q^j
exp(j (j-1) x / (2 sigma^2))`` is convex with ``A_alpha(0) = 1``, so it lies below its chord on
[0, 1], and ``E_S[x_S] = f ||Delta||^2 / C^2 <= f``:

.. math::
    \varepsilon_{\rm mask}(\alpha) = \frac{1}{\alpha - 1}
        \log\big(1 - f + f\, e^{(\alpha-1)\,\varepsilon_{\rm SGM}(\alpha)}\big),

with ``eps_SGM`` = :func:`dptheory.accounting.rdp_subsampled_gaussian`. A canary with all its
gradient on one coordinate (a Dirac canary) attains it: the bound is the exact worst case over
canaries at every integer order. Fresh independent masks compose additively over ``T`` steps.
Fractional orders are NOT covered (the convexity argument needs integer orders); the epsilon
functions therefore minimise over integer orders, and also take the minimum with the dense
accountant's epsilon (valid for any mask), so they never exceed it.

Layer-wise random-k (``k_l`` of ``d_l`` kept in layer ``l``): ``E x_S <= max_l k_l / d_l``, so pass
``keep_fraction = max_l k_l / d_l``.

Masks shared by ``m`` consecutive steps (``steps_per_mask = m``; e.g. a random freeze redrawn
each epoch): given ``S`` the ``m`` steps compose to ``A_alpha(x_S)^m``, still convex in ``x_S`` with
value 1 at 0, so one block has ``log(1 - f + f e^{(alpha-1) m eps_SGM(alpha)}) / (alpha - 1)``. This
is a separate case: the default ``steps_per_mask = 1`` is the fresh-mask case above.

One step, ``q = 1`` (the (epsilon, delta) view): with a Dirac canary the release is ``S`` and, when
the canary's coordinate is in ``S`` (probability ``f``), a Gaussian shift; the hockey-stick
divergence is ``f`` times the Gaussian one. At ``sigma = 1``, ``d = 10``, ``k = 1``:
``delta(eps = 1) = 0.1 * 0.1269 = 0.0127`` against ``0.1269`` for dense DP-SGD.

Sources: the subsampled-Gaussian moment of Mironov, Talwar & Zhang 2019 ("Renyi differential
privacy of the sampled Gaussian mechanism", Sec. 3.2); the mixture-over-masks step is this
toolkit's own derivation (issue 14 item 4). arXiv 2503.03043 studies privacy amplification by
random sparsification; this module was derived independently and not checked line by line
against it.
"""
from __future__ import annotations

import math

import numpy as np

from . import accounting as _acc
from .validation import check_int, check_real

__all__ = ["MASK_ORDERS", "calibrate_noise_random_mask", "epsilon_random_mask", "rdp_random_mask_gaussian"]

_ULP = float(np.finfo(float).eps)
#: the integer orders :func:`epsilon_random_mask` minimises over: 2..256, then integers growing by
#: 2^(1/4) up to 2^20 (a fixed grid, so the result is monotone in every parameter).
MASK_ORDERS = np.unique(np.concatenate([np.arange(2.0, 257.0),
                                        np.round(256.0 * 2.0 ** (np.arange(1, 49) / 4.0))]))


def _check_keep_fraction(keep_fraction) -> float:
    return check_real("keep_fraction", keep_fraction, low=0.0, high=1.0, low_open=True)


def _check_integer_orders(orders) -> np.ndarray:
    a = _acc.check_orders(orders)
    if np.any(a < 2.0) or np.any(a != np.round(a)):
        bad = a[(a < 2.0) | (a != np.round(a))][0]
        raise ValueError(f"orders must be integers >= 2 (the mask amplification is proved for integer orders "
                         f"only), got {bad!r}")
    return a


def _mix(orders: np.ndarray, rdp: np.ndarray, f: float) -> np.ndarray:
    """Upper bound on ``log(1 - f + f exp((alpha-1) rdp)) / (alpha - 1)`` (rounding included)."""
    x = (orders - 1.0) * rdp
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        small = np.log1p(f * np.expm1(np.minimum(x, 1.0)))
        large = np.logaddexp(math.log1p(-f), math.log(f) + x) if f < 1.0 else x
        out = np.where(x <= 1.0, small, large) / (orders - 1.0)
    out = np.where(np.isinf(rdp), np.inf, out)
    return np.nextafter(out * (1.0 + 8.0 * _ULP), np.inf)


def rdp_random_mask_gaussian(orders, sampling_rate, noise_multiplier, keep_fraction, *, steps_per_mask=1):
    r"""RDP of one clip-then-mask random-k step (OPTIONAL amplified accounting; integer orders only).

    .. math::
        \varepsilon(\alpha) = \frac{1}{\alpha - 1}
            \log\big(1 - f + f\, e^{(\alpha-1)\, m\, \varepsilon_{\rm SGM}(\alpha)}\big)

    for ``m = steps_per_mask`` steps sharing one mask (``m = 1``: one step with a fresh mask), with
    ``f = keep_fraction = k/d`` and ``eps_SGM`` = :func:`dptheory.accounting.rdp_subsampled_gaussian`.
    Derived in ``docs/mask_amplification.md`` (chord bound of the convex subsampled-Gaussian moment
    over the masks; exact for a canary on one coordinate). It holds ONLY under the assumptions of
    the module docstring: clip then mask, a uniform data-independent mask drawn afresh (per block
    of ``m`` steps), noise on the kept coordinates only, support released. The toolkit's default
    accounting of ``random_k`` chains stays dense DP-SGD (:func:`dptheory.accounting.epsilon`).

    Parameters
    ----------
    orders : int or array_like of int
        Renyi orders, integers >= 2 (fractional orders are not covered by the proof).
    sampling_rate : float in (0, 1]
        Poisson sampling rate q.
    noise_multiplier : float > 0
        sigma (noise std on each kept coordinate / C).
    keep_fraction : float in (0, 1]
        ``k/d`` (layer-wise random-k: ``max_l k_l / d_l``). ``1`` gives the dense RDP exactly.
    steps_per_mask : int >= 1
        Consecutive steps that share one mask (default 1: a fresh mask every step).

    Returns
    -------
    numpy.ndarray
        The RDP of one block of ``steps_per_mask`` steps per order (an upper bound; compose blocks
        by adding); equal to ``steps_per_mask * rdp_subsampled_gaussian`` when ``keep_fraction = 1``.
    """
    a = _check_integer_orders(orders)
    q = check_real("sampling_rate", sampling_rate, low=0.0, high=1.0, low_open=True)
    s = check_real("noise_multiplier", noise_multiplier, low=0.0, low_open=True)
    f = _check_keep_fraction(keep_fraction)
    m = check_int("steps_per_mask", steps_per_mask, low=1)
    dense = m * _acc.rdp_subsampled_gaussian(a, q, s)
    if f == 1.0:
        return dense
    # 1 - f + f A <= A: the dense value bounds the mixture too (and absorbs the rounding margin of _mix)
    return np.minimum(_mix(a, dense, f), dense)


def _rdp_total(q, s, steps, f, m, orders):
    """RDP of ``steps`` steps: full blocks of ``m`` plus one shorter block (each block's mask fresh)."""
    full, rest = divmod(steps, m)
    total = full * rdp_random_mask_gaussian(orders, q, s, f, steps_per_mask=m)
    if rest:
        total = total + rdp_random_mask_gaussian(orders, q, s, f, steps_per_mask=rest)
    return total


def epsilon_random_mask(sampling_rate, noise_multiplier, steps, delta, keep_fraction, *, steps_per_mask=1):
    r"""(epsilon, delta) of ``steps`` clip-then-mask random-k steps: the OPTIONAL amplified accounting.

    ``min( epsilon_from_rdp(MASK_ORDERS, R), epsilon(q, sigma, T, delta) )`` with ``R`` the composed
    :func:`rdp_random_mask_gaussian` (``T`` fresh masks: ``T`` times the one-step RDP; with
    ``steps_per_mask = m``: ``floor(T/m)`` blocks of ``m`` plus one block of ``T mod m``), converted
    by :func:`dptheory.accounting.epsilon_from_rdp` (Balle et al. 2020) over the fixed integer grid
    :data:`MASK_ORDERS`, and ``epsilon`` the dense accountant (valid for any data-independent mask).
    Both are upper bounds, so the minimum is one; it never exceeds the dense epsilon, equals it at
    ``keep_fraction = 1``, and is non-increasing as the keep fraction falls (fixed order grid).

    Valid ONLY under the module docstring's assumptions (clip then mask; a fresh uniform
    data-independent mask per step or per block; noise only on kept coordinates; support
    released). This is an option: the chain's default accounting stays dense DP-SGD.

    Parameters
    ----------
    sampling_rate : float in (0, 1]
    noise_multiplier : float > 0
    steps : int >= 1
    delta : float in (0, 1)
    keep_fraction : float in (0, 1]
        ``k/d`` (layer-wise: ``max_l k_l / d_l``).
    steps_per_mask : int >= 1

    Returns
    -------
    (float, float)
        (epsilon, the order attaining it: an integer order of the amplified bound, or the dense
        accountant's order when the dense bound is the smaller).
    """
    q = check_real("sampling_rate", sampling_rate, low=0.0, high=1.0, low_open=True)
    s = check_real("noise_multiplier", noise_multiplier, low=0.0, low_open=True)
    t = check_int("steps", steps, low=1)
    d = check_real("delta", delta, low=0.0, high=1.0, low_open=True, high_open=True)
    f = _check_keep_fraction(keep_fraction)
    m = check_int("steps_per_mask", steps_per_mask, low=1)
    dense = _acc.epsilon(q, s, t, d)
    if f == 1.0:
        return dense
    amp = _acc.epsilon_from_rdp(MASK_ORDERS, _rdp_total(q, s, t, f, m, MASK_ORDERS), d)
    return amp if amp[0] < dense[0] else dense


def calibrate_noise_random_mask(sampling_rate, steps, epsilon, delta, keep_fraction, *, steps_per_mask=1):
    r"""Smallest noise multiplier with :func:`epsilon_random_mask` ``<= epsilon`` (OPTIONAL accounting).

    :func:`epsilon_random_mask` is non-increasing in sigma (every order's RDP is, and so is the
    dense epsilon), so the target is bracketed by doubling / halving sigma from the dense
    :func:`dptheory.accounting.calibrate_noise` value (an upper end: the amplified epsilon is never
    above the dense one) and found by bisection-type search on log sigma to a relative tolerance
    of 1e-7; the returned sigma is the upper end of the final bracket, so it meets the target.
    Same assumptions as :func:`epsilon_random_mask` (clip then mask, fresh uniform masks, noise on
    kept coordinates only): the default calibration of the chain stays the dense one.

    Returns
    -------
    float
        The noise multiplier.
    """
    q = check_real("sampling_rate", sampling_rate, low=0.0, high=1.0, low_open=True)
    t = check_int("steps", steps, low=1)
    target = check_real("epsilon", epsilon, low=0.0, low_open=True)
    d = check_real("delta", delta, low=0.0, high=1.0, low_open=True, high_open=True)
    f = _check_keep_fraction(keep_fraction)
    m = check_int("steps_per_mask", steps_per_mask, low=1)
    hi = _acc.calibrate_noise(q, t, target, d)
    if f == 1.0:
        return hi

    def g(log_sigma):
        return epsilon_random_mask(q, math.exp(log_sigma), t, d, f, steps_per_mask=m)[0] - target

    hi_l = math.log(hi)
    g_hi = g(hi_l)
    lo_l = hi_l
    g_lo = g_hi
    while g_lo <= 0:
        hi_l, g_hi, lo_l = lo_l, g_lo, lo_l - math.log(2.0)
        if lo_l < math.log(2.0**-30):
            return math.exp(hi_l)
        g_lo = g(lo_l)
    return math.exp(_acc._root_bracketed(g, lo_l, g_lo, hi_l, g_hi, 1e-7))
