r"""Sensitivity and privacy accounting of TopAgg sign voting (DataLens, Wang et al., CCS 2021).

TopAgg (arXiv 2103.11109, Alg. 1; ``sims.mechanisms.topagg``): each teacher ``t`` keeps the ``k``
largest-magnitude coordinates of its gradient and votes their signs, a vector
:math:`v_t \in \{-1, 0, +1\}^d` with exactly ``k`` non-zero entries, so :math:`\|v_t\|_2 = \sqrt k`.
The votes are summed, :math:`S = \sum_t v_t`, Gaussian noise :math:`N(0, s^2 I_d)` is added to all
``d`` coordinates, and the release is the thresholded sign of :math:`S + s z`.

Which neighbouring relation applies decides the sensitivity of ``S`` (docs/theory.md §1.6):

* one example per teacher, **add/remove** one example (the toolkit's convention, and the one
  the Poisson-subsampled accountant is for): ``S`` gains or loses one vote vector,
  :math:`\Delta = \sqrt k`;
* one example per teacher, **replace-one**: one vote vector ``v`` becomes another ``v'``,
  :math:`\Delta = \max \|v - v'\| = 2\sqrt k` (reached at :math:`v' = -v`);
* teachers that are consecutive slices of a Poisson batch (``teacher_size > 1`` in ``sims``):
  removing one example moves every later example into another teacher, so no constant bounds
  the change of ``S``; the toolkit refuses them and so does :func:`topagg_sensitivity`.

The release is then the Gaussian mechanism with noise multiplier :math:`s / \Delta`
(:func:`topagg_noise_multiplier`), accounted by :func:`dptheory.accounting.epsilon`
(:func:`topagg_epsilon`). :func:`datalens_rdp` is the per-step charge of the DataLens code,
for comparison.
"""
from __future__ import annotations

import numpy as np

from .accounting import epsilon, rdp_gaussian
from .validation import (
    check_choice,
    check_int,
    check_int_array,
    check_real,
    float_or_array,
)

__all__ = ["NEIGHBOURINGS", "datalens_rdp", "topagg_epsilon", "topagg_noise_multiplier", "topagg_sensitivity"]

#: the neighbouring relations :func:`topagg_sensitivity` knows.
NEIGHBOURINGS = ("add_remove", "replace_one")

_MICRO_BATCH = ("teacher_size > 1 (teachers that are slices of a sampled batch) has no sensitivity bound: "
                "removing one example reassigns every later example to another teacher")


def topagg_sensitivity(k, *, neighbouring="add_remove", teacher_size=1):
    r"""L2 sensitivity of the TopAgg vote sum with one example per teacher.

    .. math:: \Delta_{\mathrm{add/remove}} = \max_v \|v\|_2 = \sqrt k, \qquad
              \Delta_{\mathrm{replace}} = \max_{v, v'} \|v - v'\|_2 = 2\sqrt k

    over vote vectors :math:`v \in \{-1,0,1\}^d` with ``k`` non-zero entries (the bounds of
    the DataLens privacy analysis, Wang et al. 2021, ``docs/sources.md`` §S3; derived by exhaustive
    enumeration in ``proofs/topagg.py``). Adding or removing one
    example adds or removes its vote vector; replacing it swaps one vote vector for another.

    Parameters
    ----------
    k : int or array_like of int >= 1
        Coordinates each teacher votes on.
    neighbouring : {"add_remove", "replace_one"}
    teacher_size : int >= 1
        Examples per teacher. Only 1 is accepted: micro-batch teachers taken as slices of a
        Poisson batch have no bound (``sims.mechanisms.topagg`` refuses them too).

    Returns
    -------
    float or numpy.ndarray
        :math:`\sqrt k` or :math:`2\sqrt k`, elementwise in ``k``.

    Raises
    ------
    ValueError
        For ``k < 1``, an unknown ``neighbouring`` or ``teacher_size > 1``.
    """
    kk = check_int_array("k", k, low=1)
    check_choice("neighbouring", neighbouring, NEIGHBOURINGS)
    if check_int("teacher_size", teacher_size, low=1) > 1:
        raise ValueError(_MICRO_BATCH)
    factor = 1.0 if neighbouring == "add_remove" else 2.0
    return float_or_array(factor * np.sqrt(kk))


