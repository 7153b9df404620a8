"""Derivations behind :mod:`dptheory.selection` (docs/selection.md): private top-k support selection.

1. The Gumbel-max trick from the Gumbel density: ``argmax_j (u_j/b + G_j)`` is the softmax, and
   the top-2 of ``d = 3`` is two peeling rounds (Durfee & Rogers 2019, Lemma 4.2, at that size);
   the inclusion-exclusion form of ``prob_exact_top_k`` against the peeling sum.
2. The privacy of the selection: the exponential mechanism's privacy-loss range, the zCDP of
   ``k`` rounds, the Gaussian part from its integral, and their composition.
3. Zhu & Wang's (2019, Thm 6) general Poisson-subsampling bound at ``alpha = 2`` against the
   Renyi divergence of a subsampled two-point mechanism computed from the definition (both
   directions of add/remove), and at ``alpha = 3`` as an inequality.
4. The per-step curve (minimum of the subsampled bound and the batch-level RDP) and the
   ``(epsilon, delta)`` conversion, against exact rational evaluations.
5. What the calibration relies on: epsilon is non-increasing in sigma (every step of the accounting
   is non-decreasing in the batch-level RDP, which decreases in sigma) and tends, as sigma -> inf,
   to the cost of the selection alone; the calibrated sigma meets its target.
6. The PLD accountant: the privacy loss of one Poisson-subsampled step of the dominating pair
   (randomized response rounds times a Gaussian) from the log-likelihood ratio of the mixture, its
   monotonicity in ``z`` and its inverse, and the epsilon of one step from the hockey-stick integral.
"""
from __future__ import annotations

import itertools

import numpy as np
import sympy as sp

from . import derivation
from .common import check_points, normal_pdf

t = sp.Symbol("t", positive=True)        # t = e^{-g}
g = sp.Symbol("g", real=True)
z = sp.Symbol("z", real=True)
a_ = sp.Symbol("alpha", positive=True)
s = sp.Symbol("sigma", positive=True)
eps = sp.Symbol("epsilon", positive=True)
kk = sp.Symbol("k", positive=True, integer=True)
Dl = sp.Symbol("Delta", positive=True)
q = sp.Symbol("q", positive=True)
W = sp.symbols("w1:4", positive=True)    # w_j = e^{u_j / b}


def _gumbel_cdf_t(w):
    """CDF of u + G (G standard Gumbel, w = e^u) at the point x with t = e^{-x}: exp(-w t)."""
    return sp.exp(-w * t)


@derivation("Gumbel-max is the softmax; Gumbel top-2 of 3 is two peeling rounds; prob_exact_top_k by "
            "inclusion-exclusion", covers=("selection.prob_exact_top_k",))
