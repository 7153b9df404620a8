"""sims.models (dense.py, clip.py) against a deliberately naive per-example reference.

The reference below loops over examples in Python, runs each example's own forward pass with
``math``-style formulas on the pre-activations, and back-propagates by the chain rule written out
per layer; it shares no code with the fast path. All comparisons are deterministic (no statistical
tolerance): float64 agreement to 1e-10 relative, float32 to float32 precision.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sims.models import (
    Layout, Model, accuracy, backprop, clipped_grad_sum, gradient, init_params, layer_clip_norms,
    linear_regression, logistic_regression, loss, materialize, mlp, per_example_grad_norms, predict,
    softmax_regression, sq_norms, total_clip_norm, evaluate,
)


# ----------------------------------------------------------------------------- naive reference
def _naive_unpack(sizes, bias, theta):
    out, pos = [], 0
    for fi, fo in zip(sizes[:-1], sizes[1:]):
        W = np.array(theta[pos:pos + fo * fi]).reshape(fo, fi)
        pos += fo * fi
        b = np.array(theta[pos:pos + fo]) if bias else np.zeros(fo)
        pos += fo if bias else 0
        out.append((W, b))
    return out


def _naive_example(sizes, bias, act, head, theta, x, y):
    """Loss and flat gradient of ONE example, by an explicit forward/backward (float64)."""
    layers = _naive_unpack(sizes, bias, np.asarray(theta, dtype=np.float64))
    inputs, pre = [], []
    a = np.asarray(x, dtype=np.float64)
    for l, (W, b) in enumerate(layers):
        inputs.append(a)
        z = np.array([sum(W[j, k] * a[k] for k in range(len(a))) + b[j] for j in range(len(b))])
        pre.append(z)
        if l < len(layers) - 1:
            a = np.array([max(v, 0.0) for v in z]) if act == "relu" else np.array([math.tanh(v) for v in z])
    z = pre[-1]
    if head == "squared":
        L = 0.5 * (float(y) - z[0]) ** 2
        g = np.array([z[0] - float(y)])
    elif head == "logistic":
        t = z[0]
        L = (max(t, 0.0) + math.log1p(math.exp(-abs(t)))) - float(y) * t
        g = np.array([1.0 / (1.0 + math.exp(-t)) - float(y)])
    else:
        mx = max(z)
        lse = mx + math.log(sum(math.exp(v - mx) for v in z))
        L = lse - z[int(y)]
        g = np.array([math.exp(v - lse) for v in z])
        g[int(y)] -= 1.0
    grads = [None] * len(layers)
    for l in range(len(layers) - 1, -1, -1):
        W, _ = layers[l]
        grads[l] = (np.outer(g, inputs[l]), g.copy())
        if l > 0:
            back = W.T @ g
            zp = pre[l - 1]
            if act == "relu":
                g = np.array([back[k] * (1.0 if zp[k] > 0 else 0.0) for k in range(len(zp))])
            else:
                g = np.array([back[k] * (1.0 - math.tanh(zp[k]) ** 2) for k in range(len(zp))])
    flat = []
    for gW, gb in grads:
        flat.append(gW.ravel())
        if bias:
            flat.append(gb)
    return L, np.concatenate(flat)


def _naive_batch(model, theta, X, y):
    res = [_naive_example(model.layout.sizes, model.layout.bias, model.activation, model.head, theta, X[i], y[i])
           for i in range(X.shape[0])]
    return np.array([r[0] for r in res]), np.array([r[1] for r in res]).reshape(X.shape[0], -1)


def _naive_layer_sq_norms(layout, G):
    return np.stack([np.sum(G[:, layout.layer_slice(l)] ** 2, axis=1) for l in range(layout.n_layers)], axis=1)


# ----------------------------------------------------------------------------- random problems
@st.composite
def problems(draw, heads=("squared", "logistic", "softmax")):
    head = draw(st.sampled_from(heads))
    depth = draw(st.integers(1, 3))
    d_in = draw(st.integers(1, 7))
    hidden = [draw(st.integers(1, 7)) for _ in range(depth - 1)]
    d_out = 1 if head != "softmax" else draw(st.integers(2, 7))
    bias = draw(st.booleans())
    act = draw(st.sampled_from(["relu", "tanh"]))
    B = draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2**31))
    model = Model(Layout((d_in, *hidden, d_out), bias=bias), act, head, np.float64)
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal(model.n_params)
    X = rng.standard_normal((B, d_in))
    if head == "squared":
        y = rng.standard_normal(B)
    else:
        y = rng.integers(0, d_out if head == "softmax" else 2, size=B)
    return model, theta, X, y, rng


def _rel(a, b):
    return np.max(np.abs(a - b)) / max(1.0, np.max(np.abs(b)))


@given(problems())
def test_per_example_grads_and_losses_match_naive(prob):
    model, theta, X, y, _ = prob
    bp = backprop(model, theta, X, y)
    L_ref, G_ref = _naive_batch(model, theta, X, y)
    assert _rel(materialize(bp), G_ref) < 1e-10
    assert _rel(bp.losses, L_ref) < 1e-10
    assert np.isclose(loss(model, theta, X, y), L_ref.mean(), rtol=1e-10, atol=1e-12)
    assert _rel(gradient(model, theta, X, y), G_ref.mean(axis=0)) < 1e-10


@given(problems())
def test_norms_and_masked_norms_match_naive(prob):
    model, theta, X, y, rng = prob
    _, G = _naive_batch(model, theta, X, y)
    lay = model.layout
    ref = _naive_layer_sq_norms(lay, G)
    assert _rel(per_example_grad_norms(model, theta, X, y, per_layer=True), np.sqrt(ref)) < 1e-10
    assert _rel(per_example_grad_norms(model, theta, X, y), np.sqrt(ref.sum(axis=1))) < 1e-10
    mask = rng.random(lay.n_params) < 0.5
    bp = backprop(model, theta, X, y)
    assert _rel(sq_norms(bp, mask), _naive_layer_sq_norms(lay, G * mask)) < 1e-10


def _naive_clipped(layout, G, clip, per_layer, mask):
    Gm = G if mask is None else G * mask
    out = np.zeros(G.shape[1])
    for i in range(G.shape[0]):
        g = Gm[i].copy()
        if per_layer:
            for l in range(layout.n_layers):
                s = layout.layer_slice(l)
                nrm = np.sqrt(np.sum(g[s] ** 2))
                if nrm > clip[l]:
                    g[s] *= clip[l] / nrm
        else:
            nrm = np.sqrt(np.sum(g ** 2))
            if nrm > clip:
                g *= clip / nrm
        out += g
    return out


@given(problems(), st.booleans(), st.booleans(), st.floats(0.01, 3.0))
def test_clipped_sum_matches_naive(prob, per_layer, use_mask, C):
    model, theta, X, y, rng = prob
    lay = model.layout
    _, G = _naive_batch(model, theta, X, y)
    mask = (rng.random(lay.n_params) < 0.6).astype(np.float64) if use_mask else None
    clip = rng.uniform(0.05, 2.0, size=lay.n_layers) if per_layer else C
    bp = backprop(model, theta, X, y)
    s, norms, f = clipped_grad_sum(bp, list(clip) if per_layer else clip, per_layer=per_layer, mask=mask)
    assert _rel(s, _naive_clipped(lay, G, clip, per_layer, mask)) < 1e-10
    assert norms.shape == f.shape == ((X.shape[0], lay.n_layers) if per_layer else (X.shape[0],))
    assert np.all((f > 0) & (f <= 1))
    # each clipped (masked) per-example gradient obeys its bound
    Gm = G if mask is None else G * mask
    clipped = Gm * (f[:, None] if not per_layer else np.concatenate(
        [np.repeat(f[:, [l]], lay.layer_slice(l).stop - lay.layer_slice(l).start, axis=1)
         for l in range(lay.n_layers)], axis=1))
    assert np.all(np.linalg.norm(clipped, axis=1) <= total_clip_norm(list(clip) if per_layer else clip, lay) * (1 + 1e-12))
    if use_mask:
        assert np.all(s[mask == 0] == 0)


@given(problems())
def test_no_clipping_gives_plain_sum(prob):
    model, theta, X, y, _ = prob
    _, G = _naive_batch(model, theta, X, y)
    s, _, f = clipped_grad_sum(backprop(model, theta, X, y), None)
    assert np.all(f == 1)
    assert _rel(s, G.sum(axis=0)) < 1e-10


@settings(max_examples=15)
@given(problems())
def test_mean_gradient_matches_central_differences(prob):
    model, theta, X, y, _ = prob
    if model.activation == "relu" and model.layout.n_layers > 1:
        # keep away from ReLU kinks: finite differences are only valid where z != 0 nearby
        model = Model(model.layout, "tanh", model.head, model.dtype)
    g = gradient(model, theta, X, y)
    h = 1e-6
    fd = np.empty_like(theta)
    for j in range(theta.size):
        e = np.zeros_like(theta)
        e[j] = h
        fd[j] = (loss(model, theta + e, X, y) - loss(model, theta - e, X, y)) / (2 * h)
    # central differences: truncation O(h^2 f''') + rounding O(eps/h) ~ 1e-9 on these O(1) problems
    assert np.max(np.abs(g - fd)) < 1e-6 * max(1.0, np.max(np.abs(g)))


@given(problems())
def test_float32_stays_float32_and_agrees(prob):
    model64, theta, X, y, _ = prob
    m32 = Model(model64.layout, model64.activation, model64.head, np.float32)
    bp = backprop(m32, theta.astype(np.float32), X.astype(np.float32), y)
    arrays = list(bp.acts) + list(bp.deltas) + [bp.losses]
    assert all(a.dtype == np.float32 for a in arrays)
    s, norms, f = clipped_grad_sum(bp, 0.5)
    s_l, norms_l, f_l = clipped_grad_sum(bp, [0.5] * m32.layout.n_layers, per_layer=True)
    for a in (s, norms, f, s_l, norms_l, f_l, gradient(m32, theta, X, y), predict(m32, theta, X)):
        assert a.dtype == np.float32
    # reference in float64 on the float32-rounded inputs; tolerance ~ 1e3 float32 ulps of the scale
    t32, X32 = theta.astype(np.float32).astype(np.float64), X.astype(np.float32).astype(np.float64)
    y64 = y.astype(np.float32).astype(np.float64) if model64.head == "squared" else y
    bp64 = backprop(model64, t32, X32, y64)
    s64, _, _ = clipped_grad_sum(bp64, 0.5)
    tol = 1e3 * np.finfo(np.float32).eps
    assert _rel(materialize(bp).astype(np.float64), materialize(bp64)) < tol
    assert _rel(s.astype(np.float64), s64) < tol
    assert abs(loss(m32, theta, X, y) - loss(model64, t32, X32, y64)) < tol * max(1.0, abs(loss(model64, t32, X32, y64)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("head", ["logistic", "softmax"])
def test_huge_logits_are_stable(head, dtype):
    # logits of +-1e4: exp overflows in a naive formula; the loss must equal the exact margin
    k = 1 if head == "logistic" else 3
    model = Model(Layout((1, k), bias=False), "relu", head, dtype)
    if head == "logistic":
        theta = np.array([1e4])
        X = np.array([[1.0], [1.0], [-1.0], [-1.0]])
        y = np.array([1, 0, 0, 1])
        expected = np.array([0.0, 1e4, 0.0, 1e4])
        dexp = np.array([0.0, 1.0, 0.0, -1.0])
    else:
        theta = np.array([1e4, 0.0, -1e4])  # logits (1e4, 0, -1e4) for x = 1
        X = np.array([[1.0], [1.0], [1.0]])
        y = np.array([0, 1, 2])
        expected = np.array([0.0, 1e4, 2e4])
        dexp = None
    bp = backprop(model, theta, X, y)
    assert np.all(np.isfinite(bp.losses)) and np.all(np.isfinite(materialize(bp)))
    assert np.allclose(bp.losses, expected, rtol=1e-6, atol=1e-6)
    if dexp is not None:
        assert np.allclose(bp.deltas[0][:, 0], dexp, atol=1e-6)
    p = predict(model, theta, X)
    assert np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1))


def test_constructors_and_init():
    assert linear_regression(4).layout.sizes == (4, 1) and linear_regression(4).head == "squared"
    assert logistic_regression(3, bias=False).layout.n_params == 3
    assert softmax_regression(5, 3).layout.n_params == 18
    m = mlp((6, 5, 4), activation="tanh", dtype=np.float32)
    assert (m.head, m.activation, m.dtype, m.n_classes) == ("softmax", "tanh", np.float32, 4)
    assert np.all(init_params(softmax_regression(5, 3), 0) == 0)
    p1, p2 = init_params(m, 3), init_params(m, 3)
    assert p1.dtype == np.float32 and np.array_equal(p1, p2) and not np.array_equal(p1, init_params(m, 4))
    # He scaling for a wide ReLU layer: empirical variance of 400*1000 weights vs 2/fan_in.
    # The sample variance of n = 4e5 normals has relative sd sqrt(2/n) = 2.2e-3; a 5%-band is > 20 sd.
    big = mlp((400, 1000, 2))
    W0 = big.layout.views(init_params(big, 0))[0][0]
    assert abs(W0.var() / (2 / 400) - 1) < 0.05
    for _, b in big.layout.views(init_params(big, 0)):
        assert np.all(b == 0)


def test_accuracy_definitions():
    m = logistic_regression(1, bias=False)
    X = np.array([[1.0], [-2.0], [3.0], [-0.5]])
    assert accuracy(m, np.array([1.0]), X, np.array([1, 0, 0, 0])) == 0.75
    s = softmax_regression(1, 2, bias=False)
    assert accuracy(s, np.array([1.0, -1.0]), X, np.array([0, 1, 1, 0])) == 0.5  # predicted classes 0, 1, 0, 1
    r = linear_regression(1, bias=False)
    y = np.array([1.0, -2.0, 3.0, -0.5])
    assert accuracy(r, np.array([1.0]), X, y) == 1.0
    yhat = X[:, 0] * 0.5
    r2 = 1 - np.sum((y - yhat) ** 2) / np.sum((y - y.mean()) ** 2)
    assert np.isclose(accuracy(r, np.array([0.5]), X, y), r2)
    # constant targets: R^2 undefined -> 1.0 if perfect else 0.0 (scikit-learn's force_finite)
    assert accuracy(r, np.array([0.0]), X, np.zeros(4)) == 1.0
    assert accuracy(r, np.array([1.0]), X, np.zeros(4)) == 0.0


def test_empty_batch():
    m = mlp((3, 4, 2))
    p = init_params(m, 0)
    bp = backprop(m, p, np.zeros((0, 3)), np.zeros(0, dtype=int))
    s, norms, f = clipped_grad_sum(bp, 1.0)
    assert bp.batch_size == 0 and s.shape == (m.n_params,) and np.all(s == 0) and norms.shape == (0,)
    assert materialize(bp).shape == (0, m.n_params)
    assert clipped_grad_sum(bp, [1.0, 1.0], per_layer=True)[1].shape == (0, 2)
    with pytest.raises(ValueError, match="X"):
        loss(m, p, np.zeros((0, 3)), np.zeros(0, dtype=int))


def test_per_layer_scalar_is_split_equally():
    lay = Layout((3, 4, 2))
    assert np.allclose(layer_clip_norms(2.0, lay), 2.0 / np.sqrt(2))
    assert total_clip_norm(2.0, lay) == 2.0
    assert np.isclose(total_clip_norm([3.0, 4.0], lay), 5.0)


_M = mlp((3, 4, 2))
_P = np.zeros(_M.n_params)
_X = np.zeros((2, 3))
_Y = np.array([0, 1])


@pytest.mark.parametrize("call, match", [
    (lambda: backprop(_M, _P, np.zeros((2, 4)), _Y), "X"),
    (lambda: backprop(_M, _P, np.zeros(3), _Y), "X"),
    (lambda: backprop(_M, _P, np.array([[np.nan, 0, 0], [0, 0, 0]]), _Y), "X"),
    (lambda: backprop(_M, _P, np.array([[np.inf, 0, 0], [0, 0, 0]]), _Y), "X"),
    (lambda: backprop(_M, _P, _X, np.array([0, 1, 1])), "y"),
    (lambda: backprop(_M, _P, _X, np.array([0, 2])), "y"),
    (lambda: backprop(_M, _P, _X, np.array([0, -1])), "y"),
    (lambda: backprop(_M, _P, _X, np.array([0.5, 1.0])), "y"),
    (lambda: backprop(_M, _P, _X, np.array([0.0, np.nan])), "y"),
    (lambda: backprop(_M, np.zeros(_M.n_params + 1), _X, _Y), "params"),
    (lambda: backprop(_M, np.full(_M.n_params, np.nan), _X, _Y), "params"),
    (lambda: backprop(logistic_regression(3), np.zeros(4), _X, np.array([0, 2])), "y"),
    (lambda: backprop(linear_regression(3), np.zeros(4), _X, np.array([0.0, np.inf])), "y"),
    (lambda: backprop("model", _P, _X, _Y), "model"),
    (lambda: mlp((3, 4, 2), activation="sigmoid"), "activation"),
    (lambda: Model(Layout((3, 2)), "relu", "hinge", np.float64), "head"),
    (lambda: Model(Layout((3, 2)), "relu", "logistic", np.float64), "head"),
    (lambda: Model(Layout((3, 1)), "relu", "softmax", np.float64), "head"),
    (lambda: mlp((3, 4, 2), dtype=np.int32), "dtype"),
    (lambda: mlp((3, 4, 1)), "n_classes"),
    (lambda: softmax_regression(3, 1), "n_classes"),
    (lambda: linear_regression(0), "n_features"),
    (lambda: clipped_grad_sum(backprop(_M, _P, _X, _Y), 0.0), "clip_norm"),
    (lambda: clipped_grad_sum(backprop(_M, _P, _X, _Y), -1.0), "clip_norm"),
    (lambda: clipped_grad_sum(backprop(_M, _P, _X, _Y), [1.0, 1.0]), "clip_norm"),
    (lambda: clipped_grad_sum(backprop(_M, _P, _X, _Y), [1.0], per_layer=True), "clip_norm"),
    (lambda: clipped_grad_sum(backprop(_M, _P, _X, _Y), [1.0, 0.0], per_layer=True), "clip_norm"),
    (lambda: clipped_grad_sum(backprop(_M, _P, _X, _Y), 1.0, mask=np.zeros(3)), "mask"),
    (lambda: clipped_grad_sum(backprop(_M, _P, _X, _Y), 1.0, mask=np.full(_M.n_params, 0.5)), "mask"),
    (lambda: total_clip_norm(None, _M.layout), "clip_norm"),
])
def test_validation_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_deterministic_bit_for_bit():
    m = mlp((5, 6, 3), dtype=np.float32)
    p = init_params(m, 1)
    X = np.random.default_rng(2).standard_normal((8, 5))
    y = np.arange(8) % 3
    a = clipped_grad_sum(backprop(m, p, X, y), 0.3)[0]
    b = clipped_grad_sum(backprop(m, p, X, y), 0.3)[0]
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("make", [lambda: logistic_regression(3), lambda: mlp((3, 4, 2)),
                                  lambda: linear_regression(3)])
def test_overflowing_output_is_a_clear_error_not_nan(make):
    import warnings

    model = make()
    X = np.full((4, 3), 1e308)
    y = np.array([0, 1, 0, 1])
    p = np.full(model.layout.n_params, 1e308)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning on the way either
        for fn in (loss, accuracy):
            with pytest.raises(ValueError, match=r"model output overflows float64 .*max \|params\| = 1e\+308"):
                fn(model, p, X, y)
        with pytest.raises(ValueError, match="overflows"):
            predict(model, p, X)
        out = evaluate(model, p, X, y)  # the training loop's variant reports it instead
    assert out["loss"] == math.inf and math.isnan(out["accuracy"])


def test_evaluate_equals_loss_and_accuracy():
    model = mlp((5, 7, 3), dtype=np.float32)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((20, 5)), rng.integers(0, 3, 20)
    p = init_params(model, 1)
    out = evaluate(model, p, X, y)
    assert out == {"loss": loss(model, p, X, y), "accuracy": accuracy(model, p, X, y)}


def test_backprop_without_validation_is_the_same_pass():
    """``validate=False`` (the training loop, on a dataset checked once) skips the checks, not the work."""
    from sims.models import check_targets

    model = mlp((6, 5, 3), dtype=np.float32)
    rng = np.random.default_rng(2)
    X = rng.standard_normal((9, 6)).astype(np.float32)
    y = rng.integers(0, 3, 9)
    p = init_params(model, 4)
    a = backprop(model, p, X, y)
    b = backprop(model, p, X, check_targets(model, y, 9), validate=False)
    for u, v in zip(a.acts + a.deltas + (a.losses,), b.acts + b.deltas + (b.losses,)):
        np.testing.assert_array_equal(u, v)
    with pytest.raises(ValueError, match=r"y labels must lie in \[0, 2\]"):
        check_targets(model, np.array([0, 3]), 2)
