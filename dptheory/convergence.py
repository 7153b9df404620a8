"""Convergence bounds for dense and sparse DP-SGD, with their optimal step sizes (docs/theory.md §3).

Noise enters every bound through the full noise energy ``N = d sigma^2 C^2 / B^2``
(:func:`dptheory.noise_signal.noise_energy`). Functions broadcast over NumPy arrays and validate their
arguments (``ValueError`` naming the parameter and its range). Symbolic checks of the optimal step
sizes and values are in :mod:`proofs.convergence`.

Constants checked against the literature (what we found):

- Strongly convex, ``eta_t = 1/(lambda t)``: Rakhlin, Shamir & Sridharan 2012 (arXiv 1109.5647),
  Lemma 1: ``E||w_t - w*||^2 <= 4 G^2/(lambda^2 t)`` under ``E||g_t||^2 <= G^2`` (projected SGD).
  Our ``G^2 + N`` is the second-moment bound of the noisy clipped gradient. Agrees with docs/theory.md.
- Weighted average, ``eta_t = 2/(lambda (t+1))``, weights ``propto t``: Lacoste-Julien, Schmidt &
  Bach 2012 (arXiv 1212.2002), Theorem: ``E f(x_bar) - f* <= 2 G^2/(lambda (T+1))``. Agrees.
- Error feedback: Karimireddy, Rebjock, Stich & Jaggi 2019 (arXiv 1901.09847), Theorem II (non-convex,
  ``gamma = 1/sqrt(T+1)``, ``E||g||^2 <= sigma^2``, delta-approximate compressor). Only the abstract
  of the paper was reachable, so the constants are settled by re-deriving the theorem with the
  paper's proof technique (virtual iterate ``x - e``, descent lemma, Young, geometric bound on
  ``E||e||^2``; :func:`proofs.convergence.error_feedback_descent`):
  ``(1/(T+1)) sum_t E||grad f(x_t)||^2 <= (2 (f(x0) - f*) + L sigma^2)/sqrt(T+1) + 4 L^2 sigma^2 (1-delta)/(delta^2 (T+1))``
  [D]. The expression used before, ``(4 DeltaF + L sigma^2)/(2 sqrt(T+1)) + ...``, has half
  the ``L sigma^2`` term; that proof cannot give it (see :func:`error_feedback_bound`).
- Mask-then-clip (Zhu & Blaschko, arXiv 2112.00845): only the abstract was reachable; the bound
  ``(a + b rho)/s(rho)`` with a spread factor ``s`` is our derivation [D] (:func:`mask_then_clip_bound`).
  The worst case ``s = rho`` is the default; ``s = sqrt(rho)`` (``a/sqrt(rho) + b sqrt(rho)``) needs
  the spread-out assumption ``||m * g_i|| ~ sqrt(rho) ||g_i||``.
"""
from __future__ import annotations

import math

import numpy as np

from .validation import (check_broadcast, check_choice, check_finite_array, check_int, check_int_array, check_k_d,
                         check_real, check_real_array, float_or_array)
from .noise_signal import noise_energy, optimal_keep_fraction, spread_exponent, tradeoff_coefficients

__all__ = [
    "convex_bound", "convex_optimal_lr", "convex_optimal_bound",
    "convex_random_k_bound", "convex_random_k_optimal_lr", "convex_random_k_optimal_bound",
    "fixed_set_bound",
    "strongly_convex_last_iterate_bound", "strongly_convex_weighted_average_bound",
    "strongly_convex_random_k_bound",
    "dp_gradient_variance", "nonconvex_biased_bound", "nonconvex_biased_optimal_lr",
    "nonconvex_random_k_bound", "nonconvex_random_k_optimal_lr", "nonconvex_random_k_optimal_bound",
    "mask_then_clip_bound", "random_freeze_bound",
    "random_k_cd_pl_bound", "random_k_cd_nonconvex_bound", "top_k_gd_bound", "error_feedback_bound",
    "calibrated_sigma", "private_convex_bound", "private_nonconvex_random_k_bound",
    "private_mask_then_clip_bound", "optimal_k",
]


def _pos(name, v):
    return check_real_array(name, v, low=0.0, low_open=True)


def _nonneg(name, v):
    return check_real_array(name, v, low=0.0)


