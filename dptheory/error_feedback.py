"""Error feedback (EF) for compressed, and for differentially private, gradient steps (docs/error_feedback.md).

A compressor ``Q`` is ``alpha``-contractive when ``||Q(x) - x||^2 <= (1 - alpha)||x||^2`` (top-k:
``alpha = k/d``, :func:`dptheory.noise_signal.contraction_top_k` returns ``1 - alpha``). Functions
broadcast over NumPy arrays, validate their arguments (``ValueError`` naming the parameter and
its range) and return a Python ``float`` for scalar inputs. Derivations: :mod:`proofs.error_feedback`;
simulations: ``tests/test_error_feedback_theory.py``.

What was checked against the literature, and what is the project's own work:

- Memory SGD (Stich, Cordonnier & Jaggi 2018, "Sparsified SGD with memory", NeurIPS, arXiv
  1809.07599, Theorem 2.4 and Lemma 3.3): statement, step size ``eta_t = 8/(mu (a + t))``, weights
  ``w_t = (a + t)^2``, ``S_T`` and the condition on ``(a, alpha)`` checked against the paper's text;
  the weighted-average unrolling (Lemma 3.3) is re-derived in :func:`proofs.error_feedback.mem_sgd_unrolled`.

- EF21 (Richtárik, Sokolov & Fatkhullin 2021, arXiv 2106.05203, Theorem 1, smooth non-convex):
  the parameters ``theta = 1 - sqrt(1 - alpha)``, ``beta = (1 - alpha)/(1 - sqrt(1 - alpha))``, the
  step-size condition ``gamma <= 1/(L + L_tilde sqrt(beta/theta))`` and the bound
  ``2 DeltaF/(gamma T) + G_0/(theta T)`` are those of the brief and of the published statement as we
  recall it; the paper's text was not reachable from here, so every constant is re-derived from the
  Lyapunov function ``Phi_t = f(x_t) - f* + gamma/(2 theta) ||g_t - grad f(x_t)||^2`` in
  :func:`proofs.error_feedback.ef21_lyapunov` [D], which reaches exactly these expressions.
- DP error feedback: the main theorem of Zhang, Bu, Wu & Hong 2023 (arXiv 2311.14632, DiceSGD)
  could not be read here (only abstracts were reachable), so its constants are NOT used.
  :func:`dp_error_feedback_bound` is the project's derivation [D]: the EF-SGD bound of
  :func:`dptheory.convergence.error_feedback_bound` (Karimireddy et al. 2019, re-derived there)
  with the second moment of the privatised gradient, ``E||g + s z||^2 = E||g||^2 + d s^2``,
  ``s = sigma C/B`` (noise added BEFORE compression, so the compressor is post-processing).
- DP EF21: :func:`dp_ef21_step_size` and :func:`dp_ef21_bound` are the project's derivation [D]
  (EF21 on the noisy releases, with the noise carried through the Lyapunov recursion;
  :func:`proofs.error_feedback.dp_ef21_lyapunov`). Only the structure (descent lemma, contraction,
  Young, Lyapunov function, telescoping) follows the stochastic EF21 analyses (EF21-SGD of
  Fatkhullin, Sokolov, Gorbunov, Li & Richtárik 2021, arXiv 2110.03294); their constants were not
  read here and are not claimed.
"""
from __future__ import annotations

import numpy as np

from .convergence import error_feedback_bound
from .noise_signal import noise_energy
from .validation import (
    check_broadcast,
    check_int_array,
    check_k_d,
    check_real_array,
    float_or_array,
)

__all__ = ["mem_sgd_lr", "mem_sgd_weight_sum", "mem_sgd_bound",
           "ef21_parameters", "ef21_step_size", "ef21_bound", "dp_error_feedback_bound",
           "dp_ef21_step_size", "dp_ef21_bound"]


def _shift(shift):
    return check_real_array("shift", shift, low=1.0, low_open=True)


