"""sims.stacked: stacked DP-SGD runs equal the single train() runs of the same seeds (issue 11 item 1).

Every Numba kernel of the package is compared with its plain-NumPy reference; the stacked model
functions with ``sims.models``; whole runs with ``sims.train.train`` (1e-10 relative, float64).
Fixed seeds throughout; no timing is asserted.
"""
import dataclasses

import numpy as np
import pytest

from sims.data import load_digits, make_linear, make_logistic, make_mixture, scale_features
from sims.models import backprop, evaluate, init_params, linear_regression, logistic_regression, mlp, softmax_regression
from sims.models.pergrad import sq_norms, weighted_sum
from sims.rng import derive_seed
from sims.stacked import STEP_METRICS, StackedRunResult, chain_for, train_stacked
from sims.stacked import engine as E
from sims.stacked import kernels as K
from sims.stacked import streams as S
from sims.train import TrainingDiverged, step_generators, train

RTOL = 1e-10


@pytest.fixture(scope="module")
def digits():
    ds = scale_features(load_digits(random_state=0), 1 / 16)
    return ds


# ----------------------------------------------------------------------------- streams
@pytest.mark.parametrize("seed", [0, 7, 2 ** 40 + 3])
def test_run_states_equal_numpy_pcg64(seed):
    root = np.random.SeedSequence(seed)
    assert np.array_equal(S.run_states(root, 12), S.run_states_reference(root, 12))
    assert np.array_equal(S.run_states(root, 12, start=5), S.run_states_reference(root, 12)[5:])


def _states(step, R=6):
    return np.stack([S.run_states(np.random.SeedSequence(s), step + 1, step)[0] for s in range(R)])


def test_poisson_draws_equal_numpy_generator():
    st = _states(3)
    q = np.linspace(0.01, 0.5, st.shape[0])
    idx, counts = S.poisson_draws(st[:, 0], q, 500)
    ridx, rcounts = S.poisson_draws_reference(st[:, 0], q, 500)
    assert np.array_equal(counts, rcounts)
    for r, c in enumerate(counts):
        assert np.array_equal(idx[r, :c], ridx[r, :c])


def test_noise_seeds_equal_derive_seed_of_train_streams():
    st = _states(4)
    seeds = S.noise_seeds(st[:, 1])
    assert np.array_equal(seeds, S.noise_seeds_reference(st[:, 1]))
    for s in range(st.shape[0]):
        assert int(seeds[s]) == derive_seed(step_generators(np.random.SeedSequence(s), 4)[1])


# ----------------------------------------------------------------------------- kernels vs references
def test_gather_batches_matches_reference():
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((40, 3)), rng.integers(0, 4, 40).astype(np.int64)
    counts = np.array([5, 0, 9])
    idx = np.zeros((3, 40), dtype=np.int64)
    for r, c in enumerate(counts):
        idx[r, :c] = np.sort(rng.choice(40, c, replace=False))
    for a, b in zip(K.gather_batches(X, y, idx, counts), K.gather_batches_reference(X, y, idx, counts)):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("masked", [False, True])
def test_noisy_releases_match_reference(masked):
    rng = np.random.default_rng(2)
    s = rng.standard_normal((4, 300))
    keep = rng.random((4, 300)) < 0.3 if masked else None
    seeds = np.array([1, 2, 3, 2 ** 62], dtype=np.uint64)
    std, fac = np.array([1.0, 0.5, 2.0, 3.0]), np.full(4, 1 / 64)
    u, sig, nz = K.noisy_releases(s, keep, seeds, std, fac)
    ru, rsig, rnz = K.noisy_releases_reference(s, keep, seeds, std, fac)
    assert np.array_equal(u, ru)
    np.testing.assert_allclose(sig, rsig, rtol=1e-13)
    np.testing.assert_allclose(nz, rnz, rtol=1e-13)


def test_top_k_rows_match_reference():
    rng = np.random.default_rng(3)
    u = rng.standard_normal((5, 200))
    k = np.array([1, 10, 100, 199, 200])
    a, b = u.copy(), u.copy()
    phi = K.top_k_rows(a, k)
    rphi = K.top_k_rows_reference(b, k)
    assert np.array_equal(a, b)
    np.testing.assert_allclose(phi, rphi, rtol=1e-13)


def test_top_k_ties_keep_exactly_k_lowest_indices_in_both_engines():
    """Tied magnitudes at the k-th largest: both engines keep exactly k, the lowest indices among
    the ties (the kernel, its reference, and top_k_mask of train()'s top_k stage)."""
    from sims.mechanisms._util import top_k_mask

    u = np.array([[0.5, -2.0, 2.0, 0.5, -0.5, 2.0, 0.5, 0.0],
                  [1.0, 1.0, -1.0, 1.0, 1.0, -1.0, 1.0, 1.0],
                  [0.0] * 8])
    k = np.array([4, 3, 2])
    want = [[0, 1, 2, 5], [0, 1, 2], [0, 1]]
    a, b = u.copy(), u.copy()
    K.top_k_rows(a, k)
    K.top_k_rows_reference(b, k)
    layout = linear_regression(7).layout
    assert layout.n_params == 8
    for r in range(3):
        keep = np.zeros(8, dtype=bool)
        keep[want[r]] = True
        assert np.array_equal(top_k_mask(u[r], int(k[r]), layout, False), keep)
        assert np.array_equal(a[r], np.where(keep, u[r], 0.0)) and np.array_equal(b[r], a[r])