# ----------------------------------------------------------------------------- 3.1 convex Lipschitz
def convex_bound(radius, lipschitz, steps, lr, noise):
    """``E F(x_bar) - F* <= R^2/(2 eta T) + (eta/2)(G^2 + N)`` (averaged iterate, constant step).

    Assumptions: F convex, ``E||g_t||^2 <= G^2`` for the clipped mini-batch gradient, ``||x0 - x*|| <= R``,
    noise energy ``N``. Standard online-to-batch SGD analysis (e.g. Bubeck 2015, Thm 6.1; Shalev-Shwartz &
    Ben-David 2014, Thm 14.8) [L], re-derived here with ``G^2 -> G^2 + N`` [D].

    ``G^2`` bounds the second moment of the (clipped) mini-batch SIGNAL the step uses, not only the
    per-example norm: with Poisson sampling and division by the expected batch size ``B = q n``,
    per-example norms ``<= G`` give ``E||sum_{i in batch} g_i / B||^2 <= G^2 (1 + (1 - q)/B)``, so pass
    ``G sqrt(1 + (1 - q)/B)`` (found by the property tests: the plain ``G`` is not enough at small B).
    The bound is for the average of ``x_0 .. x_{T-1}``; :func:`sims.replicate.replicate_dpsgd` averages
    ``x_1 .. x_T``, which differs by ``(x_T - x_0)/T`` (the tests correct for it by convexity).
    """
    R, G, eta, N = _nonneg("radius", radius), _nonneg("lipschitz", lipschitz), _pos("lr", lr), _nonneg("noise", noise)
    T = check_int_array("steps", steps, low=1)
    return float_or_array(R ** 2 / (2 * eta * T) + eta / 2 * (G ** 2 + N))


def convex_optimal_lr(radius, lipschitz, steps, noise):
    """``eta* = R / sqrt(T (G^2 + N))``, the minimiser of :func:`convex_bound` (needs ``R, G^2 + N > 0``)."""
    R, G, N = _pos("radius", radius), _nonneg("lipschitz", lipschitz), _nonneg("noise", noise)
    T = check_int_array("steps", steps, low=1)
    if np.any(G ** 2 + N <= 0):
        raise ValueError("lipschitz**2 + noise must be in (0, inf) for an optimal step size")
    return float_or_array(R / np.sqrt(T * (G ** 2 + N)))


def convex_optimal_bound(radius, lipschitz, steps, noise):
    """``R sqrt(G^2 + N) / sqrt(T)``: :func:`convex_bound` at :func:`convex_optimal_lr` [S]."""
    R, G, N = _nonneg("radius", radius), _nonneg("lipschitz", lipschitz), _nonneg("noise", noise)
    T = check_int_array("steps", steps, low=1)
    return float_or_array(R * np.sqrt(G ** 2 + N) / np.sqrt(T))


def convex_random_k_bound(radius, lipschitz, steps, lr, noise, k, d):
    """Unscaled random-k: ``(d/k) R^2/(2 eta T) + (eta/2)(G^2 + N)`` [D].

    The update ``m * (g + noise)`` has ``E<m*g, x - x*> = (k/d)<g, x - x*>`` and
    ``E||m*(g+noise)||^2 <= (k/d)(G^2 + N)``; dividing the telescoped inequality by ``k/d`` turns
    ``R^2`` into ``(d/k) R^2``. At the optimal step the bound is ``sqrt(d/k)`` times the dense one.
    """
    k, d = check_k_d(k, d)
    return convex_bound(np.sqrt(d / k) * _nonneg("radius", radius), lipschitz, steps, lr, noise)


def convex_random_k_optimal_lr(radius, lipschitz, steps, noise, k, d):
    """``eta* = sqrt(d/k) R / sqrt(T (G^2 + N))`` for :func:`convex_random_k_bound`."""
    k, d = check_k_d(k, d)
    return convex_optimal_lr(np.sqrt(d / k) * _pos("radius", radius), lipschitz, steps, noise)


def convex_random_k_optimal_bound(radius, lipschitz, steps, noise, k, d):
    """``sqrt(d/k) R sqrt(G^2 + N)/sqrt(T)``: worse than dense by ``sqrt(d/k)`` [D]."""
    k, d = check_k_d(k, d)
    return convex_optimal_bound(np.sqrt(d / k) * _nonneg("radius", radius), lipschitz, steps, noise)


def fixed_set_bound(approx_error, radius_s, lipschitz_s, steps, k, sigma, clip, batch):
    """Fixed coordinate set S, |S| = k: ``approx + R_S sqrt(G_S^2 + k sigma^2 C^2/B^2)/sqrt(T)`` [D].

    ``approx = min_{x in x0 + span S} F - F*`` (approximation error of the subspace), ``R_S`` the distance
    to the subspace minimiser, ``G_S`` the gradient bound on S; the noise lives on k coordinates only.
    This is :func:`convex_optimal_bound` run inside the subspace, plus the approximation error.
    """
    approx = _nonneg("approx_error", approx_error)
    k = check_int_array("k", k, low=1)
    N_S = noise_energy(k, sigma, clip, batch)  # a float for scalar k, an array otherwise
    return float_or_array(approx + np.asarray(convex_optimal_bound(radius_s, lipschitz_s, steps, N_S)))