def mem_sgd_lr(t, strong_convexity, shift):
    """Step size of Stich, Cordonnier & Jaggi 2018 (NeurIPS, Theorem 2.4): ``eta_t = 8/(mu (a + t))``.

    Parameters
    ----------
    t : int or array >= 0
        Iteration index (``t = 0`` is the first step).
    strong_convexity : float or array > 0
        ``mu``.
    shift : float or array > 1
        The shift ``a`` (the theorem needs ``a >= (alpha + 1) d/k + rho/(rho + 1)``; see
        :func:`mem_sgd_bound`).

    Returns
    -------
    float or ndarray

    Raises
    ------
    ValueError
        For an argument out of range (naming it) or shapes that do not broadcast.
    """
    check_broadcast(t=t, strong_convexity=strong_convexity, shift=shift)
    t = check_int_array("t", t, low=0)
    mu = check_real_array("strong_convexity", strong_convexity, low=0.0, low_open=True)
    return float_or_array(8.0 / (mu * (_shift(shift) + t)))


def mem_sgd_weight_sum(steps, shift):
    """``S_T = sum_{t<T} (a + t)^2 = (T/6)(2T^2 + 6aT - 3T + 6a^2 - 6a + 1)`` (Stich et al. 2018, Lemma 3.3).

    The normaliser of the weighted average ``x_bar_T = (1/S_T) sum_{t<T} (a + t)^2 x_t``; ``S_T >= T^3/3``.

    Parameters
    ----------
    steps : int or array >= 1
        ``T``.
    shift : float or array > 1
        ``a``.

    Returns
    -------
    float or ndarray

    Raises
    ------
    ValueError
        For an argument out of range (naming it) or shapes that do not broadcast.
    """
    check_broadcast(steps=steps, shift=shift)
    T = check_int_array("steps", steps, low=1).astype(np.float64)
    a = _shift(shift)
    return float_or_array(T / 6.0 * (2 * T ** 2 + 6 * a * T - 3 * T + 6 * a ** 2 - 6 * a + 1))


