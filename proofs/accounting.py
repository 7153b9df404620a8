"""Symbolic derivations behind :mod:`dptheory.accounting` and :mod:`dptheory.gdp` (docs/theory.md §1.1-§1.5)."""
from __future__ import annotations

import sympy as sp

from . import derivation

z = sp.Symbol("z", real=True)
s = sp.Symbol("sigma", positive=True)
q = sp.Symbol("q", positive=True)
alpha = sp.Symbol("alpha", positive=True)


def _normal_pdf(mean):
    return sp.exp(-(z - mean) ** 2 / (2 * s**2)) / (sp.sqrt(2 * sp.pi) * s)


def _clean(expr):
    """Simplify, with erfc rewritten as 1 - erf so that erf(x) + erfc(x) collapses."""
    return sp.simplify(sp.expand(expr.rewrite(sp.erf)))


def _ratio_moment():
    """E_{mu0}[L^k] for the likelihood ratio L = mu_1/mu_0 = exp((2z-1)/(2 sigma^2)), real k."""
    k = sp.Symbol("k", real=True)
    integrand = _normal_pdf(0) * sp.exp(k * (2 * z - 1) / (2 * s**2))
    return k, _clean(sp.integrate(integrand, (z, -sp.oo, sp.oo)))


@derivation("Renyi divergence of N(1, s^2) from N(0, s^2) is alpha/(2 sigma^2)")
def gaussian_rdp(show):
    # integrand mu1^alpha mu0^(1-alpha): combine the exponents first (same normalising constant)
    expo = sp.expand(-(alpha * (z - 1) ** 2 + (1 - alpha) * z**2) / (2 * s**2))
    show("exponent of mu_1^alpha mu_0^{1-alpha}", expo)
    integral = sp.integrate(sp.exp(expo), (z, -sp.oo, sp.oo)) / (sp.sqrt(2 * sp.pi) * s)
    integral = sp.simplify(integral)
    show("E_{mu_0}[(mu_1/mu_0)^alpha]", integral)
    rdp = sp.simplify(sp.expand_log(sp.log(integral), force=True) / (alpha - 1))
    show("D_alpha = log(.)/(alpha-1)", rdp)
    return sp.simplify(rdp - alpha / (2 * s**2)) == 0


@derivation("Integer-order A_alpha of the sampled Gaussian equals the binomial closed form (alpha=2..6)")
def sampled_gaussian_integer(show):

    from dptheory.accounting import rdp_subsampled_gaussian

    ok = True
    k, mgf = _ratio_moment()  # Gaussian moment-generating integral, done once
    show("E_{mu_0}[(mu_1/mu_0)^k]", mgf)
    for a in range(2, 7):
        # E_{mu0}[((1-q) + q L)^a] expanded binomially; E_{mu0}[L^i] is a Gaussian MGF integral
        total = 0
        for i in range(a + 1):
            moment = mgf.subs(k, i)
            total += sp.binomial(a, i) * q**i * (1 - q) ** (a - i) * moment
        closed = sum(sp.binomial(a, i) * q**i * (1 - q) ** (a - i) * sp.exp(sp.Rational(i * i - i, 2) / s**2)
                     for i in range(a + 1))
        if a == 3:
            show("A_3 from the integral definition", sp.expand(total))
        ok &= sp.simplify(total - closed) == 0
        for qv, sv in [(sp.Rational(1, 10), sp.Rational(3, 2)), (sp.Rational(1, 3), sp.Rational(7, 5))]:
            exact = float(sp.log(closed.subs({q: qv, s: sv})) / (a - 1))
            numeric = float(rdp_subsampled_gaussian(a, float(qv), float(sv))[0])
            ok &= abs(numeric - exact) <= 1e-12 * abs(exact)
    show("closed form", sp.Sum(sp.binomial(alpha, sp.Symbol("i")) * q ** sp.Symbol("i")
                               * (1 - q) ** (alpha - sp.Symbol("i"))
                               * sp.exp((sp.Symbol("i") ** 2 - sp.Symbol("i")) / (2 * s**2)),
                               (sp.Symbol("i"), 0, alpha)))
    return bool(ok)


@derivation("Balle et al. 2020 Thm 21 conversion equals Canonne-Kamath-Steinke")
def balle_equals_cks(show):
    a = sp.Symbol("alpha", positive=True)
    R, eps, delta = sp.symbols("R epsilon delta", positive=True)
    t = sp.Symbol("t", positive=True)  # alpha = 1 + t, t > 0
    cks = sp.exp((a - 1) * (R - eps)) * (1 - 1 / a) ** a / (a - 1)
    show("CKS: delta(eps)", cks)
    # solve log delta = log cks for eps (log cks is linear in eps)
    log_cks = sp.expand_log(sp.log(cks.subs(a, 1 + t)), force=True)
    sol = sp.solve(sp.Eq(sp.log(delta), log_cks), eps)
    assert len(sol) == 1
    balle = R + sp.log((a - 1) / a) - (sp.log(delta) + sp.log(a)) / (a - 1)
    show("Balle et al.: eps", balle)
    diff = sp.expand_log(sol[0] - balle.subs(a, 1 + t), force=True)
    return sp.simplify(diff) == 0


