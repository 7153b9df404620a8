r"""Typed privacy events: what a run releases, in the spirit of dp-accounting's ``DpEvent``.

An *event* is a small immutable description of a privacy-relevant release; an accountant turns
it into ``(epsilon, delta)``. Conventions (docs/theory.md §1): add/remove adjacency, Poisson
sampling at rate ``q``, noise multiplier ``sigma`` = noise std / L2 sensitivity.

* :class:`Gaussian` -- ONE release of the Gaussian mechanism (dp-accounting's
  ``GaussianDpEvent``). Its Renyi DP of order :math:`\alpha > 1` is the Renyi divergence between
  :math:`N(1, \sigma^2)` and :math:`N(0, \sigma^2)`,

  .. math:: \varepsilon_{\mathrm{G}}(\alpha) = \frac{\alpha}{2\sigma^2}

  (Mironov 2017, "Renyi Differential Privacy", Prop. 7).
* :class:`PoissonGaussian` -- ``steps`` self-composed releases of the Poisson-subsampled Gaussian
  mechanism (dp-accounting's ``SelfComposedDpEvent(PoissonSampledDpEvent(q,
  GaussianDpEvent(sigma)), steps)``). One step has RDP

  .. math::
      \varepsilon_{\mathrm{SGM}}(\alpha) = \frac{\log A_\alpha}{\alpha - 1},\qquad
      A_\alpha = \mathbb{E}_{z \sim \mu_0}\big[(\mu(z)/\mu_0(z))^\alpha\big],

  with :math:`\mu_0 = N(0, \sigma^2)` and :math:`\mu = (1-q) N(0, \sigma^2) + q N(1, \sigma^2)`
  (Mironov, Talwar & Zhang 2019, "Renyi Differential Privacy of the Sampled Gaussian Mechanism";
  computed by :func:`dptheory.accounting.rdp_subsampled_gaussian`). At ``q = 1`` it is the
  plain Gaussian.
* :class:`SelectedGaussian` -- ONE batch-level step of private top-k support selection (Gumbel /
  peeling exponential mechanism with pure budget ``selection_epsilon``) followed by the Gaussian
  mechanism on the selected ``k`` coordinates; RDP
  :math:`\min(\alpha\varepsilon^2/(8k), \varepsilon) + \alpha/(2\sigma^2)`
  (:func:`dptheory.selection.rdp_selected_gaussian`; docs/selection.md). dp-accounting has no
  such event; the PLD accountant is :func:`dptheory.selection.epsilon_pld_selected_gaussian`
  (randomized response times Gaussian as the dominating pair).
* :class:`PoissonSelectedGaussian` -- ``steps`` self-composed Poisson-subsampled
  :class:`SelectedGaussian` steps, with the general subsampling bound of Zhu & Wang (2019, Thm 6)
  (:func:`dptheory.selection.rdp_poisson_selected_gaussian`), or the PLD of the subsampled
  dominating pair (:func:`dptheory.selection.epsilon_pld_selected_gaussian`).
* :class:`NonPrivate` -- an explicit marker that a release is NOT differentially private
  (dp-accounting's ``NonPrivateDpEvent``); its epsilon is infinite.

Composition: RDP adds order-wise (Mironov 2017, Prop. 1),
:math:`\varepsilon_{M_1 \circ M_2}(\alpha) \le \varepsilon_{M_1}(\alpha) + \varepsilon_{M_2}(\alpha)`,
so ``T`` steps cost ``T * eps_SGM(alpha)`` and a sequence of events costs the sum of their RDP
curves. :func:`epsilon_of` converts to ``(epsilon, delta)`` with Balle et al. (2020), Thm 21
(:func:`dptheory.accounting.epsilon_from_rdp`), or delegates to dp-accounting's PLD accountant.

Every event is a frozen (immutable, hashable) dataclass validated on construction, and
``to_dp_accounting()`` returns the equivalent dp-accounting ``DpEvent`` (optional dependency:
``pip install "dpsparse[pld]"``), so a run can also be accounted by any dp-accounting accountant.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .accounting import (ACCOUNTANTS, DEFAULT_ORDERS, PLDInfo, check_orders, require_dp_accounting, epsilon,
                         epsilon_from_rdp, rdp_gaussian, rdp_subsampled_gaussian)
from .selection import (PLD_SELECTION_ACCURACY, SELECTION_ORDERS, epsilon_pld_selected_gaussian,
                        epsilon_selected_gaussian,
                        rdp_poisson_selected_gaussian, rdp_selected_gaussian)
from .validation import check_choice, check_delta, check_int, check_real

__all__ = ["Gaussian", "PoissonGaussian", "SelectedGaussian", "PoissonSelectedGaussian", "NonPrivate", "epsilon_of"]

#: discretisation of dp-accounting's PLD accountant when composing a sequence of events.
_PLD_INTERVAL = 1e-4


def _sigma(value) -> float:
    return check_real("noise_multiplier", value, low=0.0, low_open=True)


def _rate(value) -> float:
    return check_real("sampling_rate", value, low=0.0, high=1.0, low_open=True)


def _steps(value) -> int:
    return check_int("steps", value, low=1)


def _g(x: float) -> str:
    return f"{x:.6g}"


@dataclass(frozen=True)
class Gaussian:
    r"""One release of the Gaussian mechanism (dp-accounting's ``GaussianDpEvent``).

    Adds :math:`N(0, \sigma^2 \Delta^2)` noise to a query of L2 sensitivity :math:`\Delta`;
    RDP :math:`\alpha / (2\sigma^2)` (Mironov 2017, Prop. 7).

    Parameters
    ----------
    noise_multiplier : float
        sigma = noise std / L2 sensitivity, finite and > 0.

    Raises
    ------
    ValueError
        If ``noise_multiplier`` is not a finite real number in (0, inf).

    Examples
    --------
    >>> Gaussian(1.1).poisson_sampled(0.01, 1000)
    PoissonGaussian(sampling_rate=0.01, noise_multiplier=1.1, steps=1000)
    """

    noise_multiplier: float

    def __post_init__(self):
        object.__setattr__(self, "noise_multiplier", _sigma(self.noise_multiplier))

    def __str__(self) -> str:
        return f"Gaussian mechanism (sigma={_g(self.noise_multiplier)})"

    def poisson_sampled(self, sampling_rate, steps=1) -> PoissonGaussian:
        """This release applied to a Poisson sample at rate ``sampling_rate``, ``steps`` times.

        Parameters
        ----------
        sampling_rate : float
            Poisson sampling probability q in (0, 1].
        steps : int, default 1
            Number of self-composed steps, >= 1.

        Returns
        -------
        PoissonGaussian
            ``PoissonGaussian(sampling_rate, self.noise_multiplier, steps)``.
        """
        return PoissonGaussian(sampling_rate, self.noise_multiplier, steps)

    def rdp(self, orders) -> np.ndarray:
        """RDP ``alpha / (2 sigma^2)`` at each order in ``orders`` (each in (1, inf)).

        Returns
        -------
        numpy.ndarray
            One value per order (``inf`` if 1/sigma^2 overflows).
        """
        return rdp_gaussian(orders, self.noise_multiplier)

    def to_dp_accounting(self):
        """The equivalent ``dp_accounting.GaussianDpEvent(noise_multiplier)``.

        Raises
        ------
        ImportError
            If dp-accounting is not installed (``pip install "dpsparse[pld]"``).
        """
        dp_accounting = require_dp_accounting("to_dp_accounting()")
        return dp_accounting.GaussianDpEvent(self.noise_multiplier)


@dataclass(frozen=True)
class PoissonGaussian:
    """``steps`` self-composed steps of the Poisson-subsampled Gaussian mechanism.

    Each step samples every example independently with probability ``sampling_rate`` and releases
    a :class:`Gaussian` with ``noise_multiplier`` on the sample (one step of DP-SGD). The analogue
    of dp-accounting's ``SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(sigma)),
    steps)``; RDP ``steps * eps_SGM(alpha)`` (Mironov, Talwar & Zhang 2019).

    Parameters
    ----------
    sampling_rate : float
        Poisson sampling probability q in (0, 1]; q = 1 is the full batch.
    noise_multiplier : float
        sigma = noise std / L2 sensitivity, finite and > 0.
    steps : int, default 1
        Number of steps T >= 1 (integral floats such as ``1e6`` are accepted).

    Raises
    ------
    ValueError
        Naming the field and its allowed range when a field is invalid.
    """

    sampling_rate: float
    noise_multiplier: float
    steps: int = 1

    def __post_init__(self):
        object.__setattr__(self, "sampling_rate", _rate(self.sampling_rate))
        object.__setattr__(self, "noise_multiplier", _sigma(self.noise_multiplier))
        object.__setattr__(self, "steps", _steps(self.steps))

    def __str__(self) -> str:
        plural = "" if self.steps == 1 else "s"
        return (f"Poisson-subsampled Gaussian (q={_g(self.sampling_rate)}, "
                f"sigma={_g(self.noise_multiplier)}, {self.steps} step{plural})")

    def rdp(self, orders) -> np.ndarray:
        """Composed RDP ``steps * eps_SGM(alpha)`` at each order in ``orders`` (each in (1, inf)).

        Returns
        -------
        numpy.ndarray
            One value per order (``inf`` if 1/sigma^2 overflows).
        """
        return self.steps * rdp_subsampled_gaussian(orders, self.sampling_rate, self.noise_multiplier)

    def to_dp_accounting(self):
        """The equivalent dp-accounting event.

        Returns
        -------
        dp_accounting.DpEvent
            ``PoissonSampledDpEvent(q, GaussianDpEvent(sigma))`` when ``steps == 1``, else
            ``SelfComposedDpEvent`` of it ``steps`` times.

        Raises
        ------
        ImportError
            If dp-accounting is not installed (``pip install "dpsparse[pld]"``).
        """
        dp_accounting = require_dp_accounting("to_dp_accounting()")
        one = dp_accounting.PoissonSampledDpEvent(
            self.sampling_rate, dp_accounting.GaussianDpEvent(self.noise_multiplier))
        return one if self.steps == 1 else dp_accounting.SelfComposedDpEvent(one, self.steps)


def _k(value) -> int:
    return check_int("k", value, low=1)


def _sel_eps(value) -> float:
    return check_real("selection_epsilon", value, low=0.0, low_open=True)


@dataclass(frozen=True)
class SelectedGaussian:
    r"""One step of private top-k selection, then the Gaussian mechanism on the ``k`` selected coordinates.

    The selection is the Gumbel top-k of the scores ``|s_j|`` of the clipped sum (pure budget
    ``selection_epsilon``, Durfee & Rogers 2019); the Gaussian adds :math:`N(0, \sigma^2 C^2)` to
    the selected coordinates of the same sum. RDP
    :math:`\min(\alpha\varepsilon^2/(8k), \varepsilon) + \alpha/(2\sigma^2)` (adaptive
    composition, Mironov 2017, Prop. 1; :func:`dptheory.selection.rdp_selected_gaussian`).

    Parameters
    ----------
    noise_multiplier : float
        sigma = noise std / L2 sensitivity, finite and > 0.
    k : int
        Number of coordinates selected, >= 1.
    selection_epsilon : float
        Pure-DP budget of the whole selection, finite and > 0.

    Raises
    ------
    ValueError
        Naming the field and its allowed range when a field is invalid.

    Examples
    --------
    >>> SelectedGaussian(1.0, 10, 1.0).poisson_sampled(0.01, 1000)
    PoissonSelectedGaussian(sampling_rate=0.01, noise_multiplier=1.0, k=10, selection_epsilon=1.0, steps=1000)
    """

    noise_multiplier: float
    k: int
    selection_epsilon: float

    def __post_init__(self):
        object.__setattr__(self, "noise_multiplier", _sigma(self.noise_multiplier))
        object.__setattr__(self, "k", _k(self.k))
        object.__setattr__(self, "selection_epsilon", _sel_eps(self.selection_epsilon))

    def __str__(self) -> str:
        return (f"private top-{self.k} selection (epsilon={_g(self.selection_epsilon)}) then Gaussian "
                f"(sigma={_g(self.noise_multiplier)})")

    def poisson_sampled(self, sampling_rate, steps=1) -> PoissonSelectedGaussian:
        """This step applied to a Poisson sample at rate ``sampling_rate``, ``steps`` times.

        Returns
        -------
        PoissonSelectedGaussian
        """
        return PoissonSelectedGaussian(sampling_rate, self.noise_multiplier, self.k, self.selection_epsilon, steps)

    def rdp(self, orders) -> np.ndarray:
        """Batch-level RDP at each order in ``orders`` (each in (1, inf)).

        Returns
        -------
        numpy.ndarray
        """
        return rdp_selected_gaussian(orders, self.noise_multiplier, self.k, self.selection_epsilon)


@dataclass(frozen=True)
class PoissonSelectedGaussian:
    """``steps`` self-composed Poisson-subsampled :class:`SelectedGaussian` steps.

    RDP ``steps`` times the minimum of Zhu & Wang's (2019, Thm 6) general Poisson-subsampling
    bound and the batch-level RDP (:func:`dptheory.selection.rdp_poisson_selected_gaussian`).

    Parameters
    ----------
    sampling_rate : float
        Poisson sampling probability q in (0, 1].
    noise_multiplier : float
        sigma > 0.
    k : int
        >= 1.
    selection_epsilon : float
        > 0.
    steps : int, default 1
        >= 1.

    Raises
    ------
    ValueError
        Naming the field and its allowed range when a field is invalid.
    """

    sampling_rate: float
    noise_multiplier: float
    k: int
    selection_epsilon: float
    steps: int = 1

    def __post_init__(self):
        object.__setattr__(self, "sampling_rate", _rate(self.sampling_rate))
        object.__setattr__(self, "noise_multiplier", _sigma(self.noise_multiplier))
        object.__setattr__(self, "k", _k(self.k))
        object.__setattr__(self, "selection_epsilon", _sel_eps(self.selection_epsilon))
        object.__setattr__(self, "steps", _steps(self.steps))

    def __str__(self) -> str:
        plural = "" if self.steps == 1 else "s"
        return (f"Poisson-subsampled private top-{self.k} selection (epsilon={_g(self.selection_epsilon)}) "
                f"then Gaussian (q={_g(self.sampling_rate)}, sigma={_g(self.noise_multiplier)}, "
                f"{self.steps} step{plural})")

    def rdp(self, orders) -> np.ndarray:
        """Composed RDP ``steps * eps_step(alpha)`` at each order in ``orders`` (each in (1, inf)).

        Returns
        -------
        numpy.ndarray
        """
        return self.steps * rdp_poisson_selected_gaussian(orders, self.sampling_rate, self.noise_multiplier,
                                                          self.k, self.selection_epsilon)


@dataclass(frozen=True)
class NonPrivate:
    """An explicit marker that a release is NOT differentially private (``NonPrivateDpEvent``).

    Parameters
    ----------
    reason : str
        Why the release is not private (e.g. "top-k selection reads the raw gradient");
        a non-empty string (not only whitespace).

    Raises
    ------
    ValueError
        If ``reason`` is not a non-empty string.
    """

    reason: str

    def __post_init__(self):
        if not isinstance(self.reason, str) or not self.reason.strip():
            raise ValueError(f"reason must be a non-empty string, got {self.reason!r}")

    def __str__(self) -> str:
        return f"non-private release ({self.reason})"

    def rdp(self, orders) -> np.ndarray:
        """``inf`` at every order in ``orders`` (what dp-accounting's RDP accountant adds)."""
        return np.full(check_orders(orders).shape, np.inf)

    def to_dp_accounting(self):
        """The equivalent ``dp_accounting.NonPrivateDpEvent()`` (the reason is not carried).

        Raises
        ------
        ImportError
            If dp-accounting is not installed (``pip install "dpsparse[pld]"``).
        """
        dp_accounting = require_dp_accounting("to_dp_accounting()")
        return dp_accounting.NonPrivateDpEvent()


_EVENTS = (Gaussian, PoissonGaussian, SelectedGaussian, PoissonSelectedGaussian, NonPrivate)
_SELECTION_EVENTS = (SelectedGaussian, PoissonSelectedGaussian)
_EVENT_ERROR = ("event must be a Gaussian, PoissonGaussian, SelectedGaussian, PoissonSelectedGaussian or "
                "NonPrivate event, or a non-empty sequence of them, got {!r}")
_NO_PLD = ("accountant='pld' accounts a private top-k selection event ({}) only on its own "
           "(epsilon_pld_selected_gaussian), not composed with other events; use accountant='rdp' for the sequence")


def _as_event_list(event) -> list:
    """The events of a non-empty sequence (any iterable but a string), else ValueError."""
    if isinstance(event, (str, bytes)) or not isinstance(event, Iterable):
        raise ValueError(_EVENT_ERROR.format(event))
    events = list(event)
    if not events or not all(isinstance(e, _EVENTS) for e in events):
        raise ValueError(_EVENT_ERROR.format(event))
    return events


def _selection_pld(event, delta: float):
    """``(min(PLD, RDP), PLDInfo)`` of a :class:`SelectedGaussian` (q = 1, one step) or
    :class:`PoissonSelectedGaussian`: the PLD of its dominating pair
    (:func:`~dptheory.selection.epsilon_pld_selected_gaussian`) and the RDP bound ``epsilon_of`` gives
    with ``accountant="rdp"``; both are upper bounds, neither is below the other everywhere, and
    ``info.bound`` says which one was smaller (docs/selection.md)."""
    q, t = (event.sampling_rate, event.steps) if isinstance(event, PoissonSelectedGaussian) else (1.0, 1)
    pld, gap = epsilon_pld_selected_gaussian(q, event.noise_multiplier, event.k, event.selection_epsilon, t, delta)
    rdp = epsilon_of(event, delta)[0]
    if not math.isfinite(pld):  # FFT noise near delta, or a PLD that rose on the finer grid: not used
        status, gap = "unstable", math.inf
    else:
        status = "settled" if gap <= PLD_SELECTION_ACCURACY * pld + 1e-9 else "unsettled"
    eps, bound = (pld, "pld") if pld <= rdp else (rdp, "rdp")
    return eps, PLDInfo(eps, gap, bound, status, pld, gap, rdp, (), ())


def epsilon_of(event, delta, *, accountant="rdp"):
    """``(epsilon, order)`` of a privacy event, or of a sequence of events composed.

    * :class:`PoissonGaussian`: :func:`dptheory.accounting.epsilon` of its parameters (RDP on the
      default order grid, extended and refined between grid orders; or PLD: min(PLD, RDP) of
      :func:`dptheory.accounting.epsilon_pld`, returned with order None).
    * :class:`Gaussian`: the same at sampling rate 1 and one step.
    * :class:`PoissonSelectedGaussian`: :func:`dptheory.selection.epsilon_selected_gaussian`
      (RDP on :data:`~dptheory.selection.SELECTION_ORDERS`); :class:`SelectedGaussian`: its
      batch-level RDP on the same orders. With ``accountant="pld"``:
      the smaller of :func:`dptheory.selection.epsilon_pld_selected_gaussian` (sampling rate 1 and
      one step for :class:`SelectedGaussian`; relative accuracy about 2e-3) and the RDP value above,
      returned as ``(epsilon, PLDInfo)`` whose ``bound`` says which. Neither bound is below the other
      everywhere: the PLD is lower where the noise dominates, the RDP where the selection does
      (docs/selection.md).
    * :class:`NonPrivate`: ``(inf, None)``.
    * a non-empty sequence (e.g. training phases with different noise): if any element is
      :class:`NonPrivate`, ``(inf, None)``; otherwise with ``accountant="rdp"`` the RDP curves
      add order-wise on :data:`~dptheory.accounting.DEFAULT_ORDERS` (no refinement between
      orders) and are converted by :func:`~dptheory.accounting.epsilon_from_rdp`; with
      ``accountant="pld"`` the events' :meth:`to_dp_accounting` are composed in dp-accounting's
      PLD accountant (discretisation 1e-4); a sequence holding a selection event raises ValueError
      (its PLD is not composed with dp-accounting's).

    Parameters
    ----------
    event : Gaussian, PoissonGaussian, SelectedGaussian, PoissonSelectedGaussian, NonPrivate, or sequence of them
    delta : float
        Target delta in (0, 1).
    accountant : {"rdp", "pld"}
        ``"pld"`` needs dp-accounting (``pip install "dpsparse[pld]"``).

    Returns
    -------
    (float, float or None)
        epsilon (``inf`` if anything is non-private) and the optimal RDP order; the order is
        None for the PLD accountant and for non-private events, except a selection event under
        ``accountant="pld"``, whose second element is the :class:`~dptheory.accounting.PLDInfo`.

    Raises
    ------
    ValueError
        Naming ``event``, ``delta`` or ``accountant`` when one is invalid.

    Notes
    -----
    A sequence is accounted on the fixed grid only, so ``epsilon_of([e], delta)`` can be larger
    than ``epsilon_of(e, delta)`` (e.g. when the best order lies above 63), and DEFAULT_ORDERS
    lacks dp-accounting's orders 11 and 128..1024.
    """
    check_choice("accountant", accountant, ACCOUNTANTS)
    d = check_delta(delta)
    if accountant == "pld" and isinstance(event, (PoissonGaussian, Gaussian)):   # min(PLD, RDP); order None
        q, t = (event.sampling_rate, event.steps) if isinstance(event, PoissonGaussian) else (1.0, 1)
        return epsilon(q, event.noise_multiplier, t, d, accountant="pld")[0], None
    if isinstance(event, PoissonGaussian):
        return epsilon(event.sampling_rate, event.noise_multiplier, event.steps, d, accountant=accountant)
    if isinstance(event, Gaussian):
        return epsilon(1.0, event.noise_multiplier, 1, d, accountant=accountant)
    if isinstance(event, _SELECTION_EVENTS):
        if accountant == "pld":
            return _selection_pld(event, d)
        if isinstance(event, PoissonSelectedGaussian):
            return epsilon_selected_gaussian(event.sampling_rate, event.noise_multiplier, event.k,
                                             event.selection_epsilon, event.steps, d)
        return epsilon_from_rdp(SELECTION_ORDERS, event.rdp(SELECTION_ORDERS), d)
    if isinstance(event, NonPrivate):
        return math.inf, None
    events = _as_event_list(event)
    if any(isinstance(e, NonPrivate) for e in events):
        return math.inf, None
    if accountant == "pld":
        sel = [e for e in events if isinstance(e, _SELECTION_EVENTS)]
        if sel:
            raise ValueError(_NO_PLD.format(sel[0]))
        dp_accounting = require_dp_accounting('accountant="pld"')
        acc = dp_accounting.pld.PLDAccountant(value_discretization_interval=_PLD_INTERVAL)
        for e in events:
            acc.compose(e.to_dp_accounting())
        return float(acc.get_epsilon(d)), None
    total = sum(e.rdp(DEFAULT_ORDERS) for e in events)
    return epsilon_from_rdp(DEFAULT_ORDERS, total, d)
