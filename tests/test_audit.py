"""The empirical privacy audit (``sims.audit``, docs/audit.md): the bound, the game on real chains,
soundness, tightness, power, one-run auditing, bad input, the CLI.

Statistical tests use fixed seeds, and each states its false-failure probability: how often a
correct implementation would fail it over the choice of seed.
"""
import json
import math

import numpy as np
import pytest
from scipy.stats import beta, binom

import sims.mechanisms as mech
from dptheory.accounting import epsilon
from sims import audit
from sims.__main__ import main as sims_main

DENSE = mech.chain(mech.clip(1.0), mech.gaussian_noise(1.0))


# ----------------------------------------------------------------------------- the bound
def test_clopper_pearson_closed_forms():
    n, a = 500, 0.025
    # k = 0: the upper limit solves (1 - p)^n = a; k = n: 1; otherwise beta.ppf(1 - a, k + 1, n - k)
    assert audit.clopper_pearson_upper(0, n, a) == pytest.approx(1 - a ** (1 / n), rel=1e-12)
    assert audit.clopper_pearson_upper(n, n, a) == 1.0
    assert audit.clopper_pearson_upper(7, n, a) == pytest.approx(beta.ppf(1 - a, 8, n - 7), rel=1e-14)
    ups = audit.clopper_pearson_upper(np.arange(n + 1), n, a)
    assert np.all(np.diff(ups) > 0) and np.all(ups >= np.arange(n + 1) / n)


def test_epsilon_lower_bound_is_the_kov_inversion():
    fp, n0, fn, n1, delta = 3, 1000, 400, 1000, 1e-5
    lb, fpr_hi, fnr_hi = audit.epsilon_lower_bound(fp, n0, fn, n1, delta=delta, confidence=0.9)
    assert fpr_hi == pytest.approx(beta.ppf(0.95, fp + 1, n0 - fp))
    assert fnr_hi == pytest.approx(beta.ppf(0.95, fn + 1, n1 - fn))
    want = max(math.log((1 - delta - fnr_hi) / fpr_hi), math.log((1 - delta - fpr_hi) / fnr_hi))
    assert lb == pytest.approx(want, rel=1e-12) and lb > 0
    # the region is symmetric in the two errors; a coin-flip test bounds nothing; higher confidence, lower bound
    assert audit.epsilon_lower_bound(fn, n1, fp, n0, delta=delta, confidence=0.9)[0] == pytest.approx(lb)
    assert audit.epsilon_lower_bound(500, 1000, 500, 1000)[0] == 0.0
    assert audit.epsilon_lower_bound(fp, n0, fn, n1, delta=delta, confidence=0.99)[0] < lb


def test_audit_scores_selects_on_one_half_and_counts_on_the_other():
    rng = np.random.default_rng(0)
    x0, x1 = rng.standard_normal(4000), 3.0 + rng.standard_normal(4000)
    flat = np.zeros(4000)
    res = audit.audit_scores({"flat": flat, "shift": x0}, {"flat": flat, "shift": x1})
    assert res["statistic"] == "shift" and res["negatives"] == res["positives"] == 2000
    e0, e1 = x0[2000:], x1[2000:]  # the evaluation halves, counted at the chosen threshold
    assert res["false_positives"] == np.count_nonzero(e0 >= res["threshold"])
    assert res["false_negatives"] == np.count_nonzero(e1 < res["threshold"])
    assert res["epsilon_lower_bound"] == audit.epsilon_lower_bound(res["false_positives"], 2000, res["false_negatives"],
                                                                   2000)[0]
    assert 0 < res["epsilon_lower_bound"] < res["epsilon_upper"]
    # the choice depends on the selection halves only: changing the evaluation halves keeps the test
    other = audit.audit_scores({"flat": flat, "shift": np.r_[x0[:2000], x0[2000:] + 1]},
                               {"flat": flat, "shift": np.r_[x1[:2000], x1[2000:] - 1]})
    assert (other["statistic"], other["threshold"]) == (res["statistic"], res["threshold"])
    assert other["false_positives"] > res["false_positives"]
    # perfectly separated scores: zero errors, the largest bound n evaluation trials can give
    sep = audit.audit_scores({"s": np.zeros(400)}, {"s": np.ones(400)})
    assert (sep["false_positives"], sep["false_negatives"]) == (0, 0)
    assert sep["epsilon_lower_bound"] == audit.epsilon_lower_bound(0, 200, 0, 200)[0]
    assert math.isinf(sep["epsilon_upper"])


