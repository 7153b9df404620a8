"""The fast paths of dptheory.accounting agree with the exhaustive computation (issue 14, item 6).

No wall time is asserted here (see benchmarks/bench_accounting_speed.py); only correctness:

* integer orders > 256 sum windows of their terms plus a rigorous bound of the rest: never below
  the exact finite sum (mpmath, 40 digits), and within rounding of the full float sum;
* the order search (integer orders above 4096) matches an exhaustive search over fractional
  orders within its stated tolerance, and never goes below it beyond rounding;
* calibrate_noise still returns the smallest sigma meeting the target;
* epsilon_pld is within its reported gap of a much finer PLD, and its gap meets its target on
  ordinary inputs (the old fixed 1e-4 grid was off by 37 % on one of them); it is never above the
  RDP bound (min(PLD, RDP); an unstable PLD gives the RDP bound) and its grids fit the cost budget.
"""
import math

import dp_accounting
import mpmath as mp
import numpy as np
import pytest
from scipy import optimize
from scipy.special import gammaln

from dptheory import accounting as acc
from dptheory.accounting import (
    DEFAULT_ORDERS,
    calibrate_noise,
    epsilon,
    epsilon_from_rdp,
    epsilon_pld,
    rdp_subsampled_gaussian,
)


# ----------------------------------------------------------------------------- references
def log_a_full(q, sigma, a):
    """log A_a for an integer order from the full float sum of A - 1 =
    sum_{i=2}^a C(a,i) q^i (1-q)^(a-i) expm1((i^2-i)/(2 s^2)) (every term; no error allowance)."""
    i = np.arange(2.0, a + 1.0)
    c = (i * i - i) / (2.0 * sigma * sigma)
    log_expm1 = np.where(c > 30, c + np.log1p(-np.exp(-np.minimum(c, 700.0))), np.log(np.expm1(np.minimum(c, 30.0))))
    lt = gammaln(a + 1.0) - gammaln(i + 1.0) - gammaln(a - i + 1.0) + i * math.log(q) \
        + (a - i) * math.log1p(-q) + log_expm1
    m = lt.max()
    return float(np.logaddexp(0.0, m + math.log(np.exp(lt - m).sum())))


def rdp_exact(q, sigma, a):
    """RDP at an integer order from the exact finite sum of A - 1 (terms i >= 2) in 40-digit mpmath."""
    with mp.workdps(40):
        qq, s2 = mp.mpf(q), mp.mpf(sigma) ** 2
        am1 = mp.fsum(mp.binomial(a, i) * qq**i * (1 - qq) ** (a - i) * mp.expm1(mp.mpf(i * i - i) / (2 * s2))
                      for i in range(2, a + 1))
        return float(mp.log1p(am1) / (a - 1))


def exhaustive_epsilon(q, sigma, steps, delta):
    """The previous optimiser: DEFAULT_ORDERS extended by 16 orders per doubling while the best
    order is the last, then bounded Brent over FRACTIONAL orders between the best one's neighbours."""
    orders = DEFAULT_ORDERS
    rdp = rdp_subsampled_gaussian(orders, q, sigma)
    vals = np.array([epsilon_from_rdp([a], [steps * r], delta)[0] for a, r in zip(orders, rdp)])
    while int(np.argmin(vals)) == orders.size - 1 and orders[-1] < 2.0**20:
        extra = np.unique(np.round(np.geomspace(orders[-1] + 1.0, 2.0 * orders[-1], 16)))
        r = rdp_subsampled_gaussian(extra, q, sigma)
        orders = np.concatenate([orders, extra])
        vals = np.concatenate([vals, [epsilon_from_rdp([a], [steps * x], delta)[0] for a, x in zip(extra, r)]])
    k = int(np.argmin(vals))
    lo = orders[k - 1] if k > 0 else 1.01
    hi = orders[k + 1] if k + 1 < orders.size else orders[k]

    def f(a):
        return epsilon_from_rdp([a], [steps * rdp_subsampled_gaussian(a, q, sigma)[0]], delta)[0]

    res = optimize.minimize_scalar(f, bounds=(lo, hi), method="bounded", options={"xatol": 1e-7 * hi})
    return min(float(vals[k]), float(res.fun)), float(res.x)


