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


# ----------------------------------------------------------------------------- accuracy against bits per step
def _result(name, arms, rng, *, source="S0: x"):
    """A ClaimResult with made-up per-seed accuracies (3 seeds) and no verdicts."""
    from sims.claims.runner import ArmOutcome, ClaimResult

    roles = ("treatment", "control")
    claim = Claim(name=name, source=source, arms=dict(zip(roles, (a for a, _ in arms))), metric="test_accuracy",
                  n_seeds=3, labels=dict(zip(roles, (label for _, label in arms))))
    outs = {r: ArmOutcome(r, label, 0.5, tuple(rng.uniform(0.5, 0.9, 3)), None, None, {}, None, None, 0, 0)
            for r, (_, label) in zip(roles, arms)}
    return ClaimResult(claim, outs, None, None, "made up", "made up")


@pytest.fixture(scope="module")
def bits_report(tmp_path_factory):
    import numpy as np

    from sims.claims import arms as A
    from sims.claims.report import write_report

    m, rng = A.mode("quick"), np.random.default_rng(0)
    top1 = A.digits(m, [A.CLIP_T, A.NOISE_T, {"name": "top_k", "k": 48}], epsilon=3.0)
    top10 = A.digits(m, [A.CLIP_T, A.NOISE_T, {"name": "top_k", "k": 481}], epsilon=3.0)
    rank1 = A.nonprivate(m, {"name": "low_rank", "rank": 1, "order": "compress_then_noise"})
    topagg = A.digits(m, [{"name": "topagg", "k": 481}], epsilon=3.0)
    freeze = A.digits(m, [{"name": "random_freeze", "r_final": 0.9}, A.CLIP_T, A.NOISE_T], epsilon=3.0)
    select = A.digits(m, [{"name": "public_select", "fraction": 0.75}, A.CLIP_T, A.NOISE_T], epsilon=3.0,
                      public_fraction=0.1)
    layerwise = A.digits(m, [A.CLIP_T, A.NOISE_T, {"name": "top_k", "k": 5, "layerwise": True}], epsilon=3.0)
    two = A.digits(m, [{"name": "random_freeze", "r_final": 0.5}, A.CLIP_T, A.NOISE_T,
                       {"name": "top_k", "k": 48}], epsilon=3.0)
    dense = A.dense(m, 3.0)
    results = [_result("c.top1", [(top1, "top-k 1%"), (dense, "dense DP-SGD")], rng),
               _result("c.top10", [(top10, "top-k 10%"), (dense, "dense DP-SGD")], rng),
               _result("c.rank", [(rank1, "low-rank 1, no DP"), (A.nonprivate(m), "SGD")], rng),
               _result("c.topagg", [(topagg, "TopAgg"), (dense, "dense DP-SGD")], rng, source="S3: x"),
               _result("c.freeze", [(freeze, "freeze 0.9"), (dense, "dense DP-SGD")], rng, source="S1: x"),
               _result("c.select", [(select, "public selection"), (A.dense(m, 3.0, public_fraction=0.1), "dense")],
                       rng, source="S4: x"),
               _result("c.left_out", [(layerwise, "layer-wise top-k"), (two, "freeze then top-k")], rng)]
    out = tmp_path_factory.mktemp("bits")
    return out, (out / "report.md").read_text() if write_report(out, results, mode="quick", wall_seconds=1.0) else ""


def _row(report, label):
    """The cells of the bits table row of the arm ``label``."""
    rows = [ln.split(" | ") for ln in report.split("## Accuracy against bits per step")[1].splitlines()
            if ln.startswith("| c.") and ln.split(" | ")[1] == label]
    assert len(rows) == 1, label
    return rows[0]


def test_bits_section_and_its_figure_are_written(bits_report):
    out, report = bits_report
    assert "## Accuracy against bits per step" in report
    assert "![accuracy_vs_bits](figures/accuracy_vs_bits.png)" in report
    assert (out / "figures" / "accuracy_vs_bits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "figures" / "accuracy_vs_bits.pdf").read_bytes()[:4] == b"%PDF"


def test_bits_of_the_arms_are_those_of_dptheory_communication(bits_report):
    from dptheory import communication as dc

    _, report = bits_report
    d, b = 4810, 64  # the 64-64-10 MLP on digits, float64
    expect = {"top-k 1%": dc.sparse_index_bits(48, d, value_bits=b),  # index pairs win at 1 %
              "top-k 10%": dc.sparse_bitmap_bits(481, d, value_bits=b),  # the bitmap wins at 10 %
              "dense DP-SGD": dc.dense_bits(d, value_bits=b),
              "low-rank 1, no DP": dc.low_rank_bits(64, 64, 1, value_bits=b) + dc.low_rank_bits(10, 64, 1, value_bits=b)
              + dc.dense_bits(64 + 10, value_bits=b),
              "TopAgg": dc.topagg_vote_bits(481, d, encoding="ternary"),
              "public selection": dc.sparse_bits(d - 3607, d, value_bits=b)}  # keeps d - floor(0.75 d)
    assert expect["top-k 1%"] == 48 * (13 + 64) and expect["TopAgg"] == 2 * d
    for label, bits in expect.items():
        assert int(_row(report, label)[4].replace(",", "")) == bits, label
    # random freeze in quick mode: 2 epochs of 17 steps, nothing frozen in the first, 90 % in the second
    freeze = (17 * dc.dense_bits(d, value_bits=b) + 17 * dc.sparse_bits(d - 4329, d, value_bits=b)) / 34
    assert float(_row(report, "freeze 0.9")[4].replace(",", "")) == pytest.approx(freeze, abs=0.05)
    # an arm shared by claims is one row, and the rows are sorted by bits
    assert "| c.top1 (+3 more) | dense DP-SGD |" in report
    rows = [ln.split(" | ") for ln in report.split("## Accuracy against bits per step")[1].splitlines()
            if ln.startswith("| c.")]
    bits = [float(r[4].replace(",", "")) for r in rows]
    assert bits == sorted(bits) and len(rows) == 9  # 7 claims, 14 arms, dense DP-SGD in four


def test_arms_without_a_cost_are_listed_as_left_out(bits_report):
    _, report = bits_report
    section = report.split("## Accuracy against bits per step")[1]
    left = section.split("Left out (no cost from `dptheory.communication`):")[1].splitlines()
    left = [ln for ln in left if ln.startswith("- ")]
    assert len(left) == 2
    assert "layer-wise top-k" in left[0] and "layer-wise top_k" in left[0]
    assert "freeze then top-k" in left[1] and "two sparsifying stages" in left[1]
    assert not any(r.split(" | ")[1] in ("layer-wise top-k", "freeze then top-k")
                   for r in section.splitlines() if r.startswith("| c."))
    # the verdict table's rows are the only ones that start with "| `" (tests/test_main_job.py counts them)
    assert [ln.split("`")[1] for ln in report.splitlines() if ln.startswith("| `")] == [
        "c.top1", "c.top10", "c.rank", "c.topagg", "c.freeze", "c.select", "c.left_out"]
