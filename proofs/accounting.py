"""Derivations behind :mod:`dptheory.accounting` and :mod:`dptheory.gdp` (docs/theory.md §1.1-§1.5).

Conventions: add/remove adjacency, so one step of the (sampled) Gaussian mechanism compares
``mu_0 = N(0, sigma^2)`` with ``mu_1 = N(1, sigma^2)`` (or the mixture ``(1-q) mu_0 + q mu_1``).
"""
from __future__ import annotations

import mpmath as mp
import numpy as np
import sympy as sp

from . import derivation
from .common import check_points, normal_pdf

z = sp.Symbol("z", real=True)
s = sp.Symbol("sigma", positive=True)
q = sp.Symbol("q", positive=True)
alpha = sp.Symbol("alpha", positive=True)
t_ = sp.Symbol("t", positive=True)          # alpha = 1 + t, t > 0
R, eps, delta = sp.symbols("R epsilon delta", positive=True)


def _clean(expr):
    """Simplify, with erfc rewritten as 1 - erf so that erf(x) + erfc(x) collapses."""
    return sp.simplify(sp.expand(expr.rewrite(sp.erf)))


def _ratio_moment():
    """E_{mu_0}[L^k] for the likelihood ratio L = mu_1/mu_0 = exp((2z-1)/(2 sigma^2)), real k."""
    k = sp.Symbol("k", real=True)
    integrand = normal_pdf(z, 0, s) * sp.exp(k * (2 * z - 1) / (2 * s**2))
    return k, _clean(sp.integrate(integrand, (z, -sp.oo, sp.oo)))


def _gaussian_rdp(show=None):
    r"""RDP of the Gaussian mechanism from the definition of the Renyi divergence.

    .. math:: D_\alpha(\mu_1\|\mu_0) = \frac{1}{\alpha-1}\log\int \mu_1^\alpha \mu_0^{1-\alpha}\,dz

    (Renyi 1961; Mironov 2017, Prop. 7). Both densities share the normalising constant, so the
    exponents are combined before integrating.
    """
    expo = sp.expand(-(alpha * (z - 1) ** 2 + (1 - alpha) * z**2) / (2 * s**2))
    integral = sp.simplify(sp.integrate(sp.exp(expo), (z, -sp.oo, sp.oo)) / (sp.sqrt(2 * sp.pi) * s))
    rdp = sp.simplify(sp.expand_log(sp.log(integral), force=True) / (alpha - 1))
    if show:
        show("exponent of mu_1^alpha mu_0^{1-alpha}", expo)
        show("E_{mu_0}[(mu_1/mu_0)^alpha]", integral)
        show("D_alpha = log(.)/(alpha-1)", rdp)
    return rdp


def _hockey_stick_tail_bound(show=None):
    r"""The best constant ``c`` with ``(1 - e^{-x})_+ <= c e^{(alpha-1) x}`` for all real ``x``.

    With ``u = e^{-x} in (0, 1)`` the ratio is ``h(u) = (1 - u) u^{alpha-1}``; its maximum is at
    ``h'(u) = 0``. This is the pointwise step of Canonne, Kamath & Steinke 2020 (Prop. 12).
    """
    u = sp.Symbol("u", positive=True)
    h = (1 - u) * u ** (alpha - 1)
    crit = sp.solve(sp.Eq(sp.diff(h, u), 0), u)
    crit = [c for c in crit if c != 0]
    assert len(crit) == 1
    c = sp.simplify(h.subs(u, crit[0]))
    if show:
        show("stationary point u* of (1-u) u^{alpha-1}", crit[0])
        show("c_alpha = max_u (1-u) u^{alpha-1}", c)
    return crit[0], c


def _conversion_balle(show=None):
    r"""eps(delta) at one order: delta = E_P[(1 - e^{eps - Z})_+] <= c_alpha e^{(alpha-1)(R - eps)}.

    ``Z = log(dP/dQ)`` is the privacy loss under ``P``; ``delta(eps) = E_P[(1 - e^{eps - Z})_+]``
    is the hockey-stick divergence (the definition of (eps, delta)-DP), and
    ``E_P[e^{(alpha-1) Z}] = e^{(alpha-1) R}`` is the definition of the Renyi divergence R of order
    alpha. Bounding the integrand pointwise by :func:`_hockey_stick_tail_bound` at
    ``x = Z - eps`` and solving for eps gives the conversion of Balle et al. 2020, Thm 21
    (= Canonne, Kamath & Steinke 2020).
    """
    _, c = _hockey_stick_tail_bound(show)
    bound = c * sp.exp((alpha - 1) * (R - eps))
    if show:
        show("delta <= c_alpha E_P[e^{(alpha-1)(Z - eps)}]", bound)
    sol = sp.solve(sp.Eq(sp.log(delta), sp.expand_log(sp.log(bound.subs(alpha, 1 + t_)), force=True)), eps)
    assert len(sol) == 1
    return sp.expand_log(sol[0].subs(t_, alpha - 1), force=True)


