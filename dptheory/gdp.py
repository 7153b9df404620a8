"""Gaussian differential privacy (GDP) and the central-limit-theorem accountant.

**Warning: the CLT accountant is an asymptotic APPROXIMATION, not an upper bound.** Bu, Dong, Long
& Su (2020), "Deep Learning with Gaussian Differential Privacy" (Harvard Data Science Review),
show that T steps of the subsampled Gaussian mechanism converge to mu-GDP as T -> infinity with
q sqrt(T) fixed; for finite T the epsilon it reports can be BELOW the true epsilon (it is below the
tight PLD value in the MNIST example of docs/theory.md §1.5). Never use it to certify privacy; use
:func:`dptheory.accounting.epsilon` for that.

* :func:`gdp_mu` -- the CLT mu for Poisson or uniform (without replacement) sampling.
* :func:`delta_gdp` -- the exact (eps, delta) trade-off of mu-GDP (the dual of Dong, Roth & Su 2019
  Cor. 2.13); at mu = Delta/s it is the analytic Gaussian mechanism of Balle & Wang 2018, Thm 8.
* :func:`epsilon_gdp` -- inverts it for the CLT mu.
"""
from __future__ import annotations

import math

from scipy import special

from .validation import check_choice, check_int, check_real

__all__ = ["gdp_mu", "delta_gdp", "epsilon_for_mu", "epsilon_gdp"]


def gdp_mu(sampling_rate, noise_multiplier, steps, sampling="poisson") -> float:
    r"""CLT mu of ``steps`` steps of the subsampled Gaussian mechanism (an APPROXIMATION).

    Poisson sampling (Bu, Dong, Long & Su 2020, Sec. 3, CLT for noisy SGD; docs/theory.md §1.5):

    .. math:: \mu = q\sqrt{T\,(e^{1/\sigma^2} - 1)}

    Uniform sampling without replacement (same paper, the "mu_U" variant):

    .. math:: \mu = \sqrt{2}\, q \sqrt{T}\,
              \sqrt{e^{\sigma^{-2}}\Phi(1.5/\sigma) + 3\Phi(-0.5/\sigma) - 2}

    Asymptotic in T with q sqrt(T) held fixed: **not an upper bound** on the true privacy loss.

    Parameters
    ----------
    sampling_rate : float in (0, 1]
    noise_multiplier : float > 0
    steps : int >= 1
    sampling : {"poisson", "uniform"}

    Returns
    -------
    float
        mu >= 0; ``inf`` when e^{1/sigma^2} overflows.
    """
    q = check_real("sampling_rate", sampling_rate, low=0.0, high=1.0, low_open=True)
    s = check_real("noise_multiplier", noise_multiplier, low=0.0, low_open=True)
    t = check_int("steps", steps, low=1)
    check_choice("sampling", sampling, ("poisson", "uniform"))
    inv = 1.0 / (s * s) if s > 1e-150 else math.inf
    if inv > 700.0:
        return math.inf
    if sampling == "poisson":
        return q * math.sqrt(t * math.expm1(inv))
    inner = math.exp(inv) * special.ndtr(1.5 / s) + 3.0 * special.ndtr(-0.5 / s) - 2.0
    return math.sqrt(2.0) * q * math.sqrt(t) * math.sqrt(max(inner, 0.0))


def _log_delta(mu: float, eps: float) -> float:
    """log of Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2), subtracting in log space."""
    la = special.log_ndtr(-eps / mu + mu / 2.0)
    lb = eps + special.log_ndtr(-eps / mu - mu / 2.0)
    if lb >= la:  # only by rounding: the difference is positive for mu > 0
        return -math.inf
    return float(la + math.log(-math.expm1(lb - la)))


def delta_gdp(mu, eps) -> float:
    r"""delta(eps) of mu-GDP: the smallest delta such that mu-GDP implies (eps, delta)-DP.

    .. math:: \delta(\varepsilon) = \Phi\Big(-\frac{\varepsilon}{\mu} + \frac{\mu}{2}\Big)
              - e^{\varepsilon}\,\Phi\Big(-\frac{\varepsilon}{\mu} - \frac{\mu}{2}\Big)

    Dong, Roth & Su 2019, "Gaussian Differential Privacy", Cor. 2.13. With mu = Delta/s it is the
    exact privacy profile of the Gaussian mechanism with sensitivity Delta and noise s (Balle &
    Wang 2018, "Improving the Gaussian mechanism", Thm 8). Evaluated in log space (no cancellation
    at large eps). This formula is exact for mu-GDP; only the CLT mu of :func:`gdp_mu` is
    approximate.

    Parameters
    ----------
    mu : float > 0
    eps : float >= 0
    """
    m = check_real("mu", mu, low=0.0, low_open=True)
    e = check_real("eps", eps, low=0.0)
    return math.exp(_log_delta(m, e))


def epsilon_for_mu(mu, delta) -> float:
    """Smallest eps >= 0 with delta_gdp(mu, eps) <= delta (brentq on log delta; exact for mu-GDP).

    ``mu`` may be ``inf`` (then eps is ``inf``).
    """
    m = check_real("mu", mu, low=0.0, low_open=True) if mu != math.inf else math.inf
    d = check_real("delta", delta, low=0.0, high=1.0, low_open=True, high_open=True)
    if m == math.inf:
        return math.inf
    log_d = math.log(d)

    def f(e):
        return _log_delta(m, e) - log_d

    if f(0.0) <= 0:
        return 0.0
    from scipy import optimize   # lazily: scipy.optimize costs ~0.4 s to import (the CLI)

    hi = 500.0
    while f(hi) > 0:
        hi *= 2.0
        if hi > 1e12:
            return math.inf
    return float(optimize.brentq(f, 0.0, hi, xtol=1e-12, rtol=1e-12))


def epsilon_gdp(sampling_rate, noise_multiplier, steps, delta, sampling="poisson") -> float:
    r"""CLT epsilon: eps with delta_gdp(gdp_mu(q, sigma, T), eps) = delta. An APPROXIMATION.

    Bu, Dong, Long & Su 2020 (docs/theory.md §1.5). **Not an upper bound**: asymptotic in T; it can
    under-state the privacy loss (e.g. q = 256/60000, sigma = 1.1, 60 epochs, delta = 1e-5 gives
    about 2.3 against about 2.4 for the tight PLD accountant). Report it, never certify with it.

    Parameters
    ----------
    sampling_rate : float in (0, 1]
    noise_multiplier : float > 0
    steps : int >= 1
    delta : float in (0, 1)
    sampling : {"poisson", "uniform"}
    """
    d = check_real("delta", delta, low=0.0, high=1.0, low_open=True, high_open=True)
    mu = gdp_mu(sampling_rate, noise_multiplier, steps, sampling)
    if mu == 0.0:
        return 0.0
    return epsilon_for_mu(mu, d)

