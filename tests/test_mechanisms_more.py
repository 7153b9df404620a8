"""sims.mechanisms: public-data freezing/selection, magnitude pruning, TopAgg, low-rank, error feedback.

Naive references are written here (explicit loops, materialised per-example gradients, own QR
power iteration, own EF recursion); noise is replayed from the documented seed rule.
"""
import math

import numpy as np

from sims.data import public_split

from sims.step import dpsgd_step
import pytest
from hypothesis import given, settings, strategies as st

from sims.mechanisms import (InitContext, StepContext, chain, clip, error_feedback, gaussian_noise, low_rank,
                             magnitude_prune, public_freeze, public_select, random_freeze, top_k, topagg)
from sims.models import Backprop, Layout, materialize
from sims.models.dense import backprop, init_params, mlp
from sims.noise import standard_normal


def make_bp(sizes, B, seed, zero=False):
    lay = Layout(tuple(sizes))
    r = np.random.default_rng(seed)
    f = 0.0 if zero else 1.0
    acts = tuple(r.standard_normal((B, sizes[l])) * f for l in range(len(sizes) - 1))
    deltas = tuple(r.standard_normal((B, sizes[l + 1])) * f for l in range(len(sizes) - 1))
    return Backprop(lay, acts, deltas, np.zeros(B))