def gumbel_top_k(show):
    r"""From the Gumbel density to the exponential mechanism.

    1. The density of :math:`X_j = u_j + G_j` is :math:`e^{-(x-u_j)} \exp(-e^{-(x-u_j)})`; with
       :math:`t = e^{-x}` (``dx = -dt/t``) it becomes :math:`w_j e^{-w_j t}\,dt` on :math:`(0, \infty)`.
    2. :math:`P(X_1 > X_2, X_1 > X_3) = \int f_1 F_2 F_3 = w_1 / (w_1 + w_2 + w_3)` (the softmax).
    3. :math:`P(X_1 > X_2 > X_3) = \int f_2 F_3 (1 - F_1) = \frac{w_1}{Z}\frac{w_2}{Z - w_1}` (peeling).
    4. ``prob_exact_top_k``'s inclusion-exclusion sum equals the peeling sum over the orderings of
       the top set (d = 3, k = 1, 2 symbolic; d = 5, k = 2, 3 numeric), and the function matches.
    """
    from dptheory.selection import prob_exact_top_k

    w1, w2, w3 = W
    Z = w1 + w2 + w3
    dens = lambda w: w * sp.exp(-w * t)
    # step 1: the change of variables applied to the Gumbel density
    xdens = sp.exp(-(g - sp.log(w1))) * sp.exp(-sp.exp(-(g - sp.log(w1))))
    ok = sp.simplify(xdens.subs(g, -sp.log(t)) / t - dens(w1)) == 0
    show("density of u_1 + G_1 at x = -log t, times |dx/dt| = 1/t", sp.simplify(xdens.subs(g, -sp.log(t)) / t))
    p_max = sp.simplify(sp.integrate(dens(w1) * _gumbel_cdf_t(w2) * _gumbel_cdf_t(w3), (t, 0, sp.oo)))
    show("P(X_1 = max) = int_0^oo w_1 e^{-w_1 t} e^{-w_2 t} e^{-w_3 t} dt", p_max)
    ok &= sp.simplify(p_max - w1 / Z) == 0
    p_12 = sp.simplify(sp.integrate(dens(w2) * _gumbel_cdf_t(w3) * (1 - _gumbel_cdf_t(w1)), (t, 0, sp.oo)))
    show("P(X_1 > X_2 > X_3) = int f_2 F_3 (1 - F_1)", p_12)
    ok &= sp.simplify(p_12 - (w1 / Z) * (w2 / (Z - w1))) == 0

    def peeling_set(ws, top):
        total = 0
        for perm in itertools.permutations(top):
            left, p = list(range(len(ws))), 1
            for j in perm:
                p *= ws[j] / sum(ws[i] for i in left)
                left.remove(j)
            total += p
        return total

    def incl_excl(ws, top):
        zc = sum(ws[j] for j in range(len(ws)) if j not in top)
        return sum((-1) ** r * zc / (zc + sum(ws[i] for i in sub))
                   for r in range(len(top) + 1) for sub in itertools.combinations(top, r))

    for top in ((0,), (0, 1)):
        ok &= sp.simplify(incl_excl(list(W), top) - peeling_set(list(W), top)) == 0
    show("inclusion-exclusion sum, top set {1, 2} of 3", sp.simplify(incl_excl(list(W), (0, 1))))
    pairs = []
    for u, k, b in (([3.0, 2.0, 1.5, 0.2, -1.0], 2, 1.0), ([0.5, 0.4, 0.3, 0.2, 0.1], 3, 0.2),
                    ([1.0, 0.0, 0.0], 1, 2.0), ([2.0, 1.0, 1.0, 0.5, 0.0], 3, 0.7)):
        ws = [sp.exp(sp.Rational(str(v)) / sp.Rational(str(b))) for v in u]
        pairs.append((prob_exact_top_k(np.array(u), k, b), peeling_set(ws, tuple(range(k)))))
    ok &= check_points(show, "prob_exact_top_k against the peeling sum", pairs, rtol=1e-12)
    return bool(ok)


def _renyi_discrete(p, r, order):
    """D_order(p || r) of two finite distributions, from the definition."""
    return sp.log(sum(pi ** order * ri ** (1 - order) for pi, ri in zip(p, r))) / (order - 1)


@derivation("Private top-k selection then Gaussian noise on it: bounded range, zCDP over k rounds, "
            "RDP composition",
            covers=("selection.gumbel_scale", "selection.selection_zcdp", "selection.rdp_top_k_selection",
                    "selection.rdp_selected_gaussian", "events.SelectedGaussian.rdp"))
