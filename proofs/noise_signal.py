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
        got = optimal_keep_fraction(sub[d], float(sub[sig]), sub[B], sub[dF], sub[L], float(sub[eta]), sub[C], sub[T],
                                    spread="spread_out")
        ok &= abs(got - float(expect)) < 1e-12
        ok &= abs(tradeoff_bound(0.25, 3, 5, spread="spread_out") - float(f.subs({rho: sp.Rational(1, 4), a: 3, b: 5}))) < 1e-12
    return bool(ok)


def _std_normal():
    z = sp.Symbol("z", real=True)
    return z, sp.exp(-z ** 2 / 2) / sp.sqrt(2 * sp.pi)


@derivation("noisy top-k of pure noise: E||z_S||^2/k <= 1 + t phi(t)/Phi_bar(t), t = Phi^-1(1 - k/(2d)), = as d -> oo")
def noisy_top_k_pure_noise(show):
    """From the definition: S keeps the coordinates with |z_j| above the (k/d)-upper quantile t of |z|
    (in the limit d -> inf), so E||z_S||^2/k = E[z^2 | |z| > t]; and the pathwise bound
    sum of the k largest z_j^2 <= k tau + sum_j (z_j^2 - tau)_+ minimised over tau gives the same value."""
    from dptheory.noise_signal import noisy_top_k_energies, noisy_top_k_noise_factor
    z, phi = _std_normal()
    t, tau = sp.symbols("t tau", positive=True)
    k, d = sp.symbols("k d", positive=True)
    phi_t = phi.subs(z, t)
    tail = sp.integrate(phi, (z, t, sp.oo))                       # Phi_bar(t)
    kept_m2 = 2 * sp.integrate(z ** 2 * phi, (z, t, sp.oo))       # E[z^2 ; |z| > t] (both tails)
    kept_p = 2 * tail                                             # P(|z| > t)
    show("E[z^2 ; |z| > t] = 2 int_t^oo z^2 phi(z) dz", sp.simplify(kept_m2))
    ok = sp.simplify(kept_m2 / 2 - (t * phi_t + tail)) == 0       # int_t^oo z^2 phi = t phi(t) + Phi_bar(t)
    factor = sp.simplify(kept_m2 / kept_p)
    show("E[z^2 | |z| > t]", factor)
    ok &= sp.simplify(factor - (1 + t * phi_t / tail)) == 0
    # bound: f(tau) = k tau + d E(z^2 - tau)_+ ; f' = k - d P(z^2 > tau) = 0 at P(|z| > t) = k/d, tau = t^2
    f = k * tau + d * 2 * sp.integrate((z ** 2 - tau) * phi, (z, sp.sqrt(tau), sp.oo))
    f1 = sp.simplify(sp.diff(f, tau))
    show("d/dtau [k tau + d E(z^2 - tau)_+]", f1)
    ok &= sp.simplify(f1 - (k - d * kept_p.subs(t, sp.sqrt(tau)))) == 0
    f2 = sp.simplify(sp.diff(f, tau, 2))
    show("second derivative (> 0: a minimum)", f2)
    ok &= bool(f2.subs({d: 1000, tau: 2}) > 0)
    at_t = sp.simplify(f.subs(tau, t ** 2).subs(k, d * kept_p))   # k = d P(|z| > t) there
    show("minimum value / k", sp.simplify(at_t / (d * kept_p)))
    ok &= sp.simplify(at_t - d * kept_m2) == 0                    # = d E[z^2;|z|>t] = k E[z^2 | |z| > t]
    # exact finite d: d = 2, k = 1 from the definition in polar coordinates, E r^2 max(cos^2, sin^2)
    r, th = sp.symbols("r theta", positive=True)
    e_r2 = sp.integrate(r ** 2 * r * sp.exp(-r ** 2 / 2), (r, 0, sp.oo))
    e_ang = 8 * sp.integrate(sp.cos(th) ** 2, (th, 0, sp.pi / 4)) / (2 * sp.pi)
    e_max = sp.simplify(e_r2 * e_ang)
    show("E max(z_1^2, z_2^2) (d = 2, k = 1, exact)", e_max)
    ok &= sp.simplify(e_max - (1 + 2 / sp.pi)) == 0
    ok &= abs(noisy_top_k_noise_factor(1, 2, exact=True) - float(e_max)) < 1e-9
    t2 = sp.sqrt(2) * sp.erfinv(sp.Rational(1, 2))                # Phi^-1(3/4): the limit is an upper bound
    ok &= float(factor.subs(t, t2)) > float(e_max)
    # the dptheory functions: closed form at t = Phi^-1(1 - k/(2d)) (= sqrt(2) erfinv(1 - k/d))
    for kk, dd in ((1, 2), (1, 1000), (10, 1000), (100, 1000), (37, 50)):
        tt = sp.sqrt(2) * sp.erfinv(1 - sp.Rational(kk, dd))
        want = float(factor.subs(t, tt).evalf(30))
        ok &= abs(noisy_top_k_noise_factor(kk, dd) - want) < 1e-10 * want
        ok &= abs(noisy_top_k_energies([0.0] * dd, kk, 1.5, 1.0, 1.0)[0] - kk * 2.25 * want) < 1e-9 * kk * 2.25 * want
        ok &= noisy_top_k_noise_factor(kk, dd, exact=True) <= want * (1 + 1e-12)
    return bool(ok)


