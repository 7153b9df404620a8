"""Reference rates from the private-optimisation literature, to draw beside the project's bounds (docs/reference_rates.md).

Two kinds of function live here, and their names say which:

- ``*_rate``: the paper states only an order ``O(.)`` (or an upper bound with unstated or
  polylogarithmic constants). The function evaluates the stated order with its explicit
  constant set to 1, times ``constant`` (keyword, default 1). It is a RATE, not a bound: only its
  dependence on ``n, d, epsilon, delta, L, R, lambda`` is claimed, and the tests check only that.
- ``*_bound``: the paper states a bound with explicit constants; the function evaluates it.

Compare with :func:`dptheory.convergence.private_convex_bound` (the project's DP-SGD bound at
the optimal step with sigma calibrated by RDP): with full batches it equals
``R sqrt(G^2 + N)/sqrt(T)`` with ``N = d sigma^2 C^2/n^2`` and ``sigma ~ sqrt(T log(1/delta))/epsilon``,
i.e. the shape ``L R sqrt(d log(1/delta))/(n epsilon)`` of :func:`bst14_convex_rate` once ``N``
dominates ``G^2`` (docs/reference_rates.md has a table). Functions broadcast over NumPy arrays
and validate their arguments (``ValueError`` naming the parameter and its range). Derivations:
:mod:`proofs.reference_rates`; simulations: ``tests/test_reference_rates.py``.
"""
from __future__ import annotations

import numpy as np

from .validation import (
    check_broadcast,
    check_int_array,
    check_real_array,
    float_or_array,
)

__all__ = ["bst14_convex_rate", "bst14_strongly_convex_rate", "dp_sco_rate", "shamir_zhang_last_iterate_bound"]


def _pos(name, v):
    return check_real_array(name, v, low=0.0, low_open=True)


def _common(n, d, epsilon, delta, constant):
    n = check_int_array("n", n, low=1)
    d = check_int_array("d", d, low=1)
    eps = _pos("epsilon", epsilon)
    dl = check_real_array("delta", delta, low=0.0, high=1.0, low_open=True, high_open=True)
    c = _pos("constant", constant)
    return n, d, eps, dl, c


def bst14_convex_rate(n, d, epsilon, delta, lipschitz, radius, *, constant=1.0):
    """Excess empirical risk rate, convex Lipschitz ERM: ``c L R sqrt(d log(1/delta))/(n epsilon)`` (a rate).

    Source: Bassily, Smith & Thakurta 2014 ("Private empirical risk minimization: efficient
    algorithms and tight error bounds", FOCS; arXiv 1405.7085), convex case. The paper gives an
    ``O(.)`` upper bound (for noisy SGD, with further polylogarithmic factors in ``n/delta``) and a
    matching ``Omega(sqrt(d)/(n epsilon))`` lower bound; only the order is taken here, with the
    logarithmic factor ``sqrt(log(1/delta))`` of later analyses and the constant ``c = constant``.

    Assumptions: loss convex and ``L``-Lipschitz in the parameter, constraint set of diameter
    (or distance ``||w_0 - w*||``) ``R``; ``(epsilon, delta)``-DP; ``n`` examples in ``d`` dimensions.

    Parameters
    ----------
    n, d : int or array >= 1
        Dataset size and dimension.
    epsilon : float or array > 0
    delta : float or array in (0, 1)
    lipschitz : float or array > 0
        ``L``.
    radius : float or array > 0
        ``R``.
    constant : float > 0, keyword
        The unknown constant ``c`` (default 1).

    Returns
    -------
    float or ndarray

    Raises
    ------
    ValueError
        For an argument out of range (naming it) or shapes that do not broadcast.
    """
    check_broadcast(n=n, d=d, epsilon=epsilon, delta=delta, lipschitz=lipschitz, radius=radius)
    n, d, eps, dl, c = _common(n, d, epsilon, delta, constant)
    L, R = _pos("lipschitz", lipschitz), _pos("radius", radius)
    return float_or_array(c * L * R * np.sqrt(d * np.log(1.0 / dl)) / (n * eps))


def bst14_strongly_convex_rate(n, d, epsilon, delta, lipschitz, strong_convexity, *, constant=1.0):
    """Excess empirical risk rate, ``lambda``-strongly convex Lipschitz ERM: ``c L^2 d log(1/delta)/(lambda n^2 epsilon^2)`` (a rate).

    Source: Bassily, Smith & Thakurta 2014 (FOCS; arXiv 1405.7085), strongly convex case; an
    ``O(.)`` statement (polylogarithmic factors in ``n/delta`` omitted as for
    :func:`bst14_convex_rate`); constant ``c = constant``.

    Assumptions: loss ``L``-Lipschitz, objective ``lambda``-strongly convex; ``(epsilon, delta)``-DP.

    Parameters
    ----------
    n, d : int or array >= 1
    epsilon : float or array > 0
    delta : float or array in (0, 1)
    lipschitz : float or array > 0
    strong_convexity : float or array > 0
        ``lambda``.
    constant : float > 0, keyword

    Returns
    -------
    float or ndarray

    Raises
    ------
    ValueError
        For an argument out of range (naming it) or shapes that do not broadcast.
    """
    check_broadcast(n=n, d=d, epsilon=epsilon, delta=delta, lipschitz=lipschitz, strong_convexity=strong_convexity)
    n, d, eps, dl, c = _common(n, d, epsilon, delta, constant)
    L, lam = _pos("lipschitz", lipschitz), _pos("strong_convexity", strong_convexity)
    return float_or_array(c * L ** 2 * d * np.log(1.0 / dl) / (lam * n ** 2 * eps ** 2))


