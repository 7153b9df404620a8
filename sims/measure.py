"""Measurement helpers: run a mechanism or a short DP-SGD loop many times and return the empirical
quantities (energies, ratios, iterates) that the closed forms of :mod:`dptheory` predict, with
the error bars that a comparison needs. The main job's experiments (:mod:`sims.experiments`) and
the simulation-versus-theory tests use them; every step runs through :func:`sims.step.dpsgd_step`.

Everything is a pure function of its ``random_state`` (same seed -> same arrays, bit for bit).
Nothing here is compiled: these are small NumPy loops around :mod:`sims.mechanisms` and
:mod:`sims.models`.
"""
from __future__ import annotations

import math

import numpy as np

from dptheory.validation import as_generator, as_seed_sequence, check_finite_array, check_int, check_real, child_sequence
from dptheory.accounting import steps_per_epoch

from .rng import derive_seed
from .sampling import poisson_batch
from .step import dpsgd_step, step_context

__all__ = [
    "backprop_from_rows", "clip_rows", "mechanism_steps", "mean_se", "bernstein_halfwidth",
    "chain_trajectory", "ridge_sgd_replicates",
]


# ----------------------------------------------------------------------------- synthetic gradients
def backprop_from_rows(G):
    """A :class:`sims.models.Backprop` whose per-example gradients are the rows of ``G``.

    One dense layer without bias, input size ``d``, one output: the gradient of example ``i`` is
    ``outer(delta_i, a_i)`` (Goodfellow 2015) with ``delta_i = 1`` and ``a_i = G[i]``, so the flat
    gradient is exactly ``G[i]`` (``d`` parameters). Lets mechanisms run on chosen gradients.

    Parameters
    ----------
    G : array (B, d), finite, B >= 0, d >= 1
    """
    from sims.models import Backprop, Layout

    G = check_finite_array("G", G, ndim=2, dtype=np.float64)
    if G.shape[1] < 1:
        raise ValueError(f"G must have at least one column, got shape {G.shape}")
    B = G.shape[0]
    return Backprop(Layout((G.shape[1], 1), bias=False), (np.ascontiguousarray(G),),
                    (np.ones((B, 1)),), np.zeros(B))


def clip_rows(G, clip_norm):
    """Naive per-example clipping ``g_i min(1, C/||g_i||)`` of the rows of ``G`` (Abadi et al. 2016, Alg. 1).

    Returns the clipped rows (B, d); a zero row stays zero. Reference for the tests.
    """
    G = check_finite_array("G", G, ndim=2, dtype=np.float64)
    C = check_real("clip_norm", clip_norm, low=0.0, low_open=True)
    n = np.linalg.norm(G, axis=1)
    f = np.where(n > C, C / np.where(n > 0, n, 1.0), 1.0)
    return G * f[:, None]


# ----------------------------------------------------------------------------- many steps of one mechanism
def mechanism_steps(mechanism, bp, n_steps, random_state, *, batch_size=None, total_steps=1, steps_per_epoch=1,
                    epoch=0, fresh_state=True):
    """Run one step of ``mechanism`` (a :class:`sims.mechanisms.Chain`) ``n_steps`` times on ``bp``.

    With ``root = dptheory.validation.as_seed_sequence(random_state)``, step ``r`` uses
    ``StepContext.rng = default_rng(child_sequence(root, r))`` (``root.spawn(n_steps)[r]`` of a
    fresh root, without advancing a caller's SeedSequence) and, when ``fresh_state``, a fresh
    ``mechanism.init`` with the init generator ``default_rng(child_sequence(root, n_steps, r))``
    (spawn key ``root.spawn_key + (n_steps, r)``; so e.g. a fixed random mask is redrawn for every
    replicate); otherwise one state initialised once is carried along (the sequence of steps of one
    run at a fixed point). Each step is :func:`sims.step.dpsgd_step`.

    Parameters
    ----------
    mechanism : Chain
    bp : Backprop
        The batch (e.g. :func:`backprop_from_rows`).
    n_steps : int >= 1
    random_state : int >= 0 or SeedSequence
    batch_size : float > 0, optional
        Expected batch size ``B`` dividing the sum (default ``bp.batch_size``).
    total_steps, steps_per_epoch, epoch : int
        Passed to the contexts (schedules such as random freeze read them).

    Returns
    -------
    updates : ndarray (n_steps, d)
        Released updates.
    metrics : dict[str, ndarray (n_steps,)]
        The chain's per-step metrics (``noise_sq``, ``signal_sq_after_mask``, ...).
    """
    from sims.mechanisms import InitContext, StepContext

    n_steps = check_int("n_steps", n_steps, low=1)
    root = _root(random_state)
    B = float(bp.batch_size) if batch_size is None else check_real("batch_size", batch_size, low=0.0, low_open=True)
    if B <= 0:
        raise ValueError("batch_size must be in (0, inf): give it explicitly for an empty bp")
    lay = bp.layout
    p = np.zeros(lay.n_params, dtype=bp.losses.dtype)
    children = [child_sequence(root, r) for r in range(n_steps)]

    def ictx(r):
        rng = np.random.default_rng(child_sequence(root, n_steps, r))
        return InitContext(model=None, layout=lay, params=p, total_steps=int(total_steps),
                           steps_per_epoch=int(steps_per_epoch), expected_batch_size=B, rng=rng)

    state = mechanism.init(ictx(0))
    ups = np.empty((n_steps, lay.n_params), dtype=bp.losses.dtype)
    mets = {}
    for r in range(n_steps):
        if fresh_state and r > 0:
            state = mechanism.init(ictx(r))
        sc = StepContext(model=None, layout=lay, step=r if not fresh_state else 0, epoch=int(epoch), params=p, bp=bp,
                         expected_batch_size=B, rng=np.random.default_rng(children[r]))
        u, state, m = dpsgd_step(mechanism, state, sc)
        ups[r] = u
        for k, v in m.items():
            mets.setdefault(k, np.empty(n_steps))[r] = v
    return ups, mets


