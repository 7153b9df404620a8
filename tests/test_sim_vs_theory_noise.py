"""Simulation vs theory, one DP-SGD step (docs/theory.md §5 "Simulation" items 1-4).

The mechanisms of :mod:`sims.mechanisms` are run many times on synthetic per-example gradients
(:func:`sims.measure.backprop_from_rows`) and the measured energies are compared with the closed
forms of :mod:`dptheory.noise_signal`. The clean signal of every step is recomputed here with a
naive reference (:func:`sims.measure.clip_rows`), so the noise is measured as ``update - signal``
rather than read from the chain's own metric.
"""
import math

import numpy as np
from hypothesis import given, settings, strategies as st

from dptheory import noise_signal as ns
from sims.data import make_logistic
from sims.measure import backprop_from_rows, bernstein_halfwidth, clip_rows, mean_se, mechanism_steps
from sims.mechanisms import chain, clip, gaussian_noise, public_freeze, random_freeze, random_k
from sims.models import logistic_regression
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
