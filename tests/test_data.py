"""sims.data: shapes, determinism, ground truth, standardisation (train / public), public splits, offline data.

All random data use fixed seeds; the one statistical check (teacher recovery) states its band below.
"""
import random
import socket

import numpy as np
import pytest

from sims import data as D


def _same(a, b):
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("X_train", "y_train", "X_test", "y_test"))


@pytest.mark.parametrize("make", [
    lambda s, dt: D.make_linear(101, 4, random_state=s, dtype=dt),
    lambda s, dt: D.make_logistic(101, 4, random_state=s, dtype=dt),
    lambda s, dt: D.make_mixture(101, 4, 3, random_state=s, dtype=dt),
])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_shapes_dtype_determinism(make, dtype):
    a, b, c = make(7, dtype), make(7, dtype), make(8, dtype)
    assert a.X_train.shape == (76, 4) and a.X_test.shape == (25, 4)  # round(0.25 * 101) = 25 test rows
    assert a.y_train.shape == (76,) and a.y_test.shape == (25,)
    assert a.X_train.dtype == dtype
    assert a.y_train.dtype == (dtype if a.task == "regression" else np.int64)
    assert _same(a, b) and not _same(a, c)
    assert a.X_train.tobytes() == b.X_train.tobytes()
    g1, g2 = make(np.random.default_rng(3), dtype), make(np.random.default_rng(3), dtype)
    assert _same(g1, g2)


def test_linear_teacher_recovered_by_least_squares():
    ds = D.make_linear(2000, 5, noise=0.1, random_state=0)
    w_hat, *_ = np.linalg.lstsq(ds.X_train, ds.y_train, rcond=None)
    # OLS error per coordinate ~ N(0, noise^2 [(X^T X)^-1]_jj), sd ~ 0.1 / sqrt(1500) = 2.6e-3;
    # the band 0.02 is > 7 sd per coordinate: false-failure probability < 5 * 1e-12.
    assert np.max(np.abs(w_hat - ds.meta["w_star"])) < 0.02
    # and the residual variance is the stated noise^2 (chi^2 with 1495 dof: relative sd 3.7e-3; band 5%)
    r = ds.y_train - ds.X_train @ w_hat
    assert abs(np.mean(r ** 2) / 0.1 ** 2 - 1) < 0.05


def test_logistic_margin_and_labels():
    ds = D.make_logistic(500, 6, margin=0.3, random_state=1)
    w = ds.meta["w_star"]
    assert np.isclose(np.linalg.norm(w), 1.0)
    for X, y in ((ds.X_train, ds.y_train), (ds.X_test, ds.y_test)):
        s = X @ w
        assert np.all(np.abs(s) >= 0.3 - 1e-12)
        assert np.array_equal(y, (s > 0).astype(np.int64))
    noisy = D.make_logistic(500, 6, margin=0.3, label_noise=0.2, random_state=1)
    agree = np.mean(noisy.y_train == (noisy.X_train @ noisy.meta["w_star"] > 0))
    # 375 Bernoulli(0.8) agreements: sd 0.021, band 0.12 is > 5.5 sd (false-failure < 4e-8)
    assert abs(agree - 0.8) < 0.12


def test_mixture_means_balance_and_separation():
    ds = D.make_mixture(3000, 5, 3, separation=4.0, random_state=2)
    mu = ds.meta["means"]
    dist = np.linalg.norm(mu[:, None] - mu[None], axis=2)
    assert np.allclose(dist[~np.eye(3, dtype=bool)], 4.0)
    y = np.concatenate([ds.y_train, ds.y_test])
    assert np.array_equal(np.bincount(y), [1000, 1000, 1000])
    for k in range(3):
        emp = ds.X_train[ds.y_train == k].mean(axis=0)
        # ~750 N(0, 1) rows per class: sd of each mean coordinate 0.037; band 0.25 > 6.5 sd
        assert np.max(np.abs(emp - mu[k])) < 0.25
    assert D.make_mixture(50, 2, 5, random_state=0).meta["means"].shape == (5, 2)  # K > d branch


@pytest.mark.parametrize("loader, shape, task, k", [
    (D.load_digits, (1797, 64), "multiclass", 10),
    (D.load_breast_cancer, (569, 30), "binary", 2),
    (D.load_wine, (178, 13), "multiclass", 3),
])
def test_bundled_datasets(loader, shape, task, k):
    ds = loader(random_state=0, dtype=np.float32)
    assert ds.X_train.shape[0] + ds.X_test.shape[0] == shape[0] and ds.n_features == shape[1]
    assert ds.task == task and ds.n_classes == k and ds.X_train.dtype == np.float32
    assert set(np.unique(np.concatenate([ds.y_train, ds.y_test]))) == set(range(k))
    assert _same(ds, loader(random_state=0, dtype=np.float32))


