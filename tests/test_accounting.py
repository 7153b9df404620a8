"""Tests of dptheory.accounting: RDP of the sampled Gaussian, conversions, epsilon, calibration.

Independent references: dp-accounting's RDP and PLD accountants, and direct numerical integration
(scipy.integrate.quad) of the Renyi divergence from its definition. No test here is statistical.
"""
import math
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate
from scipy.special import comb

import dp_accounting
from dp_accounting.rdp import rdp_privacy_accountant as dpa_rdp

from dptheory.accounting import (DEFAULT_ORDERS, calibrate_noise, calibrate_noise_gaussian_closed_form,
                                 epsilon, epsilon_from_rdp, epsilon_from_rdp_classic, rdp_gaussian,
                                 rdp_subsampled_gaussian)
from dptheory.events import PoissonGaussian, epsilon_of

MNIST_Q = 256 / 60000
MNIST_STEPS = math.ceil(60 * 60000 / 256)


# ----------------------------------------------------------------------------- references
def rdp_by_quadrature(alpha, q, sigma):
    """RDP from the definition: log E_{mu0}[(mu/mu0)^alpha] / (alpha - 1), by quad.

    Integrates A - 1 = E_{mu0}[expm1(alpha * log1p(q * expm1((2z-1)/(2 sigma^2))))] (log space
    inside the integrand, so A - 1 keeps full relative precision even when it is tiny).
    """
    s2 = sigma * sigma

    def f(z):
        log_ratio = math.log1p(q * math.expm1((2 * z - 1) / (2 * s2)))
        log_pdf = -z * z / (2 * s2) - 0.5 * math.log(2 * math.pi * s2)
        inner = alpha * log_ratio
        if inner > 0:
            return math.exp(log_pdf + inner) - math.exp(log_pdf)
        return math.exp(log_pdf) * math.expm1(inner)

    # the integrand's mass lies near 0 and near alpha (tilted Gaussian); cover +-40 sigma of both
    pts = sorted({-40 * sigma, -5 * sigma, 0.0, 0.5, 1.0, float(alpha), 5 * sigma + alpha, 40 * sigma + alpha})
    total = 0.0
    for a, b in zip(pts[:-1], pts[1:]):
        val, _ = integrate.quad(f, a, b, epsabs=0.0, epsrel=1e-13, limit=500)
        total += val
    return math.log1p(total) / (alpha - 1)


def dpa_rdp_epsilon(q, sigma, steps, delta):
    accountant = dpa_rdp.RdpAccountant()
    accountant.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
    return float(accountant.get_epsilon(delta))


def dpa_pld_epsilon(q, sigma, steps, delta, interval):
    accountant = dp_accounting.pld.PLDAccountant(value_discretization_interval=interval)
    accountant.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
    return float(accountant.get_epsilon(delta))


# ----------------------------------------------------------------------------- agreement
qs = st.floats(1e-4, 1.0)
sigmas = st.floats(0.5, 50.0)
steps_st = st.integers(1, 10**6)
deltas = st.floats(1e-10, 1e-2)


@settings(max_examples=40)
@given(q=qs, sigma=sigmas, steps=steps_st, delta=deltas)
def test_never_above_dp_accounting_rdp(q, sigma, steps, delta):
    """Same RDP, same conversion, finer optimisation over orders: never worse (1e-6 relative)."""
    ours, order = epsilon(q, sigma, steps, delta)
    theirs = dpa_rdp_epsilon(q, sigma, steps, delta)
    assert math.isfinite(ours) and order > 1
    assert ours <= theirs * (1 + 1e-6) + 1e-12


@settings(max_examples=12)
@given(q=qs, sigma=sigmas, steps=steps_st, delta=deltas)
def test_never_below_tight_pld(q, sigma, steps, delta):
    """RDP is an upper bound: never below the (tight) PLD epsilon by more than 1 %.

    PLD runs with a discretisation 1/2000 of our epsilon (its pessimistic estimate is then within
    about 0.1 % of the exact value).
    """
    ours, _ = epsilon(q, sigma, steps, delta)
    if ours == 0.0:
        return
    tight = dpa_pld_epsilon(q, sigma, steps, delta, interval=min(1e-3, max(ours / 2000, 1e-6)))
    assert ours >= 0.99 * tight


