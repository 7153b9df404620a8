"""Derivations behind :mod:`dptheory.convergence` (docs/theory.md §3).

Every bound is reached the same way: a one-step inequality (the distance expansion for convex
problems, the descent lemma for smooth ones) with the expectation over the noise and over the
random-k mask taken exactly (sums over all masks), then a telescoping sum
(:func:`proofs.common.telescoped_average`) or a recursion with its base case.
"""
from __future__ import annotations

import numpy as np
import sympy as sp

from . import derivation
from .common import check_points, mask_average, telescoped_average

_N = 3                                           # dimension of the symbolic vectors of the mask sums
_V = sp.symbols(f"v0:{_N}", real=True)           # a vector
_W = sp.symbols(f"w0:{_N}", real=True)           # another vector


def _close(a, b, rel=1e-12):
    """``|a - b| <= rel max(1, |b|)`` in floating point."""
    return abs(float(a) - float(b)) <= rel * max(1.0, abs(float(b)))


def _dot(a, b):
    return sp.Add(*[ai * bi for ai, bi in zip(a, b)])


def _masked(m, v):
    return [vi if i in m else 0 for i, vi in enumerate(v)]


def _mask_moments(show=None):
    r"""``E_m <m*v, w> = (k/d)<v, w>`` and ``E_m ||m*v||^2 = (k/d)||v||^2`` by summing over all masks.

    Checked for every ``k`` at ``d = 3`` with symbolic vectors; returns the common factor, a
    function of ``k`` (``k/d`` with ``d = 3``) verified for each.
    """
    ok = True
    for k in range(1, _N + 1):
        inner = sp.expand(mask_average(_N, k, lambda m: _dot(_masked(m, _V), _W)))
        sq = sp.expand(mask_average(_N, k, lambda m: _dot(_masked(m, _V), _masked(m, _V))))
        ok &= sp.expand(inner - sp.Rational(k, _N) * _dot(_V, _W)) == 0
        ok &= sp.expand(sq - sp.Rational(k, _N) * _dot(_V, _V)) == 0
    if show:
        show("E_m <m*v, w> and E_m ||m*v||^2 over all masks (d = 3, k = 1..3), divided by k/d",
             sp.Tuple(_dot(_V, _W), _dot(_V, _V)))
    return bool(ok)


def _distance_step(show=None):
    r"""``||x - eta g - x*||^2 = ||x - x*||^2 - 2 eta <g, x - x*> + eta^2 ||g||^2`` (expanded, d = 3)."""
    eta = sp.Symbol("eta", positive=True)
    x = sp.symbols(f"x0:{_N}", real=True)
    xs = sp.symbols(f"y0:{_N}", real=True)
    g = _V
    lhs = sp.expand(sum((x[i] - eta * g[i] - xs[i]) ** 2 for i in range(_N)))
    rhs = sp.expand(sum((x[i] - xs[i]) ** 2 for i in range(_N)) - 2 * eta * _dot(g, [x[i] - xs[i] for i in range(_N)])
                    + eta ** 2 * _dot(g, g))
    if show:
        show("||x - eta g - x*||^2 - (||x - x*||^2 - 2 eta <g, x - x*> + eta^2 ||g||^2)", lhs - rhs)
    return lhs - rhs == 0


def _convex_bound(show=None, random_k=False):
    r"""The convex bound from the distance step, convexity and a telescoping sum (Bubeck 2015, Thm 6.1).

    Convexity gives ``F(x_t) - F* <= <grad F(x_t), x_t - x*>`` and ``E<g_t, .> = <grad F, .>``;
    with ``E||g_t||^2 <= G^2 + N``, ``2 eta (F(x_t) - F*) <= D_t - D_{t+1} + eta^2 (G^2 + N)``,
    summed with ``D_0 <= R^2``; Jensen moves the average inside F. Random-k: both the inner
    product and the second moment carry the mask factor ``k/d`` (:func:`_mask_moments`).
    """
    R, G, N, T, eta, d, k = sp.symbols("R G N T eta d k", positive=True)
    rho = k / d if random_k else 1
    _, avg = telescoped_average(2 * eta * rho, eta ** 2 * rho * (G ** 2 + N), T, R ** 2)
    if show:
        show("(1/T) sum_t (F(x_t) - F*) <=" + (" (random-k)" if random_k else ""), sp.expand(avg))
    return (R, G, N, T, eta, d, k), sp.expand(avg)