def selection_rdp(show):
    r"""The batch-level RDP of selection + Gaussian.

    1. The exponential mechanism with weights :math:`e^{u_j/b}` has privacy loss
       :math:`(u_j - u'_j)/b - \log(Z/Z')`; :math:`|u_j - u'_j| \le \Delta` so its range is at most
       :math:`2\Delta/b`, which is :math:`\varepsilon/k` at :math:`b = 2\Delta k/\varepsilon`.
    2. An :math:`\varepsilon_r`-bounded-range mechanism is :math:`\varepsilon_r^2/8`-zCDP (Cesar &
       Rogers 2021); ``k`` adaptive rounds add: :math:`\rho = k(\varepsilon/k)^2/8 = \varepsilon^2/(8k)`.
       Checked on instances: :math:`D_\alpha \le \min(\alpha\varepsilon_r^2/8, \varepsilon_r)` for
       exponential mechanisms on random neighbouring scores.
    3. The Gaussian on :math:`s_S` (sensitivity 1 in units of C): :math:`\int p_1^\alpha p_0^{1-\alpha}
       = e^{\alpha(\alpha-1)/(2\sigma^2)}`, i.e. :math:`\alpha/(2\sigma^2)`.
    4. Adaptive composition adds the two (Mironov 2017, Prop. 1); the functions match.
    """
    from dptheory.events import SelectedGaussian
    from dptheory.selection import (
        gumbel_scale,
        rdp_selected_gaussian,
        rdp_top_k_selection,
        selection_zcdp,
    )

    b = 2 * Dl * kk / eps
    ok = sp.simplify(2 * Dl / b - eps / kk) == 0
    show("privacy-loss range 2 Delta / b at b = 2 Delta k / epsilon", sp.simplify(2 * Dl / b))
    rho = sp.simplify(kk * (eps / kk) ** 2 / 8)
    show("rho = k (epsilon/k)^2 / 8", rho)
    ok &= sp.simplify(rho - eps**2 / (8 * kk)) == 0
    # instances of the BR -> zCDP lemma: random scores u, u' = u + delta, |delta| <= 1, b = 2 / eps_r
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(30):
        n = int(rng.integers(2, 6))
        u = rng.normal(size=n)
        de = rng.uniform(-1.0, 1.0, size=n)
        er = float(rng.uniform(0.1, 3.0))
        p = np.exp(u * er / 2.0)
        p /= p.sum()
        r = np.exp((u + de) * er / 2.0)
        r /= r.sum()
        for order in (1.5, 2.0, 4.0, 16.0):
            d_ = max(np.log(np.sum(p**order * r ** (1 - order))), np.log(np.sum(r**order * p ** (1 - order))))
            d_ /= order - 1.0
            worst = max(worst, d_ / min(order * er * er / 8.0, er))
    show("max over 30 random exponential mechanisms of D_alpha / min(alpha eps_r^2/8, eps_r)", sp.Float(worst, 4))
    ok &= worst <= 1.0
    # p_1^alpha p_0^(1-alpha): one Gaussian exponent (the normalisations combine to one)
    expo = sp.expand(a_ * sp.log(sp.exp(-(z - 1) ** 2 / (2 * s**2))) + (1 - a_) * sp.log(sp.exp(-z**2 / (2 * s**2))),
                     force=True)
    ok &= sp.simplify(sp.exp(expo) / (sp.sqrt(2 * sp.pi) * s)
                      - normal_pdf(z, 1, s) ** a_ * normal_pdf(z, 0, s) ** (1 - a_)) == 0
    gauss = sp.simplify(sp.integrate(sp.exp(expo) / (sp.sqrt(2 * sp.pi) * s), (z, -sp.oo, sp.oo)))
    show("int p_1^alpha p_0^(1-alpha) dz", gauss)
    ok &= sp.simplify(sp.log(gauss) / (a_ - 1) - a_ / (2 * s**2)) == 0
    pairs = [(gumbel_scale(3, 0.5, 2.0), b.subs({Dl: 2, kk: 3, eps: sp.Rational(1, 2)})),
             (selection_zcdp(4, 1.5), rho.subs({kk: 4, eps: sp.Rational(3, 2)}))]
    for av, kv, ev, sv in ((2, 1, sp.Rational(1), sp.Rational(1)), (8, 10, sp.Rational(1, 2), sp.Rational(3, 2)),
                           (sp.Rational(5, 2), 3, sp.Rational(4), sp.Rational(4, 5)), (100, 2, sp.Rational(1), 2)):
        sel = sp.Min(av * ev**2 / (8 * kv), ev)
        pairs.append((rdp_top_k_selection(float(av), kv, float(ev))[0], sel))
        pairs.append((rdp_selected_gaussian(float(av), float(sv), kv, float(ev))[0], sel + av / (2 * sv**2)))
        pairs.append((SelectedGaussian(float(sv), kv, float(ev)).rdp(float(av))[0], sel + av / (2 * sv**2)))
    ok &= check_points(show, "gumbel_scale, selection_zcdp, rdp_top_k_selection, rdp_selected_gaussian", pairs,
                       rtol=1e-13)
    return bool(ok)


def _zw(order: int, qv, base):
    """Zhu & Wang (2019, Thm 6) at integer ``order``: the bracket, exactly (base(l) = eps(l))."""
    val = (1 - qv) ** (order - 1) * (1 + (order - 1) * qv)
    val += sp.binomial(order, 2) * qv**2 * (1 - qv) ** (order - 2) * sp.exp(base(2))
    val += 3 * sum(sp.binomial(order, l) * qv**l * (1 - qv) ** (order - l) * sp.exp((l - 1) * base(l))
                   for l in range(3, order + 1))
    return sp.log(val) / (order - 1)


@derivation("Zhu-Wang general Poisson-subsampling bound: alpha = 2 against the Renyi divergence of a "
            "subsampled two-point mechanism, alpha = 3 as an inequality",
            covers=("selection.rdp_poisson_general",))