def test_pld_wrapper_matches_dp_accounting_default():
    ours, info = epsilon(MNIST_Q, 1.1, MNIST_STEPS, 1e-5, accountant="pld")
    ref = dpa_pld_epsilon(MNIST_Q, 1.1, MNIST_STEPS, 1e-5, interval=1e-4)
    # the second element is the PLD record: which bound, the accuracy reached, the RDP value
    assert info.bound == "pld" and info.status == "settled" and info.epsilon == ours
    assert ours <= info.rdp == epsilon(MNIST_Q, 1.1, MNIST_STEPS, 1e-5)[0]
    assert 0 <= info.gap <= 2e-3 * ours
    assert abs(ours - ref) <= 2e-3 * ref


def test_pld_missing_dependency_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "dp_accounting", None)
    with pytest.raises(ImportError, match=r'pip install "dpsparse\[pld\]"'):
        epsilon(0.01, 1.0, 10, 1e-5, accountant="pld")


# ----------------------------------------------------------------------------- sturdiness
FRACTIONAL_CASES = [(0.256, 2.2, a) for a in (1.1, 1.2, 1.3, 1.4, 1.5, 1.6)] + [
    (0.01, 1.1, 1.1), (1e-3, 0.5, 2.5), (0.9, 0.6, 1.3), (0.5, 0.5, 7.3), (0.3, 1.0, 2.5),
    (0.05, 0.8, 10.5), (0.5, 20.0, 1.7),
]


@pytest.mark.parametrize("q,sigma,alpha", FRACTIONAL_CASES)
def test_fractional_orders_match_quadrature(q, sigma, alpha):
    """Relative 1e-9 against quad of the definition, with no warning (dp-accounting drops the
    first six orders here). quad with epsrel=1e-13 on smooth integrands is reliable to ~1e-12."""
    ref = rdp_by_quadrature(alpha, q, sigma)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = rdp_subsampled_gaussian(alpha, q, sigma)[0]
    assert np.isfinite(ours)
    assert abs(ours - ref) <= 1e-9 * ref


@pytest.mark.parametrize("q,sigma,alpha", [(0.256, 2.2, 2), (0.01, 1.0, 5), (0.3, 0.7, 12), (1e-3, 3.0, 40)])
def test_integer_orders_match_quadrature(q, sigma, alpha):
    ref = rdp_by_quadrature(alpha, q, sigma)
    ours = rdp_subsampled_gaussian(alpha, q, sigma)[0]
    assert abs(ours - ref) <= 1e-9 * ref


def test_dp_accounting_sturdiness_case_whole_grid_finite():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = rdp_subsampled_gaussian(DEFAULT_ORDERS, 0.256, 2.2)
    assert np.all(np.isfinite(r)) and np.all(r > 0)
    assert np.all(np.diff(r) > 0)  # RDP is non-decreasing in the order (van Erven & Harremoes)


@pytest.mark.parametrize("k", [2, 3, 5, 11, 30])
@pytest.mark.parametrize("q,sigma", [(0.01, 1.0), (0.256, 2.2), (0.6, 0.7)])
def test_integer_fractional_continuity(k, q, sigma):
    """The fractional series just below / above an integer order meets the exact finite sum."""
    h = 1e-7
    lo, mid, hi = rdp_subsampled_gaussian([k - h, k, k + h], q, sigma)
    slope_bound = 10 * max(mid, 1e-300) * 1e-7 * (1 + k)  # |d rdp / d alpha| * h, generously
    assert lo <= mid + 1e-15 and mid <= hi + 1e-15
    assert abs(lo - mid) <= slope_bound and abs(hi - mid) <= slope_bound


