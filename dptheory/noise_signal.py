"""Noise-to-signal ratio (NSR) of one DP-SGD step with a dense or sparse update.

Conventions (docs/theory.md §2): the update is ``g_bar + s z`` with ``g_bar = (1/B) sum clip_C(g_i)``,
``z ~ N(0, I_d)`` and ``s = sigma C / B``; ``k`` of ``d`` coordinates are updated, ``rho = k/d``.
The full noise energy is ``N = d s^2``. Every closed form here is proved in :mod:`proofs.noise_signal`
(tags [S]) or derived and checked numerically in ``tests/test_noise_signal.py`` (tags [D]).

All functions validate their arguments (``ValueError`` naming the parameter and its range) and
broadcast over NumPy arrays; arguments whose shapes do not broadcast raise a ``ValueError`` naming
them (:func:`dptheory.validation.check_broadcast`); scalar inputs give a Python ``float``.

Top-k: :func:`nsr_top_k_public` is for a support chosen without the noise (public or fixed);
top-k of the NOISY update selects where the noise is large and has its own functions,
:func:`noisy_top_k_noise_factor`, :func:`noisy_top_k_energies` and :func:`nsr_top_k_noisy`.
"""
from __future__ import annotations

import numpy as np
from scipy import integrate, optimize, special, stats

from .validation import (check_broadcast, check_choice, check_finite_array, check_int, check_int_array, check_k_d,
                         check_real, check_real_array, float_or_array)

__all__ = [
    "noise_std", "noise_energy", "noise_energy_mean", "noise_energy_var", "noise_energy_interval",
    "nsr_dense", "signal_random_k", "nsr_random_k", "signal_mask_then_clip", "nsr_mask_then_clip",
    "descent_mask_then_clip", "rescaled_random_k_moments", "noise_energy_rescaled",
    "nsr_fixed_set", "fixed_set_helps", "nsr_top_k_public", "noisy_top_k_noise_factor",
    "noisy_top_k_energies", "nsr_top_k_noisy", "top_k_captured_lower_bound",
    "contraction_top_k", "contraction_random_k", "scaled_sign_delta",
    "FREEZE_KINDS", "freeze_schedule", "n_frozen", "freeze_mean_noise_energy",
    "freeze_draws", "freeze_update_counts", "freeze_coverage",
    "tradeoff_coefficients", "tradeoff_bound", "optimal_keep_fraction", "sparsification_helps", "SPREADS",
    "spread_exponent",
]


# ----------------------------------------------------------------------------- helpers
# ----------------------------------------------------------------------------- noise
def noise_std(sigma, clip, batch):
    """Per-coordinate noise std of the averaged update, ``s = sigma C / B``.

    Noise ``N(0, sigma^2 C^2 I_d)`` is added to the SUM of clipped gradients, which is then divided by
    the (expected) batch size ``B`` (Abadi et al. 2016, Algorithm 1; Poisson variant as in Opacus).
    """
    check_broadcast(sigma=sigma, clip=clip, batch=batch)
    sigma = check_real_array("sigma", sigma, low=0.0)
    clip = check_real_array("clip", clip, low=0.0, low_open=True)
    batch = check_real_array("batch", batch, low=0.0, low_open=True)
    return float_or_array(sigma * clip / batch)


def noise_energy(d, sigma, clip, batch):
    """Full noise energy ``N = d sigma^2 C^2 / B^2 = E||s z||^2`` of a dense update (docs/theory.md §Conventions)."""
    check_broadcast(d=d, sigma=sigma, clip=clip, batch=batch)
    d = check_int_array("d", d, low=1)
    return float_or_array(d * np.asarray(noise_std(sigma, clip, batch)) ** 2)


def noise_energy_mean(k, sigma, clip, batch):
    """Mean ``k s^2`` of the noise energy ``||m * s z||^2`` on ``k`` updated coordinates.

    [S] ``||m * s z||^2 = s^2 sum_{i in S} z_i^2 ~ s^2 chi^2_k`` for a mask independent of the
    noise (random-k, a fixed frozen set, random freeze); ``E z_i^2 = 1`` gives the mean.
    Proved in ``proofs.noise_signal`` from the Gaussian moments.
    """
    check_broadcast(k=k, sigma=sigma, clip=clip, batch=batch)
    k = check_int_array("k", k, low=0)
    return float_or_array(k * np.asarray(noise_std(sigma, clip, batch)) ** 2)


def noise_energy_var(k, sigma, clip, batch):
    """Variance ``2 k s^4`` of the noise energy on ``k`` coordinates ([S]: ``Var z^2 = E z^4 - 1 = 2``)."""
    check_broadcast(k=k, sigma=sigma, clip=clip, batch=batch)
    k = check_int_array("k", k, low=0)
    return float_or_array(2 * k * np.asarray(noise_std(sigma, clip, batch)) ** 4)


def noise_energy_interval(k, sigma, clip, batch, level=0.95):
    """Equal-tailed ``level`` interval ``(s^2 q_lo, s^2 q_hi)`` of the noise energy, chi-square quantiles.

    ``q_lo, q_hi`` are the ``(1-level)/2`` and ``(1+level)/2`` quantiles of ``chi^2_k``
    (``scipy.stats.chi2``). Use it to check one simulated step: the energy falls outside with
    probability exactly ``1 - level``.
    """
    check_broadcast(k=k, sigma=sigma, clip=clip, batch=batch)
    k = check_int_array("k", k, low=1)
    level = check_real("level", level, low=0.0, high=1.0, low_open=True, high_open=True)
    s2 = np.asarray(noise_std(sigma, clip, batch)) ** 2
    lo = stats.chi2.ppf((1 - level) / 2, k) * s2
    hi = stats.chi2.isf((1 - level) / 2, k) * s2
    return float_or_array(lo), float_or_array(hi)


