"""dptheory.selection: private top-k selection + Gaussian, Poisson-subsampled (docs/selection.md).

The subsampled bound (Zhu & Wang 2019, Thm 6) is checked against Renyi divergences computed by
quadrature (a subsampled Gaussian, and the selected-Gaussian mechanism itself on a two-coordinate
instance), for being an upper bound and not absurdly loose; then its shape (monotone in the order
and in q, >= 0, the batch-level value at q = 1), the events, the input checks, and the calibration of
sigma to a target (calibrate_noise_selected, epsilon_selection_limit). No test here is
random: every number is deterministic.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, special

import dptheory
from dptheory import selection as sel
from dptheory.accounting import epsilon as sgm_epsilon
from dptheory.accounting import rdp_gaussian, rdp_subsampled_gaussian
from dptheory.events import (
    Gaussian,
    PoissonGaussian,
    PoissonSelectedGaussian,
    SelectedGaussian,
    epsilon_of,
)


# ----------------------------------------------------------------------------- quadrature references
def _log_renyi_moment(log_p, log_r, order, lo, hi):
    """log of int p^order r^(1 - order) over [lo, hi] (scipy quad, integrand scaled by its max)."""
    grid = np.linspace(lo, hi, 4001)
    lg = order * log_p(grid) + (1 - order) * log_r(grid)
    m = float(np.max(lg))
    val, _ = integrate.quad(lambda y: math.exp(order * log_p(y) + (1 - order) * log_r(y) - m), lo, hi,
                            limit=400, epsabs=0.0, epsrel=1e-11, points=[0.0, 1.0])
    return m + math.log(val)


def _subsampled_gaussian_divergence(order, q, sigma):
    """max of D(mu || N(0, s^2)) and D(N(0, s^2) || mu), mu = (1-q) N(0, s^2) + q N(1, s^2), by quadrature."""
    c = math.log(math.sqrt(2.0 * math.pi) * sigma)
    lp0 = lambda y: -0.5 * (y / sigma) ** 2 - c
    lp1 = lambda y: -0.5 * ((y - 1.0) / sigma) ** 2 - c
    lmu = lambda y: np.logaddexp(math.log1p(-q) + lp0(y), math.log(q) + lp1(y))
    lo, hi = -40.0 * sigma - order, 40.0 * sigma + order
    add = _log_renyi_moment(lmu, lp0, order, lo, hi) / (order - 1)
    rem = _log_renyi_moment(lp0, lmu, order, lo, hi) / (order - 1)
    return max(add, rem)


@pytest.mark.parametrize("q, sigma", [(0.01, 1.0), (0.1, 0.8), (0.3, 1.5), (0.6, 1.0)])
def test_general_bound_above_quadrature_of_a_subsampled_gaussian(q, sigma):
    """ZW[Gaussian RDP] is a valid bound for the subsampled Gaussian (whose exact RDP quadrature gives),
    and within a factor 3 of it at orders 2..10 (equal at alpha = 2 up to quadrature error)."""
    orders = np.arange(2.0, 11.0)
    bound = sel.rdp_poisson_general(orders, q, lambda ells: rdp_gaussian(ells, sigma))
    truth = np.array([_subsampled_gaussian_divergence(a, q, sigma) for a in orders])
    assert np.all(bound >= truth * (1 - 1e-7)), (bound, truth)
    ratio = bound / truth
    assert ratio[0] == pytest.approx(1.0, rel=1e-6)   # alpha = 2: the bound is exact for the add direction
    assert np.all(ratio <= 3.0), ratio
    # the tight subsampled-Gaussian formula agrees with the quadrature (a check of the reference)
    np.testing.assert_allclose(rdp_subsampled_gaussian(orders, q, sigma), truth, rtol=1e-6)


def test_general_bound_above_exact_divergences_of_random_discrete_mechanisms():
    """400 random pairs of distributions (P, Q) on 2..5 points, base RDP eps(l) = max of both
    directions: the subsampled mixture's exact divergences (both directions, orders 2..20, q in
    0.01..0.9) never exceed the bound (up to the reference's rounding: it takes the log of a sum near 1,
    about 1e-16 absolute; at alpha = 2 the add direction attains the bound)."""
    rng = np.random.default_rng(0)
    orders = np.arange(2.0, 21.0)

    def div(a, b, order):
        return math.log(np.sum(a**order * b ** (1 - order))) / (order - 1)

    for _ in range(400):
        n = int(rng.integers(2, 6))
        P, Q = (np.maximum(rng.dirichlet(np.full(n, 0.5)), 1e-6) for _ in range(2))
        P, Q = P / P.sum(), Q / Q.sum()
        base = lambda ells, P=P, Q=Q: np.array([max(div(P, Q, l), div(Q, P, l)) for l in ells])
        for q in (0.01, 0.1, 0.5, 0.9):
            M = (1 - q) * P + q * Q
            bound = sel.rdp_poisson_general(orders, q, base)
            truth = np.array([max(div(M, P, a), div(P, M, a)) for a in orders])
            assert np.all(bound >= truth * (1 - 1e-9) - 1e-15), (bound - truth).min()


def _selected_gaussian_divergence(order, q, sigma, eps_sel, C=1.0):
    """Exact Renyi divergences (both directions) of ONE Poisson-subsampled selected-Gaussian step on
    d = 2, k = 1: without the example s = (0, 0); with it s = (C, 0). Output (j, y): j by the exponential
    mechanism with weights e^{|s_j|/b}, b = 2 C / eps_sel; y ~ N(s_j, sigma^2 C^2)."""
    b = sel.gumbel_scale(1, eps_sel, C)
    p0 = np.array([0.5, 0.5])
    w = np.exp(np.array([C, 0.0]) / b)
    p1 = w / w.sum()
    means1 = (C, 0.0)
    sd = sigma * C
    c = math.log(math.sqrt(2.0 * math.pi) * sd)
    out = []
    for direction in ("add", "remove"):
        total = []
        for j in range(2):
            lg0 = lambda y, j=j: math.log(p0[j]) - 0.5 * (y / sd) ** 2 - c
            lg1 = lambda y, j=j: math.log(p1[j]) - 0.5 * ((y - means1[j]) / sd) ** 2 - c
            l1q = math.log1p(-q) if q < 1 else -math.inf
            lmu = lambda y, lg1=lg1, lg0=lg0, l1q=l1q: np.logaddexp(l1q + lg0(y), math.log(q) + lg1(y))
            lo, hi = -40.0 * sd - order, 40.0 * sd + order
            if direction == "add":
                total.append(_log_renyi_moment(lmu, lg0, order, lo, hi))
            else:
                total.append(_log_renyi_moment(lg0, lmu, order, lo, hi))
        out.append(special.logsumexp(total) / (order - 1))
    return max(out)


@pytest.mark.parametrize("q, sigma, eps_sel", [(0.05, 1.0, 1.0), (0.3, 1.2, 2.0), (1.0, 1.0, 0.5)])
def test_step_bound_above_the_exact_divergence_of_the_mechanism(q, sigma, eps_sel):
    """rdp_poisson_selected_gaussian bounds the true RDP of the real mechanism on a small instance."""
    orders = np.arange(2.0, 8.0)
    bound = sel.rdp_poisson_selected_gaussian(orders, q, sigma, 1, eps_sel)
    truth = np.array([_selected_gaussian_divergence(a, q, sigma, eps_sel) for a in orders])
    assert np.all(bound >= truth * (1 - 1e-7)), (bound, truth)
    # this instance is not the worst case of the selection (nor of the factor 3 of the general bound)
    assert np.all(bound / truth <= 20.0), bound / truth


# ----------------------------------------------------------------------------- shape of the curve
ORDERS = np.concatenate([1.0 + np.arange(1, 20) / 10.0, np.arange(3.0, 300.0, 7.0), [512.0, 1024.0]])


@pytest.mark.parametrize("sigma, k, eps_sel", [(0.7, 1, 0.3), (1.0, 10, 1.0), (3.0, 100, 5.0)])
def test_curve_monotone_nonnegative_and_batch_level_at_q_one(sigma, k, eps_sel):
    prev = None
    for q in (1e-4, 1e-3, 0.01, 0.05, 0.2, 0.5, 0.9, 1.0):
        r = sel.rdp_poisson_selected_gaussian(ORDERS, q, sigma, k, eps_sel)
        assert np.all(r >= 0) and np.all(np.isfinite(r))
        assert np.all(np.diff(r) >= 0)                         # non-decreasing in the order
        if prev is not None:
            assert np.all(r >= prev * (1 - 1e-12))             # non-decreasing in q
        prev = r
    np.testing.assert_allclose(prev, sel.rdp_selected_gaussian(ORDERS, sigma, k, eps_sel), rtol=1e-14)
    # below the no-amplification value everywhere, and amplified for small q
    small = sel.rdp_poisson_selected_gaussian(ORDERS, 0.01, sigma, k, eps_sel)
    assert np.all(small <= sel.rdp_selected_gaussian(ORDERS, sigma, k, eps_sel))
    assert small[0] < 0.1 * sel.rdp_selected_gaussian(ORDERS[:1], sigma, k, eps_sel)[0]


def test_general_bound_at_q_one_and_its_fallback():
    """At q = 1 the Zhu-Wang bracket is 3 e^{(alpha-1) eps(alpha)} (alpha >= 3): above eps(alpha), so the
    step takes eps_M there."""
    a = np.arange(2.0, 30.0)
    base = lambda ells: rdp_gaussian(ells, 1.3)
    zw = sel.rdp_poisson_general(a, 1.0, base)
    eps_m = base(a)
    want = np.where(a == 2.0, eps_m, eps_m + math.log(3.0) / (a - 1))
    np.testing.assert_allclose(zw, want, rtol=1e-11)
    assert np.all(zw >= eps_m)


def test_general_bound_is_never_below_the_tight_gaussian_value():
    """For the Gaussian the tight value is the exact RDP, so the general bound is at least it."""
    a = np.concatenate([np.arange(2.0, 257.0), [512.0, 1024.0]])
    for q, sigma in ((1e-3, 0.9), (0.01, 1.0), (0.2, 2.0), (0.9, 0.6)):
        zw = sel.rdp_poisson_general(a, q, lambda ells, s=sigma: rdp_gaussian(ells, s))
        assert np.all(zw >= rdp_subsampled_gaussian(a, q, sigma) * (1 - 1e-12))


def test_small_q_keeps_relative_precision():
    """A - 1 is summed directly: at q = 1e-9 the RDP at alpha = 2 is q^2 (e^{eps(2)} - 1), not 0."""
    r = sel.rdp_poisson_general(2.0, 1e-9, lambda ells: rdp_gaussian(ells, 1.0))[0]
    assert r == pytest.approx(1e-18 * math.expm1(1.0), rel=1e-9)


def test_fractional_orders_use_the_ceiling():
    base = lambda ells: rdp_gaussian(ells, 1.0)
    np.testing.assert_array_equal(sel.rdp_poisson_general([2.5, 3.0], 0.1, base),
                                  sel.rdp_poisson_general([3.0, 3.0], 0.1, base))
    assert sel.rdp_poisson_general(1.2, 0.1, base)[0] == sel.rdp_poisson_general(2.0, 0.1, base)[0]


def test_selection_rdp_formulas():
    a = np.array([1.5, 2.0, 8.0, 64.0, 1000.0])
    np.testing.assert_allclose(sel.rdp_top_k_selection(a, 10, 1.0), np.minimum(a / 80.0, 1.0), rtol=1e-15)
    np.testing.assert_allclose(sel.rdp_selected_gaussian(a, 2.0, 10, 1.0), np.minimum(a / 80.0, 1.0) + a / 8.0)
    assert sel.gumbel_scale(10, 1.0, 0.5) == pytest.approx(10.0)
    assert sel.selection_zcdp(4, 2.0) == pytest.approx(0.125)


# ----------------------------------------------------------------------------- epsilon and events
def test_epsilon_example_numbers():
    """q = 0.01, sigma = 1, T = 1000, delta = 1e-5: DP-SGD, and with private top-10 (eps_sel 1 and 0.1)."""
    plain, _ = sgm_epsilon(0.01, 1.0, 1000, 1e-5)
    with_sel, order = sel.epsilon_selected_gaussian(0.01, 1.0, 10, 1.0, 1000, 1e-5)
    small_sel, _ = sel.epsilon_selected_gaussian(0.01, 1.0, 10, 0.1, 1000, 1e-5)
    assert plain == pytest.approx(2.1013, abs=1e-3)
    assert with_sel == pytest.approx(2.5262, abs=1e-3) and order == 7.0
    assert small_sel == pytest.approx(2.4510, abs=1e-3)
    assert plain < small_sel < with_sel
    # the whole epsilon can never exceed T times the selection's pure budget plus the Gaussian's epsilon
    assert with_sel <= 1000 * 1.0 + sgm_epsilon(1.0, 1.0 / math.sqrt(1000), 1, 1e-5)[0]


def test_events_and_epsilon_of():
    ev = SelectedGaussian(1.0, 10, 1.0)
    ps = ev.poisson_sampled(0.01, 1000)
    assert ps == PoissonSelectedGaussian(0.01, 1.0, 10, 1.0, 1000) and hash(ps) == hash(ps)
    eps, order = epsilon_of(ps, 1e-5)
    assert (eps, order) == sel.epsilon_selected_gaussian(0.01, 1.0, 10, 1.0, 1000, 1e-5)
    np.testing.assert_allclose(ps.rdp([2.0, 5.0]), 1000 * sel.rdp_poisson_selected_gaussian([2.0, 5.0], 0.01, 1.0,
                                                                                           10, 1.0))
    np.testing.assert_allclose(ev.rdp([2.0, 5.0]), sel.rdp_selected_gaussian([2.0, 5.0], 1.0, 10, 1.0))
    # a sequence: the RDP curves add on the default grid (fractional orders bounded at their ceiling)
    seq, _ = epsilon_of([ps, PoissonGaussian(0.01, 1.0, 1000)], 1e-5)
    assert seq > eps
    assert epsilon_of([ps], 1e-5)[0] == pytest.approx(eps, rel=1e-6)
    # batch level: the unsampled event
    assert epsilon_of(ev, 1e-5)[0] > epsilon_of(Gaussian(1.0), 1e-5)[0]
    assert dptheory.SelectedGaussian is SelectedGaussian and "private top-10" in str(ps)
    # PLD: the event alone is accounted by epsilon_pld_selected_gaussian; a sequence with it is refused
    # (here the PLD is the smaller bound: min(PLD, RDP) is the PLD, and the info says so)
    e_ps, info_ps = epsilon_of(ps, 1e-5, accountant="pld")
    assert (e_ps, info_ps.bound) == (sel.epsilon_pld_selected_gaussian(0.01, 1.0, 10, 1.0, 1000, 1e-5)[0], "pld")
    e_ev, info_ev = epsilon_of(ev, 1e-5, accountant="pld")
    assert (e_ev, info_ev.bound) == (sel.epsilon_pld_selected_gaussian(1.0, 1.0, 10, 1.0, 1, 1e-5)[0], "pld")
    with pytest.raises(ValueError, match=r"^accountant='pld' accounts a private top-k selection event "):
        epsilon_of([ps, PoissonGaussian(0.01, 1.0, 10)], 1e-5, accountant="pld")


# ----------------------------------------------------------------------------- input checks
@pytest.mark.parametrize("call, match", [
    (lambda: sel.gumbel_scale(0, 1.0, 1.0), r"^k must be an integer in \[1, inf\)"),
    (lambda: sel.gumbel_scale(1, 0.0, 1.0), r"^selection_epsilon must be in \(0\.0, inf\)"),
    (lambda: sel.gumbel_scale(1, 1.0, -1.0), r"^clip must be in \(0\.0, inf\)"),
    (lambda: sel.rdp_top_k_selection(1.0, 1, 1.0), r"^orders must all be in \(1, inf\)"),
    (lambda: sel.rdp_selected_gaussian(2.0, 0.0, 1, 1.0), r"^noise_multiplier must be in \(0\.0, inf\)"),
    (lambda: sel.rdp_poisson_selected_gaussian(2.0, 1.5, 1.0, 1, 1.0), r"^sampling_rate must be in \(0\.0, 1\.0\]"),
    (lambda: sel.rdp_poisson_selected_gaussian(2.0, 0.0, 1.0, 1, 1.0), r"^sampling_rate must be in"),
    (lambda: sel.rdp_poisson_selected_gaussian(2.0, 0.1, 1.0, 2.5, 1.0), r"^k must be an integer"),
    (lambda: sel.rdp_poisson_selected_gaussian(2.0, 0.1, 1.0, 1, float("inf")), r"^selection_epsilon must be finite"),
    (lambda: sel.rdp_poisson_general(2.0, 0.1, 3.0), r"^base_rdp must be a callable"),
    (lambda: sel.rdp_poisson_general(3.0, 0.1, lambda e: np.ones(1)), r"^base_rdp must return one value per order"),
    (lambda: sel.rdp_poisson_general(2.0, 0.1, lambda e: -e), r"^base_rdp must return values in \[0, inf\]"),
    (lambda: sel.epsilon_selected_gaussian(0.1, 1.0, 1, 1.0, 0, 1e-5), r"^steps must be an integer"),
    (lambda: sel.epsilon_selected_gaussian(0.1, 1.0, 1, 1.0, 10, 1.0), r"^delta must be in \(0\.0, 1\.0\)"),
    (lambda: sel.prob_exact_top_k([1.0, 2.0], 3, 1.0), r"^k must be an integer in \[1, 2\]"),
    (lambda: sel.prob_exact_top_k([1.0, np.nan], 1, 1.0), r"^scores must contain only finite values"),
    (lambda: sel.prob_exact_top_k([1.0, 2.0], 1, 0.0), r"^scale must be in"),
    (lambda: SelectedGaussian(1.0, 0, 1.0), r"^k must be an integer"),
    (lambda: SelectedGaussian(1.0, 1, -1.0), r"^selection_epsilon must be in"),
    (lambda: PoissonSelectedGaussian(2.0, 1.0, 1, 1.0), r"^sampling_rate must be in"),
    (lambda: PoissonSelectedGaussian(0.1, 1.0, 1, 1.0, steps=0), r"^steps must be an integer"),
    (lambda: sel.calibrate_noise_selected(0.0, 10, 1.0, 1e-5, 1, 1.0), r"^sampling_rate must be in \(0\.0, 1\.0\]"),
    (lambda: sel.calibrate_noise_selected(0.1, 0, 1.0, 1e-5, 1, 1.0), r"^steps must be an integer in \[1, inf\)"),
    (lambda: sel.calibrate_noise_selected(0.1, 10, 0.0, 1e-5, 1, 1.0), r"^epsilon must be in \(0\.0, inf\)"),
    (lambda: sel.calibrate_noise_selected(0.1, 10, float("nan"), 1e-5, 1, 1.0), r"^epsilon must be finite"),
    (lambda: sel.calibrate_noise_selected(0.1, 10, 1.0, 0.0, 1, 1.0), r"^delta must be in \(0\.0, 1\.0\)"),
    (lambda: sel.calibrate_noise_selected(0.1, 10, 1.0, 1e-5, 0, 1.0), r"^k must be an integer in \[1, inf\)"),
    (lambda: sel.calibrate_noise_selected(0.1, 10, 1.0, 1e-5, 1, -1.0), r"^selection_epsilon must be in \(0\.0, inf\)"),
    (lambda: sel.calibrate_noise_selected(0.1, 10, 1.0, 1e-5, 1, 1.0, rtol=0.0), r"^rtol must be in \[1e-12, 0\.1\]"),
    (lambda: sel.calibrate_noise_selected(0.1, 10, 1.0, 1e-5, 1, 1.0, rtol=0.5), r"^rtol must be in \[1e-12, 0\.1\]"),
    (lambda: sel.calibrate_noise_selected(0.1, 10, 1.0, 1e-5, 1, 1.0, orders=[1.0, 2.0]), r"^orders must all be in"),
    (lambda: sel.epsilon_selection_limit(0.1, 1, 0.0, 10, 1e-5), r"^selection_epsilon must be in \(0\.0, inf\)"),
    (lambda: sel.epsilon_selection_limit(0.1, 1, 1.0, 10, 1e-5, orders=[]), r"^orders must contain at least one"),
])
def test_bad_inputs_name_the_parameter(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_infinite_base_rdp_gives_infinite_bound():
    r = sel.rdp_poisson_general([2.0, 5.0], 0.1, lambda ells: np.where(ells >= 4, np.inf, 1.0))
    assert np.isfinite(r[0]) and r[1] == math.inf


def test_prob_exact_top_k_against_peeling():
    """The inclusion-exclusion form against the peeling sum over the orderings of the top set."""
    import itertools

    u = np.array([2.0, 1.5, 1.2, 0.3, -0.5, 0.0])
    b = 0.8
    w = np.exp(u / b)
    for k in (1, 2, 3, 6):
        top = tuple(np.argsort(-u)[:k])
        total = 0.0
        for perm in itertools.permutations(top):
            left, p = list(range(len(u))), 1.0
            for j in perm:
                p *= w[j] / w[left].sum()
                left.remove(j)
            total += p
        assert sel.prob_exact_top_k(u, k, b) == pytest.approx(total, rel=1e-12)


# ----------------------------------------------------------------------------- calibration
@pytest.mark.parametrize("q, T, target, k, eps_sel, rtol", [
    (0.01, 1000, 3.0, 10, 1.0, sel.CALIBRATION_RTOL),
    (0.2, 50, 6.0, 2, 0.5, 1e-3),
    (0.2, 50, 6.0, 2, 0.5, 1e-12),
    (1.0, 3, 8.0, 1, 1.0, sel.CALIBRATION_RTOL),
])
def test_calibrated_sigma_meets_the_target_and_is_the_smallest(q, T, target, k, eps_sel, rtol):
    """epsilon(sigma) <= target (the returned end of the bracket is the feasible one) and
    epsilon(sigma (1 - rtol)) > target (it is the smallest to within rtol)."""
    s = sel.calibrate_noise_selected(q, T, target, 1e-5, k, eps_sel, rtol=rtol)
    assert sel.epsilon_selected_gaussian(q, s, k, eps_sel, T, 1e-5)[0] <= target
    assert sel.epsilon_selected_gaussian(q, s * (1 - rtol), k, eps_sel, T, 1e-5)[0] > target


def test_calibration_example_numbers_and_explicit_orders():
    """docs/selection.md: eps = 3 at q = 0.01, T = 1000, delta = 1e-5, k = 10, eps_sel = 1 needs sigma = 0.9290
    (dense DP-SGD: 0.865); the selection alone spends 0.5121. Explicit orders are passed through."""
    s = sel.calibrate_noise_selected(0.01, 1000, 3.0, 1e-5, 10, 1.0)
    assert s == pytest.approx(0.92904, abs=1e-4)
    assert s > dptheory.calibrate_noise(0.01, 1000, 3.0, 1e-5)
    assert sel.epsilon_selection_limit(0.01, 10, 1.0, 1000, 1e-5) == (pytest.approx(0.51210, abs=1e-4), 25.0)
    orders = np.arange(2.0, 33.0)
    s_few = sel.calibrate_noise_selected(0.01, 1000, 3.0, 1e-5, 10, 1.0, orders=orders)
    assert sel.epsilon_selected_gaussian(0.01, s_few, 10, 1.0, 1000, 1e-5, orders=orders)[0] <= 3.0
    assert s_few >= s * (1 - 1e-7)   # fewer orders: never a smaller sigma


@pytest.mark.parametrize("q, T, k, eps_sel", [(0.01, 1000, 10, 1.0), (0.2, 50, 2, 0.5), (1.0, 3, 1, 1.0)])
def test_epsilon_is_decreasing_in_sigma_towards_the_selection_limit(q, T, k, eps_sel):
    """What the bracketing search relies on: along sigma = 0.3 .. 3e4 epsilon strictly decreases and stays
    above epsilon_selection_limit (its infimum), which it approaches."""
    sigmas = np.geomspace(0.3, 3e4, 16)
    eps = np.array([sel.epsilon_selected_gaussian(q, x, k, eps_sel, T, 1e-5)[0] for x in sigmas])
    floor, _ = sel.epsilon_selection_limit(q, k, eps_sel, T, 1e-5)
    assert np.all(np.diff(eps) < 0), np.diff(eps)
    assert np.all(eps > floor)
    assert eps[-1] - floor < 1e-5 * max(floor, 1.0)


def test_unreachable_target_names_epsilon_and_the_selection_limit():
    floor, _ = sel.epsilon_selection_limit(0.01, 10, 1.0, 1000, 1e-5)
    for target in (floor, 0.99 * floor, 0.5):
        with pytest.raises(ValueError, match=r"^epsilon=\S+ cannot be reached: the selection alone spends "
                                             r"epsilon=0\.5121010\d* \(epsilon_selection_limit.*selection_epsilon"):
            sel.calibrate_noise_selected(0.01, 1000, target, 1e-5, 10, 1.0)
    # just above the limit is reachable, with a large sigma
    s = sel.calibrate_noise_selected(0.01, 1000, floor * (1 + 1e-3), 1e-5, 10, 1.0)
    assert s > 50.0 and sel.epsilon_selected_gaussian(0.01, s, 10, 1.0, 1000, 1e-5)[0] <= floor * (1 + 1e-3)


def test_absurd_target_stops_at_the_smallest_sigma_tried():
    """As accounting.calibrate_noise: a sigma in [2^-30, 2^-29) that meets the target is returned."""
    s = sel.calibrate_noise_selected(1.0, 1, 1e20, 1e-5, 1, 1.0)
    assert 2.0**-30 * (1 - 1e-12) <= s < 2.0**-29
    assert sel.epsilon_selected_gaussian(1.0, s, 1, 1.0, 1, 1e-5)[0] <= 1e20


# ----------------------------------------------------------------------------- the shared search
# sigma returned by calibrate_noise / calibrate_noise_selected before their bracketing loops were factored
# into dptheory.accounting.calibrate_sigma (recorded from commit a114525, as float.hex): the same
# arithmetic in the same order, so the same bits.
_DENSE_BEFORE = [
    ((0.01, 1000, 3.0, 1e-5), {}, "0x1.baa5975bc6074p-1"),
    ((0.01, 1000, 1.0, 1e-5), {"conversion": "classic"}, "0x1.c4e2b5b028e58p+0"),
    ((1.0, 1, 1e20, 1e-5), {}, "0x1.0000000000034p-30"),
    ((0.2, 10, 4.0, 1e-5), {}, "0x1.3b6598c4b72b9p+0"),
    ((0.001, 10000, 0.5, 1e-6), {}, "0x1.5ba999ac0bf4bp+0"),
]
_SELECTED_BEFORE = [
    ((0.01, 1000, 3.0, 1e-5, 10, 1.0), {}, "0x1.dbaac0a88eeddp-1"),
    ((0.2, 10, 4.0, 1e-5, 2, 0.5), {}, "0x1.8cc83f8eba079p+0"),
    ((1.0, 1, 1e20, 1e-5, 1, 1.0), {}, "0x1.0000000000034p-30"),
    ((0.01, 1000, 1.0, 1e-5, 10, 0.1), {"rtol": 1e-3}, "0x1.ce5fb0019f7a8p+0"),
    ((0.1, 20, 4.0, 1e-4, 3, 1.0), {}, "0x1.1cab89bd597d2p+0"),
]


@pytest.mark.parametrize("args, kw, before", _DENSE_BEFORE)
def test_calibrate_noise_unchanged_by_the_shared_search(args, kw, before):
    assert dptheory.calibrate_noise(*args, **kw) == float.fromhex(before)


@pytest.mark.parametrize("args, kw, before", _SELECTED_BEFORE)
def test_calibrate_noise_selected_unchanged_by_the_shared_search(args, kw, before):
    assert sel.calibrate_noise_selected(*args, **kw) == float.fromhex(before)


def test_calibrate_sigma_on_a_closed_form():
    """eps(sigma) = 1/sigma: the smallest sigma meeting target 0.25 is 4, found to within rtol from either side
    of the start; the returned end meets the target."""
    from dptheory.accounting import calibrate_sigma

    for start in (0.3, 4.0, 1e3):
        for rtol in (1e-3, 1e-7, 1e-12):
            s = calibrate_sigma(lambda x: 1.0 / x, 0.25, start, rtol=rtol)
            assert 1.0 / s <= 0.25 and s <= 4.0 * math.exp(rtol) * (1 + 1e-15)


def test_calibrate_sigma_unreachable_and_bad_inputs():
    from dptheory.accounting import calibrate_sigma

    with pytest.raises(ValueError, match=r"^epsilon=0\.5 cannot be reached with noise_multiplier <= 2\*\*60"):
        calibrate_sigma(lambda x: 1.0, 0.5, 1.0)
    with pytest.raises(ValueError, match=r"^mine$"):
        calibrate_sigma(lambda x: 1.0, 0.5, 1.0, error=ValueError("mine"))
    assert calibrate_sigma(lambda x: 0.0, 0.5, 1.0) < 2.0**-29
    for call, match in [
        (lambda: calibrate_sigma(3.0, 0.5, 1.0), r"^eps_of_sigma must be a callable"),
        (lambda: calibrate_sigma(abs, 0.0, 1.0), r"^target must be in \(0\.0, inf\)"),
        (lambda: calibrate_sigma(abs, 0.5, -1.0), r"^sigma0 must be in \(0\.0, inf\)"),
        (lambda: calibrate_sigma(abs, 0.5, 1.0, rtol=1.0), r"^rtol must be in \[1e-12, 0\.1\]"),
    ]:
        with pytest.raises(ValueError, match=match):
            call()


# ----------------------------------------------------------------------------- PLD accountant
def _rr_pair(k, eps):
    """k rounds of randomized response at eps/k: log-ratio, first- and second-measure probability per outcome."""
    a = np.arange(k + 1)
    p = math.exp(eps / k) / (1 + math.exp(eps / k))
    binom = np.array([math.comb(k, int(j)) for j in a], dtype=float)
    return (eps / k) * (2 * a - k), binom * p**a * (1 - p) ** (k - a), binom * (1 - p) ** a * p ** (k - a)


def _eps_from_delta_curve(delta_of, delta):
    """The smallest epsilon >= 0 with delta_of(epsilon) <= delta (delta_of is decreasing)."""
    from scipy import optimize

    if delta_of(0.0) <= delta:
        return 0.0
    hi = 1.0
    while delta_of(hi) > delta:
        hi *= 2
    return optimize.brentq(lambda e: delta_of(e) - delta, 0.0, hi, xtol=1e-12, rtol=1e-12)


def _exact_full_batch(s, k, eps, T, delta):
    """q = 1: epsilon of T steps of the product pair in closed form. The selection's loss over T steps is
    (eps/k)(2A - kT), A ~ Bin(kT, p); the Gaussian's is that of N(mu, 1) vs N(0, 1), mu = sqrt(T)/s, so
    delta(e) = sum_A P(A) [Phi(mu/2 - (e - l_A)/mu) - e^(e - l_A) Phi(-mu/2 - (e - l_A)/mu)]."""
    from scipy.stats import binom

    n = k * T
    A = np.arange(n + 1)
    p = math.exp(eps / k) / (1 + math.exp(eps / k))
    w, lam, mu = binom.pmf(A, n, p), (eps / k) * (2 * A - n), math.sqrt(T) / s

    def delta_of(e):
        x = e - lam
        return float(np.sum(w * (special.ndtr(mu / 2 - x / mu) - np.exp(x) * special.ndtr(-mu / 2 - x / mu))))

    return _eps_from_delta_curve(delta_of, delta)


def _quadrature_one_step(q, s, k, eps, delta):
    """epsilon of ONE step from the hockey-stick integrals of ((1-q)Q + qP, Q) and (Q, (1-q)Q + qP), by
    quadrature over z per selection outcome (the sign change of the integrand found numerically)."""
    from scipy import optimize

    lam, pf, ps = _rr_pair(k, eps)
    phi = lambda z, m: math.exp(-((z - m) ** 2) / (2 * s * s)) / (s * math.sqrt(2 * math.pi))  # noqa: E731

    def hockey(first, second, e):
        total = 0.0
        for j in range(lam.size):
            f = lambda z: first(j, z) - math.exp(e) * second(j, z)  # noqa: E731
            lo, hi = -40 * s - 1, 40 * s + 2
            pts = []
            if f(lo) * f(hi) < 0:
                pts = [optimize.brentq(f, lo, hi, xtol=1e-13)]
            val, _ = integrate.quad(lambda z: max(f(z), 0.0), lo, hi, points=pts or None, limit=400,
                                    epsabs=1e-16, epsrel=1e-11)
            total += val
        return total

    X = lambda j, z: (1 - q) * ps[j] * phi(z, 0.0) + q * pf[j] * phi(z, 1.0)  # noqa: E731
    Y = lambda j, z: ps[j] * phi(z, 0.0)  # noqa: E731
    return max(_eps_from_delta_curve(lambda e: hockey(X, Y, e), delta),
               _eps_from_delta_curve(lambda e: hockey(Y, X, e), delta))


def test_pld_loss_is_the_log_likelihood_ratio():
    """privacy_loss_selected_gaussian against log X/Y evaluated from the densities."""
    q, s = 0.03, 0.8
    lam, pf, ps = _rr_pair(3, 1.2)
    z = np.linspace(-5, 6, 23)
    for j in range(lam.size):
        x = (1 - q) * ps[j] * np.exp(-z**2 / (2 * s * s)) + q * pf[j] * np.exp(-(z - 1) ** 2 / (2 * s * s))
        y = ps[j] * np.exp(-z**2 / (2 * s * s))
        np.testing.assert_allclose(sel.privacy_loss_selected_gaussian(z, lam[j], q, s), np.log(x / y), rtol=1e-12,
                                   atol=1e-14)


@pytest.mark.parametrize("q, s, T", [(0.01, 1.0, 1000), (0.1, 2.0, 50), (0.001, 0.7, 10000), (1.0, 1.0, 3)])
def test_pld_with_a_negligible_selection_is_the_subsampled_gaussian_pld(q, s, T):
    """(a) selection_epsilon = 1e-9: dptheory's plain Poisson-Gaussian PLD epsilon, to within the accuracy of
    either (each reports the gap between its two grids)."""
    ours, gap = sel.epsilon_pld_selected_gaussian(q, s, 10, 1e-9, T, 1e-5)
    plain, plain_gap = dptheory.accounting.epsilon_pld(q, s, T, 1e-5)
    assert abs(ours - plain) <= max(gap, plain_gap) + 1e-6, (ours, plain, gap, plain_gap)


@pytest.mark.parametrize("s, k, eps", [(1.0, 1, 1.0), (0.7, 1, 0.1), (2.0, 10, 1.0), (1.0, 3, 2.0)])
def test_pld_one_full_batch_step_against_quadrature(s, k, eps):
    """(b) q = 1, one step: never below the epsilon of the product pair computed by quadrature, and within
    the accuracy the accountant reports (gap; measured: within 0.15% of a 16-times finer grid)."""
    exact = _quadrature_one_step(1.0, s, k, eps, 1e-5)
    ours, gap = sel.epsilon_pld_selected_gaussian(1.0, s, k, eps, 1, 1e-5)
    assert exact <= ours <= exact + max(gap, 2e-3 * exact)
    assert exact == pytest.approx(_exact_full_batch(s, k, eps, 1, 1e-5), rel=1e-6)   # two independent routes


@pytest.mark.parametrize("q, s, k, eps", [(0.1, 1.0, 1, 1.0), (0.01, 0.7, 10, 0.5), (0.3, 2.0, 2, 2.0)])
def test_pld_one_subsampled_step_against_quadrature(q, s, k, eps):
    """One Poisson-subsampled step: never below the quadrature of both directions' hockey-stick integrals."""
    exact = _quadrature_one_step(q, s, k, eps, 1e-5)
    ours, gap = sel.epsilon_pld_selected_gaussian(q, s, k, eps, 1, 1e-5)
    assert exact <= ours <= exact + max(gap, 2e-3 * exact), (exact, ours, gap)