# ----------------------------------------------------------------------------- 3.2 strongly convex
def strongly_convex_last_iterate_bound(lipschitz, strong_convexity, t, noise):
    """``E||x_t - x*||^2 <= 4 (G^2 + N)/(lambda^2 t)`` with ``eta_t = 1/(lambda t)``.

    Rakhlin, Shamir & Sridharan 2012, Lemma 1 (``4 G^2/(lambda^2 t)`` under ``E||g||^2 <= G^2``) [L, checked],
    applied with the noisy second moment ``G^2 + N``. The constant 4 is the lemma's and is at least 2x
    loose: the same recursion, from ``E||x_1 - x*||^2 <= G^2/lambda^2``, gives ``2 (G^2 + N)/(lambda^2 t)``,
    which a pure-noise quadratic attains (tests/test_sim_vs_theory_bounds_attained.py).
    """
    G, lam, N = _nonneg("lipschitz", lipschitz), _pos("strong_convexity", strong_convexity), _nonneg("noise", noise)
    t = check_int_array("t", t, low=1)
    return float_or_array(4 * (G ** 2 + N) / (lam ** 2 * t))


def strongly_convex_weighted_average_bound(lipschitz, strong_convexity, steps, noise):
    """``E F(x_bar) - F* <= 2 (G^2 + N)/(lambda (T+1))``, ``eta_t = 2/(lambda(t+1))``, weights ``propto t``.

    Lacoste-Julien, Schmidt & Bach 2012 (arXiv 1212.2002), main theorem [L, checked].
    """
    G, lam, N = _nonneg("lipschitz", lipschitz), _pos("strong_convexity", strong_convexity), _nonneg("noise", noise)
    T = check_int_array("steps", steps, low=1)
    return float_or_array(2 * (G ** 2 + N) / (lam * (T + 1)))


def strongly_convex_random_k_bound(lipschitz, strong_convexity, t, noise, k, d):
    """Unscaled random-k with ``eta_t = d/(k lambda t)``: ``E||x_t - x*||^2 <= 4 (d/k)(G^2 + N)/(lambda^2 t)`` [D].

    ``(k/d) eta_t = 1/(lambda t)`` restores the RSS recursion with second moment ``(d/k)(G^2 + N)``.
    As for :func:`strongly_convex_last_iterate_bound`, the constant 4 is at least 2x loose (the
    recursion gives 2; tests/test_sim_vs_theory_bounds_attained_convex.py attains it).
    """
    k, d = check_k_d(k, d)
    return float_or_array(d / k * np.asarray(strongly_convex_last_iterate_bound(lipschitz, strong_convexity, t, noise)))


# ----------------------------------------------------------------------------- 3.3 non-convex
def dp_gradient_variance(clip, batch, d, sigma):
    """Variance proxy of the DP-SGD gradient, ``sigma_bar^2 <= C^2/B + N`` (sampling + noise), docs/theory.md §3.3."""
    clip, batch = _pos("clip", clip), _pos("batch", batch)
    return float_or_array(clip ** 2 / batch + np.asarray(noise_energy(d, sigma, clip, batch)))


def _check_lr_smooth(lr, L):
    if np.any(lr * L > 1 + 1e-12):
        raise ValueError(f"lr must be in (0, 1/smoothness], got lr={lr!r} with smoothness={L!r}")


def nonconvex_biased_bound(delta_f, smoothness, steps, lr, variance, bias_sq=0.0):
    """``(1/T) sum E||grad F||^2 <= 2 DeltaF/(eta T) + L eta sigma_bar^2 + mean_t ||b_t||^2`` [D].

    Assumptions: F L-smooth, ``E g = grad F + b_t``, ``Var g <= sigma_bar^2``, ``eta <= 1/L`` (checked).
    Standard biased-SGD descent lemma (cf. Ajalloeian & Stich 2020, arXiv 2008.00051, Thm 4, whose
    constants differ by the bias weighting); ``bias_sq`` is ``(1/T) sum ||b_t||^2``.
    """
    dF, L, eta = _nonneg("delta_f", delta_f), _pos("smoothness", smoothness), _pos("lr", lr)
    var, b2 = _nonneg("variance", variance), _nonneg("bias_sq", bias_sq)
    T = check_int_array("steps", steps, low=1)
    _check_lr_smooth(eta, L)
    return float_or_array(2 * dF / (eta * T) + L * eta * var + b2)


