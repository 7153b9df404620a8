"""dptheory.error_feedback against plain-NumPy simulations of each algorithm (docs/error_feedback.md), and
DP EF21 against the simulator itself: the NumPy DP EF21 update is checked step by step against the chain
clip -> gaussian_noise -> error_feedback(top_k(k, "noisy"), "ef21") run by sims.step.dpsgd_step, and two of
its instances are re-run by the simulator (dpsgd_step on sims.models.linear_regression; sims.train.train).

Each bound is checked two ways: the simulated quantity is below it, and it is within a stated
factor K of the simulated quantity on an instance chosen to come close to it (quadratics,
1-sparse gradients, the largest allowed step). Fixed seeds; statistical checks state their
false-failure probability (one-sided Student-t, total <= 1e-7 per test).
"""
import math
import types

import numpy as np
import pytest
from scipy import stats

from dptheory import error_feedback as ef
from dptheory.convergence import error_feedback_bound
from dptheory.noise_signal import contraction_top_k, noise_energy
from sims.mechanisms import InitContext, StepContext, chain, clip, error_feedback, gaussian_noise, top_k
from sims.models import Backprop, Layout, gradient, linear_regression
from sims.noise import standard_normal
from sims.optim import sgd
from sims.rng import derive_seed
from sims.step import dpsgd_step, step_context
from sims.train import train


def _top_k(v, k):
    """Top-k by magnitude along the last axis (ties: argpartition's order)."""
    out = np.zeros_like(v)
    idx = np.argpartition(-np.abs(v), k - 1, axis=-1)[..., :k]
    np.put_along_axis(out, idx, np.take_along_axis(v, idx, axis=-1), axis=-1)
    return out


def _t(dof, n_checks, p=1e-7):
    return float(stats.t.isf(p / n_checks, dof))


def _mean_se(x):
    x = np.asarray(x, dtype=float)
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))


# ----------------------------------------------------------------------------- EF21
def _ef21_run(hess_diag, x0, gamma, k, T, g0=None):
    """EF21 (one node) on f(x) = (1/2) sum_i h_i x_i^2: x+ = x - gamma g, g+ = g + top_k(grad f(x+) - g).

    Returns ||grad f(x_t)||^2 for t = 0..T-1 (deterministic)."""
    h = np.asarray(hess_diag, float)
    x = np.array(x0, float)
    g = h * x if g0 is None else np.array(g0, float)
    out = np.empty(T)
    for t in range(T):
        out[t] = float(np.sum((h * x) ** 2))
        x = x - gamma * g
        g = g + _top_k(h * x - g, k)
    return out


def test_ef21_bound_is_attained_without_compression():
    """alpha = 1 (top-d): gamma_max = 1/L and EF21 is gradient descent; on f = (L/2)||x||^2 one step
    reaches the minimum, so the average is ||grad f(x_0)||^2/T = L^2 ||x_0||^2/T, EXACTLY the bound
    2 DeltaF/(gamma T). K = 1 + 1e-9: a leading constant 1.5x too small or too large fails."""
    L, d, T = 2.0, 6, 50
    x0 = np.random.default_rng(0).standard_normal(d)
    gam = ef.ef21_step_size(1.0, L)
    assert gam == pytest.approx(1 / L, rel=1e-15)
    meas = _ef21_run(np.full(d, L), x0, gam, d, T).mean()
    bound = ef.ef21_bound(L * x0 @ x0 / 2, L, T, 1.0)
    assert meas <= bound * (1 + 1e-12) and bound <= (1 + 1e-9) * meas, (meas, bound)


def test_ef21_bound_within_two_on_one_sparse_gradients():
    """Top-1 in d = 10 (alpha = 0.1, gamma_max L = 0.0513) on f(x) = (L/2) x_0^2: every
    grad f(x_{t+1}) - g_t is 1-sparse, so EF21 is gradient descent with gamma_max and the average
    is L DeltaF (1 - (1-gamma L)^{2T}) ... /T; the bound is (2 - gamma L)(1 + o(1)) times it
    (measured ratio 1.949). K = 2: a leading constant 1.5x too large gives 2.92 and fails (the
    test above catches one 1.5x too small)."""
    L, d, T = 1.0, 10, 2000
    h = np.zeros(d); h[0] = L
    x0 = np.random.default_rng(1).standard_normal(d); x0[0] = 3.0
    gam = ef.ef21_step_size(0.1, L)
    theta, beta = ef.ef21_parameters(0.1)
    assert gam * L == pytest.approx(1 / (1 + math.sqrt(beta / theta)), rel=1e-14)
    meas = _ef21_run(h, x0, gam, 1, T).mean()
    bound = ef.ef21_bound(L * x0[0] ** 2 / 2, L, T, 0.1)
    ratio = bound / meas
    assert 1.0 <= ratio <= 2.0, ratio
    assert ratio == pytest.approx(2 - gam * L, rel=0.01)


@pytest.mark.parametrize("seed", range(6))
def test_ef21_bound_holds_with_active_compression(seed):
    """Random diagonal quadratics, d = 20, top-k for k in {1, 2, 5}, eigenvalues in [0.05 L, L],
    gamma in {gamma_max, gamma_max/3}, g_0 = grad f(x_0) or g_0 = 0 (then G_0 = ||grad f(x_0)||^2):
    the average never exceeds ef21_bound, and at gamma_max with g_0 = grad f(x_0) the bound is
    within K = 2.5 of it (measured bound/average 1.96-2.16 over the 18 cases: the descent lemma's
    factor 2 at small gamma L). Deterministic."""
    rng = np.random.default_rng(100 + seed)
    d, L, T = 20, 1.0, 600
    h = L * np.concatenate([[1.0], rng.uniform(0.05, 1.0, d - 1)])
    x0 = rng.standard_normal(d)
    dF = float(0.5 * np.sum(h * x0 ** 2))
    for k in (1, 2, 5):
        a = k / d
        assert 1 - a == pytest.approx(contraction_top_k(k, d))
        gmax = ef.ef21_step_size(a, L)
        for gam in (gmax, gmax / 3):
            meas = _ef21_run(h, x0, gam, k, T).mean()
            bound = ef.ef21_bound(dF, L, T, a, lr=gam)
            assert meas <= bound * (1 + 1e-12)
            if gam == gmax:
                assert bound <= 2.5 * meas, (k, bound / meas)
            g0 = np.zeros(d)
            meas0 = _ef21_run(h, x0, gam, k, T, g0=g0).mean()
            assert meas0 <= ef.ef21_bound(dF, L, T, a, lr=gam, init_error=float(np.sum((h * x0) ** 2))) * (1 + 1e-12)