@derivation("The improved conversion beats the classic one by log(a/(a-1)) + log(a)/(a-1) > 0")
def improved_beats_classic(show):
    R, delta = sp.symbols("R delta", positive=True)
    t = sp.Symbol("t", positive=True)  # alpha = 1 + t
    a = 1 + t
    classic = R + sp.log(1 / delta) / (a - 1)
    balle = R + sp.log((a - 1) / a) - (sp.log(delta) + sp.log(a)) / (a - 1)
    gain = sp.simplify(sp.expand_log(classic - balle, force=True))
    show("classic - improved", gain)
    target = sp.log(a / (a - 1)) + sp.log(a) / (a - 1)
    same = sp.simplify(sp.expand_log(gain - target, force=True)) == 0
    # both terms are logs of numbers > 1 divided by positive numbers
    arg1 = sp.simplify(a / (a - 1) - 1)
    show("alpha/(alpha-1) - 1", arg1)
    return bool(same and arg1.is_positive and (a - 1).is_positive and sp.log(a).is_positive)


@derivation("Small-q expansion A_alpha = 1 + C(alpha,2) q^2 (e^{1/sigma^2}-1) + O(q^3), exact at alpha=2")
def small_q_expansion(show):
    k, mgf = _ratio_moment()
    m1 = _clean(mgf.subs(k, 1) - 1)                                   # E[L - 1]
    m2 = _clean(mgf.subs(k, 2) - 2 * mgf.subs(k, 1) + 1)              # E[(L - 1)^2]
    show("E_{mu_0}[L - 1]", m1)
    show("E_{mu_0}[(L - 1)^2]", m2)
    # A = E[(1 + q (L-1))^alpha] = 1 + alpha q E[L-1] + C(alpha,2) q^2 E[(L-1)^2] + O(q^3)
    x = sp.Symbol("x")
    binom_series = sp.series((1 + x) ** alpha, x, 0, 3).removeO()
    coeffs = [binom_series.coeff(x, k) for k in range(3)]
    expansion = coeffs[0] + coeffs[1] * q * m1 + coeffs[2] * q**2 * m2
    show("A_alpha up to q^2", sp.simplify(expansion))
    target = 1 + sp.binomial(alpha, 2) * q**2 * (sp.exp(1 / s**2) - 1)
    ok = sp.simplify(sp.expand_func(expansion - target)) == 0
    # exact at alpha = 2: (1 + q(L-1))^2 has no higher terms
    a2 = sp.simplify(1 + 2 * q * m1 + q**2 * m2)
    ok &= sp.simplify(a2 - (1 + q**2 * (sp.exp(1 / s**2) - 1))) == 0
    # and the integer closed form agrees for alpha = 2..6 to order q^2
    for a in range(2, 7):
        closed = sum(sp.binomial(a, i) * q**i * (1 - q) ** (a - i) * sp.exp(sp.Rational(i * i - i, 2) / s**2)
                     for i in range(a + 1))
        ser = sp.series(closed, q, 0, 3).removeO()
        ok &= sp.simplify(ser - target.subs(alpha, a)) == 0
    return bool(ok)


@derivation("Small-q T * RDP of the sampled Gaussian is alpha mu^2 / 2, the RDP of mu-GDP")
def small_q_rdp_is_gdp(show):
    T = sp.Symbol("T", positive=True)
    mu = q * sp.sqrt(T * (sp.exp(1 / s**2) - 1))
    small_q_rdp = sp.binomial(alpha, 2) * q**2 * (sp.exp(1 / s**2) - 1) / (alpha - 1)  # log(1+x) ~ x
    total = sp.simplify(sp.expand_func(T * small_q_rdp))
    show("T * C(alpha,2) q^2 (e^{1/sigma^2}-1)/(alpha-1)", total)
    # RDP of mu-GDP = RDP of N(mu, 1) vs N(0, 1): alpha mu^2 / 2 (gaussian_rdp with sigma = 1/mu)
    return sp.simplify(total - alpha * mu**2 / 2) == 0


@derivation("q = 1, classic conversion: sigma = sqrt(T/2)/(sqrt(log(1/delta)+eps) - sqrt(log(1/delta)))")
def q1_closed_form(show):
    T, ell, eps = sp.symbols("T ell epsilon", positive=True)  # ell = log(1/delta)
    a = sp.Symbol("alpha", positive=True)
    objective = T * a / (2 * s**2) + ell / (a - 1)
    crit = [r for r in sp.solve(sp.diff(objective, a), a) if sp.simplify(r - 1).is_positive]
    assert len(crit) == 1
    show("alpha*", crit[0])
    value = sp.simplify(objective.subs(a, crit[0]))
    show("eps(sigma)", value)
    ok = sp.simplify(value - (T / (2 * s**2) + sp.sqrt(2 * T * ell) / s)) == 0
    sigma_cf = sp.sqrt(T / 2) / (sp.sqrt(ell + eps) - sp.sqrt(ell))
    back = sp.simplify(sp.radsimp((T / (2 * s**2) + sp.sqrt(2 * T * ell) / s).subs(s, sigma_cf)))
    show("eps(sigma_closed_form)", back)
    return bool(ok and sp.simplify(back - eps) == 0)