def zhu_wang_two_point(show):
    r"""The subsampled bound against a direct computation.

    Base mechanism: randomized response, :math:`Q_1 = (p, 1-p)` with the example and
    :math:`Q_0 = (1-p, p)` without, :math:`p = e^{\varepsilon}/(1+e^{\varepsilon})`. Poisson
    subsampling gives :math:`\mu = (1-q) Q_0 + q Q_1` against :math:`Q_0`.

    1. :math:`E_{Q_0}[(\mu/Q_0)^2] = 1 - q^2 + q^2 e^{D_2(Q_1\|Q_0)}` exactly (expand the square),
       which is the bound at :math:`\alpha = 2`: :math:`(1-q)(1+q) + q^2 e^{\varepsilon(2)}`.
    2. The other direction :math:`D_2(Q_0\|\mu)` is below it (numeric points).
    3. At :math:`\alpha = 3` both directions are below the bound (numeric points).
    4. ``rdp_poisson_general`` equals the exact bracket (rtol 1e-12) and lies above the divergences.
    """
    from dptheory.selection import rdp_poisson_general

    p = sp.Symbol("p", positive=True)
    Q1, Q0 = (p, 1 - p), (1 - p, p)
    mu = tuple((1 - q) * a + q * b for a, b in zip(Q0, Q1))
    second = sp.expand(sum(m**2 / r for m, r in zip(mu, Q0)))
    base2 = sum(a**2 / r for a, r in zip(Q1, Q0))          # e^{D_2(Q_1 || Q_0)}
    ok = sp.simplify(second - (1 - q**2 + q**2 * base2)) == 0
    show("E_{Q_0}[(mu/Q_0)^2] - (1 - q^2 + q^2 e^{D_2(Q_1||Q_0)})", sp.simplify(second - (1 - q**2 + q**2 * base2)))
    show("the bound at alpha = 2 (log of its bracket)", _zw(2, q, lambda l: sp.Symbol("epsilon_2")))
    pairs, slack = [], []
    for ev, qv in ((sp.Rational(1, 2), sp.Rational(1, 10)), (sp.Rational(2), sp.Rational(1, 100)),
                   (sp.Rational(1), sp.Rational(1, 2)), (sp.Rational(3), sp.Rational(9, 10))):
        pv = sp.exp(ev) / (1 + sp.exp(ev))
        sub = {p: pv, q: qv}
        q1, q0 = [c.subs(sub) for c in Q1], [c.subs(sub) for c in Q0]
        m = [c.subs(sub) for c in mu]

        def base(l, q1=q1, q0=q0):
            return _renyi_discrete(q1, q0, l)   # symmetric: D(Q1||Q0) = D(Q0||Q1)

        for order in (2, 3):
            want = _zw(order, qv, base)
            got = rdp_poisson_general(float(order), float(qv), lambda ells: np.array(
                [float(sp.N(base(int(l)), 30)) for l in ells]))[0]
            pairs.append((got, want))
            d_add, d_rem = _renyi_discrete(m, q0, order), _renyi_discrete(q0, m, order)
            if order == 2:
                ok &= abs(float(sp.N(d_add - want, 30))) < 1e-25
            slack.append(float(sp.N(want - sp.Max(d_add, d_rem), 30)))
    ok &= min(slack) >= -1e-25   # equality (to 30 digits) in the add direction at alpha = 2
    show("min over the points of bound - max(D(mu||Q_0), D(Q_0||mu)) (alpha = 2, 3)", sp.Float(min(slack), 4))
    ok &= check_points(show, "rdp_poisson_general against the exact bracket", pairs, rtol=1e-12)
    return bool(ok)


@derivation("One Poisson-subsampled selection + Gaussian step: min of the general bound and the batch RDP; "
            "(epsilon, delta) after T steps",
            covers=("selection.rdp_poisson_selected_gaussian", "selection.epsilon_selected_gaussian",
                    "events.PoissonSelectedGaussian.rdp"))