# ----------------------------------------------------------------------------- DP error feedback
def _dp_ef_run(d, k, L, T, sigma, C, B, X0, rng):
    """DP EF-SGD on F = (L/2)||x||^2, all B per-example gradients L x (clipped at C), Gaussian noise
    N(0, sigma^2 C^2) on their sum, divided by B; then p = gamma u + e, x -= top_k(p), e = p - top_k(p).
    Vectorised over the rows of X0 (independent runs). Returns (||grad F(x_t)||^2 for t = 0..T,
    ||u_t||^2 for t = 0..T-1, max per-example norm)."""
    gam = 1.0 / math.sqrt(T + 1)
    X, E = X0.copy(), np.zeros_like(X0)
    g2, u2 = np.empty((X0.shape[0], T + 1)), np.empty((X0.shape[0], T))
    max_norm = 0.0
    for t in range(T):
        grad = L * X
        norms = np.linalg.norm(grad, axis=1, keepdims=True)
        max_norm = max(max_norm, float(norms.max()))
        clipped = grad * np.minimum(1.0, C / np.maximum(norms, 1e-300))
        u = (B * clipped + sigma * C * rng.standard_normal(X.shape)) / B
        g2[:, t] = np.sum(grad ** 2, axis=1)
        u2[:, t] = np.sum(u ** 2, axis=1)
        p = gam * u + E
        q = _top_k(p, k)
        X, E = X - q, p - q
    g2[:, T] = np.sum((L * X) ** 2, axis=1)
    return g2, u2, max_norm


def test_dp_error_feedback_bound_holds_and_is_within_2_5():
    """d = 50, top-45 (delta = 0.9, so the memory term is 2 % of the bound), L = 1, T = 400, sigma = 1, C = 1, B = 10 (noise energy
    N = 0.5), 32 independent runs from the stationary law of the noisy iteration (no warm-up);
    clipping is never active (checked), so the privatised gradient is grad F + (sigma C/B) z.

    - The noise the bound adds: the measured mean of ||u_t||^2 - ||grad F(x_t)||^2 is N within
      t se (a 1.5x error in d sigma^2 C^2/B^2 fails).
    - measured <= bound: per-run ratio R_r = avg_t ||grad F||^2 / bound_r with
      G^2 = max_t of the runs' mean ||grad F(x_t)||^2, mean(R) + t se <= 1;
    - bound <= K measured, K = 2.5: mean(R) - t se >= 1/K (measured mean R = 0.473 +- 0.004: the EF-SGD
      proof's Young step costs the factor 2; a leading constant 1.5x too large gives 0.32, fails).

    One-sided Student-t thresholds on 31 dof, three checks, total false-failure probability <= 1e-7."""
    d, k, L, T, R = 50, 45, 1.0, 400, 32
    sigma, C, B = 1.0, 1.0, 10.0
    N = noise_energy(d, sigma, C, B)
    gam = 1.0 / math.sqrt(T + 1)
    s2 = (sigma * C / B) ** 2
    v = gam * s2 / (L * (2 - gam * L))                 # stationary variance of dense SGD per coordinate
    rng = np.random.default_rng(2024)
    X0 = math.sqrt(v) * rng.standard_normal((R, d))
    g2, u2, max_norm = _dp_ef_run(d, k, L, T, sigma, C, B, X0, rng)
    assert max_norm < C                                # clipping inactive: G^2 bounds E||g_t||^2 exactly
    thr = _t(R - 1, 3)
    m, se = _mean_se((u2 - g2[:, :T]).mean(axis=1))
    assert abs(m - N) <= thr * se, (m, se, N)
    G2 = float(g2.mean(axis=0).max())
    dF = 0.5 * L * np.sum(X0 ** 2, axis=1)
    bounds = np.array([ef.dp_error_feedback_bound(f, L, T, G2, k / d, d, sigma, C, B) for f in dF])
    assert bounds == pytest.approx([error_feedback_bound(f, L, T, G2 + N, k / d) for f in dF], rel=1e-14)
    ratio = g2.mean(axis=1) / bounds
    m, se = _mean_se(ratio)
    assert m + thr * se <= 1.0, (m, se)
    assert m - thr * se >= 1 / 2.5, (m, se)


# ----------------------------------------------------------------------------- DP EF21
def _fixed_direction(r):
    """An alpha-contractive compressor (r = sqrt(1 - alpha)) that is NOT top-k: Q(y) = y + r||y|| e_0, so
    ||Q(y) - y||^2 = (1 - alpha)||y||^2 exactly. Its error always points along e_0: a persistent bias."""
    def q(y):
        out = y.copy()
        out[:, 0] += r * np.linalg.norm(y, axis=1)
        return out
    return q