def nonconvex_biased_optimal_lr(delta_f, smoothness, steps, variance):
    """``eta* = min(1/L, sqrt(2 DeltaF/(T L sigma_bar^2)))``: minimiser of :func:`nonconvex_biased_bound`
    over ``(0, 1/L]``. When the square root is feasible the bound is ``2 sqrt(2 DeltaF L sigma_bar^2/T) + bias`` [S].
    """
    dF, L, var = _pos("delta_f", delta_f), _pos("smoothness", smoothness), _nonneg("variance", variance)
    T = check_int_array("steps", steps, low=1)
    with np.errstate(divide="ignore"):
        free = np.sqrt(2 * dF / (T * L * np.where(var > 0, var, np.nan)))
    return float_or_array(np.where(var > 0, np.fmin(1 / L, free), 1 / L))


def nonconvex_random_k_bound(delta_f, smoothness, steps, lr, k, d, per_example_variance, batch, noise):
    """Unscaled random-k, clip inactive: ``2 d DeltaF/(eta k T) + L eta (V/B + N)`` with ``eta <= 1/L`` [D].

    One step: ``E F(x+) <= F - eta (k/d)||grad F||^2 + (L eta^2/2)(k/d)(||grad F||^2 + V/B + N)``.
    """
    k, d = check_k_d(k, d)
    V, B, N = _nonneg("per_example_variance", per_example_variance), _pos("batch", batch), _nonneg("noise", noise)
    return float_or_array(np.asarray(nonconvex_biased_bound(d / k * _nonneg("delta_f", delta_f), smoothness, steps, lr, V / B + N)))


def nonconvex_random_k_optimal_lr(delta_f, smoothness, steps, k, d, per_example_variance, batch, noise):
    """``eta* = min(1/L, sqrt(2 d DeltaF/(k T L (V/B + N))))`` for :func:`nonconvex_random_k_bound`."""
    k, d = check_k_d(k, d)
    V, B, N = _nonneg("per_example_variance", per_example_variance), _pos("batch", batch), _nonneg("noise", noise)
    return nonconvex_biased_optimal_lr(d / k * _pos("delta_f", delta_f), smoothness, steps, V / B + N)


def nonconvex_random_k_optimal_bound(delta_f, smoothness, steps, k, d, per_example_variance, batch, noise):
    """:func:`nonconvex_random_k_bound` at its optimal step; equals ``2 sqrt(2 d DeltaF L (V/B+N)/(k T))``
    whenever the unconstrained optimum is ``<= 1/L`` [S]."""
    lr = nonconvex_random_k_optimal_lr(delta_f, smoothness, steps, k, d, per_example_variance, batch, noise)
    return nonconvex_random_k_bound(delta_f, smoothness, steps, lr, k, d, per_example_variance, batch, noise)




