"""Derivations behind :mod:`dptheory.error_feedback` (docs/error_feedback.md).

EF21: Young's inequality fixes ``(theta, beta)``, the descent lemma with a biased direction and
the error recursion combine into a one-step inequality for the Lyapunov function
``Phi_t = f(x_t) - f* + gamma/(2 theta) G_t`` (``G_t = ||g_t - grad f(x_t)||^2``), which is then
telescoped from its base case ``Phi_0``. DP error feedback: the second moment of the privatised
gradient from the Gaussian integral, substituted into the EF-SGD bound derived in
:func:`proofs.convergence.error_feedback_descent`.
"""
from __future__ import annotations

import sympy as sp

from . import derivation
from .common import check_points, normal_pdf, telescoped_average

_N = 3
_A = sp.symbols(f"a0:{_N}", real=True)    # grad f(x_t)
_G = sp.symbols(f"g0:{_N}", real=True)    # the direction g_t


def _dot(a, b):
    return sp.Add(*[x * y for x, y in zip(a, b)])


@derivation("EF21 (Richtarik et al. 2021, Thm 1): theta, beta from Young; Lyapunov step; 2 DeltaF/(gamma T) + G0/(theta T)",
            covers=("error_feedback.ef21_parameters", "error_feedback.ef21_step_size", "error_feedback.ef21_bound"))
