"""Per-example clipping of dense-layer gradients, summed over the batch, without a ``(B, d)`` tensor.

Flat clipping (Abadi et al., CCS 2016, "Deep Learning with Differential Privacy", Algorithm 1):
``sum_i w_i g_i`` with ``w_i = min(1, C / ||g_i||)``; every clipped gradient has norm ``<= C``, so
the sum has L2 sensitivity ``C`` under add/remove adjacency.

Per-layer clipping (McMahan et al., ICLR 2018, "Learning Differentially Private Recurrent Language
Models", section 3): layer ``l`` of example ``i`` is scaled by ``w_il = min(1, C_l / ||g_i^l||)``;
the whole clipped gradient then has norm ``<= sqrt(sum_l C_l^2)``, the total sensitivity to which
the noise must be calibrated (:func:`total_clip_norm`).

With a 0/1 ``mask`` (mask-then-clip) the norms are those of ``mask * g_i`` and the sum is
``mask * sum_i w_i g_i = sum_i w_i (mask * g_i)``; the sensitivity bound is unchanged.
Norms and sums use the norm trick of ``sims.models.pergrad``.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from dptheory.validation import check_real

from .layout import Layout
from .pergrad import Backprop, sq_norms, weighted_sum

__all__ = ["clipped_grad_sum", "clip_factors", "total_clip_norm", "layer_clip_norms", "flat_clip_factors"]


def layer_clip_norms(clip_norm, layout: Layout) -> np.ndarray:
    """Per-layer thresholds ``C_l`` as a float64 array of length ``n_layers``.

    A scalar ``C`` is split equally, ``C_l = C / sqrt(n_layers)``, so that the total sensitivity
    ``sqrt(sum_l C_l^2)`` stays ``C`` whichever clipping mode is used; a sequence gives ``C_l`` directly
    (length ``n_layers``, each ``> 0``).
    """
    L = layout.n_layers
    if np.ndim(clip_norm) == 0:
        c = check_real("clip_norm", clip_norm, low=0.0, low_open=True)
        return np.full(L, c / math.sqrt(L))
    seq = list(np.asarray(clip_norm, dtype=object).ravel()) if np.ndim(clip_norm) == 1 else None
    if seq is None or len(seq) != L:
        raise ValueError(f"clip_norm must be a positive number or a sequence of {L} positive numbers "
                         f"(one per layer), got {clip_norm!r}")
    return np.array([check_real(f"clip_norm[{l}]", c, low=0.0, low_open=True) for l, c in enumerate(seq)])


def total_clip_norm(clip_norm, layout: Layout) -> float:
    """L2 sensitivity of the clipped sum: ``C`` for a scalar, ``sqrt(sum_l C_l^2)`` for per-layer ``C_l``.

    Raises ``ValueError`` for ``clip_norm=None`` (no clipping: the sensitivity is unbounded).
    """
    if not isinstance(layout, Layout):
        raise ValueError(f"layout must be a sims.models.Layout, got {type(layout).__name__}")
    if clip_norm is None:
        raise ValueError("clip_norm=None means no clipping: the sensitivity is unbounded; "
                         "give a positive number or one positive number per layer")
    if np.ndim(clip_norm) == 0:
        return check_real("clip_norm", clip_norm, low=0.0, low_open=True)
    return float(np.sqrt(np.sum(layer_clip_norms(clip_norm, layout) ** 2)))


def _check_mask(mask, layout):
    m = np.asarray(mask)
    if m.shape != (layout.n_params,):
        raise ValueError(f"mask must have shape ({layout.n_params},), got {m.shape}")
    if m.dtype != np.bool_:
        if m.dtype.kind not in "biuf" or not np.all((m == 0) | (m == 1)):
            raise ValueError("mask must be boolean or contain only 0 and 1")
    return m


@numba.njit(cache=True)
def _flat_factors_kernel(nsq, c, f, norms):
    """Per example: ``n = sqrt(sum_l nsq[i, l])`` (summed in order, in nsq's dtype), ``f = c / max(n, c)``;
    returns the number of clipped examples (``n > c``)."""
    n_clipped = 0
    for i in range(nsq.shape[0]):
        t = nsq[i, 0]
        for l in range(1, nsq.shape[1]):
            t += nsq[i, l]
        n = np.sqrt(t)
        f[i] = c / max(n, c)
        norms[i] = n
        if n > c:
            n_clipped += 1
    return n_clipped


def flat_clip_factors(nsq: np.ndarray, clip_norm: float):
    """Flat-clipping factors (Abadi et al. 2016, Alg. 1) from per-layer squared norms, in one Numba pass.

    ``n_i = sqrt(sum_l nsq[i, l])``, ``w_i = C / max(n_i, C)`` (= ``min(1, C / n_i)``, 1 for a zero
    gradient), in ``nsq``'s dtype (float32/float64; ``C`` rounded to it). Internal fast path of
    :func:`clipped_grad_sum` and of the mechanisms' clip stage (``clip_norm`` already validated).
    Reference: :func:`flat_clip_factors_reference`.

    Returns
    -------
    f : ndarray (B,)
    norms : ndarray (B,)
        ``n_i``.
    n_clipped : int
        ``#{i : n_i > C}``.
    """
    dt = nsq.dtype
    B = nsq.shape[0]
    f = np.empty(B, dtype=dt)
    norms = np.empty(B, dtype=dt)
    if nsq.shape[1] == 0 or dt.char not in "fd":  # not float32 / float64
        f[...], norms[...], k = flat_clip_factors_reference(nsq, clip_norm)
        return f, norms, k
    k = _flat_factors_kernel(np.ascontiguousarray(nsq), dt.type(clip_norm), f, norms)
    return f, norms, int(k)


def flat_clip_factors_reference(nsq: np.ndarray, clip_norm: float):
    """Plain-NumPy twin of :func:`flat_clip_factors`."""
    c = nsq.dtype.type(clip_norm)
    n = np.sqrt(nsq.sum(axis=1))
    return c / np.maximum(n, c), n, int(np.count_nonzero(n > c))


def clip_factors(sq, clip_norm, *, per_layer, layout):
    """Clip factors from per-layer squared norms ``sq`` (B, L): the one clipping rule of the toolkit.

    Flat (Abadi et al. 2016): ``n_i = sqrt(sum_l sq[i, l])``, ``w_i = C / max(n_i, C)``
    (= ``min(1, C/n_i)``, 1 for a zero gradient), shape (B,). Per layer (McMahan et al. 2018):
    ``w_il = C_l / max(n_il, C_l)`` with ``C_l`` from :func:`layer_clip_norms`, shape (B, L).
    ``clip_norm=None``: no clipping, all factors 1. ``clip_norm`` is assumed validated.
    Returns ``(factors, norms)``; an example is clipped iff a factor is below 1.
    """
    if clip_norm is not None and not per_layer:
        f, norms, _ = flat_clip_factors(sq, clip_norm)
        return f, norms
    norms = np.sqrt(sq if per_layer else sq.sum(axis=1))
    if clip_norm is None:
        return np.ones_like(norms), norms
    c = layer_clip_norms(clip_norm, layout).astype(sq.dtype)
    return c / np.maximum(norms, c), norms


def clipped_grad_sum(bp: Backprop, clip_norm, *, per_layer=False, mask=None):
    """Sum of per-example clipped (optionally masked) gradients.

    Parameters
    ----------
    bp : Backprop
        Output of ``sims.models.backprop`` for the batch (``B = 0`` gives a zero sum).
    clip_norm : float, sequence of float, or None
        ``C > 0``; with ``per_layer=True`` a scalar is split as ``C / sqrt(n_layers)`` per layer or a
        sequence gives ``C_l``. ``None`` = no clipping (all factors 1; NOT private).
    per_layer : bool
        Clip each layer separately (McMahan et al. 2018) instead of the whole gradient (Abadi et al. 2016).
    mask : None or array (d,) of bool / 0-1
        Mask-then-clip: norms and sum of ``mask * g_i``.

    Returns
    -------
    sum_vec : ndarray (d,)
        ``sum_i w_i (mask * g_i)`` in the backprop dtype.
    norms : ndarray (B,) or (B, n_layers)
        Norms before clipping (of the masked gradients), whole-model or per layer.
    clip_factors : ndarray, same shape as ``norms``
        ``w = min(1, C / norm)``, computed as ``C / max(norm, C)`` (1 for a zero gradient).
    """
    if not isinstance(bp, Backprop):
        raise ValueError(f"bp must be a sims.models.Backprop, got {type(bp).__name__}")
    layout = bp.layout
    m = None if mask is None else _check_mask(mask, layout)
    sq = sq_norms(bp, m)
    if clip_norm is not None and not per_layer:
        if np.ndim(clip_norm) != 0:
            raise ValueError(f"clip_norm must be one positive number for flat clipping (a sequence of "
                             f"per-layer norms needs per_layer=True), got {clip_norm!r}")
        clip_norm = check_real("clip_norm", clip_norm, low=0.0, low_open=True)
    factors, norms = clip_factors(sq, clip_norm, per_layer=per_layer, layout=layout)
    total = weighted_sum(bp, factors)
    if m is not None:
        total *= m
    return total, norms, factors
