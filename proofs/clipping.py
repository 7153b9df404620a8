"""Derivations behind :mod:`dptheory.clipping` (docs/theory.md §4).

``clip_C(g) = g min(1, C/||g||)``; the bias is ``b = E clip_C(g) - E g``.
"""
from __future__ import annotations

import functools

import mpmath as mp
import numpy as np
import sympy as sp

from . import derivation
from .common import check_points, normal_pdf


def _best_quadratic_constant(shift):
    r"""``sup_{x > shift} (x - shift)/x^2`` and where it is attained (calculus: the stationary point)."""
    x = sp.Symbol("x", positive=True)
    ratio = (x - shift) / x ** 2
    crit = sp.solve(sp.diff(ratio, x), x)
    assert len(crit) == 1
    return crit[0], sp.simplify(ratio.subs(x, crit[0])), sp.simplify(sp.diff(ratio, x, 2).subs(x, crit[0]))


@derivation("(x - C)_+ <= x^2/(4C) via x^2/(4C) - (x - C) = (x - 2C)^2/(4C)",
            covers=("clipping.bias_bound_second_moment",))
def hinge_quadratic(show):
    r"""The smallest ``c`` with ``(x - C)_+ <= c x^2`` for all ``x >= 0``: ``sup_x (x - C)/x^2 = 1/(4C)`` at ``x = 2C``.

    So ``||b|| <= E(||g|| - C)_+ <= E||g||^2/(4C)`` (the first step is :func:`clip_residual`).
    Then ``bias_bound_second_moment`` (rtol 1e-15).
    """
    from dptheory.clipping import bias_bound_second_moment
    x, C = sp.symbols("x C", positive=True)
    at, const, curv = _best_quadratic_constant(C)
    show("argmax_x (x - C)/x^2", at); show("sup_x (x - C)/x^2", const)
    ok = sp.simplify(const - 1 / (4 * C)) == 0 and bool(curv.is_negative)
    gap = sp.factor(const * x ** 2 - (x - C))
    show("x^2/(4C) - (x - C)", gap)
    ok &= sp.simplify(gap - (x - 2 * C) ** 2 / (4 * C)) == 0
    pairs = [(bias_bound_second_moment(m2, cv), const.subs(C, cv) * m2) for m2, cv in ((3.0, 0.5), (0.1, 2.0), (7.0, 1.0))]
    ok &= check_points(show, "bias_bound_second_moment", pairs, rtol=1e-15)
    return bool(ok)


@derivation("||clip_C(g) - g|| = (||g|| - C)_+, so ||b|| <= E(||g|| - C)_+ (Jensen)",
            covers=("clipping.bias_bound_excess",))
def clip_residual(show):
    r"""The clipping residual of ``g = r (cos t, sin t)`` from the definition, for ``r > C`` and ``r <= C``.

    ``||E v|| <= E||v||`` (Jensen, the norm is convex) turns it into the bias bound. Then
    ``bias_bound_excess`` with and without weights against the mean residual of sampled vectors
    (rtol 1e-13), and ``||mean(clip(g) - g)||`` below it.
    """
    from dptheory.clipping import bias_bound_excess
    r, C, t = sp.symbols("r C t", positive=True)
    g = sp.Matrix([r * sp.cos(t), r * sp.sin(t)])
    res_big = sp.simplify(sp.sqrt(sp.trigsimp(((g * C / r - g).T * (g * C / r - g))[0])))   # r > C: scaled to C/r
    show("||clip_C(g) - g|| for ||g|| = r > C", res_big)
    ok = sp.simplify(res_big - sp.Abs(r - C)) == 0                   # = r - C there; 0 when r <= C (no change)
    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((200, 3)) * 2.0
    norms = np.linalg.norm(vecs, axis=1)
    Cv = 1.5
    clipped = vecs * np.minimum(1.0, Cv / norms)[:, None]
    resid = np.linalg.norm(clipped - vecs, axis=1)
    res_fn = sp.lambdify((r, C), sp.Max(0, r - C), "math")
    ok &= bool(np.allclose(resid, [res_fn(n, Cv) for n in norms], rtol=1e-12, atol=1e-12))
    w = rng.random(200)
    w /= w.sum()
    pairs = [(bias_bound_excess(norms, Cv), np.mean(resid)), (bias_bound_excess(norms, Cv, weights=w), w @ resid)]
    ok &= check_points(show, "bias_bound_excess", pairs, rtol=1e-13)
    ok &= np.linalg.norm(np.mean(clipped - vecs, axis=0)) <= bias_bound_excess(norms, Cv)
    return bool(ok)


