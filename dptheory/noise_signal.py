"""Noise-to-signal ratio (NSR) of one DP-SGD step with a dense or sparse update.

Conventions (docs/theory.md §2): the update is ``g_bar + s z`` with ``g_bar = (1/B) sum clip_C(g_i)``,
``z ~ N(0, I_d)`` and ``s = sigma C / B``; ``k`` of ``d`` coordinates are updated, ``rho = k/d``.
The full noise energy is ``N = d s^2``. Every closed form here is proved in :mod:`proofs.noise_signal`
(tags [S]) or derived and checked numerically in ``tests/test_noise_signal.py`` (tags [D]).

All functions validate their arguments (``ValueError`` naming the parameter and its range) and
broadcast over NumPy arrays; scalar inputs give a Python ``float``.
"""
from __future__ import annotations

import numpy as np
from scipy import stats

from .validation import check_choice, check_finite_array, check_int, check_real

__all__ = [
    "noise_std", "noise_energy", "noise_energy_mean", "noise_energy_var", "noise_energy_interval",
    "nsr_dense", "signal_random_k", "nsr_random_k", "signal_mask_then_clip", "nsr_mask_then_clip",
    "descent_mask_then_clip", "rescaled_random_k_moments", "noise_energy_rescaled",
    "nsr_fixed_set", "fixed_set_helps", "nsr_top_k", "top_k_captured_lower_bound",
    "contraction_top_k", "contraction_random_k", "scaled_sign_delta",
    "FREEZE_KINDS", "freeze_schedule", "n_frozen", "freeze_mean_noise_energy",
    "tradeoff_coefficients", "tradeoff_bound", "optimal_keep_fraction", "sparsification_helps",
]


# ----------------------------------------------------------------------------- helpers
def _real(name, value, *, low=None, high=None, low_open=False, high_open=False):
    """Vectorised :func:`check_real`: a finite float array inside the interval, else ValueError."""
    if np.ndim(value) == 0:
        return np.float64(check_real(name, value, low=low, high=high, low_open=low_open,
                                     high_open=high_open))
    arr = check_finite_array(name, value).astype(np.float64)
    bad = np.zeros(arr.shape, bool)
    if low is not None:
        bad |= (arr <= low) if low_open else (arr < low)
    if high is not None:
        bad |= (arr >= high) if high_open else (arr > high)
    if bad.any():   # let check_real build the message (names the parameter and the interval)
        check_real(name, arr[bad].flat[0], low=low, high=high, low_open=low_open, high_open=high_open)
    return arr


def _int(name, value, *, low=None, high=None):
    """Vectorised :func:`check_int` (integral floats accepted); returns an int64 array."""
    if np.ndim(value) == 0:
        return np.int64(check_int(name, value, low=low, high=high))
    arr = check_finite_array(name, value)
    if arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
        check_int(name, float(arr[arr != np.round(arr)].flat[0]))
    arr = arr.astype(np.int64)
    for v in arr.flat:   # cheap: only reached for bad or small arrays in practice
        if (low is not None and v < low) or (high is not None and v > high):
            check_int(name, int(v), low=low, high=high)
    return arr


def _k_d(k, d):
    d = _int("d", d, low=1)
    k = _int("k", k, low=1)
    if np.any(k > d):
        raise ValueError(f"k must be an integer in [1, d], got k={k!r} with d={d!r}")
    return k, d


def _out(x):
    x = np.asarray(x, dtype=np.float64)
    return float(x) if x.ndim == 0 else x


# ----------------------------------------------------------------------------- noise
def noise_std(sigma, clip, batch):
    """Per-coordinate noise std of the averaged update, ``s = sigma C / B``.

    Noise ``N(0, sigma^2 C^2 I_d)`` is added to the SUM of clipped gradients, which is then divided by
    the (expected) batch size ``B`` (Abadi et al. 2016, Algorithm 1; Poisson variant as in Opacus).
    """
    sigma = _real("sigma", sigma, low=0.0)
    clip = _real("clip", clip, low=0.0, low_open=True)
    batch = _real("batch", batch, low=0.0, low_open=True)
    return _out(sigma * clip / batch)


def noise_energy(d, sigma, clip, batch):
    """Full noise energy ``N = d sigma^2 C^2 / B^2 = E||s z||^2`` of a dense update (docs/theory.md §Conventions)."""
    d = _int("d", d, low=1)
    return _out(d * np.asarray(noise_std(sigma, clip, batch)) ** 2)


