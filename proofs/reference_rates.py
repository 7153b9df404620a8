"""Derivations behind :mod:`dptheory.reference_rates` (docs/reference_rates.md).

The ``*_rate`` functions are orders ``O(.)`` with their constant set to 1; what can be derived is
the SHAPE: noisy full-batch gradient descent with the Gaussian mechanism's composition (RDP,
leading order) reaches ``L R sqrt(d log(1/delta))/(n epsilon)`` (convex, times ``sqrt 2``) and
``L^2 d log(1/delta)/(lambda n^2 epsilon^2)`` (strongly convex, constant exactly 1 on the
pure-noise quadratic), and one-pass SGD adds ``L R/sqrt(n)``. Shamir & Zhang's constant 17 is not
re-derived (its proof is long); that entry is an identity check plus the exact last iterate of
a pure-noise quadratic, which sits ``34 (1 + log T)`` below it.
"""
from __future__ import annotations

import sympy as sp

from . import derivation
from .common import check_points, telescoped_average


def _sigma_sq():
    r"""Leading-order noise multiplier of ``m`` Gaussian steps: ``sigma^2 = 2 m log(1/delta)/epsilon^2``.

    RDP of ``m`` compositions, ``m a/(2 sigma^2)``, converted with ``+ log(1/delta)/a`` (``a - 1 ~ a``),
    minimised over the order ``a``; solved for ``sigma``.
    """
    m, a, sig, eps, lg = sp.symbols("m a sigma epsilon ell", positive=True)    # ell = log(1/delta)
    e_of_a = m * a / (2 * sig ** 2) + lg / a
    a_star = [s for s in sp.solve(sp.diff(e_of_a, a), a) if s.is_positive]
    e_min = sp.simplify(e_of_a.subs(a, a_star[0]))
    sol = [s for s in sp.solve(sp.Eq(e_min, eps), sig) if s.is_positive]
    return (m, eps, lg), e_min, sp.simplify(sol[0] ** 2)


@derivation("BST14 convex rate: noisy GD, R sqrt(N/T) with the composed Gaussian's sigma = sqrt 2 x L R sqrt(d log(1/delta))/(n eps)",
            covers=("reference_rates.bst14_convex_rate",))
def bst14_convex_shape(show):
    """Telescoped distance step at the optimal step, noise-dominated, sigma from RDP; the rate (rtol 1e-12)."""
    from dptheory.reference_rates import bst14_convex_rate
    (m, eps, lg), e_min, sig2 = _sigma_sq()
    show("epsilon after m Gaussian steps (optimal RDP order, leading order)", e_min)
    show("sigma^2", sig2)
    ok = sp.simplify(sig2 - 2 * m * lg / eps ** 2) == 0
    R, G, N, eta, n, d, C = sp.symbols("R G N eta n d C", positive=True)
    _, avg = telescoped_average(2 * eta, eta ** 2 * (G ** 2 + N), m, R ** 2)
    eta_star = next(s for s in sp.solve(sp.diff(avg, eta), eta) if s.is_positive)
    val = sp.simplify(avg.subs(eta, eta_star))
    show("convex DP-GD bound at its optimal step", val)
    noise = d * sig2 * C ** 2 / n ** 2                      # full batch B = n, clip C = L
    lead = sp.simplify(sp.limit(val.subs(N, noise) / sp.sqrt(G ** 2 + noise) * sp.sqrt(noise), G, 0))
    show("noise-dominated (G^2 << N) value", lead)
    shape = C * R * sp.sqrt(d * lg) / (n * eps)
    ok &= sp.simplify(lead - sp.sqrt(2) * shape) == 0
    pairs = [(bst14_convex_rate(1000, 50, 1.0, 1e-5, 1.0, 2.0), shape.subs({C: 1, R: 2, d: 50, n: 1000, eps: 1,
                                                                           lg: sp.log(10 ** 5)})),
             (bst14_convex_rate(60000, 784, 0.5, 1e-6, 3.0, 0.5, constant=2.0),
              2 * shape.subs({C: 3, R: sp.Rational(1, 2), d: 784, n: 60000, eps: sp.Rational(1, 2), lg: sp.log(10 ** 6)}))]
    ok &= check_points(show, "bst14_convex_rate", pairs, rtol=1e-12)
    return bool(ok)


@derivation("BST14 strongly convex rate: pure-noise quadratic, eta_t = 1/(lambda t), gap N/(2 lambda m) = L^2 d log(1/delta)/(lambda n^2 eps^2)",
            covers=("reference_rates.bst14_strongly_convex_rate",))