def subsampled_selected_gaussian(show):
    r"""The per-step curve and its conversion, from exact evaluations.

    :math:`\varepsilon_{\mathrm{step}}(\alpha) = \min(\mathrm{ZW}_q[\varepsilon_M](\alpha), \varepsilon_M(\alpha))`
    at integer orders (both are bounds; the curve is then non-decreasing), ``T`` steps multiply
    it, and :math:`\varepsilon = \min_\alpha T\varepsilon_{\mathrm{step}} + \log\frac{\alpha-1}{\alpha}
    - \frac{\log\delta + \log\alpha}{\alpha-1}` (Balle et al. 2020, Thm 21) over orders 2..8.
    """
    from dptheory.events import PoissonSelectedGaussian
    from dptheory.selection import (
        epsilon_selected_gaussian,
        rdp_poisson_selected_gaussian,
    )

    ok = True
    pairs = []
    for qv, sv, kv, ev, T in ((sp.Rational(1, 100), sp.Rational(1), 10, sp.Rational(1), 1000),
                              (sp.Rational(1, 5), sp.Rational(3, 2), 2, sp.Rational(1, 2), 10),
                              (sp.Rational(1), sp.Rational(2), 1, sp.Rational(1), 3)):
        def eps_m(l, sv=sv, kv=kv, ev=ev):
            return sp.Min(l * ev**2 / (8 * kv), ev) + sp.Rational(l, 1) / (2 * sv**2)

        curve = []
        for order in range(2, 9):
            val = eps_m(order) if qv == 1 else sp.Min(_zw(order, qv, eps_m), eps_m(order))
            curve.append(val)
        # non-decreasing already at these points (so the running minimum changes nothing)
        ok &= all(float(sp.N(curve[i + 1] - curve[i], 30)) >= 0 for i in range(len(curve) - 1))
        got = rdp_poisson_selected_gaussian(np.arange(2.0, 9.0), float(qv), float(sv), kv, float(ev))
        pairs += list(zip(got, curve))
        ev_rdp = PoissonSelectedGaussian(float(qv), float(sv), kv, float(ev), T).rdp(np.arange(2.0, 9.0))
        pairs += list(zip(ev_rdp, [T * c for c in curve]))
        delta = sp.Rational(1, 10**5)
        conv = [T * c + sp.log(sp.Rational(o - 1, o)) - (sp.log(delta) + sp.log(o)) / (o - 1)
                for o, c in zip(range(2, 9), curve)]
        want = sp.Max(0, min(conv, key=lambda e: float(sp.N(e, 30))))
        got_eps, _ = epsilon_selected_gaussian(float(qv), float(sv), kv, float(ev), T, 1e-5,
                                               orders=np.arange(2.0, 9.0))
        pairs.append((got_eps, want))
    if pairs:
        show("example: q = 1/100, sigma = 1, k = 10, epsilon_sel = 1, alpha = 2",
             sp.Min(_zw(2, sp.Rational(1, 100), lambda l: sp.Min(sp.Rational(l, 80), 1) + sp.Rational(l, 2)),
                    sp.Rational(2, 80) + 1))
    ok &= check_points(show, "rdp_poisson_selected_gaussian, PoissonSelectedGaussian.rdp, epsilon_selected_gaussian",
                       pairs, rtol=1e-11)
    return bool(ok)


@derivation("Selection + Gaussian as sigma -> inf: epsilon is non-increasing in sigma, its infimum is the "
            "selection's own cost, and the calibrated sigma meets its target",
            covers=("selection.epsilon_selection_limit", "selection.calibrate_noise_selected"))