def noise_energy_mean(k, sigma, clip, batch):
    """Mean ``k s^2`` of the noise energy ``||m * s z||^2`` on ``k`` updated coordinates.

    [S] ``||m * s z||^2 = s^2 sum_{i in S} z_i^2 ~ s^2 chi^2_k`` for a mask independent of the
    noise (random-k, a fixed frozen set, random freeze); ``E z_i^2 = 1`` gives the mean.
    Proved in ``proofs.noise_signal`` from the Gaussian moments.
    """
    k = _int("k", k, low=0)
    return _out(k * np.asarray(noise_std(sigma, clip, batch)) ** 2)


def noise_energy_var(k, sigma, clip, batch):
    """Variance ``2 k s^4`` of the noise energy on ``k`` coordinates ([S]: ``Var z^2 = E z^4 - 1 = 2``)."""
    k = _int("k", k, low=0)
    return _out(2 * k * np.asarray(noise_std(sigma, clip, batch)) ** 4)


def noise_energy_interval(k, sigma, clip, batch, level=0.95):
    """Equal-tailed ``level`` interval ``(s^2 q_lo, s^2 q_hi)`` of the noise energy, chi-square quantiles.

    ``q_lo, q_hi`` are the ``(1-level)/2`` and ``(1+level)/2`` quantiles of ``chi^2_k``
    (``scipy.stats.chi2``). Use it to check one simulated step: the energy falls outside with
    probability exactly ``1 - level``.
    """
    k = _int("k", k, low=1)
    level = check_real("level", level, low=0.0, high=1.0, low_open=True, high_open=True)
    s2 = np.asarray(noise_std(sigma, clip, batch)) ** 2
    lo = stats.chi2.ppf((1 - level) / 2, k) * s2
    hi = stats.chi2.isf((1 - level) / 2, k) * s2
    return _out(lo), _out(hi)


# ----------------------------------------------------------------------------- NSR
def nsr_dense(d, sigma, clip, batch, signal_sq):
    """Dense NSR ``d sigma^2 C^2 / (B^2 ||g_bar||^2)`` = noise energy / signal energy (docs/theory.md §2).

    ``signal_sq`` is ``||g_bar||^2 > 0``, the squared norm of the clipped mean gradient.
    """
    signal_sq = _real("signal_sq", signal_sq, low=0.0, low_open=True)
    return _out(np.asarray(noise_energy(d, sigma, clip, batch)) / signal_sq)


def signal_random_k(k, d, signal_sq):
    """Expected retained signal ``E||m * g_bar||^2 = (k/d) ||g_bar||^2`` (clip then mask), [S].

    ``m`` is the indicator of a uniformly random ``k``-subset independent of ``g_bar``, so
    ``P(i in S) = k/d`` for every ``i`` (proved in ``proofs.noise_signal``).
    """
    k, d = _k_d(k, d)
    signal_sq = _real("signal_sq", signal_sq, low=0.0)
    return _out(k / d * signal_sq)


def nsr_random_k(k, d, sigma, clip, batch, signal_sq):
    """Random-k (clip then mask) NSR as a ratio of expectations: ``k s^2 / ((k/d)||g_bar||^2)``.

    [D] This equals :func:`nsr_dense` for every ``k``: a data-independent random mask removes noise
    and signal in the same proportion, so it cannot improve the NSR.
    """
    k, d = _k_d(k, d)
    signal_sq = _real("signal_sq", signal_sq, low=0.0, low_open=True)
    return _out(np.asarray(noise_energy_mean(k, sigma, clip, batch)) / np.asarray(signal_random_k(k, d, signal_sq)))


def signal_mask_then_clip(signal_sq):
    """Signal energy of mask-then-clip in the all-clipped, spread-out regime: ``~ ||g_bar||^2``, flat in k.

    [D] Zhu & Blaschko (arXiv 2112.00845, code) zero the masked coordinates BEFORE clipping and do not
    rescale. If every example is clipped and ``||m * g_i|| ~ sqrt(rho) ||g_i||``, each clipped masked
    gradient is ``C (m * g_i)/||m * g_i|| ~ (1/sqrt(rho)) m * clip(g_i)`` and its energy is
    ``(1/rho) (k/d) ||.||^2 = ||clip(g_i)||^2``. ``signal_sq`` is the dense clipped-mean energy.
    An approximation: the tests compare it with simulation, not with an identity. Measured regime of
    validity (tests/test_sim_vs_theory_noise.py): within 3 % for k >= 25 when every example is clipped;
    it breaks down for very small k, where ``||m * g_i||`` no longer concentrates around
    ``sqrt(rho) ||g_i||`` (ratio ~0.93 at k = 10 and ~0.6 at k = 1 with a strong common mean).
    """
    return _out(_real("signal_sq", signal_sq, low=0.0))