@derivation("noisy top-k threshold model: E[z^2; |g + s z| > tau] = a phi(a) + Phi_bar(a) + b phi(b) + Phi_bar(b)")
def noisy_top_k_threshold_model(show):
    """Per coordinate, |g + s z| > tau iff z > a = (tau - g)/s or z < -b, b = (tau + g)/s; the kept noise and
    kept probability are integrals of the standard normal over the two half-lines."""
    from dptheory.noise_signal import noisy_top_k_energies
    z, phi = _std_normal()
    a, b = sp.symbols("a b", real=True)
    m2 = sp.integrate(z ** 2 * phi, (z, a, sp.oo)) + sp.integrate(z ** 2 * phi, (z, -sp.oo, -b))
    pk = sp.integrate(phi, (z, a, sp.oo)) + sp.integrate(phi, (z, -sp.oo, -b))
    bar = lambda x: sp.erfc(x / sp.sqrt(2)) / 2                   # Phi_bar
    want = a * phi.subs(z, a) + bar(a) + b * phi.subs(z, b) + bar(b)
    show("E[z^2 ; z > a or z < -b]", sp.simplify(m2))
    ok = sp.simplify(sp.expand_func(m2 - want).rewrite(sp.erfc)) == 0
    ok &= sp.simplify((pk - bar(a) - bar(b)).rewrite(sp.erfc)) == 0
    # the dptheory function: recompute both sums from these integrals at the threshold it returns
    g = [2.0, -1.0, 0.5, 0.0, 0.0, 3.0, -0.25]
    s, k = 0.8, 3
    noise, signal, thr = noisy_top_k_energies(g, k, s, 1.0, 1.0)
    ns_, ss_, cnt = 0.0, 0.0, 0.0
    for gj in g:
        sub = {a: (thr - abs(gj)) / s, b: (thr + abs(gj)) / s}
        ns_ += s * s * float(want.subs(sub).evalf(30))
        pj = float((bar(a) + bar(b)).subs(sub).evalf(30))
        ss_ += gj * gj * pj
        cnt += pj
    show("sum_j P(kept) at the returned threshold (= k)", sp.Float(cnt, 15))
    ok &= abs(cnt - k) < 1e-9 and abs(noise - ns_) < 1e-9 * ns_ and abs(signal - ss_) < 1e-9 * ss_
    return bool(ok)