def bst14_strong_shape(show):
    """Recursion ``v_{t+1} = (1 - 1/t)^2 v_t + N/(lambda t)^2`` from its base case, then sigma from RDP; the rate (rtol 1e-12)."""
    from dptheory.reference_rates import bst14_strongly_convex_rate
    (m, eps, lg), _, sig2 = _sigma_sq()
    lam, N, n, d, C = sp.symbols("lambda N n d C", positive=True)
    v = {2: N / lam ** 2}                                  # w_2 = w_1 - (lambda w_1 + xi_1)/lambda = -xi_1/lambda
    ok = True
    for t in range(2, 12):
        v[t + 1] = sp.simplify((1 - sp.Rational(1, t)) ** 2 * v[t] + N / (lam * t) ** 2)
        ok &= sp.simplify(v[t + 1] - N / (lam ** 2 * t)) == 0      # E||w_{m+1}||^2 = N/(lambda^2 m) after m steps
    show("E||w_{m+1} - w*||^2 after m = 11 noisy steps", v[12])
    gap = lam / 2 * N / (lam ** 2 * m)
    val = sp.simplify(gap.subs(N, d * sig2 * C ** 2 / n ** 2))
    show("E F(w) - F* with N = d sigma^2 C^2/n^2, sigma^2 = 2 m log(1/delta)/eps^2", val)
    shape = C ** 2 * d * lg / (lam * n ** 2 * eps ** 2)
    ok &= sp.simplify(val - shape) == 0
    pairs = [(bst14_strongly_convex_rate(1000, 50, 1.0, 1e-5, 1.0, 0.1),
              shape.subs({C: 1, lam: sp.Rational(1, 10), d: 50, n: 1000, eps: 1, lg: sp.log(10 ** 5)})),
             (bst14_strongly_convex_rate(500, 3, 4.0, 1e-3, 2.0, 5.0, constant=0.5),
              shape.subs({C: 2, lam: 5, d: 3, n: 500, eps: 4, lg: sp.log(1000)}) / 2)]
    ok &= check_points(show, "bst14_strongly_convex_rate", pairs, rtol=1e-12)
    return bool(ok)


@derivation("DP-SCO rate (BFTT19): one-pass SGD R G/sqrt(n) plus the privacy term L R sqrt(d log(1/delta))/(n eps)",
            covers=("reference_rates.dp_sco_rate",))
def dp_sco_shape(show):
    """Telescoped distance step with T = n, N = 0 at the optimal step; plus the BST14 term (rtol 1e-12)."""
    from dptheory.reference_rates import bst14_convex_rate, dp_sco_rate
    R, G, eta, n = sp.symbols("R G eta n", positive=True)
    _, avg = telescoped_average(2 * eta, eta ** 2 * G ** 2, n, R ** 2)
    eta_star = next(s for s in sp.solve(sp.diff(avg, eta), eta) if s.is_positive)
    stat = sp.simplify(avg.subs(eta, eta_star))
    show("one pass of SGD (T = n), non-private, at its optimal step", stat)
    ok = sp.simplify(stat - R * G / sp.sqrt(n)) == 0
    pairs = []
    for pt in ((1000, 50, 1.0, 1e-5, 1.0, 2.0), (10 ** 6, 10 ** 4, 0.1, 1e-8, 0.5, 3.0)):
        pairs.append((dp_sco_rate(*pt), stat.subs({R: pt[5], G: pt[4], n: pt[0]}) + bst14_convex_rate(*pt)))
    ok &= check_points(show, "dp_sco_rate", pairs, rtol=1e-12)
    return bool(ok)


@derivation("Shamir & Zhang 2013 last iterate: 17 (G^2+N)(1 + log T)/(lambda T) (typed in); pure-noise quadratic (G^2+N)/(2 lambda T)",
            kind="identity", covers=("reference_rates.shamir_zhang_last_iterate_bound",))
def shamir_zhang_identity(show):
    """The typed-in bound against the function; the exact pure-noise last iterate is below it for T = 2..200."""
    from dptheory.reference_rates import shamir_zhang_last_iterate_bound
    G2, lam, T = sp.symbols("G2 lambda T", positive=True)
    bound = 17 * G2 * (1 + sp.log(T)) / (lam * T)
    show("Shamir & Zhang bound (typed in)", bound)
    # F = (lambda/2) w^2, g = lambda w + xi, E xi^2 = G2 - lambda^2 E w^2 <= G2 (take w_1 = 0: E g^2 = G2 after
    # the first step); eta_t = 1/(lambda t): w_T = -(1/(lambda (T-1))) sum xi, E F(w_T) = G2'/(2 lambda (T-1)).
    exact = G2 / (2 * lam * (T - 1))
    ok = all(bool((bound - exact).subs({G2: 1, lam: 1, T: t}) > 0) for t in range(2, 201))
    show("bound / pure-noise last iterate", sp.simplify(bound / exact))
    pairs = [(shamir_zhang_last_iterate_bound(1.0, 0.5, 100), bound.subs({G2: 1, lam: sp.Rational(1, 2), T: 100})),
             (shamir_zhang_last_iterate_bound(2.0, 3.0, 1, noise=1.5), bound.subs({G2: 4 + sp.Rational(3, 2), lam: 3, T: 1})),
             (shamir_zhang_last_iterate_bound(0.3, 0.01, 10 ** 6), bound.subs({G2: sp.Rational(9, 100),
                                                                              lam: sp.Rational(1, 100), T: 10 ** 6}))]
    ok &= check_points(show, "shamir_zhang_last_iterate_bound", pairs, rtol=1e-12)
    return bool(ok)