def test_q_one_is_plain_gaussian_and_limit():
    orders = np.array([1.5, 2.0, 3.7, 10.0, 32.0])
    sigma = 1.3
    expected = orders / (2 * sigma**2)
    np.testing.assert_allclose(rdp_subsampled_gaussian(orders, 1.0, sigma), expected, rtol=1e-15)
    np.testing.assert_allclose(rdp_gaussian(orders, sigma), expected, rtol=1e-15)
    # the subsampled formulas (series and finite sum) tend to the Gaussian as q -> 1
    np.testing.assert_allclose(rdp_subsampled_gaussian(orders, 1 - 1e-10, sigma), expected, rtol=1e-6)


@pytest.mark.parametrize("alpha", [2.0, 2.5, 3.0, 7.0, 12.5])
def test_small_q_expansion(alpha):
    """A_alpha = 1 + C(alpha,2) q^2 (e^{1/sigma^2}-1) + O(q^3): relative error O(q); exact at alpha=2."""
    q, sigma = 1e-5, 1.5
    am1 = math.expm1(rdp_subsampled_gaussian(alpha, q, sigma)[0] * (alpha - 1))
    approx = comb(alpha, 2) * q * q * math.expm1(1 / sigma**2)
    tol = 1e-12 if alpha == 2.0 else 1e-3
    assert abs(am1 - approx) <= tol * approx


def test_tiny_sigma_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = rdp_subsampled_gaussian([1.5, 2, 40], 0.1, 1e-200)
        g = rdp_gaussian([2.0], 1e-200)
        e, _ = epsilon(0.1, 1e-200, 10, 1e-5)
        small = rdp_subsampled_gaussian([1.5, 2, 40], 0.1, 0.02)
    assert np.all(np.isinf(r)) and np.isinf(g[0]) and math.isinf(e)
    assert np.all(np.isfinite(small)) and np.all(small > 100)


# ----------------------------------------------------------------------------- conversions
def test_balle_beats_classic_orderwise():
    orders = DEFAULT_ORDERS
    rdp = 1000 * rdp_subsampled_gaussian(orders, 0.01, 1.0)
    e_b, _ = epsilon_from_rdp(orders, rdp, 1e-5)
    e_c, _ = epsilon_from_rdp_classic(orders, rdp, 1e-5)
    assert e_b < e_c


def test_refinement_never_worse_than_grid_and_matches_q1_closed_form():
    """q = 1 with the classic conversion has a closed-form continuous optimum (docs/theory.md §1.4):
    eps = T/(2 s^2) + sqrt(2 T log(1/delta))/s; the refined optimiser must find it."""
    for sigma, steps, delta in [(3.0, 10, 1e-5), (10.0, 100, 1e-6), (1.7, 3, 1e-3)]:
        eps, order = epsilon(1.0, sigma, steps, delta, conversion="classic")
        closed = steps / (2 * sigma**2) + math.sqrt(2 * steps * math.log(1 / delta)) / sigma
        assert abs(eps - closed) <= 1e-8 * closed
        assert abs(order - (1 + sigma * math.sqrt(2 * math.log(1 / delta) / steps))) <= 1e-3 * order
        grid, _ = epsilon(1.0, sigma, steps, delta, orders=DEFAULT_ORDERS, conversion="classic")
        assert eps <= grid


def test_order_grid_extends_upward():
    # q = 1: the continuous optimum is 1 + sigma sqrt(2 log(1/delta)/T) ~ 680 here
    for q in (1.0, 0.5):
        eps, order = epsilon(q, 100.0, 1, 1e-10)
        assert order > 63
        assert 0 < eps <= dpa_rdp_epsilon(q, 100.0, 1, 1e-10) * (1 + 1e-6)


