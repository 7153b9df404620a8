"""Entries for the public ``dptheory`` functions that only combine other closed forms.

A composition (a bisection, a min over orders, an argmin, a ratio of two derived quantities)
has nothing to derive: its parts are derived in the other proof modules. Each entry here checks
at a few points that the function IS the combination its docstring states (tolerance in the
entry); ``tests/test_compositions.py`` tests the same statements over wider ranges.
"""
from __future__ import annotations

import math

import numpy as np
import sympy as sp

from . import derivation
from .common import check_points


def _composition(name, *covers):
    return derivation(name, kind="composition", covers=covers)


def _fine(show, what, ok):
    show(what, sp.true if ok else sp.false)
    return bool(ok)


# ----------------------------------------------------------------------------- accounting, gdp, events
@_composition("epsilon = min over orders of epsilon_from_rdp(T * rdp_subsampled_gaussian)", "accounting.epsilon")
def epsilon_min_over_orders(show):
    """The returned order attains the returned eps (rtol 1e-12), which is <= the grid minimum; explicit orders: equal."""
    from dptheory.accounting import (
        DEFAULT_ORDERS,
        epsilon,
        epsilon_from_rdp,
        rdp_subsampled_gaussian,
    )
    pairs, ok = [], True
    for q, s, T, d, conv in ((0.01, 1.1, 1000, 1e-5, "balle"), (0.1, 2.0, 50, 1e-6, "classic"), (1.0, 3.0, 1, 1e-5, "balle")):
        e, a = epsilon(q, s, T, d, conversion=conv)
        if conv == "balle":
            grid = epsilon_from_rdp(DEFAULT_ORDERS, T * rdp_subsampled_gaussian(DEFAULT_ORDERS, q, s), d)[0]
            pairs.append((e, epsilon_from_rdp([a], [T * rdp_subsampled_gaussian(a, q, s)[0]], d)[0]))
            ok &= e <= grid * (1 + 1e-12)
        orders = np.array([2.0, 4.0, 8.0, 16.0])
        pairs.append((epsilon(q, s, T, d, orders=orders)[0],
                      epsilon_from_rdp(orders, T * rdp_subsampled_gaussian(orders, q, s), d)[0]))
    ok &= check_points(show, "epsilon", pairs, rtol=1e-12)
    return bool(ok)


@_composition("calibrate_noise: the smallest sigma with epsilon(q, sigma, T, delta) <= target", "accounting.calibrate_noise")
def calibrate_noise_root(show):
    """epsilon at the returned sigma meets the target; at sigma (1 - 1e-5) it does not."""
    from dptheory.accounting import calibrate_noise, epsilon
    ok = True
    for q, T, e, d in ((0.01, 500, 2.0, 1e-5), (1.0, 10, 5.0, 1e-6)):
        s = calibrate_noise(q, T, e, d)
        ok &= epsilon(q, s, T, d)[0] <= e and epsilon(q, s * (1 - 1e-5), T, d)[0] > e
    return _fine(show, "target met at sigma, missed at sigma (1 - 1e-5)", ok)


@_composition("calibrate_noise_selected: the smallest sigma with epsilon_selected_gaussian <= target, "
              "refused at or below epsilon_selection_limit", "selection.calibrate_noise_selected")
def calibrate_noise_selected_root(show):
    """epsilon_selected_gaussian at the returned sigma meets the target; at sigma (1 - 1e-5) it does not; a
    target at the sigma -> inf limit raises."""
    from dptheory.selection import calibrate_noise_selected, epsilon_selected_gaussian, epsilon_selection_limit
    ok = True
    for q, T, e, d, k, es in ((0.01, 1000, 3.0, 1e-5, 10, 1.0), (1.0, 3, 8.0, 1e-6, 1, 1.0)):
        s = calibrate_noise_selected(q, T, e, d, k, es)
        ok &= (epsilon_selected_gaussian(q, s, k, es, T, d)[0] <= e
               < epsilon_selected_gaussian(q, s * (1 - 1e-5), k, es, T, d)[0])
        try:
            calibrate_noise_selected(q, T, epsilon_selection_limit(q, k, es, T, d)[0], d, k, es)
            ok = False
        except ValueError:
            pass
    return _fine(show, "target met at sigma, missed at sigma (1 - 1e-5); the limit refused", ok)


@_composition("steps_per_epoch = max(1, round(1/q)); steps_for_epochs = epochs * steps_per_epoch",
              "accounting.steps_per_epoch", "accounting.steps_for_epochs")
def steps_convention(show):
    from dptheory.accounting import steps_for_epochs, steps_per_epoch
    ok = all(steps_per_epoch(q) == max(1, round(1 / q)) for q in (1.0, 0.7, 0.5, 0.01, 256 / 60000))
    ok &= all(steps_for_epochs(q, E) == E * max(1, round(1 / q)) for q in (0.3, 0.01) for E in (1, 7))
    return _fine(show, "both conventions at 7 points", ok)


