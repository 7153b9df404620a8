"""The RDP accountant at small sampling rates: sound upper bounds, never 0, monotone (issue 14, item 5).

Before, once log A_alpha fell below ~1e-15 the fractional-order series returned 0 or rounding noise,
T x 0 = 0, the KL shortcut turned that into epsilon = 0 and the minimum over orders picked it
(epsilon(1e-9, 1, 1e18, 1e-5) was 0 where the GDP approximation gives 6.0).

Independent references (none shares code with dptheory.accounting):
* ``rdp_mp``: 30-digit mpmath quadrature of A - 1 = E_{mu0}[w^a - 1 - a (w - 1)] (w = mu/mu0; the
  subtracted term has mean 0 and keeps the integrand >= 0), and the exact finite binomial sum in
  mpmath for integer orders;
* ``taylor_bracket``: rigorous small-q bounds from Taylor's theorem (below);
* the GDP (CLT) approximation, dp-accounting's RDP and PLD accountants, and the exact total
  variation distance of one step for the KL shortcut.
Everything is deterministic (fixed seeds); the big fuzz is marked slow.
"""
import math

import mpmath as mp
import numpy as np
import pytest
from scipy.special import ndtr

import dp_accounting
from dp_accounting.rdp import rdp_privacy_accountant as dpa_rdp

from dptheory import accounting as acc
from dptheory.accounting import DEFAULT_ORDERS, epsilon, epsilon_from_rdp, rdp_subsampled_gaussian
from dptheory.gdp import epsilon_gdp

ISSUE_CASES = [(1e-9, 1.0, 10**18, 1e-5), (1e-8, 1.0, 10**16, 1e-5), (1.921e-06, 59.23, 312584, 4.09e-07)]


# ----------------------------------------------------------------------------- references
def am1_mp(alpha, q, sigma):
    """A_alpha - 1 in mpmath: exact finite sum for integer alpha, else quadrature (value, error).

    The integrand w^a - 1 - a (w - 1) ~ (q X)^2 loses about 2 log10(sigma / q) digits to
    cancellation; the working precision is raised by that much above 30 digits."""
    dps = 30 + 2 * max(0, math.ceil(math.log10(max(sigma, 1.0) / q)))
    with mp.workdps(dps):
        q, s = mp.mpf(q), mp.mpf(sigma)
        s2 = s * s
        if float(alpha) == int(alpha):
            k = int(alpha)
            return mp.fsum(mp.binomial(k, i) * q**i * (1 - q)**(k - i) * mp.expm1(mp.mpf(i * i - i) / (2 * s2))
                           for i in range(2, k + 1)), mp.mpf(0)
        a = mp.mpf(alpha)
        c = 1 / mp.sqrt(2 * mp.pi * s2)

        def f(z):
            x = q * mp.expm1((2 * z - 1) / (2 * s2))
            return c * mp.exp(-z * z / (2 * s2)) * (mp.power(1 + x, a) - 1 - a * x)

        z0 = s2 * mp.log(1 / q - 1) + mp.mpf(1) / 2
        pts = {mp.mpf(0), mp.mpf(1), mp.mpf(2), a, z0} | {k * s for k in (-10, -3, 3, 10)} | {a + k * s for k in (-3, 3, 10)}
        pts = sorted(p for p in pts if -40 * s <= p <= a + 40 * s)
        return mp.quad(f, [-mp.inf] + pts + [mp.inf], error=True)


def rdp_mp(alpha, q, sigma):
    val, err = am1_mp(alpha, q, sigma)
    assert val > 0 and err <= 1e-18 * val  # the reference itself is accurate
    with mp.workdps(30):
        return float(mp.log1p(val) / (mp.mpf(alpha) - 1))


def taylor_bracket(alpha, q, sigma):
    """Rigorous bounds (lower, upper) on A_alpha - 1 (upper = inf where none applies).

    With X = L - 1 (E X = 0, m2 = E X^2 = e^{1/s^2} - 1, m3 = E X^3 = e^{3/s^2} - 3 e^{1/s^2} + 2)
    and psi(u) = (1+u)^a - 1 - a u, A - 1 = E psi(qX) and psi(u) = C(a,2) (1+xi)^(a-2) u^2 with
    1 + xi >= 1 - q. For a in (1, 2]: psi(u) <= C(a,2) (1-q)^(a-2) u^2, and psi(u) >= C(a,2) u^2 +
    C(a,3) u^3 (the next remainder has the sign of C(a,4) > 0). For a >= 2: psi(u) >= C(a,2)
    (1-q)^(a-2) u^2. This is the small-q expansion alpha q^2 (e^{1/s^2}-1)/2 of the RDP made exact.
    """
    s = 1.0 / (sigma * sigma)
    m2 = math.expm1(s)
    c2 = alpha * (alpha - 1) / 2            # (scipy.special.binom is off by ~1e-12 near alpha = 1)
    base = c2 * q * q * m2
    if alpha <= 2.0:
        m3 = m2 * m2 * (math.exp(s) + 2)   # = e^{3s} - 3 e^s + 2 without cancellation
        lower = base + c2 * (alpha - 2) / 3 * q**3 * m3
        return lower, base * (1 - q) ** (alpha - 2)
    return base * (1 - q) ** (alpha - 2), math.inf