def mem_sgd_bound(steps, strong_convexity, smoothness, second_moment, k, d, init_dist_sq, shift, alpha):
    """Memory SGD with a k-contraction, strongly convex (Stich, Cordonnier & Jaggi 2018, Theorem 2.4).

    ``E f(x_bar_T) - f* <= 4T(T+2a) G^2/(mu S_T) + mu a^3 ||x_0 - x*||^2/(8 S_T)
    + 64 T (1 + 2L/mu)/(mu S_T) (4 alpha/(alpha - 4)) (d/k)^2 G^2``

    with ``eta_t = 8/(mu (a + t))`` (:func:`mem_sgd_lr`), ``x_bar_T = (1/S_T) sum_{t<T} (a+t)^2 x_t``
    and ``S_T`` of :func:`mem_sgd_weight_sum`.

    Algorithm (their eq. (8), Alg. 1): ``g_t = comp_k(m_t + eta_t grad f_{i_t}(x_t))``,
    ``x_{t+1} = x_t - g_t``, ``m_{t+1} = m_t + eta_t grad f_{i_t}(x_t) - g_t``, ``m_0 = 0``.
    Assumptions: each ``f_i`` ``L``-smooth, ``f`` ``mu``-strongly convex,
    ``E_i ||grad f_i(x_t)||^2 <= G^2`` for ``t < T``, ``comp_k`` a k-contraction
    (``E||x - comp_k(x)||^2 <= (1 - k/d)||x||^2``, :func:`dptheory.noise_signal.contraction_top_k`),
    ``alpha > 4`` and ``a >= (alpha + 1) d/k + rho/(rho + 1)``, ``rho = 4 alpha/((alpha - 4)(alpha + 1)^2)``
    (Remark 2.5: ``a = (alpha + 2) d/k`` always satisfies it). For DP-SGD (noise before
    compression) pass ``G^2 + N`` as ``second_moment``.

    Parameters
    ----------
    steps : int or array >= 1
        ``T``.
    strong_convexity : float or array > 0
        ``mu``.
    smoothness : float or array > 0
        ``L``.
    second_moment : float or array >= 0
        ``G^2``.
    k, d : int or array, 1 <= k <= d
    init_dist_sq : float or array >= 0
        ``||x_0 - x*||^2``.
    shift : float or array > 1
        ``a``.
    alpha : float or array > 4
        The theorem's free parameter.

    Returns
    -------
    float or ndarray
        The right-hand side above.

    Notes
    -----
    Proof (Section 3 of the paper; :func:`proofs.error_feedback.mem_sgd_unrolled`): the virtual
    iterate ``x_tilde_t = x_t + m_t`` satisfies ``a_{t+1} <= (1 - mu eta_t/2) a_t + eta_t^2 A +
    eta_t^3 B - eta_t e_t`` with ``A = G^2``, ``B = (mu + 2L)(4 alpha/(alpha-4))(d/k)^2 G^2`` (Lemmas
    3.1, 3.2); multiplying by ``w_t/eta_t`` and telescoping (Lemma 3.3) gives the bound.
    The constants are far from attained on simple instances (tests/test_error_feedback_theory.py).

    Raises
    ------
    ValueError
        For an argument out of range (naming it), an ``(a, alpha)`` outside the theorem's
        condition, or shapes that do not broadcast.
    """
    check_broadcast(steps=steps, strong_convexity=strong_convexity, smoothness=smoothness,
                    second_moment=second_moment, k=k, d=d, init_dist_sq=init_dist_sq, shift=shift, alpha=alpha)
    T = check_int_array("steps", steps, low=1).astype(np.float64)
    mu = check_real_array("strong_convexity", strong_convexity, low=0.0, low_open=True)
    L = check_real_array("smoothness", smoothness, low=0.0, low_open=True)
    G2 = check_real_array("second_moment", second_moment, low=0.0)
    k, d = check_k_d(k, d)
    D2 = check_real_array("init_dist_sq", init_dist_sq, low=0.0)
    a = _shift(shift)
    al = check_real_array("alpha", alpha, low=4.0, low_open=True)
    rho = 4 * al / ((al - 4) * (al + 1) ** 2)
    need = (al + 1) * d / k + rho / (rho + 1)
    if np.any(a < need * (1 - 1e-12)):
        raise ValueError(f"shift must be >= (alpha + 1) d/k + rho/(rho + 1) = {need!r} (Stich et al. 2018, "
                         f"Theorem 2.4), got shift={shift!r}")
    S = np.asarray(mem_sgd_weight_sum(T, a))
    return float_or_array(4 * T * (T + 2 * a) * G2 / (mu * S) + mu * a ** 3 * D2 / (8 * S)
                          + 64 * T * (1 + 2 * L / mu) / (mu * S) * (4 * al / (al - 4)) * (d / k) ** 2 * G2)


def _alpha(alpha):
    return check_real_array("alpha", alpha, low=0.0, high=1.0, low_open=True)


def ef21_parameters(alpha):
    """EF21's constants ``(theta, beta)`` for an ``alpha``-contractive compressor.

    ``theta = 1 - sqrt(1 - alpha)``, ``beta = (1 - alpha)/(1 - sqrt(1 - alpha))``
    (Richtárik, Sokolov & Fatkhullin 2021, arXiv 2106.05203, Theorem 1 and its Lemma on Young's
    inequality).

    Parameters
    ----------
    alpha : float or array, in (0, 1]
        Contraction parameter: ``E||Q(x) - x||^2 <= (1 - alpha)||x||^2`` (top-k: ``k/d``).

    Returns
    -------
    (theta, beta) : tuple of float or arrays
        ``theta in (0, 1]``, ``beta >= 0`` (``alpha = 1`` gives ``(1, 0)``).

    Notes
    -----
    They come from ``||a + b||^2 <= (1 + s)||a||^2 + (1 + 1/s)||b||^2`` applied to the EF21 error
    ``g_{t+1} - grad f(x_{t+1}) = (Q(v) - v)``, ``v = grad f(x_{t+1}) - g_t``, split as
    ``v = (grad f(x_t) - g_t) + (grad f(x_{t+1}) - grad f(x_t))``: with ``s = 1/sqrt(1-alpha) - 1``,
    ``(1 - alpha)(1 + s) = 1 - theta`` and ``(1 - alpha)(1 + 1/s) = beta``
    (:func:`proofs.error_feedback.ef21_lyapunov`).

    Raises
    ------
    ValueError
        If ``alpha`` is not in (0, 1].
    """
    a = _alpha(alpha)
    r = np.sqrt(1.0 - a)
    theta = 1.0 - r
    beta = (1.0 - a) / theta
    return float_or_array(theta), float_or_array(beta)