# ----------------------------------------------------------------------------- monotonicity
@settings(max_examples=25)
@given(q=st.floats(1e-3, 0.5), sigma=st.floats(0.6, 10.0), steps=st.integers(1, 10**5))
def test_monotone(q, sigma, steps):
    base, _ = epsilon(q, sigma, steps, 1e-5)
    assert epsilon(q, sigma * 1.05, steps, 1e-5)[0] < base
    assert epsilon(min(1.0, q * 1.2), sigma, steps, 1e-5)[0] > base
    assert epsilon(q, sigma, steps * 2, 1e-5)[0] > base


def test_cost_does_not_grow_with_steps_and_is_deterministic():
    a = epsilon(MNIST_Q, 1.1, 10**6, 1e-5)
    b = epsilon(MNIST_Q, 1.1, 10**6, 1e-5)
    assert a == b  # bit for bit
    r1 = rdp_subsampled_gaussian(DEFAULT_ORDERS, 0.256, 2.2)
    assert np.array_equal(r1, rdp_subsampled_gaussian(DEFAULT_ORDERS, 0.256, 2.2))


# ----------------------------------------------------------------------------- calibration
@pytest.mark.parametrize("q,steps,target,delta", [
    (MNIST_Q, MNIST_STEPS, 2.6, 1e-5), (0.01, 1000, 1.0, 1e-6), (0.1, 50, 8.0, 1e-5), (1.0, 1, 0.5, 1e-5),
])
def test_calibrate_noise_hits_target(q, steps, target, delta):
    sigma = calibrate_noise(q, steps, target, delta)
    assert epsilon(q, sigma, steps, delta)[0] <= target
    assert epsilon(q, sigma * (1 - 1e-4), steps, delta)[0] > target


def test_calibrate_q1_classic_matches_closed_form():
    for steps, target, delta in [(10, 2.0, 1e-5), (1000, 4.0, 1e-6)]:
        sigma = calibrate_noise(1.0, steps, target, delta, conversion="classic")
        closed = calibrate_noise_gaussian_closed_form(steps, target, delta)
        assert abs(sigma - closed) <= 1e-5 * closed


# ----------------------------------------------------------------------------- docs/theory.md §1.5 example
def test_theory_example_mnist():
    """q=256/60000, sigma=1.1, 60 epochs, delta=1e-5 (docs/theory.md §1.5: ~3.01 / ~2.60 / ~2.32).

    Asserts only true inequalities and cross-checks against dp-accounting; prints the numbers."""
    from dptheory.gdp import epsilon_gdp

    classic, _ = epsilon(MNIST_Q, 1.1, MNIST_STEPS, 1e-5, conversion="classic")
    balle, _ = epsilon(MNIST_Q, 1.1, MNIST_STEPS, 1e-5)
    tight = dpa_pld_epsilon(MNIST_Q, 1.1, MNIST_STEPS, 1e-5, interval=1e-4)
    clt = epsilon_gdp(MNIST_Q, 1.1, MNIST_STEPS, 1e-5)
    print(f"classic {classic:.4f}  balle {balle:.4f}  pld {tight:.4f}  clt(approx) {clt:.4f}")
    assert tight * 0.999 <= balle < classic
    theirs = dpa_rdp_epsilon(MNIST_Q, 1.1, MNIST_STEPS, 1e-5)
    assert theirs * (1 - 5e-3) <= balle <= theirs * (1 + 1e-6)
    # classic conversion applied to dp-accounting's own RDP values on its own grid
    orders = np.array(dpa_rdp.DEFAULT_RDP_ORDERS, dtype=float)
    their_rdp = MNIST_STEPS * dpa_rdp._compute_rdp_poisson_subsampled_gaussian(MNIST_Q, 1.1, orders)
    their_classic = np.min(their_rdp + math.log(1e5) / (orders - 1))
    assert their_classic * (1 - 5e-3) <= classic <= their_classic * (1 + 1e-6)
    # the CLT is an approximation: only check it is in the right neighbourhood of the tight value
    assert abs(clt - tight) <= 0.1 * tight