def test_one_run_bound():
    # all r guesses right: the bound grows with r; half right: nothing; never above the delta = 0 analysis
    lbs = [audit.one_run_lower_bound(1000, r, r) for r in (20, 100, 500)]
    assert 0 < lbs[0] < lbs[1] < lbs[2]
    assert audit.one_run_lower_bound(1000, 500, 250) == 0.0
    assert audit.one_run_lower_bound(1000, 100, 90) <= audit.one_run_lower_bound(1000, 100, 90, delta=1e-300)
    # v correct of r under pure eps-DP is at most Binomial(r, e^eps / (1 + e^eps)): the bound is the largest
    # eps of the grid whose upper tail at v is still below 1 - confidence (checked without the delta term)
    lb = audit.one_run_lower_bound(1000, 100, 90, delta=1e-300)
    tail = [binom.sf(89, 100, 1 / (1 + math.exp(-e))) for e in (lb, lb + 0.02)]
    assert tail[0] < 0.05 <= tail[1]


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call", [
    lambda **kw: audit.check(DENSE, **kw),
    lambda **kw: audit.audit_gaussian(1.0, **kw),
])
def test_bad_trials_and_confidence_name_the_parameter(call):
    with pytest.raises(ValueError, match="trials"):
        call(trials=99)
    for c in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="confidence"):
            call(trials=100, confidence=c)


def test_bad_input_of_the_other_entry_points():
    with pytest.raises(ValueError, match="canaries"):
        audit.one_run(DENSE, canaries=99)
    with pytest.raises(ValueError, match="confidence"):
        audit.one_run(DENSE, canaries=100, confidence=1.0)
    with pytest.raises(ValueError, match="confidence"):
        audit.epsilon_lower_bound(1, 10, 1, 10, confidence=0)
    with pytest.raises(ValueError, match="chain"):
        audit.check("dense", trials=100)
    with pytest.raises(ValueError, match="noise_multiplier"):
        audit.audit_gaussian(0.0)


@pytest.mark.parametrize("canary,shape", [(np.ones(15), 16), (np.ones((4, 4)), 16), (np.ones(17), 16), (16, 16),
                                          ("spike", 16), (np.zeros(16), 16), (np.eye(4).ravel(), (4, 4))])
def test_bad_canary_names_the_parameter(canary, shape):
    with pytest.raises(ValueError, match="canary"):
        audit.check(DENSE, trials=100, canary=canary, shape=shape)


# ----------------------------------------------------------------------------- the game on real chains
def test_check_with_defaults_and_reproducibility():
    res = audit.check(DENSE)
    assert res.verdict == "consistent" and res.trials == 2000 and res.confidence == 0.95
    assert res.claimed_epsilon == epsilon(1.0, 1.0, 1, 1e-5)[0]
    assert 0 < res.epsilon_lower_bound < res.claimed_epsilon
    again = audit.check(DENSE)
    assert again == res  # same seed, same result, bit for bit
    assert audit.check(DENSE, random_state=1) != res


def test_fast_path_plays_the_same_game_as_the_chain():
    """The dense chain's Dirac projection is ``(C b + sigma C z) / B`` per step, as audit_gaussian assumes.

    Means and standard deviations of 2 x 2000 projections (sigma = 1, C = 1, B = 16): each
    tolerance is 6 standard errors (normal approximation; false failure < 1e-8 per comparison).
    """
    game = audit._setup(DENSE, audit._audited_model(None, 16), 16, None, None, "dirac", None,
                        np.random.default_rng(0))
    g = audit._streams(3, 3)
    p0 = audit._play(DENSE, game, 2000, 1, 1.0, 0, g[0], g[2])[1][:, 0] * 16
    p1 = audit._play(DENSE, game, 2000, 1, 1.0, 1, g[1], g[2])[1][:, 0] * 16
    se = math.sqrt(2 / 2000)
    assert abs((p1.mean() - p0.mean()) - 1.0) < 6 * se
    for p in (p0, p1):
        assert abs(p.std() - 1.0) < 6 * math.sqrt(0.5 / 2000)


def test_tightness_default_suite():
    """One Gaussian step (sigma = 1), Dirac canary, 10^4 trials per world, delta = 1e-5: at least 0.2 of the
    accountant's epsilon (measured 0.40 at this seed). Over 60 seeds this audit gave mean 0.39, standard
    deviation 0.034, min 0.32 (the closed-form game, 1000 seeds: 0.40, 0.035, min 0.31), so 0.2 is 5.6
    standard deviations below the mean: false failure ~1e-8 (normal approximation)."""
    res = audit.check(DENSE, trials=10_000)
    assert not res.violation
    assert res.epsilon_lower_bound >= 0.2 * res.claimed_epsilon