def order_tolerance(order, eps, delta):
    """The stated cost of integer orders above 4096: (log(1/delta) + log a) / (a - 1)^2 absolute."""
    if order <= 4096:
        return 1e-9 * eps
    return (math.log(1 / delta) + math.log(order)) / (order - 1) ** 2 + 1e-9 * eps


def pld_reference(q, sigma, steps, delta, interval):
    acct = dp_accounting.pld.PLDAccountant(value_discretization_interval=interval)
    acct.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
    return float(acct.get_epsilon(delta))


# ----------------------------------------------------------------------------- large integer orders
WINDOW_POINTS = [(3.94e-6, 78.66, 154011), (3.01e-5, 61.0, 77497), (0.5, 2.0, 3000), (0.9, 0.6, 2000),
                 (1e-12, 200.0, 300000), (0.25, 0.35, 50000), (1e-3, 5.0, 345), (0.3, 148.4, 1494)]


@pytest.mark.parametrize("q,sigma,a", WINDOW_POINTS)
def test_windowed_integer_orders_match_the_full_sum(q, sigma, a):
    """log A from the windows is within the rounding allowance of the full float sum: the documented
    excess 4e-14 a log(a) relative (16 ulps of the magnitude of gammaln), plus 1e-12."""
    ours = float(rdp_subsampled_gaussian(float(a), q, sigma)[0]) * (a - 1)
    full = log_a_full(q, sigma, a)
    tol = (1e-12 + 4e-14 * a * math.log(a)) * abs(full)
    assert full - tol <= ours <= full + tol


@pytest.mark.parametrize("q,sigma,a", [(3.94e-6, 78.66, 2000), (0.5, 2.0, 600), (0.9, 0.6, 300),
                                       (1e-3, 5.0, 345), (0.25, 0.35, 400)])
def test_windowed_integer_orders_are_upper_bounds(q, sigma, a):
    """Never below the exact finite sum (40-digit mpmath), and within 1e-9 of it."""
    ours = float(rdp_subsampled_gaussian(float(a), q, sigma)[0])
    ref = rdp_exact(q, sigma, a)
    assert ref <= ours <= ref * (1 + 1e-9)


def test_large_orders_positive_and_monotone():
    orders = np.unique(np.round(np.geomspace(257, 2**20, 40)))
    for q, sigma in [(1e-9, 100.0), (1e-3, 3.0), (0.5, 50.0), (0.99, 0.5)]:
        r = rdp_subsampled_gaussian(orders, q, sigma)
        assert np.all(r > 0) and np.all(np.diff(r) >= 0)


# ----------------------------------------------------------------------------- the order search
SEARCH_CASES = [
    (3.939905498982814e-06, 78.66405991943687, 949, 3.4705876937693183e-10),    # order ~1.5e5 (was 1.5 s)
    (0.00012825507192212998, 22.03600194701166, 18, 4.232961267860703e-10),     # ~8.7e3, the worst seen
    (0.0062925166369345855, 7.09884114913221, 2, 4.92880500039358e-09),         # ~510, fractional
    (0.012973801435088037, 75.92412610512145, 1, 5.922934998929997e-06),        # ~1.3e4
    (0.01, 1.0, 1000, 1e-5), (256 / 60000, 1.1, 14063, 1e-5), (1.0, 100.0, 1, 1e-10),
]