def excess_tol(alpha, q, sigma):
    """Allowed relative excess of our upper bound over the truth: 1e-9, except where the fractional
    series cancels (q within ~1/sigma of 1/2, large sigma: parts ~ 1 sum to A - 1 ~ 1/sigma^2) and
    the rounding bound grows like sigma^2 / (alpha - 1)), and at large orders (16 ulps of gammaln's
    magnitude ~ alpha log alpha)."""
    tol = 1e-9 + 4e-14 * alpha * math.log(alpha)
    if alpha != int(alpha) and abs(sigma * math.log1p(-q) - sigma * math.log(q)) < 4.0:
        tol += 2e-12 * sigma * sigma / (alpha - 1.0)
    return tol


def box_points(n, seed):
    """(q, sigma, alpha): log-uniform q in [1e-12, 1), sigma in [0.3, 200], alpha - 1 in [1e-3, 63];
    one in four orders an integer."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        q = float(10 ** rng.uniform(-12, 0))
        sigma = float(10 ** rng.uniform(math.log10(0.3), math.log10(200)))
        alpha = float(1 + 10 ** rng.uniform(-3, math.log10(63)))
        if k % 4 == 0:
            alpha = float(rng.integers(2, 65))
        out.append((min(q, 1 - 1e-9), sigma, alpha))
    return out


def check_against_mp(q, sigma, alpha):
    ours = float(rdp_subsampled_gaussian(alpha, q, sigma)[0])
    ref = rdp_mp(alpha, q, sigma)
    assert ours >= ref, (q, sigma, alpha, ours, ref)                      # sound: never below
    assert ours <= ref * (1 + excess_tol(alpha, q, sigma)), (q, sigma, alpha, (ours - ref) / ref)


# ----------------------------------------------------------------------------- the issue's values
def test_issue_orders_positive_monotone_and_match_expansion():
    r = rdp_subsampled_gaussian([1.1, 1.4, 2], 1e-9, 1.0)   # was [9.0e-16, 0, 1.7e-18]
    assert np.all(r > 0) and np.all(np.diff(r) > 0)
    for alpha, val in zip([1.1, 1.4, 2.0], r):
        expansion = alpha * 1e-18 * math.expm1(1.0) / 2
        assert abs(val / expansion - 1) < 1e-8
    # q = 1.4e-6, sigma = 96.7: orders 1.01 and 1.1 were exactly 0 (expansion ~1.1e-16)
    q, sigma = 1.4e-6, 96.7
    for alpha, val in zip([1.01, 1.1], rdp_subsampled_gaussian([1.01, 1.1], q, sigma)):
        expansion = alpha * q * q * math.expm1(1 / sigma**2) / 2
        assert val > 0 and abs(val / expansion - 1) < 1e-6


@pytest.mark.parametrize("q,sigma,alpha", [
    (1e-9, 1.0, 1.1), (1e-9, 1.0, 1.4), (1.4e-6, 96.7, 1.01), (1.4e-6, 96.7, 1.1), (1e-12, 200.0, 1.0001),
    (1e-12, 0.3, 63.7), (3.3e-12, 63.1, 1.3786), (5.2e-12, 3.57, 1.4294), (2.9e-9, 4.4, 13.8328),
    (1.921e-06, 59.23, 3000.5), (1e-3, 200.0, 5000.5), (0.01, 1.0, 200.5), (0.5, 200.0, 1.5),
    (0.9999, 0.3, 30.5), (0.256, 2.2, 1.1),
])
def test_edge_points_against_mpmath(q, sigma, alpha):
    """Points where the old code was 0, noise, or below the truth (e.g. -8e-7 at order 3000.5)."""
    check_against_mp(q, sigma, alpha)


@pytest.mark.parametrize("q,sigma,alpha", [(1.921e-06, 59.23, 1000), (1e-3, 200.0, 5000), (0.5, 0.3, 64),
                                           (1e-12, 200.0, 2), (1e-12, 0.3, 40)])
def test_integer_orders_against_exact_sum(q, sigma, alpha):
    check_against_mp(q, sigma, alpha)


def test_box_against_mpmath():
    for q, sigma, alpha in box_points(16, seed=14):
        check_against_mp(q, sigma, alpha)


def test_box_against_taylor_bracket():
    """Rigorous two-sided check, cheap enough for 400 points: lower <= ours, and for alpha <= 2
    ours <= upper (1 + tol); for q <= 1e-4 the bracket is narrow, so this pins the value."""
    rng = np.random.default_rng(5)
    for _ in range(400):
        q = float(10 ** rng.uniform(-12, -1))
        sigma = float(10 ** rng.uniform(math.log10(0.3), math.log10(200)))
        alpha = float(1 + 10 ** rng.uniform(-4, math.log10(63)))
        k = float(rdp_subsampled_gaussian(alpha, q, sigma)[0]) * (alpha - 1)   # log A
        lower, upper = taylor_bracket(alpha, q, sigma)
        if lower > 0:
            assert k >= math.log1p(lower) * (1 - 1e-12), (q, sigma, alpha)
        assert k <= math.log1p(upper) * (1 + 1e-9), (q, sigma, alpha)


@pytest.mark.parametrize("q", [1e-12, 1e-9, 1.4e-6, 1e-3, 0.1, 0.5, 0.9])
@pytest.mark.parametrize("sigma", [0.3, 1.0, 20.0, 200.0])
def test_never_zero_and_monotone_on_the_accountant_grid(q, sigma):
    orders = np.concatenate([DEFAULT_ORDERS, [1.0 + 1e-7, 1.01, 64.5, 100.0, 300.5, 1000.0, 3000.5]])
    r = rdp_subsampled_gaussian(orders[::-1], q, sigma)[::-1]   # any input order
    assert np.all(r > 0) and np.all(np.isfinite(r))
    srt = r[np.argsort(orders)]
    assert np.all(np.diff(srt) >= 0)


def test_extreme_q_still_positive():
    assert np.all(rdp_subsampled_gaussian([1.5, 2, 7.5, 40], 1e-300, 1.0) > 0)
    assert np.all(rdp_subsampled_gaussian([1.5, 2, 7.5, 40], 1e-100, 1e4) > 0)


def test_series_fallback_is_the_rigorous_chord(monkeypatch):
    """If the fractional series ever failed, the chord of the convex log A_alpha between the
    neighbouring integer orders is used: still an upper bound, positive and monotone."""
    orders = np.array([1.01, 1.5, 2.5, 7.3, 40.5, 300.5])
    q, sigma = 1e-7, 3.0
    normal = rdp_subsampled_gaussian(orders, q, sigma)
    monkeypatch.setattr(acc, "_log_am1_frac", lambda q, s, a: np.full(a.shape, np.nan))
    chord = rdp_subsampled_gaussian(orders, q, sigma)
    assert np.all(chord >= normal) and np.all(np.diff(chord) >= 0)
    for alpha, val in zip(orders, chord):
        lower, _ = taylor_bracket(alpha, q, sigma)
        assert val * (alpha - 1) >= math.log1p(lower)
    assert chord[0] <= rdp_subsampled_gaussian(2, q, sigma)[0] * (1 + 1e-12)   # eps(a) <= eps(2) on (1, 2)


# ----------------------------------------------------------------------------- epsilon
@pytest.mark.parametrize("case", ISSUE_CASES[:2])
def test_issue_epsilon_huge_steps(case):
    """q sqrt(T) = 1 (resp. 1e-8 * 1e8): GDP mu = 1.31, eps_GDP = 6.0 (old: 0.0)."""
    ours, order = epsilon(*case)
    gdp = epsilon_gdp(*case)
    acct = dpa_rdp.RdpAccountant()
    acct.compose(dp_accounting.PoissonSampledDpEvent(case[0], dp_accounting.GaussianDpEvent(case[1])), case[2])
    theirs = acct.get_epsilon(case[3])   # dp-accounting is fine here (optimum at order ~4.4)
    assert abs(gdp - 6.007) < 1e-3
    assert gdp <= ours <= 1.1 * gdp      # the RDP conversion costs ~8% over the CLT at this mu
    assert theirs * (1 - 1e-4) <= ours <= theirs * (1 + 1e-6)
    assert 4 < order < 5


def test_issue_epsilon_tiny_q_total_variation_above_delta():
    """TV ~ 7e-6 >> delta = 4.09e-7, so eps > 0 (old: 0). The optimum order is ~9e4: GDP gives 2.9e-5,
    dp-accounting's PLD (pessimistic, interval 1e-8) 3.0e-5, our RDP bound 4.0e-5."""
    case = ISSUE_CASES[2]
    ours, order = epsilon(*case)
    gdp = epsilon_gdp(*case)
    pld = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-8)
    pld.compose(dp_accounting.PoissonSampledDpEvent(case[0], dp_accounting.GaussianDpEvent(case[1])), case[2])
    tight = pld.get_epsilon(case[3])
    assert 2.8e-5 < gdp < 3.0e-5 and 2.8e-5 < tight < 3.1e-5
    assert tight <= ours <= 1.5 * tight
    assert order > 1e4


