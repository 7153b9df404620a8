"""The report's pieces: the theory-check rules on made-up results whose verdict is known, and the
verdict cells of the table."""
from __future__ import annotations

import pytest

from sims.claims import Claim, Verdict
from sims.claims import theory_checks as tc
from sims.claims.report import verdict_cell


def _nsr(dev_se, ratio):
    return {"nsr_dense_theory": 10.0,
            "clip_then_mask": {"nsr": [10.0, 10.0 + dev_se * 0.5], "nsr_se": [0.5, 0.5]},
            "mask_then_clip": {"nsr": [1.0, ratio], "nsr_theory": [1.0, 1.0]}}


@pytest.mark.parametrize("dev, ratio, expect", [(1.0, 1.05, ("agrees", "agrees")), (4.5, 1.05, ("disagrees", "agrees")),
                                                (0.0, 1.2, ("agrees", "disagrees"))])
def test_nsr_rules(dev, ratio, expect):
    assert tuple(v for _, v, _ in tc.verdicts({"nsr_vs_k": _nsr(dev, ratio)})) == expect


@pytest.mark.parametrize("measured, expect", [(0.5, "holds"), (0.99, "violated"), (1.2, "violated")])
def test_convex_rule_needs_the_margin_of_its_standard_errors(measured, expect):
    res = {"steps": [10], "measured": [measured], "measured_se": [0.01], "bound": [1.0]}
    assert tc.verdicts({"convex_bound_vs_steps": res})[0][1] == expect


@pytest.mark.parametrize("best, expect", [(0.2, "agrees"), (0.05, "disagrees"), (0.39, "agrees"), (0.41, "disagrees")])
def test_tradeoff_rule_is_a_factor_two(best, expect):
    res = {"rho_best_measured": best, "rho_star_theory": 0.2, "rho_star_theory_spread_out": 0.3, "lrs": [0.5],
           "rho_best_tuned": 1.0}
    assert tc.verdicts({"keep_fraction_tradeoff": res})[0][1] == expect


def test_verdict_cells():
    v = Verdict("c", "inconclusive", 0.1, -0.1, 0.3, 0.95, 3, "paired t", 0.2, 12, 0.1)
    assert verdict_cell(v, "") == "inconclusive (~12 seeds)"
    assert verdict_cell(Verdict("c", "supported", 0.1, 0.05, 0.2, 0.95, 3, "t", 0.1, None), "") == "**supported**"
    assert verdict_cell(None, "diverged runs: a 1") == "- (diverged runs: a 1)"
    c = Claim(name="c", source="S0: x", arms={"treatment": {}, "control": {}}, metric="m")
    assert dict(c.labels) == {"treatment": "treatment", "control": "control"}  # the labels default to the roles


def test_claim_refuses_malformed_fields():
    base = dict(name="c", source="S0: x", arms={"treatment": {}, "control": {}}, metric="m")
    with pytest.raises(ValueError, match=r"Claim.arms\['treatment'\] must be a run config"):
        Claim(**{**base, "arms": {"treatment": 5, "control": {}}})
    with pytest.raises(ValueError, match="Claim.notes must be a tuple of strings"):
        Claim(**base, notes="a caveat")
    with pytest.raises(ValueError, match="Claim.paired must be True or False"):
        Claim(**base, paired="no")