def mask_then_clip_bound(k, d, delta_f, smoothness, lr, clip, steps, sigma, batch, *, spread="worst_case"):
    """Mask-then-clip DP-SGD, all-clipped regime: ``(1/T) sum_t c_bar_t <= (a + b rho)/s(rho)``, ``rho = k/d`` [D].

    Parameters
    ----------
    k, d : int, ``1 <= k <= d``
        Kept and total coordinates (a fresh uniformly random k-subset ``m`` every step, zeroed
        BEFORE clipping, noise only on the kept coordinates, no rescaling).
    delta_f : float >= 0
        ``F(x_0) - inf F``.
    smoothness : float > 0
        ``L``, the smoothness of ``F``.
    lr, clip : float > 0
        Step ``eta`` and clipping norm ``C``.
    steps : int >= 1
        ``T``.
    sigma : float >= 0
        Noise multiplier (noise std ``sigma C / B`` on each kept coordinate).
    batch : float > 0
        ``B``, the divisor of the clipped sum.
    spread : {"worst_case", "spread_out"} or float in [0.5, 1], keyword only
        The spread factor ``s(rho) = rho^p``: ``"worst_case"`` (default) is ``p = 1``, ``s = rho``;
        ``"spread_out"`` is ``p = 1/2``, ``s = sqrt(rho)``; a number is ``p`` itself.

    Returns
    -------
    float or ndarray
        ``(a + b rho)/s(rho) = a rho^(-p) + b rho^(1-p)`` with ``a = DeltaF/(eta C T) + L eta C/2`` and
        ``b = L eta C d sigma^2/(2 B^2)`` (:func:`dptheory.noise_signal.tradeoff_coefficients`):
        ``a/rho + b`` in the worst case, ``a/sqrt(rho) + b sqrt(rho)`` when spread out.

    Notes
    -----
    ``c_bar_t = <grad F(x_t), (1/n) sum_i g_i/||g_i||>`` is the descent of the dense normalised
    gradient. One step of the descent lemma with ``u_t = (1/B) sum_i clip_C(m * g_i)``,
    ``||u_t|| <= C`` and zero-mean noise of energy ``k sigma^2 C^2/B^2`` gives, telescoped,

    ``(1/T) sum_t c_tilde_t <= DeltaF/(eta C T) + (L eta C/2)(1 + rho d sigma^2/B^2) = a + b rho``,

    where ``c_tilde_t = E_m <grad F(x_t), u_t>/C`` is the descent the MASKED step really makes. This
    holds without any assumption on the gradients (it is :func:`random_freeze_bound`). The spread
    factor converts it into a statement about ``c_bar``: it is any ``s`` with
    ``E_m <grad F, clip_C(m * g_i)> >= s C <grad F, g_i/||g_i||>`` for every example.

    - Worst case, ``s = rho``: if every example is clipped (``||m * g_i|| >= C`` whenever
      ``m * g_i != 0``) then ``clip_C(m * g_i) = C (m * g_i)/||m * g_i||``, and if
      ``<grad F, m * g_i> >= 0`` for every mask (e.g. per-example gradients sign-aligned with
      ``grad F`` coordinate-wise, as in separable problems), ``||m * g_i|| <= ||g_i||`` gives
      ``E_m <grad F, clip_C(m * g_i)> >= C E_m <grad F, m * g_i>/||g_i|| = rho C <grad F, g_i/||g_i||>``.
      Attained by 1-sparse gradients (``f_i(x) = x_i^2/2``: the step moves coordinate i only when
      it is kept). In this case the bound ``a/rho + b`` decreases in ``rho``: it never recommends
      sparsifying (:func:`dptheory.noise_signal.optimal_keep_fraction` returns 1).
    - Spread out, ``s = sqrt(rho)``: if ``||m * g_i|| = sqrt(rho) ||g_i||`` for every mask (exactly
      for gradients whose coordinates have equal magnitudes, approximately for dense gradients and
      ``k`` not small), ``E_m clip_C(m * g_i) = sqrt(rho) C g_i/||g_i||``. By Jensen
      (``E||m * g|| <= sqrt(rho)||g||``) a real spread is at most ``sqrt(rho)`` when
      ``grad F ~ g_i``, so this is an approximation that holds only when ``||m * g_i||`` concentrates.

    Without sign alignment no ``s > 0`` is guaranteed: masked inner products can cancel.
    With Poisson sampling at rate ``q < 1`` the second moment of the clipped mean is at most
    ``C^2 (1 + (1-q)/B)``: multiply the ``L eta C/2`` term of ``a`` by ``1 + (1-q)/B``; the tests use
    ``q = 1``. Zhu & Blaschko (arXiv 2112.00845) state the trade-off only in their abstract; these
    constants are ours. Derivation: :func:`proofs.convergence.mask_then_clip_spread`. Tests:
    ``tests/test_sim_vs_theory_mask_then_clip.py`` (each form within 15 % of the simulated descent
    on an instance of its regime; the spread-out form fails on 1-sparse gradients).

    Raises
    ------
    ValueError
        For an argument out of the ranges above (naming it), arrays that do not broadcast, or a
        ``spread`` that is not ``"worst_case"``, ``"spread_out"`` or a real in [0.5, 1].
    """
    check_broadcast(k=k, d=d, delta_f=delta_f, smoothness=smoothness, lr=lr, clip=clip, steps=steps,
                    sigma=sigma, batch=batch)
    k, d = check_k_d(k, d)
    p = spread_exponent(spread)
    a, b = tradeoff_coefficients(delta_f, smoothness, lr, clip, steps, d, sigma, batch)
    rho = np.asarray(k / d, dtype=np.float64)
    return float_or_array((np.asarray(a) + np.asarray(b) * rho) / rho ** p)