@pytest.mark.parametrize("delta", [1e-10, 1e-6, 1e-3])
@pytest.mark.parametrize("sigma", [0.5, 2.0, 50.0])
def test_kl_shortcut_agrees_with_exact_total_variation(delta, sigma):
    """T = 1: (0, delta)-DP holds iff TV = q (2 Phi(1/(2 sigma)) - 1) <= delta. eps = 0 must imply it,
    and TV clearly above delta must give eps > 0; well below delta the KL shortcut gives eps = 0
    (KL ~ c TV^2 for small q, c = pi at large sigma, ~60 at sigma = 0.5)."""
    for k, q in enumerate(np.geomspace(1e-12, 1.0, 25)):
        tv = q * (2 * ndtr(1 / (2 * sigma)) - 1)
        # the default optimiser (grid extended to huge orders when eps is tiny) on every 6th q
        eps, _ = epsilon(q, sigma, 1, delta, orders=None if k % 6 == 0 else DEFAULT_ORDERS)
        if eps == 0.0:
            assert tv <= delta
        if tv > delta * (1 + 1e-9):
            assert eps > 0
        if tv < 0.01 * delta:
            assert eps == 0.0   # the shortcut still fires where it is legitimate


def test_zero_rdp_reaches_conversion_only_when_exact():
    """The conversion itself maps an exact 0 to eps = 0 (a null mechanism is (0, delta)-DP) and any
    positive RDP with 1 - exp(-R) >= delta^2 to eps > 0."""
    orders = np.array([1.5, 2.0, 10.0])
    assert epsilon_from_rdp(orders, np.zeros(3), 1e-5)[0] == 0.0
    r = np.full(3, 1e-10 * 1.0000001)        # 1 - exp(-R) just above delta^2 = 1e-10
    assert epsilon_from_rdp(orders, r, 1e-5)[0] > 0.0