def _dp_ef21_run(h, X0, gam, compress, T, sigma, C, B, rng, offsets=None, normals=None, trace=None):
    """DP EF21 as the simulator's chain clip(C) -> gaussian_noise(sigma) -> error_feedback(Q, "ef21"), plain SGD:
    per-example gradients h*x + c_i on f = (1/2) sum_j h_j x_j^2 (the c_i sum to zero; a batch of B drawn with
    replacement, or B copies of h*x when offsets is None), clipped at C, summed, plus N(0, sigma^2 C^2 I), / B;
    g <- g + Q(v - g) from g = 0, x <- x - gam g. Vectorised over the rows of X0 (independent runs).
    ``normals(t, shape)`` (default ``rng.standard_normal(shape)``) gives step t's standard normals; ``trace``,
    a list, receives (x_t, g_t, batch indices or None) for every step (test_dp_ef21_numpy_update_matches_the_simulator
    replays both against sims.step.dpsgd_step). Returns (||grad f(x_t)||^2 for t < T, largest per-example
    gradient norm seen)."""
    X, G = X0.copy(), np.zeros_like(X0)
    out = np.empty((X0.shape[0], T))
    max_norm = 0.0
    for t in range(T):
        grad = h * X
        out[:, t] = np.sum(grad ** 2, axis=1)
        idx = None
        if offsets is None:
            per = grad[:, None, :]                                       # all B examples alike
        else:
            idx = rng.integers(0, offsets.shape[0], size=(X.shape[0], B))
            per = grad[:, None, :] + offsets[idx]
        norms = np.linalg.norm(per, axis=2, keepdims=True)
        max_norm = max(max_norm, float(norms.max()))
        clipped = per * np.minimum(1.0, C / np.maximum(norms, 1e-300))
        total = clipped.sum(axis=1) * (B if offsets is None else 1)
        z = rng.standard_normal(X.shape) if normals is None else normals(t, X.shape)
        v = (total + sigma * C * z) / B
        G = G + compress(v - G)
        if trace is not None:
            trace.append((X.copy(), G.copy(), idx))
        X = X - gam * G
    return out, max_norm


def _holds_within(bound, m, se, K, thr):
    """measured <= bound and bound <= K measured, each with a one-sided t margin: m + thr se <= bound <= K (m - thr se)."""
    return bool(m + thr * se <= bound <= K * (m - thr * se))


def test_dp_ef21_bound_is_attained_without_compression_and_noise():
    """alpha = 1, sigma = 0, V = 0: DP EF21 is gradient descent with gamma = 1/L, and on f = (L/2)||x||^2 with
    g_0 = grad f(x_0) the average is ||grad f(x_0)||^2/T = 2 L DeltaF/T, EXACTLY the bound (it then equals
    ef21_bound). K = 1 + 1e-9; the bound divided or multiplied by 1.5 fails. Deterministic."""
    L, d, T = 2.0, 6, 40
    x0 = np.random.default_rng(3).standard_normal(d) * 0.1
    gam = ef.dp_ef21_step_size(1.0, L)
    assert gam == pytest.approx(1 / L, rel=1e-15)
    meas, _ = _dp_ef21_run(np.full(d, L), x0[None], gam, lambda y: y, T, 0.0, 10.0, 5, np.random.default_rng(0))
    meas = float(meas.mean())
    bound = ef.dp_ef21_bound(L * x0 @ x0 / 2, L, T, 1.0, d, 0.0, 10.0, 5)
    assert bound == pytest.approx(ef.ef21_bound(L * x0 @ x0 / 2, L, T, 1.0), rel=1e-14)
    for b, expect in ((bound, True), (bound / 1.5, False), (bound * 1.5, False)):
        assert (meas <= b * (1 + 1e-12) and b <= (1 + 1e-9) * meas) == expect, (b, meas)


def test_dp_ef21_noise_term_is_attained_without_compression():
    """alpha = 1 (top-d), gamma = 1/L on f = (L/2)||x||^2 (L = 1, d = 100): x_{t+1} = -xi_t/L, so
    E||grad f(x_t)||^2 = V_tot = V + d sigma^2 C^2/B^2 for t >= 1, and the bound (default H_0 = V_tot at
    alpha = 1) exceeds the expected average by exactly 2 V_tot/T: ratio (a + (T+1) V_tot)/(a + (T-1) V_tot),
    a = ||grad f(x_0)||^2. Here sigma = 0.4, C = 1, B = 10 (N = 0.16) and per-example offsets c_i of norm 0.6
    drawn with replacement (sampling variance V = 0.036, 18 % of V_tot), T = 50, 256 runs; clipping is never
    active (checked), so the privatised gradient is unbiased.

    - measured <= bound and bound <= K measured with K = 1.07 (measured ratio 1.043);
    - mutations fail: the bound / 1.5, the bound with the noise energy 1.5 x too large, and the bound
      without the sampling variance V (then it is BELOW the measured average).
    One-sided Student-t margins on 255 dof, four checks, false-failure probability <= 1e-7."""
    d, L, T, R, n = 100, 1.0, 50, 256, 64
    sigma, C, B = 0.4, 1.0, 10
    rng = np.random.default_rng(2025)
    c = rng.standard_normal((n, d))
    c -= c.mean(axis=0)
    c *= 0.6 / np.linalg.norm(c, axis=1, keepdims=True)
    c -= c.mean(axis=0)                                   # mean exactly zero again (norms stay ~0.6)
    V = float(np.mean(np.sum(c ** 2, axis=1))) / B       # E||mean of B draws with replacement||^2
    N = noise_energy(d, sigma, C, B)
    x0 = np.zeros(d); x0[0] = 0.3
    gam = ef.dp_ef21_step_size(1.0, L)
    g2, max_norm = _dp_ef21_run(np.full(d, L), np.tile(x0, (R, 1)), gam, lambda y: y, T, sigma, C, B, rng,
                                offsets=c)
    assert max_norm < C
    m, se = _mean_se(g2.mean(axis=1))
    thr = _t(R - 1, 4)
    dF = 0.5 * L * x0 @ x0
    bound = ef.dp_ef21_bound(dF, L, T, 1.0, d, sigma, C, B, grad_variance=V)
    a0 = L ** 2 * x0 @ x0
    assert bound == pytest.approx((a0 + (T + 1) * (V + N)) / T, rel=1e-12)
    assert _holds_within(bound, m, se, 1.07, thr), (m, se, bound, bound / m)
    assert not _holds_within(bound / 1.5, m, se, 1.07, thr)
    assert not _holds_within(ef.dp_ef21_bound(dF, L, T, 1.0, d, sigma * math.sqrt(1.5), C, B, grad_variance=V),
                             m, se, 1.07, thr)
    assert not _holds_within(ef.dp_ef21_bound(dF, L, T, 1.0, d, sigma, C, B), m, se, 1.07, thr)


