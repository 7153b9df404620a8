"""sims.mechanisms: chain, clip, gaussian_noise, random-k, random freeze, top-k.

Fast paths are compared with naive references written here (materialised per-example gradients,
explicit loops and masks). Noise is reproduced by replaying the documented seed rule
(``seed = int(rng.integers(2**63))`` then ``sims.noise.standard_normal``), so equalities include noise.
"""
import math

import numpy as np

from sims.step import dpsgd_step
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats

from sims.mechanisms import (InitContext, StepContext, chain, clip, gaussian_noise, random_freeze,
                             frozen_fraction, random_k, top_k)
from sims.models import Backprop, Layout, materialize
from sims.noise import standard_normal


# ---------------------------------------------------------------- helpers
def make_bp(sizes, B, seed, zero=False, dtype=np.float64):
    lay = Layout(tuple(sizes))
    r = np.random.default_rng(seed)
    f = 0.0 if zero else 1.0
    acts = tuple((r.standard_normal((B, sizes[l])) * f).astype(dtype) for l in range(len(sizes) - 1))
    deltas = tuple((r.standard_normal((B, sizes[l + 1])) * f).astype(dtype) for l in range(len(sizes) - 1))
    return Backprop(lay, acts, deltas, np.zeros(B, dtype=dtype))


def contexts(bp, step_seed, *, epoch=0, step=0, total_steps=10, spe=5, public=None, model=None, params=None,
             init_seed=123):
    lay = bp.layout
    p = np.zeros(lay.n_params, dtype=bp.losses.dtype) if params is None else params
    B = max(bp.batch_size, 1)
    ic = InitContext(model=model, layout=lay, params=p, total_steps=total_steps, steps_per_epoch=spe, expected_batch_size=float(B), public=public, rng=np.random.default_rng(init_seed))
    sc = StepContext(model=model, layout=lay, step=step, epoch=epoch, params=p, bp=bp, expected_batch_size=float(B), public=public, rng=np.random.default_rng(step_seed))
    return ic, sc


def run(ch, bp, step_seed=7, **kw):
    ic, sc = contexts(bp, step_seed, **kw)
    state = ch.init(ic)
    u, state, m = dpsgd_step(ch, state, sc)
    return u, state, m


def mat(bp):
    """materialize(), with B = 0 handled here (sims.models.materialize cannot reshape an empty batch)."""
    if bp.batch_size == 0:
        return np.zeros((0, bp.layout.n_params))
    return materialize(bp)


def ref_clipped_sum(G, C, mask=None, post_mask=None):
    """Naive: loop over examples, mask, flat clip, sum, then optional post-mask."""
    total = np.zeros(G.shape[1])
    for g in G:
        g = g.copy()
        if mask is not None:
            g[~mask] = 0
        n = np.linalg.norm(g)
        total += g * (min(1.0, C / n) if n > 0 else 1.0)
    if post_mask is not None:
        total[~post_mask] = 0
    return total


def ref_noise(rng, n):
    return standard_normal(n, int(rng.integers(2**63)))


sizes_st = st.lists(st.integers(1, 5), min_size=2, max_size=4)


# ---------------------------------------------------------------- dense DP-SGD
@given(sizes=sizes_st, B=st.integers(0, 7), C=st.floats(0.1, 5.0), sigma=st.floats(0.0, 3.0),
       seed=st.integers(0, 10**6))
def test_dense_chain_matches_naive(sizes, B, C, sigma, seed):
    bp = make_bp(sizes, B, seed)
    ch = chain(clip(C), gaussian_noise(sigma), allow_non_private=True)
    u, _, m = run(ch, bp, step_seed=seed)
    Bexp = max(B, 1)
    G = mat(bp)
    expect = ref_clipped_sum(G, C)
    rng = np.random.default_rng(seed)
    if sigma > 0:
        expect = expect + sigma * C * ref_noise(rng, bp.layout.n_params)
    np.testing.assert_allclose(u, expect / Bexp, rtol=1e-10, atol=1e-12)
    assert all(math.isfinite(v) for v in m.values())
    norms = np.linalg.norm(G, axis=1)
    assert m["clipped_fraction"] == pytest.approx(float(np.mean(norms > C)) if B else 0.0)


