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


def _mask_expectation(d, k, term):
    """E_m term(m) over the uniformly random k-subsets m of {0..d-1} (an exact sum over all masks)."""
    from itertools import combinations
    masks = list(combinations(range(d), k))
    return sp.Add(*[term(set(m)) for m in masks]) / len(masks)


@derivation("mask then clip: spread s = rho (1-sparse), sqrt(rho) (sign vector) by sums over masks; "
            "c_bar <= (a + b rho)/s; worst case rho* = 1")
def mask_then_clip_spread(show):
    import numpy as np
    from dptheory.convergence import mask_then_clip_bound, random_freeze_bound
    from dptheory.noise_signal import optimal_keep_fraction, sparsification_helps, tradeoff_coefficients
    C, gam = sp.symbols("C gamma", positive=True)
    ok = True
    # (1) spread factor s = E_m <grad F, clip_C(m * g)> / (C <grad F, g/||g||>), all clipped, by summing
    #     over every mask (d = 5, k = 1..4); f = grad F symbolic, g 1-sparse or a sign vector
    d = 5
    f = sp.symbols(f"f0:{d}", positive=True)
    for k in range(1, d):
        rho = sp.Rational(k, d)
        # 1-sparse g = gam e_0: clip(m * g) = C e_0 if 0 in m, else 0
        s1 = sp.simplify(_mask_expectation(d, k, lambda m: C * f[0] if 0 in m else 0) / (C * f[0]))
        # sign vector g = gam (1, -1, 1, -1, 1): ||m * g|| = gam sqrt(k), clip = C m * g/(gam sqrt(k))
        sg = [(-1) ** i for i in range(d)]
        dense = C * sp.Add(*[f[i] * sg[i] for i in range(d)]) / sp.sqrt(d)
        masked = _mask_expectation(d, k, lambda m: C * sp.Add(*[f[i] * sg[i] for i in m]) / sp.sqrt(k))
        s2 = sp.simplify(masked / dense)
        ok &= sp.simplify(s1 - rho) == 0 and sp.simplify(s2 - sp.sqrt(rho)) == 0
        # worst-case lemma: E_m (m * g) = rho g for any g, so with <grad F, m*g> >= 0 and ||m*g|| <= ||g||,
        # E_m <f, m*g>/||m*g|| >= E_m <f, m*g>/||g|| = rho <f, g>/||g||
        g = sp.symbols(f"g0:{d}")
        for j in range(d):
            ok &= sp.simplify(_mask_expectation(d, k, lambda m: g[j] if j in m else 0) - rho * g[j]) == 0
    show("s (1-sparse, d=5, k=1..4)", sp.Tuple(*[sp.Rational(k, d) for k in range(1, d)]))
    show("s (sign vector): E_m clip / dense", sp.sqrt(sp.Symbol("rho")))
    # (2) one step of the descent lemma (L-smooth F, ||u|| <= C, noise energy k sigma^2 C^2/B^2 on the kept
    #     coordinates): F_{t+1} <= F_t - eta C ct_t + (L eta^2/2)(C^2 + rho d sigma^2 C^2/B^2);
    #     telescoped over t = 0..T-1 with F_0 - F_T <= DeltaF
    t, T = sp.symbols("t T", integer=True, positive=True)
    dF, L, eta, sig, B, dd, rho = sp.symbols("DeltaF L eta sigma B d rho", positive=True)
    Fs = sp.Function("F")
    K2 = L * eta ** 2 / 2 * (C ** 2 + rho * dd * sig ** 2 * C ** 2 / B ** 2)
    total = sp.Sum(Fs(t) - Fs(t + 1) + K2, (t, 0, T - 1)).doit()          # >= eta C sum_t ct_t
    show("sum_t eta C ct_t <=", total)
    avg_ct = (total.subs(Fs(0) - Fs(T), dF).subs(Fs(0), dF + Fs(T))) / (eta * C * T)
    avg_ct = sp.simplify(avg_ct)
    show("(1/T) sum ct_t <= (masked descent, no assumption)", avg_ct)
    A = dF / (eta * C * T) + L * eta * C / 2
    Bc = L * eta * C * dd * sig ** 2 / (2 * B ** 2)
    ok &= sp.simplify(avg_ct - (A + Bc * rho)) == 0
    # (3) ct_t >= s(rho) c_bar_t with s = rho^p: (1/T) sum c_bar_t <= (a + b rho)/rho^p; its minimiser
    p = sp.Symbol("p", positive=True)
    bound = (A + Bc * rho) / rho ** p
    deriv = sp.simplify(sp.diff(bound, rho) * rho ** (p + 1))
    show("rho^(p+1) d/drho bound", deriv)
    ok &= sp.simplify(deriv - ((1 - p) * Bc * rho - p * A)) == 0
    ok &= sp.simplify(deriv.subs(p, 1) + A) == 0                          # p = 1: -a < 0, decreasing
    rho0 = sp.solve(sp.Eq(deriv, 0), rho)
    show("stationary rho (p < 1)", sp.Tuple(*rho0))
    ok &= len(rho0) == 1 and sp.simplify(rho0[0] - p * A / ((1 - p) * Bc)) == 0
    # (4) the dptheory functions at numeric points
    for kk, D, vals in ((10, 40, (3.0, 2.0, 0.1, 1.0, 200, 1.5, 8)), (7, 4810, (2.3, 1.0, 0.5, 1.0, 300, 2.65, 64))):
        dFv, Lv, etav, Cv, Tv, sv, Bv = vals
        sub = {dF: dFv, L: Lv, eta: etav, C: Cv, T: Tv, sig: sv, B: Bv, dd: D, rho: sp.Rational(kk, D)}
        a_num, b_num = tradeoff_coefficients(dFv, Lv, etav, Cv, Tv, D, sv, Bv)
        ok &= _close(a_num, A.subs(sub)) and _close(b_num, Bc.subs(sub))
        for spread, pv in (("worst_case", 1), ("spread_out", sp.Rational(1, 2)), (0.75, sp.Rational(3, 4))):
            ok &= _close(mask_then_clip_bound(kk, D, dFv, Lv, etav, Cv, Tv, sv, Bv, spread=spread),
                         bound.subs(sub).subs(p, pv))
            star = 1 if pv == 1 else min(1, (p * A / ((1 - p) * Bc)).subs(sub).subs(p, pv))
            got = optimal_keep_fraction(D, sv, Bv, dFv, Lv, etav, Cv, Tv, spread=spread)
            ok &= _close(got, star) and sparsification_helps(D, sv, Bv, dFv, Lv, etav, Cv, Tv, spread=spread) == (star < 1)
        ok &= _close(mask_then_clip_bound(kk, D, dFv, Lv, etav, Cv, Tv, sv, Bv), bound.subs(sub).subs(p, 1))
        ok &= _close(optimal_keep_fraction(D, sv, Bv, dFv, Lv, etav, Cv, Tv), 1.0)
        ok &= _close(random_freeze_bound(np.full(Tv, kk / D), D, dFv, Lv, etav, Cv, sv, Bv), avg_ct.subs(sub))
    return bool(ok)