def ef21_lyapunov(show):
    """Young's split, the biased descent lemma, the Lyapunov step and its telescoping; the three functions (rtol 1e-12)."""
    from dptheory.error_feedback import ef21_bound, ef21_parameters, ef21_step_size
    ok = True
    # (1) Young: ||u + w||^2 <= (1+s)||u||^2 + (1+1/s)||w||^2; with E||Q(v) - v||^2 <= (1-alpha)||v||^2,
    #     v = (grad_t - g_t) + (grad_{t+1} - grad_t): G_{t+1} <= (1-alpha)(1+s) G_t + (1-alpha)(1+1/s) L^2 R_t.
    s, u, w = sp.symbols("s u w", positive=True)
    ok &= sp.simplify((1 + s) * u ** 2 + (1 + 1 / s) * w ** 2 - (u + w) ** 2
                      - (sp.sqrt(s) * u - w / sp.sqrt(s)) ** 2) == 0
    r = sp.Symbol("r", positive=True)          # r = sqrt(1 - alpha) in (0, 1)
    alpha = 1 - r ** 2
    s_star = sp.solve(sp.Eq((1 - alpha) * (1 + s), r), s)     # (1-alpha)(1+s) = sqrt(1-alpha)
    show("s with (1-alpha)(1+s) = sqrt(1-alpha)", sp.Tuple(*s_star))
    ok &= len(s_star) == 1
    theta = sp.simplify(1 - (1 - alpha) * (1 + s_star[0]))
    beta = sp.simplify((1 - alpha) * (1 + 1 / s_star[0]))
    show("theta = 1 - (1-alpha)(1+s)", theta)
    show("beta = (1-alpha)(1+1/s)", beta)
    ok &= sp.simplify(theta - (1 - r)) == 0
    ok &= sp.simplify(beta - (1 - alpha) / (1 - r)) == 0
    u = sp.Symbol("u", positive=True)                          # u = 1 - r = theta > 0 (alpha > 0)
    simple = sp.simplify((1 / (1 + sp.sqrt(beta / theta))).subs(r, 1 - u))
    show("L gamma_max = 1/(1 + sqrt(beta/theta)), in terms of u = 1 - sqrt(1 - alpha)", simple)
    ok &= sp.simplify(simple - u) == 0                         # gamma_max = theta/L = (1 - sqrt(1-alpha))/L
    # (2) descent with a biased direction (x+ = x - gamma g, L-smooth f), exact algebra at d = 3:
    #     -gamma<a, g> + (L gamma^2/2)||g||^2 = -(gamma/2)||a||^2 - (1/(2 gamma) - L/2)||x+ - x||^2 + (gamma/2)||g - a||^2
    gam, L = sp.symbols("gamma L", positive=True)
    lhs = -gam * _dot(_A, _G) + L * gam ** 2 / 2 * _dot(_G, _G)
    diff = [gi - ai for gi, ai in zip(_G, _A)]
    rhs = -gam / 2 * _dot(_A, _A) - (1 / (2 * gam) - L / 2) * gam ** 2 * _dot(_G, _G) + gam / 2 * _dot(diff, diff)
    show("descent identity: lhs - rhs", sp.expand(lhs - rhs))
    ok &= sp.expand(lhs - rhs) == 0
    # (3) Lyapunov step: Phi_{t+1} - Phi_t <= -(gamma/2)||a||^2 + cG G_t + cR R_t
    th, be, Gt, Rt, a2 = sp.symbols("theta beta G_t R_t a2", positive=True)
    step = (-gam / 2 * a2 - (1 / (2 * gam) - L / 2) * Rt + gam / 2 * Gt
            + gam / (2 * th) * ((1 - th) * Gt + be * L ** 2 * Rt - Gt))
    cG = sp.simplify(sp.diff(step, Gt))
    cR = sp.simplify(sp.diff(step, Rt))
    show("coefficient of G_t in Phi_{t+1} - Phi_t", cG)
    show("coefficient of R_t = ||x_{t+1} - x_t||^2", cR)
    ok &= cG == 0
    rho = sp.Symbol("rho", positive=True)      # sqrt(beta/theta)
    gmax = 1 / (L * (1 + rho))
    at_max = sp.simplify(cR.subs(be, rho ** 2 * th).subs(gam, gmax))
    show("coefficient of R_t at gamma_max = 1/(L(1 + sqrt(beta/theta)))", at_max)
    ok &= sp.simplify(at_max + L * rho / (2 * (1 + rho))) == 0                 # = -L rho/(2(1+rho)) <= 0
    ok &= bool(sp.simplify(sp.diff(cR, gam).subs(be, rho ** 2 * th)).is_positive)   # cR increases in gamma
    # (4) telescoping from Phi_0 = DeltaF + gamma G_0/(2 theta), Phi_T >= 0
    T, dF, G0 = sp.symbols("T DeltaF G_0", positive=True)
    _, avg = telescoped_average(gam / 2, 0, T, dF + gam * G0 / (2 * th))
    avg = sp.expand(avg)
    show("(1/T) sum_{t<T} ||grad f(x_t)||^2 <=", avg)
    ok &= sp.simplify(avg - (2 * dF / (gam * T) + G0 / (th * T))) == 0
    # (5) numbers
    pairs = []
    for a_, L_, T_, dF_, G0_ in ((0.1, 1.0, 100, 2.0, 0.0), (0.5, 3.0, 7, 0.25, 1.5), (1.0, 0.2, 1000, 5.0, 0.3)):
        rv = sp.sqrt(1 - sp.nsimplify(a_))
        th_v, be_v = theta.subs(r, rv), beta.subs(r, rv)
        t_got, b_got = ef21_parameters(a_)
        gm = 1 / (sp.nsimplify(L_) * (1 + sp.sqrt(be_v / th_v)))
        pairs += [(t_got, th_v), (b_got, be_v), (ef21_step_size(a_, L_), gm),
                  (ef21_bound(dF_, L_, T_, a_, init_error=G0_), (2 * dF_ / (gam * T) + G0_ / (th * T)).subs(
                      {gam: gm, th: th_v, T: T_})),
                  (ef21_bound(dF_, L_, T_, a_, lr=0.5 * float(gm), init_error=G0_),
                   (2 * dF_ / (gam * T) + G0_ / (th * T)).subs({gam: gm / 2, th: th_v, T: T_}))]
    pairs.append((ef21_step_size(0.25, 1.0, smoothness_tilde=2.0),
                  1 / (1 + 2 * sp.sqrt(beta.subs(r, sp.sqrt(sp.Rational(3, 4))) / theta.subs(r, sp.sqrt(sp.Rational(3, 4)))))))
    ok &= check_points(show, "ef21_parameters, ef21_step_size, ef21_bound", pairs, rtol=1e-12)
    return bool(ok)