def selected_gaussian_sigma_limit(show):
    r"""What :func:`dptheory.selection.calibrate_noise_selected` relies on, from the definitions.

    1. :math:`\varepsilon_M(\alpha) = \min(\alpha\varepsilon^2/(8k), \varepsilon) + \alpha/(2\sigma^2)` has
       :math:`\partial_\sigma\varepsilon_M = -\alpha/\sigma^3 < 0` and tends to
       :math:`\varepsilon_{\mathrm{sel}}(\alpha)` as :math:`\sigma\to\infty`.
    2. The Zhu-Wang bracket :math:`B(e_2, \dots, e_\alpha)` (here :math:`\alpha = 5`, with
       :math:`r = 1 - q > 0`) has every :math:`\partial B/\partial e_\ell > 0`, so the bound
       :math:`\log B/(\alpha-1)` is non-decreasing in each base value; so are the minimum with
       :math:`\varepsilon_M`, the running minimum over the orders, ``T`` times it, and the conversion
       (:math:`\partial/\partial R = 1`; the KL shortcut and the clip at 0 are non-decreasing steps).
       Hence epsilon is non-increasing in sigma.
    3. The bracket at :math:`e_\ell = \varepsilon_M(\ell)` tends to the bracket at
       :math:`\varepsilon_{\mathrm{sel}}(\ell)` (sympy limit, :math:`k = 10`, :math:`\varepsilon = 1`, any ``q``).
    4. ``epsilon_selection_limit`` against exact rational evaluations of that limit (orders 2..8,
       rtol 1e-11); ``epsilon_selected_gaussian`` decreasing along sigma = 1, 4, ..., 4^7 and above the
       limit, within 1e-5 of it at the end; ``calibrate_noise_selected`` meets its target at sigma and
       misses it at sigma (1 - 1e-5), and refuses the limit itself as a target.
    """
    from dptheory.selection import (
        calibrate_noise_selected,
        epsilon_selected_gaussian,
        epsilon_selection_limit,
    )

    eps_m = sp.Min(a_ * eps**2 / (8 * kk), eps) + a_ / (2 * s**2)
    d_sigma = sp.diff(eps_m, s)
    show("d eps_M / d sigma", d_sigma)
    ok = sp.simplify(d_sigma + a_ / s**3) == 0 and bool((-a_ / s**3).is_negative)
    lim = sp.limit(eps_m, s, sp.oo)
    show("lim_{sigma -> inf} eps_M(alpha)", lim)
    ok &= sp.simplify(lim - sp.Min(a_ * eps**2 / (8 * kk), eps)) == 0
    # 2. the bracket is increasing in every base value
    r = sp.Symbol("r", positive=True)         # r = 1 - q
    order = 5
    es = sp.symbols(f"e2:{order + 1}", real=True)
    bracket = (r ** (order - 1) * (1 + (order - 1) * q) + sp.binomial(order, 2) * q**2 * r ** (order - 2) * sp.exp(es[0])
               + 3 * sum(sp.binomial(order, l) * q**l * r ** (order - l) * sp.exp((l - 1) * es[l - 2])
                         for l in range(3, order + 1)))
    grads = [sp.diff(bracket, e) for e in es]
    show("partial derivatives of the Zhu-Wang bracket (alpha = 5, r = 1 - q)", sp.Matrix(grads))
    ok &= all(bool(gr.is_positive) for gr in grads)
    # 3. the limit of the bracket (k = 10, epsilon_sel = 1: eps_sel(l) = l/80 for l <= 80)
    sel = lambda l: sp.Rational(l, 80)                          # noqa: E731
    full = lambda l: sp.Rational(l, 80) + sp.Rational(l, 2) / s**2  # noqa: E731
    for o in (2, 4):
        lim_b = sp.limit(sp.exp((o - 1) * _zw(o, q, full)), s, sp.oo)
        ok &= sp.simplify(lim_b - sp.exp((o - 1) * _zw(o, q, sel))) == 0
    show("lim_{sigma -> inf} of the alpha = 4 bracket (k = 10, epsilon_sel = 1)",
         sp.simplify(sp.exp(3 * _zw(4, q, sel))))
    # 4. numbers
    pairs = []
    delta = sp.Rational(1, 10**5)
    for qv, kv, ev, T in ((sp.Rational(1, 100), 10, sp.Rational(1), 1000), (sp.Rational(1, 5), 2, sp.Rational(1, 2), 10),
                          (sp.Rational(1), 1, sp.Rational(1), 3)):
        def base(l, kv=kv, ev=ev):
            return sp.Min(l * ev**2 / (8 * kv), ev)

        curve = [base(o) if qv == 1 else sp.Min(_zw(o, qv, base), base(o)) for o in range(2, 9)]
        ok &= all(float(sp.N(curve[i + 1] - curve[i], 30)) >= 0 for i in range(len(curve) - 1))
        conv = [T * c + sp.log(sp.Rational(o - 1, o)) - (sp.log(delta) + sp.log(o)) / (o - 1)
                for o, c in zip(range(2, 9), curve)]
        want = sp.Max(0, min(conv, key=lambda e: float(sp.N(e, 30))))
        got, _ = epsilon_selection_limit(float(qv), kv, float(ev), T, 1e-5, orders=np.arange(2.0, 9.0))
        pairs.append((got, want))
        # along sigma: decreasing, above the limit, close to it at the end (the default orders)
        floor = epsilon_selection_limit(float(qv), kv, float(ev), T, 1e-5)[0]
        path = [epsilon_selected_gaussian(float(qv), 4.0**j, kv, float(ev), T, 1e-5)[0] for j in range(8)]
        ok &= all(b < a for a, b in zip(path, path[1:])) and path[-1] > floor and path[-1] - floor < 1e-5
    ok &= check_points(show, "epsilon_selection_limit against the exact limit (orders 2..8)", pairs, rtol=1e-11)
    sigmas = []
    for qv, T, e, kv, ev in ((0.01, 1000, 3.0, 10, 1.0), (0.2, 10, 4.0, 2, 0.5)):
        sig = calibrate_noise_selected(qv, T, e, 1e-5, kv, ev)
        sigmas.append(sig)
        ok &= epsilon_selected_gaussian(qv, sig, kv, ev, T, 1e-5)[0] <= e
        ok &= epsilon_selected_gaussian(qv, sig * (1 - 1e-5), kv, ev, T, 1e-5)[0] > e
        try:
            calibrate_noise_selected(qv, T, epsilon_selection_limit(qv, kv, ev, T, 1e-5)[0], 1e-5, kv, ev)
            ok = False
        except ValueError as exc:
            ok &= str(exc).startswith("epsilon=") and "selection_epsilon" in str(exc)
    show("calibrate_noise_selected at (q, T, eps, k, eps_sel) = (0.01, 1000, 3, 10, 1), (0.2, 10, 4, 2, 0.5): "
         "target met at sigma, missed at sigma (1 - 1e-5)", sp.Matrix([[sp.Float(x, 6) for x in sigmas]]))
    return bool(ok)