def _conversion_classic(show=None):
    r"""eps(delta) at one order: delta <= P_P(Z > eps) <= e^{(alpha-1)(R - eps)} (Markov).

    ``(1 - e^{eps - Z})_+ <= 1{Z > eps}`` and Markov's inequality for ``e^{(alpha-1) Z}``
    (Mironov 2017, Prop. 3).
    """
    bound = sp.exp((alpha - 1) * R) * sp.exp(-(alpha - 1) * eps)
    if show:
        show("delta <= E_P[e^{(alpha-1)Z}] e^{-(alpha-1) eps}", bound)
    sol = sp.solve(sp.Eq(sp.log(delta), sp.expand_log(sp.log(bound.subs(alpha, 1 + t_)), force=True)), eps)
    assert len(sol) == 1
    return sp.expand_log(sol[0].subs(t_, alpha - 1), force=True)


def _small_q_coefficient(show=None):
    r"""``(A_alpha - 1)/q^2`` to leading order, from ``A = E_{mu_0}[(1 + q(L - 1))^alpha]``.

    Binomial series to second order in q with ``E[L - 1]`` and ``E[(L - 1)^2]`` from the Gaussian
    moment integral (Mironov, Talwar & Zhang 2019, Sec. 3.3, small-q regime).
    """
    k, mgf = _ratio_moment()
    m1 = _clean(mgf.subs(k, 1) - 1)                                   # E[L - 1]
    m2 = _clean(mgf.subs(k, 2) - 2 * mgf.subs(k, 1) + 1)              # E[(L - 1)^2]
    x = sp.Symbol("x")
    series = sp.series((1 + x) ** alpha, x, 0, 3).removeO()
    coeffs = [series.coeff(x, j) for j in range(3)]
    expansion = sp.simplify(coeffs[0] + coeffs[1] * q * m1 + coeffs[2] * q**2 * m2)
    if show:
        show("E_{mu_0}[L - 1]", m1)
        show("E_{mu_0}[(L - 1)^2]", m2)
        show("A_alpha up to q^2", expansion)
    return m1, m2, expansion


@derivation("Renyi divergence of N(1, s^2) from N(0, s^2) is alpha/(2 sigma^2)",
            covers=("accounting.rdp_gaussian",))
def gaussian_rdp(show):
    """D_alpha(N(1, sigma^2) || N(0, sigma^2)) from its integral; then ``rdp_gaussian`` (rtol 1e-14)."""
    from dptheory.accounting import rdp_gaussian
    rdp = _gaussian_rdp(show)
    ok = sp.simplify(rdp - alpha / (2 * s**2)) == 0
    pts = [(a, sv) for a in (1.01, 2.0, 7.5, 63.0) for sv in (0.5, 1.1, 20.0)]
    ok &= check_points(show, "rdp_gaussian", [(rdp_gaussian([a], sv)[0], rdp.subs({alpha: a, s: sv}))
                                              for a, sv in pts], rtol=1e-14)
    return bool(ok)


@derivation("Integer-order A_alpha of the sampled Gaussian equals the binomial closed form (alpha=2..6)",
            covers=("accounting.rdp_subsampled_gaussian",))