@pytest.mark.parametrize("s, k, eps, T", [(1.0, 1, 0.5, 10), (2.0, 10, 1.0, 30), (0.8, 2, 0.2, 100)])
def test_pld_full_batch_composition_never_below_the_exact_value(s, k, eps, T):
    """(c) q = 1, T steps: the exact epsilon of the T-fold product is computable (binomial selection loss,
    Gaussian with mu = sqrt(T)/sigma); the PLD value is at or above it, within its accuracy."""
    exact = _exact_full_batch(s, k, eps, T, 1e-5)
    ours, gap = sel.epsilon_pld_selected_gaussian(1.0, s, k, eps, T, 1e-5)
    assert exact <= ours <= exact + max(gap, 2e-3 * exact), (exact, ours, gap)


_NOISE_DOMINATED = [(q, s, k, eps, T) for q in (0.001, 0.01, 0.1) for s in (0.7, 1.0, 2.0)
                    for k, eps in ((10, 0.1), (10, 1.0), (100, 2.0)) for T in (1, 1000)]


@pytest.mark.parametrize("cases", [pytest.param(_NOISE_DOMINATED[::3], id="every_third"),
                                   pytest.param(_NOISE_DOMINATED, id="all", marks=pytest.mark.slow)])
def test_pld_below_rdp_where_the_noise_dominates(cases):
    """(c) RDP is an upper bound too; where the Gaussian dominates the step (per-round selection budget
    eps/k <= 0.1, sigma <= 2, q <= 0.1) the PLD value is below it on the 54 cases of this grid (every
    third in the default suite, all under -m slow). Where the
    selection dominates, RDP can be lower (it uses the zCDP eps^2/(8k) of bounded range, which no single
    randomized-response pair expresses): e.g. q = 1, sigma = 5, k = 1, eps = 1, T = 100, below."""
    for q, s, k, eps, T in cases:
        pld, _ = sel.epsilon_pld_selected_gaussian(q, s, k, eps, T, 1e-5)
        rdp, _ = sel.epsilon_selected_gaussian(q, s, k, eps, T, 1e-5)
        assert pld < rdp, (q, s, k, eps, T, pld, rdp)
    pld, _ = sel.epsilon_pld_selected_gaussian(1.0, 5.0, 1, 1.0, 100, 1e-5)
    assert pld > sel.epsilon_selected_gaussian(1.0, 5.0, 1, 1.0, 100, 1e-5)[0]


