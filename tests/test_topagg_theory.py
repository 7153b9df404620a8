"""dptheory.topagg against the simulator's TopAgg (sims.mechanisms.topagg): declared privacy, measured
sensitivity of the vote sum, the noise the step draws, and the accounting of a run."""
import math

import numpy as np
import pytest

from dptheory import accounting, epsilon_of
from dptheory.topagg import (
    datalens_rdp,
    topagg_epsilon,
    topagg_noise_multiplier,
    topagg_sensitivity,
)
from sims.mechanisms import InitContext, chain, topagg
from sims.mechanisms.topagg import teacher_votes
from sims.models import materialize
from sims.models.dense import init_params, mlp
from sims.step import dpsgd_step, step_context

KS = (1, 2, 7, 30)
SIGMAS = (0.5, 1.0, 2.3)


def _contexts(k_model=(6, 5, 3), B=9, seed=0, step_seed=1):
    """A real MLP batch: (init context, step context, per-example gradients G)."""
    model = mlp(k_model)
    params = init_params(model, random_state=seed)
    r = np.random.default_rng(seed + 100)
    X, y = r.standard_normal((B, k_model[0])), r.integers(0, k_model[-1], B)
    sc = step_context(model, params, X, y, step=0, epoch=0, expected_batch_size=float(B),
                      rng=np.random.default_rng(step_seed))
    ic = InitContext(model=model, layout=model.layout, params=params, total_steps=10, steps_per_epoch=5,
                     expected_batch_size=float(B), public=None, rng=np.random.default_rng(5))
    return ic, sc, materialize(sc.bp)


# ----------------------------------------------------------------------------- declared privacy
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("sigma", SIGMAS)
def test_chain_privacy_is_the_closed_form(k, sigma):
    """sims draws noise std sigma sqrt(k) on the vote sum; its declared sensitivity and multiplier are dptheory's."""
    p = chain(topagg(k, sigma)).privacy
    assert p.private
    assert p.sensitivity == pytest.approx(topagg_sensitivity(k), rel=1e-15)
    assert p.noise_multiplier == pytest.approx(topagg_noise_multiplier(sigma * math.sqrt(k), k), rel=1e-15)
    # the declared replace-one figure in the chain's notes is dptheory's 2 sqrt(k)
    assert topagg_sensitivity(k, neighbouring="replace_one") == pytest.approx(2 * p.sensitivity, rel=1e-15)
    assert any("2 sqrt(k)" in n for n in p.notes)


@pytest.mark.parametrize("k, sigma, q, T", [(1, 1.0, 0.01, 1000), (7, 2.3, 0.05, 300), (30, 0.8, 0.2, 50)])
def test_accounting_of_a_run_matches_the_chain_event(k, sigma, q, T):
    event = chain(topagg(k, sigma)).privacy.event.poisson_sampled(q, T)
    want = epsilon_of(event, 1e-5)
    got = topagg_epsilon(k, sigma * math.sqrt(k), q, T, 1e-5)
    assert got[0] == pytest.approx(want[0], rel=1e-12)
    assert got[1] == pytest.approx(want[1], rel=1e-12)


def test_micro_batch_teachers_refused_by_both():
    with pytest.raises(ValueError, match="teacher_size"):
        chain(topagg(5, 1.0, teacher_size=2))
    with pytest.raises(ValueError, match="teacher_size"):
        topagg_sensitivity(5, teacher_size=2)
    assert not chain(topagg(5, 1.0, teacher_size=2), allow_non_private=True).privacy.private


def test_datalens_charge_is_four_times_the_add_remove_rdp_without_subsampling():
    orders = np.array([1.5, 2.0, 8.0, 32.0])
    for k, s in ((1, 1.0), (200, 5000.0), (9, 3.0)):
        add_remove = accounting.rdp_gaussian(orders, topagg_noise_multiplier(s, k))
        np.testing.assert_allclose(datalens_rdp(orders, k, s), 4 * add_remove, rtol=1e-14)
        np.testing.assert_allclose(datalens_rdp(orders, k, s, steps=10), 20 * k * orders / s ** 2, rtol=1e-14)
        # replace-one at q = 1: the Gaussian at s / (2 sqrt(k)), whose RDP is the DataLens charge
        e, a = topagg_epsilon(k, s, 1.0, 10, 1e-5, neighbouring="replace_one")
        assert e == pytest.approx(accounting.epsilon_from_rdp([a], datalens_rdp([a], k, s, steps=10), 1e-5)[0],
                                  rel=1e-9)


