"""sims.mechanisms.private_top_k: private support selection of the clipped sum, noise on it only.

Statistical tests use fixed seeds; each states its false-failure probability (the chance that a
correct implementation fails with a fresh seed), all below 1e-6.
"""
from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
from scipy import stats

import sims.mechanisms as mech
from dptheory.events import SelectedGaussian
from dptheory.selection import (
    calibrate_noise_selected,
    epsilon_selected_gaussian,
    epsilon_selection_limit,
    gumbel_scale,
    prob_exact_top_k,
)
from sims import config
from sims.data import make_logistic
from sims.measure import backprop_from_rows
from sims.mechanisms import Effect, InitContext, StepContext, Transform
from sims.models import dense
from sims.step import dpsgd_step
from sims.train import epsilon_after, privacy_report, train

C = 1.0


def _contexts(G, seed):
    bp = backprop_from_rows(G)
    d = bp.layout.n_params
    p = np.zeros(d)
    ic = InitContext(model=None, layout=bp.layout, params=p, total_steps=10, steps_per_epoch=5,
                     expected_batch_size=float(bp.batch_size), rng=np.random.default_rng(1))
    sc = StepContext(model=None, layout=bp.layout, step=0, epoch=0, params=p, bp=bp,
                     expected_batch_size=float(bp.batch_size), rng=np.random.default_rng(seed))
    return ic, sc


def _peeling_set_probability(u, top, b):
    """P(the selected set is ``top``): the sum over its orderings of the peeling probabilities."""
    w = np.exp((u - u.max()) / b)
    total = 0.0
    for perm in itertools.permutations(top):
        left, p = list(range(len(u))), 1.0
        for j in perm:
            p *= w[j] / w[left].sum()
            left.remove(j)
        total += p
    return total


# rows of norm < C, so the clipped sum is their plain sum
G = np.array([[0.6, 0.3, 0.0, -0.4, 0.1],
              [0.3, 0.5, -0.2, -0.4, 0.0]])


@pytest.mark.parametrize("k, eps_sel", [(1, 2.0), (2, 3.0)])
def test_selection_frequencies_match_the_exponential_mechanism(k, eps_sel):
    """Chi-square goodness of fit of the kept sets over N = 20000 steps against the peeling
    probabilities of the scores |s_j| at scale b = 2 C k / eps. False-failure probability 1e-7
    (the chi-square quantile at 1 - 1e-7; every expected count is > 400, so the asymptotic law holds)."""
    ch = mech.chain(mech.clip(C), mech.private_top_k(k, eps_sel), mech.gaussian_noise(1.0))
    ic, sc = _contexts(G, seed=20260 + k)
    state = ch.init(ic)
    s = G.sum(axis=0)
    u = np.abs(s)
    b = gumbel_scale(k, eps_sel, C)
    sets = list(itertools.combinations(range(len(u)), k))
    probs = np.array([_peeling_set_probability(u, top, b) for top in sets])
    assert probs.sum() == pytest.approx(1.0, rel=1e-12)
    counts = dict.fromkeys(sets, 0)
    N = 20000
    for _ in range(N):
        out = dpsgd_step(ch, state, sc)
        kept = tuple(np.flatnonzero(out.update != 0))
        counts[kept] += 1
        state = out.state
    obs = np.array([counts[t] for t in sets])
    assert np.all(N * probs > 400)
    chi2 = float(np.sum((obs - N * probs) ** 2 / (N * probs)))
    print(f"chi2 = {chi2:.2f} on {len(sets) - 1} df (threshold {stats.chi2.isf(1e-7, len(sets) - 1):.1f})")
    assert chi2 < stats.chi2.isf(1e-7, len(sets) - 1), (chi2, obs, N * probs)
    # the true top-k set: its frequency against prob_exact_top_k (the closed form)
    top = tuple(sorted(np.argsort(-u, kind="stable")[:k]))
    assert probs[sets.index(top)] == pytest.approx(prob_exact_top_k(u, k, b), rel=1e-12)


