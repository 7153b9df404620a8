"""Derivations behind :mod:`dptheory.mask_amplification` (docs/mask_amplification.md; issue 14 item 4).

The OPTIONAL amplified accounting of clip-then-mask random-k: a fresh uniformly random k-subset
``S`` of the ``d`` coordinates each step, independent of the data, noise only on ``S``, ``S``
released. Given ``S`` the step is the Poisson-subsampled Gaussian at squared sensitivity
``x_S = ||Delta_S||^2 / C^2``; the law of ``S`` is the same in both worlds, so the Renyi moment of
the joint release ``(S, Y)`` is ``E_S[A_alpha(x_S)]``.
"""
from __future__ import annotations

import sympy as sp

from . import derivation
from .common import check_points, mask_average, normal_pdf

q = sp.Symbol("q", positive=True)
u = sp.Symbol("u", positive=True)        # u = 1 - q, positive for q < 1
s = sp.Symbol("sigma", positive=True)
x = sp.Symbol("x", nonnegative=True)     # squared sensitivity in units of C^2
f = sp.Symbol("f", positive=True)        # keep fraction k/d
C = sp.Symbol("C", positive=True)
z = sp.Symbol("z", real=True)
eps = sp.Symbol("epsilon", positive=True)


def _moment(a: int, xx=x, uu=u):
    """A_alpha(x) = E_{mu_0}[((1-q) + q L_x)^alpha] at integer alpha, expanded binomially, with
    E_{mu_0}[L_x^j] = exp(j (j-1) x / (2 sigma^2)) (the Gaussian moment at sensitivity sqrt(x))."""
    return sum(sp.binomial(a, j) * uu ** (a - j) * q**j * sp.exp(j * (j - 1) * xx / (2 * s**2))
               for j in range(a + 1))


def _likelihood_moment(show):
    """E_{N(0, sigma^2)}[L_x^j] for L_x the likelihood ratio of N(sqrt(x), sigma^2) to N(0, sigma^2)."""
    j = sp.Symbol("j", integer=True, nonnegative=True)
    logL = (2 * sp.sqrt(x) * z - x) / (2 * s**2)
    mom = sp.simplify(sp.integrate(normal_pdf(z, 0, s) * sp.exp(j * logL), (z, -sp.oo, sp.oo)))
    show("E_{mu_0}[L_x^j] (integral)", mom)
    return sp.simplify(mom - sp.exp(j * (j - 1) * x / (2 * s**2))) == 0


@derivation("Clip-then-mask random-k RDP: E_S of the subsampled-Gaussian moment under its chord (integer orders)",
            covers=("mask_amplification.rdp_random_mask_gaussian",))