def test_standardize_uses_train_statistics_only():
    ds = D.split_public(D.make_mixture(200, 3, 2, random_state=0), 0.1, random_state=0)
    out = D.standardize(ds, fit_on="train")  # with a public split the default is fit_on="public"
    assert D.private_preprocessing_notes(out) == (
        f"standardize: feature mean and std fitted on the {ds.n_train} private training rows; "
        "this release is not covered by epsilon",)
    assert np.allclose(out.X_train.mean(axis=0), 0, atol=1e-12)
    assert np.allclose(out.X_train.std(axis=0), 1)
    mean, sd = ds.X_train.mean(axis=0), ds.X_train.std(axis=0)
    assert np.allclose(out.X_test, (ds.X_test - mean) / sd)
    assert np.allclose(out.X_public, (ds.X_public - mean) / sd)
    # changing the test and public data must not change the train transform
    other = D.Dataset(ds.X_train, ds.y_train, ds.X_test * 100 + 5, ds.y_test, ds.task, ds.n_classes,
                      X_public=ds.X_public - 50, y_public=ds.y_public)
    assert np.array_equal(D.standardize(other, fit_on="train").X_train, out.X_train)
    # constant feature: centred, scale 1 (never NaN)
    X = np.column_stack([np.ones(10), np.arange(10.0)])
    c = D.standardize(D.Dataset(X, np.zeros(10), X[:2], np.zeros(2), "regression", None))
    assert np.all(np.isfinite(c.X_train)) and np.all(c.X_train[:, 0] == 0)


@pytest.mark.parametrize("shift", [0.0, 2.5])
def test_split_public_disjoint_size_and_shift(shift):
    ds = D.make_logistic(400, 5, random_state=3)
    out = D.split_public(ds, 0.1, shift=shift, random_state=4)
    n = ds.n_train
    m = round(0.1 * n)
    assert out.X_public.shape == (m, 5) and out.n_train == n - m and out.y_public.shape == (m,)
    pub = out.meta["public_indices"]
    priv = np.setdiff1d(np.arange(n), pub)
    assert np.array_equal(out.X_train, ds.X_train[priv]) and np.array_equal(out.y_train, ds.y_train[priv])
    assert np.array_equal(out.y_public, ds.y_train[pub])
    u = out.meta["public_shift_direction"]
    assert np.isclose(np.linalg.norm(u), 1.0)
    assert np.allclose(out.X_public - ds.X_train[pub], shift * u)
    assert np.isclose((out.X_public.mean(axis=0) - ds.X_train[pub].mean(axis=0)) @ u, shift)
    # no public row is (a copy of) a private row
    assert not (set(map(bytes, ds.X_train[pub])) & set(map(bytes, out.X_train)))
    assert np.array_equal(out.X_test, ds.X_test)
    with pytest.raises(ValueError, match="public"):
        D.split_public(out, 0.1)