# ----------------------------------------------------------------------------- NSR
def nsr_dense(d, sigma, clip, batch, signal_sq):
    """Dense NSR ``d sigma^2 C^2 / (B^2 ||g_bar||^2)`` = noise energy / signal energy (docs/theory.md §2).

    ``signal_sq`` is ``||g_bar||^2 > 0``, the squared norm of the clipped mean gradient.
    """
    check_broadcast(d=d, sigma=sigma, clip=clip, batch=batch, signal_sq=signal_sq)
    signal_sq = check_real_array("signal_sq", signal_sq, low=0.0, low_open=True)
    return float_or_array(np.asarray(noise_energy(d, sigma, clip, batch)) / signal_sq)


def signal_random_k(k, d, signal_sq):
    """Expected retained signal ``E||m * g_bar||^2 = (k/d) ||g_bar||^2`` (clip then mask), [S].

    ``m`` is the indicator of a uniformly random ``k``-subset independent of ``g_bar``, so
    ``P(i in S) = k/d`` for every ``i`` (proved in ``proofs.noise_signal``).
    """
    check_broadcast(k=k, d=d, signal_sq=signal_sq)
    k, d = check_k_d(k, d)
    signal_sq = check_real_array("signal_sq", signal_sq, low=0.0)
    return float_or_array(k / d * signal_sq)


def nsr_random_k(k, d, sigma, clip, batch, signal_sq):
    """Random-k (clip then mask) NSR as a ratio of expectations: ``k s^2 / ((k/d)||g_bar||^2)``.

    [D] This equals :func:`nsr_dense` for every ``k``: a data-independent random mask removes noise
    and signal in the same proportion, so it cannot improve the NSR.
    """
    check_broadcast(k=k, d=d, sigma=sigma, clip=clip, batch=batch, signal_sq=signal_sq)
    k, d = check_k_d(k, d)
    signal_sq = check_real_array("signal_sq", signal_sq, low=0.0, low_open=True)
    return float_or_array(np.asarray(noise_energy_mean(k, sigma, clip, batch)) / np.asarray(signal_random_k(k, d, signal_sq)))


def signal_mask_then_clip(signal_sq):
    """Signal energy of mask-then-clip in the all-clipped, spread-out regime: ``~ ||g_bar||^2``, flat in k.

    [D] Zhu & Blaschko (arXiv 2112.00845, code) zero the masked coordinates BEFORE clipping and do not
    rescale. If every example is clipped and ``||m * g_i|| ~ sqrt(rho) ||g_i||``, each clipped masked
    gradient is ``C (m * g_i)/||m * g_i|| ~ (1/sqrt(rho)) m * clip(g_i)`` and its energy is
    ``(1/rho) (k/d) ||.||^2 = ||clip(g_i)||^2``. ``signal_sq`` is the dense clipped-mean energy.
    An approximation: the tests compare it with simulation, not with an identity. Measured regime of
    validity (tests/test_sim_vs_theory_noise.py): within 3 % for k >= 25 when every example is clipped;
    it breaks down for very small k, where ``||m * g_i||`` no longer concentrates around
    ``sqrt(rho) ||g_i||`` (ratio ~0.93 at k = 10 and ~0.6 at k = 1 with a strong common mean).
    """
    return float_or_array(check_real_array("signal_sq", signal_sq, low=0.0))


def nsr_mask_then_clip(k, d, sigma, clip, batch, signal_sq):
    """Mask-then-clip NSR in the all-clipped regime: ``~ rho * nsr_dense`` ("perturbation moderation"), [D].

    Noise energy ``k s^2`` over the flat signal of :func:`signal_mask_then_clip`.
    """
    check_broadcast(k=k, d=d, sigma=sigma, clip=clip, batch=batch, signal_sq=signal_sq)
    k, d = check_k_d(k, d)
    return float_or_array(k / d * np.asarray(nsr_dense(d, sigma, clip, batch, signal_sq)))


def descent_mask_then_clip(k, d, dense_descent):
    """Descent component ``E<grad F, update>`` of mask-then-clip: ``~ sqrt(rho)`` x the dense value, [D].

    In the all-clipped, spread-out regime the masked clipped gradient is ``(1/sqrt rho) m * clip(g)``,
    and ``E<grad F, m * v> = rho <grad F, v>``, giving ``sqrt(rho)``: the "signal loss".
    """
    check_broadcast(k=k, d=d, dense_descent=dense_descent)
    k, d = check_k_d(k, d)
    dense_descent = check_real_array("dense_descent", dense_descent)
    return float_or_array(np.sqrt(k / d) * dense_descent)


def rescaled_random_k_moments(k, d, x_sq):
    """Moments of the rescaled random-k compressor ``Q(x) = (d/k) m * x``, [S].

    Returns ``(mean_factor, second_moment, variance)`` with ``E Q = 1 * x``,
    ``E||Q||^2 = (d/k)||x||^2`` and ``E||Q - x||^2 = (d/k - 1)||x||^2`` (``x_sq = ||x||^2``).
    Rescaled with step ``eta`` equals unscaled with step ``eta d/k`` pathwise, so rescaling only
    reparametrises the learning rate.
    """
    check_broadcast(k=k, d=d, x_sq=x_sq)
    k, d = check_k_d(k, d)
    x_sq = check_real_array("x_sq", x_sq, low=0.0)
    ratio = d / k
    return float_or_array(np.ones_like(ratio * x_sq)), float_or_array(ratio * x_sq), float_or_array((ratio - 1) * x_sq)


def noise_energy_rescaled(k, d, sigma, clip, batch):
    """Noise energy of the rescaled random-k update: ``(d/k)^2 k s^2 = (d^2/k) s^2``, [S]."""
    check_broadcast(k=k, d=d, sigma=sigma, clip=clip, batch=batch)
    k, d = check_k_d(k, d)
    return float_or_array(d.astype(float) ** 2 / k * np.asarray(noise_std(sigma, clip, batch)) ** 2)