@derivation("convex: eta* = R/sqrt(T(G^2+N)), value R sqrt(G^2+N)/sqrt(T); random-k R^2 -> (d/k)R^2",
            covers=("convergence.convex_bound", "convergence.convex_optimal_lr", "convergence.convex_optimal_bound",
                    "convergence.convex_random_k_bound", "convergence.convex_random_k_optimal_lr",
                    "convergence.convex_random_k_optimal_bound"))
def convex_opt(show):
    """Telescoped distance step (dense and random-k), then the minimising step size; the six functions (rtol 1e-12)."""
    from dptheory.convergence import (
        convex_bound,
        convex_optimal_bound,
        convex_optimal_lr,
        convex_random_k_bound,
        convex_random_k_optimal_bound,
        convex_random_k_optimal_lr,
    )
    ok = _distance_step(show) and _mask_moments(show)
    (R, G, N, T, eta, d, k), f = _convex_bound(show)
    _, fk = _convex_bound(show, random_k=True)
    ok &= sp.simplify(fk - f.subs(R, sp.sqrt(d / k) * R)) == 0          # R^2 -> (d/k) R^2
    sol = sp.solve(sp.diff(f, eta), eta)
    show("stationary eta", sp.Tuple(*sol))
    ok &= len(sol) == 1 and bool(sp.diff(f, eta, 2).subs(eta, sol[0]).is_positive)
    val = sp.simplify(f.subs(eta, sol[0]))
    show("value", val)
    solk = sp.solve(sp.diff(fk, eta), eta)[0]
    valk = sp.simplify(fk.subs(eta, solk))
    show("random-k value / dense value", sp.simplify(valk / val))
    ok &= sp.simplify(valk / val - sp.sqrt(d / k)) == 0
    pairs = []
    for pt in ((1, 1, 2, 100, 10, 3), (3, sp.Rational(1, 2), 5, 7, 50, 50), (sp.Rational(1, 4), 2, 0, 1000, 8, 1)):
        sub = dict(zip((R, G, N, T, d, k), pt))
        Rv, Gv, Nv, Tv, dv, kv = (float(v) for v in pt)
        Tv, dv, kv = int(Tv), int(dv), int(kv)
        pairs += [(convex_optimal_lr(Rv, Gv, Tv, Nv), sol[0].subs(sub)),
                  (convex_optimal_bound(Rv, Gv, Tv, Nv), val.subs(sub)),
                  (convex_bound(Rv, Gv, Tv, 0.25, Nv), f.subs(sub | {eta: sp.Rational(1, 4)})),
                  (convex_random_k_bound(Rv, Gv, Tv, 0.25, Nv, kv, dv), fk.subs(sub | {eta: sp.Rational(1, 4)})),
                  (convex_random_k_optimal_lr(Rv, Gv, Tv, Nv, kv, dv), solk.subs(sub)),
                  (convex_random_k_optimal_bound(Rv, Gv, Tv, Nv, kv, dv), valk.subs(sub))]
    ok &= check_points(show, "convex_* (six functions)", pairs, rtol=1e-12)
    return bool(ok)


def _descent_identity(show=None):
    r"""``-eta <a, a + b> + (eta/2)||a + b||^2 = -(eta/2)||a||^2 + (eta/2)||b||^2`` (d = 3, expanded)."""
    eta = sp.Symbol("eta", positive=True)
    lhs = -eta * _dot(_V, [v + w for v, w in zip(_V, _W)]) + eta / 2 * _dot(*[[v + w for v, w in zip(_V, _W)]] * 2)
    rhs = -eta / 2 * _dot(_V, _V) + eta / 2 * _dot(_W, _W)
    if show:
        show("-eta<a, a+b> + (eta/2)||a+b||^2 + (eta/2)||a||^2 - (eta/2)||b||^2", sp.expand(lhs - rhs))
    return sp.expand(lhs - rhs) == 0


@derivation("non-convex: eta* = sqrt(2 DeltaF/(T L s2)), value 2 sqrt(2 DeltaF L s2/T); random-k DeltaF -> (d/k)DeltaF",
            covers=("convergence.nonconvex_biased_bound", "convergence.nonconvex_biased_optimal_lr",
                    "convergence.nonconvex_random_k_bound", "convergence.nonconvex_random_k_optimal_lr",
                    "convergence.nonconvex_random_k_optimal_bound"))