def test_pld_monotone_in_steps_and_selection_epsilon():
    """(d) epsilon increases with the steps and with the selection budget (q = 0.01, sigma = 1, k = 10)."""
    by_steps = [sel.epsilon_pld_selected_gaussian(0.01, 1.0, 10, 0.5, T, 1e-5)[0] for T in (1, 10, 100, 1000, 10000)]
    assert np.all(np.diff(by_steps) > 0), by_steps
    by_eps = [sel.epsilon_pld_selected_gaussian(0.01, 1.0, 10, e, 1000, 1e-5)[0] for e in (0.05, 0.2, 0.5, 1.0, 2.0)]
    assert np.all(np.diff(by_eps) > 0), by_eps


def test_pld_example_numbers_and_run_time():
    """docs/selection.md: q = 0.01, sigma = 1, k = 10, eps_sel = 0.1, delta = 1e-5: 1.831 at T = 1000 (RDP 2.451,
    plain DP-SGD PLD 1.829), 6.197 at T = 1e4 (RDP 7.278); each well under the 5 s budget."""
    import time

    for T, want in ((1000, 1.8309), (10000, 6.1974)):
        t0 = time.perf_counter()
        eps, gap = sel.epsilon_pld_selected_gaussian(0.01, 1.0, 10, 0.1, T, 1e-5)
        assert time.perf_counter() - t0 < 5.0
        assert eps == pytest.approx(want, abs=1e-3) and gap <= 2e-3 * eps