@derivation("DP error feedback [D]: E||g + s z||^2 = ||g||^2 + d s^2, into the EF-SGD bound with s^2 = G^2 + d sigma^2 C^2/B^2",
            covers=("error_feedback.dp_error_feedback_bound",))
def dp_ef_second_moment(show):
    """Gaussian integral per coordinate, summed; then the EF-SGD bound (proofs.convergence) at ``s^2 = G^2 + N`` (rtol 1e-12)."""
    from dptheory.error_feedback import dp_error_feedback_bound
    z = sp.Symbol("z", real=True)
    gi, sd = sp.symbols("g_i s", positive=True)
    per = sp.simplify(sp.integrate((gi + sd * z) ** 2 * normal_pdf(z), (z, -sp.oo, sp.oo)))
    show("E (g_i + s z)^2, z ~ N(0, 1)", per)
    ok = sp.simplify(per - (gi ** 2 + sd ** 2)) == 0
    # sum over d = 3 coordinates with symbolic g: ||g||^2 + 3 s^2
    tot = sp.Add(*[sp.expand(per.subs(gi, g)) for g in _G])
    ok &= sp.expand(tot - _dot(_G, _G) - 3 * sd ** 2) == 0
    # into the EF-SGD bound (derived in proofs.convergence.error_feedback_descent)
    dF, L, T, G2, dl, d, sig, C, B = sp.symbols("DeltaF L T G2 delta d sigma C B", positive=True)
    s2 = G2 + d * (sig * C / B) ** 2
    bound = (2 * dF + L * s2) / sp.sqrt(T + 1) + 4 * L ** 2 * s2 * (1 - dl) / (dl ** 2 * (T + 1))
    show("DP EF-SGD bound, s^2 = G^2 + d (sigma C/B)^2", bound)
    pairs = []
    for pt in ((1, 1, 99, 1, sp.Rational(1, 2), 10, 1, 1, 8), (sp.Rational(5, 2), sp.Rational(3, 10), 400, 2,
                                                               sp.Rational(1, 10), 100, sp.Rational(3, 2), 2, 64),
               (0, 3, 0, 0, 1, 1, 0, 1, 1)):
        sub = dict(zip((dF, L, T, G2, dl, d, sig, C, B), pt))
        args = [float(v) for v in pt]
        args[2], args[5] = int(args[2]), int(args[5])
        pairs.append((dp_error_feedback_bound(*args), bound.subs(sub)))
    ok &= check_points(show, "dp_error_feedback_bound", pairs, rtol=1e-12)
    return bool(ok)


@derivation("memory SGD (Stich et al. 2018, Thm 2.4): recursion x (a+t)^2/eta_t telescoped; S_T; the bound",
            covers=("error_feedback.mem_sgd_lr", "error_feedback.mem_sgd_weight_sum", "error_feedback.mem_sgd_bound"))