@pytest.mark.slow
def test_tightness_1e5_trials():
    """10^5 trials per world (about 20 s). At delta = 1e-3, where 10^5 trials resolve the rates that matter, at
    least 0.5 of the accountant's epsilon: measured 0.71 at this seed, 0.66-0.71 (mean 0.68) over 4 seeds.
    At delta = 1e-5 the best achievable is ~0.56 of the RDP epsilon even with the optimal threshold known
    in advance, so 0.5 is not a robust assertion there: measured 0.55, 0.50-0.55 (mean 0.52); asserted
    0.36. With the closed-form game's standard deviations (0.038 and 0.032 over 300 seeds) the
    thresholds are 4.7 and 5 sd below the means: false failure ~1e-6 (normal approximation)."""
    for delta, fraction in ((1e-3, 0.5), (1e-5, 0.36)):
        res = audit.check(DENSE, trials=100_000, delta=delta)
        assert not res.violation
        assert res.epsilon_lower_bound >= fraction * res.claimed_epsilon, (delta, res)


@pytest.mark.slow
def test_tightness_at_delta_1e5_with_1e6_trials():
    """At delta = 1e-5, 10^6 trials per world (about 90 s) reach at least 0.5 of the accountant's epsilon:
    measured 0.674 and 0.643 at seeds 0 and 1 (0.545 at 10^5 and 0.609 at 4 x 10^5 trials, seed 0). The
    spread shrinks as 1/sqrt(trials): scaled from the 0.032 standard deviation at 10^5 trials, about 0.01
    here, so 0.5 is more than 10 sd below the measured values (false failure far below 1e-6)."""
    res = audit.check(DENSE, trials=1_000_000, delta=1e-5)
    assert not res.violation
    assert res.epsilon_lower_bound >= 0.5 * res.claimed_epsilon, res


def test_closed_form_many_steps_with_poisson_sampling():
    """T = 8 Poisson-sampled steps at q = 0.25, sigma = 1.5 (accountant: 3.2): the per-step likelihood-ratio
    test is among the scores and the bound stays below the accountant's 8-step epsilon. Power: measured 1.02
    at this seed, 0.94-1.11 over 5 seeds; asserted > 0.5 (about 8 standard deviations of margin)."""
    res = audit.audit_gaussian(1.5, trials=20_000, sampling_rate=0.25, steps=8)
    assert res.claimed_epsilon == epsilon(0.25, 1.5, 8, 1e-5)[0]
    assert res.statistic in ("projection", "likelihood ratio") and not res.violation
    assert 0.5 < res.epsilon_lower_bound < res.claimed_epsilon


def test_composed_steps_carry_the_chain_state():
    """Error feedback carries its residual along the T steps of a trial (fresh state per trial): the game of
    T = 3 Poisson-sampled steps runs the real chain and is consistent with the accountant's 3-step epsilon."""
    ch = mech.chain(mech.clip(1.0), mech.gaussian_noise(1.0), mech.error_feedback(mech.top_k(4, "noisy")))
    res = audit.check(ch, trials=500, sampling_rate=0.5, steps=3)
    assert res.steps == 3 and res.claimed_epsilon == epsilon(0.5, 1.0, 3, 1e-5)[0] and not res.violation


def test_aligned_canary_follows_the_support():
    """The aligned canary weights each coordinate by how often world D releases it: on a fixed support (public
    freezing keeps 4 of 16 coordinates) it lies on that support."""
    ch = mech.chain(mech.public_freeze(0.75), mech.clip(1.0), mech.gaussian_noise(1.0))
    game = audit._setup(ch, audit._audited_model(None, 16), 16, None, True, "aligned",
                        lambda base: audit._support_frequency(ch, base, 20, 1, 1.0, np.random.default_rng(1)),
                        np.random.default_rng(0))
    released = audit._releases(ch, *audit._contexts(game, 1, 1.0, np.random.default_rng(2)),
                               np.zeros((5, 1), dtype=np.intp))
    support = np.any(released[:, 0] != 0, axis=0)
    assert support.sum() == 4 and np.all(game.canary[~support] == 0) and np.all(game.canary[support] != 0)


