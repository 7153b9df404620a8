"""Derivations behind :mod:`dptheory.noise_signal` (docs/theory.md §2, §3.3 trade-off, §3.4 compressors).

Conventions: the update is ``g_bar + s z`` with ``z ~ N(0, I_d)``, ``s = sigma C / B``; a random-k
mask ``m`` is the indicator of a uniformly random ``k``-subset of the ``d`` coordinates.
"""
from __future__ import annotations

import itertools

import numpy as np
import sympy as sp

from . import derivation
from .common import check_points, mask_average, std_normal

_PTS = [(3, 1), (7, 2), (10, 10), (12, 5)]   # (d, k) test points


def _inclusion_probability():
    """P(i in S) for a uniform k-subset S of d coordinates: C(d-1, k-1)/C(d, k) (subsets containing i / all)."""
    d, k = sp.symbols("d k", positive=True, integer=True)
    return d, k, sp.simplify(sp.combsimp(sp.binomial(d - 1, k - 1) / sp.binomial(d, k)))


def _gaussian_moments():
    """E z^2 and E z^4 of the standard normal from the density."""
    z, phi = std_normal()
    return (sp.integrate(z ** 2 * phi, (z, -sp.oo, sp.oo)), sp.integrate(z ** 4 * phi, (z, -sp.oo, sp.oo)))


@derivation("random-k: P(i in S) = k/d and E||m x||^2 = (k/d)||x||^2",
            covers=("noise_signal.signal_random_k", "noise_signal.contraction_random_k"))
def random_k_signal(show):
    """Counting subsets, and an exact sum over all k-subsets (d = 5); then the functions (rtol 1e-14)."""
    from dptheory.noise_signal import contraction_random_k, signal_random_k
    d, k, p = _inclusion_probability()
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
    pairs = [(signal_random_k(kk, dd, 7.0), 7 * p.subs({d: dd, k: kk})) for dd, kk in _PTS]
    ok &= check_points(show, "signal_random_k", pairs, rtol=1e-14)
    pairs = [(contraction_random_k(kk, dd), 1 - p.subs({d: dd, k: kk})) for dd, kk in _PTS]
    ok &= check_points(show, "contraction_random_k", pairs, rtol=1e-14, atol=1e-15)
    return bool(ok)


@derivation("rescaled random-k Q = (d/k) m x: E Q = x, E||Q||^2 = (d/k)||x||^2, noise (d^2/k) s^2",
            covers=("noise_signal.rescaled_random_k_moments", "noise_signal.noise_energy_rescaled"))
def rescaled_moments(show):
    """Moments of Q(x) = (d/k) m * x as sums over all masks (d = 5, k = 1..5), in general from P(i in S).

    The kept noise ``(d/k) m * s z`` has energy ``(d/k)^2 s^2 sum_{i in S} z_i^2``, mean
    ``(d/k)^2 s^2 k E z^2``. Then the functions (rtol 1e-13).
    """
    from dptheory.noise_signal import noise_energy_rescaled, rescaled_random_k_moments
    n = 5
    x = sp.symbols(f"x1:{n + 1}", real=True)
    x2 = sum(xi ** 2 for xi in x)
    ok = True
    for kk in range(1, n + 1):
        c = sp.Rational(n, kk)
        mean = [sp.expand(mask_average(n, kk, lambda m, i=i, c=c: c * x[i] if i in m else 0)) for i in range(n)]
        second = sp.expand(mask_average(n, kk, lambda m, c=c: sum((c * x[i]) ** 2 for i in m)))
        var = sp.expand(mask_average(n, kk, lambda m, c=c: sum(((c if i in m else 0) * x[i] - x[i]) ** 2
                                                            for i in range(n))))
        ok &= all(sp.expand(mi - xi) == 0 for mi, xi in zip(mean, x))
        ok &= sp.expand(second - c * x2) == 0 and sp.expand(var - (c - 1) * x2) == 0
        if kk == 2:
            show("E||Q||^2 (d = 5, k = 2, all masks)", sp.factor(second))
            show("E||Q - x||^2 (d = 5, k = 2, all masks)", sp.factor(var))
    d, k, p = _inclusion_probability()
    X2, s = sp.symbols("X2 s", positive=True)
    m2, _ = _gaussian_moments()
    second_g = sp.simplify(p * (d / k) ** 2 * X2)             # sum_i P(i in S) (d/k)^2 x_i^2
    noise = sp.simplify((d / k) ** 2 * s ** 2 * k * m2)       # E sum_{i in S} z_i^2 = k E z^2
    show("E||Q||^2 in general", second_g)
    show("noise energy (d/k)^2 s^2 k E z^2", noise)
    ok &= sp.simplify(second_g - d / k * X2) == 0
    pairs_m, pairs_n = [], []
    for dd, kk in _PTS:
        mf, sec, v = rescaled_random_k_moments(kk, dd, 3.0)
        sub = {d: dd, k: kk, X2: 3}
        pairs_m += [(mf, 1), (sec, second_g.subs(sub)), (v, (second_g - X2).subs(sub))]
        pairs_n.append((noise_energy_rescaled(kk, dd, 2.0, 1.0, 4.0), noise.subs({d: dd, k: kk, s: sp.Rational(1, 2)})))
    ok &= check_points(show, "rescaled_random_k_moments", pairs_m, rtol=1e-13, atol=1e-14)
    ok &= check_points(show, "noise_energy_rescaled", pairs_n, rtol=1e-13)
    return bool(ok)