@pytest.mark.parametrize("case", SEARCH_CASES)
def test_search_agrees_with_exhaustive_fractional_search(case):
    ours, order = epsilon(*case)
    ref, ref_order = exhaustive_epsilon(*case)
    # below only by the smaller rounding allowance of a windowed sum (fewer terms; still a bound)
    assert ours >= ref * (1 - 1e-12 - 4e-14 * order * math.log(order))
    assert ours <= ref + order_tolerance(ref_order, ref, case[3])
    # the reported epsilon is attained at the reported order
    at = epsilon_from_rdp([order], [case[2] * rdp_subsampled_gaussian(order, *case[:2])[0]], case[3])[0]
    assert ours == pytest.approx(at, rel=1e-12)


@pytest.mark.parametrize("case", SEARCH_CASES[:4])
def test_search_result_is_an_upper_bound_at_its_order(case):
    """At the integer order returned, the RDP used is >= the exact finite sum (40-digit mpmath)."""
    q, sigma = case[:2]
    _, order = epsilon(*case)
    a = min(round(order), 20000)      # mpmath's exact sum of 1.5e5 terms takes minutes; 20000 suffices
    assert rdp_subsampled_gaussian(float(a), q, sigma)[0] >= rdp_exact(q, sigma, a)


def test_box_epsilon_finite_positive_and_monotone_in_steps():
    rng = np.random.default_rng(6)
    for _ in range(40):
        q = float(10 ** rng.uniform(-6, 0))
        sigma = float(10 ** rng.uniform(math.log10(0.5), 2))
        steps = int(10 ** rng.uniform(0, 6))
        delta = float(10 ** rng.uniform(-10, -3))
        e1, a1 = epsilon(q, sigma, steps, delta)
        e2, _ = epsilon(q, sigma, 2 * steps, delta)
        assert math.isfinite(e1) and e1 >= 0 and a1 > 1 and e2 >= e1


# ----------------------------------------------------------------------------- calibration
@pytest.mark.parametrize("q,steps,target,delta", [
    (1e-6, 1, 0.05, 1e-10), (0.5, 10**6, 0.05, 1e-10), (1e-5, 10**6, 0.1, 1e-10), (0.3, 7, 12.0, 1e-3),
])
def test_calibrate_noise_smallest_sigma_on_the_box_corners(q, steps, target, delta):
    sigma = calibrate_noise(q, steps, target, delta)
    assert epsilon(q, sigma, steps, delta)[0] <= target
    assert epsilon(q, sigma * (1 - 1e-6), steps, delta)[0] > target


# ----------------------------------------------------------------------------- PLD
# Deterministic (no randomness: fixed inputs, false-failure probability 0); no wall time is asserted,
# only values, grid counts and the cost model's sizes.
@pytest.mark.parametrize("case", [(256 / 60000, 1.1, 14063, 1e-5), (0.0011, 1.68, 7965, 6.3e-4),
                                  (0.1174, 4.88, 2, 3.98e-9), (0.01, 1.0, 1000, 1e-5)])
def test_pld_within_its_gap_of_a_finer_grid(case):
    """The returned value minus a reference on a grid 8 times finer than the finest used is within the
    stated gap, never below the reference (pessimistic), and the target gap is met on these inputs."""
    res = epsilon_pld(*case)
    eps, gap = res
    info = res.info
    fine = pld_reference(*case, interval=info.intervals[-1] / 8)
    assert info.status == "settled" and info.bound == "pld" and eps == info.pld
    assert 0 <= gap <= acc.PLD_ACCURACY * eps + 1e-9        # the target is met here
    assert fine - 1e-9 <= eps <= fine + gap                  # pessimistic, within its gap of the truth
    e2, info2 = epsilon(*case, accountant="pld")
    assert e2 == eps and info2 == info


def test_pld_no_longer_overestimates_at_many_steps():
    """q = 1e-4, sigma = 2, T = 1e6: the fixed 1e-4 grid gave 0.327 (the finest PLD: ~0.24)."""
    case = (1e-4, 2.0, 10**6, 1e-8)
    eps, gap = epsilon_pld(*case)
    assert gap <= 0.01 * eps
    assert pld_reference(*case, interval=1e-4) > 1.2 * eps       # the old rule
    assert eps <= epsilon(*case)[0]                               # below the RDP upper bound


