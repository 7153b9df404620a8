"""Derivations behind :mod:`dptheory.clipping` (docs/theory.md §4)."""
from __future__ import annotations

import sympy as sp

from . import derivation


@derivation("(x - C)_+ <= x^2/(4C) via x^2/(4C) - (x - C) = (x - 2C)^2/(4C)")
def hinge_quadratic(show):
    from dptheory.clipping import bias_bound_second_moment
    x, C = sp.symbols("x C", positive=True)
    gap = sp.factor(x ** 2 / (4 * C) - (x - C))
    show("x^2/(4C) - (x - C)", gap)
    ok = sp.simplify(gap - (x - 2 * C) ** 2 / (4 * C)) == 0
    # the C/2 version used for the Koloskova et al. bound: (x - C/2)_+ <= x^2/(2C)
    gap2 = sp.factor(x ** 2 / (2 * C) - (x - C / 2))
    show("x^2/(2C) - (x - C/2)", gap2)
    ok &= sp.simplify(gap2 - (x - C) ** 2 / (2 * C)) == 0
    ok &= abs(bias_bound_second_moment(3.0, 0.5) - 1.5) < 1e-15
    return bool(ok)


@derivation("1-D Gaussian clipped mean by piecewise integration")
def clipped_mean(show):
    from dptheory.clipping import clipped_mean_1d
    z = sp.Symbol("z", real=True)
    m = sp.Symbol("m", real=True)
    s, C = sp.symbols("s C", positive=True)
    phi = sp.exp(-z ** 2 / 2) / sp.sqrt(2 * sp.pi)
    a, b = (-C - m) / s, (C - m) / s           # g = m + s z crosses -C, C
    mean = (sp.integrate(-C * phi, (z, -sp.oo, a)) + sp.integrate((m + s * z) * phi, (z, a, b))
            + sp.integrate(C * phi, (z, b, sp.oo)))
    Phi = lambda u: (1 + sp.erf(u / sp.sqrt(2))) / 2
    pdf = lambda u: sp.exp(-u ** 2 / 2) / sp.sqrt(2 * sp.pi)
    closed = m * (Phi(b) - Phi(a)) + s * (pdf(a) - pdf(b)) + C * (1 - Phi(b)) - C * Phi(a)
    show("E clip_C(m + s z)", closed)
    ok = sp.simplify(sp.expand((mean - closed).rewrite(sp.erf))) == 0   # erfc = 1 - erf
    for mv, sv, cv in ((sp.Rational(1, 10), 1, 1), (sp.Rational(1, 2), 2, 1), (-3, sp.Rational(1, 3), 2), (5, 1, sp.Rational(1, 10))):
        exact = sp.N(mean.subs({m: mv, s: sv, C: cv}), 30)
        ok &= abs(clipped_mean_1d(float(mv), float(sv), float(cv)) - float(exact)) < 1e-12
    return bool(ok)


@derivation("Chen-Wu-Hong: sum_i clip_1(x - a_i) = 0 on [-2, 2] for a = (-3, 3)")
def chen_wu_hong(show):
    from dptheory.clipping import chen_wu_hong_fixed_points
    x = sp.Symbol("x", real=True)
    clip = lambda u: sp.Max(-1, sp.Min(1, u))
    h = clip(x + 3) + clip(x - 3)
    zero = sp.solveset(sp.Eq(h, 0), x, sp.S.Reals)
    show("zero set of the clipped-gradient sum", zero)
    ok = zero == sp.Interval(-2, 2)
    ok &= chen_wu_hong_fixed_points((-3.0, 3.0), 1.0) == (-2.0, 2.0)
    return bool(ok)