def nsr_mask_then_clip(k, d, sigma, clip, batch, signal_sq):
    """Mask-then-clip NSR in the all-clipped regime: ``~ rho * nsr_dense`` ("perturbation moderation"), [D].

    Noise energy ``k s^2`` over the flat signal of :func:`signal_mask_then_clip`.
    """
    k, d = _k_d(k, d)
    return _out(k / d * np.asarray(nsr_dense(d, sigma, clip, batch, signal_sq)))


def descent_mask_then_clip(k, d, dense_descent):
    """Descent component ``E<grad F, update>`` of mask-then-clip: ``~ sqrt(rho)`` x the dense value, [D].

    In the all-clipped, spread-out regime the masked clipped gradient is ``(1/sqrt rho) m * clip(g)``,
    and ``E<grad F, m * v> = rho <grad F, v>``, giving ``sqrt(rho)``: the "signal loss".
    """
    k, d = _k_d(k, d)
    dense_descent = _real("dense_descent", dense_descent)
    return _out(np.sqrt(k / d) * dense_descent)


def rescaled_random_k_moments(k, d, x_sq):
    """Moments of the rescaled random-k compressor ``Q(x) = (d/k) m * x``, [S].

    Returns ``(mean_factor, second_moment, variance)`` with ``E Q = 1 * x``,
    ``E||Q||^2 = (d/k)||x||^2`` and ``E||Q - x||^2 = (d/k - 1)||x||^2`` (``x_sq = ||x||^2``).
    Rescaled with step ``eta`` equals unscaled with step ``eta d/k`` pathwise, so rescaling only
    reparametrises the learning rate.
    """
    k, d = _k_d(k, d)
    x_sq = _real("x_sq", x_sq, low=0.0)
    ratio = d / k
    return _out(np.ones_like(ratio * x_sq)), _out(ratio * x_sq), _out((ratio - 1) * x_sq)


def noise_energy_rescaled(k, d, sigma, clip, batch):
    """Noise energy of the rescaled random-k update: ``(d/k)^2 k s^2 = (d^2/k) s^2``, [S]."""
    k, d = _k_d(k, d)
    return _out(d.astype(float) ** 2 / k * np.asarray(noise_std(sigma, clip, batch)) ** 2)


def nsr_fixed_set(k, d, phi, sigma, clip, batch, signal_sq):
    """NSR of a fixed coordinate set ``S`` (|S| = k) capturing energy fraction ``phi = ||g_S||^2/||g||^2``.

    [D] ``k s^2 / (phi ||g_bar||^2) = (k/(d phi)) nsr_dense``: it beats the dense NSR iff ``phi > k/d``.
    ``phi`` must be in (0, 1].
    """
    k, d = _k_d(k, d)
    phi = _real("phi", phi, low=0.0, high=1.0, low_open=True)
    return _out(k / (d * phi) * np.asarray(nsr_dense(d, sigma, clip, batch, signal_sq)))


def fixed_set_helps(k, d, phi):
    """``True`` iff the fixed set's NSR is strictly below the dense NSR, i.e. ``phi > k/d`` ([D])."""
    k, d = _k_d(k, d)
    phi = _real("phi", phi, low=0.0, high=1.0, low_open=True)
    res = phi > k / d
    return bool(res) if np.ndim(res) == 0 else res


def top_k_captured_lower_bound(k, d):
    """Lower bound ``k/d`` on the energy fraction captured by top-k.

    The ``k`` largest squares average at least the mean square; equivalently the contraction
    ``||x - top_k x||^2 <= (1 - k/d)||x||^2`` (Stich, Cordonnier & Jaggi 2018, Def. 2.1 / Lemma A.1).
    """
    k, d = _k_d(k, d)
    return _out(k / d)