def ef21_step_size(alpha, smoothness, smoothness_tilde=None):
    """Largest step EF21's Theorem 1 allows: ``gamma_max = 1/(L + L_tilde sqrt(beta/theta))``.

    Source: Richtárik, Sokolov & Fatkhullin 2021 (arXiv 2106.05203), Theorem 1. With one node
    (or identical smoothness) ``L_tilde = L`` and ``gamma_max = 1/(L (1 + sqrt(beta/theta)))``.

    Parameters
    ----------
    alpha : float or array, in (0, 1]
        Compressor contraction parameter (:func:`ef21_parameters`).
    smoothness : float or array > 0
        ``L``, the smoothness constant of ``f``.
    smoothness_tilde : float or array > 0, optional
        ``L_tilde``, the quadratic mean of the nodes' smoothness constants; defaults to ``L``.

    Returns
    -------
    float or ndarray
        ``gamma_max``; ``1/L`` when ``alpha = 1`` (no compression: gradient descent).

    Raises
    ------
    ValueError
        For an argument out of range (naming it) or shapes that do not broadcast.
    """
    check_broadcast(alpha=alpha, smoothness=smoothness, smoothness_tilde=0.0 if smoothness_tilde is None
                    else smoothness_tilde)
    L = check_real_array("smoothness", smoothness, low=0.0, low_open=True)
    Lt = L if smoothness_tilde is None else check_real_array("smoothness_tilde", smoothness_tilde, low=0.0,
                                                             low_open=True)
    theta, beta = ef21_parameters(alpha)
    return float_or_array(1.0 / (L + Lt * np.sqrt(np.asarray(beta) / np.asarray(theta))))


