"""Simulation vs theory: convergence bounds on instances where they are (nearly) attained (issue 14).

Each test builds the worst case of the proof behind one bound of ``dptheory.convergence`` (a
quadratic with curvature exactly the constant of the assumption, step sizes at the boundary of the
allowed range, isotropic noise) and checks BOTH ``measured <= bound`` and ``bound <= K measured``
with ``K`` stated per test, so that a constant off by 1.5x fails (in the direction the instance can
detect; see the per-test notes where a bound is provably loose on every instance).

Instances (all on ``F(x) = (L/2) ||x - x*||^2`` or its ridge version):

- ``strongly_convex_last_iterate_bound``: one step of DP-SGD from ``x_1 = x*`` with ``eta_1 = 1/lambda``.
  PROVEN here: the Rakhlin-Shamir-Sridharan recursion gives ``E||x_t - x*||^2 <= 2 G^2/(lambda^2 t)``
  for every instance (see the test), so the stated ``4 (G^2 + N)/(lambda^2 t)`` is at least 2x loose
  everywhere and ``K = 2`` is the best possible; that instance attains ratio 1/2 exactly.
- ``nonconvex_biased_bound``: ``eta = 1/L`` on the isotropic quadratic, clipping bias and Gaussian
  noise on: ``x_{t+1} - x* = -(b_t + xi_t)/L``; every inequality of the descent lemma is an equality
  except the last step's term, ratio ``(T-1)/T``.
- ``nonconvex_random_k_bound`` / ``nonconvex_random_k_optimal_bound``: DP-SGD with unscaled random-k
  (clip then mask, noise on the kept coordinates, clip inactive) at ``eta = 1/L`` on the isotropic
  quadratic, where the one-step inequality of the proof is an equality: ratio bound/measured 1.012
  (exact expectation 1.009, K = 1.05); at the optimal step ``eta* = 0.9/L`` the main loss is
  ``1 - L eta/2 >= 1/2``, ratio 1.115 (exact 1.106, K = 1.2). Mutation checks (both bound functions
  x1.5 and /1.5, monkeypatched) are tests here.
- ``random_k_cd_pl_bound`` / ``random_k_cd_nonconvex_bound``: exact expectations over ALL mask
  sequences (enumerated), no statistics; ratio 1 and ``1 - (1 - k/d)^T``.
- ``top_k_gd_bound``: exactly attained at ``k = d`` (``T = 1``); for ``k < d`` the test shows the
  proven slack ``>= d/k`` at ``T = 1`` (``Delta F >= ||grad F(x_0)||^2/(2L)`` for every L-smooth F).

False-failure probabilities are stated per test (< 1e-6 each; deterministic tests: 0).
"""
import functools
import itertools
import math

import numpy as np
import pytest
from scipy import stats

from dptheory import convergence as cv
from dptheory import noise_signal as ns
from sims.measure import chain_trajectory, mean_se, ridge_sgd_replicates
from sims.mechanisms import chain, clip, gaussian_noise, random_k, top_k
from sims.models import clipped_grad_sum, dense, linear_regression


def _iso_problem(d):
    """n = d examples f_i(x) = (sqrt(d) x_i)^2/2: F(x) = ||x||^2/2, Hessian I (L = 1, mu = 1), x* = 0, F* = 0."""
    return linear_regression(d, bias=False), math.sqrt(d) * np.eye(d), np.zeros(d)