def _hockey_stick_lower_bound(q, T, s, eps):
    """A rigorous lower bound on delta(eps) of T Poisson-subsampled Gaussian steps (remove
    direction): delta(eps) >= X^T(A) - e^eps Q^T(A) for the events A = {some step has z > c}
    (the hockey-stick divergence is a supremum over events); a selection step only adds to it."""
    from scipy import special

    best = -1.0
    for c in np.linspace(1, 6, 2001):
        pQ, pP = special.ndtr(-c / s), special.ndtr(-(c - 1) / s)
        pX = (1 - q) * pQ + q * pP
        best = max(best, -np.expm1(T * np.log1p(-pX)) - np.exp(eps) * -np.expm1(T * np.log1p(-pQ)))
    return best


@pytest.mark.parametrize("q,T", [(1e-5, 10**5), (1e-6, 10**6)])
def test_selection_pld_never_reports_below_a_rigorous_lower_bound(q, T):
    """Small q, many steps, delta = 1e-10: the FFT noise of the composition once pulled the selection
    PLD below the truth (2.80 and 0.88 reported; delta at those epsilons is provably above 1e-10).
    The composition's noise check now refuses the PLD there, and epsilon_of returns the RDP bound."""
    ev = PoissonSelectedGaussian(sampling_rate=q, noise_multiplier=0.5, k=1, selection_epsilon=1e-9, steps=T)
    eps, info = epsilon_of(ev, 1e-10, accountant="pld")
    assert _hockey_stick_lower_bound(q, T, 0.5, eps) <= 1e-10
    assert info.bound == "rdp" and info.status == "unstable" and info.gap == math.inf
    assert sel.epsilon_pld_selected_gaussian(q, 0.5, 1, 1e-9, T, 1e-10) == (math.inf, math.inf)