def nonconvex_opt(show):
    r"""Descent lemma with a biased, noisy gradient (and with a random-k mask), telescoped; the optimal step on (0, 1/L].

    L-smooth F: ``F(x - eta g) <= F - eta <grad F, g> + (L eta^2/2)||g||^2``. With
    ``E g = a + b`` (``a = grad F``, bias ``b``), ``E||g||^2 = ||a + b||^2 + sigma_bar^2`` and
    ``L eta <= 1`` (so ``L eta^2/2 <= eta/2``), :func:`_descent_identity` leaves
    ``(eta/2)||a||^2 <= F_t - F_{t+1} + (eta/2)||b_t||^2 + L eta^2 sigma_bar^2/2`` (cf. Ajalloeian &
    Stich 2020, Thm 4). Random-k (clip inactive, variance ``V/B + N``): the masked step has both
    terms times ``k/d``. The bound is convex in eta, so its minimiser on ``(0, 1/L]`` is
    ``min(1/L, eta_0)``. Then the five functions (rtol 1e-12).
    """
    from dptheory.convergence import (
        nonconvex_biased_bound,
        nonconvex_biased_optimal_lr,
        nonconvex_random_k_bound,
        nonconvex_random_k_optimal_bound,
        nonconvex_random_k_optimal_lr,
    )
    dF, L, T, s2, eta, d, k, V, B, N, b2 = sp.symbols("DeltaF L T sigma2 eta d k V B N b2", positive=True)
    ok = _descent_identity(show) and _mask_moments()
    _, f = telescoped_average(eta / 2, eta / 2 * b2 + L * eta ** 2 * s2 / 2, T, dF)
    f = sp.expand(f)
    show("(1/T) sum ||grad F||^2 <=  (b2 = mean ||b_t||^2)", f)
    g2 = sp.Symbol("g2", positive=True)               # ||a||^2; random-k one step, then L eta <= 1
    step_k = -eta * k / d * g2 + L * eta ** 2 / 2 * k / d * (g2 + V / B + N)
    relaxed = step_k - (L * eta ** 2 - eta) / 2 * k / d * g2    # L eta^2 <= eta on the ||grad F||^2 term
    show("random-k: E F_{t+1} - F_t <=", sp.expand(relaxed))
    ok &= sp.simplify(relaxed - (-(eta / 2) * k / d * g2 + L * eta ** 2 / 2 * k / d * (V / B + N))) == 0
    _, fk = telescoped_average(eta / 2 * k / d, L * eta ** 2 / 2 * k / d * (V / B + N), T, dF)
    fk = sp.expand(fk)
    show("random-k: (1/T) sum ||grad F||^2 <=", fk)
    f0 = f.subs(b2, 0)
    ok &= sp.simplify(fk - f0.subs({dF: d / k * dF, s2: V / B + N})) == 0
    ok &= bool(sp.simplify(sp.diff(f0, eta, 2)).is_positive)                 # convex in eta
    sol = sp.solve(sp.diff(f0, eta), eta)
    ok &= len(sol) == 1
    val = sp.simplify(f0.subs(eta, sol[0]))
    show("eta_0", sol[0]); show("value at eta_0", val)
    solk = sp.solve(sp.diff(fk, eta), eta)[0]
    valk = sp.simplify(fk.subs(eta, solk))
    show("random-k value at its eta_0", valk)
    lr = lambda sub: min(1 / sub[L], sol[0].subs(sub))
    pairs = []
    for pt in ((1, 1, 1000, 3), (2, 5, 10 ** 4, sp.Rational(1, 2)), (100, 1, 10, sp.Rational(1, 100))):
        sub = dict(zip((dF, L, T, s2), pt))
        fl = [float(v) for v in pt]
        pairs += [(nonconvex_biased_optimal_lr(fl[0], fl[1], int(fl[2]), fl[3]), lr(sub)),
                  (nonconvex_biased_bound(fl[0], fl[1], int(fl[2]), 0.1 / fl[1], fl[3], 0.3),
                   f.subs(sub | {eta: sp.Rational(1, 10) / sub[L], b2: sp.Rational(3, 10)}))]
    for pt in ((1, 1, 10 ** 4, 10, 100, 1, 8, 2), (5, 2, 50, 3, 7, 2, 4, 1)):
        sub = dict(zip((dF, L, T, k, d, V, B, N), pt))
        eta_k = min(1 / sub[L], solk.subs(sub))
        pairs += [(nonconvex_random_k_optimal_lr(*pt), eta_k),
                  (nonconvex_random_k_optimal_bound(*pt), fk.subs(sub | {eta: eta_k})),
                  (nonconvex_random_k_bound(*pt[:3], 0.25 / pt[1], *pt[3:]), fk.subs(sub | {eta: sp.Rational(1, 4) / sub[L]}))]
    sub = {dF: 1, L: 1, T: 10 ** 4, d: 100, k: 10, V: 1, B: 8, N: 2}
    ok &= sp.simplify(solk.subs(sub) - 1).is_negative                       # the free optimum is feasible here
    pairs.append((nonconvex_random_k_optimal_bound(1, 1, 10 ** 4, 10, 100, 1, 8, 2), valk.subs(sub)))
    ok &= check_points(show, "nonconvex_* (five functions)", pairs, rtol=1e-12)
    return bool(ok)