# ----------------------------------------------------------------------------- 3.2 strongly convex, last iterate
def test_strongly_convex_last_iterate_bound_sharp_factor_two():
    """``E||x_2 - x*||^2`` after one step ``eta_1 = 1/lambda`` from ``x_1 = x*`` (RSS 1-based index t = 2).

    Instance: ``sims.measure.ridge_sgd_replicates`` with X = 0, y = 0 (the data loss is ``b^2/2``,
    curvature 1 + lambda on the bias, lambda on w: lambda-strongly convex, x* = 0), start at x* = 0,
    full batch, clip C, noise sigma. At x* every per-example gradient is 0, so the signal of the only
    step used has norm 0 (G = 0) and the released gradient is pure isotropic noise of energy
    N = (d+1) sigma^2 C^2/n^2: ``x_2 = -xi/lambda``, ``E||x_2||^2 = N/lambda^2``; bound ``4N/(2 lambda^2)``.

    Why K = 2 is the best any instance can do (proof): with ``a_t = E||x_t - x*||^2`` and
    ``<grad F(x), x - x*> >= lambda ||x - x*||^2``, ``a_{t+1} <= (1 - 2/t) a_t + G^2/(lambda^2 t^2)``
    (G^2 := sup E||g||^2, here G^2 + N). ``a_1 <= G^2/lambda^2`` (strong monotonicity and
    ``||grad F(x_1)|| <= G``), so ``a_2 <= -a_1 + G^2/lambda^2 <= G^2/lambda^2 = 2 G^2/(lambda^2 * 2)``,
    and ``a_t <= c G^2/(lambda^2 t)`` propagates for every ``c >= (t+1)/(t+2)``, so ``c = 2`` holds
    for all t >= 1: the true worst case is ``2 G^2/(lambda^2 t)``, attained at t = 2 by this instance.
    Hence the stated 4 is exactly 2x loose here and at least 2x loose everywhere: dividing the bound
    by 1.5 cannot be detected by any valid instance (it stays a true bound); dividing it by more
    than 2.05 (e.g. by 100, the issue's mutation) or multiplying it by 1.5 fails this test.

    Statistics: ``lambda^2 ||x_2||^2 (n/(sigma C))^2`` summed over R replicates is chi-square with
    (d+1) R = 10^6 dof; both checks fail only if the sample mean is off by > 2.4 % (> 17 sd):
    false-failure probability < 1e-30 (chi-square tails, computed below).
    """
    n, d, lam, C, sigma, R = 10, 49, 2.0, 1.0, 1.5, 20000
    out = ridge_sgd_replicates(np.zeros((n, d)), np.zeros(n), weight_decay=lam, clip_norm=C, noise_multiplier=sigma,
                               sampling_rate=1.0, steps=1, n_replicates=R, lr=lambda t: 1.0 / (lam * (t + 1)),
                               project_radius=1e12, random_state=20240614, record=[1])
    measured = float(((out[0]) ** 2).sum(axis=1).mean())
    N = ns.noise_energy(d + 1, sigma, C, n)
    bound = cv.strongly_convex_last_iterate_bound(0.0, lam, 2, N)
    K = 2.05                      # proven optimum 2; measured ratio 2.000 (see the docstring)
    assert measured <= bound, (measured, bound)
    assert bound <= K * measured, (bound / measured, K)
    # exactness of the instance: lambda^2 measured/N is a chi-square mean with (d+1) R dof; the
    # probability that it leaves [1 - 0.024, 1 + 0.024] (both checks above are implied by it):
    dof = (d + 1) * R
    assert stats.chi2.cdf(dof * 0.976, dof) + stats.chi2.sf(dof * 1.024, dof) < 1e-30
    assert abs(measured * lam ** 2 / N - 1) < 0.024, measured * lam ** 2 / N


# ----------------------------------------------------------------------------- 3.3 non-convex, biased SGD
def _biased_run(d, C, sigma, T, x0, seed):
    """DP-SGD (clip C, noise sigma, full batch, eta = 1/L = 1) on F = ||x||^2/2; per iterate t < T:
    ||grad F||^2 and the exact clipping bias ||b_t||^2 = ||(1/n) sum clip(g_i) - grad F||^2."""
    model, X, y = _iso_problem(d)
    mech = chain(clip(C), gaussian_noise(sigma))
    traj = chain_trajectory(model, X, y, mech, lr=1.0, steps=T, sampling_rate=1.0, params0=x0, random_state=seed)
    g2, b2 = [], []
    for x in traj[:-1]:
        s, _, _ = clipped_grad_sum(dense.backprop(model, x, X, y), C)
        grad = dense.gradient(model, x, X, y)
        g2.append(float(grad @ grad))
        b = s / d - grad
        b2.append(float(b @ b))
    return np.array(g2), np.array(b2)


