"""Derivations behind :mod:`dptheory.noise_signal` (docs/theory.md §2, §3.3 trade-off, §3.4 compressors)."""
from __future__ import annotations

import itertools

import sympy as sp

from . import derivation

_PTS = [(3, 1), (7, 2), (10, 10), (12, 5)]   # (d, k) test points


@derivation("random-k: P(i in S) = k/d and E||m x||^2 = (k/d)||x||^2")
def random_k_signal(show):
    from dptheory.noise_signal import signal_random_k, contraction_random_k
    d, k = sp.symbols("d k", positive=True, integer=True)
    p = sp.binomial(d - 1, k - 1) / sp.binomial(d, k)       # subsets containing i / all subsets
    p = sp.simplify(sp.combsimp(p))
    show("P(i in S) = C(d-1,k-1)/C(d,k)", p)
    ok = sp.simplify(p - k / d) == 0
    # exact enumeration over all k-subsets for a small d, symbolic x
    x = sp.symbols("x1:6", real=True)
    for kk in (1, 2, 3):
        subs = list(itertools.combinations(range(5), kk))
        e = sum(sum(x[i] ** 2 for i in S) for S in subs) / len(subs)
        ok &= sp.expand(e - sp.Rational(kk, 5) * sum(xi ** 2 for xi in x)) == 0
        err = sum(sum(x[i] ** 2 for i in range(5) if i not in S) for S in subs) / len(subs)
        ok &= sp.expand(err - (1 - sp.Rational(kk, 5)) * sum(xi ** 2 for xi in x)) == 0
    show("E||m x||^2 (enumerated, d=5, k=2)", sp.Rational(2, 5) * sp.Symbol("||x||^2"))
    for dd, kk in _PTS:
        ok &= abs(signal_random_k(kk, dd, 7) - sp.Rational(kk * 7, dd)) < 1e-12
        ok &= abs(contraction_random_k(kk, dd) - (1 - sp.Rational(kk, dd))) < 1e-12
    return bool(ok)


@derivation("rescaled random-k Q = (d/k) m x: E Q = x, E||Q||^2 = (d/k)||x||^2, noise (d^2/k) s^2")
def rescaled_moments(show):
    from dptheory.noise_signal import noise_energy_rescaled, rescaled_random_k_moments
    d, k, xi, X2, s = sp.symbols("d k x_i X2 s", positive=True)
    p = k / d
    mean_i = p * (d / k) * xi
    second = p * (d / k) ** 2 * X2            # sum_i P(i in S)(d/k)^2 x_i^2
    var = sp.simplify(second - X2)            # E||Q - x||^2 = E||Q||^2 - ||x||^2 since E Q = x
    noise = sp.simplify(k * (d / k) ** 2 * s ** 2)
    show("E Q_i", mean_i); show("E||Q||^2", sp.simplify(second)); show("Var", var); show("noise energy", noise)
    ok = sp.simplify(mean_i - xi) == 0 and sp.simplify(second - d / k * X2) == 0
    ok &= sp.simplify(var - (d / k - 1) * X2) == 0 and sp.simplify(noise - d ** 2 / k * s ** 2) == 0
    for dd, kk in _PTS:
        m, sec, v = rescaled_random_k_moments(kk, dd, 3)
        ok &= m == 1 and abs(sec - 3 * dd / kk) < 1e-12 and abs(v - 3 * (dd / kk - 1)) < 1e-12
        ok &= abs(noise_energy_rescaled(kk, dd, 2, 1, 4) - float(noise.subs({d: dd, k: kk, s: sp.Rational(1, 2)}))) < 1e-12
    return bool(ok)


@derivation("scaled sign: ||x - (||x||_1/d) sign x||^2 = ||x||^2 - ||x||_1^2/d")
def scaled_sign(show):
    from dptheory.noise_signal import scaled_sign_delta
    n = 4
    a = sp.symbols("a1:5", positive=True)            # |x_i|
    eps = (1, -1, -1, 1)                              # signs (the identity does not depend on them)
    x = [e * ai for e, ai in zip(eps, a)]
    l1 = sum(a)
    err = sum((xi - l1 / n * e) ** 2 for xi, e in zip(x, eps))
    target = sum(ai ** 2 for ai in a) - l1 ** 2 / n
    show("||x - (||x||_1/d) sign x||^2", sp.factor(sp.expand(err)))
    ok = sp.expand(err - target) == 0
    xv = [sp.Rational(3), sp.Rational(-1, 2), sp.Rational(2), sp.Rational(-5)]
    delta = sum(abs(v) for v in xv) ** 2 / (n * sum(v * v for v in xv))
    ok &= abs(scaled_sign_delta([float(v) for v in xv]) - float(delta)) < 1e-12
    return bool(ok)