def dp_sco_rate(n, d, epsilon, delta, lipschitz, radius, *, constant=1.0):
    """Excess POPULATION risk rate, DP stochastic convex optimisation: ``c L R (1/sqrt(n) + sqrt(d log(1/delta))/(n epsilon))`` (a rate).

    Source: Bassily, Feldman, Talwar & Thakurta 2019 ("Private stochastic convex optimization with
    optimal rates", NeurIPS; arXiv 1908.09970): the optimal order for convex Lipschitz losses
    (their algorithms need smoothness or extra gradient computations; the order is the same).
    Stated as ``O(.)``/``Theta(.)``: constant ``c = constant``. The first term is the non-private
    statistical rate, the second the privacy cost (:func:`bst14_convex_rate`).

    Assumptions: i.i.d. data, loss convex and ``L``-Lipschitz, domain of diameter ``R``;
    ``(epsilon, delta)``-DP.

    Parameters
    ----------
    n, d : int or array >= 1
    epsilon : float or array > 0
    delta : float or array in (0, 1)
    lipschitz, radius : float or array > 0
    constant : float > 0, keyword

    Returns
    -------
    float or ndarray

    Raises
    ------
    ValueError
        For an argument out of range (naming it) or shapes that do not broadcast.
    """
    check_broadcast(n=n, d=d, epsilon=epsilon, delta=delta, lipschitz=lipschitz, radius=radius)
    n, d, eps, dl, c = _common(n, d, epsilon, delta, constant)
    L, R = _pos("lipschitz", lipschitz), _pos("radius", radius)
    return float_or_array(c * L * R * (1.0 / np.sqrt(n) + np.sqrt(d * np.log(1.0 / dl)) / (n * eps)))


def shamir_zhang_last_iterate_bound(lipschitz, strong_convexity, steps, noise=0.0):
    """Last iterate of SGD, ``lambda``-strongly convex, ``eta_t = 1/(lambda t)``: ``E F(w_T) - F* <= 17 (G^2 + N)(1 + log T)/(lambda T)``.

    Source: Shamir & Zhang 2013 ("Stochastic gradient descent for non-smooth optimization:
    convergence results and optimal averaging schemes", ICML), the strongly convex last-iterate
    theorem (the brief cites it as Theorem 1; the text was not reachable here, and in the version
    we recall the convex case is Theorem 1 and this one Theorem 2; the constant 17 and the factor
    ``1 + log T`` are as stated by the brief and as we recall them). ``log`` is natural.

    Assumptions: ``F`` ``lambda``-strongly convex (not necessarily smooth) on a closed convex set
    ``W``, projected SGD ``w_{t+1} = Pi_W(w_t - g_t/(lambda t))``, ``t = 1..T-1`` from any
    ``w_1 in W``, unbiased subgradients with ``E||g_t||^2 <= G^2``. For DP-SGD the second moment is
    ``G^2 + N`` (``N`` the noise energy, :func:`dptheory.noise_signal.noise_energy`), as in
    :func:`dptheory.convergence.strongly_convex_last_iterate_bound`.

    Parameters
    ----------
    lipschitz : float or array >= 0
        ``G``.
    strong_convexity : float or array > 0
        ``lambda``.
    steps : int or array >= 1
        ``T``; the bound is for ``w_T``.
    noise : float or array >= 0, optional
        ``N``, added to ``G^2``.

    Returns
    -------
    float or ndarray

    Notes
    -----
    The constant is far from attained on simple instances: a pure-noise quadratic gives
    ``(G^2 + N)/(2 lambda T)`` (``tests/test_reference_rates.py``), ``34 (1 + log T)`` times less.
    Harvey, Liaw, Plan & Randhawa 2019 show the ``log T`` factor is necessary for the last iterate
    of non-smooth problems.

    Raises
    ------
    ValueError
        For an argument out of range (naming it) or shapes that do not broadcast.
    """
    check_broadcast(lipschitz=lipschitz, strong_convexity=strong_convexity, steps=steps, noise=noise)
    G = check_real_array("lipschitz", lipschitz, low=0.0)
    lam = _pos("strong_convexity", strong_convexity)
    T = check_int_array("steps", steps, low=1)
    N = check_real_array("noise", noise, low=0.0)
    return float_or_array(17.0 * (G ** 2 + N) * (1.0 + np.log(T)) / (lam * T))