def sampled_gaussian_integer(show):
    r"""A_alpha = E_{mu_0}[((1-q) + q L)^alpha] expanded binomially, E[L^i] by the Gaussian integral.

    Mironov, Talwar & Zhang 2019, Sec. 3.2. Then ``rdp_subsampled_gaussian`` at integer orders
    against log(A)/(alpha-1) from the derived sum (rtol 1e-12; the function returns an upper bound
    a few ulps above).
    """
    from dptheory.accounting import rdp_subsampled_gaussian

    ok = True
    k, mgf = _ratio_moment()
    show("E_{mu_0}[(mu_1/mu_0)^k]", mgf)
    i = sp.Symbol("i", integer=True, nonnegative=True)
    ok &= sp.simplify(mgf.subs(k, i) - sp.exp((i**2 - i) / (2 * s**2))) == 0
    pairs = []
    for a in range(2, 7):
        total = sum(sp.binomial(a, j) * q**j * (1 - q) ** (a - j) * mgf.subs(k, j) for j in range(a + 1))
        if a == 3:
            show("A_3 from the integral definition", sp.expand(total))
        for qv, sv in [(sp.Rational(1, 10), sp.Rational(3, 2)), (sp.Rational(1, 3), sp.Rational(7, 5)),
                       (sp.Rational(9, 10), sp.Rational(1, 2))]:
            exact = sp.log(total.subs({q: qv, s: sv})) / (a - 1)
            pairs.append((rdp_subsampled_gaussian(a, float(qv), float(sv))[0], exact))
    show("E_{mu_0}[L^i] at integer i", sp.exp((i**2 - i) / (2 * s**2)))
    ok &= check_points(show, "rdp_subsampled_gaussian (integer orders)", pairs, rtol=1e-12)
    return bool(ok)


@derivation("Fractional-order A_alpha of the sampled Gaussian: the defining integral by quadrature",
            covers=("accounting.rdp_subsampled_gaussian",))
def sampled_gaussian_fractional(show):
    r"""A_alpha = int mu_0(z) ((1-q) + q exp((2z-1)/(2 sigma^2)))^alpha dz, evaluated by mpmath.

    The definition of the RDP of the sampled Gaussian (Mironov, Talwar & Zhang 2019, Sec. 3) at
    fractional orders, where no finite sum exists; the integrand is smooth, so tanh-sinh quadrature
    at 40 digits gives the exact value. ``rdp_subsampled_gaussian`` promises an UPPER bound within
    1e-9 relative there: checked as ``0 <= (value - exact)/exact <= 1e-9``.
    """
    from dptheory.accounting import rdp_subsampled_gaussian
    L = sp.exp((2 * z - 1) / (2 * s**2))
    integrand = normal_pdf(z, 0, s) * ((1 - q) + q * L) ** alpha
    show("A_alpha = E_{mu_0}[((1-q) + q mu_1/mu_0)^alpha]", sp.Integral(integrand, (z, -sp.oo, sp.oo)))
    ok = True
    worst = 0.0
    with mp.workdps(40):
        for qv, sv, av in ((0.01, 1.1, 1.5), (0.256, 2.2, 1.3), (0.1, 0.8, 3.7), (0.5, 5.0, 10.25),
                           (1e-5, 1.0, 2.5)):
            f = sp.lambdify(z, integrand.subs({q: sp.Float(qv, 40), s: sp.Float(sv, 40), alpha: sp.Float(av, 40)}),
                            "mpmath")
            peak = av / sv**2 * sv**2          # the tilted Gaussian peaks near alpha
            a_val = mp.quad(f, [-mp.inf, -6 * sv, 0, 0.5, peak, peak + 8 * sv, mp.inf])
            exact = float(mp.log(a_val) / (av - 1))
            got = float(rdp_subsampled_gaussian(av, qv, sv)[0])
            excess = (got - exact) / exact
            worst = max(worst, abs(excess))
            ok &= -1e-15 <= excess <= 1e-9
    show("max relative excess of rdp_subsampled_gaussian over the integral (tolerance [0, 1e-9])",
         sp.Float(worst, 3))
    return bool(ok)


@derivation("Balle et al. 2020 Thm 21 conversion equals Canonne-Kamath-Steinke",
            covers=("accounting.epsilon_from_rdp",))