def test_noise_only_on_the_selected_coordinates():
    sigma = 2.0
    ch = mech.chain(mech.clip(C), mech.private_top_k(2, 1.0), mech.gaussian_noise(sigma))
    ic, sc = _contexts(G, seed=5)
    state = ch.init(ic)
    s = G.sum(axis=0)
    B = G.shape[0]
    for _ in range(50):
        out = dpsgd_step(ch, state, sc)
        kept = out.update != 0
        assert kept.sum() == 2                                  # exactly k coordinates released
        assert np.all(out.update[~kept] == 0.0)                 # no noise elsewhere
        assert np.all(out.update[kept] != s[kept] / B)          # noise on the kept ones
        assert out.metrics["kept_fraction"] == pytest.approx(2 / 5)
        assert out.metrics["noise_sq"] > 0
        state = out.state


def test_noise_scale_on_the_kept_coordinates():
    """The released noise on the kept coordinates has std sigma C / B: the normalised sum of squares of
    (update - signal) over 2000 steps x 2 coordinates is chi-square with 4000 degrees of freedom;
    the test's two-sided window has false-failure probability 1e-7."""
    sigma = 1.5
    ch = mech.chain(mech.clip(C), mech.private_top_k(2, 50.0), mech.gaussian_noise(sigma))
    ic, sc = _contexts(G, seed=11)
    state = ch.init(ic)
    s = G.sum(axis=0)
    B = G.shape[0]
    total, n = 0.0, 0
    for _ in range(2000):
        out = dpsgd_step(ch, state, sc)
        kept = out.update != 0
        z = (out.update[kept] - s[kept] / B) / (sigma * C / B)
        total += float(z @ z)
        n += z.size
        state = out.state
    lo, hi = stats.chi2.ppf(0.5e-7, n), stats.chi2.isf(0.5e-7, n)
    assert lo < total < hi, (total, n)


def test_privacy_description_and_report_equal_dptheory():
    ch = mech.chain(mech.clip(C), mech.private_top_k(10, 1.0), mech.gaussian_noise(1.0))
    assert ch.privacy.private and ch.privacy.event == SelectedGaussian(1.0, 10, 1.0)
    rep = privacy_report(ch.privacy, sampling_rate=0.01, steps=1000, delta=1e-5)
    want = epsilon_selected_gaussian(0.01, 1.0, 10, 1.0, 1000, 1e-5)
    assert (rep["epsilon"], rep["order"]) == want
    assert rep["event"] == SelectedGaussian(1.0, 10, 1.0).poisson_sampled(0.01, 1000)
    assert "Zhu & Wang" in rep["accounting"]
    assert epsilon_after(ch.privacy, sampling_rate=0.01, steps=1000, delta=1e-5) == want[0]
    # more than plain DP-SGD at the same sigma: the selection has a price
    plain = mech.chain(mech.clip(C), mech.gaussian_noise(1.0))
    assert rep["epsilon"] > privacy_report(plain.privacy, sampling_rate=0.01, steps=1000, delta=1e-5)["epsilon"]


def test_trains_a_small_model():
    ds = make_logistic(400, 20, random_state=0)
    model = dense.logistic_regression(20)
    ch = mech.chain(mech.clip(C), mech.private_top_k(5, 1.0), mech.gaussian_noise(1.0))
    res = train(model, ds, steps=60, sampling_rate=0.1, mechanism=ch, lr=0.5, random_state=0)
    h = res.history
    assert h["train_loss"][-1] < 0.8 * h["train_loss"][0]
    np.testing.assert_allclose(h["kept_fraction"], 5 / 21)
    want = epsilon_selected_gaussian(0.1, 1.0, 5, 1.0, 60, res.privacy["delta"])[0]
    assert res.privacy["private"] and res.privacy["epsilon"] == want == h["epsilon"][-1]
    # same seed, same run
    again = train(model, ds, steps=60, sampling_rate=0.1, mechanism=ch, lr=0.5, random_state=0)
    np.testing.assert_array_equal(res.params, again.params)