def test_dp_ef21_delta_f_term_within_two_on_one_sparse_gradients():
    """Top-1 in d = 10 (alpha = 0.1, gamma_max L = 1 - 0.9^(1/4) = 0.026), sigma = 0, g_0 = grad f(x_0) on
    f = (L/2) x_0^2: every v - g is 1-sparse, so DP EF21 is gradient descent with gamma_max and the bound
    2 DeltaF/(gamma T) is (2 - gamma L)/(1 - (1 - gamma L)^(2T)) times the average (measured 1.974). K = 2:
    a DeltaF term 1.5x too large gives 2.96 and fails (the alpha = 1 tests catch one 1.5x too small). Deterministic."""
    L, d, T, k = 1.0, 10, 4000, 1
    h = np.zeros(d); h[0] = L
    x0 = np.zeros(d); x0[0] = 3.0
    gam = ef.dp_ef21_step_size(k / d, L)
    assert gam * L == pytest.approx(1 - 0.9 ** 0.25, rel=1e-14)
    X, G, out = x0.copy(), h * x0, []
    for _ in range(T):                                    # g_0 = grad f(x_0): the paper's start
        out.append(float(np.sum((h * X) ** 2)))
        X = X - gam * G
        G = G + _top_k(h * X - G, k)
    meas = float(np.mean(out))
    bound = ef.dp_ef21_bound(L * x0[0] ** 2 / 2, L, T, k / d, d, 0.0, 1.0, 1, init_error=0.0)
    ratio = bound / meas
    assert 1.0 <= ratio <= 2.0, ratio
    assert ratio == pytest.approx((2 - gam * L) / (1 - (1 - gam * L) ** (2 * T)), rel=1e-9)
    assert not 1.0 <= 1.5 * ratio <= 2.0


@pytest.mark.parametrize("alpha, K", [(0.9, 10.0), (0.5, 17.0)])
def test_dp_ef21_noise_term_with_compression_fixed_direction_compressor(alpha, K):
    """alpha < 1: the closest instance found. The alpha-contractive Q(y) = y + sqrt(1-alpha)||y|| e_0 biases g
    persistently along e_0, so x settles where grad f = -bias and E||grad f||^2 ~ 2(1-alpha) V_tot/alpha,
    against the bound's ~ 8 V_tot/alpha^2 for small alpha. f = (L/2)||x||^2, d = 10, isotropic DP noise
    (sigma = 1, C = 1, B = 10, N = 0.1), x_0 = 0, gamma = gamma_max, T = 100/(gamma L), 32 runs, clipping
    inactive (checked). Measured bound/average: 6.8 at alpha = 0.9, 11.7 at alpha = 0.5 (it grows like
    4/alpha: no instance near the bound is known for alpha < 1, and the Young splits give ~1/alpha^2,
    so a 1.5x error in the alpha-dependent constant nu/theta_hat is NOT detectable here; the proof entry
    pins it). K = 10 and 17 (1.5x the measured ratios) catch a bound that became 1.5x looser.
    One-sided t on 31 dof, two checks, false-failure probability <= 1e-7."""
    d, L, R = 10, 1.0, 32
    sigma, C, B = 1.0, 1.0, 10
    gam = ef.dp_ef21_step_size(alpha, L)
    T = int(100 / (gam * L))
    rng = np.random.default_rng(int(alpha * 100))
    g2, max_norm = _dp_ef21_run(np.full(d, L), np.zeros((R, d)), gam, _fixed_direction(math.sqrt(1 - alpha)), T,
                                sigma, C, B, rng)
    assert max_norm < C
    m, se = _mean_se(g2.mean(axis=1))
    bound = ef.dp_ef21_bound(0.0, L, T, alpha, d, sigma, C, B)
    assert _holds_within(bound, m, se, K, _t(R - 1, 2)), (m, se, bound / m)


def test_dp_ef21_bound_holds_with_top_k_far_from_tight():
    """The simulator's compressor: top-k of v - g (k = 5 in d = 10, alpha = 0.5), isotropic DP noise (sigma = 1,
    C = 1, B = 10), diagonal quadratic with eigenvalues in [0.1 L, L], x_0 with ||grad f(x_0)|| = 0.5,
    gamma = gamma_max, T = 2000, 32 runs, clipping inactive (checked). The average is below the bound, but
    FAR below: measured bound/average = 413 (top-k refreshes the noise on only k coordinates per step,
    while the bound covers any alpha-contractive Q, e.g. the fixed-direction one above). K = 600 only
    catches a much looser bound. One-sided t on 31 dof, two checks, false failure <= 1e-7."""
    d, k, L, R, T = 10, 5, 1.0, 32, 2000
    sigma, C, B = 1.0, 1.0, 10
    rng = np.random.default_rng(77)
    h = L * np.concatenate([[1.0], rng.uniform(0.1, 1.0, d - 1)])
    x0 = rng.standard_normal(d)
    x0 *= 0.5 / np.linalg.norm(h * x0)
    gam = ef.dp_ef21_step_size(k / d, L)
    g2, max_norm = _dp_ef21_run(h, np.tile(x0, (R, 1)), gam, lambda y: _top_k(y, k), T, sigma, C, B, rng)
    assert max_norm < C
    m, se = _mean_se(g2.mean(axis=1))
    bound = ef.dp_ef21_bound(0.5 * float(np.sum(h * x0 ** 2)), L, T, k / d, d, sigma, C, B)
    assert _holds_within(bound, m, se, 600.0, _t(R - 1, 2)), (m, se, bound / m)