@_composition("epsilon_for_mu: the smallest eps >= 0 with delta_gdp(mu, eps) <= delta", "gdp.epsilon_for_mu")
def epsilon_for_mu_root(show):
    from dptheory.gdp import delta_gdp, epsilon_for_mu
    ok = True
    for mu, d in ((1.0, 1e-5), (0.3, 1e-3), (4.0, 1e-10)):
        e = epsilon_for_mu(mu, d)
        ok &= delta_gdp(mu, e) <= d * (1 + 1e-9) and delta_gdp(mu, max(0.0, e - 1e-6)) > d
    ok &= epsilon_for_mu(0.01, 0.5) == 0.0 and epsilon_for_mu(math.inf, 1e-5) == math.inf
    return _fine(show, "root of delta_gdp at 3 points; 0 and inf edge cases", ok)


@_composition("epsilon_gdp = epsilon_for_mu(gdp_mu(q, sigma, T), delta)", "gdp.epsilon_gdp")
def epsilon_gdp_chain(show):
    from dptheory.gdp import epsilon_for_mu, epsilon_gdp, gdp_mu
    pairs = [(epsilon_gdp(q, s, T, d, sampling=m), epsilon_for_mu(gdp_mu(q, s, T, m), d))
             for q, s, T, d, m in ((256 / 60000, 1.1, 14040, 1e-5, "poisson"), (0.01, 0.8, 100, 1e-6, "uniform"))]
    return check_points(show, "epsilon_gdp", pairs, rtol=1e-14)


@_composition("event RDP: Gaussian = rdp_gaussian, PoissonGaussian = steps * rdp_subsampled_gaussian, NonPrivate = inf",
              "events.Gaussian.rdp", "events.PoissonGaussian.rdp", "events.NonPrivate.rdp")
def event_rdp(show):
    from dptheory.accounting import rdp_gaussian, rdp_subsampled_gaussian
    from dptheory.events import Gaussian, NonPrivate, PoissonGaussian
    a = np.array([1.5, 2.0, 10.0])
    ok = np.array_equal(Gaussian(1.3).rdp(a), rdp_gaussian(a, 1.3))
    ok &= np.array_equal(PoissonGaussian(0.02, 1.1, 77).rdp(a), 77 * rdp_subsampled_gaussian(a, 0.02, 1.1))
    ok &= bool(np.all(np.isinf(NonPrivate("raw top-k").rdp(a))))
    return _fine(show, "the three rdp methods at 3 orders", ok)


@_composition("epsilon_of: one event -> epsilon; a sequence -> epsilon_from_rdp of the summed RDP on DEFAULT_ORDERS",
              "events.epsilon_of")
def epsilon_of_sum(show):
    from dptheory.accounting import DEFAULT_ORDERS, epsilon, epsilon_from_rdp
    from dptheory.events import Gaussian, NonPrivate, PoissonGaussian, epsilon_of
    ev = [PoissonGaussian(0.01, 1.1, 300), Gaussian(5.0), PoissonGaussian(0.05, 2.0, 20)]
    total = sum(e.rdp(DEFAULT_ORDERS) for e in ev)
    pairs = [(epsilon_of(ev, 1e-5)[0], epsilon_from_rdp(DEFAULT_ORDERS, total, 1e-5)[0]),
             (epsilon_of(ev[0], 1e-5)[0], epsilon(0.01, 1.1, 300, 1e-5)[0]),
             (epsilon_of(ev[1], 1e-5)[0], epsilon(1.0, 5.0, 1, 1e-5)[0])]
    ok = check_points(show, "epsilon_of", pairs, rtol=1e-14)
    ok &= epsilon_of(ev + [NonPrivate("x")], 1e-5) == (math.inf, None)
    return bool(ok)


# ----------------------------------------------------------------------------- noise_signal
_NSR = (7, 40, 1.1, 1.0, 16.0, 0.5)      # k, d, sigma, clip, batch, signal_sq


@_composition("NSRs are noise energy / signal energy of their derived parts",
              "noise_signal.nsr_dense", "noise_signal.nsr_random_k", "noise_signal.nsr_mask_then_clip",
              "noise_signal.nsr_fixed_set", "noise_signal.nsr_top_k_public")