def _strong_recursion(show=None):
    r"""``D_{t+1} <= (1 - 2 eta lambda) D_t + eta^2 G^2`` at ``eta = 1/(lambda t)``, and its solution by induction.

    Strong convexity: ``<grad F(x), x - x*> >= lambda ||x - x*||^2`` (add the two strong-convexity
    inequalities at x and x*). Base case ``D_1 <= G^2/lambda^2`` (``lambda ||x - x*|| <= ||grad F(x)|| <= G``).
    Induction for ``D_t <= c G^2/(lambda^2 t)``: the step ``t -> t+1`` (``t >= 2``) leaves the gap
    ``c/(t+1) - ((1 - 2/t) c/t + 1/t^2)``; at ``t = 1`` the coefficient ``1 - 2`` is negative, so
    ``D_2 <= G^2/lambda^2``, which needs ``c >= 2`` (Rakhlin, Shamir & Sridharan 2012, Lemma 1, use ``c = 4``).
    """
    t, c = sp.symbols("t c", positive=True)
    gap = sp.factor(sp.simplify(c / (t + 1) - ((1 - 2 / t) * c / t + 1 / t ** 2)))
    if show:
        show("c/(t+1) - [(1 - 2/t) c/t + 1/t^2]  (units G^2/lambda^2)", gap)
    ok = sp.simplify(gap - ((c - 1) * t + 2 * c - 1) / (t ** 2 * (t + 1))) == 0
    return ok, gap


@derivation("strongly convex: 4G^2/(lambda^2 t) solves the RSS recursion (1 - 2/t) D_t + G^2/(lambda^2 t^2)",
            covers=("convergence.strongly_convex_last_iterate_bound", "convergence.strongly_convex_random_k_bound"))
def strongly_convex_recursion(show):
    """The recursion from the distance step, the induction (any c >= 2 works, so 4 is 2x loose), the random-k
    variant with eta_t = d/(k lambda t); the recursion iterated to t = 300, then the two functions (rtol 1e-13)."""
    from dptheory.convergence import (
        strongly_convex_last_iterate_bound,
        strongly_convex_random_k_bound,
    )
    ok = _distance_step() and _mask_moments()
    lam, eta, D, G2, k, d = sp.symbols("lambda eta D G2 k d", positive=True)
    # E D_{t+1} = D - 2 eta <grad F, x - x*> + eta^2 E||g||^2 with <grad F, x - x*> >= lambda D
    rec = D - 2 * eta * lam * D + eta ** 2 * G2
    tt = sp.Symbol("t", positive=True)
    show("D_{t+1} <= at eta = 1/(lambda t)", sp.expand(rec.subs(eta, 1 / (lam * tt))))
    # random-k: masked step, factors k/d on both terms; eta = d/(k lambda t) restores the recursion with G2 d/k
    rec_k = D - 2 * eta * k / d * lam * D + eta ** 2 * k / d * G2
    ok &= sp.simplify(rec_k.subs(eta, d / (k * lam * tt)) - rec.subs(eta, 1 / (lam * tt)).subs(G2, d / k * G2)) == 0
    ok_ind, gap = _strong_recursion(show)
    ok &= ok_ind and bool(gap.subs(sp.Symbol("c", positive=True), 2).subs(tt, 2) > 0)
    # the recursion itself, iterated from its base case with equality (the worst case), stays below 2 G^2/(lambda^2 t)
    Dt, worst = 1.0, 0.0                                    # units G^2/lambda^2
    for t in range(1, 300):
        worst = max(worst, Dt * t / 2)
        Dt = max(0.0, (1 - 2 / t) * Dt) + 1 / t ** 2
    show("max_t D_t / (2 G^2/(lambda^2 t)) along the worst-case recursion, t < 300", sp.Float(worst, 4))
    ok &= worst <= 1.0
    pairs = [(strongly_convex_last_iterate_bound(2, 3, 5, 1.5), 4 * (4 + 1.5) / (9 * 5)),
             (strongly_convex_last_iterate_bound(0.5, 0.1, 1000, 0.0), 4 * 0.25 / (0.01 * 1000)),
             (strongly_convex_random_k_bound(2, 3, 5, 1.5, 4, 12), 12 / 4 * 4 * (4 + 1.5) / (9 * 5)),
             (strongly_convex_random_k_bound(1, 1, 1, 0.0, 1, 1), 4.0)]
    ok &= check_points(show, "strongly_convex_last_iterate_bound, strongly_convex_random_k_bound", pairs, rtol=1e-13)
    return bool(ok)