@derivation("Koloskova et al. 2023 regime ||grad F|| <= C/2: ||b|| <= min(E||xi||, E||xi||^2/(2C))",
            covers=("clipping.bias_bound_koloskova",))
def koloskova_bound(show):
    r"""Triangle inequality ``||g|| <= C/2 + ||xi||`` gives ``(||g|| - C)_+ <= (||xi|| - C/2)_+``; then
    ``(x - C/2)_+ <= x`` and ``sup_x (x - C/2)/x^2 = 1/(2C)`` (at ``x = C``). Then ``bias_bound_koloskova`` (rtol 1e-15)."""
    from dptheory.clipping import bias_bound_koloskova
    C = sp.Symbol("C", positive=True)
    at, const, curv = _best_quadratic_constant(C / 2)
    show("argmax_x (x - C/2)/x^2", at); show("sup_x (x - C/2)/x^2", const)
    ok = sp.simplify(const - 1 / (2 * C)) == 0 and bool(curv.is_negative)
    x = sp.Symbol("x", positive=True)
    gap2 = sp.factor(const * x ** 2 - (x - C / 2))
    show("x^2/(2C) - (x - C/2)", gap2)
    ok &= sp.simplify(gap2 - (x - C) ** 2 / (2 * C)) == 0
    pairs = [(bias_bound_koloskova(gn, m1, m2, cv), min(m1, m2 * const.subs(C, cv)))
             for gn, m1, m2, cv in ((0.1, 0.5, 0.3, 1.0), (0.0, 2.0, 5.0, 4.0), (0.5, 1.0, 1.0, 1.0))]
    ok &= check_points(show, "bias_bound_koloskova", pairs, rtol=1e-15)
    return bool(ok)


@functools.lru_cache(maxsize=1)
def _clipped_mean_integral():
    """E clip_C(m + s z) for z ~ N(0, 1), split at the two points where m + s z crosses -C and C."""
    z = sp.Symbol("z", real=True)
    m = sp.Symbol("m", real=True)
    s, C = sp.symbols("s C", positive=True)
    phi = normal_pdf(z)
    a, b = (-C - m) / s, (C - m) / s
    mean = (sp.integrate(-C * phi, (z, -sp.oo, a)) + sp.integrate((m + s * z) * phi, (z, a, b))
            + sp.integrate(C * phi, (z, b, sp.oo)))
    return (m, s, C), mean


@derivation("1-D Gaussian clipped mean by piecewise integration",
            covers=("clipping.clipped_mean_1d", "clipping.clip_bias_1d"))
def clipped_mean(show):
    """The three pieces of the integral; ``clipped_mean_1d`` and ``clip_bias_1d`` (atol 1e-12), s = 0 included."""
    from dptheory.clipping import clip_bias_1d, clipped_mean_1d
    (m, s, C), mean = _clipped_mean_integral()
    a, b = (-C - m) / s, (C - m) / s
    Phi = lambda u: (1 + sp.erf(u / sp.sqrt(2))) / 2
    pdf = lambda u: sp.exp(-u ** 2 / 2) / sp.sqrt(2 * sp.pi)
    closed = m * (Phi(b) - Phi(a)) + s * (pdf(a) - pdf(b)) + C * (1 - Phi(b)) - C * Phi(a)
    show("E clip_C(m + s z)", closed)
    ok = sp.simplify(sp.expand((mean - closed).rewrite(sp.erf))) == 0   # erfc = 1 - erf
    pts = ((sp.Rational(1, 10), 1, 1), (sp.Rational(1, 2), 2, 1), (-3, sp.Rational(1, 3), 2), (5, 1, sp.Rational(1, 10)))
    pairs, bias = [], []
    for mv, sv, cv in pts:
        exact = sp.N(mean.subs({m: mv, s: sv, C: cv}), 30)
        pairs.append((clipped_mean_1d(float(mv), float(sv), float(cv)), exact))
        bias.append((clip_bias_1d(float(mv), float(sv), float(cv)), exact - mv))
    pairs.append((clipped_mean_1d(3.0, 0.0, 1.0), 1.0))                     # s = 0: clip_C(m) itself
    ok &= check_points(show, "clipped_mean_1d", pairs, rtol=0.0, atol=1e-12)
    ok &= check_points(show, "clip_bias_1d", bias, rtol=0.0, atol=1e-12)
    return bool(ok)