def test_mnist1d_offline_and_leaves_global_rng_alone(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    import requests
    import urllib.request
    monkeypatch.setattr(requests, "get", no_network)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    np.random.seed(123)
    random.seed(123)
    before_np, before_py = np.random.get_state()[1].copy(), random.getstate()
    ds = D.load_mnist1d(200, random_state=5)
    assert np.array_equal(np.random.get_state()[1], before_np) and random.getstate() == before_py
    assert ds.X_train.shape == (160, 40) and ds.X_test.shape == (40, 40)
    assert ds.n_classes == 10 and set(np.unique(np.concatenate([ds.y_train, ds.y_test]))) <= set(range(10))
    assert _same(ds, D.load_mnist1d(200, random_state=5))
    assert not _same(ds, D.load_mnist1d(200, random_state=6))


@pytest.mark.parametrize("call, match", [
    (lambda: D.make_linear(1, 3), "^n must"),
    (lambda: D.make_linear(10, 0), "^d must"),
    (lambda: D.make_linear(10, 2, noise=-1), "noise"),
    (lambda: D.make_linear(10, 2, test_size=0.0), "test_size"),
    (lambda: D.make_linear(10, 2, test_size=1.0), "test_size"),
    (lambda: D.make_linear(10, 2, random_state=-1), "random_state"),
    (lambda: D.make_linear(10, 2, random_state="a"), "random_state"),
    (lambda: D.make_linear(10, 2, dtype=np.int64), "dtype"),
    (lambda: D.make_logistic(10, 2, margin=-0.1), "margin"),
    (lambda: D.make_logistic(10, 2, label_noise=0.5), "label_noise"),
    (lambda: D.make_mixture(10, 2, 1), "n_classes"),
    (lambda: D.make_mixture(10, 2, 3, separation=float("nan")), "separation"),
    (lambda: D.load_digits(test_size=2), "test_size"),
    (lambda: D.load_mnist1d(205), "^n must"),
    (lambda: D.load_mnist1d(10), "^n must"),
    (lambda: D.split_public(D.make_linear(20, 2, random_state=0), 0.0), "fraction"),
    (lambda: D.split_public(D.make_linear(20, 2, random_state=0), 0.1, shift=-1), "shift"),
    (lambda: D.split_public("ds", 0.1), "ds"),
    (lambda: D.standardize(None), "ds"),
    (lambda: D.Dataset(np.zeros((3, 2)), np.zeros(2), np.zeros((1, 2)), np.zeros(1), "regression", None), "y_train"),
    (lambda: D.Dataset(np.zeros((2, 2)), np.zeros(2), np.zeros((1, 3)), np.zeros(1), "regression", None), "X_test"),
    (lambda: D.Dataset(np.zeros((2, 2)), np.array([0, 3]), np.zeros((1, 2)), np.zeros(1), "multiclass", 3), "y_train"),
    (lambda: D.Dataset(np.zeros((2, 2)), np.zeros(2), np.zeros((1, 2)), np.zeros(1), "ranking", None), "task"),
    (lambda: D.Dataset(np.full((2, 2), np.nan), np.zeros(2), np.zeros((1, 2)), np.zeros(1), "regression", None), "X_train"),
])
def test_validation_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_standardize_on_public_statistics_ignores_private_rows():
    """fit_on='public': perturbing one private row changes no other row's features (the release is
    a function of public data only); fit_on='train' does change them."""
    from sims.data import load_digits, split_public, standardize
    ds = split_public(load_digits(random_state=0), 0.2, random_state=0)
    X2 = ds.X_train.copy()
    X2[0] += 50.0
    ds2 = type(ds)(**{**ds.__dict__, "X_train": X2})
    a, b = standardize(ds, fit_on="public"), standardize(ds2, fit_on="public")
    np.testing.assert_array_equal(a.X_train[1:], b.X_train[1:])
    np.testing.assert_array_equal(a.X_test, b.X_test)
    mean, scale = a.meta["standardize"]
    np.testing.assert_allclose(mean, ds.X_public.mean(axis=0))
    assert not np.array_equal(standardize(ds, fit_on="train").X_test, standardize(ds2, fit_on="train").X_test)
    # the default, with a public split, is fit_on="public"
    np.testing.assert_array_equal(standardize(ds).X_test, a.X_test)
    with pytest.raises(ValueError, match="fit_on"):
        standardize(ds, fit_on="test")
    with pytest.raises(ValueError, match="public split"):
        standardize(load_digits(random_state=0), fit_on="public")


def test_split_validation_holds_out_private_rows_and_scale_features_reads_none():
    from sims import data as D

    ds = D.split_public(D.load_digits(random_state=0), 0.1, random_state=0)
    v = D.split_validation(ds, 0.25, random_state=1)
    m = v.X_val.shape[0]
    assert m == round(0.25 * ds.n_train) and v.n_train + m == ds.n_train
    rows = {r.tobytes() for r in ds.X_train}
    assert {r.tobytes() for r in v.X_train} | {r.tobytes() for r in v.X_val} <= rows
    taken = v.meta["validation_indices"]
    np.testing.assert_array_equal(v.X_val, ds.X_train[taken])
    np.testing.assert_array_equal(v.X_public, ds.X_public)
    again = D.split_validation(ds, 0.25, random_state=1)
    np.testing.assert_array_equal(again.X_val, v.X_val)
    s = D.standardize(D.scale_features(v, 0.5), fit_on="public")
    assert s.X_val.shape == v.X_val.shape and D.private_preprocessing_notes(s) == ()
    with pytest.raises(ValueError, match="already has a validation split"):
        D.split_validation(v, 0.1)
    with pytest.raises(ValueError, match="split the public part off first"):
        D.split_public(D.split_validation(D.load_digits(random_state=0), 0.1), 0.1)
    with pytest.raises(ValueError, match="fraction must be in"):
        D.split_validation(ds, 0.0)
    with pytest.raises(ValueError, match="factor must be in"):
        D.scale_features(ds, -1.0)