@derivation("strongly convex, weighted average (Lacoste-Julien, Schmidt & Bach 2012): 2 G^2/(lambda (T+1))",
            covers=("convergence.strongly_convex_weighted_average_bound",))
def strongly_convex_weighted_average(show):
    r"""Weights ``t``, step ``eta_t = 2/(lambda (t+1))``: a weighted telescoping sum.

    Distance step with ``<grad F(x), x - x*> >= F(x) - F* + (lambda/2) D`` (strong convexity):
    ``F_t - F* <= (1/(2 eta_t) - lambda/2) D_t - D_{t+1}/(2 eta_t) + eta_t G^2/2``. Times ``t``
    the D terms become ``(lambda/4)[(t-1) t D_t - t (t+1) D_{t+1}]``, which telescope to
    ``-(lambda/4) T (T+1) D_{T+1} <= 0``; ``t/(t+1) <= 1``; divide by ``sum t = T(T+1)/2``
    and apply Jensen. Then the function (rtol 1e-13).
    """
    from dptheory.convergence import strongly_convex_weighted_average_bound
    lam, G2 = sp.symbols("lambda G2", positive=True)
    t = sp.Symbol("t", integer=True, positive=True)
    T = sp.Symbol("T", integer=True, positive=True)
    Dfun = sp.Function("D")
    eta = 2 / (lam * (t + 1))
    rhs = (1 / (2 * eta) - lam / 2) * Dfun(t) - Dfun(t + 1) / (2 * eta) + eta * G2 / 2
    weighted = sp.expand(t * rhs)
    show("t (F(x_t) - F*) <=", weighted)
    A = lambda u: lam / 4 * (u - 1) * u * Dfun(u)       # the D terms are A(t) - A(t+1)
    ok = sp.simplify(weighted - (A(t) - A(t + 1)) - t * G2 / (lam * (t + 1))) == 0
    Af = sp.Function("A")
    total = sp.Sum(Af(t) - Af(t + 1), (t, 1, T)).doit()
    show("sum_{t=1}^T (A(t) - A(t+1))", total)
    total = total.subs({Af(1): A(1), Af(T + 1): A(T + 1)})
    show("sum_{t=1}^T of the D terms (A(1) = 0)", sp.simplify(total))
    ok &= sp.simplify(total + lam / 4 * T * (T + 1) * Dfun(T + 1)) == 0
    bound = sp.simplify((T * G2 / lam) / (T * (T + 1) / 2))       # sum t G2/(lam(t+1)) <= T G2/lam
    show("weighted average of F(x_t) - F* <=", bound)
    ok &= sp.simplify(bound - 2 * G2 / (lam * (T + 1))) == 0
    pairs = [(strongly_convex_weighted_average_bound(Gv, lv, Tv, Nv), bound.subs({G2: Gv ** 2 + Nv, lam: lv, T: Tv}))
             for Gv, lv, Tv, Nv in ((1, 1, 1, 0), (2, 0.5, 99, 3), (0.3, 4, 10 ** 5, 0.01))]
    ok &= check_points(show, "strongly_convex_weighted_average_bound", pairs, rtol=1e-13)
    return bool(ok)


@derivation("random-k coordinate descent: E F+ <= F - (k/d)||g||^2/(2L); PL factor 1 - k mu/(d L)",
            covers=("convergence.random_k_cd_pl_bound", "convergence.random_k_cd_nonconvex_bound",
                    "convergence.top_k_gd_bound"))
