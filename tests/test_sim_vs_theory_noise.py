"""Simulation vs theory, one DP-SGD step (docs/theory.md §5 "Simulation" items 1-4), and the redraws of random freeze.

The mechanisms of :mod:`sims.mechanisms` are run many times on synthetic per-example gradients
(:func:`sims.measure.backprop_from_rows`) and the measured energies are compared with the closed
forms of :mod:`dptheory.noise_signal`. The clean signal of every step is recomputed here with a
naive reference (:func:`sims.measure.clip_rows`), so the noise is measured as ``update - signal``
rather than read from the chain's own metric.
"""
import math

import numpy as np
import pytest
from scipy import stats
from hypothesis import given, settings, strategies as st

from dptheory import noise_signal as ns
from dptheory.validation import child_sequence
from sims.data import make_logistic
from sims.measure import backprop_from_rows, bernstein_halfwidth, clip_rows, mean_se, mechanism_steps
from sims.mechanisms import (InitContext, StepContext, chain, clip, gaussian_noise, public_freeze, random_freeze,
                             random_k)
from sims.models import logistic_regression
from sims.step import dpsgd_step
from sims.train import train

# docs/theory.md §5: d in [5, 500], k in [1, d], B in [8, 256], sigma in [0.3, 5]
cfg = st.fixed_dictionaries({
    "d": st.integers(5, 500), "rho": st.floats(0.0, 1.0), "B": st.integers(8, 256),
    "sigma": st.floats(0.3, 5.0), "C": st.floats(0.1, 5.0), "seed": st.integers(0, 2**31),
})


def _k(c):
    return max(1, min(c["d"], int(round(c["rho"] * c["d"]))))


def _grads(B, d, seed, scale=1.0):
    return scale * np.random.default_rng(seed).standard_normal((B, d))


# ----------------------------------------------------------------------------- 1. noise energy
MECHS = ("dense", "random_k_ctm", "random_k_mtc", "random_freeze", "fixed_mask")


def _mechanism(name, k, d, sigma, C):
    r = 1.0 - k / d  # frozen fraction for freeze / fixed masks: keeps d - floor(r d) coordinates
    if name == "dense":
        return chain(clip(C), gaussian_noise(sigma))
    if name == "random_k_ctm":
        return chain(clip(C), random_k(k, "clip_then_mask"), gaussian_noise(sigma))
    if name == "random_k_mtc":
        return chain(random_k(k, "mask_then_clip"), clip(C), gaussian_noise(sigma))
    if name == "random_freeze":
        return chain(random_freeze(min(r, 0.999), "constant"), clip(C), gaussian_noise(sigma))
    return chain(public_freeze(min(r, 0.999), "random"), clip(C), gaussian_noise(sigma))


def _signal(name, G, keep, C, B):
    """Naive clean signal on the kept coordinates: clip then mask, or mask then clip."""
    if name in ("dense", "random_k_ctm"):
        s = clip_rows(G, C).sum(axis=0) / B
        return np.where(keep, s, 0.0)
    return clip_rows(np.where(keep, G, 0.0), C).sum(axis=0) / B


N_REP = 40
LEVEL_FAIL = 2e-9   # per check (both tails); 12 examples x 5 mechanisms -> 1.2e-7 per test


@settings(max_examples=12)
@given(c=cfg)
def test_noise_energy_on_updated_coordinates_is_k_s2(c):
    """Noise energy on the updated coordinates ~ s^2 chi^2_k (docs/theory.md §2, [S]).

    For each mechanism, ``N_REP`` independent steps; the noise ``update - naive signal`` on the
    kept set S (|S| = k exactly, and the update is exactly 0 off S) is summed over replicates:
    ``sum_r ||noise_r||^2 / s^2 ~ chi^2_{k_total}`` EXACTLY (independent draws). Tolerance: the
    equal-tailed chi-square interval at level ``1 - 2e-9`` (``dptheory.noise_signal.noise_energy_interval``);
    false-failure probability <= 12 examples x 5 mechanisms x 2e-9 = 1.2e-7 for the test.
    """
    d, B, sigma, C = c["d"], c["B"], c["sigma"], c["C"]
    k = _k(c)
    G = _grads(B, d, c["seed"])
    bp = backprop_from_rows(G)
    for name in MECHS:
        k_exp = d if name == "dense" else (k if name.startswith("random_k")
                                           else d - int(ns.n_frozen(min(1 - k / d, 0.999), d)))
        ups, met = mechanism_steps(_mechanism(name, k, d, sigma, C), bp, N_REP, c["seed"] + 1, batch_size=B)
        total = 0.0
        for u in ups:
            keep = u != 0.0          # noise is non-zero a.s. on every kept coordinate
            assert keep.sum() == k_exp, name
            noise = u - _signal(name, G, keep, C, B)
            total += float(noise @ noise)
        lo, hi = ns.noise_energy_interval(k_exp * N_REP, sigma, C, B, level=1 - LEVEL_FAIL)
        assert lo <= total <= hi, (name, total, lo, hi)
        # the chain's own noise metric is the same quantity (up to rounding)
        assert math.isclose(met["noise_sq"].sum(), total, rel_tol=1e-6), name
        assert lo < ns.noise_energy_mean(k_exp * N_REP, sigma, C, B) < hi  # the interval is around the mean