def mem_sgd_unrolled(show):
    """Lemma 3.3 of the paper re-derived: weight inequality, telescoping, closed-form sums; then Theorem 2.4 (rtol 1e-12)."""
    from dptheory.error_feedback import mem_sgd_bound, mem_sgd_lr, mem_sgd_weight_sum
    mu, a, A, B, x = sp.symbols("mu a A B x", positive=True)
    t, T = sp.symbols("t T", integer=True, nonnegative=True)
    eta = 8 / (mu * (a + t))
    w = (a + t) ** 2
    # (1) (w_t/eta_t)(1 - mu eta_t/2) <= w_{t-1}/eta_{t-1}: with x = a + t, (x-1)^3 - x^2 (x - 4) = x^2 + 3x - 1 > 0
    lhs = sp.simplify(w / eta * (1 - mu * eta / 2))
    prev = sp.simplify((w / eta).subs(t, t - 1))
    gap = sp.factor(sp.expand((prev - lhs) * 8 / mu))
    show("(8/mu)(w_{t-1}/eta_{t-1} - (w_t/eta_t)(1 - mu eta_t/2))", gap)
    ok = sp.expand(gap - ((a + t) ** 2 + 3 * (a + t) - 1)) == 0
    # (2) multiply a_{t+1} <= (1 - mu eta/2) a_t + eta^2 A + eta^3 B - eta e_t by w_t/eta_t and sum t = 0..T-1:
    #     sum w_t e_t <= (w_0/eta_0)(1 - mu eta_0/2) a_0 + A sum w_t eta_t + B sum w_t eta_t^2  (a_t telescopes, a_T >= 0)
    Tn = 5                                                   # the rearrangement, exactly, at T = 5
    av, ev = sp.symbols(f"a_0:{Tn + 1}", nonnegative=True), sp.symbols(f"e_0:{Tn}", nonnegative=True)
    c = [sp.simplify((w / eta).subs(t, j)) for j in range(Tn)]
    cp = [sp.simplify(lhs.subs(t, j)) for j in range(Tn)]
    e_j = [eta.subs(t, j) for j in range(Tn)]
    slack = sp.Add(*[c[j] * ((1 - mu * e_j[j] / 2) * av[j] + e_j[j] ** 2 * A + e_j[j] ** 3 * B - e_j[j] * ev[j]
                             - av[j + 1]) for j in range(Tn)])        # >= 0 term by term (one-step inequality)
    rearranged = (cp[0] * av[0] + sp.Add(*[(cp[j] - c[j - 1]) * av[j] for j in range(1, Tn)]) - c[Tn - 1] * av[Tn]
                  + A * sp.Add(*[w.subs(t, j) * e_j[j] for j in range(Tn)])
                  + B * sp.Add(*[w.subs(t, j) * e_j[j] ** 2 for j in range(Tn)])
                  - sp.Add(*[w.subs(t, j) * ev[j] for j in range(Tn)]))
    show("sum_t (w_t/eta_t) x (one-step slack) minus its rearrangement, T = 5", sp.simplify(slack - rearranged))
    ok &= sp.simplify(sp.expand(slack - rearranged)) == 0     # a_t coefficients c'_t - c_{t-1} <= 0 by (1)
    sA = sp.factor(sp.summation(sp.simplify(w * eta), (t, 0, T - 1)))
    sB = sp.simplify(sp.summation(sp.simplify(w * eta ** 2), (t, 0, T - 1)))
    S = sp.factor(sp.summation(w, (t, 0, T - 1)))
    show("sum_{t<T} w_t eta_t", sA)
    show("sum_{t<T} w_t eta_t^2", sB)
    show("S_T = sum_{t<T} (a+t)^2", S)
    ok &= sp.simplify(sA - 4 * T * (T + 2 * a - 1) / mu) == 0            # <= 4T(T + 2a)/mu
    ok &= sp.simplify(sB - 64 * T / mu ** 2) == 0
    ok &= sp.expand(S - T / 6 * (2 * T ** 2 + 6 * a * T - 3 * T + 6 * a ** 2 - 6 * a + 1)) == 0
    ok &= sp.expand(S - T ** 3 / 3 - T / 6 * (6 * a * T - 3 * T + 6 * a ** 2 - 6 * a + 1)) == 0
    ok &= sp.simplify(lhs.subs(t, 0) - mu * a ** 2 * (a - 4) / 8) == 0    # <= mu a^3/8
    lemma = mu * a ** 3 / (8 * S) * x + 4 * T * (T + 2 * a) / (mu * S) * A + 64 * T / (mu ** 2 * S) * B
    show("Lemma 3.3: (1/S_T) sum w_t e_t <=  (x = a_0 = ||x_0 - x*||^2)", lemma)
    # (3) Theorem 2.4: A = G^2, B = (mu + 2L)(4 alpha/(alpha-4))(d/k)^2 G^2; Jensen f(x_bar) <= weighted mean
    G2, L, al, d, k = sp.symbols("G2 L alpha d k", positive=True)
    thm = lemma.subs({A: G2, B: (mu + 2 * L) * 4 * al / (al - 4) * (d / k) ** 2 * G2})
    target = (4 * T * (T + 2 * a) * G2 / (mu * S) + mu * a ** 3 * x / (8 * S)
              + 64 * T * (1 + 2 * L / mu) / (mu * S) * 4 * al / (al - 4) * (d / k) ** 2 * G2)
    ok &= sp.simplify(thm - target) == 0
    pairs = []
    for pt in ((1000, 1, 2, 1, 1, 10, 1, 70, 5), (50, sp.Rational(1, 2), 3, 2, 3, 4, 5, 40, 6),
               (7, 2, 2, sp.Rational(1, 4), 5, 5, 0, 8, 5)):
        sub = dict(zip((T, mu, L, G2, k, d, x, a, al), pt))
        f = [float(v) for v in pt]
        pairs += [(mem_sgd_bound(int(f[0]), f[1], f[2], f[3], int(f[4]), int(f[5]), f[6], f[7], f[8]), target.subs(sub)),
                  (mem_sgd_weight_sum(int(f[0]), f[7]), S.subs(sub)),
                  (mem_sgd_lr(3, f[1], f[7]), eta.subs(sub | {t: 3}))]
    ok &= check_points(show, "mem_sgd_bound, mem_sgd_weight_sum, mem_sgd_lr", pairs, rtol=1e-12)
    return bool(ok)