def ef21_bound(delta_f, smoothness, steps, alpha, lr=None, init_error=0.0, smoothness_tilde=None):
    """EF21, smooth non-convex: ``(1/T) sum_{t<T} E||grad f(x_t)||^2 <= 2 DeltaF/(gamma T) + G_0/(theta T)``.

    Source: Richtárik, Sokolov & Fatkhullin 2021 (arXiv 2106.05203), Theorem 1, re-derived in
    :func:`proofs.error_feedback.ef21_lyapunov` [D].

    Algorithm (one node; ``n`` nodes average their ``g_i``): ``x_{t+1} = x_t - gamma g_t``,
    ``g_{t+1} = g_t + Q(grad f(x_{t+1}) - g_t)``. Assumptions: ``f`` is ``L``-smooth and bounded
    below by ``f*``; ``Q`` is ``alpha``-contractive; exact (full) gradients; no bounded-gradient
    assumption; ``gamma <= gamma_max`` (:func:`ef21_step_size`).

    Parameters
    ----------
    delta_f : float or array >= 0
        ``DeltaF = f(x_0) - f*``.
    smoothness : float or array > 0
        ``L``.
    steps : int or array >= 1
        ``T``; the average is over ``x_0 .. x_{T-1}``.
    alpha : float or array in (0, 1]
        Compressor contraction parameter.
    lr : float or array in (0, gamma_max], optional
        The step ``gamma``; defaults to ``gamma_max``.
    init_error : float or array >= 0, optional
        ``G_0 = ||g_0 - grad f(x_0)||^2`` (0 for the usual ``g_0 = grad f(x_0)``).
    smoothness_tilde : float or array > 0, optional
        ``L_tilde`` of :func:`ef21_step_size`; defaults to ``L``.

    Returns
    -------
    float or ndarray
        The right-hand side above.

    Raises
    ------
    ValueError
        For an argument out of range (naming it), ``lr > gamma_max`` or shapes that do not broadcast.
    """
    check_broadcast(delta_f=delta_f, smoothness=smoothness, steps=steps, alpha=alpha,
                    lr=0.0 if lr is None else lr, init_error=init_error)
    dF = check_real_array("delta_f", delta_f, low=0.0)
    T = check_int_array("steps", steps, low=1)
    G0 = check_real_array("init_error", init_error, low=0.0)
    gmax = np.asarray(ef21_step_size(alpha, smoothness, smoothness_tilde))
    if lr is None:
        gamma = gmax
    else:
        gamma = check_real_array("lr", lr, low=0.0, low_open=True)
        if np.any(gamma > gmax * (1 + 1e-12)):
            raise ValueError(f"lr must be in (0, gamma_max] with gamma_max = 1/(L + L_tilde sqrt(beta/theta)) "
                             f"= {gmax!r}, got lr={lr!r}")
    theta, _ = ef21_parameters(alpha)
    return float_or_array(2.0 * dF / (gamma * T) + G0 / (np.asarray(theta) * T))


def dp_error_feedback_bound(delta_f, smoothness, steps, signal_second_moment, compressor_delta, d, sigma, clip,
                            batch):
    """DP EF-SGD (noise before compression), ``gamma = 1/sqrt(T+1)``: the EF-SGD bound with ``s^2 = G^2 + d sigma^2 C^2/B^2`` [D].

    ``(1/(T+1)) sum_{t<=T} E||grad F(x_t)||^2 <= (2 DeltaF + L s^2)/sqrt(T+1) + 4 L^2 s^2 (1-delta)/(delta^2 (T+1))``
    with ``s^2 = G^2 + N``, ``N = d sigma^2 C^2/B^2`` (:func:`dptheory.noise_signal.noise_energy`).

    The project's derivation (not a published theorem): :func:`dptheory.convergence.error_feedback_bound`
    (Karimireddy, Rebjock, Stich & Jaggi 2019, arXiv 1901.09847, Theorem II, constants re-derived
    there) applied to the privatised gradient ``g_t + s z_t``, ``z_t ~ N(0, I_d)`` independent of
    the past, whose second moment is ``E||g_t||^2 + d s^2`` (cross term zero;
    :func:`proofs.error_feedback.dp_ef_second_moment`). The main theorem of Zhang, Bu, Wu & Hong
    2023 (arXiv 2311.14632) was not reachable, so its constants are not claimed here.

    Algorithm: ``p_t = gamma (g_t + s z_t) + e_t``, ``x_{t+1} = x_t - Q(p_t)``,
    ``e_{t+1} = p_t - Q(p_t)``; ``g_t`` the mean clipped mini-batch gradient. Privacy is that of
    DP-SGD with noise multiplier ``sigma``: ``Q`` and the memory only post-process the noisy sum.

    Parameters
    ----------
    delta_f : float or array >= 0
        ``F(x_0) - inf F``.
    smoothness : float or array > 0
        ``L``.
    steps : int or array >= 0
        ``T`` (iterates ``x_0 .. x_T``).
    signal_second_moment : float or array >= 0
        ``G^2 >= sup_t E||g_t||^2`` of the clipped mini-batch mean (``<= C^2`` when ``q = 1``).
    compressor_delta : float or array in (0, 1]
        ``||Q(x) - x||^2 <= (1 - delta)||x||^2`` (top-k: ``k/d``).
    d : int or array >= 1
        Dimension.
    sigma : float or array >= 0
        Noise multiplier.
    clip : float or array > 0
        Clipping norm ``C``.
    batch : float or array > 0
        (Expected) batch size ``B``.

    Returns
    -------
    float or ndarray
        The right-hand side above.

    Raises
    ------
    ValueError
        For an argument out of range (naming it) or shapes that do not broadcast.
    """
    check_broadcast(delta_f=delta_f, smoothness=smoothness, steps=steps, signal_second_moment=signal_second_moment,
                    compressor_delta=compressor_delta, d=d, sigma=sigma, clip=clip, batch=batch)
    G2 = check_real_array("signal_second_moment", signal_second_moment, low=0.0)
    dl = check_real_array("compressor_delta", compressor_delta, low=0.0, high=1.0, low_open=True)
    N = np.asarray(noise_energy(d, sigma, clip, batch))
    return error_feedback_bound(delta_f, smoothness, steps, G2 + N, dl)