def test_noise_energy_interval_rejects_wrong_scale():
    """Power check: the same statistic with noise std off by 10 % falls outside the interval."""
    d, B, sigma, C, k = 200, 64, 1.0, 1.0, 50
    G = _grads(B, d, 3)
    ups, _ = mechanism_steps(chain(clip(C), random_k(k), gaussian_noise(sigma * 1.1)),
                             backprop_from_rows(G), N_REP, 5, batch_size=B)
    keep = ups != 0
    sig = np.array([_signal("random_k_ctm", G, kp, C, B) for kp in keep])
    total = float(((ups - sig) ** 2).sum())
    lo, hi = ns.noise_energy_interval(k * N_REP, sigma, C, B, level=1 - LEVEL_FAIL)
    assert total > hi


def test_frozen_coordinates_bitwise_unchanged_in_train():
    """A train() run with random freeze (constant ramp, 5 steps within the first epoch of 8) leaves exactly floor(r d)
    coordinates bit-for-bit at their initial value and moves all others (noise is a.s. non-zero);
    a fixed public-random mask does the same over several epochs."""
    ds = make_logistic(400, 30, random_state=0)
    model = logistic_regression(30)
    d = model.n_params
    p0 = np.random.default_rng(1).standard_normal(d)
    for mech, steps, r in ((chain(random_freeze(0.6, "constant"), clip(1.0), gaussian_noise(1.0)), 5, 0.6),
                           (chain(public_freeze(0.3, "random"), clip(1.0), gaussian_noise(1.0)), 40, 0.3)):
        res = train(model, ds, steps=steps, batch_size=40, mechanism=mech, lr=0.5, params0=p0, random_state=7)
        same = res.params == p0
        assert same.sum() == math.floor(r * d)
        assert res.steps_done == steps


# ----------------------------------------------------------------------------- 2. clip then mask
@settings(max_examples=10)
@given(c=cfg)
def test_clip_then_mask_retains_k_over_d(c):
    """E||m * g_bar||^2 / ||g_bar||^2 = k/d (dptheory.noise_signal.signal_random_k), [S].

    Per replicate the ratio ``X = sum_{i in S} p_i`` with ``p_i = g_bar_i^2/||g_bar||^2`` and S a
    uniform k-subset; its exact variance (sampling without replacement) is
    ``k (d-k)/(d-1) * (1/d) sum_i (p_i - 1/d)^2`` and ``|X - k/d| <= 1``. Tolerance: Bernstein
    half-width (sims.measure.bernstein_halfwidth) at probability 1e-8 per example, i.e. a rigorous
    false-failure probability <= 10 x 1e-8 = 1e-7 for the test.
    """
    d, B, C = c["d"], c["B"], c["C"]
    k = _k(c)
    G = _grads(B, d, c["seed"], scale=2.0 / math.sqrt(d))
    gbar = clip_rows(G, C).sum(axis=0) / B
    g2 = float(gbar @ gbar)
    n_rep = 400
    ups, met = mechanism_steps(chain(clip(C), random_k(k, "clip_then_mask"), allow_non_private=True),
                               backprop_from_rows(G), n_rep, c["seed"], batch_size=B)
    ratios = (ups ** 2).sum(axis=1) / g2
    # every released coordinate is the clean clipped mean (no noise, no rescaling)
    nz = ups != 0
    assert np.allclose(ups[nz], np.broadcast_to(gbar, ups.shape)[nz], rtol=1e-12, atol=0)
    p = gbar ** 2 / g2
    var = k * (d - k) / (d - 1) * np.mean((p - 1 / d) ** 2) if d > 1 else 0.0
    tol = bernstein_halfwidth(var, n_rep, 1.0, 1e-8) + 1e-12
    theory = ns.signal_random_k(k, d, g2) / g2
    assert abs(ratios.mean() - theory) <= tol
    assert np.allclose(met["signal_sq_after_mask"] / g2, ratios, rtol=1e-9)