def nsr_ratios(show):
    """nsr_dense = noise_energy/signal; random-k = noise_energy_mean/signal_random_k (= dense); mask-then-clip =
    noise_energy_mean/signal_mask_then_clip; fixed set and public top-k = k s^2/(phi signal) (rtol 1e-14)."""
    from dptheory import noise_signal as ns
    k, d, sg, c, b, g2 = _NSR
    phi = 0.6
    pairs = [(ns.nsr_dense(d, sg, c, b, g2), ns.noise_energy(d, sg, c, b) / g2),
             (ns.nsr_random_k(k, d, sg, c, b, g2), ns.noise_energy_mean(k, sg, c, b) / ns.signal_random_k(k, d, g2)),
             (ns.nsr_random_k(k, d, sg, c, b, g2), ns.nsr_dense(d, sg, c, b, g2)),
             (ns.nsr_mask_then_clip(k, d, sg, c, b, g2), ns.noise_energy_mean(k, sg, c, b) / ns.signal_mask_then_clip(g2)),
             (ns.nsr_fixed_set(k, d, phi, sg, c, b, g2), ns.noise_energy_mean(k, sg, c, b) / (phi * g2)),
             (ns.nsr_top_k_public(k, d, phi, sg, c, b, g2), ns.nsr_fixed_set(k, d, phi, sg, c, b, g2))]
    return check_points(show, "nsr_*", pairs, rtol=1e-14)


@_composition("fixed_set_helps iff nsr_fixed_set < nsr_dense iff phi > k/d", "noise_signal.fixed_set_helps")
def fixed_set_helps_rule(show):
    from dptheory import noise_signal as ns
    k, d, sg, c, b, g2 = _NSR
    ok = all(ns.fixed_set_helps(k, d, phi) == (ns.nsr_fixed_set(k, d, phi, sg, c, b, g2) < ns.nsr_dense(d, sg, c, b, g2))
             == (phi > k / d) for phi in (0.05, 0.17, 0.18, 0.9, 1.0))
    return _fine(show, "the three statements agree at 5 phi", ok)


@_composition("nsr_top_k_noisy = kept noise / kept signal of noisy_top_k_energies", "noise_signal.nsr_top_k_noisy")
def nsr_top_k_noisy_ratio(show):
    from dptheory.noise_signal import noisy_top_k_energies, nsr_top_k_noisy
    g = np.array([2.0, -1.0, 0.5, 0.0, 0.3, 3.0, -0.25, 0.1])
    n, s, _ = noisy_top_k_energies(g, 3, 0.8, 1.0, 1.0)
    return check_points(show, "nsr_top_k_noisy", [(nsr_top_k_noisy(g, 3, 0.8, 1.0, 1.0), n / s)], rtol=1e-14)


@_composition("freeze_schedule and n_frozen follow their docstring formulas",
              "noise_signal.freeze_schedule", "noise_signal.n_frozen")
