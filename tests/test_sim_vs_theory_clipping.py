"""Simulation vs theory: clipping bias (docs/theory.md §5 "Simulation" item 8; section 4).

Per-example gradients are drawn from a known law and clipped by the simulator's own code
(``sims.models.clipped_grad_sum`` on a Backprop built from the rows, ``sims.measure.backprop_from_rows``);
the Monte Carlo mean is compared with ``dptheory.clipping``. Tolerances are rigorous Bernstein
half-widths (``sims.measure.bernstein_halfwidth``), using that clipping is the projection on a ball
(1-Lipschitz), so by the Gaussian Poincare inequality ``Var <u, clip(g)> <= s^2`` for g ~ N(mu, s^2 I)
and any unit u, and ``|<u, clip(g)>| <= C``.
"""
import math

import numpy as np
from hypothesis import given, settings, strategies as st

from dptheory import clipping as cl
from sims.measure import backprop_from_rows, bernstein_halfwidth
from sims.models import clipped_grad_sum, linear_regression
from sims.train import train


@settings(max_examples=10)
@given(m=st.floats(-5.0, 5.0), s=st.floats(0.05, 5.0), C=st.floats(0.1, 5.0), seed=st.integers(0, 2**31))
def test_1d_clipped_mean_matches_closed_form(m, s, C, seed):
    """E clip_C(g), g ~ N(m, s^2), 1-D: Monte Carlo (200 000 draws clipped by clipped_grad_sum) vs
    ``dptheory.clipping.clipped_mean_1d``. Bernstein with Var <= min(s^2, C^2), range 2C, at p = 1e-8:
    rigorous false-failure <= 10 x 1e-8 = 1e-7 for the test."""
    M = 200_000
    g = m + s * np.random.default_rng(seed).standard_normal((M, 1))
    total, norms, f = clipped_grad_sum(backprop_from_rows(g), C)
    est = total[0] / M
    tol = bernstein_halfwidth(min(s * s, C * C), M, 2 * C, 1e-8)
    assert abs(est - cl.clipped_mean_1d(m, s, C)) <= tol
    assert abs(est - m - cl.clip_bias_1d(m, s, C)) <= tol + 1e-12


@settings(max_examples=5)
@given(d=st.integers(2, 40), m=st.floats(0.1, 5.0), s=st.floats(0.05, 2.0), C=st.floats(0.1, 5.0),
       seed=st.integers(0, 2**31))
def test_spherical_shrinkage_parallel_and_perpendicular(d, m, s, C, seed):
    """g = mu + xi, xi ~ N(0, s^2 I_d), ||mu|| = m: the mean clipped gradient (clipped_grad_sum) is
    ``c mu`` with c = ``dptheory.clipping.shrinkage_factor`` (2-D quadrature):

    * parallel component ``<mean, mu/m>`` within the Bernstein half-width of c m;
    * each of the d - 1 perpendicular components (an orthonormal basis) within its half-width of 0
      (clipping shrinks, never rotates);
    * ``||b|| = |c - 1| m <= E(||g|| - C)_+`` (estimated, minus its half-width) <= ``E||g||^2/(4C)``.

    Per example (d + 1) checks at p = 1e-9 each (<= 41e-9), 5 examples: rigorous false-failure <= 3e-7.
    """
    M = 40_000
    r = np.random.default_rng(seed)
    u = r.standard_normal(d)
    u /= np.linalg.norm(u)
    G = m * u + s * r.standard_normal((M, d))
    total, norms, f = clipped_grad_sum(backprop_from_rows(G), C)
    mean = total / M
    c = cl.shrinkage_factor(m, s, d, C)
    # orthonormal basis whose first vector is u
    Q, _ = np.linalg.qr(np.column_stack([u, r.standard_normal((d, d - 1))]))
    Q[:, 0] *= np.sign(Q[:, 0] @ u)
    comps = Q.T @ mean
    tol = bernstein_halfwidth(min(s * s, C * C), M, 2 * C, 1e-9)
    assert abs(comps[0] - c * m) <= tol, (comps[0], c * m, tol)
    assert np.all(np.abs(comps[1:]) <= tol)
    # ||b|| <= E(||g|| - C)_+ : excess is in [0, ||g||]; variance <= E||g||^2 = m^2 + d s^2
    excess = cl.bias_bound_excess(norms, C)
    tol_e = bernstein_halfwidth(m * m + d * s * s, M, m + 10 * s * math.sqrt(d) + C, 1e-9)
    assert abs(c - 1) * m <= excess + tol_e
    assert excess <= cl.bias_bound_second_moment(m * m + d * s * s, C) + tol_e