# ----------------------------------------------------------------------------- 3. mask then clip
mtc_cfg = st.fixed_dictionaries({
    "d": st.integers(200, 500), "B": st.integers(8, 256), "sigma": st.floats(0.3, 5.0),
    "C": st.floats(0.1, 5.0), "mu_frac": st.floats(0.05, 1.0), "seed": st.integers(0, 2**31),
})


@settings(max_examples=5)
@given(c=mtc_cfg)
def test_mask_then_clip_signal_flat_and_nsr_proportional_to_k(c):
    """Mask then clip, all-clipped regime, spread-out gradients (docs/theory.md §2; dptheory
    ``signal_mask_then_clip`` / ``nsr_mask_then_clip``, tagged [D], an approximation).

    Per-example gradients ``g_i = mu + xi_i`` with ``xi_i ~ N(0, tau^2 I_d)``, ``mu`` a random
    vector with ``||mu|| = mu_frac tau sqrt(d)``, ``tau`` chosen so that every masked norm is
    > 20 C (asserted: every example is clipped at every k). k ranges over d, d/2, d/4, d/8 (>= 25:
    the approximation ``||m g_i|| ~ sqrt(rho)||g_i||`` needs k large; its O(1/k) error is ~6 % at
    k = 25). Claims tested:

    * signal: mean over masks of ``||sum_i clip(m g_i)/B||^2`` is within 10 % of the dense
      clipped-mean energy ``||g_bar||^2`` (plus 5.5 Monte Carlo standard errors of the mean of
      120 i.i.d. replicates; normal approximation, two-sided false-failure ~ 4e-8 per k);
    * NSR = (mean noise energy)/(mean signal energy) is within the same 10 % of
      ``nsr_mask_then_clip(k, d, ...) = (k/d) nsr_dense``, i.e. proportional to k; the noise part
      uses the exact chi-square interval at level 1 - 1e-8.

    False-failure probability <= 5 examples x 4 k's x (4e-8 + 1e-8) = 1e-6.
    """
    d, B, sigma, C = c["d"], c["B"], c["sigma"], c["C"]
    r = np.random.default_rng(c["seed"])
    tau = 1.0
    mu = r.standard_normal(d)
    mu *= c["mu_frac"] * tau * math.sqrt(d) / np.linalg.norm(mu)
    G = mu + tau * r.standard_normal((B, d))
    ks = sorted({kk for kk in (d, d // 2, d // 4, d // 8) if kk >= 25}, reverse=True)
    # scale so that every masked gradient is clipped: C is kept, gradients are scaled up
    G *= 20 * C / (tau * math.sqrt(min(ks)) * 0.5)
    gbar = clip_rows(G, C).sum(axis=0) / B
    dense2 = float(gbar @ gbar)
    bp = backprop_from_rows(G)
    n_rep = 120
    nsr_meas = []
    for k in ks:
        ups, met = mechanism_steps(chain(random_k(k, "mask_then_clip"), clip(C), gaussian_noise(sigma)),
                                   bp, n_rep, c["seed"] + k, batch_size=B)
        assert np.all(met["clipped_fraction"] == 1.0)
        sig = met["signal_sq_after_mask"]
        m, se = mean_se(sig)
        th = ns.signal_mask_then_clip(dense2)
        assert abs(m / th - 1) <= 0.10 + 5.5 * se / th, (k, m / th)
        lo, hi = ns.noise_energy_interval(k * n_rep, sigma, C, B, level=1 - 1e-8)
        noise_mean = met["noise_sq"].mean()
        assert lo / n_rep <= noise_mean <= hi / n_rep
        nsr = noise_mean / m
        nsr_th = ns.nsr_mask_then_clip(k, d, sigma, C, B, dense2)
        lo_r = (lo / n_rep / ns.noise_energy_mean(k, sigma, C, B)) / (1.10 + 5.5 * se / th)
        hi_r = (hi / n_rep / ns.noise_energy_mean(k, sigma, C, B)) / (0.90 - 5.5 * se / th)
        assert lo_r <= nsr / nsr_th <= hi_r, (k, nsr / nsr_th)
        nsr_meas.append(nsr / k)
    # NSR / k is flat across k (same tolerance chain, both ends): proportional to k
    assert max(nsr_meas) / min(nsr_meas) <= (1.10 / 0.90) * 1.05


# ----------------------------------------------------------------------------- 4. rescaled random-k
@settings(max_examples=4)
@given(d_in=st.integers(5, 60), rho=st.floats(0.05, 1.0), sigma=st.floats(0.3, 5.0),
       C=st.floats(0.1, 5.0), order=st.sampled_from(("clip_then_mask", "mask_then_clip")),
       seed=st.integers(0, 2**31))
def test_rescaled_random_k_equals_unscaled_with_larger_step(d_in, rho, sigma, C, order, seed):
    """Rescaled random-k with step eta == unscaled random-k with step eta d/k (same seeds), pathwise
    (dptheory.noise_signal.rescaled_random_k_moments docstring; docs/theory.md §2). Deterministic up to
    rounding: ``allclose(rtol=1e-9)`` after 15 train() steps; a control with a different step fails."""
    ds = make_logistic(300, d_in, random_state=seed % 1000)
    model = logistic_regression(d_in)
    d = model.n_params
    k = max(1, min(d, int(round(rho * d))))
    eta = 0.05
    kw = dict(steps=15, batch_size=32, random_state=seed, params0=np.zeros(d))
    a = train(model, ds, mechanism=chain(clip(C), random_k(k, order, rescale=True), gaussian_noise(sigma))
              if order == "clip_then_mask" else
              chain(random_k(k, order, rescale=True), clip(C), gaussian_noise(sigma)), lr=eta, **kw)
    mk = (lambda: chain(clip(C), random_k(k, order), gaussian_noise(sigma))) if order == "clip_then_mask" \
        else (lambda: chain(random_k(k, order), clip(C), gaussian_noise(sigma)))
    b = train(model, ds, mechanism=mk(), lr=eta * d / k, **kw)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-9, atol=1e-12)
    if k < d:
        c_ = train(model, ds, mechanism=mk(), lr=eta, **kw)
        assert not np.allclose(a.params, c_.params, rtol=1e-6)


# ----------------------------------------------------------------------------- 5. random freeze redrawn every N steps
def _freeze_trainable(mech, d, T, spe, seed):
    """Bool (T, d): coordinate j trains at step t (released update non-zero; the noise on a trainable
    coordinate is a.s. non-zero, a frozen one gets exactly 0). One run of ``mech`` through
    :func:`sims.step.dpsgd_step`, with the contexts train() gives: ``total_steps = T``,
    ``steps_per_epoch = spe``, step ``t`` in epoch ``t // spe``; the generators are children of
    ``seed`` (step t: child t; init: child T)."""
    G = _grads(3, d, seed % 1000 + 1)
    bp = backprop_from_rows(G)
    p = np.zeros(d)
    root = np.random.SeedSequence(seed)
    state = mech.init(InitContext(model=None, layout=bp.layout, params=p, total_steps=T, steps_per_epoch=spe,
                                  expected_batch_size=3.0, rng=np.random.default_rng(child_sequence(root, T))))
    out = np.empty((T, d), dtype=bool)
    for t in range(T):
        sc = StepContext(model=None, layout=bp.layout, step=t, epoch=t // spe, params=p, bp=bp,
                         expected_batch_size=3.0, rng=np.random.default_rng(child_sequence(root, t)))
        u, state, _ = dpsgd_step(mech, state, sc)
        out[t] = u != 0
    return out


#: (ramp, r_final, refresh, replicates); all with d = 40, spe = 8 (constant) or 6 (linear), T = 24 or 30.
_REDRAW_CASES = {
    "constant_refresh_4": ("constant", 0.75, 4, 500),     # 6 draws: coverage 32.9, Var U_j 18.0
    "constant_per_epoch": ("constant", 0.75, None, 300),  # 3 draws: coverage 23.1, Var U_j 36.0
    "linear_refresh_4": ("linear", 0.9, 4, 300),          # 8 draws, spe = 6: the ramp lags (E U_j 17.4, not 16.5)
}


@pytest.mark.parametrize("case", sorted(_REDRAW_CASES))
def test_random_freeze_redraws_match_update_counts_and_coverage(case):
    """``sims.mechanisms.random_freeze(..., refresh=N)`` against :func:`dptheory.noise_signal.freeze_draws`,
    :func:`~dptheory.noise_signal.freeze_update_counts` and :func:`~dptheory.noise_signal.freeze_coverage`.

    Deterministic, every run (probability 0): the trainable set changes only at the draw steps
    ``t_i`` of ``freeze_draws`` and has ``d - n_frozen(r_i, d)`` coordinates in draw ``i`` (the
    linear case checks the lag: a draw at step 16 of epoch 2 keeps epoch 2's rate for steps 16-19,
    of which 18-19 are in epoch 3); hence ``sum_j U_j = d E U_j`` in every run.

    Monte Carlo over R runs: (a) the number of coordinates trained at least once, against
    ``freeze_coverage``'s mean, with Bernstein's inequality (:func:`sims.measure.bernstein_halfwidth`)
    on the i.i.d. runs using the closed-form variance and the range ``[d - min_i n_i, d]``:
    rigorous, false failure <= 1e-7 (half-width 0.80 at R = 500 around 32.9 covered, so the
    never-updated count 7.1 off by 1.5x, 10.7 or 4.7, is outside; 0.95 around 23.1 per epoch);
    (b) ``Var U_j`` via the per-run mean of
    ``(U_j - E U_j)^2`` over the coordinates (unbiased for ``Var U_j``; i.i.d. over runs), two-sided
    Student-t at 1e-7 per side (normal approximation of the mean of R >= 300 bounded terms;
    half-widths 5-6 % of 18.0, 36.0 and 16.0, so a 1.5x error fails): false failure <= 2e-7.
    Total <= 3e-7 per case. Measured: coverage 32.94, 22.99, 40; Var U_j 17.79, 36.57, 16.13.
    """
    kind, r_final, refresh, R = _REDRAW_CASES[case]
    d = 40
    T, spe = (24, 8) if kind == "constant" else (30, 6)
    mech = chain(random_freeze(r_final, kind, refresh=refresh), clip(1.0), gaussian_noise(1.0))
    starts, lengths, rates = ns.freeze_draws(r_final, T, spe, kind, refresh)
    counts = ns.n_frozen(rates, d)
    per_step_frozen = np.repeat(counts, lengths)
    mean_u, var_u = ns.freeze_update_counts(r_final, d, T, spe, kind, refresh)
    mean_cov, var_cov = ns.freeze_coverage(r_final, d, T, spe, kind, refresh)
    cov, sq_dev = np.empty(R), np.empty(R)
    for rep in range(R):
        tr = _freeze_trainable(mech, d, T, spe, 4000 + 1000 * sorted(_REDRAW_CASES).index(case) + rep)
        np.testing.assert_array_equal(d - tr.sum(axis=1), per_step_frozen)
        changes = [t for t in range(1, T) if not np.array_equal(tr[t], tr[t - 1])]
        assert set(changes) <= set(starts.tolist()), changes
        U = tr.sum(axis=0)
        assert U.sum() == pytest.approx(d * mean_u, abs=1e-9)
        cov[rep] = np.count_nonzero(U)
        sq_dev[rep] = float(np.mean((U - mean_u) ** 2))
    lo = d - int(counts.min())
    half = bernstein_halfwidth(var_cov, R, max(mean_cov - lo, d - mean_cov), 1e-7)
    assert abs(cov.mean() - mean_cov) <= half, (cov.mean(), mean_cov, half)
    m, se = mean_se(sq_dev)
    tq = float(stats.t.isf(1e-7, R - 1))
    assert abs(m - var_u) <= tq * se, (m, var_u, se)
    if kind == "linear":
        assert mean_cov == d and var_cov == 0.0 and np.all(cov == d)   # the first draw freezes nothing