# ----------------------------------------------------------------------------- DP EF21 in the simulator
def _ef21_chain(C, sigma, k):
    """The simulator's DP EF21 chain (sigma = 0 is the non-private noise-free ablation)."""
    return chain(clip(C), gaussian_noise(sigma), error_feedback(top_k(k, mode="noisy"), "ef21"),
                 allow_non_private=sigma == 0)


def _replayed_normals(seed, t, d):
    """The standard normals gaussian_noise draws at step t when StepContext.rng = default_rng([seed, t]):
    standard_normal(d, derive_seed(rng)) (sims.mechanisms.clip_noise, the seed rule of _util.normals)."""
    return standard_normal(d, derive_seed(np.random.default_rng([seed, t])))


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - b) / max(np.linalg.norm(b), 1e-300))


@pytest.mark.parametrize("case", ["alpha1_sampled", "top_k_clipping_active", "top_k_identical_rows",
                                  "one_sparse_sigma0"])
def test_dp_ef21_numpy_update_matches_the_simulator(case):
    """_dp_ef21_run (the NumPy update of the DP EF21 tests above) against the simulator's chain
    clip(C) -> gaussian_noise(sigma) -> error_feedback(top_k(k, "noisy"), "ef21") run by sims.step.dpsgd_step
    with sims.optim.sgd() at lr gamma, step by step, from the same x_0 and g_{-1} = 0.

    The per-example gradients h*x_t + c_i of the NumPy run (the same batch indices, replayed from its trace)
    are handed to the chain as a Backprop record of a one-layer bias-free layout (1, d) with input 1, whose
    per-example gradient is exactly its delta row; the Gaussian draws of the NumPy run are replayed from the
    simulator's documented seed rule (_replayed_normals), so the noise is matched draw for draw and sigma > 0
    is compared directly. Checked every step: x_t, the released update = the EF21 state g_t, the chain's
    stored state, to 1e-12 relative (norm-wise, float64); the clipped fraction agrees with the NumPy clip.
    Cases: alpha = 1 (top-d vs the NumPy identity) with examples sampled with replacement (the noise-term
    test's setup); top-3 of 10 with clipping ACTIVE (offset norms 1.5 > C = 1); top-5 of 10 with B identical
    rows (the far-from-tight test's setup); top-1 of 10, sigma = 0 on the 1-sparse quadratic. Deterministic."""
    seed = {"alpha1_sampled": 11, "top_k_clipping_active": 12, "top_k_identical_rows": 13, "one_sparse_sigma0": 14}[case]
    rng0 = np.random.default_rng(seed)
    T = 40
    if case == "alpha1_sampled":
        d, k, sigma, C, B, off_norm = 20, 20, 0.4, 1.0, 10, 0.6
        h = np.ones(d)
        x0 = np.zeros(d); x0[0] = 0.3
    elif case == "top_k_clipping_active":
        d, k, sigma, C, B, off_norm = 10, 3, 1.0, 1.0, 8, 1.5
        h = np.concatenate([[1.0], rng0.uniform(0.1, 1.0, d - 1)])
        x0 = rng0.standard_normal(d)
    elif case == "top_k_identical_rows":
        d, k, sigma, C, B, off_norm = 10, 5, 1.0, 1.0, 10, None
        h = np.concatenate([[1.0], rng0.uniform(0.1, 1.0, d - 1)])
        x0 = rng0.standard_normal(d); x0 *= 0.5 / np.linalg.norm(h * x0)
    else:
        d, k, sigma, C, B, off_norm = 10, 1, 0.0, 10.0, 1, None
        h = np.zeros(d); h[0] = 1.0
        x0 = np.zeros(d); x0[0] = 3.0
        T = 300
    offsets = None
    if off_norm is not None:
        c = rng0.standard_normal((16, d))
        c -= c.mean(axis=0)
        c *= off_norm / np.linalg.norm(c, axis=1, keepdims=True)
        offsets = c - c.mean(axis=0)
    gam = ef.dp_ef21_step_size(k / d, 1.0)
    compress = (lambda y: y) if k == d else (lambda y: _top_k(y, k))
    trace = []
    _, max_norm = _dp_ef21_run(h, x0[None], gam, compress, T, sigma, C, B, np.random.default_rng(100 + seed),
                               offsets=offsets, normals=lambda t, shape: _replayed_normals(seed, t, d).reshape(shape),
                               trace=trace)
    if case == "top_k_clipping_active":
        assert max_norm > C                                # the clip formula is exercised
    lay = Layout((1, d), bias=False)
    ch, opt = _ef21_chain(C, sigma, k), sgd()
    p = x0.copy()
    state = ch.init(InitContext(model=None, layout=lay, params=p, total_steps=T, steps_per_epoch=T,
                                expected_batch_size=float(B), rng=np.random.default_rng(0)))
    ostate = opt.init(p)
    for t, (x_np, g_np, idx) in enumerate(trace):
        assert _rel(p, x_np[0]) <= 1e-12, (t, "x")
        per = np.tile(h * p, (B, 1)) if idx is None else h * p + offsets[idx[0]]
        bp = Backprop(lay, (np.ones((B, 1)),), (per,), np.zeros(B))
        sc = StepContext(model=None, layout=lay, step=t, epoch=0, params=p, bp=bp, expected_batch_size=float(B),
                         rng=np.random.default_rng([seed, t]))
        u, state, metrics = dpsgd_step(ch, state, sc)
        assert _rel(u, g_np[0]) <= 1e-12, (t, "g")
        assert _rel(state[-1]["e"], g_np[0]) <= 1e-12, (t, "state")
        n_clipped = int(np.sum(np.linalg.norm(per, axis=1) > C))
        assert metrics["clipped_fraction"] == pytest.approx(n_clipped / B), t
        p, ostate = opt.step(p, u, ostate, gam)
    assert len(trace) == T