def _dp_ef21_constants(a):
    """``(r, theta_hat, beta_hat, nu)`` of :func:`dp_ef21_bound` for ``alpha`` in (0, 1] (already validated)."""
    r = np.sqrt(1.0 - a)                   # sqrt(1 - alpha)
    theta = 1.0 - np.sqrt(r)               # 1 - (1 - alpha)^(1/4)
    beta = r / theta
    nu = r + 1.0 / (1.0 - r)
    return r, theta, beta, nu


def dp_ef21_step_size(alpha, smoothness):
    """Largest step of :func:`dp_ef21_bound`: ``gamma_max = theta_hat/L``, ``theta_hat = 1 - (1 - alpha)^(1/4)`` [D].

    This is EF21's ``gamma_max = 1/(L (1 + sqrt(beta_hat/theta_hat)))`` (:func:`ef21_step_size`)
    with ``theta_hat = 1 - sqrt(r)``, ``beta_hat = r/theta_hat``, ``r = sqrt(1 - alpha)``: the
    noise costs one more Young split, which replaces ``1 - alpha`` by ``r`` (see
    :func:`dp_ef21_bound`; :func:`proofs.error_feedback.dp_ef21_lyapunov`). For top-k with
    ``k << d`` it is ``~ k/(4 d L)``, half of EF21's ``~ k/(2 d L)``.

    Parameters
    ----------
    alpha : float or array in (0, 1]
        Compressor contraction parameter (top-k: ``k/d``).
    smoothness : float or array > 0
        ``L``.

    Returns
    -------
    float or ndarray
        ``gamma_max``; ``1/L`` at ``alpha = 1``.

    Raises
    ------
    ValueError
        For an argument out of range (naming it) or shapes that do not broadcast.
    """
    check_broadcast(alpha=alpha, smoothness=smoothness)
    a = _alpha(alpha)
    L = check_real_array("smoothness", smoothness, low=0.0, low_open=True)
    _, theta, _, _ = _dp_ef21_constants(a)
    return float_or_array(theta / L)