def coordinate_descent(show):
    r"""Descent lemma for the masked exact gradient at step 1/L (mask sums); PL recursion solved; telescoped.

    ``F(x - (1/L) m*g) <= F - (1/L)<g, m*g> + (1/(2L))||m*g||^2``; both expectations are
    ``(k/d)||g||^2``. PL ``||g||^2 >= 2 mu (F - F*)`` gives ``Delta_{t+1} <= (1 - k mu/(d L)) Delta_t``,
    solved with ``rsolve`` from ``Delta_0 = DeltaF``. Top-k: ``||top_k g||^2 >= (k/d)||g||^2``
    deterministically (the maximum over masks is at least their average, ``proofs.noise_signal.top_k_captured``),
    so the same telescoping bounds ``min_t ||g_t||^2``. Then the three functions (rtol 1e-13).
    """
    from dptheory.convergence import (
        random_k_cd_nonconvex_bound,
        random_k_cd_pl_bound,
        top_k_gd_bound,
    )
    L, g2, k, d, mu, dF = sp.symbols("L g2 k d mu DeltaF", positive=True)
    T = sp.Symbol("T", integer=True, positive=True)
    ok = _mask_moments(show)
    for kk in range(1, _N + 1):   # the masked step's expected change, exactly over the masks (d = 3)
        ch = mask_average(_N, kk, lambda m: -_dot(_V, _masked(m, _V)) / L + _dot(_masked(m, _V), _masked(m, _V)) / (2 * L))
        ok &= sp.simplify(ch + sp.Rational(kk, _N) * _dot(_V, _V) / (2 * L)) == 0
    dec = -k / d * g2 / (2 * L)
    show("expected one-step change", dec)
    n = sp.Symbol("n", integer=True, nonnegative=True)
    Dl = sp.Function("Delta")
    rate = 1 - k * mu / (d * L)
    ok &= sp.simplify((1 + dec.subs(g2, 2 * mu) ) - rate) == 0           # Delta + dec at g2 = 2 mu Delta, per Delta
    sol = sp.rsolve(Dl(n + 1) - rate * Dl(n), Dl(n), {Dl(0): dF})
    show("Delta_T (PL recursion solved)", sol.subs(n, T))
    ok &= sp.simplify(sol - rate ** n * dF) == 0
    _, avg = telescoped_average(k / (2 * d * L), 0, T, dF)
    show("average squared gradient", avg)
    ok &= sp.simplify(avg - 2 * d * L * dF / (k * T)) == 0
    pairs = [(random_k_cd_nonconvex_bound(3, 12, 2, 50, 5), avg.subs({k: 3, d: 12, L: 2, T: 50, dF: 5})),
             (top_k_gd_bound(3, 12, 2, 50, 5), avg.subs({k: 3, d: 12, L: 2, T: 50, dF: 5})),
             (random_k_cd_pl_bound(3, 12, 1, 2, 10, 5), sol.subs({n: 10}).subs({k: 3, d: 12, mu: 1, L: 2, dF: 5})),
             (random_k_cd_pl_bound(1, 1, 0.5, 0.5, 3, 2), 0.0 + sol.subs({n: 3}).subs({k: 1, d: 1, mu: 1, L: 1, dF: 2}))]
    ok &= check_points(show, "random_k_cd_*, top_k_gd_bound", pairs, rtol=1e-13, atol=1e-300)
    return bool(ok)


@derivation("DP-SGD gradient variance: E||mean of B clipped + noise - mean||^2 <= C^2/B + N",
            covers=("convergence.dp_gradient_variance",))