@given(sizes=sizes_st, B=st.integers(1, 6), seed=st.integers(0, 10**6))
def test_per_layer_clip_matches_naive(sizes, B, seed):
    bp = make_bp(sizes, B, seed)
    C = 1.0
    ch = chain(clip(C, per_layer=True), gaussian_noise(0.0), allow_non_private=True)
    u, _, _ = run(ch, bp)
    G = mat(bp)
    L = bp.layout.n_layers
    expect = np.zeros(bp.layout.n_params)
    for g in G:
        for l in range(L):
            sl = bp.layout.layer_slice(l)
            n = np.linalg.norm(g[sl])
            cl = C / math.sqrt(L)
            expect[sl] += g[sl] * (min(1.0, cl / n) if n > 0 else 1.0)
    np.testing.assert_allclose(u, expect / B, rtol=1e-10, atol=1e-12)


def test_same_seed_same_bits_float32():
    bp = make_bp((6, 5, 3), 8, 1, dtype=np.float32)
    ch = chain(random_freeze(0.5, "constant"), clip(1.0), gaussian_noise(1.3))
    u1, _, m1 = run(ch, bp, step_seed=3)
    u2, _, m2 = run(ch, bp, step_seed=3)
    assert u1.dtype == np.float32 and u1.tobytes() == u2.tobytes() and m1 == m2


# ---------------------------------------------------------------- random-k
@pytest.mark.parametrize("order", ["mask_then_clip", "clip_then_mask"])
@given(sizes=sizes_st, B=st.integers(0, 6), seed=st.integers(0, 10**6), data=st.data())
@settings(max_examples=15)
def test_random_k_matches_naive(order, sizes, B, seed, data):
    bp = make_bp(sizes, B, seed)
    d = bp.layout.n_params
    k = data.draw(st.integers(1, d))
    rescale = data.draw(st.booleans())
    C, sigma = 0.7, 1.1
    ch = chain(random_k(k, order, rescale=rescale), clip(C), gaussian_noise(sigma)) if order == "mask_then_clip" \
        else chain(clip(C), random_k(k, order, rescale=rescale), gaussian_noise(sigma))
    u, _, m = run(ch, bp, step_seed=seed)
    rng = np.random.default_rng(seed)
    keep = np.zeros(d, bool)
    keep[rng.choice(d, size=k, replace=False)] = True
    G = mat(bp)
    s = ref_clipped_sum(G, C, mask=keep) if order == "mask_then_clip" else ref_clipped_sum(G, C, post_mask=keep)
    s[np.flatnonzero(keep)] += sigma * C * ref_noise(rng, k)
    expect = s / max(B, 1) * (d / k if rescale else 1.0)
    np.testing.assert_allclose(u, expect, rtol=1e-10, atol=1e-12)
    assert np.all(u[~keep] == 0.0)
    assert m["kept_fraction"] == pytest.approx(k / d)


def test_random_k_layerwise_counts():
    bp = make_bp((6, 5, 4), 3, 2, zero=True)
    u, _, m = run(chain(random_k(3, "mask_then_clip", layerwise=True), clip(1.0), gaussian_noise(1.0)), bp)
    for l in range(bp.layout.n_layers):
        assert np.count_nonzero(u[bp.layout.layer_slice(l)]) == 3