def random_freeze_bound(keep_fractions, d, delta_f, smoothness, lr, clip, sigma, batch):
    """Time-varying keep fraction: ``(1/T) sum_t c_tilde_t <= DeltaF/(eta C T) + (L eta C/2)(1/T) sum_t (1 + rho_t d sigma^2/B^2)`` [D].

    Parameters
    ----------
    keep_fractions : 1-D array, entries in (0, 1]
        ``rho_t = 1 - r_t`` over the ``T`` steps (e.g. :func:`dptheory.noise_signal.freeze_schedule`
        repeated per step); ``T = len(keep_fractions)``.
    d : int >= 1
    delta_f, smoothness, lr, clip, sigma, batch
        As in :func:`mask_then_clip_bound`.

    Returns
    -------
    float
        The right-hand side above.

    Notes
    -----
    ``c_tilde_t = E_m <grad F(x_t), u_t>/C`` is the descent of the masked clipped mean
    ``u_t = (1/B) sum_i clip_C(m_t * g_i)``: the descent lemma with ``||u_t|| <= C`` and noise energy
    ``rho_t d sigma^2 C^2/B^2`` on the kept coordinates gives the bound with NO assumption on the
    gradients (L-smooth F, ``q = 1``). In terms of the dense normalised descent ``c_bar_t`` of
    :func:`mask_then_clip_bound`, ``c_tilde_t >= s(rho_t) c_bar_t``, so the same number bounds
    ``(1/T) sum_t rho_t c_bar_t`` in the worst case (all clipped, sign-aligned) and
    ``(1/T) sum_t sqrt(rho_t) c_bar_t`` only when spread out. (Earlier docstrings stated the
    latter unconditionally; 1-sparse gradients violate it.) Constant ``rho``:
    ``s(rho)`` x :func:`mask_then_clip_bound` for every spread.
    """
    rho = check_finite_array("keep_fractions", keep_fractions, ndim=1).astype(np.float64)
    if rho.size == 0 or np.any(rho <= 0) or np.any(rho > 1):
        raise ValueError("keep_fractions must be a non-empty 1-D array with entries in (0, 1]")
    dF, L, eta, C = _nonneg("delta_f", delta_f), _pos("smoothness", smoothness), _pos("lr", lr), _pos("clip", clip)
    d = check_int("d", d, low=1)
    sigma, B = _nonneg("sigma", sigma), _pos("batch", batch)
    T = rho.size
    return float_or_array(dF / (eta * C * T) + L * eta * C / 2 * np.mean(1 + rho * d * sigma ** 2 / B ** 2))


# ----------------------------------------------------------------------------- 3.4 coordinate methods
def random_k_cd_pl_bound(k, d, pl, smoothness, steps, delta_f):
    """Random-k coordinate descent, exact gradient, step 1/L, mu-PL: ``(1 - k mu/(d L))^T DeltaF`` [D].

    ``E F(x+) <= F - (k/d)||grad F||^2/(2L)`` and PL ``||grad F||^2 >= 2 mu (F - F*)``. Needs ``mu <= L``.
    """
    k, d = check_k_d(k, d)
    mu, L, dF = _pos("pl", pl), _pos("smoothness", smoothness), _nonneg("delta_f", delta_f)
    if np.any(mu > L):
        raise ValueError(f"pl must be in (0, smoothness], got pl={mu!r} with smoothness={L!r}")
    T = check_int_array("steps", steps, low=0)
    return float_or_array((1 - k * mu / (d * L)) ** T * dF)


def random_k_cd_nonconvex_bound(k, d, smoothness, steps, delta_f):
    """Random-k coordinate descent, step 1/L: ``(1/T) sum E||grad F||^2 <= 2 d L DeltaF/(k T)`` [D]."""
    k, d = check_k_d(k, d)
    L, dF = _pos("smoothness", smoothness), _nonneg("delta_f", delta_f)
    T = check_int_array("steps", steps, low=1)
    return float_or_array(2 * d * L * dF / (k * T))


def top_k_gd_bound(k, d, smoothness, steps, delta_f):
    """Top-k GD without error feedback, exact gradient, ``eta = 1/L``: ``min_t ||grad F||^2 <= 2 d L DeltaF/(k T)`` [D].

    ``||top_k g||^2 >= (k/d)||g||^2`` deterministically, so each step decreases F by ``(k/d)||g||^2/(2L)``.
    With stochastic gradients a biased compressor can diverge (Karimireddy et al. 2019, sign counterexamples).
    """
    return random_k_cd_nonconvex_bound(k, d, smoothness, steps, delta_f)