@derivation("PLD of Poisson-subsampled selection + Gaussian: the privacy loss of ((1-q)Q + qP, Q) from the "
            "log-likelihood ratio of the mixture, and one step's epsilon from the hockey-stick integral",
            covers=("selection.privacy_loss_selected_gaussian", "selection.epsilon_pld_selected_gaussian"))
def selected_gaussian_pld(show):
    r"""The loss that :func:`dptheory.selection.epsilon_pld_selected_gaussian` discretises, from its definition.

    1. One round of randomized response at :math:`\varepsilon/k`: :math:`p = e^{\varepsilon/k}/(1 + e^{\varepsilon/k})`;
       ``k`` rounds with ``a`` answers "first" have likelihood ratio
       :math:`p^a(1-p)^{k-a} / ((1-p)^a p^{k-a})`, whose log is :math:`\lambda_a = (\varepsilon/k)(2a - k)`.
    2. With :math:`P(a, z) = R_1(a) N(z; 1, \sigma^2)`, :math:`Q(a, z) = R_0(a) N(z; 0, \sigma^2)` and
       :math:`R_1(a) = e^{\lambda_a} R_0(a)`: :math:`X/Y = ((1-q)Q + qP)/Q = 1 - q + q e^{\lambda_a + (z - 1/2)/\sigma^2}`.
    3. :math:`\partial L / \partial z > 0`, and :math:`L = \ell` at
       :math:`z = 1/2 + \sigma^2(\log((e^\ell - 1 + q)/q) - \lambda_a)` (sympy ``solve``).
    4. :math:`\delta(e) = \int (X - e^e Y)_+ = \sum_a [X(a, z > z_a(e)) - e^e Y(a, z > z_a(e))]` (the
       integrand is positive exactly where :math:`L > e`), and for the reverse pair
       :math:`\sum_a [Y(a, z < z_a(-e)) - e^e X(a, z < z_a(-e))]`; epsilon of one step is the root of the
       larger of the two minus delta (mpmath, 30 digits).
    5. ``privacy_loss_selected_gaussian`` against step 2 at 24 points (rtol 1e-12);
       ``epsilon_pld_selected_gaussian`` at one step is at or above step 4's epsilon and within 3e-3 of it
       (its discretisation), at (q, sigma, k, eps) = (1, 1, 1, 1), (0.1, 1, 2, 1), (0.01, 0.7, 10, 0.5).
    """
    import mpmath

    from dptheory.selection import epsilon_pld_selected_gaussian, privacy_loss_selected_gaussian

    a = sp.Symbol("a", nonnegative=True, integer=True)
    e1 = eps / kk
    p = sp.exp(e1) / (1 + sp.exp(e1))
    lam = sp.simplify(sp.expand_log(sp.log(p**a * (1 - p) ** (kk - a) / ((1 - p) ** a * p ** (kk - a))), force=True))
    show("log-ratio of k randomized-response rounds with a first answers", lam)
    ok = sp.simplify(lam - e1 * (2 * a - kk)) == 0
    la, r0 = sp.Symbol("lambda", real=True), sp.Symbol("R_0", positive=True)
    P = r0 * sp.exp(la) * normal_pdf(z, 1, s)
    Q = r0 * normal_pdf(z, 0, s)
    ratio = sp.simplify(((1 - q) * Q + q * P) / Q)
    show("X / Y = ((1-q) Q + q P) / Q", ratio)
    loss = sp.log(1 - q + q * sp.exp(la + (z - sp.Rational(1, 2)) / s**2))
    ok &= sp.simplify(sp.expand(ratio - sp.exp(loss))) == 0
    dz = sp.simplify(sp.diff(loss, z))
    show("dL/dz", dz)
    ok &= bool(sp.simplify(dz * s**2 * (1 - q + q * sp.exp(la + (z - sp.Rational(1, 2)) / s**2))
                           / (q * sp.exp(la + (z - sp.Rational(1, 2)) / s**2))) == 1)
    ell = sp.Symbol("ell", real=True)
    zs = sp.solve(sp.Eq(sp.exp(loss), sp.exp(ell)), z)
    show("z at which L = ell", zs[0])
    ok &= len(zs) == 1 and sp.simplify(loss.subs(z, zs[0]) - ell) == 0
    # 5a. the implementation's loss at sample points
    pairs = []
    for qv, sv, lv in ((sp.Rational(3, 100), sp.Rational(4, 5), sp.Rational(-6, 5)), (sp.Rational(1), sp.Rational(2), 0),
                       (sp.Rational(1, 1000), sp.Rational(1, 2), sp.Rational(7, 10))):
        for zv in (-4, -1, 0, sp.Rational(1, 2), 1, 3, 5, 8):
            want = loss.subs({q: qv, s: sv, la: lv, z: zv})
            pairs.append((privacy_loss_selected_gaussian(float(zv), float(lv), float(qv), float(sv)), want))
    ok &= check_points(show, "privacy_loss_selected_gaussian", pairs, rtol=1e-12, atol=1e-15)
    # 5b. one step's epsilon from the hockey-stick integral
    got_want = []
    for qv, sv, kv, ev in ((1, 1, 1, 1), (mpmath.mpf("0.1"), 1, 2, 1), (mpmath.mpf("0.01"), mpmath.mpf("0.7"), 10, 0.5)):
        exact = _one_step_epsilon(mpmath, qv, sv, kv, ev, mpmath.mpf("1e-5"))
        got, _ = epsilon_pld_selected_gaussian(float(qv), float(sv), kv, float(ev), 1, 1e-5)
        ok &= exact <= got <= exact * (1 + 3e-3)
        got_want.append((got, exact))
    show("epsilon_pld_selected_gaussian at one step against the hockey-stick integral: numeric points "
         "(q, sigma, k, eps) = (1, 1, 1, 1), (0.1, 1, 2, 1), (0.01, 0.7, 10, 0.5); PLD / exact",
         sp.Matrix([[sp.Float(float(g_ / w_), 6) for g_, w_ in got_want]]))
    return bool(ok)