@pytest.mark.parametrize("call, name", [
    (lambda: topagg_sensitivity(0), "k"),
    (lambda: topagg_sensitivity(3, neighbouring="swap"), "neighbouring"),
    (lambda: topagg_noise_multiplier(0.0, 3), "noise_std"),
    (lambda: topagg_epsilon(3, 1.0, 0.1, 10, 1e-5, neighbouring="replace_one"), "sampling_rate"),
    (lambda: topagg_epsilon(3, 1.0, 0.1, 0, 1e-5), "steps"),
    (lambda: datalens_rdp([0.5], 3, 1.0), "orders"),
])
def test_errors_name_the_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_vectorised_over_k():
    k = np.array([1, 4, 9, 16])
    np.testing.assert_array_equal(topagg_sensitivity(k), np.sqrt(k))
    np.testing.assert_array_equal(topagg_noise_multiplier(6.0, k, neighbouring="replace_one"), 3.0 / np.sqrt(k))


# ----------------------------------------------------------------------------- measured sensitivity
def _gradients(rng, B, d, kind):
    if kind == "gaussian":
        return rng.standard_normal((B, d))
    if kind == "heavy":
        return rng.standard_cauchy((B, d))
    return rng.integers(-1, 2, (B, d)).astype(float)   # many ties and zeros


def _one_trial(rng, kind, stochastic, negate):
    """(change on removing one example, change on replacing it) / their closed forms, for one random batch."""
    B, d = int(rng.integers(2, 12)), int(rng.integers(1, 40))
    k = int(rng.integers(1, d + 1))
    G = _gradients(rng, B, d, kind)
    seed = int(rng.integers(2 ** 32))
    V, _ = teacher_votes(G, k, np.random.default_rng(seed), stochastic=stochastic, coord_clip=0.5)
    j = int(rng.integers(B))
    if not stochastic:   # each example's vote depends on its own gradient only: the others do not move
        Vj, _ = teacher_votes(np.delete(G, j, axis=0), k, np.random.default_rng(seed))
        np.testing.assert_array_equal(Vj, np.delete(V, j, axis=0))
    removed = np.linalg.norm(V.sum(axis=0) - np.delete(V, j, axis=0).sum(axis=0))
    other = -G[j] if negate else _gradients(rng, 1, d, kind)[0]
    Vo, _ = teacher_votes(other[None, :], k, np.random.default_rng(seed + 1), stochastic=stochastic, coord_clip=0.5)
    replaced = np.linalg.norm(V.sum(axis=0) - V[j] + Vo[0] - V.sum(axis=0))
    return removed / topagg_sensitivity(k), replaced / topagg_sensitivity(k, neighbouring="replace_one")


@pytest.mark.parametrize("kind", ["gaussian", "heavy", "ties"])
@pytest.mark.parametrize("stochastic", [False, True])
def test_vote_sum_moves_by_at_most_sqrt_k_and_reaches_it(kind, stochastic):
    """Monte Carlo over random batches of gradients (fixed seed; the bound is deterministic, so no false
    failures): removing one example moves the simulator's vote sum by sqrt(k) in L2, never more; replacing it
    by another gradient by at most 2 sqrt(k), which its negation reaches."""
    rng = np.random.default_rng(2024)
    ratios = np.array([_one_trial(rng, kind, stochastic, negate=t % 2 == 1) for t in range(60)])
    assert np.all(ratios <= 1 + 1e-15), ratios.max(axis=0)
    assert ratios[:, 0].max() == pytest.approx(1.0, rel=1e-15)
    assert ratios[:, 1].max() == pytest.approx(1.0, rel=1e-15)


def test_step_of_the_chain_sums_the_teacher_votes():
    """The chain's reported vote energy is ||sum_t teacher_votes||^2, so the sensitivity measured on
    teacher_votes above is that of the sum the step noises."""
    for k in (1, 3, 10):
        ic, sc, G = _contexts()
        ch = chain(topagg(k, 0.0), allow_non_private=True)
        _, _, m = dpsgd_step(ch, ch.init(ic), sc)
        V, _ = teacher_votes(G, k, np.random.default_rng(0))
        assert m["signal_sq_before_mask"] == pytest.approx(float(np.sum(V.sum(axis=0) ** 2)), rel=1e-12)


def test_step_noise_has_the_declared_std():
    """noise_sq / (sigma^2 k) is chi^2 with d degrees of freedom per step; over 300 steps the mean of
    noise_sq / (d sigma^2 k) has sd sqrt(2 / (300 d)); the band is 6 sd: false-failure probability ~2e-9
    (normal approximation, fixed seeds, so in fact deterministic)."""
    k, sigma, steps = 4, 1.7, 300
    ratios = []
    for s in range(steps):
        ic, sc, _ = _contexts(step_seed=s)
        ch = chain(topagg(k, sigma))
        _, _, m = dpsgd_step(ch, ch.init(ic), sc)
        std = topagg_noise_multiplier(sigma * math.sqrt(k), k) * topagg_sensitivity(k)
        ratios.append(m["noise_sq"] / (sc.layout.n_params * std ** 2))
    d = ic.layout.n_params
    assert abs(np.mean(ratios) - 1.0) < 6 * math.sqrt(2.0 / (steps * d))