def nsr_top_k(k, d, phi, sigma, clip, batch, signal_sq):
    """NSR of top-k (of the noisy or a public gradient) with captured fraction ``phi >= k/d``.

    Same formula as :func:`nsr_fixed_set`; since ``phi >= k/d`` always holds for top-k,
    ``nsr_top_k <= nsr_dense``. A ``phi < k/d`` is impossible for top-k and raises ``ValueError``.
    """
    k, d = _k_d(k, d)
    phi = _real("phi", phi, low=0.0, high=1.0, low_open=True)
    if np.any(phi < k / d * (1 - 1e-12)):
        raise ValueError(f"phi must be in [k/d, 1] for top-k (captured energy >= k/d), got phi={phi!r}, k/d={k / d!r}")
    return nsr_fixed_set(k, d, phi, sigma, clip, batch, signal_sq)


# ----------------------------------------------------------------------------- compressors
def contraction_top_k(k, d):
    """Top-k contraction constant: ``||x - top_k x||^2 <= (1 - k/d)||x||^2`` (Stich et al. 2018, Def. 2.1) [L].

    Checked: the definition of a k-contraction in Stich, Cordonnier & Jaggi, "Sparsified SGD with
    memory" (NeurIPS 2018) uses exactly ``(1 - k/d)``; tests verify it on random vectors.
    """
    k, d = _k_d(k, d)
    return _out(1 - k / d)


def contraction_random_k(k, d):
    """Random-k (unscaled) contraction, exact in expectation: ``E||x - m * x||^2 = (1 - k/d)||x||^2`` [S]."""
    return contraction_top_k(k, d)


def scaled_sign_delta(x):
    """``delta = ||x||_1^2 / (d ||x||_2^2)`` of the scaled sign compressor ``(||x||_1/d) sign(x)`` [S].

    ``||x - (||x||_1/d) sign x||^2 = ||x||^2 - ||x||_1^2/d = (1 - delta)||x||^2`` with
    ``delta in [1/d, 1]`` (Karimireddy et al. 2019, arXiv 1901.09847, Lemma 8 for the delta-approximate
    property). ``x`` is a non-zero 1-D array; a 2-D array is treated row-wise.
    """
    x = check_finite_array("x", x).astype(np.float64)
    if x.ndim not in (1, 2) or x.shape[-1] == 0:
        raise ValueError(f"x must be a non-empty 1-D array (or 2-D, row-wise), got shape {x.shape}")
    sq = np.sum(x * x, axis=-1)
    if np.any(sq == 0):
        raise ValueError("x must be non-zero (delta is undefined for x = 0)")
    return _out(np.sum(np.abs(x), axis=-1) ** 2 / (x.shape[-1] * sq))


# ----------------------------------------------------------------------------- random freeze
FREEZE_KINDS = ("linear", "step", "cosine", "constant")