def random_mask_rdp(show):
    r"""From the joint moment E_S[A_alpha(x_S)] to log(1 - f + f A_alpha(1)) / (alpha - 1).

    1. E_{mu_0}[L_x^j] from the Gaussian integral, so A_alpha(x) is the binomial sum (MTZ 2019).
    2. Each term of A_alpha'' is a product of positive factors: A_alpha is convex in x (alpha = 2..6).
    3. A_alpha(0) = (u + q)^alpha = 1 with u = 1 - q.
    4. g(x) = 1 + x (A(1) - 1) - A(x) has g(0) = g(1) = 0 and g'' = -A'' <= 0, so g >= 0 on [0, 1].
    5. E_S[x_S] by summing over all k-subsets (d = 4, k = 1, 2, 3; symbolic Delta): (k/d) ||Delta||^2/C^2.
    6. A Dirac canary (Delta = C e_1) gives E_S[A(x_S)] = 1 - k/d + (k/d) A(1) exactly (the bound is attained).
    7. ``rdp_random_mask_gaussian`` at integer orders against the derived expression (rtol 1e-12).
    """
    from dptheory.mask_amplification import rdp_random_mask_gaussian

    ok = _likelihood_moment(show)
    for a in range(2, 7):
        A = _moment(a)
        second = sp.expand(sp.diff(A, x, 2))
        ok &= all(t.is_nonnegative for t in sp.Add.make_args(second))
        ok &= sp.simplify(A.subs({x: 0}).subs(u, 1 - q) - 1) == 0
        g = 1 + x * (A.subs(x, 1) - 1) - A
        ok &= sp.simplify(g.subs(x, 0).subs(u, 1 - q)) == 0 and sp.simplify(g.subs(x, 1)) == 0
        ok &= sp.simplify(sp.diff(g, x, 2) + second) == 0
        if a == 3:
            show("A_3(x) = sum_j C(3,j) (1-q)^(3-j) q^j e^{j(j-1)x/(2 sigma^2)}", A)
            show("A_3''(x): every term >= 0, so A_3 is convex", second)
            show("chord gap g(x) = 1 + x (A_3(1) - 1) - A_3(x): g(0) = g(1) = 0, g'' = -A_3'' <= 0", g)
    D = sp.symbols("Delta1:5", real=True)
    d = 4
    for k in (1, 2, 3):
        ex = sp.simplify(mask_average(d, k, lambda S: sum(D[i] ** 2 for i in S) / C**2))
        ok &= sp.simplify(ex - sp.Rational(k, d) * sum(t**2 for t in D) / C**2) == 0
        if k == 2:
            show("E_S[x_S] over the C(4,2) = 6 subsets", ex)
        A1, A0 = _moment(3).subs(x, 1), _moment(3).subs(x, 0).subs(u, 1 - q)   # A(0) = 1
        dirac = mask_average(d, k, lambda S, A1=A1, A0=A0: A1 if 0 in S else A0)
        ok &= sp.simplify(dirac - (1 - sp.Rational(k, d) + sp.Rational(k, d) * A1)) == 0
    alpha = sp.Symbol("alpha", positive=True)
    R = sp.Symbol("R", positive=True)
    bound = sp.log(1 - f + f * sp.exp((alpha - 1) * R)) / (alpha - 1)
    show("eps_mask(alpha) = log(1 - f + f A_alpha(1))/(alpha-1), A_alpha(1) = e^{(alpha-1) eps_SGM(alpha)}", bound)
    pairs = []
    for a in (2, 3, 5, 8):
        for qv, sv, fv in ((sp.Rational(1, 10), sp.Rational(3, 2), sp.Rational(1, 10)),
                           (sp.Rational(1, 2), sp.Rational(1), sp.Rational(1, 4)),
                           (sp.Rational(1, 100), sp.Rational(4, 5), sp.Rational(1, 50)),
                           (sp.Rational(1), sp.Rational(2), sp.Rational(3, 10))):
            A1 = _moment(a, xx=1, uu=1 - qv).subs({q: qv, s: sv})
            want = sp.log(1 - fv + fv * A1) / (a - 1)
            pairs.append((rdp_random_mask_gaussian(a, float(qv), float(sv), float(fv))[0], want))
    ok &= check_points(show, "rdp_random_mask_gaussian", pairs, rtol=1e-12)
    # the shared-mask block: A^m is convex too (t -> t^m convex increasing on t >= 0, A convex), A(0)^m = 1
    A = _moment(3)
    m = 4
    block = sp.expand(sp.diff(A**m, x, 2))
    ok &= all(t.is_nonnegative for t in sp.Add.make_args(block))
    got = rdp_random_mask_gaussian(3, 0.1, 1.5, 0.1, steps_per_mask=m)[0]
    want = sp.log(sp.Rational(9, 10) + A.subs({x: 1, u: sp.Rational(9, 10), q: sp.Rational(1, 10),
                                               s: sp.Rational(3, 2)}) ** m / 10) / 2
    ok &= check_points(show, "rdp_random_mask_gaussian, 4 steps per mask (A^4 convex)", [(got, want)], rtol=1e-12)
    return bool(ok)


def _gaussian_hockey_stick(show=None):
    """H_eps(N(1, sigma^2) || N(0, sigma^2)) = int (p_1 - e^eps p_0)_+ dz, from the integral.

    p_1/p_0 = exp((2z - 1)/(2 sigma^2)) exceeds e^eps iff z > z* = sigma^2 eps + 1/2."""
    zs = s**2 * eps + sp.Rational(1, 2)
    h = sp.simplify(sp.integrate(normal_pdf(z, 1, s) - sp.exp(eps) * normal_pdf(z, 0, s), (z, zs, sp.oo)))
    if show:
        show("z* where p_1/p_0 = e^eps", zs)
        show("H_eps(N(1,sigma^2) || N(0,sigma^2))", h)
    return h


@derivation("One clip-then-mask step, Dirac canary: the hockey-stick divergence is k/d times the Gaussian one",
            covers=("mask_amplification.epsilon_random_mask", "mask_amplification.calibrate_noise_random_mask"))