@derivation("random freeze: descent lemma with rho_t telescoped; constant rho = s(rho) x mask-then-clip bound")
def freeze_consistency(show):
    import numpy as np
    from dptheory.convergence import mask_then_clip_bound, random_freeze_bound
    dF, eta, C, L, d, sig, B = sp.symbols("DeltaF eta C L d sigma B", positive=True)
    t = sp.Symbol("t", integer=True, nonnegative=True)
    Fs, r = sp.Function("F"), sp.IndexedBase("rho")
    ok = True
    for T in (1, 2, 5):
        # F_{t+1} <= F_t - eta C ct_t + (L eta^2 C^2/2)(1 + rho_t d sigma^2/B^2), summed over t = 0..T-1
        total = sp.Sum(Fs(t) - Fs(t + 1) + L * eta ** 2 * C ** 2 / 2 * (1 + r[t] * d * sig ** 2 / B ** 2),
                       (t, 0, T - 1)).doit()
        avg_ct = sp.expand(total.subs(Fs(0), dF + Fs(T)) / (eta * C * T))
        target = sp.expand(dF / (eta * C * T) + L * eta * C / 2 * sp.Add(*[1 + r[i] * d * sig ** 2 / B ** 2
                                                                         for i in range(T)]) / T)
        ok &= sp.simplify(avg_ct - target) == 0
        if T == 2:
            show("(1/T) sum ct_t <= (T = 2)", avg_ct)
        rv = [0.25, 0.5, 1.0, 0.75, 0.5][:T]
        sub = {dF: 3, eta: sp.Rational(1, 10), C: 1, L: 2, d: 40, sig: sp.Rational(3, 2), B: 8}
        sub.update({r[i]: sp.nsimplify(rv[i]) for i in range(T)})
        ok &= _close(random_freeze_bound(np.array(rv), 40, 3.0, 2.0, 0.1, 1.0, 1.5, 8), avg_ct.subs(sub))
    lhs = random_freeze_bound(np.full(200, 0.25), 40, 3.0, 2.0, 0.1, 1.0, 1.5, 8)
    for spread, s in (("worst_case", 0.25), ("spread_out", 0.5)):
        ok &= _close(lhs, s * mask_then_clip_bound(10, 40, 3.0, 2.0, 0.1, 1.0, 200, 1.5, 8, spread=spread))
    return bool(ok)


@derivation("error feedback (Karimireddy et al. 2019, Thm II): (2 DeltaF + L s^2)/sqrt(T+1) "
            "+ 4 L^2 s^2 (1-delta)/(delta^2 (T+1))")