def test_pld_unstable_case_returns_the_rdp_bound():
    """Audit case (ii): q = 1e-6, sigma = 0.5, T = 1e6, delta = 1e-10. dp-accounting's FFT noise
    (relative ~T 1e-16) swamps delta there (its epsilons jumped between 0.8 and 11.7 over grids);
    the result must never exceed the rigorous RDP bound, and says it is that bound."""
    case = (1e-6, 0.5, 10**6, 1e-10)
    res = epsilon_pld(*case)
    rdp = epsilon(*case)[0]
    assert res[0] <= rdp
    assert res.info.status == "unstable" and res.info.bound == "rdp" and res[0] == rdp
    assert res[1] == math.inf                                     # accuracy unknown: said so
    assert epsilon(*case, accountant="pld")[0] == res[0]


def test_pld_never_above_rdp_and_honest_on_cheap_cases():
    """min(PLD, RDP): never above RDP; the info names the bound returned; when the PLD is used its
    gap bounds the excess over a grid 8 times finer than the finest used."""
    for case in [(0.3, 3.0, 10, 1e-5), (1e-3, 1.0, 1000, 1e-5), (1.0, 5.0, 1, 1e-6), (0.01, 0.5, 10, 1e-5)]:
        res = epsilon_pld(*case)
        info = res.info
        rdp = epsilon(*case)[0]
        assert res[0] <= rdp and info.rdp == rdp
        assert res[0] == (info.pld if info.bound == "pld" else rdp)
        assert res[0] == min(info.pld, rdp)
        assert info.status in ("settled", "unsettled")
        fine = pld_reference(*case, interval=info.intervals[-1] / 8)
        assert fine - 1e-9 <= info.pld and res[0] - fine <= res[1] + 1e-12


def test_pld_grid_ladder_fits_its_budget(monkeypatch):
    """Audit case (iii) (q = 0.3, sigma = 0.6, T = 1e6; 8.6 s before): the grids composed stay within
    the cost budget by their sizes (the cost model, not the clock), at most _PLD_MAX_GRIDS of them,
    and the accuracy target is met."""
    sizes = []
    real = acc._pld_compose

    def counting(pmfs, steps, delta, windows):
        sizes.append((sum(p.size for p in pmfs), sum(hi - lo + 1 for lo, hi in windows)))
        return real(pmfs, steps, delta, windows)

    monkeypatch.setattr(acc, "_pld_compose", counting)
    res = epsilon_pld(0.3, 0.6, 10**6, 1e-5)
    assert 2 <= len(sizes) == len(res.info.values) <= acc._PLD_MAX_GRIDS
    assert sum(acc._pld_cost(sz) for sz in sizes) <= acc._PLD_BUDGET
    assert res.info.status == "settled" and res[1] <= acc.PLD_ACCURACY * res[0]
    assert res[0] <= epsilon(0.3, 0.6, 10**6, 1e-5)[0]


def test_pld_result_types():
    res = epsilon_pld(0.01, 1.0, 100, 1e-5)
    assert isinstance(res, tuple) and len(res) == 2 and tuple(res) == (res.info.epsilon, res.info.gap)
    assert res.info.intervals == tuple(sorted(res.info.intervals, reverse=True))
    import pickle
    assert pickle.loads(pickle.dumps(res)).info == res.info
    with pytest.raises(ValueError, match=r"^accuracy must be in \(0\.0, 0\.1\]"):
        epsilon_pld(0.01, 1.0, 100, 1e-5, accuracy=0.5)


def test_cli_accountants_match():
    from dptheory import __main__ as cli
    assert cli.ACCOUNTANTS == acc.ACCOUNTANTS