def error_feedback_bound(delta_f, smoothness, steps, second_moment, delta):
    """EF-SGD, ``gamma = 1/sqrt(T+1)``: ``(2 DeltaF + L s^2)/sqrt(T+1) + 4 L^2 s^2 (1-delta)/(delta^2 (T+1))`` [D].

    Bounds ``(1/(T+1)) sum_{t=0}^{T} E||grad F(x_t)||^2``, hence ``min_{t <= T} E||grad F(x_t)||^2``.

    Parameters
    ----------
    delta_f : float >= 0
        ``F(x_0) - inf F``.
    smoothness : float > 0
        ``L``.
    steps : int >= 0
        ``T``, the number of updates (iterates ``x_0 .. x_T``).
    second_moment : float >= 0
        ``s^2 >= sup_t E||g_t||^2`` for the stochastic gradient that is compressed (for DP:
        ``s^2 = G^2 + N``, the noise added BEFORE compressing).
    delta : float in (0, 1]
        The compressor is ``delta``-approximate: ``||Q(x) - x||^2 <= (1 - delta)||x||^2``
        (top-k: ``delta = k/d``, :func:`dptheory.noise_signal.contraction_top_k`).

    Notes
    -----
    Algorithm (Karimireddy, Rebjock, Stich & Jaggi 2019, arXiv 1901.09847, EF-SGD, Alg. 2):
    ``p_t = gamma g_t + e_t``, ``x_{t+1} = x_t - Q(p_t)``, ``e_{t+1} = p_t - Q(p_t)``, ``e_0 = 0``.
    Derivation (:func:`proofs.convergence.error_feedback_descent`, the technique of their
    Theorem II): the virtual iterate ``x_t - e_t`` is plain SGD; the descent lemma there, Young's
    inequality ``-<a, b> <= (||a - b||^2 - ||b||^2)/2`` with ``||a - b|| <= L ||e_t||``, and
    ``E||e_t||^2 <= 4 (1-delta) gamma^2 s^2/delta^2`` give, telescoped,
    ``avg_t E||grad F(x_t)||^2 <= 2 DeltaF/(gamma (T+1)) + L gamma s^2 + 4 L^2 gamma^2 s^2 (1-delta)/delta^2``.
    The paper's text was not reachable here; the expression recalled earlier,
    ``(4 DeltaF + L s^2)/(2 sqrt(T+1)) + ...``, has ``L s^2/2`` where this proof gives ``L s^2``
    (Young costs the factor 2 on both first-order terms), so it is not used. Simulated runs reach
    0.9 of that expression without exceeding it: it is unproven rather than refuted. Simulation
    (``tests/test_sim_vs_theory_convergence.py::test_error_feedback_average_gradient_bound_deterministic``,
    ``::test_error_feedback_average_gradient_bound_noise_dominated``): the measured average is 0.47-0.49
    of this bound, because SGD-like runs reach ``(DeltaF + L s^2/2)/sqrt(T+1)``, half the proven
    leading term.

    Raises
    ------
    ValueError
        For an argument out of the ranges above, naming it.
    """
    dF, L, s2 = _nonneg("delta_f", delta_f), _pos("smoothness", smoothness), _nonneg("second_moment", second_moment)
    dl = check_real_array("delta", delta, low=0.0, high=1.0, low_open=True)
    T = check_int_array("steps", steps, low=0)
    return float_or_array((2 * dF + L * s2) / np.sqrt(T + 1.0) + 4 * L ** 2 * s2 * (1 - dl) / (dl ** 2 * (T + 1.0)))


# ----------------------------------------------------------------------------- privacy-calibrated
def calibrated_sigma(n, batch, epochs, epsilon, delta):
    """Noise multiplier for ``epochs`` passes at Poisson rate ``q = B/n``.

    ``T = round(epochs * steps_per_epoch(q))`` steps, the convention of :func:`sims.train.train`
    (:func:`dptheory.accounting.steps_per_epoch`: ``round(1/q)`` steps per epoch).

    Delegates to :func:`dptheory.accounting.calibrate_noise` (RDP of the subsampled Gaussian).
    Returns ``(sigma, steps)``. Random-k / freeze masks are data-independent, so the dense accounting
    is a valid upper bound for them; it is not tight (no amplification from the mask is claimed).
    """
    n = check_int("n", n, low=1)
    batch = check_int("batch", batch, low=1, high=n)
    epochs = check_real("epochs", epochs, low=0.0, low_open=True)
    epsilon = check_real("epsilon", epsilon, low=0.0, low_open=True)
    delta = check_real("delta", delta, low=0.0, high=1.0, low_open=True, high_open=True)
    from dptheory.accounting import calibrate_noise, steps_per_epoch
    steps = max(1, int(round(epochs * steps_per_epoch(batch / n))))
    return float(calibrate_noise(batch / n, steps, epsilon, delta)), steps


def private_convex_bound(n, d, epsilon, delta, epochs, batch, radius, lipschitz, clip, k=None):
    """Convex bound at the optimal step with sigma calibrated to (epsilon, delta); ``k`` = unscaled random-k.

    ``sqrt(d/k) R sqrt(G^2 + N)/sqrt(T)`` with ``N = d sigma^2 C^2/B^2`` (dense when ``k`` is None).
    """
    d = check_int("d", d, low=1)
    sigma, T = calibrated_sigma(n, batch, epochs, epsilon, delta)
    N = noise_energy(d, sigma, _pos("clip", clip), batch)
    if k is None:
        return convex_optimal_bound(radius, lipschitz, T, N)
    return convex_random_k_optimal_bound(radius, lipschitz, T, N, k, d)