def ctxs(bp, step_seed, *, model=None, params=None, public=None, init_seed=5, step=0):
    lay = bp.layout
    p = np.zeros(lay.n_params) if params is None else params
    B = float(max(bp.batch_size, 1))
    return (InitContext(model=model, layout=lay, params=p, total_steps=10, steps_per_epoch=5, expected_batch_size=B, public=public, rng=np.random.default_rng(init_seed)),
            StepContext(model=model, layout=lay, step=step, epoch=step // 5, params=p, bp=bp, expected_batch_size=B, public=public, rng=np.random.default_rng(step_seed)))


def ref_noise(rng, n):
    return standard_normal(n, int(rng.integers(2**63)))


def ref_clipped_sum(G, C, mask):
    out = np.zeros(G.shape[1])
    for g in G:
        g = np.where(mask, g, 0.0)
        n = np.linalg.norm(g)
        out += g * (min(1.0, C / n) if n > 0 else 1.0)
    return out


@pytest.fixture(scope="module")
def mlp_setup():
    model = mlp((6, 5, 3))
    params = init_params(model, random_state=0)
    r = np.random.default_rng(1)
    Xp, yp = r.standard_normal((40, 6)), r.integers(0, 3, 40)
    Xb, yb = r.standard_normal((7, 6)), r.integers(0, 3, 7)
    return model, params, public_split(Xp, yp, Xb), backprop(model, params, Xb, yb)


def public_grad_naive(model, params, public):
    X, y = public.X, public.y
    G = materialize(backprop(model, params, X, y))
    return G.mean(axis=0)


def keep_top(v, n_keep):
    keep = np.zeros(v.size, bool)
    keep[np.argsort(-np.abs(v), kind="stable")[:n_keep]] = True
    return keep


# ---------------------------------------------------------------- public freezing / selection
@pytest.mark.parametrize("factory", [public_freeze, public_select])
def test_public_magnitude_mask_matches_naive(mlp_setup, factory):
    model, params, public, bp = mlp_setup
    d = bp.layout.n_params
    ch = chain(factory(0.6), clip(1.0), gaussian_noise(0.7))
    ic, sc = ctxs(bp, 11, model=model, params=params, public=public)
    u, state, m = dpsgd_step(ch, ch.init(ic), sc)
    keep = keep_top(public_grad_naive(model, params, public), d - math.floor(0.6 * d))
    assert np.array_equal(~ch.frozen_mask(state), keep)
    s = ref_clipped_sum(materialize(bp), 1.0, keep)
    s[np.flatnonzero(keep)] += 0.7 * ref_noise(np.random.default_rng(11), keep.sum())
    np.testing.assert_allclose(u, s / 7, rtol=1e-10, atol=1e-12)
    assert np.all(u[~keep] == 0.0)
    assert ch.privacy == chain(clip(1.0), gaussian_noise(0.7)).privacy.__class__(
        True, 0.7, 1.0, chain(clip(1.0), gaussian_noise(0.7)).privacy.event, "", ch.privacy.notes)


@pytest.mark.parametrize("factory", [public_freeze, public_select])
def test_public_mechanism_without_public_split(mlp_setup, factory):
    model, params, _, bp = mlp_setup
    ch = chain(factory(0.5), clip(1.0), gaussian_noise(1.0))
    ic, _ = ctxs(bp, 0, model=model, params=params, public=None)
    with pytest.raises(ValueError, match="public"):
        ch.init(ic)
    # the random criterion needs no public split
    chain(factory(0.5, "random"), clip(1.0), gaussian_noise(1.0)).init(ic)


def test_public_select_random_changes_every_step():
    bp = make_bp((6, 5, 3), 3, 0, zero=True)
    ch = chain(public_select(0.5, "random"), clip(1.0), gaussian_noise(1.0))
    ic, _ = ctxs(bp, 0)
    state = ch.init(ic)
    supports = []
    for t in range(3):
        u, state, _ = dpsgd_step(ch, state, ctxs(bp, 100 + t, step=t)[1])
        supports.append(u != 0)
        assert supports[-1].sum() == bp.layout.n_params - math.floor(0.5 * bp.layout.n_params)
    assert not np.array_equal(supports[0], supports[1])


# ---------------------------------------------------------------- magnitude pruning
def test_prune_init_and_current(mlp_setup):
    model, params, _, bp = mlp_setup
    d = bp.layout.n_params
    keep = keep_top(params, d - math.floor(0.7 * d))
    for src, every in [("init", None), ("current", 2)]:
        ch = chain(magnitude_prune(0.7, src, every=every), clip(1.0), gaussian_noise(1.0))
        ic, sc = ctxs(bp, 3, model=model, params=params)
        u, state, _ = dpsgd_step(ch, ch.init(ic), sc)
        assert np.array_equal(~ch.frozen_mask(state), keep)
        assert np.all(u[~keep] == 0.0) and np.all(u[keep] != 0.0)
    # current: re-applied on the new iterate at step 2
    new_params = params[::-1].copy()
    ic, _ = ctxs(bp, 3, model=model, params=params)
    state = ch.init(ic)
    sc = StepContext(model=model, layout=bp.layout, step=2, epoch=0, params=new_params, bp=bp, expected_batch_size=7.0, rng=np.random.default_rng(0))
    _, state, _ = dpsgd_step(ch, state, sc)
    assert np.array_equal(~ch.frozen_mask(state), keep_top(new_params, d - math.floor(0.7 * d)))


def test_prune_public_pretrains_then_masks(mlp_setup):
    model, params, public, bp = mlp_setup
    d = bp.layout.n_params
    X, y = public.X, public.y
    w = params.copy()
    rng = np.random.default_rng(5)  # the InitContext rng used by ctxs
    for _ in range(2):
        order = rng.permutation(len(X))
        for s in range(0, len(X), 16):
            idx = order[s:s + 16]
            w = w - 0.05 * materialize(backprop(model, w, X[idx], y[idx])).mean(axis=0)
    ch = chain(magnitude_prune(0.5, "public", public_epochs=2, public_lr=0.05, public_batch_size=16),
               clip(1.0), gaussian_noise(1.0))
    ic, _ = ctxs(bp, 0, model=model, params=params, public=public)
    state = ch.init(ic)
    assert np.array_equal(~ch.frozen_mask(state), keep_top(w, d - math.floor(0.5 * d)))
    with pytest.raises(ValueError, match="public"):
        ch.init(ctxs(bp, 0, model=model, params=params, public=None)[0])


def test_pruning_and_selection_descriptions_equal_dense():
    dense = chain(clip(1.0), gaussian_noise(1.3)).privacy
    for t in [magnitude_prune(0.5), magnitude_prune(0.5, "public"), magnitude_prune(0.5, "current", every=3),
              public_freeze(0.5), public_select(0.5), public_select(0.5, "random")]:
        p = chain(t, clip(1.0), gaussian_noise(1.3)).privacy
        assert (p.private, p.noise_multiplier, p.sensitivity, p.event) == \
            (True, dense.noise_multiplier, dense.sensitivity, dense.event)


@pytest.mark.parametrize("build, name", [
    (lambda: magnitude_prune(1.0), "fraction"), (lambda: magnitude_prune(0.5, "oracle"), "source"),
    (lambda: magnitude_prune(0.5, "init", every=2), "every"), (lambda: public_freeze(-0.2), "fraction"),
    (lambda: public_select(0.5, "vibes"), "criterion"), (lambda: topagg(0, 1.0), "k"),
    (lambda: topagg(2, 1.0, beta=1.0), "beta"), (lambda: low_rank(0), "rank"),
    (lambda: low_rank(1, "noise_sideways"), "order"), (lambda: error_feedback(top_k(2), "ef3"), "style"),
    (lambda: error_feedback(top_k(2, "clean")), "compressor"),
])
def test_bad_parameters(build, name):
    with pytest.raises(ValueError, match=name):
        build()


# ---------------------------------------------------------------- TopAgg
def ref_topagg(G, k, sigma, beta, n_teachers, rng):
    votes = np.zeros(G.shape[1])
    for g in G:
        idx = np.argsort(-np.abs(g), kind="stable")[:k]
        votes[idx] += np.where(g[idx] >= 0, 1.0, -1.0)
    noisy = votes + sigma * math.sqrt(k) * ref_noise(rng, G.shape[1])
    return np.where(np.abs(noisy) > beta * n_teachers, np.sign(noisy), 0.0)


@given(B=st.integers(0, 9), seed=st.integers(0, 10**6), k=st.integers(1, 39), beta=st.floats(0, 0.9),
       teacher_size=st.sampled_from([1, 2, 3]))
@settings(max_examples=20)
def test_topagg_matches_naive(B, seed, k, beta, teacher_size):
    bp = make_bp((5, 4, 3), B, seed)
    ch = chain(topagg(k, 0.8, beta, teacher_size=teacher_size, scale=0.5, chunk_size=4),
               allow_non_private=teacher_size > 1)
    ic, sc = ctxs(bp, seed)
    u, _, m = dpsgd_step(ch, ch.init(ic), sc)
    G = materialize(bp) if B else np.zeros((0, 39))
    if teacher_size > 1 and B:
        G = np.array([G[i:i + teacher_size].mean(axis=0) for i in range(0, B, teacher_size)])
    expect = ref_topagg(G, k, 0.8, beta, max(B, 1) / teacher_size, np.random.default_rng(seed))
    np.testing.assert_array_equal(u, 0.5 * expect)
    assert all(math.isfinite(v) for v in m.values())


def test_topagg_votes_have_norm_sqrt_k_and_description():
    bp = make_bp((5, 4, 3), 6, 0)
    for stochastic in (False, True):
        ch = chain(topagg(7, 0.0, stochastic=stochastic, coord_clip=0.5), allow_non_private=True)
        ic, sc = ctxs(bp, 0)
        _, _, m = dpsgd_step(ch, ch.init(ic), sc)
        assert m["noise_sq"] == 0.0
    from sims.mechanisms.topagg import teacher_votes
    V, _ = teacher_votes(materialize(bp), 7, np.random.default_rng(0), stochastic=True, coord_clip=0.1)
    np.testing.assert_array_equal(np.sum(V ** 2, axis=1), 7.0)
    p = chain(topagg(9, 1.5)).privacy
    assert p.private and p.noise_multiplier == 1.5 and p.sensitivity == pytest.approx(3.0)
    assert any("2 sqrt(k)" in n for n in p.notes)
    # micro-batch teachers as slices of the sampled batch have unbounded sensitivity: refused
    with pytest.raises(ValueError, match="teacher_size"):
        chain(topagg(9, 1.5, teacher_size=4))
    p2 = chain(topagg(9, 1.5, teacher_size=4), allow_non_private=True).privacy
    assert not p2.private and "teacher_size" in p2.reason
    with pytest.raises(ValueError, match="aggregate"):
        chain(clip(1.0), topagg(3, 1.0))
    # a mask before an aggregate step would be silently ignored: refused
    with pytest.raises(ValueError, match="aggregate"):
        chain(random_freeze(0.5), topagg(3, 1.0))


def test_topagg_stochastic_sign_probability():
    """P(+1) = 1/2 + g/(2b): with g/b = 0.5 the +1 rate is 0.75. 200000 Bernoulli draws: sd 9.7e-4;
    band +-0.0054 (5.5 sd, normal approximation) -> false-failure probability ~4e-8."""
    G = np.tile(np.array([[0.5, 1.0, -1.0]]), (200000, 1))
    V, _ = __import__("sims.mechanisms.topagg", fromlist=["x"]).teacher_votes(
        G, 1, np.random.default_rng(0), stochastic=True, coord_clip=None)
    # top-1 of |g| with ties between 1.0 and -1.0 picks one of them; b = 1, so P(+1) = 1 on +1.0, 0 on -1.0
    assert np.all(V[:, 0] == 0)
    G2 = np.tile(np.array([[0.5, 1.0]]), (200000, 1))
    V2, _ = __import__("sims.mechanisms.topagg", fromlist=["x"]).teacher_votes(
        G2, 2, np.random.default_rng(1), stochastic=True, coord_clip=None)
    rate = np.mean(V2[:, 0] == 1.0)
    assert abs(rate - 0.75) < 5.5 * math.sqrt(0.75 * 0.25 / 200000)
    assert np.all(V2[:, 1] == 1.0)


# ---------------------------------------------------------------- low rank
def test_low_rank_noise_then_compress_matches_naive():
    bp = make_bp((7, 6, 4), 5, 2)
    lay = bp.layout
    ch = chain(clip(1.0), gaussian_noise(1.0), low_rank(2))
    assert ch.privacy.private
    ic, sc = ctxs(bp, 9)
    state = ch.init(ic)
    Q0 = [np.random.default_rng(5).standard_normal((7, 2)), None]
    r = np.random.default_rng(5)
    Q0 = [r.standard_normal((7, 2)), r.standard_normal((6, 2))]
    u, state, _ = dpsgd_step(ch, state, sc)
    dense = dpsgd_step(chain(clip(1.0), gaussian_noise(1.0)), ((), ()), ctxs(bp, 9)[1])[0]
    for l in range(2):
        M = dense[lay.weight_slice(l)].reshape(lay.sizes[l + 1], lay.sizes[l])
        P, _ = np.linalg.qr(M @ Q0[l])
        approx = P @ (M.T @ P).T
        np.testing.assert_allclose(u[lay.weight_slice(l)].reshape(M.shape), approx, rtol=1e-10, atol=1e-12)
        assert np.linalg.matrix_rank(approx) <= 2
        np.testing.assert_array_equal(u[lay.bias_slice(l)], dense[lay.bias_slice(l)])


def test_compress_then_noise_refused():
    with pytest.raises(ValueError, match=r"step 1 \('low_rank\[compress_then_noise\]'\)"):
        chain(clip(1.0), low_rank(2, "compress_then_noise"), gaussian_noise(1.0))
    assert not chain(clip(1.0), low_rank(2, "compress_then_noise"), gaussian_noise(1.0),
                     allow_non_private=True).privacy.private


# ---------------------------------------------------------------- error feedback
@pytest.mark.parametrize("style", ["ef", "ef21"])
def test_error_feedback_residual_is_function_of_noisy_updates(style):
    """Residual/state of EF equals the EF recursion replayed on the released noisy updates alone."""
    bp = make_bp((6, 5, 3), 4, 3)
    d = bp.layout.n_params
    dense = chain(clip(1.0), gaussian_noise(1.0))
    ef = chain(clip(1.0), gaussian_noise(1.0), error_feedback(top_k(5), style))
    assert ef.privacy.private and ef.privacy.noise_multiplier == 1.0
    ic, _ = ctxs(bp, 0)
    s_ef = ef.init(ic)
    e = np.zeros(d)
    for t in range(5):
        u_noisy, _, _ = dpsgd_step(dense, dense.init(ic), ctxs(bp, 50 + t, step=t)[1])
        out, s_ef, _ = dpsgd_step(ef, s_ef, ctxs(bp, 50 + t, step=t)[1])
        if style == "ef":
            v = e + u_noisy
            y = np.zeros(d)
            idx = np.argsort(-np.abs(v), kind="stable")[:5]
            y[idx] = v[idx]
            e = v - y
            ref_out = y
        else:
            delta = u_noisy - e
            y = np.zeros(d)
            idx = np.argsort(-np.abs(delta), kind="stable")[:5]
            y[idx] = delta[idx]
            e = e + y
            ref_out = e
        np.testing.assert_array_equal(out, ref_out)
        np.testing.assert_array_equal(s_ef[-1]["e"], e)


def test_error_feedback_must_follow_noise():
    with pytest.raises(ValueError):
        chain(clip(1.0), error_feedback(top_k(3)), gaussian_noise(1.0))