def _one_hot_design(d, L, m):
    """Linear regression data (bias-free model) whose training loss is EXACTLY F(w) = (L/2)||w||^2: the rows
    are sqrt(d L) e_j, each j = 1..d repeated m times, y = 0, so F(w) = (1/(m d)) sum_rows (1/2) d L w_j^2."""
    X = np.tile(math.sqrt(d * L) * np.eye(d), (m, 1))
    return X, np.zeros(d * m)


def test_dp_ef21_noise_term_attained_in_the_simulator_without_compression():
    """The alpha = 1 noisy instance of test_dp_ef21_noise_term_is_attained_without_compression, run by the
    simulator: sims.step.dpsgd_step with clip(C) -> gaussian_noise(sigma) -> error_feedback(top_k(d, "noisy"),
    "ef21") on sims.models.linear_regression, plain SGD at gamma = 1/L, the measured quantity from
    sims.models.gradient on the full training set.

    Design. The simulator's per-example gradients are x_i (x_i . w - y_i), rank one along the example's
    features, so the NumPy instance's offsets c_i (a sampling variance that does not depend on w) cannot be
    expressed: on the design below a batch of B drawn from the rows has sampling variance (d - 1)||grad F||^2/B,
    not a constant. So the simulator runs the FULL
    batch, B = n (the grad_variance term V = 0; the NumPy test pins V, and its update is checked against this
    chain above), on the one-hot design _one_hot_design (d = 100, L = 1, m = 4, n = B = 400), whose loss is
    exactly f = (L/2)||w||^2. Per-example gradients are d L w_j e_j: clipping (C = 1) stays inactive (checked
    every step through the chain's clipped_fraction) when x_0 = 0.00678 e_0 (norm 0.68), chosen so that
    ||grad f(x_0)||^2 = 0.46 N as in the NumPy instance (0.09 = 0.46 x 0.196), sigma = 0.4, N = d sigma^2 C^2/B^2
    = 1e-4. Then x_{t+1} = -xi_t/L and the bound exceeds the expected average by (a + (T+1) N)/(a + (T-1) N)
    = 1.040 (T = 50); 64 runs (noise seeds default_rng([r, t])).

    - measured <= bound and bound <= K measured with K = 1.07, the NumPy test's K (measured ratio 1.039);
    - mutations fail: the bound / 1.5 and the bound with the noise energy 1.5 x too large.
    One-sided Student-t margins on 63 dof at 1e-7/3 each: the two sides of the first check (a mutation check
    can only fail falsely inside one of those events), false-failure probability <= 1e-7."""
    d, L, m, T, R = 100, 1.0, 4, 50, 64
    sigma, C = 0.4, 1.0
    X, y = _one_hot_design(d, L, m)
    n = X.shape[0]
    model = linear_regression(d, bias=False)
    N = noise_energy(d, sigma, C, n)
    x0 = np.zeros(d); x0[0] = math.sqrt(0.46 * N) / L
    assert d * L * x0[0] < C
    gam = ef.dp_ef21_step_size(1.0, L)
    ch, opt = _ef21_chain(C, sigma, d), sgd()
    avg = np.empty(R)
    for r in range(R):
        p = x0.copy()
        state = ch.init(InitContext(model=model, layout=model.layout, params=p, total_steps=T, steps_per_epoch=1,
                                    expected_batch_size=float(n), rng=np.random.default_rng(0)))
        ostate, g2 = opt.init(p), np.empty(T)
        for t in range(T):
            grad = gradient(model, p, X, y)
            g2[t] = grad @ grad
            ctx = step_context(model, p, X, y, step=t, epoch=t, expected_batch_size=float(n),
                               rng=np.random.default_rng([r, t]))
            u, state, metrics = dpsgd_step(ch, state, ctx)
            assert metrics["clipped_fraction"] == 0.0
            p, ostate = opt.step(p, u, ostate, gam)
        avg[r] = g2.mean()
    m_, se = _mean_se(avg)
    thr = _t(R - 1, 3)
    dF, a0 = 0.5 * L * x0 @ x0, L ** 2 * x0 @ x0
    bound = ef.dp_ef21_bound(dF, L, T, 1.0, d, sigma, C, n)
    assert bound == pytest.approx((a0 + (T + 1) * N) / T, rel=1e-12)
    assert _holds_within(bound, m_, se, 1.07, thr), (m_, se, bound, bound / m_)
    assert not _holds_within(bound / 1.5, m_, se, 1.07, thr)
    assert not _holds_within(ef.dp_ef21_bound(dF, L, T, 1.0, d, sigma * math.sqrt(1.5), C, n), m_, se, 1.07, thr)