def dp_ef21_bound(delta_f, smoothness, steps, alpha, d, sigma, clip, batch, lr=None, init_error=None,
                  grad_variance=0.0):
    """DP EF21 (EF21 on the noisy DP-SGD releases), smooth non-convex, constant step [D].

    ``(1/T) sum_{t<T} E||grad f(x_t)||^2 <= 2 DeltaF/(gamma T) + H_0/(theta_hat T) + nu V_tot/theta_hat``

    with ``r = sqrt(1 - alpha)``, ``theta_hat = 1 - sqrt(r) = 1 - (1 - alpha)^(1/4)``,
    ``nu = r + 1/(1 - r)``, ``V_tot = V + d sigma^2 C^2/B^2`` (:func:`dptheory.noise_signal.noise_energy`
    plus the sampling variance ``V``), any ``gamma <= gamma_max = theta_hat/L`` (:func:`dp_ef21_step_size`)
    and ``H_0 = E||g_0 - grad f(x_0)||^2``. The minimum over ``t < T`` is below the average.
    At ``alpha = 1`` (no compression) it reads ``2 DeltaF/(gamma T) + H_0/T + V_tot``, ``gamma <= 1/L``.

    Algorithm (one node, as ``sims.mechanisms.error_feedback(top_k(k, "noisy"), "ef21")`` after
    ``clip(C)`` and ``gaussian_noise(sigma)``, with plain SGD): the step-``t`` release
    ``v_t = (sum_{i in batch} clip_C(grad f_i(x_t)) + N(0, sigma^2 C^2 I_d))/B``, then
    ``g_t = g_{t-1} + Q(v_t - g_{t-1})`` from ``g_{-1} = 0`` and ``x_{t+1} = x_t - gamma g_t``.
    Written from ``g_0 = Q(v_0)`` this is EF21's ``x_{t+1} = x_t - gamma g_t``,
    ``g_{t+1} = g_t + Q(v_{t+1} - g_t)`` with the exact gradient replaced by ``v_{t+1}``.

    Assumptions: ``f`` is ``L``-smooth and bounded below by ``f*``; ``Q`` is ``alpha``-contractive,
    ``E||Q(y) - y||^2 <= (1 - alpha)||y||^2`` for every ``y`` (top-k: ``alpha = k/d``); the error
    ``xi_t = v_t - grad f(x_t)`` has conditional mean zero given the past and ``x_t`` and
    conditional second moment at most ``V_tot``. Mean zero needs NO clipping bias: ``C`` at least
    every per-example gradient norm along the run (otherwise ``E v_t`` is the mean clipped gradient
    and the bound does not apply as stated), and an unbiased batch (``B`` the batch size, or the
    expected batch size ``q n`` under Poisson sampling). The Gaussian part is independent of the
    sampling, so its ``d sigma^2 C^2/B^2`` adds to the sampling variance ``V`` (0 with the full
    batch; with replacement ``V <= (1/(B n)) sum_i ||grad f_i - grad f||^2``).

    Privacy: ``g_t`` and ``x_t`` are functions of the released ``v_0 .. v_t`` (and public
    starting values) only, so the compressor, the EF21 state and the step are post-processing:
    the run has exactly the privacy of the noisy releases, i.e. DP-SGD's with noise multiplier
    ``sigma`` and the same sampling (:mod:`dptheory.accounting`).

    Proof (:func:`proofs.error_feedback.dp_ef21_lyapunov`): the descent lemma with the biased
    direction ``g_t``, ``f(x_{t+1}) <= f(x_t) - (gamma/2)||grad f(x_t)||^2 - (1/(2 gamma) - L/2) R_t
    + (gamma/2) H_t`` (``R_t = ||x_{t+1} - x_t||^2``, ``H_t = ||g_t - grad f(x_t)||^2``); the new
    error ``g_{t+1} - grad f(x_{t+1}) = (Q(y) - y) + xi_{t+1}``, ``y = a + xi_{t+1}``,
    ``a = grad f(x_{t+1}) - g_t``, split by Young with ``1 + c = 1/r`` and the contraction, then
    ``E||a + xi||^2 = ||a||^2 + E||xi||^2`` and Young with ``1 + s = 1/sqrt(r)`` on ``a``:
    ``E H_{t+1} <= (1 - theta_hat) H_t + beta_hat L^2 R_t + nu V_tot``, ``beta_hat = r/theta_hat``.
    With ``Phi_t = f(x_t) - f* + gamma/(2 theta_hat) H_t`` the ``H_t`` terms cancel, the ``R_t``
    coefficient is ``<= 0`` for ``gamma <= theta_hat/L``, and telescoping from ``Phi_0`` gives the bound.
    This split is the best of the family ``(1 + c)(1 - alpha) = p`` (``1 + s = 1/sqrt(p)``) for the
    noise term as ``alpha -> 0``, where it is ``~ 8 V_tot/alpha^2``.

    How close it is (tests/test_error_feedback_theory.py): at ``alpha = 1`` on ``f = (L/2)||x||^2``
    with ``gamma = 1/L`` it is attained up to ``(T + 1)/(T - 1)`` (noise and sampling variance) and
    exactly without noise. At ``alpha < 1`` the noise term is NOT nearly attained by any instance
    found: the closest, the contractive ``Q(y) = y + sqrt(1-alpha)||y|| e_0`` on a quadratic, is
    6.8x (``alpha = 0.9``) and 11.7x (``alpha = 0.5``) below it, a gap growing like ``4/alpha``; top-k
    with isotropic noise is ~400x below it at ``alpha = 0.5``. Whether the ``1/alpha^2`` of
    ``nu/theta_hat`` can be attained is open (not proved either way), so for ``alpha < 1`` its
    constant is pinned by the proof entry, not by simulation.

    Parameters
    ----------
    delta_f : float or array >= 0
        ``DeltaF = f(x_0) - f*``.
    smoothness : float or array > 0
        ``L``.
    steps : int or array >= 1
        ``T``; the average is over ``x_0 .. x_{T-1}``.
    alpha : float or array in (0, 1]
        Compressor contraction parameter.
    d : int or array >= 1
        Dimension (the noise energy is ``d sigma^2 C^2/B^2``).
    sigma : float or array >= 0
        Noise multiplier.
    clip : float or array > 0
        Clipping norm ``C``.
    batch : float or array > 0
        (Expected) batch size ``B``.
    lr : float or array in (0, gamma_max], optional
        The step ``gamma``; defaults to ``gamma_max = theta_hat/L``.
    init_error : float or array >= 0, optional
        ``H_0 = E||g_0 - grad f(x_0)||^2``. The default is the simulator's start ``g_{-1} = 0``,
        ``g_0 = Q(v_0)``, for which the same one-step split gives
        ``H_0 <= r ||grad f(x_0)||^2 + nu V_tot <= 2 L r DeltaF + nu V_tot``
        (``||grad f(x_0)||^2 <= 2 L DeltaF`` for an ``L``-smooth ``f`` bounded below). Pass
        ``V_tot`` for ``g_0 = v_0``.
    grad_variance : float or array >= 0, optional
        ``V``, a bound on the conditional second moment of the sampling error of the (clipped)
        mini-batch mean; 0 (full batch) by default.

    Returns
    -------
    float or ndarray
        The right-hand side above.

    Raises
    ------
    ValueError
        For an argument out of range (naming it), ``lr > gamma_max`` or shapes that do not broadcast.
    """
    check_broadcast(delta_f=delta_f, smoothness=smoothness, steps=steps, alpha=alpha, d=d, sigma=sigma, clip=clip,
                    batch=batch, lr=0.0 if lr is None else lr, init_error=0.0 if init_error is None else init_error,
                    grad_variance=grad_variance)
    dF = check_real_array("delta_f", delta_f, low=0.0)
    L = check_real_array("smoothness", smoothness, low=0.0, low_open=True)
    T = check_int_array("steps", steps, low=1)
    a = _alpha(alpha)
    V = check_real_array("grad_variance", grad_variance, low=0.0)
    Vtot = V + np.asarray(noise_energy(d, sigma, clip, batch))
    r, theta, _, nu = _dp_ef21_constants(a)
    gmax = theta / L
    if lr is None:
        gamma = gmax
    else:
        gamma = check_real_array("lr", lr, low=0.0, low_open=True)
        if np.any(gamma > gmax * (1 + 1e-12)):
            raise ValueError(f"lr must be in (0, gamma_max] with gamma_max = (1 - (1 - alpha)^(1/4))/L "
                             f"= {gmax!r}, got lr={lr!r}")
    if init_error is None:
        H0 = 2.0 * L * r * dF + nu * Vtot
    else:
        H0 = check_real_array("init_error", init_error, low=0.0)
    return float_or_array(2.0 * dF / (gamma * T) + H0 / (theta * T) + nu * Vtot / theta)
