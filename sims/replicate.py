"""Many independent DP-SGD runs of a convex model in one compiled call.

Each replicate runs DP-SGD exactly as in Abadi et al. 2016 ("Deep Learning with
Differential Privacy", CCS, Algorithm 1) with Poisson sampling, which is what
``sims/train.py`` does for one run:

1. Poisson-sample the batch: example i joins with probability q, independently
   (variable batch size, expectation B = q n).
2. Per-example gradient of the per-example loss at the current ``theta = (w, b)``:
   logistic ``l_i = log(1 + e^{z_i}) - y_i z_i`` gives ``g_i = (sigmoid(z_i) - y_i) [x_i, 1]``;
   linear ``l_i = (z_i - y_i)^2 / 2`` gives ``g_i = (z_i - y_i) [x_i, 1]``; ``z_i = w.x_i + b``.
3. Flat clipping: ``g_i <- g_i min(1, C / ||g_i||)``. Since ``g_i`` is a scalar times
   ``[x_i, 1]``, ``||g_i|| = |r_i| sqrt(||x_i||^2 + 1)`` (no per-example vector is formed).
4. ``u = (sum_i clip(g_i) + sigma C xi) / B`` with ``xi ~ N(0, I_{d+1})``.
5. ``theta <- theta - lr (u + weight_decay theta)``; then, if ``project_radius`` is set,
   ``theta <- theta min(1, R / ||theta||)`` (projected SGD, the setting of the convex
   bounds of Bassily, Smith & Thakurta 2014; docs/theory.md §3.1).

The average iterate is ``(1/T) sum_{t=1..T} theta_t`` (iterates after each step).

Randomness: replicate r uses the counter-based streams ``child_key(K_s, r)`` (Poisson
sampling) and ``child_key(K_n, r)`` (noise) of :mod:`sims.rng`, with
``K_s, K_n = key_from_seed(random_state, domain)``. Sampling uses geometric skips:
the gap to the next sampled index is ``floor(log U / log(1-q))``, U ~ Uniform(0, 1],
which is Geometric(q) on {0, 1, ...}, so the selected set has exactly the Poisson
sampling law at O(B) cost per step instead of O(n). Noise for step t, coordinate j
is normal number ``t (d+1) + j`` of the noise stream. The results therefore do not
depend on the number of threads, and :func:`replicate_dpsgd_reference` (plain NumPy)
reproduces them with the same random numbers.

Privacy (epsilon) is not computed here: each replicate is DP-SGD with sampling rate q,
noise multiplier sigma and ``steps`` steps; use ``dptheory.accounting``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
from numba import prange

from dptheory.validation import check_choice, check_finite_array, check_int, check_real

from . import rng as _r

__all__ = ["ReplicateResult", "replicate_dpsgd", "full_loss"]  # + replicate_dpsgd_reference, the tests' NumPy twin

_MODELS = {"logistic": 0, "linear": 1}


@dataclass(frozen=True)
class ReplicateResult:
    """Outcome of :func:`replicate_dpsgd`.

    Attributes
    ----------
    params : ndarray (R, d+1)
        Final parameters ``[w, b]`` of each replicate.
    avg_params : ndarray (R, d+1)
        Average iterate ``(1/T) sum_{t=1..T} theta_t``.
    losses : ndarray (R,)
        Full-data mean loss (no weight-decay term) at ``params``.
    avg_losses : ndarray (R,)
        Full-data mean loss at ``avg_params``.
    loss_history : ndarray (R, steps // record_every) or None
        Full-data mean loss after steps ``record_every, 2 record_every, ...``.
    """

    params: np.ndarray
    avg_params: np.ndarray
    losses: np.ndarray
    avg_losses: np.ndarray
    loss_history: np.ndarray | None


# ----------------------------------------------------------------------------- kernel
@numba.njit(inline="always", cache=True)
def _residual(z, yi, model):
    if model == 0:
        if z >= 0.0:
            s = 1.0 / (1.0 + math.exp(-z))
        else:
            ez = math.exp(z)
            s = ez / (1.0 + ez)
        return s - yi
    return z - yi


@numba.njit(cache=True)
def _mean_loss(X, y, theta, model):
    n, d = X.shape
    total = 0.0
    for i in range(n):
        z = theta[d]
        for j in range(d):
            z += X[i, j] * theta[j]
        if model == 0:
            total += max(z, 0.0) + math.log1p(math.exp(-abs(z))) - y[i] * z
        else:
            total += 0.5 * (z - y[i]) * (z - y[i])
    return total / n


@numba.njit(inline="always", cache=True)
def _add_example(X, y, sq_aug, i, w, g, clip, model):
    d = X.shape[1]
    z = w[d]
    for j in range(d):
        z += X[i, j] * w[j]
    res = _residual(z, y[i], model)
    norm = abs(res) * math.sqrt(sq_aug[i])
    coef = res if norm <= clip else res * (clip / norm)
    for j in range(d):
        g[j] += coef * X[i, j]
    g[d] += coef


@numba.njit(parallel=True, cache=True)
def _replicate_kernel(X, y, sq_aug, lr, sigma, clip, init, steps, q, radius, weight_decay,
                      record_every, model, key_s, key_n, zx, zr,
                      params, avg, losses, avg_losses, hist):
    n, d = X.shape
    dim = d + 1
    n_rep = params.shape[0]
    batch = q * n
    log1mq = math.log1p(-q) if q < 1.0 else 0.0
    for r in prange(n_rep):
        ks = _r.child_key(key_s, r)
        kn = _r.child_key(key_n, r)
        w = init[r].copy()
        g = np.empty(dim)
        acc = np.zeros(dim)
        counter = 0
        noise_std = sigma[r] * clip[r]
        for t in range(steps):
            g[:] = 0.0
            if q >= 1.0:
                for i in range(n):
                    _add_example(X, y, sq_aug, i, w, g, clip[r], model)
            else:
                pos = -1
                while True:
                    u = _r.uniform_open64(_r.word(ks, counter))
                    counter += 1
                    gap = math.log(u) / log1mq  # compare as float: no int overflow for tiny q
                    if gap >= n - 1 - pos:
                        break
                    pos += 1 + np.int64(gap)  # truncation = floor (gap >= 0)
                    _add_example(X, y, sq_aug, pos, w, g, clip[r], model)
            if noise_std > 0.0:
                base = t * dim
                for j in range(dim):
                    g[j] += noise_std * _r.normal64(kn, base + j, zx, zr)
            for j in range(dim):
                w[j] -= lr[r] * (g[j] / batch + weight_decay * w[j])
            if radius > 0.0:
                nrm2 = 0.0
                for j in range(dim):
                    nrm2 += w[j] * w[j]
                nrm = math.sqrt(nrm2)
                if nrm > radius:
                    scale = radius / nrm
                    for j in range(dim):
                        w[j] *= scale
            for j in range(dim):
                acc[j] += w[j]
            if record_every > 0 and (t + 1) % record_every == 0:
                hist[r, (t + 1) // record_every - 1] = _mean_loss(X, y, w, model)
        for j in range(dim):
            params[r, j] = w[j]
            avg[r, j] = acc[j] / steps
        losses[r] = _mean_loss(X, y, w, model)
        avg_losses[r] = _mean_loss(X, y, avg[r], model)


# ----------------------------------------------------------------------------- validation
def _per_replicate(name, value, n_rep, *, low, low_open):
    arr = check_finite_array(name, value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(n_rep, float(arr))
    elif arr.shape != (n_rep,):
        raise ValueError(f"{name} must be a scalar or an array of shape ({n_rep},), got shape {arr.shape}")
    bad = (arr <= low) if low_open else (arr < low)
    if np.any(bad):
        rng = f"({low}, inf)" if low_open else f"[{low}, inf)"
        raise ValueError(f"{name} must be in {rng}, got {arr[bad][0]!r}")
    return np.ascontiguousarray(arr)


def _seed_from(random_state) -> int:
    if isinstance(random_state, np.random.Generator):
        return _r.derive_seed(random_state)
    return check_int("random_state", random_state, low=0, high=2 ** 64 - 1)


def _validate(X, y, model, n_replicates, steps, sampling_rate, clip_norm, noise_multiplier, lr,
              project_radius, weight_decay, record_every, init):
    model = check_choice("model", model, tuple(_MODELS))
    X = check_finite_array("X", X, ndim=2, dtype=np.float64)
    n, d = X.shape
    if n < 1 or d < 1:
        raise ValueError(f"X must have at least one row and one column, got shape {X.shape}")
    y = check_finite_array("y", y, ndim=1, dtype=np.float64)
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},) to match X, got {y.shape}")
    if model == "logistic" and (y.min() < 0.0 or y.max() > 1.0):
        raise ValueError("y must be in [0, 1] for model='logistic'")
    R = check_int("n_replicates", n_replicates, low=1)
    steps = check_int("steps", steps, low=1)
    q = check_real("sampling_rate", sampling_rate, low=0.0, high=1.0, low_open=True)
    clip = _per_replicate("clip_norm", clip_norm, R, low=0.0, low_open=True)
    sigma = _per_replicate("noise_multiplier", noise_multiplier, R, low=0.0, low_open=False)
    lr = _per_replicate("lr", lr, R, low=0.0, low_open=True)
    radius = -1.0 if project_radius is None else check_real(
        "project_radius", project_radius, low=0.0, low_open=True)
    wd = check_real("weight_decay", weight_decay, low=0.0)
    record_every = check_int("record_every", record_every, low=0, high=steps)
    dim = d + 1
    if init is None:
        theta0 = np.zeros((R, dim))
    else:
        theta0 = check_finite_array("init", init, dtype=np.float64)
        if theta0.shape == (dim,):
            theta0 = np.broadcast_to(theta0, (R, dim))
        elif theta0.shape != (R, dim):
            raise ValueError(f"init must have shape ({dim},) or ({R}, {dim}), got {theta0.shape}")
    return (model, np.ascontiguousarray(X), np.ascontiguousarray(y), R, steps, q, clip, sigma, lr,
            radius, wd, record_every, np.ascontiguousarray(theta0, dtype=np.float64))


# ----------------------------------------------------------------------------- public API
def replicate_dpsgd(X, y, *, model="logistic", n_replicates, steps, sampling_rate, clip_norm,
                    noise_multiplier, lr, project_radius=None, weight_decay=0.0, record_every=0,
                    random_state=0, init=None) -> ReplicateResult:
    """Run ``n_replicates`` independent DP-SGD runs of a convex GLM in one Numba call.

    Algorithm (per replicate, see the module docstring): Poisson sampling at rate q,
    flat per-example clipping at C, Gaussian noise ``N(0, sigma^2 C^2 I)`` on the sum,
    division by the expected batch size ``q n``, step ``theta -= lr (u + weight_decay theta)``,
    optional projection onto ``{||theta|| <= project_radius}`` (Abadi et al. 2016, Alg. 1;
    Bassily, Smith & Thakurta 2014 for projected DP-SGD). ``theta = [w, b]`` (bias last,
    also clipped, noised, decayed and projected).

    Parameters
    ----------
    X : array (n, d), finite
    y : array (n,)
        Labels in [0, 1] for ``model="logistic"``, real for ``model="linear"``.
    model : {"logistic", "linear"}
    n_replicates : int >= 1
    steps : int >= 1
    sampling_rate : float in (0, 1]
        Poisson sampling probability q (q = 1: full batch, no randomness in sampling).
    clip_norm, noise_multiplier, lr : float or array (n_replicates,)
        Per-replicate grid values: C > 0, sigma >= 0, lr > 0.
    project_radius : float > 0 or None
    weight_decay : float >= 0
    record_every : int in [0, steps]
        If > 0, record the full-data loss every ``record_every`` steps.
    random_state : int in [0, 2**64 - 1] or np.random.Generator
        Replicate r's random numbers depend only on (random_state, r), never on the thread count.
    init : None (zeros), array (d+1,) or (n_replicates, d+1)

    Returns
    -------
    ReplicateResult
    """
    (model, X, y, R, steps, q, clip, sigma, lr, radius, wd, record_every, theta0) = _validate(
        X, y, model, n_replicates, steps, sampling_rate, clip_norm, noise_multiplier, lr,
        project_radius, weight_decay, record_every, init)
    seed = _seed_from(random_state)
    key_s = np.uint64(_r.key_from_seed(np.uint64(seed), _r.DOMAIN_REPLICATE_SAMPLING))
    key_n = np.uint64(_r.key_from_seed(np.uint64(seed), _r.DOMAIN_REPLICATE_NOISE))
    n, d = X.shape
    sq_aug = np.einsum("ij,ij->i", X, X) + 1.0
    params = np.empty((R, d + 1))
    avg = np.empty((R, d + 1))
    losses = np.empty(R)
    avg_losses = np.empty(R)
    n_rec = steps // record_every if record_every > 0 else 0
    hist = np.empty((R, n_rec))
    _replicate_kernel(X, y, sq_aug, lr, sigma, clip, theta0, np.int64(steps), float(q), float(radius),
                      float(wd), np.int64(record_every), np.int64(_MODELS[model]), key_s, key_n,
                      _r.ZIG_X, _r.ZIG_R, params, avg, losses, avg_losses, hist)
    return ReplicateResult(params, avg, losses, avg_losses, hist if record_every > 0 else None)


# ----------------------------------------------------------------------------- NumPy reference
def full_loss(X, y, params, model="logistic") -> np.ndarray:
    """Full-data mean loss of each parameter row: logistic ``log(1+e^z) - y z`` or linear ``(z-y)^2/2``.

    ``params`` is ``(d+1,)`` or ``(R, d+1)`` (bias last); returns a float or an array (R,).
    """
    model = check_choice("model", model, tuple(_MODELS))
    X = check_finite_array("X", X, ndim=2, dtype=np.float64)
    y = check_finite_array("y", y, ndim=1, dtype=np.float64)
    P = check_finite_array("params", params, dtype=np.float64)
    if P.shape[-1] != X.shape[1] + 1 or P.ndim not in (1, 2):
        raise ValueError(f"params must have shape ({X.shape[1] + 1},) or (R, {X.shape[1] + 1}), got {P.shape}")
    Z = np.atleast_2d(P)[:, :-1] @ X.T + np.atleast_2d(P)[:, -1:]
    if model == "logistic":
        L = np.maximum(Z, 0.0) + np.log1p(np.exp(-np.abs(Z))) - y * Z
    else:
        L = 0.5 * (Z - y) ** 2
    out = L.mean(axis=1)
    return out if P.ndim == 2 else float(out[0])


def replicate_dpsgd_reference(X, y, *, model="logistic", n_replicates, steps, sampling_rate, clip_norm,
                              noise_multiplier, lr, project_radius=None, weight_decay=0.0,
                              record_every=0, random_state=0, init=None) -> ReplicateResult:
    """Plain-NumPy twin of :func:`replicate_dpsgd` using the same random numbers (slow; for tests).

    A Python loop over replicates and steps; the Poisson sample is drawn with the same
    geometric skips from the NumPy version of the counter-based generator, the
    per-example gradients and the clipped sum are vectorised NumPy.
    """
    (model, X, y, R, steps, q, clip, sigma, lr, radius, wd, record_every, theta0) = _validate(
        X, y, model, n_replicates, steps, sampling_rate, clip_norm, noise_multiplier, lr,
        project_radius, weight_decay, record_every, init)
    seed = _seed_from(random_state)
    key_s = _r.key_from_seed_reference(seed, _r.DOMAIN_REPLICATE_SAMPLING)
    key_n = _r.key_from_seed_reference(seed, _r.DOMAIN_REPLICATE_NOISE)
    n, d = X.shape
    dim = d + 1
    Xa = np.hstack([X, np.ones((n, 1))])
    n_rec = steps // record_every if record_every > 0 else 0
    params, avg = np.empty((R, dim)), np.empty((R, dim))
    hist = np.empty((R, n_rec))
    for r in range(R):
        ks = _r.child_key_reference(key_s, r)
        kn = _r.child_key_reference(key_n, r)
        w = theta0[r].copy()
        acc = np.zeros(dim)
        counter = 0
        for t in range(steps):
            if q >= 1.0:
                idx = np.arange(n)
            else:
                chosen, pos = [], -1
                while True:
                    u = (float(_r.words_reference(ks, counter, 1)[0] >> np.uint64(11)) + 1.0) * 2.0 ** -53
                    counter += 1
                    gap = math.log(u) / math.log1p(-q)
                    if gap >= n - 1 - pos:
                        break
                    pos += 1 + int(gap)
                    chosen.append(pos)
                idx = np.array(chosen, dtype=np.int64)
            xb = Xa[idx]
            z = xb @ w
            res = (1.0 / (1.0 + np.exp(-z)) if model == "logistic" else z) - y[idx]
            norms = np.abs(res) * np.linalg.norm(xb, axis=1)
            factor = np.minimum(1.0, clip[r] / np.maximum(norms, 1e-300))
            g = xb.T @ (res * factor)
            if sigma[r] * clip[r] > 0.0:
                g = g + sigma[r] * clip[r] * _r.normal64_reference(kn, t * dim, dim)
            w = w - lr[r] * (g / (q * n) + wd * w)
            if radius > 0.0:
                nrm = np.linalg.norm(w)
                if nrm > radius:
                    w = w * (radius / nrm)
            acc += w
            if record_every > 0 and (t + 1) % record_every == 0:
                hist[r, (t + 1) // record_every - 1] = full_loss(X, y, w, model)
        params[r], avg[r] = w, acc / steps
    return ReplicateResult(params, avg, full_loss(X, y, params, model), full_loss(X, y, avg, model),
                           hist if record_every > 0 else None)