def topagg_noise_multiplier(noise_std, k, *, neighbouring="add_remove"):
    r"""Effective noise multiplier of a TopAgg stage: noise std on the vote sum over its sensitivity.

    .. math:: \sigma_{\mathrm{eff}} = \frac{s}{\Delta}, \qquad \Delta = \sqrt k \ \text{(add/remove)}
              \ \text{or}\ 2\sqrt k \ \text{(replace-one)}

    The Gaussian mechanism with sensitivity :math:`\Delta` and std ``s`` is the one with
    sensitivity 1 and std :math:`s/\Delta` (Mironov 2017, Prop. 7: its RDP is
    :math:`\alpha\Delta^2/(2s^2)`). ``sims.mechanisms.topagg(k, sigma)`` draws ``s = sigma sqrt(k)``,
    so its effective multiplier is ``sigma`` under add/remove.

    Parameters
    ----------
    noise_std : float > 0
        Absolute std ``s`` of the noise on each coordinate of the vote sum.
    k : int or array_like of int >= 1
    neighbouring : {"add_remove", "replace_one"}

    Returns
    -------
    float or numpy.ndarray
    """
    s = check_real("noise_std", noise_std, low=0.0, low_open=True)
    return float_or_array(s / np.asarray(topagg_sensitivity(k, neighbouring=neighbouring)))


def topagg_epsilon(k, noise_std, sampling_rate, steps, delta, *, neighbouring="add_remove", accountant="rdp"):
    r"""``(epsilon, order)`` of ``steps`` TopAgg steps with one example per teacher.

    .. math:: \varepsilon = \texttt{epsilon}(q,\ s/\Delta,\ T,\ \delta)

    :func:`dptheory.accounting.epsilon` (Poisson-subsampled Gaussian, RDP or PLD) at the
    effective multiplier of :func:`topagg_noise_multiplier`.

    When each applies:

    * ``neighbouring="add_remove"`` (default): DP-SGD with Poisson sampling at rate ``q``, every
      sampled example a teacher (the ``sims`` TopAgg chain; same event as
      ``chain(topagg(k, s / sqrt(k))).privacy.event``).
    * ``neighbouring="replace_one"``: only without subsampling (``sampling_rate=1``, every teacher
      votes every step, as in DataLens); the subsampled accountant here is an add/remove result,
      and dp-accounting has no replace-one Poisson accountant either, so ``q < 1`` is refused.
      At ``q = 1`` this is the Gaussian mechanism at multiplier :math:`s / (2\sqrt k)`, whose RDP
      per step is :func:`datalens_rdp`.

    Parameters
    ----------
    k : int >= 1
    noise_std : float > 0
        Absolute noise std on the vote sum.
    sampling_rate : float in (0, 1]
    steps : int >= 1
    delta : float in (0, 1)
    neighbouring : {"add_remove", "replace_one"}
    accountant : {"rdp", "pld"}
        Passed to :func:`dptheory.accounting.epsilon`.

    Returns
    -------
    (float, float or None)
        As :func:`dptheory.accounting.epsilon`.
    """
    k = check_int("k", k, low=1)
    q = check_real("sampling_rate", sampling_rate, low=0.0, high=1.0, low_open=True)
    check_choice("neighbouring", neighbouring, NEIGHBOURINGS)
    if neighbouring == "replace_one" and q < 1.0:
        raise ValueError(f"sampling_rate must be 1 with neighbouring='replace_one' (the Poisson-subsampled "
                         f"accountant is for add/remove adjacency), got {sampling_rate!r}")
    sigma = topagg_noise_multiplier(noise_std, k, neighbouring=neighbouring)
    return epsilon(q, sigma, steps, delta, accountant=accountant)


def datalens_rdp(orders, k, noise_std, steps=1):
    r"""RDP charged by the DataLens code for ``steps`` TopAgg steps: :math:`2 k \alpha T / s^2`.

    .. math:: \varepsilon(\alpha) = T\,\frac{\alpha\,(2\sqrt k)^2}{2 s^2} = \frac{2 k \alpha T}{s^2}

    The RDP of the (not subsampled) Gaussian mechanism with the replace-one sensitivity
    :math:`2\sqrt k` and absolute std ``s`` (Mironov 2017, Prop. 7, at that sensitivity; the charge
    of the DataLens accountant, Wang et al. 2021, ``docs/sources.md`` §S3). It applies when the
    teachers are a fixed partition of the data, all of them vote at every step and neighbouring
    datasets differ in one replaced record. It is 4 times the add/remove charge
    :math:`k\alpha/(2s^2)` of one example per teacher, and it ignores amplification by
    subsampling; for Poisson-sampled DP-SGD use :func:`topagg_epsilon`.

    Parameters
    ----------
    orders : float or array_like
        Renyi orders in (1, inf).
    k : int >= 1
    noise_std : float > 0
    steps : int >= 1

    Returns
    -------
    numpy.ndarray
        One value per order.
    """
    k = check_int("k", k, low=1)
    t = check_int("steps", steps, low=1)
    sigma = topagg_noise_multiplier(noise_std, k, neighbouring="replace_one")
    return t * rdp_gaussian(orders, sigma)