def _root(random_state) -> np.random.SeedSequence:
    """An int >= 0 or a SeedSequence (a fresh or shared Generator would make the runs unreplayable)."""
    if random_state is None or isinstance(random_state, np.random.Generator):
        raise ValueError(f"random_state must be an int >= 0 or a numpy SeedSequence, got {random_state!r}")
    return as_seed_sequence(random_state)


# ----------------------------------------------------------------------------- error bars
def mean_se(x):
    """Sample mean and its standard error ``s / sqrt(n)`` (``s`` with ``ddof=1``) of a 1-D sample, n >= 2."""
    x = check_finite_array("x", x, ndim=1).astype(np.float64)
    if x.size < 2:
        raise ValueError(f"x must have at least 2 entries for a standard error, got {x.size}")
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))


def bernstein_halfwidth(variance, n, bound, p):
    """Half-width ``t`` with ``P(|mean - mu| >= t) <= p`` for the mean of ``n`` i.i.d. variables.

    Bernstein's inequality (e.g. Boucheron, Lugosi & Massart 2013, Thm 2.10 and Cor. 2.11): if
    ``|X - mu| <= bound`` and ``Var X <= variance``, then ``P(|mean - mu| >= t) <= 2 exp(-n t^2 /
    (2 (variance + bound t / 3)))``. Solving for ``t`` at probability ``p`` (``L = log(2/p)``):
    ``t = (bound L / 3 + sqrt((bound L / 3)^2 + 2 n variance L)) / n``. Rigorous (no normal approximation).
    """
    v = check_real("variance", variance, low=0.0)
    n = check_int("n", n, low=1)
    b = check_real("bound", bound, low=0.0)
    p = check_real("p", p, low=0.0, high=1.0, low_open=True, high_open=True)
    L = math.log(2.0 / p)
    a = b * L / 3.0
    return (a + math.sqrt(a * a + 2.0 * n * v * L)) / n


# ----------------------------------------------------------------------------- short DP-SGD loops
def chain_trajectory(model, X, y, mechanism, *, lr, steps, sampling_rate, params0, random_state,
                     project_radius=None):
    """Iterates ``x_0, ..., x_T`` of SGD driven by a mechanism chain, optionally projected.

    Step ``t``: Poisson-sample the batch at rate ``q`` (``q = 1``: every example), backprop, let the
    chain release ``u_t`` (its sum is divided by the expected batch ``q n``), ``x <- x - lr u_t``,
    then ``x <- x min(1, R/||x||)`` if ``project_radius = R`` is given (projected SGD, the setting
    of docs/theory.md §3.1). With ``root = as_seed_sequence(random_state)``, step ``t`` draws from
    ``default_rng(child_sequence(root, t))`` (= ``root.spawn(steps + 1)[t]`` of a fresh root): first the sampling uniforms, then the chain's generator
    is ``default_rng(one 63-bit draw)``; the release is :func:`sims.step.dpsgd_step`.
    Unlike :func:`sims.train.train` this returns every iterate (for averaged iterates and gradient
    norms along the run).

    Parameters
    ----------
    model : sims.models.Model
    X, y : arrays of the training set
    mechanism : sims.mechanisms.Chain
    lr : float > 0 or callable ``t -> lr_t`` (0-based ``t``)
    steps : int >= 1
    sampling_rate : float in (0, 1]
    params0 : array (d,)
    random_state : int >= 0 or SeedSequence
    project_radius : float > 0 or None

    Returns
    -------
    ndarray (steps + 1, d)
    """
    from sims.mechanisms import InitContext

    steps = check_int("steps", steps, low=1)
    q = check_real("sampling_rate", sampling_rate, low=0.0, high=1.0, low_open=True)
    root = _root(random_state)
    R = None if project_radius is None else check_real("project_radius", project_radius, low=0.0, low_open=True)
    sched = lr if callable(lr) else (lambda t, _v=check_real("lr", lr, low=0.0, low_open=True): _v)
    X = np.ascontiguousarray(check_finite_array("X", X, ndim=2), dtype=model.dtype)
    y = np.asarray(y)
    n = X.shape[0]
    B = q * n
    x = np.array(check_finite_array("params0", params0, ndim=1), dtype=model.dtype, copy=True)
    d = model.n_params
    if x.shape != (d,):
        raise ValueError(f"params0 must have shape ({d},), got {x.shape}")
    lay = model.layout
    kids = [child_sequence(root, t) for t in range(steps + 1)]
    spe = steps_per_epoch(q)
    state = mechanism.init(InitContext(model=model, layout=lay, params=x.copy(), total_steps=steps,
                                       steps_per_epoch=spe, expected_batch_size=B, rng=np.random.default_rng(kids[steps])))
    out = np.empty((steps + 1, d), dtype=model.dtype)
    out[0] = x
    for t in range(steps):
        g = np.random.default_rng(kids[t])
        idx = poisson_batch(n, q, g)
        sc = step_context(model, x, X[idx], y[idx], step=t, epoch=t // spe, expected_batch_size=B,
                          rng=np.random.default_rng(derive_seed(g)))
        u, state, _ = dpsgd_step(mechanism, state, sc)
        x = x - float(sched(t)) * np.asarray(u, dtype=model.dtype)
        if R is not None:
            nrm = float(np.linalg.norm(x))
            if nrm > R:
                x = x * (R / nrm)
        out[t + 1] = x
    return out