def test_dp_ef21_delta_f_term_within_two_in_the_simulator_on_one_sparse_gradients():
    """The alpha = 0.1, sigma = 0 instance of test_dp_ef21_delta_f_term_within_two_on_one_sparse_gradients
    (top-1 in d = 10, f = (L/2) x_0^2, x_0 = 3 e_0, gamma = gamma_max, T = 4000), run by sims.train.train:
    mechanism clip(10) -> gaussian_noise(0) -> error_feedback(top_k(1, "noisy"), "ef21") (the non-private
    noise-free ablation), optimizer "sgd" at lr gamma, params0 = x_0, record_every = 1.

    Design: sims.models.linear_regression(10, bias=False) on ONE row sqrt(L) e_0 with y = 0 has training
    loss exactly (L/2) w_0^2 = f(w), so ||grad f(x_t)||^2 = 2 L train_loss(x_t) (the history's train_loss
    at step t is f(x_t), t = 1..T), and every per-example gradient is L w_0 e_0 (norm <= 3 < C = 10: clipping
    inactive, checked in the history). The simulator starts from g_{-1} = 0, so g_0 = top_1(grad f(x_0))
    = grad f(x_0) (1-sparse): the paper's start, H_0 = 0, as in the NumPy test. Then DP EF21 is gradient
    descent with gamma_max, and bound/average = (2 - gamma L)/(1 - (1 - gamma L)^(2T)) (measured 1.974),
    within K = 2, the NumPy test's K; a DeltaF term 1.5x too large fails. Deterministic (sigma = 0)."""
    L, d, T, k = 1.0, 10, 4000, 1
    X = np.zeros((1, d)); X[0, 0] = math.sqrt(L)
    x0 = np.zeros(d); x0[0] = 3.0
    gam = ef.dp_ef21_step_size(k / d, L)
    res = train(linear_regression(d, bias=False), types.SimpleNamespace(X_train=X, y_train=np.zeros(1)), steps=T,
                batch_size=1, sampling="shuffle", mechanism=_ef21_chain(10.0, 0.0, k), optimizer="sgd", lr=gam,
                record_every=1, params0=x0, divergence_factor=None, random_state=0)
    hist = res.history
    assert np.array_equal(hist["step"], np.arange(1, T + 1)) and np.all(hist["clipped_fraction"] == 0.0)
    g2 = np.concatenate([[(L * x0[0]) ** 2], 2 * L * hist["train_loss"][:T - 1]])
    meas = float(g2.mean())
    bound = ef.dp_ef21_bound(L * x0[0] ** 2 / 2, L, T, k / d, d, 0.0, 1.0, 1, init_error=0.0)
    ratio = bound / meas
    assert 1.0 <= ratio <= 2.0, ratio
    assert ratio == pytest.approx((2 - gam * L) / (1 - (1 - gam * L) ** (2 * T)), rel=1e-9)
    assert not 1.0 <= 1.5 * ratio <= 2.0


