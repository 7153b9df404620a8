"""Numeric tests of dptheory.convergence (deterministic; no Monte Carlo)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import dptheory.convergence as cv
from dptheory.accounting import steps_for_epochs

SIGMA_STUB = 1.7


@pytest.fixture
def stub_accounting(monkeypatch):
    """Replace dptheory.accounting.calibrate_noise by a stub (the real one is tested elsewhere)."""
    import dptheory.accounting
    calls = []

    def calibrate_noise(sampling_rate, steps, epsilon, delta):
        calls.append((sampling_rate, steps, epsilon, delta))
        return SIGMA_STUB
    monkeypatch.setattr(dptheory.accounting, "calibrate_noise", calibrate_noise)
    return calls


@given(st.floats(0.1, 10), st.floats(0.1, 10), st.integers(1, 10 ** 5), st.floats(0.0, 100))
def test_convex_optimal_lr_minimises(R, G, T, N):
    eta = cv.convex_optimal_lr(R, G, T, N)
    grid = eta * np.logspace(-2, 2, 4001)
    vals = cv.convex_bound(R, G, T, grid, N)
    best = cv.convex_bound(R, G, T, eta, N)
    assert best <= vals.min() * (1 + 1e-12)
    assert best == pytest.approx(cv.convex_optimal_bound(R, G, T, N), rel=1e-12)


@given(st.integers(5, 500), st.data())
def test_random_k_factors(d, data):
    k = data.draw(st.integers(1, d))
    assert cv.convex_random_k_optimal_bound(1.0, 1.0, 100, 2.0, k, d) == pytest.approx(
        np.sqrt(d / k) * cv.convex_optimal_bound(1.0, 1.0, 100, 2.0), rel=1e-12)
    assert cv.strongly_convex_random_k_bound(1.0, 0.5, 10, 2.0, k, d) == pytest.approx(
        d / k * cv.strongly_convex_last_iterate_bound(1.0, 0.5, 10, 2.0), rel=1e-12)
    # random-k convex bound at the dense step is >= dense (only the R^2 term grows)
    assert cv.convex_random_k_bound(1.0, 1.0, 100, 0.1, 2.0, k, d) >= cv.convex_bound(1.0, 1.0, 100, 0.1, 2.0)


@settings(max_examples=25)
@given(st.integers(5, 500), st.data(), st.floats(0.01, 10), st.floats(0.1, 10), st.integers(10, 10 ** 5))
def test_nonconvex_random_k_optimal_lr_minimises(d, data, dF, L, T):
    k = data.draw(st.integers(1, d))
    V, B, N = 2.0, data.draw(st.integers(8, 256)), data.draw(st.floats(0.0, 50.0))
    eta = cv.nonconvex_random_k_optimal_lr(dF, L, T, k, d, V, B, N)
    assert 0 < eta <= 1 / L
    grid = np.linspace(1e-6, 1 / L, 20001)
    vals = cv.nonconvex_random_k_bound(dF, L, T, grid, k, d, V, B, N)
    best = cv.nonconvex_random_k_optimal_bound(dF, L, T, k, d, V, B, N)
    assert best <= vals.min() * (1 + 1e-9)
    free = np.sqrt(2 * d * dF / (k * T * L * (V / B + N)))
    if free <= 1 / L:
        assert best == pytest.approx(2 * np.sqrt(2 * d * dF * L * (V / B + N) / (k * T)), rel=1e-9)


def test_monotone_in_T():
    T = np.array([10, 100, 1000, 10 ** 4])
    for vals in (cv.convex_optimal_bound(1, 1, T, 3), cv.strongly_convex_weighted_average_bound(1, 0.1, T, 3),
                 cv.nonconvex_random_k_optimal_bound(1, 1, T, 3, 10, 1, 8, 2),
                 cv.random_k_cd_nonconvex_bound(3, 10, 1, T, 1), cv.random_k_cd_pl_bound(3, 10, 0.1, 1, T, 1),
                 cv.error_feedback_bound(1, 1, T, 2, 0.3),
                 cv.mask_then_clip_bound(3, 10, 1, 1, 0.1, 1, T, 2, 8)):
        assert np.all(np.diff(vals) < 0)


def test_biased_bound_and_variance():
    b0 = cv.nonconvex_biased_bound(1, 2, 100, 0.1, 3.0)
    assert cv.nonconvex_biased_bound(1, 2, 100, 0.1, 3.0, bias_sq=0.5) == pytest.approx(b0 + 0.5)
    assert cv.dp_gradient_variance(1.0, 16, 100, 2.0) == pytest.approx(1 / 16 + 100 * 4 / 256)
    assert cv.nonconvex_biased_optimal_lr(1e6, 2, 1, 1.0) == 0.5   # constrained at 1/L
    # (2 DeltaF + L s^2)/sqrt(T+1) at delta = 1 (no compression term), T = 99
    assert cv.error_feedback_bound(1, 1, 99, 2, 1.0) == pytest.approx((2 + 2) / 10)
    assert cv.error_feedback_bound(1, 2, 99, 3, 0.25) == pytest.approx((2 + 6) / 10 + 4 * 4 * 3 * 0.75 / (0.0625 * 100))


def test_top_k_and_cd():
    assert cv.top_k_gd_bound(4, 20, 2, 10, 3) == pytest.approx(2 * 20 * 2 * 3 / (4 * 10))
    assert cv.random_k_cd_pl_bound(20, 20, 1, 1, 1, 5) == 0.0          # k = d, mu = L: exact in one step


def test_random_freeze_constant_rho():
    lhs = cv.random_freeze_bound(np.full(300, 0.49), 50, 2.0, 1.0, 0.05, 1.0, 3.0, 16)
    # rho = 0.49 (not k/d for an integer k): the masked-descent bound a + b rho written out; it is
    # s(rho) x the mask-then-clip bound (a + b rho)/s(rho) for every spread factor s
    a = 2.0 / (0.05 * 300) + 0.05 / 2
    b = 0.05 * 50 * 9 / (2 * 256)
    assert lhs == pytest.approx(a + 0.49 * b, rel=1e-12)
    lhs10 = cv.random_freeze_bound(np.full(300, 0.2), 50, 2.0, 1.0, 0.05, 1.0, 3.0, 16)
    for spread, s in (("worst_case", 0.2), ("spread_out", np.sqrt(0.2)), (0.75, 0.2 ** 0.75)):
        assert lhs10 == pytest.approx(s * cv.mask_then_clip_bound(10, 50, 2.0, 1.0, 0.05, 1.0, 300, 3.0, 16,
                                                                    spread=spread), rel=1e-12)


@given(st.integers(1, 400), st.data(), st.floats(0.0, 10.0), st.floats(0.0, 5.0))
def test_mask_then_clip_bound_spread_forms(d, data, dF, sigma):
    """Worst case (default) a/rho + b; spread out a/sqrt(rho) + b sqrt(rho) = tradeoff_bound; worst >= spread."""
    import dptheory.noise_signal as ns
    k = data.draw(st.integers(1, d))
    a, b = ns.tradeoff_coefficients(dF, 2.0, 0.1, 1.5, 50, d, sigma, 16)
    rho = k / d
    worst = cv.mask_then_clip_bound(k, d, dF, 2.0, 0.1, 1.5, 50, sigma, 16)
    spread = cv.mask_then_clip_bound(k, d, dF, 2.0, 0.1, 1.5, 50, sigma, 16, spread="spread_out")
    assert worst == pytest.approx(a / rho + b, rel=1e-12)
    assert spread == pytest.approx(ns.tradeoff_bound(rho, a, b, spread="spread_out"), rel=1e-12)
    assert worst >= spread * (1 - 1e-12)


def test_private_bounds_use_calibrated_sigma(stub_accounting):
    n, B, epochs = 6000, 60, 3
    val = cv.private_convex_bound(n, 100, 2.0, 1e-5, epochs, B, 1.0, 1.0, 1.0, k=10)
    assert stub_accounting[-1] == (B / n, 300, 2.0, 1e-5)
    N = 100 * SIGMA_STUB ** 2 / B ** 2
    assert val == pytest.approx(cv.convex_random_k_optimal_bound(1.0, 1.0, 300, N, 10, 100), rel=1e-12)
    mtc = cv.private_mask_then_clip_bound(n, 100, 2.0, 1e-5, epochs, B, 10, 1.0, 1.0, 0.1, 1.0)
    assert mtc == pytest.approx(cv.mask_then_clip_bound(10, 100, 1.0, 1.0, 0.1, 1.0, 300, SIGMA_STUB, B))
    mtc_s = cv.private_mask_then_clip_bound(n, 100, 2.0, 1e-5, epochs, B, 10, 1.0, 1.0, 0.1, 1.0, spread="spread_out")
    assert mtc_s == pytest.approx(cv.mask_then_clip_bound(10, 100, 1.0, 1.0, 0.1, 1.0, 300, SIGMA_STUB, B,
                                                          spread="spread_out"))
    assert mtc_s < mtc


@pytest.mark.parametrize("spread", ["worst_case", "spread_out", 0.7])
@pytest.mark.parametrize("d,B", [(5, 8), (40, 8), (300, 16), (500, 256)])
def test_optimal_k_mask_then_clip_brute_force(stub_accounting, d, B, spread):
    k, val = cv.optimal_k(6000, d, 2.0, 1e-5, 2, B, delta_f=1.0, smoothness=1.0, lr=0.05, spread=spread)
    T = steps_for_epochs(B / 6000, 2)  # the toolkit-wide epoch convention
    allv = [cv.mask_then_clip_bound(kk, d, 1.0, 1.0, 0.05, 1.0, T, SIGMA_STUB, B, spread=spread)
            for kk in range(1, d + 1)]
    assert k == int(np.argmin(allv)) + 1 and val == pytest.approx(min(allv), rel=1e-12)
    if spread == "worst_case":
        assert k == d                     # a/rho + b decreases in rho: never sparsify
    assert cv.optimal_k(6000, d, 2.0, 1e-5, 2, B, delta_f=1.0, smoothness=1.0, lr=0.05)[0] == d   # the default


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_optimal_k_fixed_set_brute_force(stub_accounting, seed):
    d = 60
    prof = np.random.default_rng(seed).pareto(1.5, size=d)
    k, val = cv.optimal_k(6000, d, 2.0, 1e-5, 2, 32, kind="fixed_set", radius=2.0, lipschitz=1.0,
                          smoothness=1.0, energy_profile=prof)
    phi = np.cumsum(np.sort(prof)[::-1]) / prof.sum()
    T = steps_for_epochs(32 / 6000, 2)
    brute = [0.5 * 4 * (1 - phi[kk - 1]) + 2 * np.sqrt(phi[kk - 1])
             * np.sqrt(phi[kk - 1] + kk * SIGMA_STUB ** 2 / 32 ** 2) / np.sqrt(T) for kk in range(1, d + 1)]
    assert k == int(np.argmin(brute)) + 1 and val == pytest.approx(min(brute), rel=1e-10)


@pytest.mark.parametrize("call", [
    lambda: cv.convex_bound(-1, 1, 10, 0.1, 1), lambda: cv.convex_bound(1, 1, 0, 0.1, 1),
    lambda: cv.convex_bound(1, 1, 10, 0.0, 1), lambda: cv.convex_optimal_lr(1, 0, 10, 0),
    lambda: cv.convex_random_k_bound(1, 1, 10, 0.1, 1, 11, 10),
    lambda: cv.fixed_set_bound(-1, 1, 1, 10, 2, 1, 1, 8),
    lambda: cv.strongly_convex_last_iterate_bound(1, 0, 10, 1),
    lambda: cv.strongly_convex_weighted_average_bound(1, 1, 0, 1),
    lambda: cv.nonconvex_biased_bound(1, 2, 10, 0.6, 1), lambda: cv.nonconvex_biased_bound(1, 2, 10, 0.1, -1),
    lambda: cv.nonconvex_random_k_bound(1, 1, 10, 0.5, 0, 10, 1, 8, 1),
    lambda: cv.mask_then_clip_bound(1, 10, 1, 1, 0.1, 0, 10, 1, 8),
    lambda: cv.mask_then_clip_bound(1, 10, 1, 1, 0.1, 1, 10, 1, 8, spread="sqrt"),
    lambda: cv.mask_then_clip_bound(1, 10, 1, 1, 0.1, 1, 10, 1, 8, spread=0.25),
    lambda: cv.optimal_k(100, 10, 1, 1e-5, 1, 10, delta_f=1, smoothness=1, lr=0.1, spread="best"),
    lambda: cv.random_freeze_bound([0.5, 0.0], 10, 1, 1, 0.1, 1, 1, 8),
    lambda: cv.random_k_cd_pl_bound(1, 10, 2, 1, 10, 1), lambda: cv.error_feedback_bound(1, 1, 10, 1, 0.0),
    lambda: cv.calibrated_sigma(100, 200, 1, 1, 1e-5), lambda: cv.calibrated_sigma(100, 10, 1, 1, 1.0),
    lambda: cv.calibrated_sigma(100, 10, 1, 0, 1e-5),
    lambda: cv.optimal_k(100, 10, 1, 1e-5, 1, 10, kind="bad"),
    lambda: cv.optimal_k(100, 10, 1, 1e-5, 1, 10, delta_f=1, smoothness=1),
    lambda: cv.optimal_k(100, 10, 1, 1e-5, 1, 10, kind="fixed_set", radius=1, lipschitz=1, smoothness=1,
                         energy_profile=np.ones(5)),
])
def test_validation(call, stub_accounting):
    with pytest.raises(ValueError):
        call()


def test_mask_then_clip_non_broadcasting_arrays_name_the_parameters():
    import dptheory.noise_signal as ns
    with pytest.raises(ValueError, match=r"^k and d do not broadcast together"):
        cv.mask_then_clip_bound([1, 2, 3], [10, 20], 1, 1, 0.1, 1, 10, 1, 8)
    with pytest.raises(ValueError, match=r"^delta_f and sigma do not broadcast together"):
        ns.optimal_keep_fraction(10, [1.0, 2.0], 8, [1.0, 2.0, 3.0], 1, 0.1, 1, 10)
    with pytest.raises(ValueError, match=r"^lr and steps do not broadcast together"):
        ns.sparsification_helps(10, 1.0, 8, 1.0, 1, [0.1, 0.2], 1, [10, 20, 30], spread="spread_out")