def balle_equals_cks(show):
    """From delta = E_P(1 - e^{eps - Z})_+ and the best pointwise exponential bound to eps(R, delta).

    Then ``epsilon_from_rdp`` (one order, and the min over several) against the derived eps
    (rtol 1e-12), at points away from its KL shortcut (1 - e^{-R} >= delta^2).
    """
    from dptheory.accounting import epsilon_from_rdp
    eps_d = _conversion_balle(show)
    show("eps(R, delta) at order alpha", eps_d)
    stated = R + sp.log((alpha - 1) / alpha) - (sp.log(delta) + sp.log(alpha)) / (alpha - 1)
    ok = sp.simplify(sp.expand_log(eps_d - stated, force=True)) == 0
    f = sp.lambdify((alpha, R, delta), eps_d, "mpmath")
    pairs = []
    for av, rv, dv in ((2.0, 0.5, 1e-5), (1.5, 2.0, 1e-6), (32.0, 0.05, 1e-5), (1.01, 5.0, 0.5)):
        pairs.append((epsilon_from_rdp([av], [rv], dv)[0], max(0.0, float(f(av, rv, dv)))))
    orders = np.array([1.5, 2.0, 4.0, 8.0, 16.0])
    rdp = orders * 0.05
    vals = [float(f(a, r, 1e-5)) for a, r in zip(orders, rdp)]
    got_eps, got_order = epsilon_from_rdp(orders, rdp, 1e-5)
    pairs.append((got_eps, min(vals)))
    ok &= got_order == orders[int(np.argmin(vals))]
    ok &= check_points(show, "epsilon_from_rdp", pairs, rtol=1e-12)
    return bool(ok)


@derivation("classic conversion (Mironov 2017, Prop. 3): eps = R + log(1/delta)/(alpha-1) by Markov",
            covers=("accounting.epsilon_from_rdp_classic",))
def classic_conversion(show):
    """delta <= P(Z > eps) <= e^{(alpha-1)(R - eps)}; solved for eps; ``epsilon_from_rdp_classic`` (rtol 1e-13)."""
    from dptheory.accounting import epsilon_from_rdp_classic
    eps_c = _conversion_classic(show)
    show("eps(R, delta) at order alpha", eps_c)
    ok = sp.simplify(eps_c - (R + sp.log(1 / delta) / (alpha - 1))) == 0
    f = sp.lambdify((alpha, R, delta), eps_c, "mpmath")
    orders = np.array([1.25, 2.0, 5.0, 40.0])
    pairs = [(epsilon_from_rdp_classic([a], [r], dv)[0], float(f(a, r, dv)))
             for a in orders for r, dv in ((0.1, 1e-5), (3.0, 1e-9))]
    rdp = orders * 0.02
    vals = [float(f(a, r, 1e-6)) for a, r in zip(orders, rdp)]
    got_eps, got_order = epsilon_from_rdp_classic(orders, rdp, 1e-6)
    pairs.append((got_eps, min(vals)))
    ok &= got_order == orders[int(np.argmin(vals))]
    ok &= check_points(show, "epsilon_from_rdp_classic", pairs, rtol=1e-13)
    return bool(ok)


@derivation("The improved conversion beats the classic one by log(a/(a-1)) + log(a)/(a-1) > 0",
            covers=("accounting.epsilon_from_rdp", "accounting.epsilon_from_rdp_classic"))
def improved_beats_classic(show):
    """The gap between the two DERIVED conversions; positive term by term; the functions' gap (atol 1e-12)."""
    from dptheory.accounting import epsilon_from_rdp, epsilon_from_rdp_classic
    gain = sp.simplify(sp.expand_log(_conversion_classic() - _conversion_balle(), force=True))
    show("classic - improved", gain)
    a = 1 + t_
    target = sp.log(a / (a - 1)) + sp.log(a) / (a - 1)
    ok = sp.simplify(sp.expand_log(gain.subs(alpha, a) - target, force=True)) == 0
    arg1 = sp.simplify(a / (a - 1) - 1)
    show("alpha/(alpha-1) - 1", arg1)
    ok &= bool(arg1.is_positive and (a - 1).is_positive and sp.log(a).is_positive)
    g = sp.lambdify(alpha, gain, "mpmath")
    pairs = [(epsilon_from_rdp_classic([av], [rv], 1e-5)[0] - epsilon_from_rdp([av], [rv], 1e-5)[0], float(g(av)))
             for av, rv in ((1.5, 1.0), (3.0, 0.7), (20.0, 2.0))]
    ok &= check_points(show, "epsilon_from_rdp_classic - epsilon_from_rdp", pairs, rtol=1e-11)
    return bool(ok)


@derivation("Small-q expansion A_alpha = 1 + C(alpha,2) q^2 (e^{1/sigma^2}-1) + O(q^3), exact at alpha=2",
            covers=("accounting.rdp_subsampled_gaussian",))