@derivation("isotropic Gaussian shrinkage c = E<clip(mu + xi), mu>/||mu||^2 in d = 1, 2, 3 from the radial integral",
            covers=("clipping.shrinkage_factor",))
def shrinkage(show):
    r"""Polar coordinates around 0 for ``g = mu + xi ~ N(mu, s^2 I_d)``, ``mu = m e_1``.

    The component across ``mu`` vanishes (the integrand is odd in ``xi_2``). Along ``e_1``,
    ``clip_C(g) . e_1 = min(rho, C) cos(theta)``, and the angular integral of
    ``cos(theta) e^{a cos(theta)}`` (``a = m rho/s^2``) is ``2 pi I_1(a)`` in d = 2 (the integral
    definition of the Bessel function) and, in d = 3, done by sympy below. d = 1 is
    ``clipped_mean_1d``'s integral. The remaining radial integral (split at ``rho = C``) by mpmath;
    then ``shrinkage_factor`` (rtol 1e-8).
    """
    from dptheory.clipping import shrinkage_factor
    th, a = sp.symbols("theta a", positive=True)
    z1, z2, m, s, C = sp.symbols("z1 z2 m s C", real=True)
    across = z2 * sp.Min(1, C / sp.sqrt((m + z1) ** 2 + z2 ** 2)) * sp.exp(-(z1 ** 2 + z2 ** 2) / (2 * s ** 2))
    ok = sp.simplify(across.subs(z2, -z2) + across) == 0
    show("integrand across mu at -xi_2 plus at xi_2 (odd)", sp.simplify(across.subs(z2, -z2) + across))
    ang3 = sp.simplify(2 * sp.pi * sp.integrate(sp.cos(th) * sp.exp(a * sp.cos(th)) * sp.sin(th), (th, 0, sp.pi)))
    show("d = 3: int_{S^2} cos(theta) e^{a cos(theta)}", ang3)
    ok &= abs(float(ang3.subs(a, 2)) - float(mp.quad(lambda t: 2 * mp.pi * mp.cos(t) * mp.exp(2 * mp.cos(t)) * mp.sin(t),
                                                         [0, mp.pi]))) < 1e-12
    ang3f = sp.lambdify(a, ang3, "mpmath")
    (mm, ss, CC), mean1 = _clipped_mean_integral()
    mean1f = sp.lambdify((mm, ss, CC), mean1, "mpmath")

    def radial(mv, sv, Cv, d):
        dens = lambda r: mp.exp(-(r * r + mv * mv) / (2 * sv * sv)) / (2 * mp.pi * sv * sv) ** (mp.mpf(d) / 2)
        if d == 2:
            f = lambda r: min(r, Cv) * r * dens(r) * 2 * mp.pi * mp.besseli(1, mv * r / sv ** 2)
        else:
            f = lambda r: min(r, Cv) * r * r * dens(r) * ang3f(mv * r / sv ** 2)
        return mp.quad(f, [0, Cv, mv + 12 * sv + Cv, mp.inf]) / mv

    pairs = []
    # shrinkage_factor's nested quadrature costs ~2-3 s per call at d = 2 when the clip is active in the bulk,
    # so d = 2 is checked where it is cheap (0.2 s)
    cases = (((1.0, 0.5, 0.8), (1, 3)), ((2.0, 1.0, 1.0), (1,)), ((0.3, 0.2, 2.0), (1, 2, 3)), ((1.0, 1.0, 1.0), (3,)))
    with mp.workdps(30):
        for (mv, sv, Cv), dims in cases:
            for d in dims:
                want = mean1f(mv, sv, Cv) / mv if d == 1 else radial(mp.mpf(mv), mp.mpf(sv), mp.mpf(Cv), d)
                pairs.append((shrinkage_factor(mv, sv, d, Cv), want))
    ok &= check_points(show, "shrinkage_factor (d = 1, 2, 3)", pairs, rtol=1e-8)
    return bool(ok)


@derivation("high-dimensional shrinkage: E||mu + xi||^2 = m^2 + d s^2, c ~ min(1, C/sqrt(m^2 + d s^2))",
            covers=("clipping.shrinkage_factor_highdim",))
