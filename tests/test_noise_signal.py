"""Numeric tests of dptheory.noise_signal (NumPy Monte Carlo; every MC test states its band)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import dptheory.noise_signal as ns

Z55 = 5.5   # two-sided normal tail P(|Z| > 5.5) = 3.8e-8 per comparison


@st.composite
def setting(draw):
    d = draw(st.integers(5, 500))
    k = draw(st.integers(1, d))
    B = draw(st.integers(8, 256))
    sigma = draw(st.floats(0.3, 5.0))
    return d, k, B, sigma


def test_chi_square_moments_monte_carlo():
    """Noise energy on k coordinates: mean k s^2, variance 2 k s^4. n = 200k draws, seed 0.
    Mean: 5.5-se band (CLT, false failure ~4e-8). Variance: 5.5 plug-in se of the sample variance
    (se^2 = (mu4 - var^2)/n, estimated); false failure ~1e-7 given the normal approximation."""
    rng = np.random.default_rng(0)
    k, sigma, C, B, n = 17, 1.3, 0.7, 16, 200_000
    s = sigma * C / B
    e = np.sum((s * rng.standard_normal((n, k))) ** 2, axis=1)
    mean_th, var_th = ns.noise_energy_mean(k, sigma, C, B), ns.noise_energy_var(k, sigma, C, B)
    assert abs(e.mean() - mean_th) <= Z55 * np.sqrt(var_th / n)
    c = e - e.mean()
    se_var = np.sqrt((np.mean(c ** 4) - np.mean(c ** 2) ** 2) / n)
    assert abs(e.var() - var_th) <= Z55 * se_var
    # chi-square interval: coverage 0.95 by construction; binomial 5.5-se band, false failure ~4e-8
    lo, hi = ns.noise_energy_interval(k, sigma, C, B, level=0.95)
    out = np.mean((e < lo) | (e > hi))
    assert abs(out - 0.05) <= Z55 * np.sqrt(0.05 * 0.95 / n)


def test_random_k_moments_monte_carlo():
    """Random-k masks from argsort of uniforms (seed 1, n = 100k). E||m x||^2 = (k/d)||x||^2 within 5.5 se
    (false failure ~4e-8); rescaled Q: each coordinate mean within 6 se (30 coords, Bonferroni ~6e-8),
    E||Q||^2 within 5.5 se; noise energy of the rescaled update within 5.5 se."""
    rng = np.random.default_rng(1)
    d, k, n = 30, 7, 100_000
    x = rng.normal(size=d) * np.linspace(0.1, 3, d)
    keep = np.argsort(rng.random((n, d)), axis=1)[:, :k]
    m = np.zeros((n, d)); np.put_along_axis(m, keep, 1.0, axis=1)
    kept = (m * x) @ x  # ||m x||^2 row-wise (m is 0/1)
    x2 = x @ x
    assert abs(kept.mean() - ns.signal_random_k(k, d, x2)) <= Z55 * kept.std() / np.sqrt(n)
    err = x2 - kept
    assert abs(err.mean() - ns.contraction_random_k(k, d) * x2) <= Z55 * err.std() / np.sqrt(n)
    Q = d / k * m * x
    one, second, var = ns.rescaled_random_k_moments(k, d, x2)
    assert one == 1.0
    assert np.all(np.abs(Q.mean(0) - x) <= 6.0 * Q.std(0) / np.sqrt(n))
    q2 = np.sum(Q * Q, axis=1)
    assert abs(q2.mean() - second) <= Z55 * q2.std() / np.sqrt(n)
    assert var == pytest.approx(second - x2, rel=1e-12)
    s = 0.3
    noise = np.sum((d / k * m * s * rng.standard_normal((n, d))) ** 2, axis=1)
    th = ns.noise_energy_rescaled(k, d, s, 1.0, 1.0)
    assert abs(noise.mean() - th) <= Z55 * noise.std() / np.sqrt(n)


@given(setting(), st.floats(0.01, 10.0))
def test_nsr_relations(cfg, g2):
    d, k, B, sigma = cfg
    dense = ns.nsr_dense(d, sigma, 1.0, B, g2)
    assert dense == pytest.approx(d * sigma ** 2 / (B ** 2 * g2), rel=1e-12)
    assert ns.nsr_random_k(k, d, sigma, 1.0, B, g2) == pytest.approx(dense, rel=1e-12)
    assert ns.nsr_mask_then_clip(k, d, sigma, 1.0, B, g2) == pytest.approx(k / d * dense, rel=1e-12)
    assert ns.signal_mask_then_clip(g2) == g2
    assert ns.descent_mask_then_clip(k, d, 2.0) == pytest.approx(2 * np.sqrt(k / d))


@settings(max_examples=25)
@given(setting(), st.integers(0, 2 ** 31))
def test_top_k_and_fixed_set(cfg, seed):
    d, k, B, sigma = cfg
    x = np.random.default_rng(seed).standard_t(3, size=d)
    x2 = x @ x
    top = np.sort(x * x)[::-1][:k].sum()
    phi = min(top / x2, 1.0)  # rounding can push a full sum a hair above 1
    assert phi >= ns.top_k_captured_lower_bound(k, d) - 1e-12
    assert x2 - top <= ns.contraction_top_k(k, d) * x2 + 1e-12 * x2
    assert ns.nsr_top_k(k, d, phi, sigma, 1.0, B, 1.0) <= ns.nsr_dense(d, sigma, 1.0, B, 1.0) * (1 + 1e-12)
    # a fixed set: first k coordinates
    phi_s = min(max(np.sum(x[:k] ** 2) / x2, 1e-300), 1.0)
    helps = ns.fixed_set_helps(k, d, phi_s)
    better = ns.nsr_fixed_set(k, d, phi_s, sigma, 1.0, B, 1.0) < ns.nsr_dense(d, sigma, 1.0, B, 1.0)
    if abs(phi_s - k / d) > 1e-9:
        assert helps == better


@given(st.integers(2, 300), st.integers(0, 2 ** 31))
def test_scaled_sign_identity(d, seed):
    x = np.random.default_rng(seed).normal(size=d)
    delta = ns.scaled_sign_delta(x)
    assert 1 / d - 1e-12 <= delta <= 1 + 1e-12
    comp = np.abs(x).sum() / d * np.sign(x)
    assert np.sum((x - comp) ** 2) == pytest.approx((1 - delta) * (x @ x), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("kind", ["linear", "step", "cosine"])
def test_freeze_schedule(kind):
    r = ns.freeze_schedule(0.9, 10, kind)
    assert r.shape == (10,) and r[0] == 0.0 and r[-1] == pytest.approx(0.9)
    assert np.all(np.diff(r) >= -1e-15) and np.all((r >= 0) & (r < 1))
    direct = 1 - np.mean(r)
    assert ns.freeze_mean_noise_energy(0.9, 10, kind) == pytest.approx(direct, rel=1e-14)
    # finite d: explicit count of frozen coordinates, and the continuum limit within 1/d
    d = 1000
    counts = [int(np.floor(round(re * d, 9))) for re in r]
    assert ns.freeze_mean_noise_energy(0.9, 10, kind, d=d) == pytest.approx(1 - np.mean(counts) / d, rel=1e-14)
    assert abs(ns.freeze_mean_noise_energy(0.9, 10, kind, d=d) - direct) <= 1 / d


def test_linear_freeze_schedule_against_hand_values():
    """Independent of the implementation: r_e = r e/(E-1) (Zhu & Blaschko's code) and the mean
    injected noise energy 1 - r/2 for the linear ramp (docs/theory.md §2, [S])."""
    np.testing.assert_allclose(ns.freeze_schedule(0.9, 10, "linear"), 0.9 * np.arange(10) / 9, rtol=1e-15)
    assert ns.freeze_mean_noise_energy(0.9, 10, "linear") == pytest.approx(0.55, rel=1e-14)
    assert ns.freeze_mean_noise_energy(0.5, 2, "linear") == pytest.approx(0.75, rel=1e-14)


def test_freeze_linear_closed_form():
    for E in (2, 3, 48):
        assert ns.freeze_mean_noise_energy(0.7, E) == pytest.approx(1 - 0.7 / 2, rel=1e-14)
    assert list(ns.freeze_schedule(0.9, 4)) == pytest.approx([0, 0.3, 0.6, 0.9])


@settings(max_examples=25)
@given(setting(), st.floats(0.01, 100.0), st.floats(0.1, 10.0), st.floats(0.001, 1.0), st.integers(10, 10 ** 5))
def test_optimal_keep_fraction_is_grid_argmin(cfg, dF, L, lr, T):
    d, _, B, sigma = cfg
    a, b = ns.tradeoff_coefficients(dF, L, lr, 1.0, T, d, sigma, B)
    rho = ns.optimal_keep_fraction(d, sigma, B, dF, L, lr, 1.0, T)
    grid = np.linspace(1e-4, 1, 20001)
    vals = ns.tradeoff_bound(grid, a, b)
    assert ns.tradeoff_bound(rho, a, b) <= vals.min() * (1 + 1e-9)
    cond = d * sigma ** 2 / B ** 2 > 1 + 2 * dF / (L * lr ** 2 * T)
    assert ns.sparsification_helps(d, sigma, B, dF, L, lr, 1.0, T) == cond
    if rho < 1:
        assert ns.tradeoff_bound(rho, a, b) == pytest.approx(2 * np.sqrt(a * b), rel=1e-9)


def test_no_noise_no_sparsification():
    assert ns.optimal_keep_fraction(100, 0.0, 32, 1.0, 1.0, 0.1, 1.0, 100) == 1.0
    assert not ns.sparsification_helps(100, 0.0, 32, 1.0, 1.0, 0.1, 1.0, 100)


def test_vectorised_and_deterministic():
    out = ns.nsr_mask_then_clip(np.array([1, 5, 10]), 10, 1.0, 1.0, 8, 0.5)
    assert out.shape == (3,) and np.all(np.diff(out) > 0)
    assert ns.noise_energy_interval(5, 1, 1, 8) == ns.noise_energy_interval(5, 1, 1, 8)


@pytest.mark.parametrize("call", [
    lambda: ns.noise_std(-1, 1, 8), lambda: ns.noise_std(1, 0, 8), lambda: ns.noise_std(1, 1, 0),
    lambda: ns.noise_energy_mean(-1, 1, 1, 8), lambda: ns.noise_energy_interval(0, 1, 1, 8),
    lambda: ns.noise_energy_interval(3, 1, 1, 8, level=1.0), lambda: ns.nsr_dense(10, 1, 1, 8, 0.0),
    lambda: ns.signal_random_k(11, 10, 1.0), lambda: ns.signal_random_k(0, 10, 1.0),
    lambda: ns.signal_random_k(2.5, 10, 1.0), lambda: ns.nsr_random_k([1, 20], 10, 1, 1, 8, 1.0),
    lambda: ns.nsr_fixed_set(2, 10, 0.0, 1, 1, 8, 1.0), lambda: ns.nsr_fixed_set(2, 10, 1.5, 1, 1, 8, 1.0),
    lambda: ns.nsr_top_k(5, 10, 0.2, 1, 1, 8, 1.0), lambda: ns.scaled_sign_delta(np.zeros(4)),
    lambda: ns.scaled_sign_delta([1.0, np.nan]), lambda: ns.freeze_schedule(1.0, 10),
    lambda: ns.freeze_schedule(0.5, 0), lambda: ns.freeze_schedule(0.5, 10, kind="exp"),
    lambda: ns.freeze_mean_noise_energy(0.5, 10, d=0), lambda: ns.tradeoff_bound(0.0, 1, 1),
    lambda: ns.tradeoff_bound(1.5, 1, 1), lambda: ns.optimal_keep_fraction(10, 1, 8, -1, 1, 0.1, 1, 10),
    lambda: ns.optimal_keep_fraction(10, 1, 8, 1, 1, 0.1, 1, 0), lambda: ns.nsr_dense(10, float("nan"), 1, 8, 1),
])
def test_validation(call):
    with pytest.raises(ValueError):
        call()