def small_q_expansion(show):
    """Second-order expansion of the defining expectation; ``rdp_subsampled_gaussian`` at q = 1e-7 (rtol 1e-4)."""
    from dptheory.accounting import rdp_subsampled_gaussian
    m1, m2, expansion = _small_q_coefficient(show)
    target = 1 + sp.binomial(alpha, 2) * q**2 * (sp.exp(1 / s**2) - 1)
    ok = sp.simplify(sp.expand_func(expansion - target)) == 0
    a2 = sp.simplify(1 + 2 * q * m1 + q**2 * m2)              # (1 + q(L-1))^2 has no higher terms
    ok &= sp.simplify(a2 - (1 + q**2 * (sp.exp(1 / s**2) - 1))) == 0
    for a in range(2, 7):                                     # the integer sums agree to order q^2
        closed = sum(sp.binomial(a, i) * q**i * (1 - q) ** (a - i) * sp.exp(sp.Rational(i * i - i, 2) / s**2)
                     for i in range(a + 1))
        ok &= sp.simplify(sp.series(closed, q, 0, 3).removeO() - target.subs(alpha, a)) == 0
    lead = sp.lambdify((alpha, q, s), sp.log(expansion) / (alpha - 1), "mpmath")
    with mp.workdps(40):   # log(1 + x) at x ~ 1e-14 needs the extra digits
        pairs = [(rdp_subsampled_gaussian(av, 1e-7, sv)[0], float(lead(av, mp.mpf("1e-7"), mp.mpf(sv))))
                 for av in (1.5, 2.0, 8.0) for sv in (0.9, 2.0)]
    # the O(q^3) remainder is about q alpha E(L-1)^3/E(L-1)^2 relative: < 1e-5 here; exact at alpha = 2
    ok &= check_points(show, "rdp_subsampled_gaussian at q = 1e-7", pairs, rtol=1e-5)
    return bool(ok)


@derivation("Small-q T * RDP of the sampled Gaussian is alpha mu^2 / 2, the RDP of mu-GDP",
            covers=("gdp.gdp_mu",))
def small_q_rdp_is_gdp(show):
    r"""Solve T * (small-q RDP) = RDP of N(mu, 1) vs N(0, 1) for mu: the Poisson CLT mu of Bu et al. 2020.

    Both sides are derived: the left from the small-q expansion (``log(1 + x) ~ x``), the right
    from the Gaussian RDP integral at ``sigma = 1/mu``. Then ``gdp_mu`` (rtol 1e-13).
    """
    from dptheory.gdp import gdp_mu
    T, mu = sp.symbols("T mu", positive=True)
    _, _, expansion = _small_q_coefficient()
    per_step = sp.simplify(sp.expand_func((expansion - 1) / (alpha - 1)))
    total = sp.simplify(T * per_step)
    show("T (A_alpha - 1)/(alpha - 1), leading order", total)
    gdp_rdp = _gaussian_rdp().subs(s, 1 / mu)
    show("RDP of mu-GDP (Gaussian RDP at sigma = 1/mu)", gdp_rdp)
    sol = sp.solve(sp.Eq(total, gdp_rdp), mu)
    show("mu", sp.Tuple(*sol))
    ok = len(sol) == 1 and sp.simplify(sol[0] - q * sp.sqrt(T * (sp.exp(1 / s**2) - 1))) == 0
    f = sp.lambdify((q, s, T), sol[0], "mpmath")
    pairs = [(gdp_mu(qv, sv, tv), float(f(qv, sv, tv))) for qv, sv, tv in
             ((256 / 60000, 1.1, 14040), (0.01, 0.7, 100), (1.0, 3.0, 1))]
    ok &= check_points(show, "gdp_mu (poisson)", pairs, rtol=1e-13)
    return bool(ok)


@derivation("uniform-sampling CLT mu: E_0[(L-1)_+^2] = e^{mu^2} Phi(1.5 mu) + 3 Phi(-0.5 mu) - 2",
            covers=("gdp.gdp_mu",))