@settings(max_examples=10)
@given(d=st.integers(1, 50), B=st.integers(1, 200), C=st.floats(0.1, 5.0), scale=st.floats(0.01, 10.0),
       seed=st.integers(0, 2**31))
def test_empirical_bias_below_mean_excess(d, B, C, scale, seed):
    """For ANY sample, ``||mean clip(g_i) - mean g_i|| <= mean (||g_i|| - C)_+`` (triangle inequality;
    ``dptheory.clipping.bias_bound_excess``), and the simulator's clipped sum matches a naive loop.
    Deterministic (rounding slack 1e-9)."""
    G = scale * np.random.default_rng(seed).standard_normal((B, d)) * np.random.default_rng(seed + 1).exponential(1, (B, 1))
    total, norms, f = clipped_grad_sum(backprop_from_rows(G), C)
    naive = sum(g * min(1.0, C / np.linalg.norm(g)) if np.linalg.norm(g) > 0 else g for g in G)
    np.testing.assert_allclose(total, naive, rtol=1e-10, atol=1e-12)
    b = np.linalg.norm(total / B - G.mean(axis=0))
    assert b <= cl.bias_bound_excess(norms, C) * (1 + 1e-9) + 1e-12


def test_chen_wu_hong_fixed_points_of_sims_clipped_gd():
    """Chen, Wu & Hong 2020 counterexample: f(x) = (1/2) mean_i (x - a_i)^2, a = (-3, 3), C = 1.
    The simulator's clipped full-batch GD (train(mode="clip_only"), q = 1, linear regression on
    X = [[1], [1]], y = a, no bias: per-example gradient x - a_i) leaves every x in
    ``dptheory.clipping.chen_wu_hong_fixed_points() = [-2, 2]`` bitwise unchanged, although the
    minimiser is 0; started outside it converges to the nearest end point, not to 0."""
    lo, hi = cl.chen_wu_hong_fixed_points((-3.0, 3.0), 1.0)
    assert (lo, hi) == (-2.0, 2.0)
    X = np.ones((2, 1))
    y = np.array([-3.0, 3.0])
    ds = type("D", (), {"X_train": X, "y_train": y})()
    model = linear_regression(1, bias=False)
    for x0 in np.linspace(lo, hi, 9):
        res = train(model, ds, steps=5, sampling_rate=1.0, mode="clip_only", clip_norm=1.0, lr=0.5,
                    params0=np.array([x0]), random_state=0)
        assert res.params[0] == x0
        # and the sims clipped-GD direction is exactly 0 there, as dptheory says
        assert cl.clipped_gd_direction_1d(x0, y, 1.0) == 0.0
    for x0, end in ((5.0, hi), (-4.0, lo)):
        res = train(model, ds, steps=200, sampling_rate=1.0, mode="clip_only", clip_norm=1.0, lr=0.5,
                    params0=np.array([x0]), random_state=0)
        assert abs(res.params[0] - end) < 1e-9
    # control: without clipping GD converges to the true minimiser 0
    res = train(model, ds, steps=200, sampling_rate=1.0, mode="nonprivate", lr=0.5, params0=np.array([1.5]),
                random_state=0)
    assert abs(res.params[0]) < 1e-9