def ridge_sgd_replicates(X, y, *, weight_decay, clip_norm, noise_multiplier, sampling_rate, steps,
                         n_replicates, lr, project_radius, random_state, record):
    """Many projected DP-SGD runs of ridge regression at once, vectorised over replicates (NumPy).

    Model ``z = w.x + b``, ``theta = [w, b]``, objective
    ``F(theta) = (1/n) sum_i (z_i - y_i)^2 / 2 + (lambda/2) ||theta||^2``. Step ``t`` (0-based) of
    every replicate: Poisson batch at rate ``q``; per-example gradients ``g_i = (z_i - y_i)[x_i, 1]``
    clipped to ``C`` (flat, Abadi et al. 2016); ``u = (sum_i clip(g_i) + sigma C xi)/(q n)``;
    ``theta <- P_R(theta - lr(t) (u + lambda theta))`` with ``P_R`` the projection on the ball of
    radius ``R`` -- the same update as :func:`sims.replicate.replicate_dpsgd` (``model="linear"``),
    but with a learning-rate schedule ``lr(t)`` (e.g. ``1/(lambda (t+1))``, Rakhlin, Shamir &
    Sridharan 2012). Starts at ``theta = 0``. Randomness: ``as_generator(random_state)``, sampling then noise.

    Parameters
    ----------
    record : sequence of int in [1, steps]
        Numbers of completed steps at which the iterates are returned.

    Returns
    -------
    ndarray (len(record), n_replicates, d + 1)
    """
    X = check_finite_array("X", X, ndim=2, dtype=np.float64)
    y = check_finite_array("y", y, ndim=1, dtype=np.float64)
    lam = check_real("weight_decay", weight_decay, low=0.0)
    C = check_real("clip_norm", clip_norm, low=0.0, low_open=True)
    sigma = check_real("noise_multiplier", noise_multiplier, low=0.0)
    q = check_real("sampling_rate", sampling_rate, low=0.0, high=1.0, low_open=True)
    steps = check_int("steps", steps, low=1)
    Rn = check_int("n_replicates", n_replicates, low=1)
    Rad = check_real("project_radius", project_radius, low=0.0, low_open=True)
    rec = [check_int("record", r, low=1, high=steps) for r in record]
    sched = lr if callable(lr) else (lambda t, _v=check_real("lr", lr, low=0.0, low_open=True): _v)
    n, d = X.shape
    Xa = np.hstack([X, np.ones((n, 1))])
    norm_a = np.linalg.norm(Xa, axis=1)
    theta = np.zeros((Rn, d + 1))
    rng = as_generator(random_state)
    out = np.empty((len(rec), Rn, d + 1))
    want = {r: i for i, r in enumerate(rec)}
    for t in range(steps):
        mask = rng.random((Rn, n)) < q if q < 1.0 else np.ones((Rn, n), dtype=bool)
        res = theta @ Xa.T - y                                  # (R, n)
        gn = np.abs(res) * norm_a
        f = np.where(gn > C, C / np.where(gn > 0, gn, 1.0), 1.0)
        coef = np.where(mask, res * f, 0.0)
        u = coef @ Xa                                           # matmul through BLAS
        if sigma > 0:
            u += sigma * C * rng.standard_normal((Rn, d + 1))
        u /= q * n
        theta = theta - float(sched(t)) * (u + lam * theta)
        nrm = np.linalg.norm(theta, axis=1)
        over = nrm > Rad
        theta[over] *= (Rad / nrm[over])[:, None]
        if t + 1 in want:
            out[want[t + 1]] = theta
    return out