# ----------------------------------------------------------------------------- events
def test_events():
    ev = PoissonGaussian(0.01, 1.0, 500)
    assert epsilon_of(ev, 1e-5) == epsilon(0.01, 1.0, 500, 1e-5)
    split = epsilon_of([PoissonGaussian(0.01, 1.0, 200), PoissonGaussian(0.01, 1.0, 300)], 1e-5)
    grid = epsilon(0.01, 1.0, 500, 1e-5, orders=DEFAULT_ORDERS)
    assert split[0] == pytest.approx(grid[0], rel=1e-12)
    mixed = epsilon_of([PoissonGaussian(0.01, 1.0, 200), PoissonGaussian(0.01, 2.0, 300)], 1e-5)
    assert epsilon(0.01, 2.0, 500, 1e-5)[0] < mixed[0] < grid[0]
    with pytest.raises(ValueError, match="noise_multiplier"):
        PoissonGaussian(0.01, -1.0, 5)


# ----------------------------------------------------------------------------- validation
BAD = [
    (lambda: epsilon(0.0, 1.0, 10, 1e-5), "sampling_rate"),
    (lambda: epsilon(1.5, 1.0, 10, 1e-5), "sampling_rate"),
    (lambda: epsilon(float("nan"), 1.0, 10, 1e-5), "sampling_rate"),
    (lambda: epsilon(0.1, 0.0, 10, 1e-5), "noise_multiplier"),
    (lambda: epsilon(0.1, -2.0, 10, 1e-5), "noise_multiplier"),
    (lambda: epsilon(0.1, float("inf"), 10, 1e-5), "noise_multiplier"),
    (lambda: epsilon(0.1, 1.0, 0, 1e-5), "steps"),
    (lambda: epsilon(0.1, 1.0, 2.5, 1e-5), "steps"),
    (lambda: epsilon(0.1, 1.0, 10, 0.0), "delta"),
    (lambda: epsilon(0.1, 1.0, 10, 1.0), "delta"),
    (lambda: epsilon(0.1, 1.0, 10, 1e-5, accountant="moments"), "accountant"),
    (lambda: epsilon(0.1, 1.0, 10, 1e-5, conversion="magic"), "conversion"),
    (lambda: epsilon(0.1, 1.0, 10, 1e-5, orders=[1.0, 2.0]), "orders"),
    (lambda: rdp_subsampled_gaussian([0.5], 0.1, 1.0), "orders"),
    (lambda: rdp_subsampled_gaussian([2.0, float("nan")], 0.1, 1.0), "orders"),
    (lambda: rdp_gaussian(2.0, 0.0), "noise_multiplier"),
    (lambda: calibrate_noise(0.1, 10, 0.0, 1e-5), "epsilon"),
    (lambda: calibrate_noise(0.1, 10, -1.0, 1e-5), "epsilon"),
    (lambda: calibrate_noise(0.1, 10, 1.0, 2.0), "delta"),
    (lambda: calibrate_noise(0.1, 0, 1.0, 1e-5), "steps"),
    (lambda: epsilon_from_rdp([2.0, 3.0], [0.1], 1e-5), "rdp"),
    (lambda: epsilon_from_rdp([2.0], [0.1], -1e-5), "delta"),
    (lambda: epsilon_of(PoissonGaussian(0.1, 1.0, 5), 1e-5, accountant="x"), "accountant"),
]


@pytest.mark.parametrize("call,name", BAD, ids=[f"{n}-{i}" for i, (_, n) in enumerate(BAD)])
def test_bad_input_raises_naming_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()


@pytest.mark.slow
@settings(max_examples=200)
@given(q=qs, sigma=sigmas, steps=steps_st, delta=deltas)
def test_agreement_big_sweep(q, sigma, steps, delta):
    ours, _ = epsilon(q, sigma, steps, delta)
    assert ours <= dpa_rdp_epsilon(q, sigma, steps, delta) * (1 + 1e-6) + 1e-12
    if ours > 0:
        tight = dpa_pld_epsilon(q, sigma, steps, delta, interval=min(1e-3, max(ours / 2000, 1e-6)))
        assert ours >= 0.99 * tight