def test_chain_without_noise_has_no_claim():
    res = audit.check(mech.chain(mech.clip(1.0), allow_non_private=True), trials=100)
    assert res.claimed_epsilon is None and res.verdict.startswith("no claim") and not res.violation


# ----------------------------------------------------------------------------- soundness, power
SOUND_CONFIDENCE = 1 - 1e-8


def _sound_audits(entries, sigma, q, k, steps):
    out = []
    for e in entries:
        for j, canary in enumerate(audit.CANARIES):
            out.append((e.name, audit.check(e.chain, trials=600, sampling_rate=q, steps=steps, canary=canary,
                                            confidence=SOUND_CONFIDENCE, random_state=j, **e.options)))
    return out


@pytest.mark.parametrize("sigma,q,k,steps", [(2.0, 1.0, 4, 1), pytest.param(2.5, 0.5, 8, 2, marks=pytest.mark.slow),
                                              pytest.param(3.0, 1.0, 2, 1, marks=pytest.mark.slow)])
def test_soundness_of_every_private_builtin(sigma, q, k, steps):
    """No private built-in chain's audited lower bound exceeds the accountant's epsilon.

    13 chains x 2 canaries x 3 configurations = 78 audits, each at confidence 1 - 1e-8: if the accountant's
    epsilon holds, the probability that ANY of them fails is at most 78e-8 < 1e-6 (union bound). The
    test can fail: at these settings (600 trials) every non-private variant IS flagged
    (test_soundness_settings_catch_the_non_private_variants)."""
    for name, res in _sound_audits(audit.builtin_chains(sigma, k=k), sigma, q, k, steps):
        assert res.private and res.claimed_epsilon == epsilon(q, sigma, steps, 1e-5)[0]
        assert not res.violation, (name, res)


def test_soundness_settings_catch_the_non_private_variants():
    """The soundness harness has power: at its settings (600 trials, confidence 1 - 1e-8, sigma = 2) the
    three non-private variants of the issue are flagged. Measured bounds 2.6-2.7 against the claim 2.17,
    near the largest bound 300 evaluation trials can give at this confidence (2.79)."""
    flagged = {}
    for name, res in _sound_audits(audit.non_private_variants(2.0, k=4), 2.0, 1.0, 4, 1):
        flagged[name] = flagged.get(name, False) or res.violation  # by either canary
    for name in ("top-k of the clean sum, noise on its support", "undeclared rescale (x10)",
                 "post-clip per-example mask"):
        assert flagged[name], name


def test_non_private_variants_refused_or_accepted_as_the_rules_say():
    with pytest.raises(ValueError, match="not differentially private"):
        mech.chain(mech.clip(1.0), mech.top_k(4, "clean"), mech.gaussian_noise(2.0))
    with pytest.raises(ValueError, match="not differentially private"):
        mech.chain(mech.clip(1.0), audit.post_clip_example_mask(4), mech.gaussian_noise(2.0))
    lying = mech.chain(mech.clip(1.0), audit.undeclared_rescale(10.0), mech.gaussian_noise(2.0))
    assert lying.privacy.private and lying.privacy.noise_multiplier == 2.0  # the lie passes every static rule


def test_power_check_catches_each_non_private_variant():
    """``check`` at its default budget (2000 trials, 95 %) gives each non-private variant of the issue a lower
    bound above the epsilon dense DP-SGD would claim at its noise multiplier (sigma = 2: 2.17), asserted
    with a margin of 1. Measured over 5 seeds: clean top-k 5.60 every time (its canary coordinate is never
    selected without the canary), the per-example mask 5.59-5.60 (the release moves by 16 C), the rescale
    4.55-5.55 (10 C against noise 2 C); the most 1000 evaluation trials can show is 5.6. Falling below
    3.17 would take a tenfold error rate on tests that are nearly error-free: far below 1e-6."""
    claim = epsilon(1.0, 2.0, 1, 1e-5)[0]
    for e in audit.non_private_variants(2.0, k=4):
        if "low-rank" in e.name:
            continue  # not one of the variants: no leak found at this D (reported by the catalogue)
        res = audit.check(e.chain, **e.options)
        assert res.claimed_epsilon == claim, e.name
        assert res.violation and res.epsilon_lower_bound > claim + 1.0, (e.name, res)
        assert res.verdict == (f"VIOLATION: measured lower bound {res.epsilon_lower_bound:.4g} > claimed epsilon "
                               f"{claim:.4g}")