def test_nonconvex_biased_bound_nearly_attained_isotropic_quadratic():
    """``nonconvex_biased_bound(DeltaF, L, T, 1/L, N, mean_t ||b_t||^2)`` on F = ||x||^2/2 (L = 1).

    With eta = 1/L on an isotropic quadratic, ``x_{t+1} = -(b_t + xi_t)/L`` exactly, so
    ``||grad F(x_{t+1})||^2 = ||b_t + xi_t||^2`` with mean ``||b_t||^2 + N``, and
    ``2 DeltaF/(eta T) = ||grad F(x_0)||^2/T`` (DeltaF = F(x_0) - 0). Every step of the proof (descent
    lemma, ``eta <= 1/L``, Young on the bias) is an equality; the only slack is the last step's
    ``(||b_{T-1}||^2 + N)/T``: ratio measured/bound ``>= (T-1)/T`` in expectation (measured bound/measured = 1.020, K = 1.12).
    The variance passed is the exact one: full batch (no sampling variance) and Gaussian noise
    ``N(0, sigma^2 C^2/n^2 I_d)`` (``N = noise_energy(d, sigma, C, n)``); the bias is measured exactly
    at each iterate (clipping is active on most coordinates: sigma C/n per coordinate vs C/d).

    Statistics: S = 12 seeds; per seed D_s = measured_s - bound_s, E D_s = -(E||b_{T-1}||^2 + N)/T < 0.
    Checks: mean D <= t * se and mean bound <= K * mean measured + t * se_combined with
    t = t_{11}^{-1}(1 - 1e-7) (one-sided Student t, both checks: false failure <= 2e-7 in the
    tight case). Measured ratio bound/measured: 1.020.
    """
    d, C, sigma, T, S = 200, 1.0, 2.0, 20, 12
    rng = np.random.default_rng(7)
    x0 = rng.normal(size=d) * 0.05
    N = ns.noise_energy(d, sigma, C, d)
    dF = 0.5 * float(x0 @ x0)
    meas, bnd = [], []
    for s in range(S):
        g2, b2 = _biased_run(d, C, sigma, T, x0, seed=1000 + s)
        assert b2.mean() > 0.1 * N, "clipping bias should be a visible part of the bound"
        meas.append(g2.mean())
        bnd.append(cv.nonconvex_biased_bound(dF, 1.0, T, 1.0, N, b2.mean()))
    meas, bnd = np.array(meas), np.array(bnd)
    tq = float(stats.t.isf(1e-7, S - 1))
    m, se = mean_se(meas - bnd)
    assert m <= tq * se, ("measured above the bound", m, se)
    K = 1.12                      # measured bound/measured = 1.020 (<= T/(T-1) = 1.053 expected)
    m2, se2 = mean_se(bnd - K * meas)
    assert m2 <= tq * se2, ("bound not nearly attained", bnd.mean() / meas.mean(), K)


# ----------------------------------------------------------------------------- 3.3 non-convex, unscaled random-k
#: The two random-k instances: F = (L/2)||x||^2 with L = 2 (n = d examples f_i = (sqrt(d L) x_i)^2/2),
#: d = 100, k = 20, T = 500, clip C = 1 never active, sigma = 0.05, full batch (B = n = d, no sampling
#: variance: V = 0), x_0 with equal coordinates; ``a0_over_N`` = ||grad F(x_0)||^2/N. Steps: eta = 1/L,
#: or the interior optimum eta* = 0.9/L (``a0_over_N = u^2 rho T`` makes nonconvex_random_k_optimal_lr
#: return u/L with u = 0.9).
_RK = {
    "lr_one_over_L": dict(a0_over_N=10.0, K=1.05),                      # exact ratio 1.0092
    "optimal_lr": dict(a0_over_N=0.9 ** 2 * 0.2 * 500, K=1.2),           # exact ratio 1.1056
}
_RK_D, _RK_K, _RK_T, _RK_L, _RK_SIGMA, _RK_C, _RK_SEEDS = 100, 20, 500, 2.0, 0.05, 1.0, 24


def _rk_instance(name):
    """(N, DeltaF, x_0) of instance ``name``: N = d s^2 the full noise energy, DeltaF = F(x_0) - F*."""
    N = ns.noise_energy(_RK_D, _RK_SIGMA, _RK_C, _RK_D)
    g0 = math.sqrt(_RK[name]["a0_over_N"] * N / _RK_D)     # each coordinate of grad F(x_0) = L x_0
    x0 = np.full(_RK_D, g0 / _RK_L)
    return N, 0.5 * _RK_L * float(x0 @ x0), x0