def test_ordinary_inputs_unchanged():
    """Values of the released version (HEAD before this change), to ~1e-12: the bounds only add
    rounding-level margins for ordinary inputs."""
    pinned = {(0.01, 1.0, 1000, 1e-5): 2.1013221312346193, (256 / 60000, 1.1, 10000, 1e-5): 2.1615907846611764}
    for case, old in pinned.items():
        new, _ = epsilon(*case)
        assert old <= new <= old * (1 + 1e-11)


# ----------------------------------------------------------------------------- slow fuzz
@pytest.mark.slow
def test_fuzz_box_against_mpmath():
    for q, sigma, alpha in box_points(300, seed=2000):
        check_against_mp(q, sigma, alpha)


@pytest.mark.slow
def test_fuzz_box_2000_never_zero_and_above_taylor_lower_bound():
    """The 2000-point fuzz that found 7 wrong zeros, on the whole grid of the accountant."""
    rng = np.random.default_rng(2000)
    orders = DEFAULT_ORDERS
    for _ in range(2000):
        q = float(10 ** rng.uniform(-12, 0))
        sigma = float(10 ** rng.uniform(math.log10(0.3), math.log10(200)))
        r = rdp_subsampled_gaussian(orders, min(q, 1 - 1e-9), sigma)
        assert np.all(r > 0) and np.all(np.diff(r) >= 0)
        for k in range(0, orders.size, 10):
            lower, _ = taylor_bracket(orders[k], q, sigma)
            assert r[k] * (orders[k] - 1) >= math.log1p(max(lower, 0.0)) * (1 - 1e-12)


@pytest.mark.slow
def test_huge_orders_against_mpmath():
    """The orders of the issue's third case (optimum ~9.2e4)."""
    for alpha in (92353.0, 92353.34262354537):
        check_against_mp(1.921e-06, 59.23, alpha)