def gdp_mu_uniform(show):
    r"""The expectation inside the uniform-sampling CLT mu of Bu, Dong, Long & Su 2020 (Sec. 3).

    For ``N(0, 1)`` vs ``N(m, 1)`` (``m = 1/sigma``) the likelihood ratio is
    ``L(x) = e^{m x - m^2/2}``, above 1 iff ``x > m/2``; the paper's
    ``mu_U = sqrt(2) q sqrt(T) sqrt(.)`` uses ``E_0[(L - 1)^2; L > 1]``, integrated here from its
    definition. (The factor ``sqrt(2) q sqrt(T)`` is the CLT's, taken from the paper.) Then
    ``gdp_mu(sampling="uniform")`` (rtol 1e-12).
    """
    from dptheory.gdp import gdp_mu
    x = sp.Symbol("x", real=True)
    m = sp.Symbol("m", positive=True)
    Lx = sp.exp(m * x - m**2 / 2)
    x0 = sp.solve(sp.Eq(sp.log(Lx), 0), x)
    show("L(x) > 1 iff x >", sp.Tuple(*x0))
    integral = sp.integrate(sp.expand((Lx - 1) ** 2 * normal_pdf(x)), (x, x0[0], sp.oo))
    integral = _clean(integral)
    show("E_0[(L - 1)^2; L > 1]", integral)
    Phi = lambda u: (1 + sp.erf(u / sp.sqrt(2))) / 2
    ok = sp.simplify(_clean(integral - (sp.exp(m**2) * Phi(3 * m / 2) + 3 * Phi(-m / 2) - 2))) == 0
    f = sp.lambdify(m, integral, "mpmath")
    pairs = [(gdp_mu(qv, sv, tv, sampling="uniform"), float(mp.sqrt(2) * qv * mp.sqrt(tv) * mp.sqrt(f(1 / mp.mpf(sv)))))
             for qv, sv, tv in ((256 / 60000, 1.1, 14040), (0.01, 0.7, 100), (0.5, 3.0, 7))]
    ok &= check_points(show, "gdp_mu (uniform)", pairs, rtol=1e-12)
    return bool(ok)


@derivation("mu-GDP privacy profile: delta(eps) = int (N(mu,1) - e^eps N(0,1))_+ = "
            "Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2)", covers=("gdp.delta_gdp",))
def delta_gdp_profile(show):
    r"""The hockey-stick divergence of the Gaussian pair from its integral (Dong, Roth & Su 2019, Cor. 2.13).

    The positive part is where ``log(q/p) = mu x - mu^2/2 > eps``, a half-line; both masses there
    are normal tails. Then ``delta_gdp`` (rtol 1e-11).
    """
    from dptheory.gdp import delta_gdp
    x = sp.Symbol("x", real=True)
    mu = sp.Symbol("mu", positive=True)
    e = sp.Symbol("epsilon", nonnegative=True)
    p, qd = normal_pdf(x), normal_pdf(x, mu)
    x0 = sp.solve(sp.Eq(sp.expand_log(sp.log(qd / p), force=True), e), x)
    show("q(x) > e^eps p(x) iff x >", sp.Tuple(*x0))
    prof = _clean(sp.integrate(qd, (x, x0[0], sp.oo)) - sp.exp(e) * sp.integrate(p, (x, x0[0], sp.oo)))
    show("delta(eps)", prof)
    Phi = lambda u: (1 + sp.erf(u / sp.sqrt(2))) / 2
    ok = sp.simplify(_clean(prof - (Phi(-e / mu + mu / 2) - sp.exp(e) * Phi(-e / mu - mu / 2)))) == 0
    f = sp.lambdify((mu, e), prof, "mpmath")
    with mp.workdps(40):
        pairs = [(delta_gdp(mv, ev), float(f(mp.mpf(mv), mp.mpf(ev)))) for mv, ev in
                 ((1.0, 0.0), (0.5, 1.0), (2.0, 3.0), (1.3, 8.0))]
    ok &= check_points(show, "delta_gdp", pairs, rtol=1e-11)
    return bool(ok)


@derivation("q = 1, classic conversion: sigma = sqrt(T/2)/(sqrt(log(1/delta)+eps) - sqrt(log(1/delta)))",
            covers=("accounting.calibrate_noise_gaussian_closed_form",))
