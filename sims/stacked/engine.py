"""Dense models of R runs at once: parameters ``(R, d)``, batches ``(R, B_max, d_in)``, batched GEMMs.

Layer ``l`` of run ``r`` is ``z = W_{r,l} a + b_{r,l}``; all runs' layers are multiplied by ONE
``np.matmul`` call on stacked arrays (BLAS per run inside NumPy's loop, no Python per run).
Padding rows of a batch (``valid = 0``) get ``delta = 0``, so they add nothing to norms or sums.

Per-example clipping without a ``B x d`` tensor (Abadi et al. 2016, Alg. 1; Goodfellow 2015, the
norm trick of :mod:`sims.models.pergrad`): for a dense layer the per-example gradient is
``delta_i a_i^T`` (and ``delta_i`` for the bias), so

* ``||g_i^l||^2 = ||delta_i||^2 (||a_i||^2 + [bias])``;
* with a 0/1 mask ``M`` (random freeze, mask-then-clip):
  ``||M * g_i^l||^2 = [(delta^2) M (a^2)^T]_ii + (delta^2) m_b``, one batched GEMM;
* ``sum_i w_i g_i^l = (w delta)^T a`` (and ``sum_i w_i delta_i``), one batched GEMM.

The memory is ``O(R (B_rows + d))`` per step, never ``R x B x d``. Every GEMM of a run has a shape
that depends on that run's model and ``(n, q)`` only, so a run's arithmetic, hence its result bit
for bit, does not depend on which runs it is stacked with.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import expit

from sims.models.dense import backward_deltas

__all__ = ["layer_views", "backprop_stacked", "sq_norms_stacked", "masked_sq_norms_stacked", "clip_factors_stacked",
           "weighted_sum_stacked", "per_example_rows", "power_compress_stacked", "evaluate_stacked"]


def layer_views(layout, P: np.ndarray) -> list:
    """Per layer ``(W (R, out, in), b (R, out) or None)`` views into the stacked parameters ``P (R, d)``."""
    return layout.views(P)


def _activate(z, activation):
    if activation == "relu":
        np.maximum(z, 0, out=z)
    else:
        np.tanh(z, out=z)


def _forward(model, P, xb):
    """Layer inputs ``acts`` (``acts[0] = xb``) and output pre-activation ``z``, stacked."""
    views = layer_views(model.layout, P)
    acts = [xb]
    a = xb
    for l, (W, b) in enumerate(views):
        z = np.matmul(a, W.transpose(0, 2, 1))
        if b is not None:
            z += b[:, None, :]
        if l == len(views) - 1:
            return acts, z
        _activate(z, model.activation)
        acts.append(z)
        a = z


def _head(model, z, y):
    """Per-example losses ``(R, B)`` and ``dl/dz`` (overwrites ``z``); the heads of ``sims.models.dense``."""
    if model.head == "squared":
        z1 = z[..., 0]
        np.subtract(z1, y, out=z1)
        return 0.5 * z1 * z1, z
    if model.head == "logistic":
        z1 = z[..., 0]
        losses = np.logaddexp(0, z1)
        losses -= y * z1
        expit(z1, out=z1)
        z1 -= y
        return losses, z
    zy = np.take_along_axis(z, y[..., None], axis=-1)[..., 0]
    m = z.max(axis=-1, keepdims=True) if z.shape[-2] else np.zeros(z.shape[:-1] + (1,), z.dtype)
    z -= m
    np.exp(z, out=z)
    s = z.sum(axis=-1)
    losses = m[..., 0] - zy
    losses += np.log(s)
    z /= s[..., None]
    onehot = np.take_along_axis(z, y[..., None], axis=-1)
    np.put_along_axis(z, y[..., None], onehot - 1, axis=-1)
    return losses, z


def backprop_stacked(model, P, xb, yb, valid):
    """One forward/backward pass of R runs on their padded batches.

    Returns ``(acts, deltas)``: ``acts[l] (R, B, in_l)`` the layer inputs, ``deltas[l] (R, B, out_l)``
    the per-example output gradients ``d loss_i / d z_l`` (0 on padding rows), the recursion
    ``delta_{l-1} = (delta_l W_l) * act'(z_{l-1})`` of :func:`sims.models.backprop`.
    """
    acts, z = _forward(model, P, xb)
    _, delta = _head(model, z, yb.astype(np.int64) if model.head == "softmax" else yb)
    delta *= valid[..., None]
    return acts, backward_deltas(model, layer_views(model.layout, P), acts, delta)


def sq_norms_stacked(layout, acts, deltas) -> np.ndarray:
    """``(R, B, L)`` per-layer squared per-example gradient norms ``||delta||^2 (||a||^2 + [bias])``."""
    one = 1.0 if layout.bias else 0.0
    out = np.empty(deltas[0].shape[:2] + (layout.n_layers,))
    for l, (a, d) in enumerate(zip(acts, deltas)):
        sa = np.einsum("rbi,rbi->rb", a, a)
        sd = np.einsum("rbo,rbo->rb", d, d)
        out[..., l] = sd * sa + sd * one
    return out


def masked_sq_norms_stacked(layout, acts, deltas, keep_views) -> np.ndarray:
    """``(R, B, L)`` squared norms of ``M * g_i`` (mask-then-clip): ``[(d^2) M_W (a^2)^T]_ii + (d^2) m_b``.

    ``keep_views``: :meth:`Layout.views` of the float 0/1 keep masks ``(R, d)``.
    """
    out = np.empty(deltas[0].shape[:2] + (layout.n_layers,))
    for l, ((MW, mb), a, d) in enumerate(zip(keep_views, acts, deltas)):
        d2 = d * d
        t = np.matmul(d2, MW)
        col = np.einsum("rbi,rbi->rb", t * a, a)
        if mb is not None:
            col += np.einsum("rbo,ro->rb", d2, mb)
        out[..., l] = col
    return out


def clip_factors_stacked(nsq: np.ndarray, clip_norm: np.ndarray):
    """Flat clip factors ``w = C_r / max(n, C_r)`` with ``n = sqrt(sum_l nsq_l)`` (summed in layer
    order); returns ``(w (R, B), n (R, B))`` (Abadi et al. 2016, Alg. 1). ``C_r = inf`` (no
    clipping) gives ``w = 1``."""
    t = nsq[..., 0].copy()
    for l in range(1, nsq.shape[-1]):
        t += nsq[..., l]
    n = np.sqrt(t)
    c = clip_norm[:, None]
    with np.errstate(invalid="ignore"):
        w = c / np.maximum(n, c)
    return np.where(np.isinf(c), 1.0, w), n


def weighted_sum_stacked(layout, acts, deltas, w) -> np.ndarray:
    """``S[r] = sum_i w[r, i] g_{r,i}`` flat ``(R, d)``, the weighted factor chosen as in
    :func:`sims.models.pergrad.weighted_sum` (the smaller of ``delta`` and ``a``)."""
    R = w.shape[0]
    S = np.empty((R, layout.n_params))
    for (W, b), a, d in zip(layout.views(S), acts, deltas):
        wl = w[..., None]
        if d.shape[-1] <= a.shape[-1]:
            dw = d * wl
            np.matmul(dw.transpose(0, 2, 1), a, out=W)
            if b is not None:
                np.sum(dw, axis=1, out=b)
        else:
            np.matmul(d.transpose(0, 2, 1), a * wl, out=W)
            if b is not None:
                b[...] = np.matmul(w[:, None, :], d)[:, 0]
    return S


def per_example_rows(layout, acts, deltas, j: int) -> np.ndarray:
    """The ``(rows, d)`` per-example gradients ``g_i = delta_i a_i^T`` (and ``delta_i``) of run ``j``
    of a stacked batch, as :func:`sims.models.pergrad.materialize` lays them out (padding rows: 0).
    Only for the chains that need each example's gradient (per-example top-k); memory ``rows x d``
    for one run at a time, never ``R x rows x d``."""
    rows = deltas[0].shape[1]
    G = np.empty((rows, layout.n_params))
    for l, (a, d) in enumerate(zip(acts, deltas)):
        ws = layout.weight_slice(l)
        G[:, ws] = np.einsum("bo,bi->boi", d[j], a[j]).reshape(rows, ws.stop - ws.start)
        bs = layout.bias_slice(l)
        if bs is not None:
            G[:, bs] = d[j]
    return G


def power_compress_stacked(layout, U: np.ndarray, Qs: list) -> tuple:
    """Rank-r compression of every weight block of every run, one warm-started power iteration:
    :func:`sims.mechanisms.low_rank.power_compress` stacked (Vogels, Karimireddy & Jaggi 2019, Alg. 1).

    For layer ``l`` of run ``r``, ``M = U_{r,l}`` (out x in) and ``Q = Qs[l][r]`` (in x r_l):
    ``P = orth(M Q)`` (reduced QR), ``Q' = M^T P``, ``M_hat = P Q'^T``; ``Q'`` replaces ``Q``
    unless it is exactly 0 (then the old ``Q`` is kept). Biases pass through. Returns
    ``(Y (R, d), new Qs)``; ``U`` is not modified. ``np.linalg.qr`` and ``np.matmul`` loop over
    the runs with one LAPACK / BLAS call each, of a shape set by the model and the rank only.
    """
    Y = U.copy()
    out = []
    for (M, _), (W, _), Q in zip(layout.views(U), layout.views(Y), Qs):
        P, _ = np.linalg.qr(np.matmul(M, Q))
        Qn = np.matmul(M.transpose(0, 2, 1), P)
        W[...] = np.matmul(P, Qn.transpose(0, 2, 1))
        zero = ~Qn.any(axis=(1, 2))
        Qn[zero] = Q[zero]
        out.append(Qn)
    return Y, out


def _eval_output(model, P, X):
    """Output pre-activations ``(R, m, d_out)`` of every run on the shared rows ``X (m, d_in)``:
    one batched GEMM per layer, ``X`` broadcast over the runs (the same ``(m, .)`` GEMM per run,
    whatever R)."""
    z = X
    views = layer_views(model.layout, P)
    for l, (W, b) in enumerate(views):
        if l:
            _activate(z, model.activation)
        z = np.matmul(z, W.transpose(0, 2, 1))
        if b is not None:
            z += b[:, None, :]
    return z


def _correct(model, z, y) -> np.ndarray:
    """Per run: the number of correct predictions (classification), or the residual sum of squares
    ``sum (y - z)^2`` (the squared head), on one chunk of rows."""
    if model.head == "squared":
        return np.sum((y - z[..., 0]) ** 2, axis=-1, dtype=np.float64)
    if model.head == "logistic":
        return np.count_nonzero((z[..., 0] > 0) == (y > 0.5), axis=-1).astype(np.float64)
    return np.count_nonzero(np.argmax(z, axis=-1) == y, axis=-1).astype(np.float64)


def _accuracy(model, total, y) -> np.ndarray:
    """Accuracy from :func:`_correct` summed over the chunks; R^2 for the squared head (1.0 / 0.0
    for a constant ``y``, as :func:`sims.models.accuracy`)."""
    if model.head != "squared":
        return total / y.shape[0]
    tot = float(np.sum((y - y.mean(dtype=np.float64)) ** 2, dtype=np.float64))
    if tot == 0.0:
        return np.where(total == 0.0, 1.0, 0.0)
    return 1.0 - total / tot


def evaluate_stacked(model, P, X, y, *, rows: int | None = None, max_elements: int = 1 << 22):
    """``(loss (R,), accuracy (R,))`` of every run on ``(X, y)``: :func:`sims.models.evaluate` stacked.

    Rows are processed in chunks of ``rows`` rows, by default ``max(1, 2^18 // widest layer)`` (a
    function of the model only, so a run's loss is summed in the same order whatever it is stacked with), and runs
    in groups small enough that one chunk's activations hold about ``max_elements`` numbers. A run
    whose outputs are not all finite gets ``loss = inf``, ``accuracy = nan``.
    """
    R, m = P.shape[0], X.shape[0]
    width = max(model.layout.sizes[1:])
    step = max(1, (1 << 18) // width) if rows is None else int(rows)
    group = max(1, max_elements // (min(step, max(m, 1)) * width))
    loss, acc = np.empty(R), np.empty(R)
    for g in range(0, R, group):
        loss[g:g + group], acc[g:g + group] = _evaluate_group(model, P[g:g + group], X, y, step)
    return loss, acc


def _evaluate_group(model, P, X, y, step):
    R, m = P.shape[0], X.shape[0]
    losses = np.empty((R, m))
    total = np.zeros(R)
    finite = np.ones(R, dtype=bool)
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, m, step):
            z = _eval_output(model, P, X[start:start + step])
            yy = y[start:start + step]
            finite &= np.isfinite(z).all(axis=(1, 2))
            total += _correct(model, z, yy)
            yy = np.broadcast_to(yy.astype(np.int64) if model.head == "softmax" else yy, z.shape[:2])
            losses[:, start:start + step], _ = _head(model, z, yy)
        loss = losses.mean(axis=1)
        acc = _accuracy(model, total, y)
    return np.where(finite, loss, math.inf), np.where(finite, acc, math.nan)