def random_mask_hockey_stick(show):
    r"""delta(eps) of the joint release (S, Y) at q = 1, from the definition, and the epsilon functions against it.

    Given S, the release is N(Delta_S, sigma^2 C^2 I) against N(0, .): for a Dirac canary the two
    coincide unless its coordinate is in S (probability k/d, summed over the subsets for d = 5).
    Since S is released and has the same law in both worlds, H_eps of the joint law is
    E_S[H_eps(P_S || Q_S)] = (k/d) H_eps(Gaussian). At sigma = 1, d = 10, k = 1: 0.0127 against
    0.127. The RDP-based ``epsilon_random_mask`` (one step, q = 1) must then be an upper bound on
    the exact epsilon of the Dirac canary, (k/d) H_eps = delta (checked: (k/d) H at the returned
    epsilon <= delta, and within 25 % of the root), equal to the minimum of the amplified
    conversion over ``MASK_ORDERS`` and the dense epsilon (rtol 1e-12), and the calibrated sigma
    must meet its target while sigma (1 - 1e-5) does not.
    """
    from dptheory.accounting import epsilon, epsilon_from_rdp
    from dptheory.mask_amplification import (
        MASK_ORDERS,
        calibrate_noise_random_mask,
        epsilon_random_mask,
        rdp_random_mask_gaussian,
    )

    H = _gaussian_hockey_stick(show)
    hf = sp.lambdify((eps, s), H, "mpmath")
    ok = True
    d = 5
    for k in (1, 2):
        joint = mask_average(d, k, lambda S: H if 0 in S else 0)
        ok &= sp.simplify(joint - sp.Rational(k, d) * H) == 0
    show("E_S[H_eps(P_S || Q_S)] for a Dirac canary (d = 5, k = 1)", mask_average(d, 1, lambda S: H if 0 in S else 0))
    dense1 = float(hf(1.0, 1.0))
    show("H_1 at sigma = 1: dense DP-SGD", sp.Float(dense1, 4))
    show("(k/d) H_1 at sigma = 1, d = 10, k = 1", sp.Float(dense1 / 10, 4))
    ok &= abs(dense1 - 0.1269) < 5e-4 and abs(dense1 / 10 - 0.0127) < 5e-5
    pairs, ok_bound = [], True
    for sv, fv, dl in ((1.0, 0.1, 1e-5), (1.0, 0.1, 1e-3), (2.0, 0.25, 1e-5), (0.7, 0.05, 1e-6)):
        e_amp = epsilon_random_mask(1.0, sv, 1, dl, fv)[0]
        ok_bound &= fv * float(hf(e_amp, sv)) <= dl * (1 + 1e-9)
        lo, hi = 0.0, e_amp                                  # the exact root of f H(eps) = delta
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if fv * float(hf(mid, sv)) > dl else (lo, mid)
        ok_bound &= e_amp <= 1.25 * hi
        pairs.append((e_amp, hi))
    show("epsilon_random_mask (one step, q = 1) / exact Dirac epsilon", sp.Matrix([[sp.Float(a / b, 4) for a, b in pairs]]))
    ok &= ok_bound
    comp = []
    for qv, sv, T, dl, fv in ((0.01, 1.1, 1000, 1e-5, 0.1), (0.5, 1.0, 3, 1e-5, 0.25), (1.0, 2.0, 1, 1e-5, 0.5)):
        amp = epsilon_from_rdp(MASK_ORDERS, T * rdp_random_mask_gaussian(MASK_ORDERS, qv, sv, fv), dl)[0]
        comp.append((epsilon_random_mask(qv, sv, T, dl, fv)[0], min(amp, epsilon(qv, sv, T, dl)[0])))
    ok &= check_points(show, "epsilon_random_mask = min(amplified over MASK_ORDERS, dense)", comp, rtol=1e-12)
    for qv, T, e, dl, fv in ((0.01, 500, 1.0, 1e-5, 0.1), (1.0, 1, 3.0, 1e-5, 0.2)):
        sig = calibrate_noise_random_mask(qv, T, e, dl, fv)
        ok &= epsilon_random_mask(qv, sig, T, dl, fv)[0] <= e < epsilon_random_mask(qv, sig * (1 - 1e-5), T, dl, fv)[0]
        if qv == 1.0 and T == 1:
            ok &= fv * float(hf(e, sig)) <= dl   # the exact one-step Dirac delta at the target is met too
    show("calibrate_noise_random_mask: target met at sigma, missed at sigma (1 - 1e-5)", sp.true if ok else sp.false)
    return bool(ok)