def test_top_k_keeps_nan_as_the_largest_in_both_engines():
    """A NaN coordinate is kept (never silently zeroed), so a non-finite update stays non-finite."""
    from sims.mechanisms._util import top_k_mask

    u = np.array([[np.nan, 1.0, 2.0, -0.5, 0.0, 3.0, 0.25, 1.5]])
    a, b = u.copy(), u.copy()
    K.top_k_rows(a, np.array([2]))
    K.top_k_rows_reference(b, np.array([2]))
    keep = top_k_mask(u[0], 2, linear_regression(7).layout, False)
    assert np.flatnonzero(keep).tolist() == [0, 5]
    assert np.isnan(a[0, 0]) and np.isnan(b[0, 0]) and a[0, 5] == b[0, 5] == 3.0
    assert np.count_nonzero(a[0, 1:] != 0) == 1 and np.count_nonzero(b[0, 1:] != 0) == 1


def test_topagg_refuses_feedback_and_reference_norm():
    model, ds = mlp((6, 5, 3)), _data("mixture")
    base = dict(seeds=[0], epochs=1, batch_size=24, mechanism="topagg", k=3, clip_norm=None)
    with pytest.raises(ValueError, match="feedback is an argument of mechanism in"):
        train_stacked(model, ds, feedback="ef", **base)
    with pytest.raises(ValueError, match="reference_norm belongs to the noise-only ablation"):
        train_stacked(model, ds, reference_norm=50.0, **base)


def test_clean_top_k_with_tied_gradients_equals_train():
    """Softmax regression starts at zero parameters, so the first clean sums tie exactly."""
    model, ds = softmax_regression(6, 3), make_mixture(300, 6, 3, random_state=5)
    kw = dict(lr=1.0, sampling_rate=0.004, steps=3)
    a = train_stacked(model, ds, seeds=[2], mechanism="top_k_clean", k=3, clip_norm=2.0, noise_multiplier=None,
                      allow_non_private=True, **kw)[0]
    b = train(model, ds, mechanism=chain_for("top_k_clean", 2.0, None, k=3), random_state=2, **kw)
    assert np.array_equal(a.params, b.params)


def test_norm_quantiles_match_reference():
    rng = np.random.default_rng(4)
    norms = rng.random((4, 30))
    counts = np.array([30, 1, 0, 7])
    np.testing.assert_allclose(K.norm_quantiles(norms, counts), K.norm_quantiles_reference(norms, counts),
                               rtol=1e-15, atol=0)


# ----------------------------------------------------------------------------- engine vs sims.models
MODELS = {
    "mlp_relu": (lambda: mlp((6, 5, 4, 3)), "mixture"),
    "mlp_tanh": (lambda: mlp((6, 5, 3), activation="tanh"), "mixture"),
    "softmax": (lambda: softmax_regression(6, 3), "mixture"),
    "logistic": (lambda: logistic_regression(6), "logistic"),
    "linear": (lambda: linear_regression(6), "linear"),
}


def _data(kind, n=240):
    if kind == "mixture":
        return make_mixture(n, 6, 3, random_state=5)
    if kind == "logistic":
        return make_logistic(n, 6, random_state=5)
    return make_linear(n, 6, random_state=5)