@derivation("random freeze: (1/E) sum_e (1 - r e/(E-1)) = 1 - r/2")
def freeze_sum(show):
    from dptheory.noise_signal import freeze_mean_noise_energy
    e, E = sp.symbols("e E", integer=True, positive=True)
    r = sp.Symbol("r", positive=True)
    mean = sp.simplify(sp.summation(1 - r * e / (E - 1), (e, 0, E - 1)) / E)
    show("mean relative noise energy", mean)
    ok = sp.simplify(mean - (1 - r / 2)) == 0
    for rr, EE in ((sp.Rational(9, 10), 2), (sp.Rational(1, 2), 7), (sp.Rational(3, 4), 40)):
        ok &= abs(freeze_mean_noise_energy(float(rr), EE) - float(1 - rr / 2)) < 1e-12
    return bool(ok)


@derivation("noise energy on k coordinates: mean k s^2, variance 2 k s^4 (chi-square)")
def chi_square(show):
    from dptheory.noise_signal import noise_energy_mean, noise_energy_var
    z = sp.Symbol("z", real=True)
    k, s = sp.symbols("k s", positive=True)
    phi = sp.exp(-z ** 2 / 2) / sp.sqrt(2 * sp.pi)
    m2 = sp.integrate(z ** 2 * phi, (z, -sp.oo, sp.oo))
    m4 = sp.integrate(z ** 4 * phi, (z, -sp.oo, sp.oo))
    mean, var = k * s ** 2 * m2, k * s ** 4 * (m4 - m2 ** 2)     # sum of k independent (s z_i)^2
    show("E z^2, E z^4", sp.Tuple(m2, m4)); show("mean", mean); show("variance", var)
    ok = sp.simplify(mean - k * s ** 2) == 0 and sp.simplify(var - 2 * k * s ** 4) == 0
    for kk, sig, C, B in ((1, 1, 1, 1), (7, sp.Rational(3, 2), 2, 8), (50, sp.Rational(1, 3), 1, 64)):
        ss = sig * C / sp.Integer(B)
        ok &= abs(noise_energy_mean(kk, float(sig), C, B) - float(kk * ss ** 2)) < 1e-12 * max(1, float(kk * ss ** 2))
        ok &= abs(noise_energy_var(kk, float(sig), C, B) - float(2 * kk * ss ** 4)) < 1e-12 * max(1, float(2 * kk * ss ** 4))
    return bool(ok)


@derivation("trade-off a/sqrt(rho) + b sqrt(rho): minimiser rho* = a/b, value 2 sqrt(ab)")
def tradeoff(show):
    from dptheory.noise_signal import optimal_keep_fraction, tradeoff_bound
    rho, a, b = sp.symbols("rho a b", positive=True)
    f = a / sp.sqrt(rho) + b * sp.sqrt(rho)
    crit = sp.solve(sp.diff(f, rho), rho)
    show("stationary points", sp.Tuple(*crit))
    ok = crit == [a / b]
    ok &= sp.simplify(sp.diff(f, rho, 2).subs(rho, a / b)) .is_positive
    val = sp.simplify(f.subs(rho, a / b))
    show("value", val)
    ok &= sp.simplify(val - 2 * sp.sqrt(a * b)) == 0
    dF, L, eta, C, T, d, sig, B = sp.symbols("DeltaF L eta C T d sigma B", positive=True)
    A = dF / (eta * C * T) + L * eta * C / 2
    Bc = L * eta * C * d * sig ** 2 / (2 * B ** 2)
    ratio = sp.simplify(A / Bc)
    show("a/b", ratio)
    ok &= sp.simplify(ratio - B ** 2 / (d * sig ** 2) * (1 + 2 * dF / (L * eta ** 2 * C ** 2 * T))) == 0
    for vals in ((1, 1, sp.Rational(1, 10), 1, 100, 1000, 3, 16), (5, 2, sp.Rational(1, 2), 2, 50, 400, 2, 8)):
        sub = dict(zip((dF, L, eta, C, T, d, sig, B), vals))
        expect = min(1, ratio.subs(sub))
        got = optimal_keep_fraction(sub[d], float(sub[sig]), sub[B], sub[dF], sub[L], float(sub[eta]), sub[C], sub[T])
        ok &= abs(got - float(expect)) < 1e-12
        ok &= abs(tradeoff_bound(0.25, 3, 5) - float(f.subs({rho: sp.Rational(1, 4), a: 3, b: 5}))) < 1e-12
    return bool(ok)