def _one_step_epsilon(mpmath, q, s, k, eps, delta):
    """epsilon of ONE step of the subsampled pair (both directions), from step 4 of selected_gaussian_pld."""
    mpmath.mp.dps = 30
    e1 = mpmath.mpf(eps) / k
    p = mpmath.exp(e1) / (1 + mpmath.exp(e1))
    atoms = [(e1 * (2 * j - k), mpmath.binomial(k, j) * p**j * (1 - p) ** (k - j),
              mpmath.binomial(k, j) * (1 - p) ** j * p ** (k - j)) for j in range(k + 1)]
    up = lambda x: mpmath.erfc(x / mpmath.sqrt(2)) / 2   # noqa: E731  P(N(0,1) > x)

    def z_at(ell, lam):
        inner = mpmath.exp(ell) - 1 + q
        return None if inner <= 0 else mpmath.mpf(1) / 2 + s * s * (mpmath.log(inner / q) - lam)

    def forward(e):     # (X, Y): L > e where z > z_a(e); e >= 0 keeps e^e - 1 + q > 0
        total = 0
        for lam, pf, pq in atoms:
            zt = z_at(e, lam)
            total += (1 - q - mpmath.exp(e)) * pq * up(zt / s) + q * pf * up((zt - 1) / s)
        return total

    def reverse(e):
        total = 0
        for lam, pf, pq in atoms:
            zt = z_at(-e, lam)
            if zt is None:
                continue
            lo = 1 - up(zt / s)
            lo1 = 1 - up((zt - 1) / s)
            total += pq * lo - mpmath.exp(e) * ((1 - q) * pq * lo + q * pf * lo1)
        return total

    out = 0
    for curve in (forward, reverse):
        if curve(0) <= delta:
            continue
        hi = mpmath.mpf(1)
        while curve(hi) > delta:
            hi *= 2
        lo = mpmath.mpf(0)
        for _ in range(80):                 # bisection: curve is decreasing in e
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if curve(mid) > delta else (lo, mid)
        out = max(out, float(hi))
    return out