def test_candidates_respect_an_earlier_data_independent_selection():
    """After random_k (clip_then_mask), the selection picks among the random set only."""
    ch = mech.chain(mech.clip(C), mech.random_k(3), mech.private_top_k(2, 1.0), mech.gaussian_noise(1.0))
    assert ch.privacy.private
    ic, sc = _contexts(np.tile(G, (1, 4)), seed=3)
    state = ch.init(ic)
    for _ in range(20):
        out = dpsgd_step(ch, state, sc)
        assert np.count_nonzero(out.update) == 2
        state = out.state


# ----------------------------------------------------------------------------- the chain's rules
def _hand_made_selection():
    """Declares exactly what private_top_k declares, but is not the package's."""
    def update(ctx, state, work):
        s = work.clipped_sum
        keep = np.zeros(work.d, dtype=bool)
        keep[np.argsort(-np.abs(s))[:2]] = True
        work.restrict(keep, "kept")
        return state

    return Transform("private_top_k", Effect("post_clip", noise_on="kept", reads="private"), lambda ctx: (),
                     update, info={"k": 2, "selection_epsilon": 1.0})


@pytest.mark.parametrize("make", [
    lambda: mech.top_k(2, mode="clean"),
    _hand_made_selection,
    lambda: dataclasses.replace(mech.private_top_k(2, 1.0)),
])
def test_other_private_readers_before_the_noise_are_still_refused(make):
    with pytest.raises(ValueError, match=r"chooses coordinates from private, un-noised data up to the noise"):
        mech.chain(mech.clip(C), make(), mech.gaussian_noise(1.0))


def test_two_selections_or_one_after_a_sensitivity_map_refused():
    with pytest.raises(ValueError, match=r"at most one"):
        mech.chain(mech.clip(C), mech.private_top_k(2, 1.0), mech.private_top_k(1, 1.0), mech.gaussian_noise(1.0))

    def scale_update(ctx, state, work):
        work.replace_sum(2.0 * work.clipped_sum)
        return state

    doubling = Transform("double", Effect("post_clip", sensitivity_factor=2.0), lambda ctx: (), scale_update)
    with pytest.raises(ValueError, match=r"changes the sensitivity of the sum: put the private selection first"):
        mech.chain(mech.clip(C), doubling, mech.private_top_k(2, 1.0), mech.gaussian_noise(1.0))
    after = mech.chain(mech.clip(C), mech.private_top_k(2, 1.0), doubling, mech.gaussian_noise(1.0))
    assert after.privacy.event == SelectedGaussian(0.5, 2, 1.0)   # sigma divided by the declared factor


def test_without_noise_or_clip_not_private():
    ch = mech.chain(mech.clip(C), mech.private_top_k(2, 1.0), allow_non_private=True)
    assert not ch.privacy.private and "no noise step" in ch.privacy.reason
    with pytest.raises(ValueError, match=r"clip_norm=None"):
        mech.chain(mech.clip(None), mech.private_top_k(2, 1.0), mech.gaussian_noise(1.0))


