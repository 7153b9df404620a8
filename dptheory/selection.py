r"""Private top-k support selection: the Gumbel / peeling exponential mechanism, its composition
with Gaussian noise on the selected coordinates, and Poisson subsampling of the pair
(docs/selection.md).

Setting (add/remove adjacency). One step of DP-SGD clips every example's gradient to L2 norm
``C`` and sums over the Poisson batch: ``s = sum_i clip_C(g_i)``. The utility of coordinate ``j``
is :math:`u_j = |s_j|`; adding or removing one example changes ``s`` by a vector of L2 norm at
most ``C``, so every :math:`u_j` moves by at most :math:`\Delta_\infty = C`, up for some
coordinates and down for others (the scores are not monotone).

Selection. Add independent Gumbel noise of scale :math:`b` to every score and keep the ``k``
largest (one-shot top-k). Durfee & Rogers (2019, "Practical differentially private top-k
selection with pay-what-you-get composition", NeurIPS, Lemma 4.2): the ordered output has the law
of ``k`` rounds of the peeling exponential mechanism (McSherry & Talwar 2007), each picking ``j``
among the remaining coordinates with probability :math:`\propto e^{u_j / b}`. With
:math:`b = 2 \Delta_\infty k / \varepsilon` each round is :math:`(\varepsilon/k)`-bounded-range,
hence :math:`(\varepsilon/k)`-DP and :math:`(\varepsilon/k)^2/8`-zCDP (Cesar & Rogers 2021,
"Bounding, concentrating, and truncating: unifying privacy loss composition for data analytics",
ALT). Over the ``k`` rounds (adaptive composition):

.. math::
    \varepsilon_{\mathrm{sel}}(\alpha) = \min\Big(\frac{\alpha \varepsilon^2}{8k},\ \varepsilon\Big)

(zCDP :math:`\rho` is RDP :math:`\alpha\rho`, Bun & Steinke 2016; pure :math:`\varepsilon`-DP
bounds every Renyi divergence by :math:`\varepsilon`).

One batch-level step ``M`` = selection ``S`` of the clipped sum, then
:math:`N(0, \sigma^2 C^2)` noise on the coordinates of ``S`` of the same sum (L2 sensitivity of
:math:`s_S` at most ``C``). Adaptive RDP composition (Mironov 2017, Prop. 1):

.. math:: \varepsilon_M(\alpha) = \varepsilon_{\mathrm{sel}}(\alpha) + \frac{\alpha}{2\sigma^2}.

Poisson subsampling of ``M`` at rate ``q``: ``M`` is not a Gaussian mechanism, so the tight
subsampled-Gaussian formula does not apply; the general upper bound of Zhu & Wang (2019,
"Poisson subsampled Renyi differential privacy", ICML, Thm 6) does, for integer
:math:`\alpha \ge 2`:

.. math::
    \varepsilon_{M\circ\mathrm{PS}}(\alpha) \le \frac{1}{\alpha-1}\log\Big[(1-q)^{\alpha-1}(1+(\alpha-1)q)
    + \binom{\alpha}{2} q^2 (1-q)^{\alpha-2} e^{\varepsilon_M(2)}
    + 3\sum_{\ell=3}^{\alpha}\binom{\alpha}{\ell} q^\ell (1-q)^{\alpha-\ell} e^{(\ell-1)\varepsilon_M(\ell)}\Big].

Running ``M`` on a subsample costs at most ``eps_M`` too (no amplification), so the step's RDP is
the smaller of the two at each order. ``T`` steps cost ``T`` times it (composition), converted to
``(epsilon, delta)`` by :func:`dptheory.accounting.epsilon_from_rdp` over :data:`SELECTION_ORDERS`.

PLD (:func:`epsilon_pld_selected_gaussian`). The same step is dominated by a pair of distributions:
``k`` rounds of randomized response at :math:`\varepsilon/k` (each round is :math:`(\varepsilon/k)`-DP;
Kairouz, Oh & Viswanath 2015) times :math:`(N(1,\sigma^2), N(0,\sigma^2))` (Zhu, Dong & Wang 2022,
Thm 10), and its Poisson subsample by :math:`((1-q)Q + qP, Q)` and the reverse pair (their Thm 11).
The loss of that pair (:func:`privacy_loss_selected_gaussian`) is discretised pessimistically
(connect-the-dots), composed ``T`` times by FFT and converted to epsilon; relative accuracy about 2e-3.

Calibration. That epsilon is non-increasing in sigma and tends, as sigma -> inf, to the cost of the
selection alone (:func:`epsilon_selection_limit`); :func:`calibrate_noise_selected` finds the smallest
sigma meeting a target above that limit.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
from scipy import special

from .accounting import (calibrate_sigma, check_orders, compose_pld, epsilon_from_rdp, rdp_gaussian, require_dp_accounting,
                         sigma_guess)
from .validation import check_delta, check_finite_array, check_int, check_real

__all__ = [
    "MAX_EXACT_K",
    "SELECTION_ORDERS",
    "CALIBRATION_RTOL",
    "calibrate_noise_selected",
    "PLD_SELECTION_ACCURACY",
    "epsilon_pld_selected_gaussian",
    "epsilon_selected_gaussian",
    "epsilon_selection_limit",
    "gumbel_scale",
    "privacy_loss_selected_gaussian",
    "prob_exact_top_k",
    "rdp_poisson_general",
    "rdp_poisson_selected_gaussian",
    "rdp_selected_gaussian",
    "rdp_top_k_selection",
    "selection_zcdp",
]

#: largest ``k`` for which :func:`prob_exact_top_k` evaluates its ``2^k``-term sum.
MAX_EXACT_K = 16

#: the integer order grid of :func:`epsilon_selected_gaussian`: 2..256 and a few larger orders.
SELECTION_ORDERS = np.concatenate([np.arange(2.0, 257.0), np.array([320.0, 384.0, 512.0, 768.0, 1024.0])])

#: default relative tolerance of :func:`calibrate_noise_selected` on the noise multiplier.
CALIBRATION_RTOL = 1e-7

_ULP = float(np.finfo(float).eps)
_MARGIN = 64.0 * _ULP   # rounding allowance per unit of magnitude of each log-term (64 ulps)


def _eps(epsilon) -> float:
    return check_real("selection_epsilon", epsilon, low=0.0, low_open=True)


def _k(k) -> int:
    return check_int("k", k, low=1)


def _sigma(value) -> float:
    return check_real("noise_multiplier", value, low=0.0, low_open=True)


def _rate(value) -> float:
    return check_real("sampling_rate", value, low=0.0, high=1.0, low_open=True)


def gumbel_scale(k, selection_epsilon, clip) -> float:
    r"""Scale of the Gumbel noise added to each score ``|s_j|`` for an epsilon-DP top-k.

    .. math:: b = \frac{2 \Delta_\infty k}{\varepsilon},\qquad \Delta_\infty = C

    (per round :math:`\varepsilon/k`; the exponential mechanism of a non-monotone score of
    sensitivity :math:`\Delta` at budget :math:`\varepsilon_r` has scale :math:`2\Delta/\varepsilon_r`;
    McSherry & Talwar 2007, Durfee & Rogers 2019 Lemma 4.2).

    Parameters
    ----------
    k : int >= 1
        Number of coordinates selected.
    selection_epsilon : float > 0
        Pure-DP budget of the whole selection.
    clip : float > 0
        Clip norm C (bounds the L_inf sensitivity of the clipped sum under add/remove).

    Returns
    -------
    float
    """
    k, eps = _k(k), _eps(selection_epsilon)
    c = check_real("clip", clip, low=0.0, low_open=True)
    return 2.0 * c * k / eps


def selection_zcdp(k, selection_epsilon) -> float:
    r"""zCDP parameter :math:`\rho = \varepsilon^2 / (8k)` of the epsilon-DP Gumbel top-k.

    ``k`` rounds of the exponential mechanism, each :math:`(\varepsilon/k)`-bounded-range and so
    :math:`(\varepsilon/k)^2/8`-zCDP (Cesar & Rogers 2021); zCDP adds over adaptive rounds
    (Bun & Steinke 2016, Lemma 2.3).

    Parameters
    ----------
    k : int >= 1
    selection_epsilon : float > 0

    Returns
    -------
    float
    """
    k, eps = _k(k), _eps(selection_epsilon)
    return eps * eps / (8.0 * k)


def rdp_top_k_selection(orders, k, selection_epsilon) -> np.ndarray:
    r"""RDP of the epsilon-DP Gumbel top-k: :math:`\min(\alpha\varepsilon^2/(8k), \varepsilon)`.

    The zCDP bound :math:`\alpha\rho` (:func:`selection_zcdp`) and the pure-DP bound
    :math:`D_\alpha \le D_\infty \le \varepsilon`, whichever is smaller (batch level).

    Parameters
    ----------
    orders : float or array of floats in (1, inf)
    k : int >= 1
    selection_epsilon : float > 0

    Returns
    -------
    numpy.ndarray
        One value per order.
    """
    a = check_orders(orders)
    rho = selection_zcdp(k, selection_epsilon)
    return np.minimum(a * rho, float(selection_epsilon))


def rdp_selected_gaussian(orders, noise_multiplier, k, selection_epsilon) -> np.ndarray:
    r"""Batch-level RDP of selection then Gaussian noise on the selected coordinates.

    .. math:: \varepsilon_M(\alpha) = \min\Big(\frac{\alpha\varepsilon^2}{8k}, \varepsilon\Big) + \frac{\alpha}{2\sigma^2}

    Adaptive composition of RDP (Mironov 2017, Prop. 1) of :func:`rdp_top_k_selection` and the
    Gaussian mechanism on :math:`s_S` (L2 sensitivity at most ``C``, noise std
    :math:`\sigma C`; Mironov 2017, Prop. 7).

    Parameters
    ----------
    orders : float or array of floats in (1, inf)
    noise_multiplier : float > 0
    k : int >= 1
    selection_epsilon : float > 0

    Returns
    -------
    numpy.ndarray
    """
    return rdp_top_k_selection(orders, k, selection_epsilon) + rdp_gaussian(orders, _sigma(noise_multiplier))


def _int_orders(orders) -> tuple:
    """``(orders, their ceilings as floats >= 2)``: the Zhu-Wang bound holds at integer orders and the
    Renyi divergence is non-decreasing in the order, so ``ceil(alpha)`` bounds ``alpha``."""
    a = check_orders(orders)
    return a, np.maximum(np.ceil(a), 2.0)


def _base_values(base_rdp, ells: np.ndarray) -> np.ndarray:
    if not callable(base_rdp):
        raise ValueError(f"base_rdp must be a callable mapping integer orders to RDP values, got {base_rdp!r}")
    e = np.asarray(base_rdp(ells), dtype=float)
    if e.shape != ells.shape:
        raise ValueError(f"base_rdp must return one value per order (shape {ells.shape}), got shape {e.shape}")
    if np.any(np.isnan(e)) or np.any(e < 0):
        raise ValueError("base_rdp must return values in [0, inf]")
    return e


def _zhu_wang(a: np.ndarray, q: float, e: np.ndarray) -> np.ndarray:
    """Upper bounds on the Zhu-Wang RDP at the integer orders ``a`` (floats >= 2), with ``e[l - 2]`` the
    base RDP at order ``l``. Computed as ``log(A - 1)``: with c_0 = c_1 = 1, c_2 = e^{eps(2)} and
    c_l = 3 e^{(l-1) eps(l)}, A = E[c_L] for L ~ Bin(alpha, q), so A - 1 = sum_{l >= 2} P(L = l)(c_l - 1),
    a sum of non-negative terms (no cancellation for small q)."""
    ells = np.arange(2.0, a.max() + 1.0)
    A = a[:, None]
    L = ells[None, :]
    J = A - L
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        x = (ells - 1.0) * e
        # log(c_l - 1): log(expm1(e_2)) at l = 2; x + log(3 - e^{-x}) at l >= 3 (both -inf / inf as needed)
        lc = np.where(ells == 2.0, np.log(np.expm1(e)), x + np.log(3.0 - np.exp(-x)))
        lc = np.where(np.isinf(x) & (x > 0), np.inf, lc)
        l1q = math.log1p(-q) if q < 1.0 else -np.inf
        tail = np.where(J > 0, J * l1q, 0.0)
        parts = (special.gammaln(A + 1.0), special.gammaln(L + 1.0), special.gammaln(np.maximum(J, 0.0) + 1.0),
                 L * math.log(q), tail)
        lt = parts[0] - parts[1] - parts[2] + parts[3] + parts[4] + lc[None, :]
        lt = np.where(J >= 0, lt, -np.inf)
        mag = sum(np.abs(p) for p in parts) + np.where(np.isfinite(lc), np.abs(lc), 0.0)[None, :] + 8.0
        mag = np.where(np.isfinite(lt), mag, 0.0)
        log_am1 = special.logsumexp(lt, axis=1)
        # each log-term is within _MARGIN * mag of its exact value; the sum adds its own ulps
        log_am1 = log_am1 + _MARGIN * (mag.max(axis=1) + lt.shape[1] + np.abs(log_am1))
        out = np.logaddexp(0.0, log_am1) / (a - 1.0)
    out = out * (1.0 + _MARGIN)
    return np.where(np.isnan(out), np.inf, out)


def rdp_poisson_general(orders, sampling_rate, base_rdp) -> np.ndarray:
    r"""Zhu & Wang's general upper bound on the RDP of ANY mechanism run on a Poisson sample.

    For a mechanism with RDP :math:`\varepsilon(\ell)` (add/remove adjacency) and sampling rate
    :math:`q`, at integer :math:`\alpha \ge 2`:

    .. math::
        \frac{1}{\alpha-1}\log\Big[(1-q)^{\alpha-1}(1+(\alpha-1)q) + \binom{\alpha}{2} q^2(1-q)^{\alpha-2}
        e^{\varepsilon(2)} + 3\sum_{\ell=3}^{\alpha}\binom{\alpha}{\ell} q^\ell(1-q)^{\alpha-\ell}
        e^{(\ell-1)\varepsilon(\ell)}\Big]

    (Zhu & Wang 2019, "Poisson subsampled Renyi differential privacy", ICML, Thm 6). A
    fractional order is bounded by the value at ``ceil(alpha)`` (the Renyi divergence is
    non-decreasing in the order). Evaluated in log space as :math:`\log(A - 1)` (all terms
    non-negative), with a rounding allowance of 64 ulps per unit of magnitude so that the value
    returned is never below the exact bound. It is NOT reduced by the no-amplification value
    (:func:`rdp_poisson_selected_gaussian` takes the minimum). Cost :math:`O(\alpha)` per order.

    Parameters
    ----------
    orders : float or array of floats in (1, inf)
    sampling_rate : float in (0, 1]
    base_rdp : callable
        ``base_rdp(ells)`` returns the base mechanism's RDP (values in [0, inf]) at each order of
        the float array ``ells = 2, 3, ..., ceil(max order)``.

    Returns
    -------
    numpy.ndarray
        One upper bound per order (``inf`` where the base RDP is infinite).
    """
    _, ai = _int_orders(orders)
    q = _rate(sampling_rate)
    uniq, inv = np.unique(ai, return_inverse=True)
    e = _base_values(base_rdp, np.arange(2.0, uniq.max() + 1.0))
    return _zhu_wang(uniq, q, e)[inv]


def rdp_poisson_selected_gaussian(orders, sampling_rate, noise_multiplier, k, selection_epsilon) -> np.ndarray:
    r"""RDP of ONE Poisson-subsampled step of private top-k selection then Gaussian noise on it.

    .. math::
        \varepsilon_{\mathrm{step}}(\alpha) = \min_{\beta \ge \alpha}
        \min\big(\mathrm{ZW}_q[\varepsilon_M](\lceil\beta\rceil),\ \varepsilon_M(\beta)\big)

    with :math:`\varepsilon_M` of :func:`rdp_selected_gaussian` and ZW the general bound of
    :func:`rdp_poisson_general` (Zhu & Wang 2019, Thm 6). Both are valid bounds (running ``M``
    on a subsample costs at most its batch-level RDP), and the minimum over the larger orders
    ``beta`` among ``orders`` keeps the curve non-decreasing (so is the true RDP). At ``q = 1``
    it is :math:`\varepsilon_M`. ``T`` steps cost ``T`` times this.

    Parameters
    ----------
    orders : float or array of floats in (1, inf)
    sampling_rate : float in (0, 1]
    noise_multiplier : float > 0
    k : int >= 1
    selection_epsilon : float > 0

    Returns
    -------
    numpy.ndarray
        One value per order, in the order given.
    """
    a = check_orders(orders)
    sigma, k, eps = _sigma(noise_multiplier), _k(k), _eps(selection_epsilon)
    q = _rate(sampling_rate)
    return _step_rdp(a, q, lambda ells: rdp_selected_gaussian(ells, sigma, k, eps))


def _step_rdp(a: np.ndarray, q: float, base) -> np.ndarray:
    """``min(ZW_q[base], base)`` at the orders ``a`` (ZW only for q < 1), made non-decreasing by a
    running minimum from the largest order down (:func:`rdp_poisson_selected_gaussian`)."""
    direct = base(a)
    if q < 1.0:
        direct = np.minimum(direct, rdp_poisson_general(a, q, base))
    order = np.argsort(a, kind="stable")
    out = np.empty_like(direct)
    out[order] = np.minimum.accumulate(direct[order][::-1])[::-1]
    return out


def epsilon_selected_gaussian(sampling_rate, noise_multiplier, k, selection_epsilon, steps, delta,
                              *, orders=None) -> tuple:
    r"""``(epsilon, order)`` of ``steps`` Poisson-subsampled steps of selection + Gaussian.

    .. math:: \varepsilon = \min_\alpha\; T\,\varepsilon_{\mathrm{step}}(\alpha) + \log\frac{\alpha-1}{\alpha}
              - \frac{\log\delta + \log\alpha}{\alpha - 1}

    :func:`rdp_poisson_selected_gaussian` composed over ``T`` steps (Mironov 2017, Prop. 1) and
    converted by :func:`dptheory.accounting.epsilon_from_rdp` (Balle et al. 2020, Thm 21) over
    ``orders`` (default :data:`SELECTION_ORDERS`, the integers 2..256 and 320..1024).

    Parameters
    ----------
    sampling_rate : float in (0, 1]
    noise_multiplier : float > 0
    k : int >= 1
    selection_epsilon : float > 0
    steps : int >= 1
    delta : float in (0, 1)
    orders : array of floats in (1, inf), optional

    Returns
    -------
    (float, float)
        epsilon and the order attaining it.
    """
    t = check_int("steps", steps, low=1)
    d = check_delta(delta)
    a = SELECTION_ORDERS if orders is None else check_orders(orders)
    rdp = t * rdp_poisson_selected_gaussian(a, sampling_rate, noise_multiplier, k, selection_epsilon)
    return epsilon_from_rdp(a, rdp, d)


def epsilon_selection_limit(sampling_rate, k, selection_epsilon, steps, delta, *, orders=None) -> tuple:
    r"""``(epsilon, order)`` of the selection alone: :func:`epsilon_selected_gaussian` as sigma -> inf.

    As :math:`\sigma \to \infty` the batch-level RDP :math:`\varepsilon_M(\alpha) =
    \varepsilon_{\mathrm{sel}}(\alpha) + \alpha/(2\sigma^2)` decreases to
    :math:`\varepsilon_{\mathrm{sel}}(\alpha) = \min(\alpha\varepsilon^2/(8k), \varepsilon)`, and every
    later step (the Zhu-Wang bracket, the minimum with the batch value, the running minimum over the
    orders, ``T`` times, the conversion) is continuous and non-decreasing in it, so

    .. math:: \lim_{\sigma\to\infty}\varepsilon(\sigma) = \inf_\sigma \varepsilon(\sigma)
              = \min_\alpha\; T\,\varepsilon^{\mathrm{sel}}_{\mathrm{step}}(\alpha) + \log\frac{\alpha-1}{\alpha}
              - \frac{\log\delta + \log\alpha}{\alpha - 1},

    with :math:`\varepsilon^{\mathrm{sel}}_{\mathrm{step}}` the curve of
    :func:`rdp_poisson_selected_gaussian` with :math:`\varepsilon_{\mathrm{sel}}` as the base RDP (Zhu &
    Wang 2019, Thm 6; Balle et al. 2020, Thm 21; derived in ``proofs/selection.py``). No finite
    sigma reaches it (each :math:`\varepsilon_M(\alpha)` is strictly above its limit), so a target
    ``epsilon`` at or below it is out of reach of :func:`calibrate_noise_selected`.

    Parameters
    ----------
    sampling_rate : float in (0, 1]
    k : int >= 1
    selection_epsilon : float > 0
    steps : int >= 1
    delta : float in (0, 1)
    orders : array of floats in (1, inf), optional
        Default :data:`SELECTION_ORDERS` (as :func:`epsilon_selected_gaussian`).

    Returns
    -------
    (float, float)
        epsilon and the order attaining it.
    """
    q, k, eps = _rate(sampling_rate), _k(k), _eps(selection_epsilon)
    t = check_int("steps", steps, low=1)
    d = check_delta(delta)
    a = SELECTION_ORDERS if orders is None else check_orders(orders)
    return epsilon_from_rdp(a, t * _step_rdp(a, q, lambda ells: rdp_top_k_selection(ells, k, eps)), d)


def calibrate_noise_selected(sampling_rate, steps, epsilon, delta, k, selection_epsilon, *, orders=None,
                             rtol=CALIBRATION_RTOL) -> float:
    r"""Smallest noise multiplier sigma with :func:`epsilon_selected_gaussian` ``<= epsilon``.

    The accounted epsilon of ``T`` Poisson-subsampled steps of private top-k selection then Gaussian
    noise on the selected coordinates,

    .. math:: \varepsilon(\sigma) = \min_\alpha\; T\,\varepsilon_{\mathrm{step}}(\alpha; \sigma)
              + \log\frac{\alpha-1}{\alpha} - \frac{\log\delta + \log\alpha}{\alpha - 1},

    with :math:`\varepsilon_{\mathrm{step}}` the minimum of Zhu & Wang's (2019, Thm 6) general
    subsampling bound of :math:`\varepsilon_M(\alpha) = \min(\alpha\varepsilon_{\mathrm{sel}}^2/(8k),
    \varepsilon_{\mathrm{sel}}) + \alpha/(2\sigma^2)` and :math:`\varepsilon_M` itself
    (:func:`rdp_poisson_selected_gaussian`; Durfee & Rogers 2019, Cesar & Rogers 2021, Mironov 2017,
    Balle et al. 2020, Thm 21), is non-increasing in sigma: :math:`\varepsilon_M(\alpha)` decreases
    in sigma, the Zhu-Wang bracket has non-negative coefficients in every
    :math:`e^{(\ell-1)\varepsilon_M(\ell)}`, and minima, ``T`` times and the conversion preserve the
    order (``proofs/selection.py``). Its infimum is the selection's own cost
    :math:`\varepsilon(\infty)` (:func:`epsilon_selection_limit`), never attained.

    Search: a target ``epsilon <= epsilon(inf)`` raises. Otherwise sigma is bracketed by doubling /
    halving from :math:`\sigma_0 = q\sqrt{2T\log(1/\delta)}/\varepsilon` (clipped to
    :math:`[2^{-2}, 2^{40}]`; :func:`dptheory.accounting.sigma_guess`) and the crossing found on
    :math:`\log\sigma` by Illinois false position (:func:`dptheory.accounting.calibrate_sigma`, the
    search of :func:`dptheory.accounting.calibrate_noise`) until the bracket :math:`[\sigma_{lo}, \sigma_{hi}]` has
    :math:`\log(\sigma_{hi}/\sigma_{lo}) \le` ``rtol``. The returned sigma is :math:`\sigma_{hi}`,
    an evaluated point with :math:`\varepsilon(\sigma_{hi}) \le` ``epsilon``; :math:`\sigma_{lo} \ge
    \sigma_{hi}(1 - \mathrm{rtol})` was evaluated above the target, so (monotonicity) every
    sigma at or below :math:`\sigma_{hi}(1 - \mathrm{rtol})` misses it. If the halving reaches a
    sigma in :math:`[2^{-30}, 2^{-29})` that still meets the target, that sigma is returned (as
    :func:`dptheory.accounting.calibrate_noise`; only absurd targets, about :math:`10^{18}`, get there).

    Parameters
    ----------
    sampling_rate : float in (0, 1]
    steps : int >= 1
    epsilon : float > 0
        Target epsilon (of the whole run: selection and noise).
    delta : float in (0, 1)
    k : int >= 1
        Coordinates selected per step.
    selection_epsilon : float > 0
        Pure-DP budget of each step's selection.
    orders : array of floats in (1, inf), optional
        Orders of :func:`epsilon_selected_gaussian` (default :data:`SELECTION_ORDERS`).
    rtol : float in [1e-12, 0.1]
        Relative tolerance on sigma (default :data:`CALIBRATION_RTOL` = 1e-7).

    Returns
    -------
    float
        The noise multiplier (in :math:`[2^{-30}, 2^{60}]`).

    Raises
    ------
    ValueError
        Naming the parameter for an invalid argument; naming ``epsilon`` and ``selection_epsilon``,
        with the value of :func:`epsilon_selection_limit`, when the target is at or below what the
        selection alone spends (or needs sigma above :math:`2^{60}`).

    Examples
    --------
    >>> s = calibrate_noise_selected(0.01, 1000, 3.0, 1e-5, 10, 1.0)
    >>> round(s, 4), epsilon_selected_gaussian(0.01, s, 10, 1.0, 1000, 1e-5)[0] <= 3.0
    (0.929, True)
    """
    q = _rate(sampling_rate)
    t = check_int("steps", steps, low=1)
    target = check_real("epsilon", epsilon, low=0.0, low_open=True)
    d = check_delta(delta)
    k, eps = _k(k), _eps(selection_epsilon)
    tol = check_real("rtol", rtol, low=1e-12, high=0.1)
    a = SELECTION_ORDERS if orders is None else check_orders(orders)
    floor, _ = epsilon_selection_limit(q, k, eps, t, d, orders=a)

    def unreachable(why):
        return ValueError(
            f"epsilon={target!r} cannot be reached{why}: the selection alone spends epsilon={floor:.10g} "
            f"(epsilon_selection_limit, the limit as noise_multiplier -> inf, at sampling_rate={q!r}, steps={t}, "
            f"delta={d!r}, k={k}, selection_epsilon={eps!r}); ask for epsilon above it or lower selection_epsilon")

    if target <= floor:
        raise unreachable("")

    def eps_of_sigma(sigma):
        return epsilon_selected_gaussian(q, sigma, k, eps, t, d, orders=a)[0]

    return calibrate_sigma(eps_of_sigma, target, sigma_guess(q, t, target, d), rtol=tol,
                           error=unreachable(" with noise_multiplier <= 2**60"))


def prob_exact_top_k(scores, k, scale) -> float:
    r"""Probability that the Gumbel top-k returns exactly the true top-k set of ``scores``.

    With :math:`T` the indices of the ``k`` largest scores (ties broken by index),
    :math:`w_j = e^{u_j / b}`, :math:`Z_c = \sum_{j \notin T} w_j` and
    :math:`Z_A = \sum_{i \in A} w_i`,

    .. math:: P(\hat T = T) = \sum_{A \subseteq T} (-1)^{|A|} \frac{Z_c}{Z_c + Z_A}

    (inclusion-exclusion on the event that every :math:`u_i + G_i`, :math:`i \in T`, beats
    :math:`\max_{j\notin T}(u_j + G_j)`, a Gumbel of location :math:`b \log Z_c`; derived in
    ``proofs/selection.py``). ``1`` when ``k = d``. The alternating sum loses about
    :math:`2^k \cdot 10^{-16}` in absolute accuracy.

    Parameters
    ----------
    scores : 1-D array of finite floats (the utilities ``|s_j|``)
    k : int in [1, min(len(scores), MAX_EXACT_K)]
    scale : float > 0
        Gumbel scale ``b`` (:func:`gumbel_scale`).

    Returns
    -------
    float in [0, 1]
    """
    u = check_finite_array("scores", scores, ndim=1).astype(np.float64)
    if u.shape[0] < 1:
        raise ValueError("scores must have at least one entry")
    k = check_int("k", k, low=1, high=min(u.shape[0], MAX_EXACT_K))
    b = check_real("scale", scale, low=0.0, low_open=True)
    order = np.argsort(-u, kind="stable")
    top, rest = order[:k], order[k:]
    if rest.size == 0:
        return 1.0
    w = np.exp((u - u.max()) / b)
    zc = float(w[rest].sum())
    wt = w[top]
    total = 0.0
    for r in range(k + 1):
        sign = -1.0 if r % 2 else 1.0
        for sub in itertools.combinations(range(k), r):
            total += sign * zc / (zc + float(wt[list(sub)].sum()))
    return float(min(1.0, max(0.0, total)))


# --------------------------------------------------------------------------- PLD accounting
#: target relative gap between the two grids of :func:`epsilon_pld_selected_gaussian` (as
#: :data:`dptheory.accounting.PLD_ACCURACY`).
PLD_SELECTION_ACCURACY = 2e-3

_PLD_MAX_POINTS = 2**21   # grid points of the composed loss at the finest interval allowed
_PLD_Z_TAIL = 10.0        # the one-step grid covers z in 1 +- 10 sigma (Gaussian tail 8e-24 beyond)
_PLD_ATOM_TAIL = 1e-20    # selection outcomes rarer than this (under both measures) go to infinite loss


def _rr_atoms(k: int, eps: float):
    """``(log_ratio, p_first, p_second)`` of the selection's dominating pair: ``k`` rounds of randomized
    response at ``eps/k``. Outcome ``a`` (rounds answered "first") has log-ratio ``(eps/k)(2a - k)``,
    probability ``Bin(k, p)(a)`` under the first measure and ``Bin(k, 1 - p)(a)`` under the second,
    ``p = e^{eps/k} / (1 + e^{eps/k})``. Outcomes rarer than ``_PLD_ATOM_TAIL`` under both measures
    are dropped; their mass is returned last, ``(first, second)``, for the caller to make infinite."""
    a = np.arange(k + 1.0)
    e1 = eps / k
    lp, lq = -np.logaddexp(0.0, -e1), -np.logaddexp(0.0, e1)          # log p, log(1 - p)
    lbin = special.gammaln(k + 1.0) - special.gammaln(a + 1.0) - special.gammaln(k - a + 1.0)
    p_first = np.exp(lbin + a * lp + (k - a) * lq)
    p_second = np.exp(lbin + a * lq + (k - a) * lp)
    keep = (p_first > _PLD_ATOM_TAIL) | (p_second > _PLD_ATOM_TAIL)
    dropped = (float(p_first[~keep].sum()), float(p_second[~keep].sum()))
    return e1 * (2.0 * a[keep] - k), p_first[keep], p_second[keep], dropped


def privacy_loss_selected_gaussian(z, log_ratio, sampling_rate, noise_multiplier) -> np.ndarray:
    r"""Privacy loss of one Poisson-subsampled step of the selection's dominating pair times a Gaussian.

    The step's dominating pair is :math:`(X, Y) = ((1-q)Q + qP,\ Q)` (Zhu, Dong & Wang 2022, Thm 11),
    with :math:`P = R_1 \otimes N(1, \sigma^2)`, :math:`Q = R_0 \otimes N(0, \sigma^2)` and
    :math:`(R_1, R_0)` the selection's randomized-response pair. At the outcome ``(a, z)`` whose
    selection part has log-ratio :math:`\lambda_a = \log R_1(a)/R_0(a)`:

    .. math:: L(a, z) = \log\frac{X(a, z)}{Y(a, z)}
              = \log\Big(1 - q + q\, e^{\lambda_a + (z - 1/2)/\sigma^2}\Big),

    since :math:`\log N(z; 1, \sigma^2)/N(z; 0, \sigma^2) = (z - 1/2)/\sigma^2`
    (``proofs/selection.py`` derives it from the mixture). Increasing in ``z``. The reverse pair
    ``(Y, X)`` has loss ``-L``.

    Parameters
    ----------
    z : float or array of floats
        The Gaussian coordinate (in units of the sensitivity).
    log_ratio : float or array of floats
        :math:`\lambda_a` (broadcast against ``z``).
    sampling_rate : float in (0, 1]
    noise_multiplier : float > 0

    Returns
    -------
    numpy.ndarray
    """
    q, s = _rate(sampling_rate), _sigma(noise_multiplier)
    x = np.asarray(log_ratio, dtype=float) + (np.asarray(z, dtype=float) - 0.5) / (s * s)
    keep = math.log1p(-q) if q < 1.0 else -math.inf
    return np.logaddexp(keep, math.log(q) + x)


def _z_of_loss(loss: np.ndarray, log_ratio: np.ndarray, q: float, s: float) -> np.ndarray:
    """The inverse of :func:`privacy_loss_selected_gaussian` in ``z``: a (len(log_ratio), len(loss))
    array, ``-inf`` where ``loss <= log(1 - q)`` (below every loss)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if q < 1.0:
            w = np.where(loss > 0.0, loss + np.log1p(-(1.0 - q) * np.exp(-np.abs(loss))),
                         np.log(np.expm1(np.minimum(loss, 0.0)) + q))
            w = np.where(loss > math.log1p(-q), w, -np.inf) - math.log(q)
        else:
            w = loss
    return 0.5 + s * s * (w[None, :] - log_ratio[:, None])