def q1_closed_form(show):
    """Minimise T * (derived Gaussian RDP) + (derived classic conversion) over continuous orders; invert in sigma.

    RDP composes additively (Mironov 2017, Prop. 1). Then ``calibrate_noise_gaussian_closed_form``
    (rtol 1e-13).
    """
    from dptheory.accounting import calibrate_noise_gaussian_closed_form
    T, ell = sp.symbols("T ell", positive=True)  # ell = log(1/delta)
    objective = _conversion_classic().subs(R, T * _gaussian_rdp()).subs(delta, sp.exp(-ell))
    objective = sp.simplify(sp.expand_log(objective, force=True))
    show("eps(alpha) = T alpha/(2 sigma^2) + log(1/delta)/(alpha-1)", objective)
    crit = [r for r in sp.solve(sp.diff(objective, alpha), alpha) if sp.simplify(r - 1).is_positive]
    assert len(crit) == 1
    show("alpha*", crit[0])
    value = sp.simplify(objective.subs(alpha, crit[0]))
    show("eps(sigma)", value)
    test = {T: 100, ell: 5, eps: 1}
    sol = [r for r in sp.solve(sp.Eq(value, eps), s) if complex(r.subs(test)).real > 0]
    show("positive root sigma(eps)", sp.Tuple(*sol))
    sigma_cf = sp.sqrt(T / 2) / (sp.sqrt(ell + eps) - sp.sqrt(ell))
    ok = len(sol) == 1 and abs(complex((sol[0] - sigma_cf).subs(test))) < 1e-12
    ok &= abs(complex((sol[0] - sigma_cf).subs({T: 7, ell: 2, eps: 3}))) < 1e-12
    back = sp.simplify(sp.radsimp(value.subs(s, sigma_cf)))
    show("eps(sigma_closed_form)", back)
    ok &= sp.simplify(back - eps) == 0
    f = sp.lambdify((T, ell, eps), sigma_cf, "mpmath")
    pairs = [(calibrate_noise_gaussian_closed_form(tv, ev, dv), float(f(tv, -mp.log(dv), ev)))
             for tv, ev, dv in ((1, 1.0, 1e-5), (100, 3.0, 1e-6), (10000, 0.5, 1e-3))]
    ok &= check_points(show, "calibrate_noise_gaussian_closed_form", pairs, rtol=1e-13)
    return bool(ok)


@derivation("Per-step privacy-loss scale of the sampled Gaussian: chi-square divergence q^2 (e^{1/s^2} - 1)",
            covers=("accounting.pld_loss_scale",))
def pld_loss_scale_entry(show):
    r"""With mu_0 = N(0, s^2) and mu = (1 - q) mu_0 + q N(1, s^2), the likelihood ratio is
    mu/mu_0 = 1 + q (L - 1), L = exp((2z - 1)/(2 s^2)); its variance under mu_0 is
    q^2 (E[L^2] - 1) = q^2 (e^{1/s^2} - 1) (the chi-square divergence), from the Gaussian integral
    E_{mu_0}[L^2]. At q = 1 the loss (2z - 1)/(2 s^2) has standard deviation 1/s. ``pld_loss_scale``
    is the smaller of the two standard deviations (rtol 1e-13)."""
    from dptheory.accounting import pld_loss_scale

    z = sp.Symbol("z", real=True)
    q = sp.Symbol("q", positive=True)
    L = sp.exp((2 * z - 1) / (2 * s ** 2))
    def tidy(e):  # sympy leaves erf(x) + erfc(x) unsimplified
        return sp.simplify(sp.expand(e.rewrite(sp.erf)))

    second = tidy(sp.integrate(L ** 2 * normal_pdf(z, 0, s), (z, -sp.oo, sp.oo)))
    show("E_{mu_0}[L^2]", second)
    var = sp.simplify(q ** 2 * (second - 1))
    show("Var_{mu_0}[mu/mu_0]", var)
    loss_q1 = (2 * z - 1) / (2 * s ** 2)
    sd_q1 = sp.sqrt(tidy(sp.integrate(loss_q1 ** 2 * normal_pdf(z, 0, s), (z, -sp.oo, sp.oo))
                         - sp.integrate(loss_q1 * normal_pdf(z, 0, s), (z, -sp.oo, sp.oo)) ** 2))
    show("sd of the q = 1 loss", sd_q1)
    ok = sp.simplify(var - q ** 2 * (sp.exp(1 / s ** 2) - 1)) == 0 and sp.simplify(sd_q1 - 1 / s) == 0
    pts = [(qv, sv) for qv in (1e-4, 0.01, 0.3, 1.0) for sv in (0.7, 1.5, 10.0)]
    want = [min(sp.sqrt(var.subs({q: qv, s: sv})), 1 / sp.Float(sv)) for qv, sv in pts]
    ok &= check_points(show, "pld_loss_scale", [(pld_loss_scale(qv, sv), w) for (qv, sv), w in zip(pts, want)],
                       rtol=1e-13)
    return bool(ok)


