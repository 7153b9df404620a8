"""Derivations behind :mod:`dptheory.convergence` (docs/theory.md §3)."""
from __future__ import annotations

import sympy as sp

from . import derivation


def _close(a, b, rel=1e-12):
    return abs(float(a) - float(b)) <= rel * max(1.0, abs(float(b)))


@derivation("convex: eta* = R/sqrt(T(G^2+N)), value R sqrt(G^2+N)/sqrt(T); random-k R^2 -> (d/k)R^2")
def convex_opt(show):
    from dptheory.convergence import (convex_bound, convex_optimal_bound, convex_optimal_lr,
                                      convex_random_k_optimal_bound, convex_random_k_optimal_lr)
    R, G, N, T, eta, d, k = sp.symbols("R G N T eta d k", positive=True)
    f = R ** 2 / (2 * eta * T) + eta / 2 * (G ** 2 + N)
    sol = sp.solve(sp.diff(f, eta), eta)
    show("stationary eta", sp.Tuple(*sol))
    ok = len(sol) == 1 and sp.simplify(sol[0] - R / sp.sqrt(T * (G ** 2 + N))) == 0
    val = sp.simplify(f.subs(eta, sol[0]))
    show("value", val)
    ok &= sp.simplify(val - R * sp.sqrt(G ** 2 + N) / sp.sqrt(T)) == 0
    fk = f.subs(R, sp.sqrt(d / k) * R)
    solk = sp.solve(sp.diff(fk, eta), eta)[0]
    valk = sp.simplify(fk.subs(eta, solk))
    show("random-k value / dense value", sp.simplify(valk / val))
    ok &= sp.simplify(valk / val - sp.sqrt(d / k)) == 0
    for pt in ((1, 1, 2, 100, 10, 3), (3, sp.Rational(1, 2), 5, 7, 50, 50)):
        sub = dict(zip((R, G, N, T, d, k), pt))
        ok &= _close(convex_optimal_lr(pt[0], float(pt[1]), pt[3], pt[2]), sol[0].subs(sub))
        ok &= _close(convex_optimal_bound(pt[0], float(pt[1]), pt[3], pt[2]), val.subs(sub))
        ok &= _close(convex_bound(pt[0], float(pt[1]), pt[3], 0.25, pt[2]), f.subs(sub | {eta: sp.Rational(1, 4)}))
        ok &= _close(convex_random_k_optimal_lr(pt[0], float(pt[1]), pt[3], pt[2], pt[5], pt[4]), solk.subs(sub))
        ok &= _close(convex_random_k_optimal_bound(pt[0], float(pt[1]), pt[3], pt[2], pt[5], pt[4]), valk.subs(sub))
    return bool(ok)


@derivation("non-convex: eta* = sqrt(2 DeltaF/(T L s2)), value 2 sqrt(2 DeltaF L s2/T); random-k DeltaF -> (d/k)DeltaF")
def nonconvex_opt(show):
    from dptheory.convergence import nonconvex_biased_optimal_lr, nonconvex_random_k_optimal_bound
    dF, L, T, s2, eta, d, k, V, B, N = sp.symbols("DeltaF L T sigma2 eta d k V B N", positive=True)
    f = 2 * dF / (eta * T) + L * eta * s2
    sol = sp.solve(sp.diff(f, eta), eta)
    ok = len(sol) == 1 and sp.simplify(sol[0] - sp.sqrt(2 * dF / (T * L * s2))) == 0
    val = sp.simplify(f.subs(eta, sol[0]))
    show("eta*", sol[0]); show("value", val)
    ok &= sp.simplify(val - 2 * sp.sqrt(2 * dF * L * s2 / T)) == 0
    # random-k one-step: E F+ <= F - eta (k/d) g2 + (L eta^2/2)(k/d)(g2 + V/B + N), eta <= 1/L
    g2 = sp.Symbol("g2", positive=True)
    step = -eta * k / d * g2 + L * eta ** 2 / 2 * k / d * (g2 + V / B + N)
    at_max = sp.simplify(step.subs(eta, 1 / L) - (-(1 / L) / 2 * k / d * g2 + L / L ** 2 / 2 * k / d * (V / B + N)))
    show("one-step decrease at eta = 1/L minus its bound", at_max)
    ok &= at_max == 0
    fk = 2 * d * dF / (eta * k * T) + L * eta * (V / B + N)
    valk = sp.simplify(fk.subs(eta, sp.solve(sp.diff(fk, eta), eta)[0]))
    show("random-k value", valk)
    ok &= sp.simplify(valk - 2 * sp.sqrt(2 * d * dF * L * (V / B + N) / (k * T))) == 0
    for pt in ((1, 1, 1000, 3), (2, 5, 10 ** 4, sp.Rational(1, 2))):
        sub = dict(zip((dF, L, T, s2), pt))
        ok &= _close(nonconvex_biased_optimal_lr(pt[0], pt[1], pt[2], float(pt[3])), sol[0].subs(sub))
    sub = {dF: 1, L: 1, T: 10 ** 4, d: 100, k: 10, V: 1, B: 8, N: 2}
    ok &= _close(nonconvex_random_k_optimal_bound(1, 1, 10 ** 4, 10, 100, 1, 8, 2), valk.subs(sub))
    return bool(ok)