def error_feedback_descent(show):
    from dptheory.convergence import error_feedback_bound
    gam, L, s2, dl, dF = sp.symbols("gamma L s2 delta DeltaF", positive=True)
    x, e, g, Q = sp.symbols("x e g Q")
    ok = True
    # (1) EF-SGD: p = gamma g + e, x+ = x - Q(p), e+ = p - Q(p); the virtual iterate x - e is SGD
    p_ = gam * g + e
    virt = sp.simplify((x - Q) - (p_ - Q) - ((x - e) - gam * g))
    show("(x+ - e+) - (x - e - gamma g)", virt)
    ok &= virt == 0
    # (2) Young: -<a, b> = (|a - b|^2 - |a|^2 - |b|^2)/2 <= (|a - b|^2 - |b|^2)/2 (a = grad f(x - e), b = grad f(x))
    a1, a2, b1, b2 = sp.symbols("a1 a2 b1 b2", real=True)
    young_gap = sp.expand(-(a1 * b1 + a2 * b2) - (((a1 - b1) ** 2 + (a2 - b2) ** 2) - (b1 ** 2 + b2 ** 2)) / 2)
    show("-<a,b> - (|a-b|^2 - |b|^2)/2", young_gap)
    ok &= sp.simplify(young_gap + (a1 ** 2 + a2 ** 2) / 2) == 0           # = -|a|^2/2 <= 0
    # (3) error recursion: ||e+||^2 <= (1-delta)||e + gamma g||^2 <= (1-delta)((1+beta)E + (1+1/beta) gamma^2 s2)
    beta, u, w = sp.symbols("beta u w", positive=True)
    ok &= sp.simplify((1 + beta) * u ** 2 + (1 + 1 / beta) * w ** 2 - (u + w) ** 2
                      - (sp.sqrt(beta) * u - w / sp.sqrt(beta)) ** 2) == 0  # ||a+b||^2 <= (1+beta)||a||^2 + (1+1/beta)||b||^2
    bet = dl / (2 * (1 - dl))
    contr = sp.simplify((1 - dl) * (1 + bet))
    gain = sp.simplify((1 - dl) * (1 + 1 / bet))
    show("(1-delta)(1+beta), beta = delta/(2(1-delta))", contr)
    ok &= sp.simplify(contr - (1 - dl / 2)) == 0
    ok &= sp.simplify(gain - 2 * (1 - dl) / dl + (1 - dl)) == 0            # gain = 2(1-delta)/delta - (1-delta)
    c = 2 * (1 - dl) * gam ** 2 * s2 / dl
    i = sp.Symbol("i", integer=True, nonnegative=True)
    geo = sp.summation((1 - dl / 2) ** i, (i, 0, sp.oo))               # Piecewise: converges for 0 < delta < 4
    geo = geo.args[0][0] if isinstance(geo, sp.Piecewise) else geo
    Estar = sp.simplify(c * geo)                                        # E_t <= sum_{i<t} (1 - delta/2)^i c <= E*
    show("E* = sum_i (1 - delta/2)^i c", Estar)
    ok &= sp.simplify(Estar - 4 * (1 - dl) * gam ** 2 * s2 / dl ** 2) == 0
    ok &= sp.simplify((1 - dl / 2) * Estar + c - Estar) == 0               # E_t <= E* => E_{t+1} <= E*; E_0 = 0
    # (4) descent lemma at the virtual iterate: f_{t+1} <= f_t - (gamma/2) G_t + (gamma L^2/2) E* + L gamma^2 s2/2,
    #     i.e. (gamma/2) G_t <= f_t - f_{t+1} + K; summed over t = 0..T, f_0 - f_{T+1} <= DeltaF
    t, T = sp.symbols("t T", integer=True, nonnegative=True)
    Fs = sp.Function("f")
    Kc = gam * L ** 2 / 2 * Estar + L * gam ** 2 * s2 / 2
    total = sp.Sum(Fs(t) - Fs(t + 1) + Kc, (t, 0, T)).doit()
    show("(gamma/2) sum_{t<=T} G_t <=", total)
    avg = sp.simplify(2 * total.subs(Fs(0), dF + Fs(T + 1)) / (gam * (T + 1)))
    show("(1/(T+1)) sum G_t <=", avg)
    ok &= sp.simplify(avg - (2 * dF / (gam * (T + 1)) + L * gam * s2 + 4 * L ** 2 * gam ** 2 * s2 * (1 - dl) / dl ** 2)) == 0
    final = sp.simplify(avg.subs(gam, 1 / sp.sqrt(T + 1)))
    target = (2 * dF + L * s2) / sp.sqrt(T + 1) + 4 * L ** 2 * s2 * (1 - dl) / (dl ** 2 * (T + 1))
    show("gamma = 1/sqrt(T+1)", final)
    ok &= sp.simplify(final - target) == 0
    old = (4 * dF + L * s2) / (2 * sp.sqrt(T + 1)) + 4 * L ** 2 * s2 * (1 - dl) / (dl ** 2 * (T + 1))
    show("derived - formerly recalled", sp.simplify(target - old))
    ok &= sp.simplify(target - old - L * s2 / (2 * sp.sqrt(T + 1))) == 0
    for pt in ((1, 1, 99, 2, 1), (2.5, 0.3, 400, 7.0, 0.25), (0.0, 3.0, 0, 1.0, 0.9)):
        sub = {dF: pt[0], L: pt[1], T: pt[2], s2: pt[3], dl: pt[4]}
        ok &= _close(error_feedback_bound(*pt), target.subs(sub))
    return bool(ok)