def nsr_fixed_set(k, d, phi, sigma, clip, batch, signal_sq):
    """NSR of a fixed coordinate set ``S`` (|S| = k) capturing energy fraction ``phi = ||g_S||^2/||g||^2``.

    [D] ``k s^2 / (phi ||g_bar||^2) = (k/(d phi)) nsr_dense``: it beats the dense NSR iff ``phi > k/d``.
    ``phi`` must be in (0, 1].
    """
    check_broadcast(k=k, d=d, phi=phi, sigma=sigma, clip=clip, batch=batch, signal_sq=signal_sq)
    k, d = check_k_d(k, d)
    phi = check_real_array("phi", phi, low=0.0, high=1.0, low_open=True)
    return float_or_array(k / (d * phi) * np.asarray(nsr_dense(d, sigma, clip, batch, signal_sq)))


def fixed_set_helps(k, d, phi):
    """``True`` iff the fixed set's NSR is strictly below the dense NSR, i.e. ``phi > k/d`` ([D])."""
    check_broadcast(k=k, d=d, phi=phi)
    k, d = check_k_d(k, d)
    phi = check_real_array("phi", phi, low=0.0, high=1.0, low_open=True)
    res = phi > k / d
    return bool(res) if np.ndim(res) == 0 else res


def top_k_captured_lower_bound(k, d):
    """Lower bound ``k/d`` on the energy fraction captured by top-k.

    The ``k`` largest squares average at least the mean square; equivalently the contraction
    ``||x - top_k x||^2 <= (1 - k/d)||x||^2`` (Stich, Cordonnier & Jaggi 2018, Def. 2.1 / Lemma A.1).
    """
    check_broadcast(k=k, d=d)
    k, d = check_k_d(k, d)
    return float_or_array(k / d)


def nsr_top_k_public(k, d, phi, sigma, clip, batch, signal_sq):
    """NSR of a top-k support chosen WITHOUT the noise: ``k s^2 / (phi ||g_bar||^2) = (k/(d phi)) nsr_dense``.

    Valid only when the kept set ``S`` (``|S| = k``) does not depend on this step's noise ``z``:
    top-k of a public gradient (:func:`sims.mechanisms.public_select`), a fixed or public mask, or
    top-k of the clean clipped mean ``g_bar`` itself (the non-private ``top_k(k, "clean")``
    ablation). Then the kept noise is ``s^2 chi^2_k`` with mean ``k s^2`` ([S], as in
    :func:`noise_energy_mean`) and the kept signal is ``phi ||g_bar||^2``, so this is
    :func:`nsr_fixed_set`: for this step's noise a noise-independent support is a fixed set [D].
    For top-k of the NOISY update ``g_bar + s z`` use :func:`nsr_top_k_noisy`: that support is
    chosen where the noise is large, and the kept noise energy is up to several times ``k s^2``.

    Parameters
    ----------
    k, d : int, ``1 <= k <= d``
    phi : float in (0, 1]
        Captured fraction ``||g_bar_S||^2 / ||g_bar||^2`` of the clean clipped mean. When ``S`` is
        the top-k of ``g_bar`` itself, ``phi >= k/d`` (:func:`top_k_captured_lower_bound`) and hence
        ``NSR <= nsr_dense``; a support chosen from a public gradient may capture less than ``k/d``
        of the private gradient, and then the NSR exceeds the dense one.
    sigma, clip, batch, signal_sq : as in :func:`nsr_dense`

    Returns
    -------
    float or ndarray
    """
    check_broadcast(k=k, d=d, phi=phi, sigma=sigma, clip=clip, batch=batch, signal_sq=signal_sq)
    return nsr_fixed_set(k, d, phi, sigma, clip, batch, signal_sq)


def noisy_top_k_noise_factor(k, d, exact=False):
    """Selection bias of top-k of pure noise: ``E||z_S||^2 / k``, ``S`` the ``k`` largest ``|z_j|``, ``z ~ N(0, I_d)``.

    Closed form (``exact=False``) [S]::

        1 + t phi(t) / Phi_bar(t),     t = Phi^{-1}(1 - k/(2d)),   Phi_bar(t) = k/(2d)

    the conditional second moment ``E[z^2 | |z| > t]`` of the doubly truncated standard normal
    (``int_t^inf z^2 phi = t phi(t) + Phi_bar(t)``; proved in :mod:`proofs.noise_signal`). What
    holds exactly:

    * it is an UPPER bound for every finite ``d``, and for every set ``S`` of ``k`` coordinates
      chosen by any rule (top-k of ``g + s z`` for any ``g`` included): pathwise, the sum of the
      ``k`` largest ``z_j^2`` is at most ``k tau + sum_j (z_j^2 - tau)_+`` for every ``tau``;
      taking expectations and minimising over ``tau`` (at ``tau = t^2``, where
      ``d P(z^2 > tau) = k``) gives exactly ``k (1 + t phi(t)/Phi_bar(t))``;
    * it is the limit of the exact value as ``d -> inf`` with ``k/d`` fixed (the ``k``-th largest
      ``|z_j|`` converges to ``t``). Gap to the exact finite-``d`` value (``exact=True``) at
      ``d = 1000``: +6.6 % at ``k = 1``, +1.0 % at ``k = 10``, +0.16 % at ``k = 100``, +0.03 % at
      ``k = 500``; at ``d = 100``: +9.7 % at ``k = 1``, +1.6 % at ``k = 10`` (docs/theory.md §2).

    ``exact=True`` returns the exact finite-``d`` value by one-dimensional quadrature
    (``scipy.integrate.quad``) of the order-statistics identity ``j in S`` iff at most ``k - 1``
    other ``|z_i|`` exceed ``|z_j|``::

        E||z_S||^2 / k = (d/k) int_0^inf 2 y^2 phi(y) P(Binomial(d - 1, 2 Phi_bar(y)) <= k - 1) dy

    (``d = 2, k = 1`` gives ``E max(z_1^2, z_2^2) = 1 + 2/pi``; quadrature tolerance ``1e-10``
    relative). ``k = d`` gives 1 in both modes.

    Parameters
    ----------
    k, d : int, ``1 <= k <= d`` (broadcast)
    exact : bool

    Returns
    -------
    float or ndarray
        ``E||z_S||^2 / k``; multiply by ``k s^2`` (:func:`noise_energy_mean`) for the kept noise
        energy of pure noise, or for the bound on the kept noise of any size-``k`` selection.
    """
    check_broadcast(k=k, d=d)
    k, d = check_k_d(k, d)
    k, d = np.broadcast_arrays(k, d)
    if not exact:
        t = -special.ndtri(k / (2.0 * d))   # = Phi^{-1}(1 - k/(2d)), accurate for small k/d
        return float_or_array(1 + 2.0 * d * t * stats.norm.pdf(t) / k)
    out = np.empty(k.shape)
    for i in np.ndindex(k.shape):
        out[i] = _noisy_top_k_exact(int(k[i]), int(d[i]))
    return float_or_array(out)


