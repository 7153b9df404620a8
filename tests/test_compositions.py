"""Each public dptheory function that only COMBINES closed forms is the combination its docstring states.

The parts are derived in ``proofs/``; here the combination itself is checked over a range of
inputs (Hypothesis, derandomized explicitly, so a failure reproduces under any profile).
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dptheory import accounting as acc
from dptheory import convergence as cv
from dptheory import events as ev
from dptheory import gdp
from dptheory import noise_signal as ns

FAST = settings(derandomize=True, max_examples=20, deadline=None)
SLOW = settings(derandomize=True, max_examples=4, deadline=None)   # each example calibrates a noise multiplier

rates = st.floats(1e-3, 1.0)
sigmas = st.floats(0.5, 5.0)
deltas = st.sampled_from([1e-3, 1e-5, 1e-8])


# ----------------------------------------------------------------------------- accounting
@FAST
@given(q=rates, s=sigmas, T=st.integers(1, 5000), d=deltas)
def test_epsilon_is_attained_at_its_order_and_beats_the_grid(q, s, T, d):
    e, a = acc.epsilon(q, s, T, d)
    at_order = acc.epsilon_from_rdp([a], [T * acc.rdp_subsampled_gaussian(a, q, s)[0]], d)[0]
    assert e == pytest.approx(at_order, rel=1e-12, abs=1e-15)
    grid = acc.epsilon_from_rdp(acc.DEFAULT_ORDERS, T * acc.rdp_subsampled_gaussian(acc.DEFAULT_ORDERS, q, s), d)[0]
    assert e <= grid * (1 + 1e-12)


@FAST
@given(q=rates, s=sigmas, T=st.integers(1, 5000), d=deltas)
def test_epsilon_with_explicit_orders_is_the_min_over_them(q, s, T, d):
    orders = np.array([1.5, 2.0, 3.0, 8.0, 32.0])
    rdp = T * acc.rdp_subsampled_gaussian(orders, q, s)
    for conv, fn in (("balle", acc.epsilon_from_rdp), ("classic", acc.epsilon_from_rdp_classic)):
        assert acc.epsilon(q, s, T, d, orders=orders, conversion=conv) == fn(orders, rdp, d)


@SLOW
@given(q=st.floats(1e-3, 0.2), T=st.integers(10, 2000), e=st.floats(0.5, 8.0))
def test_calibrate_noise_is_the_smallest_sigma_meeting_the_target(q, T, e):
    s = acc.calibrate_noise(q, T, e, 1e-5)
    assert acc.epsilon(q, s, T, 1e-5)[0] <= e
    assert acc.epsilon(q, s * (1 - 1e-5), T, 1e-5)[0] > e


@SLOW
@given(q=st.floats(1e-3, 0.2), T=st.integers(10, 1000), e=st.floats(0.5, 8.0), k=st.integers(1, 100),
       es=st.floats(0.05, 3.0))
def test_calibrate_noise_selected_is_the_smallest_sigma_meeting_the_target(q, T, e, k, es):
    from dptheory import selection as sel
    floor = sel.epsilon_selection_limit(q, k, es, T, 1e-5)[0]
    if e <= floor:
        with pytest.raises(ValueError, match=r"^epsilon=.*cannot be reached.*selection_epsilon"):
            sel.calibrate_noise_selected(q, T, e, 1e-5, k, es)
        return
    s = sel.calibrate_noise_selected(q, T, e, 1e-5, k, es)
    assert sel.epsilon_selected_gaussian(q, s, k, es, T, 1e-5)[0] <= e
    assert sel.epsilon_selected_gaussian(q, s * (1 - 1e-5), k, es, T, 1e-5)[0] > e


def test_calibrate_noise_at_q1_classic_is_near_the_closed_form():
    """Continuous orders give the closed form; the order grid and its refinement are within 1e-6."""
    for T, e, d in ((1, 1.0, 1e-5), (100, 3.0, 1e-6)):
        s = acc.calibrate_noise(1.0, T, e, d, conversion="classic")
        assert s == pytest.approx(acc.calibrate_noise_gaussian_closed_form(T, e, d), rel=1e-5)


@FAST
@given(q=st.floats(1e-4, 1.0), E=st.integers(1, 50))
def test_steps_conventions(q, E):
    assert acc.steps_per_epoch(q) == max(1, round(1 / q))
    assert acc.steps_for_epochs(q, E) == E * acc.steps_per_epoch(q)


# ----------------------------------------------------------------------------- gdp
@FAST
@given(mu=st.floats(0.05, 6.0), d=deltas)
def test_epsilon_for_mu_is_the_root_of_delta_gdp(mu, d):
    e = gdp.epsilon_for_mu(mu, d)
    if e == 0.0:
        assert gdp.delta_gdp(mu, 0.0) <= d
    else:
        assert gdp.delta_gdp(mu, e) == pytest.approx(d, rel=1e-7)
        assert gdp.delta_gdp(mu, e * (1 - 1e-6)) > d


@FAST
@given(q=rates, s=sigmas, T=st.integers(1, 10 ** 5), d=deltas, sampling=st.sampled_from(["poisson", "uniform"]))
def test_epsilon_gdp_is_epsilon_for_mu_of_gdp_mu(q, s, T, d, sampling):
    mu = gdp.gdp_mu(q, s, T, sampling)
    want = 0.0 if mu == 0.0 else gdp.epsilon_for_mu(mu, d)
    assert gdp.epsilon_gdp(q, s, T, d, sampling) == want


# ----------------------------------------------------------------------------- events
@FAST
@given(q=rates, s=sigmas, T=st.integers(1, 1000))
def test_event_rdp_methods(q, s, T):
    a = np.array([1.1, 2.0, 7.5, 40.0])
    np.testing.assert_array_equal(ev.Gaussian(s).rdp(a), acc.rdp_gaussian(a, s))
    np.testing.assert_array_equal(ev.PoissonGaussian(q, s, T).rdp(a), T * acc.rdp_subsampled_gaussian(a, q, s))
    assert np.all(np.isinf(ev.NonPrivate("reason").rdp(a)))


@FAST
@given(q=rates, s=sigmas, T=st.integers(1, 1000), s2=sigmas)
def test_epsilon_of_single_events_and_sequences(q, s, T, s2):
    pg, g = ev.PoissonGaussian(q, s, T), ev.Gaussian(s2)
    assert ev.epsilon_of(pg, 1e-5) == acc.epsilon(q, s, T, 1e-5)
    assert ev.epsilon_of(g, 1e-5) == acc.epsilon(1.0, s2, 1, 1e-5)
    total = pg.rdp(acc.DEFAULT_ORDERS) + g.rdp(acc.DEFAULT_ORDERS)
    assert ev.epsilon_of([pg, g], 1e-5) == acc.epsilon_from_rdp(acc.DEFAULT_ORDERS, total, 1e-5)
    assert ev.epsilon_of([pg, ev.NonPrivate("x")], 1e-5) == (math.inf, None)
    assert ev.epsilon_of(ev.NonPrivate("x"), 1e-5) == (math.inf, None)


# ----------------------------------------------------------------------------- noise_signal
kd = st.integers(1, 200).flatmap(lambda d: st.tuples(st.integers(1, d), st.just(d)))
pos = st.floats(0.01, 10.0)


@FAST
@given(kd=kd, s=st.floats(0.0, 5.0), c=pos, b=st.floats(1.0, 512.0), g2=pos, phi=st.floats(0.01, 1.0))
def test_nsrs_are_ratios_of_their_parts(kd, s, c, b, g2, phi):
    k, d = kd
    rel = {"rel": 1e-13, "abs": 1e-300}
    assert ns.nsr_dense(d, s, c, b, g2) == pytest.approx(ns.noise_energy(d, s, c, b) / g2, **rel)
    rk = ns.nsr_random_k(k, d, s, c, b, g2)
    assert rk == pytest.approx(ns.noise_energy_mean(k, s, c, b) / ns.signal_random_k(k, d, g2), **rel)
    assert rk == pytest.approx(ns.nsr_dense(d, s, c, b, g2), **rel)       # docstring: equals the dense NSR
    assert ns.nsr_mask_then_clip(k, d, s, c, b, g2) == pytest.approx(
        ns.noise_energy_mean(k, s, c, b) / ns.signal_mask_then_clip(g2), **rel)
    fs = ns.nsr_fixed_set(k, d, phi, s, c, b, g2)
    assert fs == pytest.approx(ns.noise_energy_mean(k, s, c, b) / (phi * g2), **rel)
    assert ns.nsr_top_k_public(k, d, phi, s, c, b, g2) == fs


@FAST
@given(kd=kd, phi=st.floats(0.001, 1.0))
def test_fixed_set_helps_iff_phi_above_k_over_d(kd, phi):
    k, d = kd
    assert ns.fixed_set_helps(k, d, phi) == (phi > k / d)
    if abs(phi - k / d) > 1e-9:
        assert ns.fixed_set_helps(k, d, phi) == (ns.nsr_fixed_set(k, d, phi, 1.0, 1.0, 1.0, 1.0)
                                                 < ns.nsr_dense(d, 1.0, 1.0, 1.0, 1.0))


@FAST
@given(g=st.lists(st.floats(-3, 3), min_size=2, max_size=30).filter(lambda v: sum(x * x for x in v) > 1e-6),
       data=st.data(), s=st.floats(0.05, 3.0))
def test_nsr_top_k_noisy_is_the_ratio_of_the_threshold_model(g, data, s):
    k = data.draw(st.integers(1, len(g)))
    noise, signal, _ = ns.noisy_top_k_energies(g, k, s, 1.0, 1.0)
    assert ns.nsr_top_k_noisy(g, k, s, 1.0, 1.0) == pytest.approx(noise / signal, rel=1e-14)


@FAST
@given(r=st.floats(0.0, 0.99), E=st.integers(1, 60))
def test_freeze_schedule_formulas(r, E):
    e = np.arange(E)
    if E == 1:
        for kind in ns.FREEZE_KINDS:
            np.testing.assert_array_equal(ns.freeze_schedule(r, 1, kind), [r])
        return
    np.testing.assert_allclose(ns.freeze_schedule(r, E, "linear"), r * e / (E - 1), rtol=0, atol=1e-15)
    np.testing.assert_allclose(ns.freeze_schedule(r, E, "cosine"), r * (1 - np.cos(np.pi * e / (E - 1))) / 2,
                               rtol=0, atol=1e-15)
    np.testing.assert_array_equal(ns.freeze_schedule(r, E, "step"), np.where(e >= E // 2, r, 0.0))
    np.testing.assert_array_equal(ns.freeze_schedule(r, E, "constant"), np.full(E, r))


@FAST
@given(num=st.integers(0, 100), d=st.integers(1, 10 ** 4))
def test_n_frozen_is_floor_of_rate_times_d(num, d):
    rate = num / 100
    got = ns.n_frozen(rate, d)
    assert 0 <= got <= d and (got < d or rate == 1.0)
    exact = (num * d) // 100                                     # floor in exact integer arithmetic
    assert got == (min(exact, d - 1) if rate < 1 else d)


@FAST
@given(r=st.floats(0.0, 0.99), E=st.integers(1, 40), d=st.integers(1, 500),
       kind=st.sampled_from(list(ns.FREEZE_KINDS)))
def test_freeze_mean_noise_energy_is_the_mean_kept_fraction(r, E, d, kind):
    sched = ns.freeze_schedule(r, E, kind)
    assert ns.freeze_mean_noise_energy(r, E, kind) == pytest.approx(1 - np.mean(sched), rel=1e-14, abs=1e-15)
    assert ns.freeze_mean_noise_energy(r, E, kind, d=d) == pytest.approx(1 - np.mean(ns.n_frozen(sched, d)) / d,
                                                                         rel=1e-14, abs=1e-15)


@FAST
@given(d=st.integers(1, 5000), s=st.floats(0.0, 5.0), b=st.floats(1.0, 512.0), lr=st.floats(1e-3, 1.0),
       spread=st.one_of(st.sampled_from(["worst_case", "spread_out"]), st.floats(0.5, 1.0)))
def test_sparsification_helps_iff_the_optimum_is_below_one(d, s, b, lr, spread):
    args = (d, s, b, 1.0, 1.0, lr, 1.0, 100)
    assert ns.sparsification_helps(*args, spread=spread) == (ns.optimal_keep_fraction(*args, spread=spread) < 1)


def test_spread_exponent():
    assert ns.spread_exponent("worst_case") == ns.SPREADS["worst_case"] == 1.0
    assert ns.spread_exponent("spread_out") == ns.SPREADS["spread_out"] == 0.5
    assert ns.spread_exponent(0.75) == 0.75
    for bad in (0.4, 1.1, "other", None, True):
        with pytest.raises(ValueError):
            ns.spread_exponent(bad)


# ----------------------------------------------------------------------------- convergence
@FAST
@given(ap=st.floats(0.0, 1.0), R=pos, G=pos, T=st.integers(1, 10 ** 5), k=st.integers(1, 100), s=st.floats(0.0, 5.0),
       c=pos, b=st.floats(1.0, 512.0))
def test_fixed_set_bound_is_approx_plus_the_subspace_convex_bound(ap, R, G, T, k, s, c, b):
    want = ap + cv.convex_optimal_bound(R, G, T, ns.noise_energy(k, s, c, b))
    assert cv.fixed_set_bound(ap, R, G, T, k, s, c, b) == pytest.approx(want, rel=1e-14)


@pytest.fixture(scope="module")
def calibrated():
    n, B, E, e, d = 1000, 100, 2, 3.0, 1e-5
    s, T = cv.calibrated_sigma(n, B, E, e, d)
    return (n, B, E, e, d), s, T


def test_calibrated_sigma_is_calibrate_noise_at_the_run_length(calibrated):
    (n, B, E, e, d), s, T = calibrated
    assert T == round(E * acc.steps_per_epoch(B / n))
    assert s == acc.calibrate_noise(B / n, T, e, d)


@pytest.mark.parametrize("k", [None, 1, 7, 50])
def test_private_bounds_are_the_bounds_at_the_calibrated_noise(calibrated, k):
    (n, B, E, e, d), s, T = calibrated
    dim = 50
    N = ns.noise_energy(dim, s, 1.0, B)
    want = (cv.convex_optimal_bound(1.0, 2.0, T, N) if k is None
            else cv.convex_random_k_optimal_bound(1.0, 2.0, T, N, k, dim))
    assert cv.private_convex_bound(n, dim, e, d, E, B, 1.0, 2.0, 1.0, k=k) == pytest.approx(want, rel=1e-14)
    if k is not None:
        assert cv.private_nonconvex_random_k_bound(n, dim, e, d, E, B, k, 1.0, 1.0, 0.5, 1.0) == pytest.approx(
            cv.nonconvex_random_k_optimal_bound(1.0, 1.0, T, k, dim, 0.5, B, N), rel=1e-14)
        for spread in ("worst_case", "spread_out"):
            assert cv.private_mask_then_clip_bound(n, dim, e, d, E, B, k, 1.0, 1.0, 0.1, 1.0, spread=spread) == \
                pytest.approx(cv.mask_then_clip_bound(k, dim, 1.0, 1.0, 0.1, 1.0, T, s, B, spread=spread), rel=1e-14)


@pytest.mark.parametrize("spread", ["worst_case", "spread_out", 0.7])
@pytest.mark.parametrize("lr", [0.01, 0.1, 1.0])
def test_optimal_k_mask_then_clip_is_the_brute_force_argmin(calibrated, spread, lr):
    (n, B, E, e, d), s, T = calibrated
    dim = 300
    vals = np.array([cv.mask_then_clip_bound(k, dim, 1.0, 1.0, lr, 1.0, T, s, B, spread=spread)
                     for k in range(1, dim + 1)])
    k, v = cv.optimal_k(n, dim, e, d, E, B, delta_f=1.0, smoothness=1.0, lr=lr, spread=spread)
    assert v == pytest.approx(vals.min(), rel=1e-12)
    assert vals[k - 1] <= vals.min() * (1 + 1e-12)                  # ties (flat bounds) may pick either
    if spread == "worst_case":
        assert k == dim                                             # a/rho + b decreases in rho


@pytest.mark.parametrize("decay", [0.5, 2.0, 8.0])
def test_optimal_k_fixed_set_is_the_brute_force_argmin_of_its_model(calibrated, decay):
    (n, B, E, e, d), s, T = calibrated
    dim, R, G, L = 40, 1.0, 2.0, 1.0
    prof = np.exp(-decay * np.linspace(0, 1, dim))
    phi = np.minimum(np.cumsum(np.sort(prof)[::-1]) / prof.sum(), 1.0)
    ks = np.arange(1, dim + 1)
    noise = ns.noise_energy(ks, s, 1.0, B)
    model = L / 2 * R ** 2 * (1 - phi) + R * np.sqrt(phi) * np.sqrt(G ** 2 * phi + noise) / np.sqrt(T)   # docstring
    k, v = cv.optimal_k(n, dim, e, d, E, B, kind="fixed_set", radius=R, lipschitz=G, smoothness=L, energy_profile=prof)
    assert k == 1 + int(np.argmin(model)) and v == pytest.approx(model.min(), rel=1e-12)


def test_clip_bias_is_clipped_mean_minus_mean():
    from dptheory.clipping import clip_bias_1d, clipped_mean_1d
    for m, s, c in ((0.3, 1.0, 1.0), (-2.0, 0.5, 1.0), (4.0, 0.0, 1.0)):
        assert clip_bias_1d(m, s, c) == clipped_mean_1d(m, s, c) - m