@derivation("scaled sign: ||x - (||x||_1/d) sign x||^2 = ||x||^2 - ||x||_1^2/d",
            covers=("noise_signal.scaled_sign_delta",))
def scaled_sign(show):
    """Expand the error of the scaled sign compressor; delta = 1 - error/||x||^2; ``scaled_sign_delta`` (rtol 1e-13)."""
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
    delta = sp.simplify(1 - err / sum(ai ** 2 for ai in a))   # (1 - delta)||x||^2 = error
    show("delta = 1 - error/||x||^2", sp.factor(delta))
    pairs = []
    for xv in ([3, -sp.Rational(1, 2), 2, -5], [1, 1, 1, 1], [sp.Rational(7, 3), 0, 0, sp.Rational(1, 9)]):
        sub = dict(zip(a, [abs(v) for v in xv]))
        pairs.append((scaled_sign_delta([float(v) for v in xv]), delta.subs(sub)))
    ok &= check_points(show, "scaled_sign_delta", pairs, rtol=1e-13)
    return bool(ok)


@derivation("random freeze: (1/E) sum_e (1 - r e/(E-1)) = 1 - r/2",
            covers=("noise_signal.freeze_mean_noise_energy",))
def freeze_sum(show):
    """Mean kept fraction (1/E) sum_e (1 - r_e) for the linear, cosine and step ramps, from the sums.

    Linear: ``sympy.summation``. Cosine: pairing ``e`` with ``E-1-e`` turns ``cos(pi e/(E-1))``
    into its negative, so the cosines sum to 0. Step: ``E - E//2`` epochs frozen at ``r``. Then
    ``freeze_mean_noise_energy`` in the continuum limit (rtol 1e-13).
    """
    from dptheory.noise_signal import freeze_mean_noise_energy
    e, E = sp.symbols("e E", integer=True, positive=True)
    r = sp.Symbol("r", positive=True)
    mean = sp.simplify(sp.summation(1 - r * e / (E - 1), (e, 0, E - 1)) / E)
    show("linear: mean relative noise energy", mean)
    ok = sp.simplify(mean - (1 - r / 2)) == 0
    theta = sp.pi * e / (E - 1)
    mirror = sp.pi * (E - 1 - e) / (E - 1)
    ok &= sp.simplify(mirror - (sp.pi - theta)) == 0    # the mirrored epoch's angle is pi - theta
    paired = sp.simplify(sp.cos(theta) + sp.cos(sp.pi - theta))
    show("cos(pi e/(E-1)) + cos(pi (E-1-e)/(E-1))", paired)
    ok &= paired == 0                                   # so sum_e cos(pi e/(E-1)) = 0
    cos_mean = 1 - r / 2                                # (1/E) sum_e (1 - r (1 - cos)/2) with sum cos = 0
    for EE in (2, 3, 8):                                # the pairing, checked by summing outright
        direct = sp.nsimplify(sum(1 - r * (1 - sp.cos(sp.pi * sp.Integer(j) / (EE - 1))) / 2 for j in range(EE)) / EE)
        ok &= sp.simplify(direct - cos_mean) == 0
    step_mean = lambda EE, rr: 1 - rr * sp.Rational(EE - EE // 2, EE)
    pairs = []
    for rr, EE in ((sp.Rational(9, 10), 2), (sp.Rational(1, 2), 7), (sp.Rational(3, 4), 40)):
        pairs.append((freeze_mean_noise_energy(float(rr), EE), mean.subs(r, rr)))
        pairs.append((freeze_mean_noise_energy(float(rr), EE, kind="cosine"), cos_mean.subs(r, rr)))
        pairs.append((freeze_mean_noise_energy(float(rr), EE, kind="step"), step_mean(EE, rr)))
        pairs.append((freeze_mean_noise_energy(float(rr), EE, kind="constant"), 1 - rr))
    ok &= check_points(show, "freeze_mean_noise_energy", pairs, rtol=1e-13)
    return bool(ok)


def _freeze_draw_sequences(d, counts):
    """Every sequence of frozen sets (one uniform ``n_i``-subset per draw, independent): the definition
    of random freeze with redraws, as equally likely tuples of subsets."""
    return list(itertools.product(*[list(itertools.combinations(range(d), n)) for n in counts]))


@derivation("random freeze redrawn: trainable steps U_j, mean sum L_i (1 - n_i/d), var sum L_i^2 (n_i/d)(1 - n_i/d); "
            "coverage d (1 - prod n_i/d)",
            covers=("noise_signal.freeze_draws", "noise_signal.freeze_update_counts", "noise_signal.freeze_coverage"))
def freeze_redraws(show):
    """From the definition (draw i: a uniform n_i-subset of the d coordinates, frozen for L_i steps;
    draws independent) to the moments of the trainable-step count ``U_j`` and of the coverage.

    1. Counting subsets: ``P(j in S) = C(d-1, n-1)/C(d, n) = n/d`` and
       ``P(j, l in S) = C(d-2, n-2)/C(d, n) = n (n-1)/(d (d-1))``.
    2. ``U_j = sum_i L_i (1 - F_i)`` with independent ``F_i ~ Bernoulli(q_i)``: mean and variance as
       a sum over the ``2^3`` outcomes of three draws (symbolic ``L_i``, ``q_i``).
    3. The number never updated ``X = sum_j prod_i F_ij``: ``E X = d prod q_i`` and
       ``E X^2 = d prod q_i + d (d-1) prod_i P(j, l in S_i)`` by linearity and independence.
    4. A constant rate with period ``P`` dividing ``T``: ``Var U_j = T P r (1 - r)`` by summation.
    5. Exact enumeration of ALL frozen-set sequences of three small runs (a linear ramp redrawn
       every 2 steps, 576 equally likely sequences; two constant rates, one per epoch) gives E, Var
       of ``U_0`` and of the coverage, and ``freeze_draws`` is checked against the draw rule; then
       ``freeze_update_counts`` and ``freeze_coverage`` against the enumerations and, at larger
       runs, the expressions (rtol 1e-13), and the mean against ``freeze_mean_noise_energy``
       (per-epoch draws).
    """
    from dptheory.noise_signal import (freeze_coverage, freeze_draws, freeze_mean_noise_energy, freeze_schedule,
                                       freeze_update_counts, n_frozen)
    d, n = sp.symbols("d n", positive=True, integer=True)
    p_one = sp.simplify(sp.combsimp(sp.binomial(d - 1, n - 1) / sp.binomial(d, n)))
    p_two = sp.simplify(sp.combsimp(sp.binomial(d - 2, n - 2) / sp.binomial(d, n)))
    show("P(j in S) = C(d-1,n-1)/C(d,n)", p_one)
    show("P(j, l in S) = C(d-2,n-2)/C(d,n)", sp.factor(p_two))
    ok = sp.simplify(p_one - n / d) == 0 and sp.simplify(p_two - n * (n - 1) / (d * (d - 1))) == 0
    # 2. three independent draws, symbolic lengths and frozen probabilities
    L = sp.symbols("L1:4", positive=True)
    q = sp.symbols("q1:4", positive=True)
    mean_u, second_u = 0, 0
    for F in itertools.product((0, 1), repeat=3):
        prob = sp.Mul(*[qi if f else 1 - qi for qi, f in zip(q, F)])
        u = sum(Li * (1 - f) for Li, f in zip(L, F))
        mean_u += prob * u
        second_u += prob * u ** 2
    var_u = sp.expand(second_u - mean_u ** 2)
    show("E U_j (three draws)", sp.factor(sp.expand(mean_u)))
    show("Var U_j (three draws)", sp.factor(var_u))
    ok &= sp.expand(mean_u - sum(Li * (1 - qi) for Li, qi in zip(L, q))) == 0
    ok &= sp.expand(var_u - sum(Li ** 2 * qi * (1 - qi) for Li, qi in zip(L, q))) == 0
    # 3. coverage: X = sum_j prod_i F_ij; E X^2 = sum_j E prod_i F_ij + sum_{j != l} E prod_i F_ij F_il
    ns_ = sp.symbols("n1:4", positive=True, integer=True)
    p1 = sp.Mul(*[p_one.subs(n, ni) for ni in ns_])
    p2 = sp.Mul(*[p_two.subs(n, ni) for ni in ns_])
    var_x = sp.simplify(d * p1 + d * (d - 1) * p2 - (d * p1) ** 2)
    show("Var #never updated (three draws)", var_x)
    # 4. constant rate r, period P, T/P draws
    T, P, r, i = sp.symbols("T P r i", positive=True)
    var_const = sp.simplify(sp.summation(P ** 2 * r * (1 - r), (i, 1, T / P)))
    show("Var U_j, constant rate, P | T", sp.factor(var_const))
    ok &= sp.simplify(var_const - T * P * r * (1 - r)) == 0
    # 5. exact enumeration of small runs: d = 4, a linear ramp to 3/4 over E = 4 epochs of 3 steps redrawn
    #    every 2 (576 sequences; a ramp from 0 covers everything), and constant rates (coverage < d)
    pairs_u, pairs_c = [], []
    for dd, T0, spe0, kind0, refresh0, r0 in ((4, 12, 3, "linear", 2, 0.75), (5, 7, 7, "constant", 3, 0.6),
                                              (4, 6, 3, "constant", None, 0.5)):
        starts, lengths, rates = freeze_draws(r0, T0, spe0, kind0, refresh0)
        per = spe0 if refresh0 is None else refresh0
        sched = freeze_schedule(r0, -(-T0 // spe0), kind0)
        rule = [(t, min(per, T0 - t), float(sched[t // spe0])) for t in range(0, T0, per)]
        ok &= [(int(a), int(b), float(c)) for a, b, c in zip(starts, lengths, rates)] == rule
        counts = [int(c) for c in n_frozen(rates, dd)]
        seqs = _freeze_draw_sequences(dd, counts)
        u0 = [sum(int(Li) for Li, S in zip(lengths, seq) if 0 not in S) for seq in seqs]
        cov = [sum(1 for j in range(dd) if not all(j in S for S in seq)) for seq in seqs]
        M = sp.Integer(len(seqs))
        e_u, e_u2 = sp.Add(*u0) / M, sp.Add(*[sp.Integer(u) ** 2 for u in u0]) / M
        e_c, e_c2 = sp.Add(*cov) / M, sp.Add(*[sp.Integer(c) ** 2 for c in cov]) / M
        show(f"{kind0} r={r0}, d={dd}: n_i, L_i", sp.Matrix([counts, [int(Li) for Li in lengths]]))
        show(f"  enumerated ({len(seqs)} sequences): E U_0, Var U_0, E coverage, Var coverage",
             sp.Matrix([[e_u, e_u2 - e_u ** 2, e_c, e_c2 - e_c ** 2]]))
        qv = [sp.Rational(c, dd) for c in counts]
        Lv = [int(Li) for Li in lengths]
        ok &= e_u == sum(Li * (1 - qi) for Li, qi in zip(Lv, qv))
        ok &= e_u2 - e_u ** 2 == sum(Li ** 2 * qi * (1 - qi) for Li, qi in zip(Lv, qv))
        pv1 = sp.Mul(*[p_one.subs({d: dd, n: c}) for c in counts])
        pv2 = sp.Mul(*[p_two.subs({d: dd, n: c}) for c in counts])
        ok &= e_c == dd * (1 - pv1) and e_c2 - e_c ** 2 == dd * pv1 + dd * (dd - 1) * pv2 - dd ** 2 * pv1 ** 2
        m, v = freeze_update_counts(r0, dd, T0, spe0, kind0, refresh0)
        cm, cv_ = freeze_coverage(r0, dd, T0, spe0, kind0, refresh0)
        pairs_u += [(m, e_u), (v, e_u2 - e_u ** 2)]
        pairs_c += [(cm, e_c), (cv_, e_c2 - e_c ** 2)]
    # constant-rate runs (coverage non-trivial) against the general expressions, and per-epoch means
    for rr, dd2, TT, spe, ref in ((0.75, 40, 24, 8, 3), (0.5, 10, 30, 10, None), (0.9, 7, 25, 5, 7)):
        _, Ls, rs = freeze_draws(rr, TT, spe, "constant", ref)
        cs = [int(c) for c in n_frozen(rs, dd2)]
        qs = [sp.Rational(c, dd2) for c in cs]
        want_m = sum(int(Li) * (1 - qi) for Li, qi in zip(Ls, qs))
        want_v = sum(int(Li) ** 2 * qi * (1 - qi) for Li, qi in zip(Ls, qs))
        P1 = sp.Mul(*[p_one.subs({d: dd2, n: c}) for c in cs])
        P2 = sp.Mul(*[p_two.subs({d: dd2, n: c}) for c in cs])
        got_m, got_v = freeze_update_counts(rr, dd2, TT, spe, "constant", ref)
        got_cm, got_cv = freeze_coverage(rr, dd2, TT, spe, "constant", ref)
        pairs_u += [(got_m, want_m), (got_v, want_v)]
        pairs_c += [(got_cm, dd2 * (1 - P1)), (got_cv, dd2 * P1 + dd2 * (dd2 - 1) * P2 - dd2 ** 2 * P1 ** 2)]
    pairs_e = [(freeze_update_counts(rr, dd2, EE * spe, spe, kind)[0] / (EE * spe),
                freeze_mean_noise_energy(rr, EE, kind, d=dd2))
               for rr, dd2, EE, spe, kind in ((0.9, 40, 5, 6, "linear"), (0.5, 13, 4, 3, "cosine"),
                                              (0.8, 9, 7, 2, "step"))]
    ok &= check_points(show, "freeze_update_counts", pairs_u, rtol=1e-13)
    ok &= check_points(show, "freeze_coverage", pairs_c, rtol=1e-13)
    ok &= check_points(show, "freeze_update_counts / T = freeze_mean_noise_energy (per-epoch draws)", pairs_e,
                       rtol=1e-13)
    return bool(ok)


@derivation("noise energy on k coordinates: mean k s^2, variance 2 k s^4 (chi-square)",
            covers=("noise_signal.noise_std", "noise_signal.noise_energy", "noise_signal.noise_energy_mean",
                    "noise_signal.noise_energy_var"))
def chi_square(show):
    """Gaussian moments by integration; the averaged noise (sigma C z)/B; sums of k independent squares.

    Noise ``N(0, sigma^2 C^2)`` per coordinate is added to the clipped SUM and divided by ``B``
    (Abadi et al. 2016, Alg. 1), so its std is ``sqrt(E (sigma C z / B)^2)``. Then the four
    functions (rtol 1e-13).
    """
    from dptheory.noise_signal import (
        noise_energy,
        noise_energy_mean,
        noise_energy_var,
        noise_std,
    )
    k, s, sig, C, B, d = sp.symbols("k s sigma C B d", positive=True)
    m2, m4 = _gaussian_moments()
    std = sp.sqrt(sp.simplify((sig * C / B) ** 2 * m2))
    mean, var = k * s ** 2 * m2, k * s ** 4 * (m4 - m2 ** 2)     # sum of k independent (s z_i)^2
    show("E z^2, E z^4", sp.Tuple(m2, m4)); show("s = sqrt(E (sigma C z/B)^2)", std)
    show("mean", mean); show("variance", var)
    ok = sp.simplify(mean - k * s ** 2) == 0 and sp.simplify(var - 2 * k * s ** 4) == 0
    ok &= sp.simplify(std - sig * C / B) == 0
    pts = ((1, 1, 1, 1, 3), (7, sp.Rational(3, 2), 2, 8, 100), (50, sp.Rational(1, 3), 1, 64, 4810))
    sub = lambda kk, sg, cc, bb, dd: {k: kk, s: std.subs({sig: sg, C: cc, B: bb}), d: dd}
    ok &= check_points(show, "noise_std", [(noise_std(float(sg), cc, bb), std.subs({sig: sg, C: cc, B: bb}))
                                           for _, sg, cc, bb, _ in pts], rtol=1e-14)
    ok &= check_points(show, "noise_energy_mean", [(noise_energy_mean(kk, float(sg), cc, bb), mean.subs(sub(*pt)))
                                                   for pt in pts for kk, sg, cc, bb, _ in [pt]], rtol=1e-13)
    ok &= check_points(show, "noise_energy (k = d)", [(noise_energy(dd, float(sg), cc, bb), mean.subs(sub(dd, sg, cc, bb, dd)))
                                                      for _, sg, cc, bb, dd in pts], rtol=1e-13)
    ok &= check_points(show, "noise_energy_var", [(noise_energy_var(kk, float(sg), cc, bb), var.subs(sub(*pt)))
                                                  for pt in pts for kk, sg, cc, bb, _ in [pt]], rtol=1e-13)
    return bool(ok)


@derivation("noise energy interval: chi-square CDFs for k = 1, 2, 4 from the densities",
            covers=("noise_signal.noise_energy_interval",))
def chi_square_interval(show):
    r"""CDF of ``W = sum_{i<=k} z_i^2`` derived for k = 1 (``P(z^2 <= w)``), k = 2 (polar coordinates)
    and k = 4 (convolution of two k = 2 laws); the interval ends ``s^2 w`` must have CDF
    ``(1 -+ level)/2`` (atol 1e-10).
    """
    from dptheory.noise_signal import noise_energy_interval
    z, phi = std_normal()
    w, r, u = sp.symbols("w r u", positive=True)
    cdf1 = sp.simplify(2 * sp.integrate(phi, (z, 0, sp.sqrt(w))))
    dens2 = sp.simplify(sp.integrate(r * sp.exp(-r ** 2 / 2), (r, 0, sp.sqrt(w))))   # (1/2pi) int dtheta = 1
    cdf2 = dens2
    f2 = sp.diff(cdf2, w)
    cdf4 = sp.simplify(sp.integrate(sp.integrate(f2.subs(w, u) * f2.subs(w, r - u), (u, 0, r)), (r, 0, w)))
    show("P(chi^2_1 <= w)", cdf1); show("P(chi^2_2 <= w)", cdf2); show("P(chi^2_4 <= w)", cdf4)
    ok = sp.simplify(cdf2 - (1 - sp.exp(-w / 2))) == 0
    ok &= sp.simplify(cdf4 - (1 - sp.exp(-w / 2) * (1 + w / 2))) == 0
    pairs = []
    for kk, cdf in ((1, cdf1), (2, cdf2), (4, cdf4)):
        for level, sg, cc, bb in ((0.95, 1.0, 1.0, 1.0), (0.5, 2.0, 0.5, 4.0)):
            s2 = (sg * cc / bb) ** 2
            lo, hi = noise_energy_interval(kk, sg, cc, bb, level=level)
            pairs += [(cdf.subs(w, lo / s2), (1 - level) / 2), (cdf.subs(w, hi / s2), (1 + level) / 2)]
    ok &= check_points(show, "CDF at the ends of noise_energy_interval", pairs, rtol=0.0, atol=1e-10)
    return bool(ok)


@derivation("trade-off a/sqrt(rho) + b sqrt(rho): minimiser rho* = a/b, value 2 sqrt(ab)",
            covers=("noise_signal.tradeoff_bound", "noise_signal.optimal_keep_fraction"))
def tradeoff(show):
    """Stationary point of (a + b rho)/sqrt(rho) and its value; a/b for the mask-then-clip coefficients.

    The coefficients a, b are derived in ``proofs.convergence.mask_then_clip_spread``. Then
    ``optimal_keep_fraction(spread="spread_out")`` and ``tradeoff_bound`` (rtol 1e-12).
    """
    from dptheory.noise_signal import optimal_keep_fraction, tradeoff_bound
    rho, a, b = sp.symbols("rho a b", positive=True)
    f = a / sp.sqrt(rho) + b * sp.sqrt(rho)
    crit = sp.solve(sp.diff(f, rho), rho)
    show("stationary points", sp.Tuple(*crit))
    ok = crit == [a / b]
    ok &= bool(sp.simplify(sp.diff(f, rho, 2).subs(rho, a / b)).is_positive)
    val = sp.simplify(f.subs(rho, a / b))
    show("value", val)
    ok &= sp.simplify(val - 2 * sp.sqrt(a * b)) == 0
    dF, L, eta, C, T, d, sig, B = sp.symbols("DeltaF L eta C T d sigma B", positive=True)
    A = dF / (eta * C * T) + L * eta * C / 2
    Bc = L * eta * C * d * sig ** 2 / (2 * B ** 2)
    ratio = sp.simplify(A / Bc)
    show("a/b", ratio)
    ok &= sp.simplify(ratio - B ** 2 / (d * sig ** 2) * (1 + 2 * dF / (L * eta ** 2 * C ** 2 * T))) == 0
    pairs = []
    for vals in ((1, 1, sp.Rational(1, 10), 1, 100, 1000, 3, 16), (5, 2, sp.Rational(1, 2), 2, 50, 400, 2, 8),
                 (1, 1, sp.Rational(1, 10), 1, 100, 10, sp.Rational(1, 10), 16)):
        sub = dict(zip((dF, L, eta, C, T, d, sig, B), vals))
        got = optimal_keep_fraction(sub[d], float(sub[sig]), sub[B], sub[dF], sub[L], float(sub[eta]), sub[C], sub[T],
                                    spread="spread_out")
        pairs.append((got, min(1, ratio.subs(sub))))
    ok &= check_points(show, "optimal_keep_fraction (spread_out)", pairs, rtol=1e-12)
    pairs = [(tradeoff_bound(rv, av, bv, spread="spread_out"), f.subs({rho: sp.nsimplify(rv), a: av, b: bv}))
             for rv, av, bv in ((0.25, 3, 5), (1.0, 0.5, 2), (0.01, 1, 100))]
    pairs += [(tradeoff_bound(rv, av, bv), (f * sp.sqrt(rho) / rho).subs({rho: sp.nsimplify(rv), a: av, b: bv}))
              for rv, av, bv in ((0.25, 3, 5), (1.0, 0.5, 2))]
    ok &= check_points(show, "tradeoff_bound", pairs, rtol=1e-12)
    return bool(ok)


@derivation("noisy top-k of pure noise: E||z_S||^2/k <= 1 + t phi(t)/Phi_bar(t), t = Phi^-1(1 - k/(2d)), = as d -> oo",
            covers=("noise_signal.noisy_top_k_noise_factor",))
def noisy_top_k_pure_noise(show):
    """From the definition: S keeps the coordinates with |z_j| above the (k/d)-upper quantile t of |z|
    (in the limit d -> inf), so E||z_S||^2/k = E[z^2 | |z| > t]; and the pathwise bound
    sum of the k largest z_j^2 <= k tau + sum_j (z_j^2 - tau)_+ minimised over tau gives the same value."""
    from dptheory.noise_signal import noisy_top_k_energies, noisy_top_k_noise_factor
    z, phi = std_normal()
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


@derivation("noisy top-k threshold model: E[z^2; |g + s z| > tau] = a phi(a) + Phi_bar(a) + b phi(b) + Phi_bar(b)",
            covers=("noise_signal.noisy_top_k_energies",))
def noisy_top_k_threshold_model(show):
    """Per coordinate, |g + s z| > tau iff z > a = (tau - g)/s or z < -b, b = (tau + g)/s; the kept noise and
    kept probability are integrals of the standard normal over the two half-lines."""
    from dptheory.noise_signal import noisy_top_k_energies
    z, phi = std_normal()
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


@derivation("top-k keeps at least k/d of the energy: max over masks >= average over masks = (k/d)||x||^2",
            covers=("noise_signal.top_k_captured_lower_bound", "noise_signal.contraction_top_k"))
def top_k_captured(show):
    """Top-k energy is the MAXIMUM over k-subsets of ||x_S||^2, at least their average (exact sum, d = 4).

    Hence ``||x - top_k x||^2 <= (1 - k/d)||x||^2`` (Stich, Cordonnier & Jaggi 2018, Lemma A.1);
    equality for a flat ``|x|``. Then the two functions (rtol 1e-14).
    """
    from dptheory.noise_signal import contraction_top_k, top_k_captured_lower_bound
    n = 4
    x = sp.symbols(f"x1:{n + 1}", real=True)
    x2 = sum(xi ** 2 for xi in x)
    ok = True
    fracs = {}
    for kk in range(1, n + 1):
        avg = sp.factor(mask_average(n, kk, lambda m: sum(x[i] ** 2 for i in m)))
        fracs[kk] = sp.simplify(avg / x2)
        ok &= fracs[kk] == sp.Rational(kk, n)
        # flat |x|: every subset keeps the same energy, so the maximum equals the average
        flat = [sum(1 for _ in m) for m in itertools.combinations(range(n), kk)]
        ok &= max(flat) == min(flat) == kk
    show("average over k-subsets of ||x_S||^2/||x||^2, k = 1..4 (d = 4)", sp.Tuple(*fracs.values()))
    rng = np.random.default_rng(0)
    for kk in range(1, n + 1):                      # the maximum over masks is >= the average: numbers
        v = rng.standard_normal(n)
        best = max(sum(v[i] ** 2 for i in m) for m in itertools.combinations(range(n), kk))
        ok &= best >= float(fracs[kk]) * float(v @ v) * (1 - 1e-15)
    pairs = [(top_k_captured_lower_bound(kk, dd), sp.Rational(kk, dd)) for dd, kk in _PTS]
    ok &= check_points(show, "top_k_captured_lower_bound", pairs, rtol=1e-14)
    pairs = [(contraction_top_k(kk, dd), 1 - sp.Rational(kk, dd)) for dd, kk in _PTS]
    ok &= check_points(show, "contraction_top_k", pairs, rtol=1e-14, atol=1e-15)
    return bool(ok)


@derivation("mask then clip, equal-magnitude gradients: E_m||clip(m g)||^2 = C^2 (flat in k), "
            "E_m <f, clip(m g)> = sqrt(rho) <f, clip(g)>",
            covers=("noise_signal.signal_mask_then_clip", "noise_signal.descent_mask_then_clip"))
def mask_then_clip_regime(show):
    """Sums over all masks (d = 5) for a clipped gradient with equal-magnitude coordinates.

    ``g = gamma (1, -1, 1, -1, 1)`` with ``gamma sqrt(k) >= C`` (every masked gradient is clipped):
    ``clip_C(m * g) = C (m * g)/(gamma sqrt(k))``. This is the regime where the two [D] functions
    are exact (they are approximations elsewhere; tests/test_sim_vs_theory_noise.py measures them).
    Then the functions (rtol 1e-13).
    """
    from dptheory.noise_signal import descent_mask_then_clip, signal_mask_then_clip
    n = 5
    C = sp.Symbol("C", positive=True)
    f = sp.symbols(f"f0:{n}", real=True)
    sg = [(-1) ** i for i in range(n)]
    dense_clip = [C * sg[i] / sp.sqrt(n) for i in range(n)]          # clip_C(g) = C g/||g||
    ok = True
    sig_pairs, desc_pairs = [], []
    for kk in range(1, n + 1):
        clip_m = lambda m, kk=kk: [C * sg[i] / sp.sqrt(kk) if i in m else 0 for i in range(n)]
        energy = sp.simplify(mask_average(n, kk, lambda m, cm=clip_m: sum(c ** 2 for c in cm(m))))
        descent = sp.expand(mask_average(n, kk, lambda m, cm=clip_m: sum(fi * c for fi, c in zip(f, cm(m)))))
        dense = sp.expand(sum(fi * c for fi, c in zip(f, dense_clip)))
        ratio = sp.simplify(descent / dense)
        ok &= sp.simplify(energy - C ** 2) == 0 and sp.simplify(ratio - sp.sqrt(sp.Rational(kk, n))) == 0
        sig_pairs.append((signal_mask_then_clip(2.5), energy.subs(C, 1) * 2.5))
        desc_pairs.append((descent_mask_then_clip(kk, n, 0.7), ratio * sp.Rational(7, 10)))
    show("E_m||clip_C(m g)||^2, k = 1..5", C ** 2)
    show("E_m<f, clip_C(m g)> / <f, clip_C(g)>", sp.sqrt(sp.Symbol("k") / n))
    ok &= check_points(show, "signal_mask_then_clip", sig_pairs, rtol=1e-13)
    ok &= check_points(show, "descent_mask_then_clip", desc_pairs, rtol=1e-13)
    return bool(ok)