def _noisy_top_k_exact(k, d):
    """Exact ``E||z_S||^2 / k`` for pure noise by quadrature (see :func:`noisy_top_k_noise_factor`)."""
    if k == d:
        return 1.0
    t = float(-special.ndtri(k / (2.0 * d)))

    def f(y):   # P(Bin(d - 1, p) <= k - 1) = 1 - I_p(k, d - k), accurate for tiny p (unlike 1 - p forms)
        return 2 * y * y * stats.norm.pdf(y) * special.betaincc(k, d - k, 2 * special.ndtr(-y))

    hi = t + 12.0                 # 2 y^2 phi(y) beyond t + 12 is < 1e-30 of the value
    tol = {"epsabs": 1e-13 * k / d, "epsrel": 1e-11, "limit": 500}   # the integral is >= k/d
    val = integrate.quad(f, 0.0, t, **tol)[0] + integrate.quad(f, t, hi, **tol)[0]
    return d / k * val


def noisy_top_k_energies(g_bar, k, sigma, clip, batch):
    """Expected kept noise and kept signal energy of top-k of the noisy update ``g_bar + s z``.

    ``S`` = the ``k`` coordinates of largest ``|g_bar_j + s z_j|`` (``sims.mechanisms.top_k(k,
    "noisy")``: post-processing of the dense release). Per-coordinate threshold model [D]: keep
    coordinate ``j`` when ``|g_bar_j + s z_j| > tau``, with ``tau`` the root (``scipy.optimize.brentq``)
    of ``sum_j P(|g_bar_j + s z_j| > tau) = k``. With ``a_j = (tau - |g_bar_j|)/s`` and
    ``b_j = (tau + |g_bar_j|)/s`` the model's expectations are sums of one-dimensional truncated
    normal moments (``int_a^inf z^2 phi = a phi(a) + Phi_bar(a)``)::

        noise_sq  = s^2 sum_j [a_j phi(a_j) + Phi_bar(a_j) + b_j phi(b_j) + Phi_bar(b_j)]
        signal_sq =     sum_j g_bar_j^2 [Phi_bar(a_j) + Phi_bar(b_j)]

    For ``g_bar = 0`` this is exactly the closed form of :func:`noisy_top_k_noise_factor`, and in
    general it is the ``d -> inf`` limit (``k/d`` and the empirical law of ``|g_bar_j|/s`` fixed)
    in which the ``k``-th largest ``|g_bar_j + s z_j|`` concentrates at ``tau``. At finite ``d`` it
    is an approximation, measured against Monte Carlo (docs/theory.md §2: ``d`` in 100..10000;
    zero, Gaussian, Student-t(3), 10-sparse and flat ``g_bar`` with ``||g_bar||/(s sqrt d)`` in
    0.3..3): kept noise and NSR within 0.5 % for ``k >= 50`` and within 3.1 % for ``k >= 10``
    (the error falls roughly like ``1/k``); up to 22 % (noise) and 28 % (NSR) too high at
    ``k = 1``, because the model ignores the fluctuation of the ``k``-th order statistic (for
    ``g_bar = 0`` use ``noisy_top_k_noise_factor(k, d, exact=True)``). A rigorous bound for every
    ``d``, ``k`` and ``g_bar``, which the model's value also satisfies:
    ``noise_sq <= k s^2 noisy_top_k_noise_factor(k, d)`` (the pure-noise closed form).

    Parameters
    ----------
    g_bar : 1-D array (d,), finite
        The clean clipped mean gradient (only ``|g_bar_j|`` matters).
    k : int in [1, d]
    sigma, clip, batch : as in :func:`noise_std` (``s = sigma clip / batch``); ``k, sigma, clip,
        batch`` broadcast together (one threshold model per element).

    Returns
    -------
    noise_sq, signal_sq, threshold : float or ndarray
        ``E||s z_S||^2``, ``E||g_bar_S||^2`` and ``tau``. With ``s = 0`` the support is the
        top-k of ``|g_bar|``: ``noise_sq = 0``, ``signal_sq`` the exact top-k energy and ``tau``
        the ``k``-th largest ``|g_bar_j|``. With ``k = d``: ``d s^2``, ``||g_bar||^2``, ``0``.
    """
    g = np.abs(check_finite_array("g_bar", g_bar, ndim=1).astype(np.float64))
    if g.size == 0:
        raise ValueError("g_bar must have at least one coordinate")
    shape = check_broadcast(k=k, sigma=sigma, clip=clip, batch=batch)
    d = g.size
    k = check_int_array("k", k, low=1, high=d)
    s = np.asarray(noise_std(sigma, clip, batch), dtype=np.float64)
    k, s = np.broadcast_to(k, shape), np.broadcast_to(s, shape)
    res = np.empty((3,) + shape)
    for i in np.ndindex(shape):
        res[(slice(None),) + i] = _threshold_model(g, int(k[i]), float(s[i]))
    return float_or_array(res[0]), float_or_array(res[1]), float_or_array(res[2])