def private_nonconvex_random_k_bound(n, d, epsilon, delta, epochs, batch, k, delta_f, smoothness,
                                     per_example_variance, clip):
    """:func:`nonconvex_random_k_optimal_bound` with sigma calibrated to (epsilon, delta)."""
    d = check_int("d", d, low=1)
    sigma, T = calibrated_sigma(n, batch, epochs, epsilon, delta)
    N = noise_energy(d, sigma, _pos("clip", clip), batch)
    return nonconvex_random_k_optimal_bound(delta_f, smoothness, T, k, d, per_example_variance, batch, N)


def private_mask_then_clip_bound(n, d, epsilon, delta, epochs, batch, k, delta_f, smoothness, lr, clip, *,
                                 spread="worst_case"):
    """:func:`mask_then_clip_bound` (same ``spread``, default the worst case) with sigma calibrated to (epsilon, delta)."""
    sigma, T = calibrated_sigma(n, batch, epochs, epsilon, delta)
    return mask_then_clip_bound(k, d, delta_f, smoothness, lr, clip, T, sigma, batch, spread=spread)


def _fixed_set_curve(d, sigma, T, batch, clip, radius, lipschitz, smoothness, energy_profile):
    e = check_finite_array("energy_profile", energy_profile, ndim=1).astype(np.float64)
    if e.size != d or np.any(e < 0) or e.sum() <= 0:
        raise ValueError(f"energy_profile must be a 1-D array of length d={d} with entries >= 0 and a positive sum")
    phi = np.cumsum(np.sort(e)[::-1]) / e.sum()
    phi = np.minimum(phi, 1.0)
    ks = np.arange(1, d + 1)
    R, G, L = _nonneg("radius", radius), _nonneg("lipschitz", lipschitz), _pos("smoothness", smoothness)
    approx = L / 2 * R ** 2 * (1 - phi)
    return approx + np.asarray(fixed_set_bound(0.0, R * np.sqrt(phi), G * np.sqrt(phi), T, ks, sigma, clip, batch))


def optimal_k(n, d, epsilon, delta, epochs, batch, *, kind="mask_then_clip", clip=1.0, delta_f=None,
              smoothness=None, lr=None, radius=None, lipschitz=None, energy_profile=None, spread="worst_case"):
    """Integer ``k in [1, d]`` minimising a privacy-calibrated bound; returns ``(k, bound_value)``.

    ``kind="mask_then_clip"`` (needs ``delta_f, smoothness, lr``): minimises :func:`mask_then_clip_bound`
    with the given ``spread`` (default ``"worst_case"``, for which the bound decreases in ``rho`` and
    the answer is ``k = d``; ``"spread_out"`` gives the Zhu-Blaschko trade-off). The bound is
    unimodal in ``rho`` with minimiser :func:`dptheory.noise_signal.optimal_keep_fraction`, so the
    answer is ``floor`` or ``ceil`` of ``rho* d`` (ties go to the smaller k).

    ``kind="fixed_set"`` (needs ``radius, lipschitz, smoothness, energy_profile``): S = the k coordinates of
    largest public energy; ``phi(k)`` the captured fraction; model [D] (separable objective, the profile
    splits both ``R^2`` and ``G^2``): ``(L/2) R^2 (1 - phi) + R sqrt(phi) sqrt(G^2 phi + k s^2)/sqrt(T)``,
    where ``(L/2)||P_{S^c}(x0 - x*)||^2`` bounds the subspace approximation error by L-smoothness.
    Minimised by evaluating every k (O(d)).
    """
    kind = check_choice("kind", kind, ("mask_then_clip", "fixed_set"))
    d = check_int("d", d, low=1)
    clip = check_real("clip", clip, low=0.0, low_open=True)
    sigma, T = calibrated_sigma(n, batch, epochs, epsilon, delta)
    if kind == "mask_then_clip":
        for name, v in (("delta_f", delta_f), ("smoothness", smoothness), ("lr", lr)):
            if v is None:
                raise ValueError(f"{name} must be given (a positive real) for kind='mask_then_clip'")
        rho = optimal_keep_fraction(d, sigma, batch, delta_f, smoothness, lr, clip, T, spread=spread)
        cands = sorted({min(d, max(1, math.floor(rho * d))), min(d, max(1, math.ceil(rho * d)))})
        vals = [mask_then_clip_bound(c, d, delta_f, smoothness, lr, clip, T, sigma, batch, spread=spread)
                for c in cands]
        i = int(np.argmin(vals))
        return cands[i], float(vals[i])
    for name, v in (("radius", radius), ("lipschitz", lipschitz), ("smoothness", smoothness),
                    ("energy_profile", energy_profile)):
        if v is None:
            raise ValueError(f"{name} must be given for kind='fixed_set'")
    curve = _fixed_set_curve(d, sigma, T, batch, clip, radius, lipschitz, smoothness, energy_profile)
    i = int(np.argmin(curve))
    return i + 1, float(curve[i])