# ----------------------------------------------------------------------------- inputs and config
@pytest.mark.parametrize("call, match", [
    (lambda: mech.private_top_k(0, 1.0), r"^k must be an integer in \[1, inf\)"),
    (lambda: mech.private_top_k(1.5, 1.0), r"^k must be an integer"),
    (lambda: mech.private_top_k(2, 0.0), r"^selection_epsilon must be in \(0\.0, inf\)"),
    (lambda: mech.private_top_k(2, "big"), r"^selection_epsilon must be a real number"),
])
def test_bad_arguments_name_the_parameter(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_k_above_d_refused_at_init():
    ch = mech.chain(mech.clip(C), mech.private_top_k(9, 1.0), mech.gaussian_noise(1.0))
    ic, _ = _contexts(G, seed=0)
    with pytest.raises(ValueError, match=r"^k must be an integer in \[1, 5\]"):
        ch.init(ic)


_CFG = {"data": {"name": "logistic", "n": 300, "d": 10}, "model": {"kind": "logistic"},
        "mechanism": [{"name": "clip", "clip_norm": 1}, {"name": "private_top_k", "k": 3, "selection_epsilon": 1},
                      {"name": "gaussian_noise"}],
        "privacy": {"noise_multiplier": 1.0, "delta": 1e-4}, "training": {"steps": 20, "sampling_rate": 0.1}}


def test_config_path(tmp_path):
    cfg = config.validate(_CFG)
    assert cfg["mechanism"][1] == {"name": "private_top_k", "k": 3, "selection_epsilon": 1.0}
    rec = config.run(_CFG)
    assert rec["private"] and math.isfinite(rec["train_loss"])
    assert rec["epsilon"] == epsilon_selected_gaussian(0.1, 1.0, 3, 1.0, 20, 1e-4)[0]
    toml = tmp_path / "run.toml"
    toml.write_text('[data]\nname = "logistic"\nn = 300\nd = 10\n[model]\nkind = "logistic"\n'
                    '[[mechanism]]\nname = "clip"\nclip_norm = 1.0\n'
                    '[[mechanism]]\nname = "private_top_k"\nk = 3\nselection_epsilon = 1.0\n'
                    '[[mechanism]]\nname = "gaussian_noise"\n'
                    '[privacy]\nnoise_multiplier = 1.0\ndelta = 1e-4\n[training]\nsteps = 20\nsampling_rate = 0.1\n')
    assert config.load(toml) == cfg
    with pytest.raises(ValueError, match=r"mechanism\[1\]\.selection_epsilon must be in"):
        config.validate({**_CFG, "mechanism": [_CFG["mechanism"][0], {"name": "private_top_k", "k": 3,
                                                                    "selection_epsilon": -1},
                                               _CFG["mechanism"][2]]})


def test_config_calibrates_sigma_to_privacy_epsilon():
    """privacy.epsilon with a private_top_k stage: sigma = calibrate_noise_selected(q, T, eps, delta, k, eps_sel),
    the run reports an epsilon <= the target; a target at or below the selection's own cost is refused,
    naming privacy.epsilon and the limit."""
    raw = {**_CFG, "privacy": {"epsilon": 4.0, "delta": 1e-4}}
    config.validate(raw)
    want = calibrate_noise_selected(0.1, 20, 4.0, 1e-4, 3, 1.0)
    _, _, ch, _ = config.build(raw)
    assert ch.privacy.event == SelectedGaussian(want, 3, 1.0)
    rec = config.run(raw)
    assert rec["private"] and rec["noise_multiplier"] == want
    assert rec["epsilon"] == epsilon_selected_gaussian(0.1, want, 3, 1.0, 20, 1e-4)[0] <= 4.0
    assert rec["epsilon"] == pytest.approx(4.0, rel=1e-6)
    floor, _ = epsilon_selection_limit(0.1, 3, 1.0, 20, 1e-4)   # 1.10
    with pytest.raises(ValueError, match=r"^privacy\.epsilon=1\.0 cannot be reached: the selection alone spends "
                                         r"epsilon=1\.10\d* .*selection_epsilon"):
        config.build({**_CFG, "privacy": {"epsilon": 1.0, "delta": 1e-4}})
    assert floor > 1.0


def test_docs_selection_blocks_run():
    """The usage blocks of docs/selection.md: the Python one runs, the TOML one validates."""
    import pathlib
    import re
    import tomllib

    text = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "selection.md").read_text()
    py = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    toml = re.findall(r"```toml\n(.*?)```", text, flags=re.DOTALL)
    assert len(py) == 1 and len(toml) == 1
    ns = {}
    exec(compile(py[0], "docs/selection.md:python", "exec"), ns)
    assert ns["ch"].privacy.event == SelectedGaussian(1.0, 10, 1.0)
    raw = tomllib.loads(toml[0])
    raw.update(data={"name": "logistic", "n": 300, "d": 20}, model={"kind": "logistic"})
    cfg = config.validate(raw)
    assert [t["name"] for t in cfg["mechanism"]] == ["clip", "private_top_k", "gaussian_noise"]