# ----------------------------------------------------------------------------- one run
def test_one_run_audit():
    """One run, 1000 canaries. Dense DP-SGD at sigma = 1 (claim 4.73): consistent, and the run sees the leak
    (measured 1.5 at this seed, 1.40-1.66 over 6 seeds; asserted > 0.8). The undeclared rescale at
    sigma = 2 is a VIOLATION (measured 4.56 over 3 seeds)."""
    dense = audit.one_run(DENSE)
    assert dense.canaries == 1000 and dense.verdict == "consistent" and 0.8 < dense.epsilon_lower_bound
    lying = mech.chain(mech.clip(1.0), audit.undeclared_rescale(10.0), mech.gaussian_noise(2.0))
    res = audit.one_run(lying)
    assert res.violation and res.correct <= res.guesses <= res.canaries
    assert audit.one_run(DENSE) == dense


# ----------------------------------------------------------------------------- catalogue, figure, CLI
def test_catalogue_covers_every_builtin():
    names = [e.name for e in audit.builtin_chains()]
    assert len(names) == len(set(names)) == 13
    assert all(e.chain.privacy.private for e in audit.builtin_chains())
    assert not any(e.chain.privacy.private for e in audit.non_private_variants() if "rescale" not in e.name)


def test_cli_catalogue_writes_report_and_figure(tmp_path, capsys):
    """``python -m sims audit --quick``: every chain at sigma = 2 with 200 trials; the non-private variants are
    flagged, no private built-in is (exit code 0)."""
    assert sims_main(["audit", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "privacy_audit.json").read_text())
    names = [r["name"] for r in data["records"]]
    assert len(names) == 17 and names[0] == "dense DP-SGD" and "dense DP-SGD" in out
    assert all(r["verdict"] == "consistent" for r in data["records"] if r["kind"] == "built-in")
    flagged = {r["name"] for r in data["records"] if r["verdict"].startswith("VIOLATION")}
    assert {"undeclared rescale (x10)", "top-k of the clean sum, noise on its support"} <= flagged
    assert (tmp_path / "figures" / "privacy_audit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "privacy_audit.md").read_text().startswith("## Privacy audit")


def test_cli_audits_a_run_config(tmp_path, capsys):
    """A run config (sims.config) is audited on its own model (the digits MLP, d = 4810) with its own chain
    (noise calibrated to the run's epsilon) and delta."""
    from pathlib import Path

    from sims import config as run_config

    path = Path(__file__).resolve().parents[1] / "examples" / "random_k.toml"
    args = ["audit", str(path), "--trials", "200", "--canaries", "100", "--out", str(tmp_path)]
    assert sims_main(args) == 0
    rec = json.loads((tmp_path / "privacy_audit.json").read_text())["records"][0]
    model, _, ch, kw = run_config.build(run_config.load(path))
    assert rec["kind"] == "run config" and rec["verdict"] == "consistent" and rec["one_run"]["canaries"] == 100
    assert rec["claimed_epsilon"] == epsilon(1.0, ch.privacy.noise_multiplier, 1, kw["delta"])[0]
    assert rec["games"][0]["delta"] == kw["delta"] and model.n_params == 4810
    assert sims_main(["audit", str(tmp_path / "missing.toml"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert sims_main(["audit", "--quick", "--confidence", "1.5", "--out", str(tmp_path)]) == 2
    assert "confidence" in capsys.readouterr().err


def test_a_run_config_audited_over_its_full_length_is_held_to_the_runs_epsilon(tmp_path):
    """``full_length``: the run's own q and T, and the claim is the epsilon the run itself reports."""
    from sims import config as run_config
    from sims import audit

    cfg = {"privacy": {"epsilon": 2.0}, "training": {"steps": 4, "batch_size": 64}}
    rec = audit.audit_run_config(cfg, trials=200, canaries=0, full_length=True)
    game = rec["games"][0]
    assert game["steps"] == 4 and game["sampling_rate"] == 64 / run_config.build(cfg)[1].n_train
    assert rec["claimed_epsilon"] == pytest.approx(run_config.run(cfg)["epsilon"], rel=1e-9)
    assert rec["verdict"] == "consistent"
    with pytest.raises(ValueError, match="leave sampling_rate and steps at their defaults"):
        audit.audit_run_config(cfg, trials=200, canaries=0, full_length=True, steps=3)
    assert sims_main(["audit", "--full-length", "--quick", "--out", str(tmp_path)]) == 2