def freeze_schedule_formulas(show):
    from dptheory.noise_signal import freeze_schedule, n_frozen
    r, E = 0.8, 9
    e = np.arange(E)
    ok = np.allclose(freeze_schedule(r, E, "linear"), r * e / (E - 1), rtol=0, atol=1e-15)
    ok &= np.allclose(freeze_schedule(r, E, "cosine"), r * (1 - np.cos(np.pi * e / (E - 1))) / 2, rtol=0, atol=1e-15)
    ok &= np.array_equal(freeze_schedule(r, E, "step"), np.where(e >= E // 2, r, 0.0))
    ok &= np.array_equal(freeze_schedule(r, E, "constant"), np.full(E, r)) and np.array_equal(freeze_schedule(r, 1), [r])
    ok &= n_frozen(0.3, 10) == 3 and n_frozen(0.999999, 10) == 9 and n_frozen(1.0, 10) == 10 and n_frozen(0.0, 5) == 0
    return _fine(show, "four schedules and the floor with its guard", ok)


@_composition("sparsification_helps iff optimal_keep_fraction < 1; spread_exponent is SPREADS or the number",
              "noise_signal.sparsification_helps", "noise_signal.spread_exponent")
def sparsification_rule(show):
    from dptheory.noise_signal import (
        SPREADS,
        optimal_keep_fraction,
        sparsification_helps,
        spread_exponent,
    )
    ok = spread_exponent("worst_case") == SPREADS["worst_case"] == 1.0 and spread_exponent(0.7) == 0.7
    ok &= spread_exponent("spread_out") == 0.5
    for args in ((1000, 3.0, 16, 1, 1, 0.1, 1, 100), (10, 0.1, 16, 1, 1, 0.1, 1, 100)):
        for sp_ in ("worst_case", "spread_out", 0.75):
            ok &= sparsification_helps(*args, spread=sp_) == (optimal_keep_fraction(*args, spread=sp_) < 1)
    return _fine(show, "at 2 x 3 points", ok)


# ----------------------------------------------------------------------------- convergence
@_composition("fixed_set_bound = approx + convex_optimal_bound(R_S, G_S, T, k sigma^2 C^2/B^2)", "convergence.fixed_set_bound")
def fixed_set_bound_sum(show):
    from dptheory.convergence import convex_optimal_bound, fixed_set_bound
    from dptheory.noise_signal import noise_energy
    pairs = [(fixed_set_bound(ap, R, G, T, k, s, c, b), ap + convex_optimal_bound(R, G, T, noise_energy(k, s, c, b)))
             for ap, R, G, T, k, s, c, b in ((0.1, 1.0, 2.0, 100, 5, 1.1, 1.0, 16), (0.0, 3.0, 0.5, 7, 1, 0.0, 2.0, 1))]
    return check_points(show, "fixed_set_bound", pairs, rtol=1e-14)


@_composition("calibrated_sigma = calibrate_noise(B/n, round(epochs * steps_per_epoch(B/n)), eps, delta)",
              "convergence.calibrated_sigma")
def calibrated_sigma_chain(show):
    from dptheory.accounting import calibrate_noise, steps_per_epoch
    from dptheory.convergence import calibrated_sigma
    n, B, E, e, d = 1000, 100, 2.5, 3.0, 1e-5
    s, T = calibrated_sigma(n, B, E, e, d)
    ok = T == round(E * steps_per_epoch(B / n))
    ok &= check_points(show, "calibrated_sigma", [(s, calibrate_noise(B / n, T, e, d))], rtol=1e-14)
    return bool(ok)


_PRIV = (1000, 50, 3.0, 1e-5, 2, 100)    # n, d, eps, delta, epochs, batch


@_composition("private_* bounds are the bounds at the calibrated sigma and T",
              "convergence.private_convex_bound", "convergence.private_nonconvex_random_k_bound",
              "convergence.private_mask_then_clip_bound")
def private_bounds(show):
    from dptheory import convergence as cv
    from dptheory.noise_signal import noise_energy
    n, d, e, dl, E, B = _PRIV
    s, T = cv.calibrated_sigma(n, B, E, e, dl)
    N = noise_energy(d, s, 1.0, B)
    pairs = [(cv.private_convex_bound(n, d, e, dl, E, B, 1.0, 2.0, 1.0), cv.convex_optimal_bound(1.0, 2.0, T, N)),
             (cv.private_convex_bound(n, d, e, dl, E, B, 1.0, 2.0, 1.0, k=5),
              cv.convex_random_k_optimal_bound(1.0, 2.0, T, N, 5, d)),
             (cv.private_nonconvex_random_k_bound(n, d, e, dl, E, B, 5, 1.0, 1.0, 0.5, 1.0),
              cv.nonconvex_random_k_optimal_bound(1.0, 1.0, T, 5, d, 0.5, B, N)),
             (cv.private_mask_then_clip_bound(n, d, e, dl, E, B, 5, 1.0, 1.0, 0.1, 1.0, spread="spread_out"),
              cv.mask_then_clip_bound(5, d, 1.0, 1.0, 0.1, 1.0, T, s, B, spread="spread_out"))]
    return check_points(show, "private_*", pairs, rtol=1e-14)


@_composition("optimal_k = argmin over k in [1, d] of the privacy-calibrated bound", "convergence.optimal_k")
def optimal_k_argmin(show):
    """Brute force over every k against optimal_k, both kinds (the value at rtol 1e-12)."""
    from dptheory import convergence as cv
    n, d, e, dl, E, B = _PRIV
    s, T = cv.calibrated_sigma(n, B, E, e, dl)
    ok, pairs = True, []
    for spread in ("worst_case", "spread_out"):
        vals = [cv.mask_then_clip_bound(k, d, 1.0, 1.0, 0.1, 1.0, T, s, B, spread=spread) for k in range(1, d + 1)]
        k, v = cv.optimal_k(n, d, e, dl, E, B, delta_f=1.0, smoothness=1.0, lr=0.1, spread=spread)
        ok &= k == 1 + int(np.argmin(vals))
        pairs.append((v, min(vals)))
    prof = np.linspace(2.0, 0.1, d) ** 2
    phi = np.cumsum(np.sort(prof)[::-1]) / prof.sum()
    vals = [0.5 * 1.0 * (1 - phi[k - 1]) + cv.fixed_set_bound(0.0, np.sqrt(phi[k - 1]), 2.0 * np.sqrt(phi[k - 1]), T, k,
                                                             s, 1.0, B) for k in range(1, d + 1)]
    k, v = cv.optimal_k(n, d, e, dl, E, B, kind="fixed_set", radius=1.0, lipschitz=2.0, smoothness=1.0,
                        energy_profile=prof)
    ok &= k == 1 + int(np.argmin(vals))
    pairs.append((v, min(vals)))
    ok &= check_points(show, "optimal_k value", pairs, rtol=1e-12)
    return bool(ok)