@derivation("DP EF21 [D]: Young twice + contraction + E||a + xi||^2 = ||a||^2 + V; Lyapunov step with the noise; telescoped",
            covers=("error_feedback.dp_ef21_step_size", "error_feedback.dp_ef21_bound"))
def dp_ef21_lyapunov(show):
    """EF21 on noisy releases v = grad f + xi: the error recursion with the noise term, the Lyapunov step,
    telescoping from Phi_0, the default H_0 of the start g_{-1} = 0; then the two functions (rtol 1e-12)."""
    from dptheory.error_feedback import dp_ef21_bound, dp_ef21_step_size
    ok = True
    # (1) Young: (1+c)u^2 + (1+1/c)w^2 - (u+w)^2 is a square, for every c > 0.
    c, u, w = sp.symbols("c u w", positive=True)
    ok &= sp.simplify((1 + c) * u ** 2 + (1 + 1 / c) * w ** 2 - (u + w) ** 2
                      - (sp.sqrt(c) * u - w / sp.sqrt(c)) ** 2) == 0
    # (2) the new error g_{t+1} - grad f(x_{t+1}) = (Q(y) - y) + xi, y = a + xi, a = grad f(x_{t+1}) - g_t.
    #     Young with c, then E||Q(y) - y||^2 <= (1-alpha)||y||^2:
    #     H_{t+1} <= (1+c)(1-alpha) E||a + xi||^2 + (1+1/c) E||xi||^2.  Pick (1+c)(1-alpha) = r = sqrt(1-alpha).
    q = sp.Symbol("q", positive=True)          # q = (1 - alpha)^(1/4) in [0, 1): rational algebra in q
    r = q ** 2                                 # r = sqrt(1 - alpha)
    alpha = 1 - r ** 2
    c_star = sp.solve(sp.Eq((1 + c) * (1 - alpha), r), c)
    show("c with (1+c)(1-alpha) = sqrt(1-alpha)", sp.Tuple(*c_star))
    ok &= len(c_star) == 1
    cs = c_star[0]
    # (3) E||a + xi||^2 = ||a||^2 + E||xi||^2: xi has conditional mean zero given a (a is fixed before xi is drawn);
    #     for the Gaussian part s z, the integral per coordinate (d = 3, symbolic a):
    z = sp.Symbol("z", real=True)
    sd = sp.Symbol("s", positive=True)
    per = [sp.simplify(sp.integrate((ai + sd * z) ** 2 * normal_pdf(z), (z, -sp.oo, sp.oo))) for ai in _A]
    show("sum_i E(a_i + s z_i)^2, z ~ N(0, I_3)", sp.Add(*per))
    ok &= sp.expand(sp.Add(*per) - _dot(_A, _A) - 3 * sd ** 2) == 0
    V, Ht, Rt, L, gam = sp.symbols("V H_t R_t L gamma", positive=True)
    s = sp.Symbol("s_y", positive=True)        # Young on a = (grad f(x_t) - g_t) + (grad f(x_{t+1}) - grad f(x_t))
    a2 = (1 + s) * Ht + (1 + 1 / s) * L ** 2 * Rt   # ||a||^2 <= (1+s) H_t + (1+1/s) L^2 R_t
    Hnext = sp.expand(r * (a2 + V) + (1 + 1 / cs) * V)
    s_star = sp.solve(sp.Eq(r * (1 + s), q), s)   # contraction factor r(1+s) = sqrt(r)
    show("s with r(1+s) = sqrt(r)", sp.Tuple(*s_star))
    ok &= len(s_star) == 1
    Hnext = sp.simplify(Hnext.subs(s, s_star[0]))
    one_m_theta = sp.simplify(sp.diff(Hnext, Ht))
    beta_L2 = sp.simplify(sp.diff(Hnext, Rt))
    nu = sp.simplify(sp.diff(Hnext, V))
    show("E H_{t+1} <= (1 - theta_hat) H_t + beta_hat L^2 R_t + nu V", Hnext)
    theta = 1 - q                              # 1 - sqrt(r) = 1 - (1 - alpha)^(1/4)
    ok &= sp.simplify(one_m_theta - (1 - theta)) == 0
    ok &= sp.simplify(beta_L2 - r / theta * L ** 2) == 0
    ok &= sp.simplify(nu - (r + 1 / (1 - r))) == 0
    beta = r / theta
    # (4) descent lemma with the biased direction g_t (exact algebra at d = 3), as in ef21_lyapunov
    lhs = -gam * _dot(_A, _G) + L * gam ** 2 / 2 * _dot(_G, _G)
    diff = [gi - ai for gi, ai in zip(_G, _A)]
    rhs = -gam / 2 * _dot(_A, _A) - (1 / (2 * gam) - L / 2) * gam ** 2 * _dot(_G, _G) + gam / 2 * _dot(diff, diff)
    ok &= sp.expand(lhs - rhs) == 0
    # (5) Lyapunov Phi_t = f(x_t) - f* + gamma/(2 theta_hat) H_t: one step
    g2 = sp.Symbol("g2", positive=True)        # ||grad f(x_t)||^2
    step = (-gam / 2 * g2 - (1 / (2 * gam) - L / 2) * Rt + gam / 2 * Ht
            + gam / (2 * theta) * (Hnext - Ht))
    cH = sp.simplify(sp.diff(step, Ht))
    cR = sp.simplify(sp.diff(step, Rt))
    cV = sp.simplify(sp.diff(step, V))
    show("coefficient of H_t in Phi_{t+1} - Phi_t", cH)
    ok &= cH == 0
    gmax = theta / L
    rho = q / (1 - q)                          # sqrt(beta_hat/theta_hat) (> 0 for q in (0, 1))
    ok &= sp.simplify(rho ** 2 - beta / theta) == 0
    ok &= sp.simplify(gmax - 1 / (L * (1 + rho))) == 0          # EF21's form 1/(L(1 + sqrt(beta/theta)))
    at_max = sp.simplify(cR.subs(gam, gmax))
    show("coefficient of R_t at gamma_max = theta_hat/L", at_max)
    ok &= sp.simplify(at_max + L * q / 2) == 0                        # = -(L/2) sqrt(r) <= 0
    ok &= bool(sp.simplify(sp.diff(cR, gam) - (1 / (2 * gam ** 2) + beta * L ** 2 / (2 * theta))) == 0)  # increasing
    show("noise per step (coefficient of V)", cV)
    ok &= sp.simplify(cV - gam * nu / (2 * theta)) == 0
    # (6) telescoping: (gamma/2) g2_t <= Phi_t - Phi_{t+1} + gamma nu V/(2 theta), Phi_0 = DeltaF + gamma H_0/(2 theta)
    T, dF, H0 = sp.symbols("T DeltaF H_0", positive=True)
    _, avg = telescoped_average(gam / 2, gam * nu * V / (2 * theta), T, dF + gam * H0 / (2 * theta))
    avg = sp.expand(avg)
    show("(1/T) sum_{t<T} E||grad f(x_t)||^2 <=", avg)
    bound = 2 * dF / (gam * T) + H0 / (theta * T) + nu * V / theta
    ok &= sp.simplify(avg - bound) == 0
    # (7) default H_0 (g_{-1} = 0, g_0 = Q(v_0)): step (2) with a = grad f(x_0), no drift: r ||grad f(x_0)||^2 + nu V;
    #     ||grad f(x_0)||^2 <= 2 L DeltaF from the descent lemma at g = grad f, gamma = 1/L: f drops by ||grad f||^2/(2L).
    ok &= sp.simplify(sp.expand(lhs.subs(dict(zip(_G, _A))).subs(gam, 1 / L)) + _dot(_A, _A) / (2 * L)) == 0
    H0_default = 2 * L * r * dF + nu * V
    # (8) no compression (alpha = 1, r -> 0): 2 DeltaF/(gamma T) + H_0/T + V with gamma <= 1/L
    ok &= sp.simplify(sp.limit(bound, q, 0, "+") - (2 * dF / (gam * T) + H0 / T + V)) == 0
    ok &= sp.limit(gmax, q, 0, "+") == 1 / L
    # (9) numbers: V = V_s + d sigma^2 C^2/B^2
    pairs = []
    for a_, L_, T_, dF_, d_, sig_, C_, B_, Vs_, H0_, frac in (
            (0.1, 1.0, 100, 2.0, 10, 1.0, 1.0, 8.0, 0.0, None, 1.0),
            (0.5, 3.0, 7, 0.25, 100, 1.5, 2.0, 64.0, 0.3, 1.5, 0.5),
            (1.0, 0.2, 1000, 5.0, 1, 0.0, 1.0, 1.0, 0.1, None, 1.0),
            (0.01, 2.0, 50000, 1.0, 1000, 0.8, 0.5, 256.0, 0.0, 0.0, 0.25)):
        qv = (1 - sp.nsimplify(a_)) ** sp.Rational(1, 4)
        Vtot = sp.nsimplify(Vs_) + d_ * (sp.nsimplify(sig_) * sp.nsimplify(C_) / sp.nsimplify(B_)) ** 2
        sub = {q: qv, L: sp.nsimplify(L_), T: T_, dF: sp.nsimplify(dF_), V: Vtot}
        gm = gmax.subs(sub)
        h0 = H0_default.subs(sub) if H0_ is None else sp.nsimplify(H0_)
        want = bound.subs(sub).subs({gam: gm * sp.nsimplify(frac), H0: h0})
        got = dp_ef21_bound(dF_, L_, T_, a_, d_, sig_, C_, B_, lr=None if frac == 1.0 else frac * float(gm),
                            init_error=H0_, grad_variance=Vs_)
        pairs += [(got, want), (dp_ef21_step_size(a_, L_), gm)]
    ok &= check_points(show, "dp_ef21_bound, dp_ef21_step_size", pairs, rtol=1e-12)
    return bool(ok)