def _rk_exact_mean(name, u):
    """E (1/T) sum_{t<T} ||grad F(x_t)||^2 exactly: with rho = k/d and step u/L, a kept coordinate of
    the gradient becomes (1 - u) g_j - u s z_j and the others stay, so a_{t+1} = (1 - rho u (2 - u)) a_t
    + rho u^2 N (a_t = E||grad F(x_t)||^2, N = d s^2)."""
    N, _, x0 = _rk_instance(name)
    rho, a, total = _RK_K / _RK_D, float((_RK_L * x0) @ (_RK_L * x0)), 0.0
    for _ in range(_RK_T):
        total += a
        a = (1 - rho * u * (2 - u)) * a + rho * u * u * N
    return total / _RK_T


@functools.cache
def _rk_measured(name):
    """Per seed, (1/T) sum_{t<T} ||grad F(x_t)||^2 of the simulator's chain(clip(C), random_k(k),
    gaussian_noise(sigma)) (clip then mask; noise drawn on the k kept coordinates only, so the
    released update is m * (grad F + s z), s = sigma C/B); the step is nonconvex_random_k_optimal_lr
    (u = 0.9) or 1/L. Asserts that clipping never acts (max_i ||g_i|| = d L max_j |x_j| < C)."""
    N, dF, x0 = _rk_instance(name)
    d, L = _RK_D, _RK_L
    if name == "optimal_lr":
        lr = cv.nonconvex_random_k_optimal_lr(dF, L, _RK_T, _RK_K, d, 0.0, d, N)
    else:
        lr = 1.0 / L
    model = linear_regression(d, bias=False)
    X = math.sqrt(d * L) * np.eye(d)
    mech = chain(clip(_RK_C), random_k(_RK_K), gaussian_noise(_RK_SIGMA))
    out = []
    for s in range(_RK_SEEDS):
        traj = chain_trajectory(model, X, np.zeros(d), mech, lr=lr, steps=_RK_T, sampling_rate=1.0, params0=x0,
                                random_state=20240700 + s)
        assert d * L * float(np.abs(traj).max()) < _RK_C, "clipping acted: the bound assumes it inactive"
        out.append(float((L * L * traj[:-1] ** 2).sum(axis=1).mean()))
    return float(lr), np.array(out)


def _rk_check(name):
    """The checks of one random-k instance (the bound is taken from ``cv`` at call time, so that the
    mutation test can replace it): measured <= bound, bound <= K measured (one-sided Student t at
    1e-7 each on the seed means), and the measured mean equals the exact expectation (two-sided,
    1e-7 each side)."""
    N, dF, _ = _rk_instance(name)
    lr, meas = _rk_measured(name)
    d, k, L, T, K = _RK_D, _RK_K, _RK_L, _RK_T, _RK[name]["K"]
    if name == "optimal_lr":
        assert abs(lr * L - 0.9) < 1e-12, lr * L       # interior optimum: the square-root branch
        bound = cv.nonconvex_random_k_optimal_bound(dF, L, T, k, d, 0.0, d, N)
    else:
        bound = cv.nonconvex_random_k_bound(dF, L, T, lr, k, d, 0.0, d, N)
    tq = float(stats.t.isf(1e-7, meas.size - 1))
    m, se = mean_se(meas)
    assert m - bound <= tq * se, ("measured above the bound", m, bound)
    assert bound - K * m <= tq * K * se, ("bound not nearly attained", bound / m, K)
    exact = _rk_exact_mean(name, lr * L)
    assert abs(m - exact) <= tq * se, ("simulator off the exact expectation", m, exact, se)


@pytest.mark.parametrize("name", sorted(_RK))
def test_nonconvex_random_k_bound_nearly_attained_isotropic_quadratic(name):
    """``nonconvex_random_k_bound`` (``lr_one_over_L``) and ``nonconvex_random_k_optimal_bound``
    (``optimal_lr``) on F = (L/2)||x||^2 through the simulator (instances: ``_RK``).

    Proof being tested: ``E F(x+) <= F - eta (k/d)||grad F||^2 + (L eta^2/2)(k/d)(||grad F||^2 + V/B + N)``
    and ``1 - L eta/2 >= 1/2``, telescoped. On the isotropic quadratic the descent lemma is an
    equality, the mask is independent of everything (E over m gives k/d exactly) and V = 0 (full
    batch), so the one-step inequality is an equality. The remaining losses: the factor
    ``1 - L eta/2`` (1/2 exactly at eta = 1/L, 0.55 at 0.9/L: ratio about 2 - L eta) and the dropped
    ``F(x_T) - F*`` (stationary value ``eta N/(2 - L eta)``, relative weight ``<= 1/(rho T) = 1 %``).
    Exact expected ratios bound/measured (``_rk_exact_mean``): 1.0092 at eta = 1/L (K = 1.05) and
    1.1056 at eta* = 0.9/L (K = 1.2); measured 1.012 and 1.115. Either bound x1.5 breaks
    ``bound <= K measured``, /1.5 breaks ``measured <= bound``
    (:func:`test_nonconvex_random_k_bound_mutations_fail`).

    Statistics: 24 seeds, each the average of T = 500 steps (relative sd 2.2 % and 3.1 %, se 0.46 %
    and 0.64 %); one-sided Student-t checks at t = t_{23}^{-1}(1 - 1e-7) = 7.3 on the two
    inequalities (both hold in expectation, with margins of 4 % and 8 %, i.e. 8.7 and 12 se, in
    the second) and a two-sided one against the exact
    expectation: false-failure probability <= 4e-7 per instance (normal approximation of the seed
    means, each a sum of 500 chi-square-like terms on 100 coordinates).
    """
    _rk_check(name)