def _normal_between(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """P(u < Z <= v) for a standard normal Z (u <= v, +-inf allowed), from the nearer tail."""
    with np.errstate(invalid="ignore"):
        out = np.where(u >= 0.0, special.ndtr(-u) - special.ndtr(-v), special.ndtr(v) - special.ndtr(u))
    return np.maximum(np.nan_to_num(out, nan=0.0), 0.0)


def _interval_masses(edges: np.ndarray, atoms, q: float, s: float):
    """X- and Y-masses of ``L`` in (-inf, e_0], (e_0, e_1], ..., (e_n, inf) (n + 2 cells)."""
    lr, p_first, p_second, _ = atoms
    t = _z_of_loss(edges, lr, q, s)
    inf = np.full((lr.size, 1), np.inf)
    t = np.concatenate([-inf, t, inf], axis=1) / s
    y = p_second[:, None] * _normal_between(t[:, :-1], t[:, 1:])
    xp = p_first[:, None] * _normal_between(t[:, :-1] - 1.0 / s, t[:, 1:] - 1.0 / s)
    return (1.0 - q) * y.sum(axis=0) + q * xp.sum(axis=0), y.sum(axis=0)


def _connect_dots(first: np.ndarray, second: np.ndarray, loss0: float, h: float) -> np.ndarray:
    """Masses on the grid ``loss0 + i h`` from the (first, second) masses of the cells between grid points.

    The first-measure mass of a cell [l_j, l_j + h] is split between its two ends so that the mean
    of e^{-L} (the second-measure mass) is kept: the end l_j gets first (c - e^{-h}) / (1 - e^{-h}),
    c = second e^{l_j} / first, and l_j + h the rest (Doroshenko et al. 2022's connect-the-dots:
    the hockey-stick curve is exact at the grid and linear in e^epsilon between).
    """
    ell = loss0 + h * np.arange(first.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where(first > 0.0, second * np.exp(ell) / first, 1.0)
    down = np.clip(first * (c - math.exp(-h)) / -math.expm1(-h), 0.0, first)
    probs = np.zeros(first.size + 1)
    probs[:-1] += down
    probs[1:] += first - down
    return probs


def _trim(probs: np.ndarray, index0: int, inf_mass: float):
    """Drop end cells holding at most 1e-20 in all: the lower ones move up onto the first kept point,
    the upper ones go to infinite loss (both raise every hockey-stick divergence)."""
    cum_lo, cum_hi = np.cumsum(probs), np.cumsum(probs[::-1])
    i = int(np.searchsorted(cum_lo, 1e-20, side="right"))
    j = probs.size - int(np.searchsorted(cum_hi, 1e-20, side="right"))
    i, j = min(i, probs.size - 1), max(j, min(i, probs.size - 1) + 1)
    kept = probs[i:j].copy()
    kept[0] += cum_lo[i - 1] if i > 0 else 0.0
    return kept, index0 + i, inf_mass + float(probs[j:].sum())


def _loss_grid(atoms, q: float, s: float, h: float):
    """Integer grid indices ``(i0, i1)`` of the losses kept: every loss of the pair lies in
    [i0 h, i1 h] but those with z beyond 1 + 10 sigma (q < 1) or outside -+ 10 sigma (q = 1)."""
    lr = atoms[0]
    top = float(privacy_loss_selected_gaussian(1.0 + _PLD_Z_TAIL * s, lr.max(), q, s))
    bottom = math.log1p(-q) if q < 1.0 else float(privacy_loss_selected_gaussian(-_PLD_Z_TAIL * s, lr.min(), q, s))
    return math.floor(bottom / h), math.ceil(top / h)


def _selection_pmfs(q: float, s: float, k: int, eps: float, h: float):
    """``[(probs, index0, inf_mass)]`` of the pair ``(X, Y)`` and of its reverse ``(Y, X)`` on the grid ``h``."""
    atoms = _rr_atoms(k, eps)
    i0, i1 = _loss_grid(atoms, q, s, h)
    edges = h * np.arange(i0, i1 + 1.0)
    x, y = _interval_masses(edges, atoms, q, s)
    lost_x = (1.0 - q) * atoms[3][1] + q * atoms[3][0]
    # (X, Y): cells below e_0 move up to it; above e_n to infinity
    fwd = _connect_dots(x[1:-1], y[1:-1], edges[0], h)
    fwd[0] += x[0]
    # (Y, X): the loss is -L, so the cells reverse; Y-mass of L > e_n moves up to -e_n, L <= e_0 to infinity
    rev = _connect_dots(y[1:-1][::-1], x[1:-1][::-1], -edges[-1], h)
    rev[0] += y[-1]
    return [_trim(fwd, i0, float(x[-1]) + lost_x), _trim(rev, -i1, float(y[0]) + atoms[3][1])]


def _loss_scale(q: float, s: float, k: int, eps: float) -> float:
    """Scale s1 of one step's privacy loss: min(q sqrt(chi^2(P || Q)), sd of the loss of (P, Q)).

    chi^2 + 1 = E_Q[(P/Q)^2] = c^k e^{1/sigma^2} with c = E[(R_1/R_0)^2] under R_0 for one round of
    randomized response at eps/k; the batch-level loss has variance 1/sigma^2 + k (eps/k)^2 4 p (1 - p).
    """
    e1 = eps / k
    p = special.expit(e1)
    log_c = math.log(p * math.exp(-e1) + (1.0 - p) * math.exp(e1)) if e1 < 300.0 else e1
    sd = math.sqrt(1.0 / (s * s) + 4.0 * k * e1 * e1 * p * (1.0 - p))
    chi = k * log_c + 1.0 / (s * s)
    return min(q * math.sqrt(math.expm1(chi)), sd) if chi < 700.0 else sd


def _pld_epsilon_at(q, s, k, eps, steps, delta, h) -> tuple:
    """``(epsilon, unstable)`` of ``steps`` compositions at the grid ``h``: the larger of the two
    directions, by :func:`dptheory.accounting.compose_pld` (with its check of the FFT noise)."""
    pld_pmf = require_dp_accounting("epsilon_pld_selected_gaussian").pld.pld_pmf
    pmfs = [pld_pmf.DensePLDPmf(h, i0, probs, inf_mass, True) for probs, i0, inf_mass in _selection_pmfs(q, s, k, eps, h)]
    return compose_pld(pmfs, steps, delta)


def _pld_grid(q, s, k, eps, steps, rho):
    """(h, h_min): h = 2 sqrt(rho / 0.3) s1 (as :func:`dptheory.accounting.epsilon_pld`), at least
    2 h_min, with h_min = 2 (24 sqrt(T) s1 + M) / ``_PLD_MAX_POINTS`` so that the composed loss (about
    +- 12 sqrt(T) s1 around its mean) and one step's extent M fit the point budget."""
    s1 = _loss_scale(q, s, k, eps)
    i0, i1 = _loss_grid(_rr_atoms(k, eps), q, s, 1.0)
    h_min = 2.0 * (24.0 * math.sqrt(steps) * s1 + (i1 - i0)) / _PLD_MAX_POINTS
    return min(max(2.0 * math.sqrt(rho / 0.3) * s1, 2.0 * h_min), 10.0), h_min


def epsilon_pld_selected_gaussian(sampling_rate, noise_multiplier, k, selection_epsilon, steps, delta, *,
                                  accuracy=PLD_SELECTION_ACCURACY) -> tuple:
    r"""PLD ``(epsilon, gap)`` of ``steps`` Poisson-subsampled steps of private top-k selection + Gaussian.

    Dominating pair of one batch-level step: the selection is ``k`` adaptive rounds, each
    :math:`(\varepsilon/k)`-DP (docs/selection.md), so it is dominated by ``k`` rounds of randomized
    response at :math:`\varepsilon/k` (Kairouz, Oh & Viswanath 2015), i.e. the pair
    :math:`(R_1, R_0)` with outcome :math:`a \sim \mathrm{Bin}(k, p)` resp. :math:`\mathrm{Bin}(k, 1-p)`,
    :math:`p = e^{\varepsilon/k}/(1 + e^{\varepsilon/k})`, log-ratio :math:`\lambda_a = (\varepsilon/k)(2a-k)`
    (``k = 1`` is randomized response at :math:`\varepsilon`); given the selection the Gaussian is dominated
    by :math:`(N(1, \sigma^2), N(0, \sigma^2))`; the adaptive composition by the product
    :math:`P = R_1 \otimes N(1,\sigma^2)`, :math:`Q = R_0 \otimes N(0,\sigma^2)` (Zhu, Dong & Wang 2022,
    Thm 10). Poisson subsampling at rate ``q`` (add/remove): the pairs
    :math:`((1-q)Q + qP,\ Q)` and :math:`(Q,\ (1-q)Q + qP)` (Zhu, Dong & Wang 2022, Thm 11; Balle,
    Barthe & Gaboardi 2018), whose loss is :func:`privacy_loss_selected_gaussian`. Each is
    discretised pessimistically on the grid :math:`h\mathbb{Z}`: the loss is increasing in ``z`` for
    each ``a``, so the mass of every grid cell is exact (normal CDFs), and is split between the cell's
    ends keeping :math:`E[e^{-L}]` (connect-the-dots, Doroshenko, Ghazi, Kamath, Kumar & Manurangsi
    2022: a mean-preserving spread of :math:`e^{-L}`, which can only raise the composed hockey-stick
    divergence); losses past ``z = 1 + 10 sigma`` count as infinite, rarer selection outcomes (< 1e-20)
    too. ``T``-fold composition by FFT and epsilon for ``delta`` by dp-accounting's ``DensePLDPmf``
    (pessimistic tail truncation 1e-15); epsilon is the larger of the two directions.

    Grid: :math:`h = 2\sqrt{\rho/0.3}\,s_1` with the loss scale :math:`s_1 = \min(q\sqrt{c^k e^{1/\sigma^2} - 1},
    \mathrm{sd})` (the rule of :func:`dptheory.accounting.epsilon_pld`; ``rho`` = ``accuracy``), but
    at least twice the interval at which the composed loss of ``T`` steps fills :math:`2^{21}` points.
    Evaluated at ``h`` and ``h/2`` (and ``h/4`` when the gap exceeds ``rho * eps + 1e-9``); the finer
    value is returned with the gap, the accuracy reached. The composition is
    :func:`dptheory.accounting.compose_pld`'s: when its FFT noise reaches ``1e-2 delta`` at a grid, or
    the finer grid gives a larger value (the pessimistic discretisation must not rise as it is
    refined), no PLD bound is claimed: ``(inf, inf)``, and ``epsilon_of(..., accountant="pld")`` returns
    the RDP bound with status ``"unstable"`` (small q, many steps and a tiny delta, e.g. q = 1e-5,
    sigma = 0.5, T = 1e5, delta = 1e-10, where the FFT noise had pulled the value below the truth). Measured on q in {1e-3, 1e-2, 0.1, 1}, sigma
    in {0.7, 1, 3}, k in {1, 10}, eps_sel in {0.1, 1}, T in {1, 100, 1e3, 1e4}: the gap is at most
    ``2e-3 eps`` and the value within ``1.5e-3 eps`` above that of a grid 16 times finer; it is never
    below the exact epsilon of the pair where that is computable (q = 1; one step by quadrature;
    tests/test_selection.py). Up to floating point (and the 1e-15 truncations) it is an upper bound.
    About 0.1-0.2 s at q = 0.01, sigma = 1, k = 10, T = 1e3 or 1e4 (plus the import of dp-accounting).

    Not below :func:`epsilon_selected_gaussian` everywhere: the RDP bound uses the bounded-range zCDP
    :math:`\varepsilon^2/(8k)` of the selection, which no single randomized-response pair carries, so
    where the selection dominates the step (sigma >= 2 with eps/k >= 0.1, or k = 1 and eps >= 0.5) it
    can be lower (up to 2.1x on a grid of 528 cases); at q = 0.01, sigma = 1, k = 10, T = 1000 the
    PLD gives 1.83 / 2.03 / 2.67 against RDP 2.45 / 2.53 / 2.74 at eps_sel = 0.1 / 1 / 2. Both are
    upper bounds.

    Parameters
    ----------
    sampling_rate : float in (0, 1]
    noise_multiplier : float > 0
    k : int >= 1
    selection_epsilon : float > 0
    steps : int >= 1
    delta : float in (0, 1)
    accuracy : float in (0, 0.1]
        Target relative gap between the two grids (default :data:`PLD_SELECTION_ACCURACY`).

    Returns
    -------
    (float, float)
        epsilon (at the finer grid) and the gap eps(coarser) - eps(finer).

    Raises
    ------
    ValueError
        Naming the parameter and its range for an invalid argument.
    ImportError
        If dp-accounting is not installed (``pip install "dpsparse[pld]"``).
    """
    q, s, k, eps = _rate(sampling_rate), _sigma(noise_multiplier), _k(k), _eps(selection_epsilon)
    t = check_int("steps", steps, low=1)
    d = check_delta(delta)
    rho = check_real("accuracy", accuracy, low=0.0, high=0.1, low_open=True)
    h, h_min = _pld_grid(q, s, k, eps, t, rho)
    (coarse, bad_c), (fine, bad_f) = (_pld_epsilon_at(q, s, k, eps, t, d, x) for x in (h, h / 2.0))
    if abs(coarse - fine) > rho * fine + 1e-9 and math.isfinite(fine) and h / 4.0 >= h_min and not (bad_c or bad_f):
        (coarse, bad_c), (fine, bad_f) = (fine, bad_f), _pld_epsilon_at(q, s, k, eps, t, d, h / 4.0)
    if bad_c or bad_f or fine > coarse * (1.0 + 1e-9) + 1e-12:
        return math.inf, math.inf  # FFT noise near delta, or a value that rose on the finer grid: no bound
    return fine, abs(coarse - fine) if math.isfinite(fine) else 0.0