def dp_gradient_variance_entry(show):
    r"""Variance of a mean of B independent clipped gradients plus independent noise, from the double sum.

    ``E||(1/B) sum_i (u_i - mu)||^2 = (1/B^2) sum_{i,j} E<u_i - mu, u_j - mu>``; the cross terms
    vanish by independence (``KroneckerDelta``), each diagonal term is ``v <= E||u||^2 <= C^2``; the
    noise is independent of the gradients, so its energy ``N`` adds. Then the function (rtol 1e-13).
    """
    from dptheory.convergence import dp_gradient_variance
    i, j = sp.symbols("i j", integer=True, positive=True)
    B = sp.Symbol("B", integer=True, positive=True)
    v, N, C = sp.symbols("v N C", positive=True)
    inner = sp.Sum(v * sp.KroneckerDelta(i, j), (j, 1, B)).doit()   # Piecewise: v when 1 <= i <= B
    inner = inner.args[0][0] if isinstance(inner, sp.Piecewise) else inner   # the outer sum has 1 <= i <= B
    var_mean = sp.simplify(sp.Sum(inner, (i, 1, B)).doit() / B ** 2)
    show("(1/B^2) sum_{i,j} v delta_ij", var_mean)
    ok = sp.simplify(var_mean - v / B) == 0
    total = var_mean.subs(v, C ** 2) + N
    show("sigma_bar^2 <=", total)
    pairs = [(dp_gradient_variance(cv, bv, dv, sv), total.subs({C: cv, B: bv, N: dv * sv ** 2 * cv ** 2 / bv ** 2}))
             for cv, bv, dv, sv in ((1.0, 8, 10, 1.0), (0.5, 256, 4810, 1.1), (2.0, 1, 1, 0.0))]
    ok &= check_points(show, "dp_gradient_variance", pairs, rtol=1e-13)
    return bool(ok)


@derivation("mask then clip: spread s = rho (1-sparse), sqrt(rho) (sign vector) by sums over masks; "
            "c_bar <= (a + b rho)/s; worst case rho* = 1",
            covers=("convergence.mask_then_clip_bound", "noise_signal.tradeoff_coefficients",
                    "noise_signal.optimal_keep_fraction", "convergence.random_freeze_bound"))
def mask_then_clip_spread(show):
    """Spread factors by sums over masks, the telescoped masked descent lemma, the minimiser over rho.

    Then ``tradeoff_coefficients``, ``mask_then_clip_bound``, ``optimal_keep_fraction`` (all three
    spreads) and ``random_freeze_bound`` at constant rho (rtol 1e-12).
    """
    from dptheory.convergence import mask_then_clip_bound, random_freeze_bound
    from dptheory.noise_signal import (
        optimal_keep_fraction,
        sparsification_helps,
        tradeoff_coefficients,
    )
    C = sp.Symbol("C", positive=True)
    ok = True
    # (1) spread factor s = E_m <grad F, clip_C(m * g)> / (C <grad F, g/||g||>), all clipped, by summing
    #     over every mask (d = 5, k = 1..4); f = grad F symbolic, g 1-sparse or a sign vector
    d = 5
    f = sp.symbols(f"f0:{d}", positive=True)
    for k in range(1, d):
        rho = sp.Rational(k, d)
        # 1-sparse g = gam e_0: clip(m * g) = C e_0 if 0 in m, else 0
        s1 = sp.simplify(mask_average(d, k, lambda m: C * f[0] if 0 in m else 0) / (C * f[0]))
        # sign vector g = gam (1, -1, 1, -1, 1): ||m * g|| = gam sqrt(k), clip = C m * g/(gam sqrt(k))
        sg = [(-1) ** i for i in range(d)]
        dense = C * sp.Add(*[f[i] * sg[i] for i in range(d)]) / sp.sqrt(d)
        masked = mask_average(d, k, lambda m, sg=sg, k=k: C * sp.Add(*[f[i] * sg[i] for i in m]) / sp.sqrt(k))
        s2 = sp.simplify(masked / dense)
        ok &= sp.simplify(s1 - rho) == 0 and sp.simplify(s2 - sp.sqrt(rho)) == 0
        # worst-case lemma: E_m (m * g) = rho g for any g, so with <grad F, m*g> >= 0 and ||m*g|| <= ||g||,
        # E_m <f, m*g>/||m*g|| >= E_m <f, m*g>/||g|| = rho <f, g>/||g||
        g = sp.symbols(f"g0:{d}")
        for j in range(d):
            ok &= sp.simplify(mask_average(d, k, lambda m, g=g, j=j: g[j] if j in m else 0) - rho * g[j]) == 0
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


@derivation("random freeze: descent lemma with rho_t telescoped; constant rho = s(rho) x mask-then-clip bound",
            covers=("convergence.random_freeze_bound",))
def freeze_consistency(show):
    """The masked descent lemma with a keep fraction rho_t per step, summed for T = 1, 2, 5; ``random_freeze_bound``."""
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
            "+ 4 L^2 s^2 (1-delta)/(delta^2 (T+1))", covers=("convergence.error_feedback_bound",))
def error_feedback_descent(show):
    """Virtual iterate, Young, the geometric error recursion and the telescoped descent lemma; ``error_feedback_bound``."""
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