def _threshold_model(g, k, s):
    """``(noise_sq, signal_sq, tau)`` of the threshold model of :func:`noisy_top_k_energies` (``g = |g_bar|``)."""
    d = g.size
    if s == 0.0:
        top = np.sort(g)[::-1][:k]
        return 0.0, float(top @ top), float(top[-1])
    with np.errstate(over="ignore"):
        u, g2 = g / s, float(g @ g)
    if not (np.all(np.isfinite(u)) and np.isfinite(g2) and np.isfinite(d * s * s)):
        raise ValueError("g_bar and s = sigma clip / batch overflow float64 (||g_bar||^2, d s^2 or g_bar / s)")
    if k == d:
        return d * s * s, g2, 0.0

    def excess(t):   # expected number kept at threshold t (units of s) minus k; decreasing in t
        return float(np.sum(special.ndtr(u - t) + special.ndtr(-u - t))) - k

    hi = float(u.max()) - special.ndtri(k / (2.0 * d)) + 1.0   # there excess < 0 (2 d Phi_bar(hi - max u) < k)
    t = optimize.brentq(excess, 0.0, hi, xtol=1e-14, rtol=4 * np.finfo(float).eps, maxiter=500)
    a, b = t - u, t + u
    pa, pb = special.ndtr(-a), special.ndtr(-b)
    with np.errstate(over="ignore", under="ignore"):   # a^2 may overflow where phi(a) is 0 anyway
        pdf_a, pdf_b = np.exp(-0.5 * a * a) / np.sqrt(2 * np.pi), np.exp(-0.5 * b * b) / np.sqrt(2 * np.pi)
    noise = s * s * float(np.sum(a * pdf_a + pa + b * pdf_b + pb))
    signal = float(np.sum(g * g * (pa + pb)))
    return noise, signal, t * s


def nsr_top_k_noisy(g_bar, k, sigma, clip, batch):
    """NSR of top-k of the noisy update, ``E||s z_S||^2 / E||g_bar_S||^2`` (threshold model, [D]).

    Ratio of the two expectations of :func:`noisy_top_k_energies` (the same convention as
    :func:`nsr_random_k`). Unlike a noise-independent support (:func:`nsr_top_k_public`) this is
    NOT at most :func:`nsr_dense`: the support follows the noise. Examples at ``d = 1000``,
    ``k = 100``, ``||g_bar|| = s sqrt(d)`` (dense NSR 1), Monte Carlo (docs/theory.md §2): a flat
    gradient ``|g_bar_j| = s`` gives 3.30 (every kept coordinate carries signal ``s^2`` but noise
    ``3.30 s^2``; this function: 3.305); a Gaussian direction gives 1.003 (1.04 at ``k = 1``); a
    10-sparse one gives 0.42. It is below the dense NSR when the signal stands out of the noise on
    few coordinates. Accuracy: as :func:`noisy_top_k_energies`.

    Parameters
    ----------
    g_bar : 1-D array (d,), finite, not all zero
    k, sigma, clip, batch : as in :func:`noisy_top_k_energies`

    Returns
    -------
    float or ndarray
    """
    g = check_finite_array("g_bar", g_bar, ndim=1).astype(np.float64)
    if not float(g @ g) > 0:
        raise ValueError("g_bar must have ||g_bar||^2 > 0 in float64 (the NSR of a zero signal is infinite)")
    noise, signal, _ = noisy_top_k_energies(g, k, sigma, clip, batch)
    return float_or_array(np.asarray(noise) / np.asarray(signal))


# ----------------------------------------------------------------------------- compressors
def contraction_top_k(k, d):
    """Top-k contraction constant: ``||x - top_k x||^2 <= (1 - k/d)||x||^2`` (Stich et al. 2018, Def. 2.1) [L].

    Checked: the definition of a k-contraction in Stich, Cordonnier & Jaggi, "Sparsified SGD with
    memory" (NeurIPS 2018) uses exactly ``(1 - k/d)``; tests verify it on random vectors.
    """
    check_broadcast(k=k, d=d)
    k, d = check_k_d(k, d)
    return float_or_array(1 - k / d)


def contraction_random_k(k, d):
    """Random-k (unscaled) contraction, exact in expectation: ``E||x - m * x||^2 = (1 - k/d)||x||^2`` [S]."""
    return contraction_top_k(k, d)


def scaled_sign_delta(x):
    """``delta = ||x||_1^2 / (d ||x||_2^2)`` of the scaled sign compressor ``(||x||_1/d) sign(x)`` [S].

    ``||x - (||x||_1/d) sign x||^2 = ||x||^2 - ||x||_1^2/d = (1 - delta)||x||^2`` with
    ``delta in [1/d, 1]`` (Karimireddy et al. 2019, arXiv 1901.09847, Lemma 8 for the delta-approximate
    property). ``x`` is a non-zero 1-D array; a 2-D array is treated row-wise.
    """
    x = check_finite_array("x", x).astype(np.float64)
    if x.ndim not in (1, 2) or x.shape[-1] == 0:
        raise ValueError(f"x must be a non-empty 1-D array (or 2-D, row-wise), got shape {x.shape}")
    sq = np.sum(x * x, axis=-1)
    if np.any(sq == 0):
        raise ValueError("x must be non-zero (delta is undefined for x = 0)")
    return float_or_array(np.sum(np.abs(x), axis=-1) ** 2 / (x.shape[-1] * sq))


