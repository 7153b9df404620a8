"""sims.claims.runner and catalog: which runs a claim needs, how the two verdicts are read off the
records (tuning on validation only, divergence, privacy), and the papers' claims as stated.

The record-level tests use synthetic records (no training), so their outcome is exact; the one
end-to-end test trains a 2-epoch claim with 3 seeds through a store.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from sims.claims import Claim, catalog, runner
from sims.claims import arms as A


def _claim(**kw):
    m = A.mode("quick")
    base = dict(name="t.c", source="S1: test", arms={"treatment": A.dense(m, 3.0), "control": A.dense(m, 3.0, hidden=16)},
                metric="test_accuracy", n_seeds=3, lr_grid=(0.5, 2.0))
    return Claim(**{**base, **kw})


def _record(value, validation, bad):
    return {"test_accuracy": math.nan if bad else value, "validation_accuracy": math.nan if bad else validation,
            "private": True, "epsilon": 3.0, "delta": 1e-5, "diverged_at": 7 if bad else None}


def _records(claim, value, validation=None, diverged=(), failed=()):
    """Synthetic records of both stages: ``value(role, lr, seed)`` the metric, ``validation(role,
    lr, seed)`` the validation accuracy; ``(role, lr, seed)`` in ``diverged`` have diverged, in
    ``failed`` failed."""
    validation = validation or value

    def rec(k):
        return {"error": "RuntimeError: worker died"} if k in failed else _record(value(*k), validation(*k),
                                                                                 k in diverged)
    out = {k: rec(k) for k in runner.run_configs(claim)}
    out.update({k: rec(k) for k in runner.tuned_configs(claim, runner.choose_steps(claim, out))})
    return out


def test_run_configs_pair_arms_by_seed_and_cover_the_grid():
    c = _claim(lr_grid=(0.25, 2.0))
    runs = runner.run_configs(c)
    assert sorted({(r, lr) for r, lr, _ in runs}) == [(r, lr) for r in ("control", "treatment") for lr in (0.25, 0.5, 2.0)]
    for (role, lr, seed), cfg in runs.items():
        assert cfg["data"]["seed"] == seed and cfg["training"]["seed"] == seed and cfg["optimizer"]["lr"] == lr


def test_private_arms_must_share_one_epsilon_target():
    m = A.mode("quick")
    c = _claim(arms={"treatment": A.dense(m, 3.0), "control": A.dense(m, 1.0)})
    with pytest.raises(ValueError, match="every private arm must set the same privacy.epsilon"):
        runner.run_configs(c)
    fixed_sigma = A.dense(m, 3.0)
    fixed_sigma["privacy"] = {"noise_multiplier": 1.0}
    with pytest.raises(ValueError, match="same privacy.epsilon"):
        runner.run_configs(_claim(arms={"treatment": fixed_sigma, "control": A.dense(m, 3.0)}))


def test_a_grid_needs_a_validation_split():
    m = A.mode("quick")
    arm = A.dense(m, 3.0)
    del arm["data"]["validation_fraction"]
    with pytest.raises(ValueError, match="no data.validation_fraction to tune on"):
        runner.run_configs(_claim(arms={"treatment": arm, "control": A.dense(m, 3.0)}))


def test_fixed_and_tuned_verdicts_are_read_off_the_right_records():
    """Treatment is better at lr 2 by 0.1 per seed, worse at the fixed lr 0.5; its validation picks 2."""
    c = _claim()

    def value(role, lr, seed):
        base = 0.8 + 0.01 * seed
        return base + (0.1 if lr == 2.0 else -0.05) if role == "treatment" else base

    res = runner.evaluate(c, _records(c, value))
    assert res.fixed.verdict == "contradicted" and res.fixed.effect == pytest.approx(-0.05)
    assert res.arms["treatment"].tuned_lr == 2.0
    assert res.tuned.verdict == "supported" and res.tuned.effect == pytest.approx(0.1)
    assert res.epsilon == 3.0


def test_tuning_reads_validation_never_test():
    """Validation prefers lr 0.5 although the test accuracy is higher at 2: the tuned step is 0.5,
    evaluated on the fresh seeds 3, 4, 5."""
    c = _claim()
    res = runner.evaluate(c, _records(c, lambda r, lr, s: 0.9 if lr == 2.0 else 0.7 + 0.01 * s,
                                      validation=lambda r, lr, s: 0.9 if lr == 0.5 else 0.5))
    assert res.arms["treatment"].tuned_lr == res.arms["control"].tuned_lr == 0.5
    assert res.arms["treatment"].fixed == pytest.approx((0.70, 0.71, 0.72))
    assert res.arms["treatment"].tuned == pytest.approx((0.73, 0.74, 0.75))


def test_stage_two_runs_fresh_seeds_at_the_tuned_step_only():
    c = _claim()
    first = _records(c, lambda r, lr, s: 0.8 + (0.05 if lr == 2.0 and r == "treatment" else 0.0))
    steps = runner.choose_steps(c, first)
    assert steps["treatment"][0] == 2.0 and steps["control"][0] == 0.5
    assert steps["treatment"][1] == pytest.approx({0.5: 0.8, 2.0: 0.85})
    second = runner.tuned_configs(c, steps)
    assert sorted(second) == [("control", 0.5, s) for s in (3, 4, 5)] + [("treatment", 2.0, s) for s in (3, 4, 5)]


def test_validation_ties_go_to_the_smaller_step():
    c = _claim()
    res = runner.evaluate(c, _records(c, lambda r, lr, s: 0.8 + 0.01 * s))
    assert res.arms["control"].tuned_lr == 0.5


def test_a_diverged_run_gives_no_verdict_and_says_why():
    c = _claim()
    res = runner.evaluate(c, _records(c, lambda r, lr, s: 0.8 + 0.01 * s, diverged={("treatment", 0.5, 1)}))
    assert res.fixed is None and "diverged or failed runs: treatment 1" in res.fixed_reason
    assert res.arms["treatment"].diverged == 1
    # the grid step where a seed diverged is not eligible for tuning; lr 2 still is
    assert res.arms["treatment"].tuned_lr == 2.0 and res.tuned is not None


def test_every_grid_step_diverged_means_no_tuned_verdict():
    c = _claim()
    bad = {("treatment", lr, 0) for lr in (0.5, 2.0)}
    res = runner.evaluate(c, _records(c, lambda r, lr, s: 0.8 + 0.01 * s, diverged=bad))
    assert res.tuned is None and "every step" in res.tuned_reason


@pytest.mark.parametrize("key, value, match", [("epsilon", 2.0, "its private arms spend different epsilons"),
                                               ("delta", 2e-6, "its private arms spend different deltas")])
def test_arms_at_different_privacy_are_refused_after_the_runs_too(key, value, match):
    """E.g. a public split changes n, and with it the default delta min(1e-5, n^-1.1)."""
    c = _claim()
    recs = _records(c, lambda r, lr, s: 0.8 + 0.01 * s)
    for (role, _, _), rec in recs.items():
        if role == "control":
            rec[key] = value
    with pytest.raises(ValueError, match=match):
        runner.evaluate(c, recs)


def test_a_failed_run_is_reported_not_raised_and_a_missing_metric_is_an_error():
    c = _claim()
    recs = _records(c, lambda r, lr, s: 0.8 + 0.01 * s, failed={("control", 0.5, 2)})
    res = runner.evaluate(c, recs)
    assert res.fixed is None and "control 1" in res.fixed_reason and res.arms["control"].failed == 1
    assert res.arms["control"].tuned_lr == 2.0  # lr 0.5 had a failed seed: not eligible
    with pytest.raises(ValueError, match="metric 'test_acc' is not in the run record"):
        runner.evaluate(_claim(metric="test_acc"), recs)


def test_claim_checks_its_grid_and_labels():
    with pytest.raises(ValueError, match=r"lr_grid\['treatment'\]\[0\]"):
        _claim(lr_grid={"treatment": (-1.0,), "control": (0.5,)})
    with pytest.raises(ValueError, match="every role a grid, or none"):
        _claim(lr_grid={"treatment": (), "control": (0.5,)})
    with pytest.raises(ValueError, match="n_seeds"):
        _claim(n_seeds=1)
    with pytest.raises(ValueError, match="labels"):
        _claim(labels={"nobody": "x"})
    assert not _claim(lr_grid=()).tuned


@pytest.mark.parametrize("mode", ["quick", "default", pytest.param("full", marks=pytest.mark.slow)])
def test_catalog_claims_are_well_formed(mode):
    claims = catalog.claims(mode)
    names = [c.name for c in claims]
    assert len(set(names)) == len(names)
    m = A.mode(mode)
    for c in claims:
        assert c.source[:2] in catalog.PAPERS and c.n_seeds == m.n_seeds and c.tuned
        runner.run_configs(c)  # validates every arm, the epsilon targets and the validation split


def test_catalog_selects_by_name_and_prefix():
    zhu = catalog.claims("quick", ["zhu."])
    assert zhu and all(c.name.startswith("zhu.") for c in zhu)
    one = catalog.claims("quick", "lin.top_k_1pct_costs_accuracy_without_dp")
    assert [c.name for c in one] == ["lin.top_k_1pct_costs_accuracy_without_dp"]
    with pytest.raises(ValueError, match="mode"):
        catalog.claims("huge")


def test_run_claims_trains_each_distinct_config_once(tmp_path):
    """Two claims sharing the dense arm: one sweep over the distinct configs, then read back."""
    import sqlite3

    m = A.mode("quick")
    dense = A.dense(m, 3.0)
    c1 = _claim(name="t.a", arms={"treatment": A.digits(m, [{"name": "random_freeze", "r_final": 0.5}, A.CLIP_T,
                                                                A.NOISE_T], epsilon=3.0), "control": dense})
    c2 = _claim(name="t.b", arms={"treatment": A.dense(m, 3.0, hidden=16), "control": dense})
    db = tmp_path / "c.db"
    res = runner.run_claims([c1, c2], store=str(db), executor="serial", progress=False)
    n_runs = sqlite3.connect(db).execute("select count(*) from runs").fetchone()[0]
    # stage 1: 3 arms x 2 steps x 3 seeds (the shared dense arm once); stage 2: 3 arms x 3 fresh seeds
    assert n_runs == 3 * 2 * 3 + 3 * 3
    assert res[0].arms["control"].fixed == res[1].arms["control"].fixed
    again = runner.run_claims([c1, c2], store=str(db), executor="serial", progress=False)
    assert n_runs == sqlite3.connect(db).execute("select count(*) from runs").fetchone()[0]
    for a, b in zip(again, res):  # read back, bit for bit
        assert a.fixed == b.fixed and a.tuned == b.tuned and a.arms == b.arms
    assert all(np.isfinite(a.fixed).all() for r in res for a in r.arms.values())