def _stacked_params(model, R):
    rng = np.random.default_rng(6)
    P = np.stack([init_params(model, s) for s in range(R)])
    return P + 0.3 * rng.standard_normal(P.shape)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_stacked_backprop_norms_and_sums_match_models(name):
    make, kind = MODELS[name]
    model, ds = make(), _data(kind)
    R, B = 3, 9
    P = _stacked_params(model, R)
    counts = np.array([9, 4, 0])
    idx = np.zeros((R, B), dtype=np.int64)
    for r in range(R):
        idx[r, :counts[r]] = np.arange(counts[r]) * 3 + r
    xb, yb, valid = K.gather_batches(ds.X_train, ds.y_train, idx, counts)
    acts, deltas = E.backprop_stacked(model, P, xb, yb, valid)
    nsq = E.sq_norms_stacked(model.layout, acts, deltas)
    keep = np.random.default_rng(7).random((R, model.n_params)) < 0.5
    mnsq = E.masked_sq_norms_stacked(model.layout, acts, deltas, model.layout.views(keep.astype(float)))
    w = np.random.default_rng(8).random((R, B)) * valid
    Ssum = E.weighted_sum_stacked(model.layout, acts, deltas, w)
    for r in range(R):
        c = counts[r]
        bp = backprop(model, P[r], xb[r, :c], yb[r, :c])
        for l in range(model.layout.n_layers):
            np.testing.assert_allclose(deltas[l][r, :c], bp.deltas[l], rtol=1e-13, atol=1e-15)
            assert not deltas[l][r, c:].any()
        np.testing.assert_allclose(nsq[r, :c], sq_norms(bp), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(mnsq[r, :c], sq_norms(bp, keep[r]), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(Ssum[r], weighted_sum(bp, w[r, :c]), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("make,kind", [(lambda: logistic_regression(6), "logistic"), (lambda: linear_regression(6), "linear"),
                                       (lambda: logistic_regression(6, bias=False), "logistic")],
                         ids=["logistic", "linear", "logistic_no_bias"])
def test_convex_clipped_sums_match_the_gemm_path(make, kind, masked):
    """The one-pass kernel of linear / logistic regression against the engine's GEMM path (its
    NumPy reference): the same clipped sums, per-example norms and clipped counts."""
    model, ds = make(), _data(kind)
    R, n, d = 5, ds.X_train.shape[0], model.n_params
    rng = np.random.default_rng(3)
    P = _stacked_params(model, R) * 3.0
    counts = rng.integers(0, 30, size=R)
    counts[0] = 0  # an empty batch
    idx = np.stack([np.sort(rng.choice(n, size=30, replace=False)) for _ in range(R)])
    C = np.array([0.5, 1.0, np.inf, 0.05, 2.0])
    keep = rng.random((R, d)) < 0.6 if masked else None
    X = np.ascontiguousarray(ds.X_train)
    S, nc, norms = K.convex_clipped_sums(X, np.einsum("ij,ij->i", X, X), ds.y_train, idx, counts, P, C, keep,
                                         bias=model.layout.bias, head=model.head)
    xb, yb, valid = K.gather_batches(X, ds.y_train, idx, counts, 30)
    acts, deltas = E.backprop_stacked(model, P, xb, yb, valid)
    nsq = (E.sq_norms_stacked(model.layout, acts, deltas) if keep is None
           else E.masked_sq_norms_stacked(model.layout, acts, deltas, model.layout.views(keep.astype(float))))
    w, ref_norms = E.clip_factors_stacked(nsq, C)
    ref_S = E.weighted_sum_stacked(model.layout, acts, deltas, w)
    for r in range(R):
        c = int(counts[r])
        np.testing.assert_allclose(S[r], ref_S[r], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(norms[r, :c], ref_norms[r, :c], rtol=1e-12, atol=1e-14)
        assert nc[r] == np.count_nonzero(ref_norms[r, :c] > C[r])
    assert np.all(S[0] == 0) and nc[0] == 0 and nc[2] == 0 and nc[3] > 0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_evaluate_stacked_matches_models(name):
    make, kind = MODELS[name]
    model, ds = make(), _data(kind)
    P = _stacked_params(model, 3)
    loss, acc = E.evaluate_stacked(model, P, ds.X_train, ds.y_train, rows=50, max_elements=200)  # row chunks and run groups
    for r in range(3):
        ref = evaluate(model, P[r], ds.X_train, ds.y_train)
        np.testing.assert_allclose([loss[r], acc[r]], [ref["loss"], ref["accuracy"]], rtol=1e-12)


def test_evaluate_stacked_flags_overflow():
    model, ds = mlp((6, 5, 3)), _data("mixture")
    P = _stacked_params(model, 2)
    P[1] *= 1e200
    loss, acc = E.evaluate_stacked(model, P, ds.X_train, ds.y_train)
    assert np.isfinite(loss[0]) and loss[1] == np.inf and np.isnan(acc[1])


# ----------------------------------------------------------------------------- whole runs vs train()
def _assert_run_equal(res, ref):
    assert isinstance(res, StackedRunResult) and res.diverged_step is None
    assert res.steps_done == ref.steps_done
    scale = max(np.max(np.abs(ref.params)), 1e-300)
    assert np.max(np.abs(res.params - ref.params)) <= RTOL * scale
    missing = set(res.history) ^ set(ref.history)
    assert not missing, missing
    for key, col in ref.history.items():
        np.testing.assert_allclose(res.history[key], col, rtol=RTOL, atol=1e-300, err_msg=key)
    assert res.privacy["epsilon"] == ref.privacy["epsilon"]
    assert res.privacy["noise_multiplier"] == ref.privacy["noise_multiplier"]


CHAINS = [("dense", {}), ("random_freeze", {"r_final": [0.9, 0.5, 0.7]}), ("top_k_noisy", {"k": "by_d"}),
          ("random_k", {"k": "by_d", "order": "clip_then_mask"}), ("random_k", {"k": "by_d", "order": "mask_then_clip"}),
          ("low_rank", {"rank": 1}), ("low_rank", {"rank": 2, "order": "noise_then_compress"}),
          ("top_k_per_example", {"k": "by_d"}),
          ("private_top_k", {"k": "by_d", "options": {"selection_epsilon": 0.5}})]


def _per_run(kw, r):
    return {k: (v[r] if isinstance(v, list) else v) for k, v in kw.items()}


@pytest.mark.parametrize("mechanism,kw", CHAINS, ids=[c[0] + c[1].get("order", "") + str(c[1].get("rank", ""))
                                                      for c in CHAINS])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_stacked_runs_equal_train(name, mechanism, kw):
    make, kind = MODELS[name]
    model, ds = make(), _data(kind)
    d = model.n_params
    if kw.get("k") == "by_d":
        kw = {**kw, "k": [max(1, d // 4), 1, d - 1]}
    seeds, lrs, C, sigma = [0, 11, 5], [0.5, 0.2, 1.0], [1.0, 0.5, 2.0], [1.0, 2.0, 0.7]
    common = dict(epochs=3, batch_size=24, record_every=4)
    out = train_stacked(model, ds, seeds=seeds, lr=lrs, clip_norm=C, noise_multiplier=sigma, mechanism=mechanism,
                        **kw, **common)
    for r, seed in enumerate(seeds):
        kr = _per_run(kw, r)
        ch = chain_for(mechanism, C[r], sigma[r], r_final=kr.get("r_final"), k=kr.get("k"), order=kr.get("order"),
                       rank=kr.get("rank"), options=kr.get("options"))
        ref = train(model, ds, mechanism=ch, lr=lrs[r], random_state=seed, **common)
        _assert_run_equal(out[r], ref)
        assert out[r].privacy["event"] == ref.privacy["event"]


NON_PRIVATE = [("dense", {}, None), ("dense", {}, [1.0, 0.5, 2.0]), ("top_k_clean", {"k": "by_d"}, None),
               ("random_k", {"k": "by_d"}, None), ("random_k", {"k": "by_d", "order": "mask_then_clip"}, [1.0, 0.5, 2.0]),
               ("random_freeze", {"r_final": [0.9, 0.5, 0.7]}, None), ("low_rank", {"rank": 2}, None),
               ("low_rank", {"rank": 1, "order": "compress_then_noise"}, [1.0, 0.5, 2.0]),
               ("top_k_per_example", {"k": "by_d"}, [1.0, 0.5, 2.0])]


@pytest.mark.parametrize("mechanism,kw,C", NON_PRIVATE,
                         ids=[f"{m}{kw.get('order', '')}{kw.get('rank', '')}-{'sgd' if C is None else 'clip'}"
                              for m, kw, C in NON_PRIVATE])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_non_private_baselines_equal_train(name, mechanism, kw, C):
    """No noise step (and no clipping with C None): plain minibatch SGD, clipping only, clean top-k,
    random-k and random freeze without noise, as train() runs the same non-private chains."""
    make, kind = MODELS[name]
    model, ds = make(), _data(kind)
    d = model.n_params
    if kw.get("k") == "by_d":
        kw = {**kw, "k": [max(1, d // 4), 1, d - 1]}
    seeds, lrs = [0, 11, 5], [0.5, 0.2, 1.0]
    common = dict(epochs=3, batch_size=24, record_every=4)
    out = train_stacked(model, ds, seeds=seeds, lr=lrs, clip_norm=C, noise_multiplier=None, mechanism=mechanism,
                        allow_non_private=True, **kw, **common)
    for r, seed in enumerate(seeds):
        kr = _per_run(kw, r)
        ch = chain_for(mechanism, None if C is None else C[r], None, r_final=kr.get("r_final"), k=kr.get("k"),
                       order=kr.get("order"), rank=kr.get("rank"))
        ref = train(model, ds, mechanism=ch, lr=lrs[r], random_state=seed, **common)
        _assert_run_equal(out[r], ref)
        assert out[r].privacy["private"] is False and out[r].privacy["epsilon"] == np.inf
        assert out[r].privacy["notes"] == ref.privacy["notes"] and out[r].privacy["reason"] == ref.privacy["reason"]


@pytest.mark.parametrize("options", [{"beta": 0.1}, {"stochastic": True, "coord_clip": 0.5, "scale": 0.5}],
                         ids=["sign", "stochastic_sign"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_topagg_runs_equal_train(name, options):
    """TopAgg (one example per teacher): per-run k and sigma; the votes from the same function and,
    stochastic, from the same generator as train(), so the runs agree bit for bit in practice."""
    make, kind = MODELS[name]
    model, ds = make(), _data(kind)
    d = model.n_params
    seeds, lrs, ks, sigma = [0, 11, 5], [0.05, 0.02, 0.1], [max(1, d // 4), 1, d], [1.0, 2.0, 0.7]
    common = dict(epochs=3, batch_size=24, record_every=4)
    out = train_stacked(model, ds, seeds=seeds, lr=lrs, clip_norm=None, noise_multiplier=sigma, mechanism="topagg",
                        k=ks, options=options, **common)
    for r, seed in enumerate(seeds):
        ref = train(model, ds, mechanism=chain_for("topagg", None, sigma[r], k=ks[r], options=options), lr=lrs[r],
                    random_state=seed, **common)
        _assert_run_equal(out[r], ref)
        assert out[r].privacy["private"] and out[r].privacy["notes"] == ref.privacy["notes"]


@pytest.mark.parametrize("mechanism,kw,C", [("topagg", {"k": 3, "options": {"beta": 0.2}}, None),
                                            ("top_k_per_example", {"k": 4}, 1.0)], ids=["topagg", "top_k_per_example"])
def test_per_example_chains_with_empty_batches_equal_train(mechanism, kw, C):
    """About one example per batch, so many batches are empty: their phi is the metric's default 1."""
    model, ds = mlp((6, 5, 3)), _data("mixture", n=300)
    common = dict(lr=0.3, sampling_rate=0.004, steps=40, record_every=5)
    out = train_stacked(model, ds, seeds=[1, 2, 3], mechanism=mechanism, clip_norm=C, noise_multiplier=1.0, **kw,
                        **common)
    for r, seed in enumerate([1, 2, 3]):
        ref = train(model, ds, mechanism=chain_for(mechanism, C, 1.0, **kw), random_state=seed, **common)
        assert np.any(np.asarray(ref.history["batch_size"]) < 1)
        _assert_run_equal(out[r], ref)


def test_non_private_runs_need_allow_non_private():
    model, ds = mlp((6, 5, 3)), _data("mixture")
    base = dict(seeds=[0, 1], epochs=1, batch_size=24)
    with pytest.raises(ValueError, match="clip_norm=None makes every run non-private.*allow_non_private=True"):
        train_stacked(model, ds, clip_norm=None, **base)
    with pytest.raises(ValueError, match="noise_multiplier=None makes every run non-private"):
        train_stacked(model, ds, noise_multiplier=None, **base)
    with pytest.raises(ValueError, match="noise_multiplier without a clip_norm needs a reference_norm"):
        train_stacked(model, ds, clip_norm=None, allow_non_private=True, **base)
    with pytest.raises(ValueError, match="'top_k_clean'.*without noise"):
        train_stacked(model, ds, mechanism="top_k_clean", k=3, allow_non_private=True, **base)
    with pytest.raises(ValueError, match="'top_k_noisy' with noise"):
        train_stacked(model, ds, mechanism="top_k_noisy", k=3, noise_multiplier=None, allow_non_private=True, **base)


@pytest.mark.parametrize("name", ["mlp_relu", "logistic"])
def test_noise_only_ablation_equals_train(name):
    """No clipping, noise of std sigma * reference_norm (clip(None, reference_norm)), dense and after
    random freeze: not private, as train() reports it."""
    make, kind = MODELS[name]
    model, ds = make(), _data(kind)
    seeds, lrs, sigma = [0, 11], [0.5, 0.2], [1.0, 2.0]
    common = dict(epochs=3, batch_size=24, record_every=4)
    for mechanism, kw in (("dense", {}), ("random_freeze", {"r_final": 0.7})):
        out = train_stacked(model, ds, seeds=seeds, lr=lrs, clip_norm=None, reference_norm=1.5, noise_multiplier=sigma,
                            mechanism=mechanism, allow_non_private=True, **kw, **common)
        for r, seed in enumerate(seeds):
            ch = chain_for(mechanism, None, sigma[r], reference_norm=1.5, **kw)
            ref = train(model, ds, mechanism=ch, lr=lrs[r], random_state=seed, **common)
            _assert_run_equal(out[r], ref)
            assert out[r].privacy["private"] is False and out[r].privacy["reason"] == ref.privacy["reason"]
            assert out[r].history["noise_sq"][0] > 0


MASK_CHAINS = [("public_freeze", {}), ("public_freeze", {"criterion": "random"}), ("magnitude_prune", {}),
               ("magnitude_prune", {"source": "public", "public_epochs": 1}),
               ("magnitude_prune", {"source": "current", "every": 5}), ("public_select", {}),
               ("public_select", {"criterion": "random"}), ("public_select", {"public_batch_size": 10})]


@pytest.mark.parametrize("noisy", [True, False], ids=["dp", "non_private"])
@pytest.mark.parametrize("mechanism,options", MASK_CHAINS,
                         ids=[m + "-" + "-".join(f"{k}={v}" for k, v in o.items()) for m, o in MASK_CHAINS])
@pytest.mark.parametrize("name", ["mlp_relu", "logistic"])
def test_public_and_pruning_masks_equal_train(name, mechanism, options, noisy):
    """Masks from a public split, the parameters or at random (fixed at init, recomputed every N
    steps, or chosen every step), with a public split in the data: as train() runs them."""
    make, kind = MODELS[name]
    model, ds = make(), _data(kind, n=300)
    cut = 200
    ds = dataclasses.replace(ds, X_train=ds.X_train[:cut], y_train=ds.y_train[:cut], X_public=ds.X_train[cut:],
                             y_public=ds.y_train[cut:])
    seeds, lrs, C, sigma, frac = [0, 11, 5], [0.5, 0.2, 1.0], [1.0, 0.5, 2.0], [1.0, 2.0, 0.7], [0.5, 0.75, 0.2]
    common = dict(epochs=3, batch_size=24, record_every=4)
    out = train_stacked(model, ds, seeds=seeds, lr=lrs, clip_norm=C, noise_multiplier=sigma if noisy else None,
                        mechanism=mechanism, fraction=frac, options=options, allow_non_private=not noisy, **common)
    for r, seed in enumerate(seeds):
        ch = chain_for(mechanism, C[r], sigma[r] if noisy else None, fraction=frac[r], options=options)
        ref = train(model, ds, mechanism=ch, lr=lrs[r], random_state=seed, **common)
        _assert_run_equal(out[r], ref)
        assert 0 < out[r].history["kept_fraction"][0] < 1


@pytest.mark.parametrize("feedback", ["ef", "ef21"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_error_feedback_equals_train(name, feedback):
    """Error feedback after the noise around top-k (per-run k) and low-rank, as train() runs it.

    Low-rank EF runs 2 epochs: on the 3 x 6 softmax its rank-1 power iteration amplifies rounding
    about tenfold per epoch (measured against train(): 2e-15 relative after one epoch, 4e-11 after
    two, 4e-10 after three, smooth growth from the first-epoch rounding), so the 1e-10 check is
    taken before that growth reaches it."""
    make, kind = MODELS[name]
    model, ds = make(), _data(kind)
    d = model.n_params
    seeds, lrs, C, sigma = [0, 11, 5], [0.5, 0.2, 1.0], [1.0, 0.5, 2.0], [1.0, 2.0, 0.7]
    for mechanism, kw, epochs in (("top_k_noisy", {"k": [max(1, d // 4), 1, d - 1]}, 3), ("low_rank", {"rank": 1}, 2)):
        common = dict(epochs=epochs, batch_size=24, record_every=4)
        out = train_stacked(model, ds, seeds=seeds, lr=lrs, clip_norm=C, noise_multiplier=sigma, mechanism=mechanism,
                            feedback=feedback, **kw, **common)
        for r, seed in enumerate(seeds):
            ch = chain_for(mechanism, C[r], sigma[r], feedback=feedback, **_per_run(kw, r))
            ref = train(model, ds, mechanism=ch, lr=lrs[r], random_state=seed, **common)
            _assert_run_equal(out[r], ref)


OPTIMIZERS = [dict(optimizer="sgd", momentum=0.9), dict(optimizer="nesterov"), dict(optimizer="adam", weight_decay=0.01),
              dict(schedule="cosine"), dict(schedule="warmup_cosine", weight_decay=0.1), dict(schedule="step"),
              dict(schedule="inverse_time", strong_convexity=2.0), dict(schedule=lambda t: 0.3 / (1 + t))]


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=["momentum", "nesterov", "adam_wd", "cosine", "warmup_cosine_wd", "step",
                                                 "inverse_time", "callable"])
@pytest.mark.parametrize("name", ["mlp_relu", "softmax"])
def test_optimizers_and_schedules_equal_train(name, opt):
    """Momentum, Nesterov, Adam (state stacked per run), weight decay, and every schedule, each run
    at its own base rate: as train() runs them, with the same recorded lr_t and config."""
    make, kind = MODELS[name]
    model, ds = make(), _data(kind)
    seeds, C, sigma = [0, 11, 5], [1.0, 0.5, 2.0], [1.0, 2.0, 0.7]
    lrs = [0.05, 0.02, 0.1] if opt.get("optimizer") == "adam" else [0.5, 0.2, 1.0]
    common = dict(epochs=3, batch_size=24, record_every=4, **opt)
    out = train_stacked(model, ds, seeds=seeds, lr=lrs, clip_norm=C, noise_multiplier=sigma, mechanism="random_freeze",
                        r_final=0.5, **common)
    for r, seed in enumerate(seeds):
        ref = train(model, ds, mechanism=chain_for("random_freeze", C[r], sigma[r], r_final=0.5), lr=lrs[r],
                    random_state=seed, **common)
        _assert_run_equal(out[r], ref)
        for key in ("optimizer", "optimizer_hyperparams", "schedule"):
            assert out[r].config[key] == ref.config[key], key


def test_params0_per_run_equals_train():
    model, ds = mlp((6, 5, 3)), _data("mixture")
    P0 = _stacked_params(model, 2)
    common = dict(epochs=2, batch_size=24, mechanism="random_freeze", r_final=0.5)
    out = train_stacked(model, ds, seeds=[4, 9], params0=P0, lr=0.5, **common)
    shared = train_stacked(model, ds, seeds=[4, 9], params0=P0[1], lr=0.5, **common)
    for r, seed in enumerate([4, 9]):
        ch = chain_for("random_freeze", 1.0, 1.0, r_final=0.5)
        ref = train(model, ds, mechanism=ch, lr=0.5, random_state=seed, params0=P0[r], epochs=2, batch_size=24)
        _assert_run_equal(out[r], ref)
    ref = train(model, ds, mechanism=chain_for("random_freeze", 1.0, 1.0, r_final=0.5), lr=0.5, random_state=4,
                params0=P0[1], epochs=2, batch_size=24)
    _assert_run_equal(shared[0], ref)


def test_power_compress_stacked_matches_per_run_power_compress():
    from sims.mechanisms.low_rank import power_compress

    layout = mlp((6, 5, 4, 3)).layout
    rng = np.random.default_rng(2)
    R = 4
    U = rng.standard_normal((R, layout.n_params))
    U[2, layout.weight_slice(1)] = 0.0  # a zero block: its basis is kept
    Qs = [rng.standard_normal((R, layout.sizes[l], min(2, layout.sizes[l], layout.sizes[l + 1])))
          for l in range(layout.n_layers)]
    Y, newQ = E.power_compress_stacked(layout, U, Qs)
    for r in range(R):
        y, q = power_compress(U[r], [Q[r] for Q in Qs], layout)
        np.testing.assert_allclose(Y[r], y, rtol=1e-13, atol=1e-14)
        for a, b in zip(newQ, q):
            np.testing.assert_allclose(a[r], b, rtol=1e-13, atol=1e-14)
    assert np.array_equal(newQ[1][2], Qs[1][2])


@pytest.mark.parametrize("ramp", ["constant", "step"])
def test_random_freeze_ramps_equal_train(digits, ramp):
    model = mlp((64, 16, 10))
    out = train_stacked(model, digits, seeds=[3, 4], lr=0.5, mechanism="random_freeze", r_final=0.85, ramp=ramp,
                        epochs=3, batch_size=64)
    for r, seed in enumerate([3, 4]):
        ref = train(model, digits, mechanism=chain_for("random_freeze", 1.0, 1.0, r_final=0.85, ramp=ramp), lr=0.5,
                    random_state=seed, epochs=3, batch_size=64)
        _assert_run_equal(out[r], ref)


def test_digits_mlp_final_accuracy_equals_train(digits):
    model = mlp((64, 32, 10))
    out = train_stacked(model, digits, seeds=[0, 1], lr=0.5, epochs=4, batch_size=64)
    for r in range(2):
        ref = train(model, digits, mechanism=chain_for("dense", 1.0, 1.0), lr=0.5, random_state=r, epochs=4,
                    batch_size=64)
        _assert_run_equal(out[r], ref)
        assert out[r].history["test_accuracy"][-1] == ref.history["test_accuracy"][-1]
    assert set(STEP_METRICS) <= set(out[0].history)


# ----------------------------------------------------------------------------- divergence
def _train_or_diverged(model, ds, **kw):
    try:
        return train(model, ds, **kw), None
    except TrainingDiverged as e:
        return e.result, e.step


@pytest.mark.parametrize("name,lr_bad,factor,opt", [("softmax", 1e308, None, "sgd"), ("linear", 1e200, None, "sgd"),
                                                    ("linear", 300.0, 100.0, "sgd"), ("linear", 300.0, 100.0, "momentum"),
                                                    ("softmax", 1e308, None, "adam")])
def test_one_diverging_run_stops_alone(name, lr_bad, factor, opt):
    """The diverging run leaves the stack (its optimizer state too); the others go on as alone.

    ``lr = 1e308`` puts the next forward pass at the overflow boundary (parameters near 1e307),
    where whether ``w . x`` overflows depends on the summation order; the linear model (the
    one-pass kernel) is checked at 1e200, where both engines overflow only in the squared norm."""
    make, kind = MODELS[name]
    model, ds = make(), _data(kind)
    lrs = [0.1, lr_bad, 0.3]
    common = dict(epochs=4, batch_size=24, record_every=2, divergence_factor=factor, clip_norm=5.0,
                  noise_multiplier=1.0, optimizer=opt)
    out = train_stacked(model, ds, seeds=[1, 2, 3], lr=lrs, **common)
    for r, seed in enumerate([1, 2, 3]):
        kw = dict(common)
        C, sigma = kw.pop("clip_norm"), kw.pop("noise_multiplier")
        ref, step = _train_or_diverged(model, ds, mechanism=chain_for("dense", C, sigma), lr=lrs[r],
                                       random_state=seed, **kw)
        assert out[r].diverged_step == step
        assert out[r].steps_done == ref.steps_done
        np.testing.assert_allclose(out[r].params, ref.params, rtol=RTOL)
        for key, col in ref.history.items():
            np.testing.assert_allclose(out[r].history[key], col, rtol=RTOL, atol=1e-300, err_msg=key)
        assert out[r].privacy["notes"] == ref.privacy["notes"]
    assert out[1].diverged_step is not None and "diverged" in out[1].divergence
    assert out[0].diverged_step is None and out[2].diverged_step is None


# ----------------------------------------------------------------------------- scope and arguments
def test_each_run_gets_its_own_options_dict():
    model, ds = mlp((6, 5, 3)), _data("mixture")
    out = train_stacked(model, ds, seeds=[0, 1], epochs=1, batch_size=24, mechanism="public_freeze", fraction=0.5,
                        options={"criterion": "random"})
    a, b = (r.config["stacked"]["options"] for r in out)
    assert a == b == {"criterion": "random"} and a is not b


def test_refuses_what_it_does_not_run():
    model, ds = mlp((6, 5, 3)), _data("mixture")
    base = dict(seeds=[0, 1], epochs=1, batch_size=24)
    bad = [
        (dict(mechanism=chain_for("dense", 1.0, 1.0)), "mechanism"),
        (dict(mechanism="top_k_clean"), "mechanism"),
        (dict(sampling="shuffle"), "sampling"),
        (dict(optimizer=object()), "optimizer by name"),
        (dict(optimizer="lion"), "optimizer"),
        (dict(momentum=1.5), "momentum"),
        (dict(weight_decay=-1.0), "weight_decay"),
        (dict(schedule="bogus"), "schedule"),
        (dict(schedule="inverse_time"), "strong_convexity"),
        (dict(schedule=lambda t: -1.0), "lr schedule must give finite rates >= 0"),
        (dict(params0=np.zeros(model.n_params + 1)), "params0"),
        (dict(params0=np.full((2, model.n_params), np.nan)), "params0"),
        (dict(lr=[0.1, 0.2, 0.3]), "lr"),
        (dict(lr=[0.1, -1.0]), r"lr\[1\]"),
        (dict(mechanism="random_freeze"), "r_final"),
        (dict(mechanism="top_k_noisy", k=10 ** 6), "k"),
        (dict(seeds=[]), "seeds"),
        (dict(seeds=[-1]), r"seeds\[0\]"),
        (dict(mechanism="low_rank"), "rank is required"),
        (dict(mechanism="low_rank", rank=0), "rank"),
        (dict(rank=2), r"rank is an argument of mechanism in \('low_rank',\) only"),
        (dict(k=5), "k is an argument of mechanism in"),
        (dict(r_final=0.5), "r_final is an argument of mechanism in"),
        (dict(order="clip_then_mask"), "order is an argument of mechanism in"),
        (dict(ramp="cosine"), "ramp is an argument of mechanism='random_freeze' only"),
        (dict(clip_norm=None, noise_multiplier=None, reference_norm=1.0, allow_non_private=True),
         "reference_norm belongs to the noise-only ablation"),
        (dict(mechanism="low_rank", rank=1, order="compress_then_noise"), "'low_rank' runs order='noise_then_compress'"),
        (dict(mechanism="random_k", k=3, order="noise_then_compress"), "order"),
        (dict(reference_norm=2.0), "reference_norm belongs to the noise-only ablation"),
        (dict(clip_norm=None, reference_norm=-1.0, allow_non_private=True), "reference_norm"),
        (dict(mechanism="public_freeze", options={"criterion": "random"}), "fraction is required"),
        (dict(mechanism="public_freeze", fraction=1.0, options={"criterion": "random"}), "fraction"),
        (dict(mechanism="public_freeze", fraction=0.5, options={"bogus": 1}), "options"),
        (dict(mechanism="public_freeze", fraction=0.5, options=3), "options must be a dict"),
        (dict(mechanism="public_freeze", fraction=0.5), "public"),
        (dict(fraction=0.5), "fraction is an argument of mechanism in"),
        (dict(feedback="ef"), "feedback is an argument of mechanism in"),
        (dict(mechanism="top_k_noisy", k=3, noise_multiplier=None, allow_non_private=True, feedback="ef"),
         "feedback .*wraps the compressor"),
        (dict(mechanism="top_k_noisy", k=3, feedback="bogus"), "feedback"),
        (dict(mechanism="topagg", k=3), "topagg' takes clip_norm=None"),
        (dict(mechanism="topagg", k=3, clip_norm=None, noise_multiplier=None), "topagg' takes clip_norm=None"),
        (dict(mechanism="topagg", k=3, clip_norm=None, options={"teacher_size": 2}), "teacher_size > 1"),
        (dict(mechanism="topagg", clip_norm=None), "k is required"),
        (dict(mechanism="topagg", k=3, clip_norm=None, fraction=0.5), "fraction is an argument"),
        (dict(mechanism="private_top_k", k=3), "selection_epsilon"),
        (dict(mechanism="private_top_k", k=3, options={"selection_epsilon": 0.0}), "selection_epsilon"),
        (dict(mechanism="private_top_k", k=3, options={"selection_epsilon": 1.0, "bogus": 1}), "selection_epsilon"),
    ]
    for extra, match in bad:
        with pytest.raises(ValueError, match=match):
            train_stacked(model, ds, **{**base, **extra})
    with pytest.raises(ValueError, match="float64"):
        train_stacked(mlp((6, 5, 3), dtype=np.float32), ds, **base)


# ----------------------------------------------------------------------------- a run does not depend on its group
def _bitwise_equal(a, b):
    return (np.array_equal(a.params, b.params) and set(a.history) == set(b.history)
            and all(np.array_equal(a.history[k], b.history[k], equal_nan=True) for k in a.history))


@pytest.mark.parametrize("mechanism,kw", [("dense", {}), ("random_freeze", {"r_final": 0.8}), ("top_k_noisy", {"k": 40}),
                                          ("random_k", {"k": 30}), ("random_k", {"k": 30, "order": "mask_then_clip"}),
                                          ("low_rank", {"rank": 2}), ("dense", {"optimizer": "adam"}),
                                          ("top_k_per_example", {"k": 40}),
                                          ("topagg", {"k": 40, "clip_norm": None, "options": {"stochastic": True}}),
                                          ("private_top_k", {"k": 40, "options": {"selection_epsilon": 1.0}})],
                         ids=["dense", "random_freeze", "top_k_noisy", "random_k", "random_k_mask_then_clip", "low_rank",
                              "dense_adam", "top_k_per_example", "topagg", "private_top_k"])
def test_a_run_is_bit_identical_whatever_its_group(digits, mechanism, kw):
    model = mlp((64, 12, 10))
    seeds, lrs = [0, 1, 2, 3], [0.5, 2.0, 0.25, 1.0]
    common = dict(mechanism=mechanism, epochs=2, batch_size=48, **kw)
    group = train_stacked(model, digits, seeds=seeds, lr=lrs, **common)
    pair = train_stacked(model, digits, seeds=seeds[2:0:-1], lr=lrs[2:0:-1], **common)
    for r, (s, lr) in enumerate(zip(seeds, lrs)):
        alone = train_stacked(model, digits, seeds=[s], lr=lr, **common)[0]
        assert _bitwise_equal(group[r], alone), (mechanism, s)
    assert _bitwise_equal(pair[0], group[2]) and _bitwise_equal(pair[1], group[1])


def test_runs_that_freeze_nothing_take_the_dense_norms_alone_or_stacked(digits):
    """A run with nothing frozen uses the dense norm trick (as train() does); stacked with runs
    that do freeze, it still gets its own bits and train()'s history."""
    model = mlp((64, 12, 10))
    seeds, r_final = [0, 1, 2], [0.0, 0.8, 0.0]
    common = dict(mechanism="random_freeze", ramp="constant", epochs=2, batch_size=48, lr=0.5)
    group = train_stacked(model, digits, seeds=seeds, r_final=r_final, **common)
    for r, (s, rf) in enumerate(zip(seeds, r_final)):
        assert _bitwise_equal(group[r], train_stacked(model, digits, seeds=[s], r_final=rf, **common)[0])
        ref = train(model, digits, mechanism=chain_for("random_freeze", 1.0, 1.0, r_final=rf, ramp="constant"),
                    lr=0.5, random_state=s, epochs=2, batch_size=48)
        _assert_run_equal(group[r], ref)


def test_batches_beyond_the_chunk_rows_are_summed_in_further_chunks(monkeypatch):
    """With chunks of 8 rows, every Poisson batch (about 24) spans several chunks, and runs reach
    different numbers of them: each run still equals train() and its own run alone."""
    import sims.stacked.run as run_mod

    monkeypatch.setattr(run_mod, "batch_rows", lambda n, q: 8)
    model, ds = mlp((6, 5, 3)), _data("mixture")
    seeds, lrs = [0, 4, 9], [0.5, 0.1, 1.0]
    out = train_stacked(model, ds, seeds=seeds, lr=lrs, epochs=2, batch_size=24, mechanism="random_freeze", r_final=0.5)
    assert max(out[0].history["batch_size"]) > 8
    for r, (s, lr) in enumerate(zip(seeds, lrs)):
        ref = train(model, ds, mechanism=chain_for("random_freeze", 1.0, 1.0, r_final=0.5), lr=lr, random_state=s,
                    epochs=2, batch_size=24)
        _assert_run_equal(out[r], ref)
        alone = train_stacked(model, ds, seeds=[s], lr=lr, epochs=2, batch_size=24, mechanism="random_freeze",
                              r_final=0.5)[0]
        assert _bitwise_equal(out[r], alone)


def test_batch_rows_cover_the_poisson_batch():
    from sims.stacked.run import batch_rows

    assert batch_rows(1437, 64 / 1437) == 80 and batch_rows(10, 0.9) == 10
    for n, q in [(100, 0.01), (2000, 0.032), (60000, 256 / 60000)]:
        r = batch_rows(n, q)
        assert r % 8 == 0 or r == n
        assert n * q + np.sqrt(n * q * (1 - q)) <= r <= n * q + np.sqrt(n * q * (1 - q)) + 9