def shrinkage_highdim(show):
    r"""Second moment and variance of ``||mu + xi||^2`` from the per-coordinate Gaussian integrals.

    The relative spread ``sqrt(Var)/E = O(1/sqrt d)``, so each sample is scaled by about
    ``C/sqrt(E||g||^2)``. Then ``shrinkage_factor_highdim`` equals that (rtol 1e-14), and is
    within 1 % of the exact ``shrinkage_factor`` at d = 2000 (the approximation's accuracy).
    """
    from dptheory.clipping import shrinkage_factor, shrinkage_factor_highdim
    z = sp.Symbol("z", real=True)
    m, s, d, C = sp.symbols("m s d C", positive=True)
    mom = lambda f: sp.integrate(f * normal_pdf(z), (z, -sp.oo, sp.oo))
    first = sp.simplify(mom((m + s * z) ** 2) + (d - 1) * mom((s * z) ** 2))
    var = sp.simplify(mom((m + s * z) ** 4) - mom((m + s * z) ** 2) ** 2 + (d - 1) * (mom((s * z) ** 4) - mom((s * z) ** 2) ** 2))
    show("E||mu + xi||^2", first); show("Var ||mu + xi||^2", var)
    ok = sp.simplify(first - (m ** 2 + d * s ** 2)) == 0
    ok &= sp.simplify(var - (2 * d * s ** 4 + 4 * m ** 2 * s ** 2)) == 0
    approx = sp.Min(1, C / sp.sqrt(first))
    pts = ((1.0, 0.05, 2000, 1.0), (3.0, 0.01, 10, 1.0), (0.1, 0.1, 50, 5.0))
    pairs = [(shrinkage_factor_highdim(mv, sv, dv, cv), approx.subs({m: mv, s: sv, d: dv, C: cv})) for mv, sv, dv, cv in pts]
    ok &= check_points(show, "shrinkage_factor_highdim", pairs, rtol=1e-14)
    ok &= check_points(show, "shrinkage_factor at d = 2000 (the approximation)",
                       [(shrinkage_factor(1.0, 0.05, 2000, 1.0), approx.subs({m: 1, s: 0.05, d: 2000, C: 1}))], rtol=1e-2)
    return bool(ok)


@derivation("Chen-Wu-Hong: sum_i clip_1(x - a_i) = 0 on [-2, 2] for a = (-3, 3)",
            covers=("clipping.chen_wu_hong_fixed_points", "clipping.clipped_gd_direction_1d"))
def chen_wu_hong(show):
    """Per-example gradients of f = (1/n) sum (x - a_i)^2/2 by differentiation, clipped; zero set by solveset.

    Chen, Wu & Hong 2020 (arXiv 2006.15429). Then ``clipped_gd_direction_1d`` (atol 1e-15) and
    ``chen_wu_hong_fixed_points`` (exact) for two point sets.
    """
    from dptheory.clipping import chen_wu_hong_fixed_points, clipped_gd_direction_1d
    x = sp.Symbol("x", real=True)
    clip = lambda u, c: sp.Max(-c, sp.Min(c, u))
    ok = True
    for pts, c in (((-3, 3), 1), ((-3, 1, 3), 1)):
        grads = [sp.diff((x - ai) ** 2 / 2, x) for ai in pts]
        h = sum(clip(gi, c) for gi in grads) / len(pts)
        zero = sp.solveset(sp.Eq(h, 0), x, sp.S.Reals)
        show(f"zero set of the clipped-gradient mean, a = {pts}", zero)
        lo, hi = (zero.start, zero.end) if isinstance(zero, sp.Interval) else (min(zero), max(zero))
        ok &= chen_wu_hong_fixed_points(tuple(float(p) for p in pts), float(c)) == (float(lo), float(hi))
        pairs = [(clipped_gd_direction_1d(xv, [float(p) for p in pts], float(c)), h.subs(x, sp.nsimplify(xv)))
                 for xv in (-5.0, -2.5, -0.3, 0.0, 1.7, 4.0)]
        ok &= check_points(show, f"clipped_gd_direction_1d, a = {pts}", pairs, rtol=0.0, atol=1e-15)
    ok &= chen_wu_hong_fixed_points((-3.0, 3.0), 1.0) == (-2.0, 2.0)
    return bool(ok)