# ---------------------------------------------------------------- noise support and energy
NOISE_CHAINS = {
    "dense": lambda d: (chain(clip(1.0), gaussian_noise(2.0)), None),
    "random_k": lambda d: (chain(random_k(d // 3, "mask_then_clip"), clip(1.0), gaussian_noise(2.0)), d // 3),
    "freeze": lambda d: (chain(random_freeze(0.75, "constant"), clip(1.0), gaussian_noise(2.0)), d - int(0.75 * d)),
}


@pytest.mark.parametrize("name", sorted(NOISE_CHAINS))
def test_noise_support_is_declared_and_energy_chi_square(name):
    """With zero gradients the update is pure noise: support = kept set, ||B u / s||^2 ~ chi2(k).

    20 independent steps are summed: chi2(20 k). Accepted band: the exact chi-square quantiles at
    5e-8 and 1 - 5e-8, so the false-failure probability is 1e-7 per parametrisation.
    """
    bp = make_bp((30, 20, 10), 4, 0, zero=True)
    d = bp.layout.n_params
    ch, k = NOISE_CHAINS[name](d)
    k = d if k is None else k
    std = 2.0 * 1.0
    total = 0.0
    for t in range(20):
        ic, sc = contexts(bp, 1000 + t, init_seed=t)
        state = ch.init(ic)
        u, state, m = dpsgd_step(ch, state, sc)
        fm = ch.frozen_mask(state)
        nz = u != 0
        assert nz.sum() == k
        if fm is not None:
            assert np.array_equal(nz, ~fm)
        assert m["noise_sq"] == pytest.approx(float(np.sum(u.astype(np.float64) ** 2)), rel=1e-9)
        total += float(np.sum((u * 4.0 / std) ** 2))
    lo, hi = stats.chi2.ppf([5e-8, 1 - 5e-8], 20 * k)
    assert lo < total < hi


# ---------------------------------------------------------------- random freeze
def test_frozen_fraction_ramps():
    assert [frozen_fraction(0.9, e, 4) for e in range(4)] == pytest.approx([0.0, 0.3, 0.6, 0.9])
    assert [frozen_fraction(0.9, e, 4, "step") for e in range(4)] == [0.0, 0.0, 0.9, 0.9]
    assert frozen_fraction(0.8, 2, 5, "cosine") == pytest.approx(0.4)
    assert frozen_fraction(0.5, 0, 1) == 0.5


@given(B=st.integers(1, 6), seed=st.integers(0, 10**6), r=st.floats(0.0, 0.95))
@settings(max_examples=15)
def test_freeze_matches_naive_mask_then_clip(B, seed, r):
    bp = make_bp((5, 4, 3), B, seed)
    ch = chain(random_freeze(r, "constant"), clip(0.5), gaussian_noise(0.0), allow_non_private=True)
    ic, sc = contexts(bp, seed)
    state = ch.init(ic)
    frozen = ch.frozen_mask(state).copy()
    assert frozen.sum() == math.floor(r * bp.layout.n_params)
    u, state, _ = dpsgd_step(ch, state, sc)
    expect = ref_clipped_sum(mat(bp), 0.5, mask=~frozen) / B
    np.testing.assert_allclose(u, expect, rtol=1e-10, atol=1e-12)
    assert np.all(u[frozen] == 0.0)


def test_freeze_redraw_schedule():
    bp = make_bp((8, 6, 4), 2, 0)
    d = bp.layout.n_params
    for refresh, steps_same, steps_new in [(None, (0, 1, 2), 5), (2, (0, 1), 2)]:
        ch = chain(random_freeze(0.5, "linear", refresh=refresh), clip(1.0), gaussian_noise(1.0))
        ic, _ = contexts(bp, 0, total_steps=20, spe=5)
        state = ch.init(ic)
        assert ch.frozen_mask(state).sum() == 0  # epoch 0 of a linear ramp
        masks = {}
        for step in range(6):
            _, sc = contexts(bp, step, step=step, epoch=step // 5)
            _, state, _ = dpsgd_step(ch, state, sc)
            masks[step] = ch.frozen_mask(state).copy()
        assert all(np.array_equal(masks[s], masks[steps_same[0]]) for s in steps_same)
        assert not np.array_equal(masks[steps_new], masks[steps_same[0]]) or refresh is not None
    # epoch 1 of 4 with r_final 0.9 -> 0.3 frozen
    ch = chain(random_freeze(0.9), clip(1.0), gaussian_noise(1.0))
    ic, sc = contexts(bp, 1, step=5, epoch=1, total_steps=20, spe=5)
    _, state, m = dpsgd_step(ch, ch.init(ic), sc)
    assert ch.frozen_mask(state).sum() == math.floor(0.3 * d)
    assert m["kept_fraction"] == pytest.approx(1 - math.floor(0.3 * d) / d)


def test_freeze_with_nothing_frozen_is_the_dense_step_bit_for_bit():
    """At a frozen fraction of 0 (the first epochs of a ramp) the step takes the dense path: the
    same release as chain(clip, gaussian_noise), bit for bit, and kept_fraction 1."""
    bp = make_bp((8, 6, 4), 5, 1)
    outs = []
    for ch in (chain(random_freeze(0.0, "constant"), clip(0.5), gaussian_noise(1.0)), chain(clip(0.5), gaussian_noise(1.0))):
        ic, sc = contexts(bp, 7)
        u, _, m = dpsgd_step(ch, ch.init(ic), sc)
        outs.append((u, m))
    assert np.array_equal(outs[0][0], outs[1][0])
    assert outs[0][1]["kept_fraction"] == 1.0


# ---------------------------------------------------------------- top-k
def ref_topk_row(g, k):
    out = np.zeros_like(g)
    idx = np.argsort(-np.abs(g), kind="stable")[:k]
    out[idx] = g[idx]
    return out


@given(sizes=sizes_st, B=st.integers(0, 9), seed=st.integers(0, 10**6), data=st.data())
@settings(max_examples=15)
def test_per_example_top_k_matches_naive(sizes, B, seed, data):
    bp = make_bp(sizes, B, seed)
    d = bp.layout.n_params
    k = data.draw(st.integers(1, d))
    C, sigma = 0.8, 0.9
    ch = chain(top_k(k, "per_example", chunk_size=4), clip(C), gaussian_noise(sigma))
    u, _, m = run(ch, bp, step_seed=seed)
    G = mat(bp)
    S = np.array([ref_topk_row(g, k) for g in G]).reshape(B, d)
    s = ref_clipped_sum(S, C) + sigma * C * ref_noise(np.random.default_rng(seed), d)
    np.testing.assert_allclose(u, s / max(B, 1), rtol=1e-10, atol=1e-12)
    if B:
        phi = np.mean([np.sum(r ** 2) / np.sum(g ** 2) for r, g in zip(S, G)])
        assert m["phi"] == pytest.approx(phi)


def test_per_example_top_k_noise_on_all_coordinates():
    bp = make_bp((6, 5, 3), 4, 0, zero=True)
    u, _, _ = run(chain(top_k(2, "per_example"), clip(1.0), gaussian_noise(1.0)), bp)
    assert np.all(u != 0)


@given(seed=st.integers(0, 10**6), k=st.integers(1, 39), layerwise=st.booleans())
@settings(max_examples=15)
def test_noisy_top_k_is_top_k_of_dense_update(seed, k, layerwise):
    bp = make_bp((5, 4, 3), 5, seed)
    if layerwise:
        k = min(k, 15)
    dense, _, _ = run(chain(clip(1.0), gaussian_noise(1.0)), bp, step_seed=seed)
    u, _, m = run(chain(clip(1.0), gaussian_noise(1.0), top_k(k, layerwise=layerwise)), bp, step_seed=seed)
    blocks = [bp.layout.layer_slice(l) for l in range(2)] if layerwise else [slice(0, 39)]
    expect = np.concatenate([ref_topk_row(dense[b], k) for b in blocks])
    np.testing.assert_array_equal(u, expect)
    assert m["phi"] == pytest.approx(np.sum(expect ** 2) / np.sum(dense ** 2))


def test_clean_top_k_refused_and_noise_on_support_only():
    with pytest.raises(ValueError, match=r"step 1 \('top_k\[clean\]'\).*private"):
        chain(clip(1.0), top_k(3, "clean"), gaussian_noise(1.0))
    ch = chain(clip(1.0), top_k(3, "clean"), gaussian_noise(1.0), allow_non_private=True)
    assert not ch.privacy.private and "top_k[clean]" in ch.privacy.reason
    bp = make_bp((5, 4, 3), 5, 0)
    u, _, _ = run(ch, bp)
    clean = ref_clipped_sum(mat(bp), 1.0)
    assert set(np.flatnonzero(u)) == set(np.argsort(-np.abs(clean))[:3])


# ---------------------------------------------------------------- privacy descriptions and refusals
def test_private_descriptions_equal_dense():
    dense = chain(clip(1.5), gaussian_noise(1.2)).privacy
    assert dense.private and dense.noise_multiplier == 1.2 and dense.sensitivity == 1.5
    for ch in [chain(random_k(3, "mask_then_clip"), clip(1.5), gaussian_noise(1.2)),
               chain(clip(1.5), random_k(3), gaussian_noise(1.2)),
               chain(random_freeze(0.9), clip(1.5), gaussian_noise(1.2)),
               chain(top_k(3, "per_example"), clip(1.5), gaussian_noise(1.2)),
               chain(clip(1.5), gaussian_noise(1.2), top_k(3))]:
        p = ch.privacy
        assert (p.private, p.noise_multiplier, p.sensitivity, p.event) == \
            (dense.private, dense.noise_multiplier, dense.sensitivity, dense.event)


@pytest.mark.parametrize("build, match", [
    (lambda: chain(gaussian_noise(1.0), clip(1.0)), "step 1"),
    (lambda: chain(clip(1.0), gaussian_noise(1.0), gaussian_noise(1.0)), "at most one noise"),
    (lambda: chain(gaussian_noise(1.0)), "exactly one clip"),
    (lambda: chain(clip(1.0), random_k(2, "mask_then_clip"), gaussian_noise(1.0)), "step 1"),
    (lambda: chain(clip(None), gaussian_noise(1.0)), "clip_norm=None"),
    (lambda: chain(clip(1.0), gaussian_noise(0.0)), "noise_multiplier is 0"),
    (lambda: chain(clip(1.0)), "no noise"),
])
def test_bad_chains_refused(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_non_private_audit_chain():
    p = chain(clip(None), gaussian_noise(1.0), allow_non_private=True).privacy
    assert not p.private and "clip_norm=None" in p.reason


@pytest.mark.parametrize("build, name", [
    (lambda: random_k(0), "k"), (lambda: random_k(2, "sideways"), "order"),
    (lambda: random_freeze(1.0), "r_final"), (lambda: random_freeze(-0.1), "r_final"),
    (lambda: random_freeze(0.5, "zigzag"), "ramp"), (lambda: random_freeze(0.5, refresh=0), "refresh"),
    (lambda: top_k(0), "k"), (lambda: top_k(2, "psychic"), "mode"),
    (lambda: clip(0.0), "clip_norm"), (lambda: gaussian_noise(-1.0), "noise_multiplier"),
])
def test_bad_parameters(build, name):
    with pytest.raises(ValueError, match=name):
        build()


@pytest.mark.parametrize("t", [random_k(40), top_k(40), random_k(16, layerwise=True)])
def test_k_larger_than_d_rejected_at_init(t):
    bp = make_bp((5, 4, 3), 2, 0)  # d = 39, layers 24 and 15
    ch = chain(t, clip(1.0), gaussian_noise(1.0)) if t.effect.stage == "pre_clip" else \
        chain(clip(1.0), gaussian_noise(1.0), t) if t.effect.stage == "post_noise" else \
        chain(clip(1.0), t, gaussian_noise(1.0))
    ic, _ = contexts(bp, 0)
    with pytest.raises(ValueError, match="k must be an integer in"):
        ch.init(ic)


@pytest.mark.parametrize("rescale", [False, True])
def test_nsr_metric_is_scale_free(rescale):
    """The reported NSR is noise energy over signal energy of the released update: a d/k rescaling
    multiplies both by (d/k)^2, so the metric must equal noise_sq / signal_sq_after_mask either way."""
    bp = make_bp((6, 5, 3), 16, seed=3)
    from sims.mechanisms import random_k
    _, _, m = run(chain(clip(0.5), random_k(7, rescale=rescale), gaussian_noise(1.3)), bp)
    assert m["nsr"] > 0
    assert m["nsr"] == pytest.approx(m["noise_sq"] / m["signal_sq_after_mask"], rel=1e-12)