# ----------------------------------------------------------------------------- random freeze
FREEZE_KINDS = ("linear", "step", "cosine", "constant")


def freeze_schedule(r_final, epochs, kind="linear"):
    """Frozen fraction per epoch ``r_e``, e = 0..E-1 (Zhu & Blaschko 2112.00845, authors' code [C]).

    - ``"linear"``: ``r_e = r_final e/(E-1)`` (the paper's gradual schedule);
    - ``"step"``: ``0`` for ``e < E//2`` then ``r_final``;
    - ``"cosine"``: ``r_final (1 - cos(pi e/(E-1)))/2``;
    - ``"constant"``: ``r_final`` from the start.
    ``r_final in [0, 1)``, ``epochs >= 1``; a one-epoch run has no ramp (``r_0 = r_final``, as the
    simulator's :func:`sims.mechanisms.random_freeze` does). This is the one definition of the
    schedule: the simulator reads it from here.
    """
    r_final = check_real("r_final", r_final, low=0.0, high=1.0, high_open=True)
    epochs = check_int("epochs", epochs, low=1)
    kind = check_choice("kind", kind, FREEZE_KINDS)
    if epochs == 1 or kind == "constant":
        return np.full(epochs, r_final)
    e = np.arange(epochs, dtype=np.float64)
    if kind == "linear":
        return r_final * e / (epochs - 1)
    if kind == "step":
        return np.where(e >= epochs // 2, r_final, 0.0)
    return r_final * (1 - np.cos(np.pi * e / (epochs - 1))) / 2


def n_frozen(rate, d):
    """Number of frozen coordinates ``floor(rate * d)`` at frozen fraction ``rate`` (vectorised).

    A relative guard of 1e-12 keeps ``floor(0.3 * 10) = 3`` although ``0.3 * 10`` is
    ``2.9999999999999996`` in binary; a rate below 1 never freezes all ``d`` coordinates.
    Shared by the theory and the simulator.

    Parameters
    ----------
    rate : float or array of floats in [0, 1]
        Frozen fraction; anything else (negative, above 1, NaN, inf) raises ``ValueError``
        naming ``rate`` and the interval.
    d : int >= 1

    Returns
    -------
    int or ndarray of int64
        In ``[0, d]`` (``d`` only for ``rate = 1``).
    """
    check_broadcast(rate=rate, d=d)
    d = check_int("d", d, low=1)
    rate = check_real_array("rate", rate, low=0.0, high=1.0)
    n = np.floor(rate * d * (1 + 1e-12))
    # the guard must not round a rate just below 1 up to "everything frozen"
    n = np.where(rate < 1, np.minimum(n, d - 1), n).astype(np.int64)
    return int(n) if n.ndim == 0 else n


def freeze_mean_noise_energy(r_final, epochs, kind="linear", d=None):
    """Mean injected noise energy of a random-freeze run relative to dense: ``(1/E) sum_e (1 - r_e)``.

    Noise is zeroed on the frozen coordinates, so epoch ``e`` injects ``(d - f_e) s^2`` with
    ``f_e = floor(r_e d)`` frozen coordinates. With ``d=None`` the continuum limit ``f_e = r_e d`` is used;
    then the linear ramp gives exactly ``1 - r_final/2`` for every ``E >= 2`` [S]
    (``sum_{e<E} e/(E-1) = E/2``, proved in ``proofs.noise_signal``); so does the cosine ramp.
    With an integer ``d`` the exact finite-d value ``1 - mean_e floor(r_e d)/d`` is returned.
    """
    r = freeze_schedule(r_final, epochs, kind)
    if d is None:
        return float(1.0 - np.mean(r))
    return float(1.0 - np.mean(n_frozen(r, d)) / d)


def freeze_draws(r_final, total_steps, steps_per_epoch, kind="linear", refresh=None):
    """The draws of the frozen set over a random-freeze run: ``(starts, lengths, rates)``.

    The rule of :func:`sims.mechanisms.random_freeze` (Zhu & Blaschko 2112.00845; ``refresh`` is
    their option of redrawing every ``N`` steps instead of every epoch): with ``T`` steps,
    ``E = ceil(T / spe)`` epochs and period ``P = spe`` (``refresh=None``) or ``P = refresh``, draw
    ``i = 0 .. ceil(T/P) - 1`` is made at step ``t_i = i P``, is in force for
    ``L_i = min(P, T - t_i)`` steps, and freezes a fraction ``r_{e_i}`` with ``e_i = floor(t_i / spe)``,
    the epoch in which it is DRAWN (``r_e = freeze_schedule(r_final, E, kind)[e]``). So with
    ``refresh`` not a divisor of ``spe`` (in particular ``refresh > spe``) a ramp takes effect only
    at the next draw: the rate in force at step ``t`` is ``r_{floor(P floor(t/P) / spe)}``, not
    ``r_{floor(t/spe)}``.

    Parameters
    ----------
    r_final : float in [0, 1)
    total_steps : int >= 1
        ``T``.
    steps_per_epoch : int >= 1
        ``spe`` (``dptheory.accounting.steps_per_epoch(q)`` in the simulator).
    kind : one of :data:`FREEZE_KINDS`
    refresh : None or int >= 1

    Returns
    -------
    starts, lengths : ndarray of int64
        ``t_i`` and ``L_i`` (``lengths.sum() == T``).
    rates : ndarray of float
        ``r_{e_i}``; the draw freezes ``n_frozen(rates, d)`` coordinates.
    """
    T = check_int("total_steps", total_steps, low=1)
    spe = check_int("steps_per_epoch", steps_per_epoch, low=1)
    P = spe if refresh is None else check_int("refresh", refresh, low=1)
    r = freeze_schedule(r_final, -(-T // spe), kind)
    starts = np.arange(0, T, P, dtype=np.int64)
    lengths = np.minimum(P, T - starts)
    return starts, lengths, r[starts // spe]


def _freeze_draw_fractions(r_final, d, total_steps, steps_per_epoch, kind, refresh):
    """``(L_i, n_i / d)`` of the draws (:func:`freeze_draws`, counts :func:`n_frozen`)."""
    d = check_int("d", d, low=1)
    _, lengths, rates = freeze_draws(r_final, total_steps, steps_per_epoch, kind, refresh)
    return d, lengths.astype(np.float64), n_frozen(rates, d) / d


def freeze_update_counts(r_final, d, total_steps, steps_per_epoch, kind="linear", refresh=None):
    """Mean and variance of ``U_j``, the number of the ``T`` steps at which coordinate ``j`` is trainable [S].

    With the draws of :func:`freeze_draws` (lengths ``L_i``, ``n_i = floor(r_{e_i} d)`` frozen
    coordinates, uniformly random and independent across draws)::

        U_j = sum_i L_i (1 - F_ij),   F_ij = 1[j frozen in draw i] ~ Bernoulli(n_i / d), independent in i
        E U_j   = sum_i L_i (1 - n_i/d)
        Var U_j = sum_i L_i^2 (n_i/d)(1 - n_i/d)

    (``P(j in a uniform n-subset of d) = n/d``; proved in :mod:`proofs.noise_signal`). ``E U_j / T``
    is the expected fraction of steps at which a coordinate trains and, as the noise is drawn on
    the trainable coordinates only, the run's noise energy relative to dense: a coordinate
    accumulates noise ``s^2 chi^2_{U_j}``, mean ``s^2 E U_j`` and variance ``s^4 (2 E U_j + Var U_j)``.
    The mean does not depend on ``refresh`` when ``refresh`` divides ``spe`` (it is then
    ``T`` x :func:`freeze_mean_noise_energy` ``(..., d=d)`` for ``T`` a multiple of ``spe``); the
    variance does: for a constant rate ``r`` with ``n = r d`` and ``P`` dividing ``T``,
    ``Var U_j = T P r (1 - r)``, linear in the period, so frequent redraws spread the training
    evenly over the coordinates. Note ``sum_j U_j = sum_i L_i (d - n_i)`` holds in every run
    (each draw freezes exactly ``n_i``).

    Parameters
    ----------
    r_final, total_steps, steps_per_epoch, kind, refresh : as in :func:`freeze_draws`
    d : int >= 1
        Number of coordinates.

    Returns
    -------
    mean, variance : float
    """
    _, L, f = _freeze_draw_fractions(r_final, d, total_steps, steps_per_epoch, kind, refresh)
    return float(np.sum(L * (1 - f))), float(np.sum(L * L * f * (1 - f)))


def freeze_coverage(r_final, d, total_steps, steps_per_epoch, kind="linear", refresh=None):
    """Mean and variance of the number of coordinates trainable at least once over the run [S].

    A coordinate is never updated iff it is frozen in every draw of :func:`freeze_draws`; the draws
    are independent uniform ``n_i``-subsets, so with ``p_1 = prod_i n_i/d`` (one coordinate frozen
    in all draws) and ``p_2 = prod_i n_i (n_i - 1)/(d (d - 1))`` (two given coordinates)::

        E #covered   = d (1 - p_1)
        Var #covered = d p_1 + d (d - 1) p_2 - d^2 p_1^2

    (the number never updated is a sum of ``d`` exchangeable indicators; ``p_2`` is the fraction of
    ``n``-subsets containing two given coordinates). For a constant rate and ``M = ceil(T/P)`` draws,
    ``d (1 - (n/d)^M)``: ``refresh`` raises the coverage from ``E`` draws (one per epoch) to
    ``ceil(T / refresh)``. A ramp that starts at 0 (``linear``, ``cosine``, ``step``) covers every
    coordinate in its first draw. Each coordinate that trains moves (its noise is a.s. non-zero); the
    others keep their initial bits.

    Parameters
    ----------
    r_final, d, total_steps, steps_per_epoch, kind, refresh : as in :func:`freeze_update_counts`

    Returns
    -------
    mean, variance : float
    """
    d, _, f = _freeze_draw_fractions(r_final, d, total_steps, steps_per_epoch, kind, refresh)
    p1 = float(np.prod(f))
    pair = 0.0 if d == 1 else float(np.prod(f * (f * d - 1) / (d - 1))) * d * (d - 1)
    return d * (1 - p1), max(0.0, d * p1 + pair - d * d * p1 * p1)


# ----------------------------------------------------------------------------- trade-off
def tradeoff_coefficients(delta_f, smoothness, lr, clip, steps, d, sigma, batch):
    """Coefficients ``(a, b)`` of the mask-then-clip bound ``(a + b rho)/s(rho)`` (docs/theory.md §3.3) [D].

    ``a = DeltaF/(eta C T) + L eta C/2`` (descent lemma: objective gap and the ``C^2`` second moment),
    ``b = L eta C d sigma^2/(2 B^2)`` (noise energy ``rho d sigma^2 C^2/B^2`` on the kept coordinates).
    ``a + b rho`` bounds the average descent of the masked clipped step with no assumption on the
    gradients; the spread factor ``s(rho)`` of :func:`dptheory.convergence.mask_then_clip_bound`
    turns it into a bound on the dense normalised descent: ``a/rho + b`` in the worst case
    (``s = rho``, e.g. 1-sparse per-example gradients), ``a/sqrt(rho) + b sqrt(rho)``
    (:func:`tradeoff_bound`) only under the spread-out assumption ``||m * g_i|| ~ sqrt(rho)||g_i||``.
    The coefficients do not depend on the spread. Consistent with the abstract of Zhu & Blaschko
    (arXiv 2112.00845), whose theorem we could not read: the constants are ours.
    """
    check_broadcast(delta_f=delta_f, smoothness=smoothness, lr=lr, clip=clip, steps=steps, d=d, sigma=sigma,
                    batch=batch)
    delta_f = check_real_array("delta_f", delta_f, low=0.0)
    L = check_real_array("smoothness", smoothness, low=0.0, low_open=True)
    lr = check_real_array("lr", lr, low=0.0, low_open=True)
    clip = check_real_array("clip", clip, low=0.0, low_open=True)
    steps = check_int_array("steps", steps, low=1)
    d = check_int_array("d", d, low=1)
    sigma = check_real_array("sigma", sigma, low=0.0)
    batch = check_real_array("batch", batch, low=0.0, low_open=True)
    a = delta_f / (lr * clip * steps) + L * lr * clip / 2
    b = L * lr * clip * d * sigma ** 2 / (2 * batch ** 2)
    return float_or_array(a), float_or_array(b)


#: named spread assumptions of the mask-then-clip bounds and their exponent ``p`` in ``s(rho) = rho^p``
#: (:func:`dptheory.convergence.mask_then_clip_bound`): no assumption, and ``||m * g_i|| ~ sqrt(rho) ||g_i||``.
SPREADS = {"worst_case": 1.0, "spread_out": 0.5}


def spread_exponent(spread) -> float:
    """Exponent ``p`` of the spread factor ``s(rho) = rho^p``: ``SPREADS[spread]`` or a real in [0.5, 1]."""
    if isinstance(spread, bool) or spread is None:
        raise ValueError(f"spread must be 'worst_case', 'spread_out' or a real exponent in [0.5, 1], got {spread!r}")
    if isinstance(spread, str):
        if spread not in SPREADS:
            raise ValueError(f"spread must be 'worst_case', 'spread_out' or a real exponent in [0.5, 1], "
                             f"got {spread!r}")
        return SPREADS[spread]
    return check_real("spread", spread, low=0.5, high=1.0)


def tradeoff_bound(rho, a, b, *, spread="worst_case"):
    """The mask-then-clip trade-off ``(a + b rho) / rho^p`` for ``rho in (0, 1]`` [S].

    ``p = spread_exponent(spread)``: worst case (default, no assumption on the gradients)
    ``a/rho + b``, decreasing, so minimised at ``rho = 1``; spread out ``a/sqrt(rho) + b sqrt(rho)``,
    minimised at ``rho = a/b`` with value ``2 sqrt(ab)`` (docs/theory.md §3.3).
    """
    p = spread_exponent(spread)
    check_broadcast(rho=rho, a=a, b=b)
    rho = check_real_array("rho", rho, low=0.0, high=1.0, low_open=True)
    a = check_real_array("a", a, low=0.0)
    b = check_real_array("b", b, low=0.0)
    return float_or_array((a + b * rho) / rho ** p)


def optimal_keep_fraction(d, sigma, batch, delta_f, smoothness, lr, clip, steps, *, spread="worst_case"):
    """Minimiser over ``rho in (0, 1]`` of the mask-then-clip bound ``(a + b rho)/rho^p`` [S].

    ``a, b`` from :func:`tradeoff_coefficients`; ``p`` the spread exponent of ``spread``
    (``"worst_case"``: ``p = 1``, default; ``"spread_out"``: ``p = 1/2``; or a real ``p in [1/2, 1]``;
    see :func:`dptheory.convergence.mask_then_clip_bound`). The derivative
    ``rho^(-p-1) ((1-p) b rho - p a)`` vanishes at ``rho_0 = p a/((1-p) b)``, so

    - ``p = 1`` (worst case, no spread assumption): ``a/rho + b`` decreases, ``rho* = 1`` always;
    - ``p < 1``: ``rho* = min(1, p a/((1-p) b))``; spread out, ``rho* = min(1, a/b) =
      min(1, (B^2/(d sigma^2)) (1 + 2 DeltaF/(L eta^2 C^2 T)))``.

    ``sigma = 0`` gives ``rho* = 1`` (no noise, no reason to sparsify).

    Raises
    ------
    ValueError
        For arguments out of range (as :func:`tradeoff_coefficients`) or a ``spread`` that is not
        ``"worst_case"``, ``"spread_out"`` or a real in [0.5, 1].
    """
    p = spread_exponent(spread)
    a, b = tradeoff_coefficients(delta_f, smoothness, lr, clip, steps, d, sigma, batch)
    a, b = np.asarray(a), np.asarray(b)
    if p >= 1.0:
        return float_or_array(np.ones(np.broadcast(a, b).shape))
    with np.errstate(divide="ignore"):
        rho = np.where(b > 0, np.minimum(1.0, p * a / ((1.0 - p) * np.where(b > 0, b, 1.0))), 1.0)
    return float_or_array(rho)


def sparsification_helps(d, sigma, batch, delta_f, smoothness, lr, clip, steps, *, spread="worst_case"):
    """``True`` iff :func:`optimal_keep_fraction` (same ``spread``) is ``< 1``.

    Worst case (default): never (``a/rho + b`` decreases in ``rho``). Spread out: iff
    ``d sigma^2/B^2 > 1 + 2 DeltaF/(L eta^2 C^2 T)`` (noise dominates); exponent ``p``: iff ``p a < (1-p) b``.
    """
    res = np.asarray(optimal_keep_fraction(d, sigma, batch, delta_f, smoothness, lr, clip, steps,
                                           spread=spread)) < 1.0
    return bool(res) if res.ndim == 0 else res