@pytest.mark.parametrize("name,func", [("lr_one_over_L", "nonconvex_random_k_bound"),
                                       ("optimal_lr", "nonconvex_random_k_bound"),
                                       ("optimal_lr", "nonconvex_random_k_optimal_bound")])
@pytest.mark.parametrize("factor", [1.5, 1 / 1.5])
def test_nonconvex_random_k_bound_mutations_fail(monkeypatch, name, func, factor):
    """The bound function multiplied or divided by 1.5 (monkeypatched in ``dptheory.convergence``;
    ``nonconvex_random_k_optimal_bound`` evaluates ``nonconvex_random_k_bound`` at its step, so the
    first mutation reaches it too) must make the checks of :func:`_rk_check` fail on the same runs.
    The runs are cached: the same simulated numbers as the test above. Deterministic given them."""
    original = getattr(cv, func)
    monkeypatch.setattr(cv, func, lambda *a, **kw: factor * original(*a, **kw))
    with pytest.raises(AssertionError):
        _rk_check(name)


# ----------------------------------------------------------------------------- 3.4 coordinate methods
def _random_k_cd_exact(x0, k, T, L=1.0):
    """Random-k coordinate descent, exact gradient, step 1/L on F = (L/2)||x||^2: the EXACT
    expectations over all C(d, k)^T equally likely mask sequences (enumerated, vectorised):
    returns (E F(x_T), (1/T) sum_{t<T} E ||grad F(x_t)||^2)."""
    d = x0.size
    masks = np.array([np.isin(np.arange(d), c) for c in itertools.combinations(range(d), k)], dtype=bool)
    seqs = np.array(list(itertools.product(range(len(masks)), repeat=T)))       # (M^T, T)
    x = np.tile(x0, (len(seqs), 1))
    g2 = np.zeros(len(seqs))
    for t in range(T):
        g = L * x
        g2 += (g ** 2).sum(axis=1)
        x = x - np.where(masks[seqs[:, t]], g / L, 0.0)
    return float((0.5 * L * (x ** 2).sum(axis=1)).mean()), float(g2.mean() / T)


@pytest.mark.parametrize("d,k,T", [(3, 1, 6), (4, 2, 4), (5, 2, 3)])
def test_random_k_cd_pl_bound_exactly_attained(d, k, T):
    """``random_k_cd_pl_bound(k, d, mu = L, L, T, DeltaF) = (1 - k mu/(d L))^T DeltaF`` on F = (L/2)||x||^2
    (mu-PL with mu = L, the largest allowed): each step removes exactly the kept coordinates, so
    ``E F(x+) = (1 - k/d) F`` and the bound is attained exactly (ratio 1.000000, K = 1 + 1e-9).
    Exact expectation over all mask sequences: deterministic, false-failure probability 0."""
    x0 = np.random.default_rng(d * 10 + k).normal(size=d)
    ef, _ = _random_k_cd_exact(x0, k, T)
    bound = cv.random_k_cd_pl_bound(k, d, 1.0, 1.0, T, 0.5 * float(x0 @ x0))
    assert ef <= bound * (1 + 1e-9), (ef, bound)
    assert bound <= (1 + 1e-9) * ef, (bound / ef)