@derivation("strongly convex: 4G^2/(lambda^2 t) solves the RSS recursion (1 - 2/t) D_t + G^2/(lambda^2 t^2)")
def strongly_convex_recursion(show):
    from dptheory.convergence import strongly_convex_last_iterate_bound, strongly_convex_random_k_bound
    t, G, lam = sp.symbols("t G lambda", positive=True)
    D = lambda tt: 4 * G ** 2 / (lam ** 2 * tt)
    gap = sp.factor(sp.simplify(D(t + 1) - ((1 - 2 / t) * D(t) + G ** 2 / (lam ** 2 * t ** 2))))
    show("D_{t+1} - recursion(D_t)", gap)
    # gap = G^2 (3t + 7)/(lambda^2 t^2 (t+1)) > 0: the bound propagates (base case t = 1 from strong convexity)
    ok = sp.simplify(gap - G ** 2 * (3 * t + 7) / (lam ** 2 * t ** 2 * (t + 1))) == 0
    ok &= _close(strongly_convex_last_iterate_bound(2, 3, 5, 1.5), 4 * (4 + 1.5) / (9 * 5))
    ok &= _close(strongly_convex_random_k_bound(2, 3, 5, 1.5, 4, 12), 3 * 4 * (4 + 1.5) / (9 * 5))
    return bool(ok)


@derivation("random-k coordinate descent: E F+ <= F - (k/d)||g||^2/(2L); PL factor 1 - k mu/(d L)")
def coordinate_descent(show):
    from dptheory.convergence import random_k_cd_nonconvex_bound, random_k_cd_pl_bound
    L, g2, k, d, mu, gap, T, dF = sp.symbols("L g2 k d mu Delta T DeltaF", positive=True)
    # smoothness with step 1/L on the masked gradient: -(1/L)|m g|^2 + (L/2)(1/L^2)|m g|^2, E|m g|^2 = (k/d) g2
    dec = sp.simplify(-(1 / L) * k / d * g2 + L / 2 / L ** 2 * k / d * g2)
    show("expected one-step change", dec)
    ok = sp.simplify(dec + k * g2 / (2 * d * L)) == 0
    contraction = sp.simplify((gap + dec.subs(g2, 2 * mu * gap)) / gap)
    show("PL contraction factor", contraction)
    ok &= sp.simplify(contraction - (1 - k * mu / (d * L))) == 0
    avg = sp.solve(sp.Eq(T * k * g2 / (2 * d * L), dF), g2)[0]          # telescoping
    show("average squared gradient", avg)
    ok &= sp.simplify(avg - 2 * d * L * dF / (k * T)) == 0
    ok &= _close(random_k_cd_nonconvex_bound(3, 12, 2, 50, 5), 2 * 12 * 2 * 5 / (3 * 50))
    ok &= _close(random_k_cd_pl_bound(3, 12, 1, 2, 10, 5), (1 - 3 / 24) ** 10 * 5)
    return bool(ok)


@derivation("random freeze bound with constant rho = sqrt(rho) x mask-then-clip bound")
def freeze_consistency(show):
    import numpy as np
    from dptheory.convergence import mask_then_clip_bound, random_freeze_bound
    dF, eta, C, T, L, d, sig, B, rho = sp.symbols("DeltaF eta C T L d sigma B rho", positive=True)
    freeze = dF / (eta * C * T) + L * eta * C / 2 * (1 + rho * d * sig ** 2 / B ** 2)
    a = dF / (eta * C * T) + L * eta * C / 2
    b = L * eta * C * d * sig ** 2 / (2 * B ** 2)
    diff = sp.simplify(freeze / sp.sqrt(rho) - (a / sp.sqrt(rho) + b * sp.sqrt(rho)))
    show("freeze/sqrt(rho) - (a/sqrt(rho) + b sqrt(rho))", diff)
    ok = diff == 0
    lhs = random_freeze_bound(np.full(200, 0.25), 40, 3.0, 2.0, 0.1, 1.0, 1.5, 8) / 0.5
    ok &= _close(lhs, mask_then_clip_bound(10, 40, 3.0, 2.0, 0.1, 1.0, 200, 1.5, 8))
    return bool(ok)
