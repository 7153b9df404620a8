"""The verdict machinery of sims.claims on synthetic effects whose truth is known.

Rates of verdicts over R independent replications are compared with their exact values
(noncentral t for the power, alpha/2 for the null) within z = 5.3 binomial standard errors: a
false failure has probability below 1.2e-7 per comparison. All generators are seeded.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from sims.claims import Claim, verdict

Z = 5.3  # two-sided normal tail 1.2e-7


def _claim(direction="greater", comparison="difference", **kw):
    from sims.claims import COMPARISONS

    roles = COMPARISONS[comparison]
    return Claim(name="planted", source="synthetic", arms={r: {} for r in roles}, metric="m",
                 comparison=comparison, direction=direction, **kw)


def _paired(rng, n, delta, sigma):
    c = rng.standard_normal(n)
    return {"treatment": c + delta + sigma * rng.standard_normal(n), "control": c}


def _rate(claim, make, R, seed, target):
    rng = np.random.default_rng(seed)
    return np.mean([verdict(claim, make(rng)).verdict == target for _ in range(R)])


def _within(rate, p, R):
    return abs(rate - p) <= Z * math.sqrt(p * (1 - p) / R) + 1.0 / R


def test_planted_effect_is_supported_at_the_stated_power():
    n, delta, sigma, R = 16, 1.0, 1.0, 3000
    crit = stats.t.ppf(0.975, n - 1)
    power = float(stats.nct.sf(crit, n - 1, delta * math.sqrt(n) / sigma))
    assert power >= 0.95  # the design: n = 16 seeds detect an effect of one spread with 95 % power
    rate = _rate(_claim(), lambda rng: _paired(rng, n, delta, sigma), R, 1, "supported")
    assert _within(rate, power, R), (rate, power)


@pytest.mark.parametrize("direction, target", [("greater", "supported"), ("less", "supported"),
                                               ("greater", "contradicted")])
def test_planted_null_is_supported_or_contradicted_at_most_half_alpha(direction, target):
    n, R = 10, 4000
    rate = _rate(_claim(direction), lambda rng: _paired(rng, n, 0.0, 1.0), R, 2, target)
    assert _within(rate, 0.025, R), rate
    assert rate <= 0.05


def test_unpaired_welch_interval_has_its_coverage():
    """Welch's interval with unequal spreads and sizes: P(supported | null) = 2.5 % approximately
    (Welch's df is an approximation: allow 3.5 %)."""
    claim = _claim(paired=False)
    R = 4000

    def make(rng):
        return {"treatment": 3.0 * rng.standard_normal(8), "control": rng.standard_normal(20)}

    rate = _rate(claim, make, R, 3, "supported")
    assert rate <= 0.035 + Z * math.sqrt(0.035 * 0.965 / R)
    assert rate >= 0.015 - Z * math.sqrt(0.015 * 0.985 / R)  # nor far too wide (a vacuous interval gives 0)


def test_equivalence_within_the_margin_and_its_size_at_the_margin():
    claim = _claim("equivalent", min_effect=0.5)
    R = 3000
    # a true effect of 0 with enough seeds: TOST power P(|mean| + t s/sqrt(n) < m) close to 1
    inside = _rate(claim, lambda rng: _paired(rng, 60, 0.0, 1.0), R, 4, "equivalent")
    assert inside >= 0.95, inside
    # a true effect ON the margin: "equivalent" at most alpha = 5 % (the size of TOST)
    edge = _rate(claim, lambda rng: _paired(rng, 60, 0.5, 1.0), R, 5, "equivalent")
    # at the margin the lower test is passed almost surely, so the size is the upper test's: exactly
    # P(T_59 < -t_{0.95, 59}) = 0.05 (Student t); a too-wide interval would give far less
    assert _within(edge, 0.05, R), edge


def _exact(mean, sd, n):
    """n values with exactly this sample mean and standard deviation (ddof=1)."""
    z = np.linspace(-1.0, 1.0, n)
    z = (z - z.mean()) / z.std(ddof=1)
    return mean + sd * z


def test_interval_is_the_textbook_t_interval():
    d = _exact(0.3, 0.2, 12)
    v = verdict(_claim(), {"treatment": d, "control": np.zeros(12)})
    half = stats.t.ppf(0.975, 11) * 0.2 / math.sqrt(12)
    assert v.effect == pytest.approx(0.3, abs=1e-15)
    assert (v.ci_low, v.ci_high) == pytest.approx((0.3 - half, 0.3 + half), rel=1e-12)
    assert v.verdict == "supported" and v.seeds_needed is None and v.n == 12


def test_contradicted_and_equivalence_contradicted():
    v = verdict(_claim(), {"treatment": _exact(-0.3, 0.2, 12), "control": np.zeros(12)})
    assert v.verdict == "contradicted"
    v = verdict(_claim("equivalent", min_effect=0.1), {"treatment": _exact(0.5, 0.2, 12), "control": np.zeros(12)})
    assert v.verdict == "contradicted" and v.seeds_needed is None


def test_seeds_needed_resolve_an_effect_at_the_observed_spread():
    claim = _claim(min_effect=0.05)
    v = verdict(claim, {"treatment": _exact(0.1, 0.4, 8), "control": np.zeros(8)})
    assert v.verdict == "inconclusive" and v.resolvable == pytest.approx(0.1)
    k = v.seeds_needed
    # with k seeds of the same mean and spread the claim is supported, with k - 1 it is not
    for m, want in ((k, "supported"), (k - 1, "inconclusive")):
        w = verdict(claim, {"treatment": _exact(0.1, 0.4, m), "control": np.zeros(m)})
        assert w.verdict == want, (m, w)


def test_gap_reduction_bootstrap():
    rng = np.random.default_rng(6)
    n = 20
    base = rng.standard_normal(n) * 0.01
    vals = {"control_ref": 0.95 + base, "control": 0.80 + base + 0.01 * rng.standard_normal(n),
            "treatment_ref": 0.94 + base, "treatment": 0.865 + base + 0.01 * rng.standard_normal(n)}
    claim = _claim(comparison="gap_reduction", ci_method="bootstrap")
    v = verdict(claim, vals)
    # gap_c = 0.15, gap_t = 0.075: half of the gap is gone
    assert v.effect == pytest.approx(0.5, abs=0.05) and v.verdict == "supported"
    assert v.ci_low < v.effect < v.ci_high
    assert verdict(claim, vals) == v  # fixed generator: same interval, bit for bit
    assert verdict(claim, vals, random_state=1).ci_low != v.ci_low


def test_bootstrap_difference_agrees_with_t_for_normal_data():
    rng = np.random.default_rng(7)
    vals = _paired(rng, 40, 0.5, 1.0)
    t = verdict(_claim(), vals)
    b = verdict(_claim(ci_method="bootstrap"), vals)
    assert b.effect == pytest.approx(t.effect)
    assert b.ci_low == pytest.approx(t.ci_low, abs=0.1) and b.ci_high == pytest.approx(t.ci_high, abs=0.1)


@pytest.mark.parametrize("kw, match", [
    (dict(direction="up"), "direction"),
    (dict(comparison="ratio"), "comparison"),
    (dict(min_effect=0.0), "min_effect"),
    (dict(confidence=1.0), "confidence"),
    (dict(ci_method="jackknife"), "ci_method"),
    (dict(direction="equivalent", confidence=0.5), r"confidence must be in \(0\.5, 1\) for an equivalence"),
    (dict(comparison="gap_reduction"), "roles"),
])
def test_claim_validation(kw, match):
    base = dict(name="c", source="s", arms={"treatment": {}, "control": {}}, metric="m")
    base.update(kw)
    with pytest.raises(ValueError, match=match):
        Claim(**base)


def test_verdict_validation():
    claim = _claim()
    with pytest.raises(ValueError, match="roles"):
        verdict(claim, {"treatment": [1.0, 2.0]})
    with pytest.raises(ValueError, match="same seeds"):
        verdict(claim, {"treatment": [1.0, 2.0, 3.0], "control": [1.0, 2.0]})
    with pytest.raises(ValueError, match="at least 2 seeds"):
        verdict(claim, {"treatment": [1.0], "control": [1.0]})
    with pytest.raises(ValueError, match="finite"):
        verdict(claim, {"treatment": [1.0, np.nan], "control": [1.0, 2.0]})
    with pytest.raises(ValueError, match="gap_reduction"):
        _claim(comparison="gap_reduction")  # a ratio needs the bootstrap


def _four(rng, n, delta):
    """Four paired arms sharing a per-seed effect; the difference in differences is ``delta``."""
    base = rng.standard_normal(n)
    arms = {r: base + rng.standard_normal(n) for r in ("treatment", "control", "treatment_ref", "control_ref")}
    arms["treatment"] = arms["treatment"] + delta
    return arms


def test_difference_in_differences_is_the_t_interval_of_the_per_seed_contrast():
    rng = np.random.default_rng(5)
    a = _four(rng, 10, 0.3)
    v = verdict(_claim(comparison="difference_in_differences"), a)
    d = (a["treatment"] - a["control"]) - (a["treatment_ref"] - a["control_ref"])
    half = stats.t.ppf(0.975, 9) * d.std(ddof=1) / math.sqrt(10)
    assert v.effect == pytest.approx(d.mean(), rel=1e-12)
    assert (v.ci_low, v.ci_high) == pytest.approx((d.mean() - half, d.mean() + half), rel=1e-12)
    unpaired = verdict(_claim(comparison="difference_in_differences", paired=False), a)
    se = math.sqrt(sum(np.var(x, ddof=1) / 10 for x in a.values()))
    assert unpaired.ci_high - unpaired.effect == pytest.approx(
        stats.t.ppf(0.975, se ** 4 / sum((np.var(x, ddof=1) / 10) ** 2 / 9 for x in a.values())) * se, rel=1e-12)


def test_planted_null_difference_in_differences_is_supported_at_half_alpha():
    n, R = 8, 4000
    rate = _rate(_claim(comparison="difference_in_differences"), lambda rng: _four(rng, n, 0.0), R, 6, "supported")
    assert _within(rate, 0.025, R), rate


def test_gap_reduction_without_a_positive_control_gap_gives_no_verdict():
    """Private dense above non-private dense (gap_c < 0) and a widened treatment gap: the ratio
    would read 'supported'; the rule refuses to draw a verdict from it."""
    rng = np.random.default_rng(9)
    n = 12
    vals = {"control": 0.90 + 0.01 * rng.standard_normal(n), "control_ref": 0.88 + 0.01 * rng.standard_normal(n),
            "treatment": 0.83 + 0.01 * rng.standard_normal(n), "treatment_ref": 0.88 + 0.01 * rng.standard_normal(n)}
    v = verdict(_claim(comparison="gap_reduction", ci_method="bootstrap"), vals)
    assert v.verdict == "inconclusive" and "not shown > 0" in v.method and math.isnan(v.ci_low)
    assert v.seeds_needed is None