@pytest.mark.parametrize("d,k,T", [(3, 1, 10), (4, 2, 7)])
def test_random_k_cd_nonconvex_bound_nearly_attained(d, k, T):
    """``random_k_cd_nonconvex_bound(k, d, L, T, DeltaF) = 2 d L DeltaF/(k T)`` on F = (L/2)||x||^2, step 1/L:
    ``E||grad F(x_t)||^2 = (1 - k/d)^t L^2 ||x0||^2`` and the sum telescopes to the bound times
    ``1 - (1 - k/d)^T`` (bound/measured 1.0176 at d=3,k=1,T=10; 1.0079 at d=4,k=2,T=7): K = 1.02.
    Exact expectation over all mask sequences: deterministic, false-failure probability 0."""
    x0 = np.random.default_rng(d * 10 + k + 1).normal(size=d)
    _, avg_g2 = _random_k_cd_exact(x0, k, T)
    bound = cv.random_k_cd_nonconvex_bound(k, d, 1.0, T, 0.5 * float(x0 @ x0))
    K = 1.02
    assert avg_g2 <= bound * (1 + 1e-12), (avg_g2, bound)
    assert bound <= K * avg_g2, (bound / avg_g2, K)


def _top_k_gd(d, k, x0, T, L):
    """Top-k GD via the simulator (clip inactive, noise 0, top_k of the released update), step 1/L, on
    F = (L/2)||x||^2 (X = sqrt(d L) I, n = d, no bias); returns ||grad F(x_t)||^2 for t < T."""
    model = linear_regression(d, bias=False)
    X = math.sqrt(d * L) * np.eye(d)
    mech = chain(clip(1e9), gaussian_noise(0.0), top_k(k), allow_non_private=True)
    traj = chain_trajectory(model, X, np.zeros(d), mech, lr=1.0 / L, steps=T, sampling_rate=1.0, params0=x0,
                            random_state=0)
    return np.array([float((L * x) @ (L * x)) for x in traj[:-1]])


def test_top_k_gd_bound_exactly_attained_at_k_equal_d():
    """``top_k_gd_bound(k=d, d, L, T=1, DeltaF)`` = ``2 L DeltaF``: with one step of GD at eta = 1/L on
    F = (L/2)||x||^2, ``min_{t<1} ||grad F||^2 = L^2 ||x0||^2 = 2 L DeltaF``: ratio 1.000 (K = 1 + 1e-9).
    A 1.5x error in the constant in either direction fails. Deterministic (no noise): probability 0.

    For k < d no instance is tight at T = 1: every L-smooth F bounded below has
    ``DeltaF >= ||grad F(x_0)||^2/(2L)``, so the bound is >= (d/k) ||grad F(x_0)||^2 (see the next test).
    """
    d, L = 6, 2.5
    x0 = np.random.default_rng(3).normal(size=d)
    g2 = _top_k_gd(d, d, x0, 1, L)
    bound = cv.top_k_gd_bound(d, d, L, 1, 0.5 * L * float(x0 @ x0))
    assert g2.min() <= bound * (1 + 1e-9), (g2.min(), bound)
    assert bound <= (1 + 1e-9) * g2.min(), bound / g2.min()


def test_top_k_gd_bound_k_below_d_equal_magnitude_blocks():
    """Top-k GD with k < d on F = (L/2)||x||^2 from x0 with all |x0_j| equal (the equality case of
    ``||top_k g||^2 >= (k/d)||g||^2`` at the first step), T = d/k steps (one block zeroed per step):
    min_t ||g_t||^2 = k m^2 at the last step and the bound is d m^2 (m = L |x0_j|): bound = (d/k) measured
    EXACTLY, the slack that the T = 1 argument shows is unavoidable. Checked: measured <= bound and
    bound <= K measured with K = (d/k)(1 + 1e-9) = 2 (d = 6, k = 3): a 1.5x larger constant fails, a
    1.5x smaller one does not (it is detected by the k = d test above). Deterministic: probability 0.
    Ties: the magnitudes are 1 + 1e-6 j (strictly ordered), a 1e-5 relative perturbation."""
    d, k, L = 6, 3, 1.0
    x0 = np.array([(1 + 1e-6 * j) * (-1) ** j for j in range(d)])
    T = d // k
    g2 = _top_k_gd(d, k, x0, T, L)
    bound = cv.top_k_gd_bound(k, d, L, T, 0.5 * L * float(x0 @ x0))
    assert g2.min() <= bound, (g2.min(), bound)
    assert bound <= d / k * (1 + 1e-5) * g2.min(), (bound / g2.min())