@derivation("Start of the calibration search: large-sigma CLT + classic conversion give "
            "sigma_0 = q sqrt(2 T log(1/delta)) / eps", covers=("accounting.sigma_guess",))
def sigma_guess_entry(show):
    r"""The Gaussian/CLT approximation behind :func:`dptheory.accounting.sigma_guess`, from its definition.

    1. ``T`` steps of the sampled Gaussian to leading order in ``q`` (the small-q expansion of
       ``A_alpha``, derived above; RDP composes additively): ``T alpha q^2 (e^{1/s^2} - 1) / 2``.
    2. Large sigma (``e^{1/s^2} - 1 ~ 1/s^2``): ``alpha mu^2 / 2`` with ``mu = q sqrt(T) / s``, the RDP of
       mu-GDP (Bu, Dong, Long & Su 2020).
    3. The classic conversion (derived above), minimised over continuous orders:
       ``eps = mu^2/2 + mu sqrt(2 log(1/delta))``; for small mu (large sigma) the leading term is
       ``mu sqrt(2 log(1/delta))``.
    4. Solved for sigma: ``sigma_0 = q sqrt(2 T log(1/delta)) / eps``.

    Then ``sigma_guess`` against ``min(max(sigma_0, 1/4), 2^40)`` (its clip to the search range;
    points inside it and at both ends), rtol 1e-13. It is a starting point only: the search of
    :func:`dptheory.accounting.calibrate_sigma` returns the same sigma from any start.
    """
    from dptheory.accounting import sigma_guess
    T, ell = sp.symbols("T ell", positive=True)  # ell = log(1/delta)
    _, _, expansion = _small_q_coefficient()
    total = sp.simplify(T * sp.expand_func((expansion - 1) / (alpha - 1)))
    show("T (A_alpha - 1)/(alpha - 1), leading order in q", total)
    large = sp.simplify(sp.limit(total * s**2, s, sp.oo) / s**2)
    show("large sigma: T alpha q^2 / (2 sigma^2)", large)
    mu = sp.Symbol("mu", positive=True)
    ok = sp.simplify(large - (alpha * mu**2 / 2).subs(mu, q * sp.sqrt(T) / s)) == 0
    objective = sp.simplify(sp.expand_log(_conversion_classic().subs(R, alpha * mu**2 / 2).subs(delta, sp.exp(-ell)),
                                          force=True))
    show("eps(alpha) = alpha mu^2/2 + log(1/delta)/(alpha - 1)", objective)
    crit = [r for r in sp.solve(sp.diff(objective, alpha), alpha) if sp.simplify(r - 1).is_positive]
    assert len(crit) == 1
    show("alpha*", crit[0])
    value = sp.simplify(objective.subs(alpha, crit[0]))
    show("eps(mu) at alpha*", value)
    ok &= sp.simplify(value - (mu**2 / 2 + mu * sp.sqrt(2 * ell))) == 0
    lead = sp.series(value, mu, 0, 2).removeO()
    show("leading order in mu", lead)
    sol = sp.solve(sp.Eq(lead.subs(mu, q * sp.sqrt(T) / s), eps), s)
    show("sigma_0 solving eps = mu sqrt(2 log(1/delta)), mu = q sqrt(T)/sigma", sp.Tuple(*sol))
    sigma0 = q * sp.sqrt(2 * T * ell) / eps
    ok &= len(sol) == 1 and sp.simplify(sol[0] - sigma0) == 0
    f = sp.lambdify((q, T, ell, eps), sigma0, "mpmath")
    pts = [(256 / 60000, 14063, 3.0, 1e-5), (0.01, 1000, 1.0, 1e-6), (1.0, 1, 0.5, 1e-3),   # inside [1/4, 2^40]
           (1e-4, 10, 8.0, 1e-2),                                                          # clipped to 1/4
           (1.0, 10**12, 1e-9, 1e-10)]                                                     # clipped to 2^40
    pairs = [(sigma_guess(qv, tv, ev, dv), min(max(float(f(qv, tv, -mp.log(dv), ev)), 0.25), 2.0**40))
             for qv, tv, ev, dv in pts]
    ok &= pairs[3][1] == 0.25 and pairs[4][1] == 2.0**40
    ok &= check_points(show, "sigma_guess", pairs, rtol=1e-13)
    return bool(ok)