# ----------------------------------------------------------------------------- memory SGD (Stich et al.)
def test_mem_sgd_bound_holds_far_from_tight():
    """MEM-SGD with top-1 in d = 10 on f_i(x) = (mu/2)||x||^2 + <xi_i, x>, xi ~ N(0, I) (L = mu = 1),
    alpha = 5, shift a = (alpha + 2) d/k = 70 (Remark 2.5), T = 20000, 64 runs from x_0 = x* = 0:
    E f(x_bar_T) - f* (weighted average, weights (a + t)^2) is below the Theorem 2.4 bound with
    G^2 = d + max_t mean ||x_t||^2 (the sup of E||grad f_i(x_t)||^2, plug-in).

    The theorem is NOT nearly attained: bound/measured = 97 here (its first term alone, the SGD
    term 4T(T+2a)G^2/(mu S_T) ~ 12 G^2/(mu T), is ~20x the averaged iterate's error, and the
    memory term adds ~3x more). K = 150 is stated so the check bites a bound that became much
    looser (e.g. a dropped 1/S_T); a 1.5x error in one constant is NOT detectable by simulation.
    measured <= bound: one-sided t on 63 dof (false failure <= 1e-7)."""
    d, k, mu, L, T, R, alpha = 10, 1, 1.0, 1.0, 20000, 64, 5.0
    a = (alpha + 2) * d / k
    rng = np.random.default_rng(7)
    X, M = np.zeros((R, d)), np.zeros((R, d))
    wsum, max_x2 = np.zeros((R, d)), 0.0
    for t in range(T):
        wsum += (a + t) ** 2 * X
        max_x2 = max(max_x2, float(np.mean(np.sum(X ** 2, axis=1))))
        eta = ef.mem_sgd_lr(t, mu, a)
        p = M + eta * (mu * X + rng.standard_normal((R, d)))
        q = _top_k(p, k)
        X, M = X - q, p - q
    S = ef.mem_sgd_weight_sum(T, a)
    assert S == pytest.approx(sum((a + t) ** 2 for t in range(T)), rel=1e-12)
    xbar = wsum / S
    gap = 0.5 * mu * np.sum(xbar ** 2, axis=1)
    G2 = d * 1.0 + mu ** 2 * max_x2
    bound = ef.mem_sgd_bound(T, mu, L, G2, k, d, 0.0, a, alpha)
    m, se = _mean_se(gap)
    assert m + _t(R - 1, 1) * se <= bound, (m, se, bound)
    assert bound <= 150 * m, bound / m


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("call, match", [
    (lambda: ef.ef21_parameters(0.0), "alpha"),
    (lambda: ef.ef21_parameters(1.5), "alpha"),
    (lambda: ef.ef21_step_size(0.5, -1.0), "smoothness"),
    (lambda: ef.ef21_step_size(0.5, 1.0, smoothness_tilde=0.0), "smoothness_tilde"),
    (lambda: ef.ef21_bound(-1.0, 1.0, 10, 0.5), "delta_f"),
    (lambda: ef.ef21_bound(1.0, 1.0, 0, 0.5), "steps"),
    (lambda: ef.ef21_bound(1.0, 1.0, 10, 0.5, lr=1.0), "lr"),
    (lambda: ef.ef21_bound(1.0, 1.0, 10, 0.5, init_error=-1.0), "init_error"),
    (lambda: ef.ef21_bound([1.0, 2.0], 1.0, [10, 20, 30], 0.5), "delta_f and steps"),
    (lambda: ef.dp_error_feedback_bound(1.0, 1.0, 10, 1.0, 0.0, 10, 1.0, 1.0, 8), "compressor_delta"),
    (lambda: ef.dp_error_feedback_bound(1.0, 1.0, 10, -1.0, 0.5, 10, 1.0, 1.0, 8), "signal_second_moment"),
    (lambda: ef.dp_error_feedback_bound(1.0, 1.0, 10, 1.0, 0.5, 0, 1.0, 1.0, 8), "d"),
    (lambda: ef.dp_error_feedback_bound(1.0, 1.0, 10, 1.0, 0.5, 10, 1.0, 0.0, 8), "clip"),
    (lambda: ef.dp_ef21_step_size(0.0, 1.0), "alpha"),
    (lambda: ef.dp_ef21_step_size(0.5, 0.0), "smoothness"),
    (lambda: ef.dp_ef21_bound(-1.0, 1.0, 10, 0.5, 10, 1.0, 1.0, 8), "delta_f"),
    (lambda: ef.dp_ef21_bound(1.0, 1.0, 0, 0.5, 10, 1.0, 1.0, 8), "steps"),
    (lambda: ef.dp_ef21_bound(1.0, 1.0, 10, 1.5, 10, 1.0, 1.0, 8), "alpha"),
    (lambda: ef.dp_ef21_bound(1.0, 1.0, 10, 0.5, 0, 1.0, 1.0, 8), "d"),
    (lambda: ef.dp_ef21_bound(1.0, 1.0, 10, 0.5, 10, -1.0, 1.0, 8), "sigma"),
    (lambda: ef.dp_ef21_bound(1.0, 1.0, 10, 0.5, 10, 1.0, 0.0, 8), "clip"),
    (lambda: ef.dp_ef21_bound(1.0, 1.0, 10, 0.5, 10, 1.0, 1.0, 0), "batch"),
    (lambda: ef.dp_ef21_bound(1.0, 1.0, 10, 0.5, 10, 1.0, 1.0, 8, lr=0.2), "lr"),
    (lambda: ef.dp_ef21_bound(1.0, 1.0, 10, 0.5, 10, 1.0, 1.0, 8, init_error=-1.0), "init_error"),
    (lambda: ef.dp_ef21_bound(1.0, 1.0, 10, 0.5, 10, 1.0, 1.0, 8, grad_variance=-1.0), "grad_variance"),
    (lambda: ef.dp_ef21_bound([1.0, 2.0], 1.0, [10, 20, 30], 0.5, 10, 1.0, 1.0, 8), "delta_f and steps"),
    (lambda: ef.mem_sgd_lr(-1, 1.0, 2.0), "t"),
    (lambda: ef.mem_sgd_lr(0, 1.0, 1.0), "shift"),
    (lambda: ef.mem_sgd_weight_sum(0, 2.0), "steps"),
    (lambda: ef.mem_sgd_bound(10, 1.0, 1.0, 1.0, 1, 10, 0.0, 70.0, 4.0), "alpha"),
    (lambda: ef.mem_sgd_bound(10, 1.0, 1.0, 1.0, 1, 10, 0.0, 20.0, 5.0), "shift"),
    (lambda: ef.mem_sgd_bound(10, 1.0, 1.0, 1.0, 11, 10, 0.0, 70.0, 5.0), "k"),
])
def test_validation_errors_name_the_parameter(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_vectorised_and_scalar_outputs():
    assert isinstance(ef.ef21_bound(1.0, 1.0, 10, 0.5), float)
    arr = ef.ef21_bound(1.0, 1.0, [10, 20], [0.5, 1.0])
    assert arr.shape == (2,)
    assert arr[1] == pytest.approx(2.0 / 20)           # alpha = 1: gamma = 1/L
    th, be = ef.ef21_parameters(np.array([0.25, 1.0]))
    assert th == pytest.approx([0.5 * (2 - math.sqrt(3)), 1.0]) and be[1] == 0.0
    assert ef.mem_sgd_bound([100, 1000], 1.0, 1.0, 1.0, 1, 10, 0.0, 70.0, 5.0).shape == (2,)
    assert isinstance(ef.dp_ef21_bound(1.0, 1.0, 10, 0.5, 10, 1.0, 1.0, 8), float)
    arr = ef.dp_ef21_bound(1.0, 1.0, [10, 20], [0.5, 1.0], 10, 1.0, 1.0, 8)
    assert arr.shape == (2,)
    assert arr[1] == pytest.approx(2.0 / 20 + 10 / 64 / 20 + 10 / 64)   # alpha = 1: gamma = 1/L, H_0 = V_tot
    assert ef.dp_ef21_step_size(np.array([0.5, 1.0]), 2.0) == pytest.approx([(1 - 0.5 ** 0.25) / 2, 0.5])


def test_ef21_needs_a_step_condition_and_the_stated_one_is_conservative():
    """A step condition is necessary: on the seed-34 instance of the family below (d = 20, top-1,
    eigenvalues U(0,1)^3, x_0 scaled by 1/sqrt(h)) EF21 at 12 gamma_max exceeds 2 DeltaF/(gamma T)
    (it diverges), while at gamma_max it holds. Over 40 seeds the smallest violating multiple was
    10.5 - 24 x gamma_max: Theorem 1's condition is an order of magnitude conservative here, so
    simulation cannot pin the constant in gamma_max (the proof entry does). Deterministic."""
    rng = np.random.default_rng(34)
    d, L, T, k = 20, 1.0, 300, 1
    h = L * np.concatenate([[1.0], rng.uniform(0.0, 1.0, d - 1) ** 3])
    x0 = rng.standard_normal(d) * np.sqrt(1 / np.maximum(h, 1e-3))
    dF = float(0.5 * np.sum(h * x0 ** 2))
    gm = ef.ef21_step_size(k / d, L)
    assert _ef21_run(h, x0, gm, k, T).mean() <= ef.ef21_bound(dF, L, T, k / d)
    with np.errstate(over="ignore", invalid="ignore"):
        big = _ef21_run(h, x0, 12 * gm, k, T).mean()
    assert not np.isfinite(big) or big > 2 * dF / (12 * gm * T)
    with pytest.raises(ValueError, match="lr"):
        ef.ef21_bound(dF, L, T, k / d, lr=12 * gm)