@pytest.mark.parametrize("call, match", [
    (lambda: sel.epsilon_pld_selected_gaussian(0.0, 1.0, 1, 1.0, 10, 1e-5), r"^sampling_rate must be in \(0\.0, 1\.0\]"),
    (lambda: sel.epsilon_pld_selected_gaussian(0.1, 0.0, 1, 1.0, 10, 1e-5), r"^noise_multiplier must be in"),
    (lambda: sel.epsilon_pld_selected_gaussian(0.1, 1.0, 0, 1.0, 10, 1e-5), r"^k must be an integer in \[1, inf\)"),
    (lambda: sel.epsilon_pld_selected_gaussian(0.1, 1.0, 1, 0.0, 10, 1e-5), r"^selection_epsilon must be in"),
    (lambda: sel.epsilon_pld_selected_gaussian(0.1, 1.0, 1, 1.0, 0, 1e-5), r"^steps must be an integer"),
    (lambda: sel.epsilon_pld_selected_gaussian(0.1, 1.0, 1, 1.0, 10, 1.0), r"^delta must be in \(0\.0, 1\.0\)"),
    (lambda: sel.epsilon_pld_selected_gaussian(0.1, 1.0, 1, 1.0, 10, 1e-5, accuracy=0.5), r"^accuracy must be in"),
    (lambda: sel.privacy_loss_selected_gaussian(0.0, 0.0, 1.5, 1.0), r"^sampling_rate must be in"),
])
def test_pld_bad_inputs_name_the_parameter(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("event", [
    PoissonSelectedGaussian(0.01, 3.0, 1, 1.0, 1000),    # the selection dominates: RDP is smaller
    PoissonSelectedGaussian(0.01, 5.0, 10, 2.0, 100),
    PoissonSelectedGaussian(0.01, 1.0, 10, 1.0, 1000),   # the noise dominates: PLD is smaller
    SelectedGaussian(3.0, 1, 1.0),
    SelectedGaussian(1.0, 10, 0.1),
])
def test_selection_pld_is_min_of_pld_and_rdp(event):
    """accountant="pld" on a selection event: min(PLD of the dominating pair, RDP), never above the
    RDP value, and the info names the smaller bound (deterministic inputs: no false failures)."""
    eps, info = epsilon_of(event, 1e-5, accountant="pld")
    rdp = epsilon_of(event, 1e-5)[0]
    q, t = (event.sampling_rate, event.steps) if isinstance(event, PoissonSelectedGaussian) else (1.0, 1)
    pld, gap = sel.epsilon_pld_selected_gaussian(q, event.noise_multiplier, event.k, event.selection_epsilon, t, 1e-5)
    assert eps <= rdp and eps == min(pld, rdp) == info.epsilon
    assert info.bound == ("pld" if pld <= rdp else "rdp") and info.rdp == rdp and info.pld == pld
    assert info.gap == gap >= 0