def freeze_schedule(r_final, epochs, kind="linear"):
    """Frozen fraction per epoch ``r_e``, e = 0..E-1 (Zhu & Blaschko 2112.00845, authors' code [C]).

    - ``"linear"``: ``r_e = r_final e/(E-1)`` (the paper's gradual schedule);
    - ``"step"``: ``0`` for ``e < E//2`` then ``r_final``;
    - ``"cosine"``: ``r_final (1 - cos(pi e/(E-1)))/2``;
    - ``"constant"``: ``r_final`` from the start.
    ``r_final in [0, 1)``, ``epochs >= 1``; a one-epoch run has no ramp (``r_0 = r_final``, as the
    simulator's :func:`sims.mechanisms.random_freeze` does). This is the one definition of the
    schedule: the simulator reads it from here.
    """
    r_final = check_real("r_final", r_final, low=0.0, high=1.0, high_open=True)
    epochs = check_int("epochs", epochs, low=1)
    kind = check_choice("kind", kind, FREEZE_KINDS)
    if epochs == 1 or kind == "constant":
        return np.full(epochs, r_final)
    e = np.arange(epochs, dtype=np.float64)
    if kind == "linear":
        return r_final * e / (epochs - 1)
    if kind == "step":
        return np.where(e >= epochs // 2, r_final, 0.0)
    return r_final * (1 - np.cos(np.pi * e / (epochs - 1))) / 2


def n_frozen(rate, d):
    """Number of frozen coordinates ``floor(rate * d)`` at frozen fraction ``rate`` (vectorised).

    A relative guard of 1e-12 keeps ``floor(0.3 * 10) = 3`` although ``0.3 * 10`` is
    ``2.9999999999999996`` in binary. Shared by the theory and the simulator.
    """
    d = check_int("d", d, low=1)
    rate = np.asarray(rate, dtype=np.float64)
    n = np.floor(rate * d * (1 + 1e-12))
    # the guard must not round a rate just below 1 up to "everything frozen"
    return np.where(rate < 1, np.minimum(n, d - 1), n).astype(np.int64)


def freeze_mean_noise_energy(r_final, epochs, kind="linear", d=None):
    """Mean injected noise energy of a random-freeze run relative to dense: ``(1/E) sum_e (1 - r_e)``.

    Noise is zeroed on the frozen coordinates, so epoch ``e`` injects ``(d - f_e) s^2`` with
    ``f_e = floor(r_e d)`` frozen coordinates. With ``d=None`` the continuum limit ``f_e = r_e d`` is used;
    then the linear ramp gives exactly ``1 - r_final/2`` for every ``E >= 2`` [S]
    (``sum_{e<E} e/(E-1) = E/2``, proved in ``proofs.noise_signal``); so does the cosine ramp.
    With an integer ``d`` the exact finite-d value ``1 - mean_e floor(r_e d)/d`` is returned.
    """
    r = freeze_schedule(r_final, epochs, kind)
    if d is None:
        return float(1.0 - np.mean(r))
    return float(1.0 - np.mean(n_frozen(r, d)) / d)


# ----------------------------------------------------------------------------- trade-off
def tradeoff_coefficients(delta_f, smoothness, lr, clip, steps, d, sigma, batch):
    """Coefficients ``(a, b)`` of the mask-then-clip bound ``a/sqrt(rho) + b sqrt(rho)`` (docs/theory.md §3.3) [D].

    ``a = DeltaF/(eta C T) + L eta C/2`` (signal loss), ``b = L eta C d sigma^2/(2 B^2)`` (noise).
    A reconstruction consistent with the abstract of Zhu & Blaschko (arXiv 2112.00845): the trade-off
    exists only when both clipping (C) and noise (sigma > 0) are on. We could not access the paper's
    exact theorem; the constants are ours, derived for the all-clipped regime with spread-out gradients.
    """
    delta_f = _real("delta_f", delta_f, low=0.0)
    L = _real("smoothness", smoothness, low=0.0, low_open=True)
    lr = _real("lr", lr, low=0.0, low_open=True)
    clip = _real("clip", clip, low=0.0, low_open=True)
    steps = _int("steps", steps, low=1)
    d = _int("d", d, low=1)
    sigma = _real("sigma", sigma, low=0.0)
    batch = _real("batch", batch, low=0.0, low_open=True)
    a = delta_f / (lr * clip * steps) + L * lr * clip / 2
    b = L * lr * clip * d * sigma ** 2 / (2 * batch ** 2)
    return _out(a), _out(b)


def tradeoff_bound(rho, a, b):
    """``a/sqrt(rho) + b sqrt(rho)`` for ``rho in (0, 1]``; minimised at ``rho = a/b`` with value ``2 sqrt(ab)`` [S]."""
    rho = _real("rho", rho, low=0.0, high=1.0, low_open=True)
    a = _real("a", a, low=0.0)
    b = _real("b", b, low=0.0)
    return _out(a / np.sqrt(rho) + b * np.sqrt(rho))


def optimal_keep_fraction(d, sigma, batch, delta_f, smoothness, lr, clip, steps):
    """``rho* = min(1, (B^2/(d sigma^2)) (1 + 2 DeltaF/(L eta^2 C^2 T)))``, the minimiser over (0, 1] of
    :func:`tradeoff_bound` with the coefficients of :func:`tradeoff_coefficients` [S: ``a/b``].

    ``sigma = 0`` gives ``rho* = 1`` (no noise, no reason to sparsify).
    """
    a, b = tradeoff_coefficients(delta_f, smoothness, lr, clip, steps, d, sigma, batch)
    a, b = np.asarray(a), np.asarray(b)
    with np.errstate(divide="ignore"):
        rho = np.where(b > 0, np.minimum(1.0, a / np.where(b > 0, b, 1.0)), 1.0)
    return _out(rho)


def sparsification_helps(d, sigma, batch, delta_f, smoothness, lr, clip, steps):
    """``True`` iff ``rho* < 1``, i.e. ``d sigma^2/B^2 > 1 + 2 DeltaF/(L eta^2 C^2 T)`` (noise dominates)."""
    res = np.asarray(optimal_keep_fraction(d, sigma, batch, delta_f, smoothness, lr, clip, steps)) < 1.0
    return bool(res) if res.ndim == 0 else res
