"""Helpers shared by the mechanisms: reproducible normals, top-k masks, random masks, energies."""
from __future__ import annotations

import functools
import math

import numpy as np

from sims.noise import standard_normal
from sims.rng import derive_seed

__all__ = ["normals", "top_k_mask", "random_k_mask", "check_k", "sq", "blocks", "quantiles_linear"]


def normals(n: int, rng: np.random.Generator, dtype) -> np.ndarray:
    """``n`` standard normals in ``dtype``, reproducible from ``rng``.

    One seed is taken from ``rng`` (``int(rng.integers(2**63))``) and passed to the project's
    counter-based generator :func:`sims.noise.standard_normal` (same result for any thread count).
    """
    seed = derive_seed(rng)
    return standard_normal(int(n), seed, dtype=dtype)


def sq(x) -> float:
    """Squared L2 norm as a Python float (accumulated in float64)."""
    x = np.asarray(x).ravel()
    if x.dtype == np.float64:
        return float(np.dot(x, x))
    if x.shape[0] <= 65536:  # small: a float64 copy and BLAS dot beat einsum's casting machinery
        x = x.astype(np.float64)
        return float(np.dot(x, x))
    return float(np.einsum("i,i->", x, x, dtype=np.float64))


def blocks(layout, layerwise: bool):
    """Slices over which a per-block selection acts: the whole vector, or each layer."""
    if layerwise:
        return [layout.layer_slice(l) for l in range(layout.n_layers)]
    return [slice(0, layout.n_params)]


def check_k(name: str, k, layout, layerwise: bool) -> int:
    """Validate ``k`` in ``[1, d]`` (or ``[1, smallest layer size]`` when layer-wise)."""
    from dptheory.validation import check_int

    k = check_int(name, k, low=1)
    if layout is not None:
        hi = min(layout.offsets[l + 1] - layout.offsets[l] for l in range(layout.n_layers)) if layerwise \
            else layout.n_params
        check_int(name, k, low=1, high=hi)
    return k


def top_k_mask(x: np.ndarray, k: int, layout, layerwise: bool) -> np.ndarray:
    """Bool mask of the ``k`` largest ``|x|`` (per layer when ``layerwise``).

    Exactly ``k`` per block: every coordinate with ``|x_c| > t`` (``t`` the k-th largest
    magnitude), then the lowest-index coordinates with ``|x_c| = t``. The tie rule is the one of
    :func:`sims.stacked.kernels.top_k_rows`, so both engines keep the same set when magnitudes tie
    (a clean gradient at zero parameters does). A NaN counts as the largest magnitude, so it is
    kept and the run's divergence check sees it.
    """
    keep = np.zeros(x.shape[-1], dtype=bool)
    for sl in blocks(layout, layerwise):
        seg = np.abs(x[sl])
        seg[np.isnan(seg)] = np.inf  # a NaN is kept (as the largest), so a non-finite update stays visible
        n = seg.shape[0]
        if k >= n:
            keep[sl] = True
            continue
        t = np.partition(seg, n - k)[n - k]
        block = seg > t
        block[np.flatnonzero(seg == t)[:k - np.count_nonzero(block)]] = True
        keep[sl] = block
    return keep


def random_k_mask(rng: np.random.Generator, k: int, layout, layerwise: bool) -> np.ndarray:
    """Bool mask of ``k`` coordinates drawn uniformly without replacement (per layer when ``layerwise``)."""
    keep = np.zeros(layout.n_params, dtype=bool)
    for sl in blocks(layout, layerwise):
        n = sl.stop - sl.start
        idx = rng.choice(n, size=min(k, n), replace=False)
        keep[sl.start + idx] = True
    return keep


@functools.lru_cache(maxsize=64)
def _quantile_plan(n: int, qs: tuple):
    """NumPy's linear-method indices for ``n`` values: virtual indices, floors (-1 past the end) and
    the partition kth array ``unique([0, -1, prev, next])``, exactly as ``np.quantile`` builds them."""
    virt = (n - 1) * np.asarray(qs, dtype=np.float64)
    prev = np.floor(virt)
    nxt = prev + 1
    above = virt >= n - 1
    prev[above] = -1
    nxt[above] = -1
    prev = prev.astype(np.intp)
    nxt = nxt.astype(np.intp)
    kth = np.unique(np.concatenate(([0, -1], prev, nxt)))
    return tuple(float(v) for v in virt), tuple(int(j) for j in prev), tuple(int(j) for j in nxt), kth


def quantiles_linear(x, qs) -> list:
    """Quantiles ``qs`` of the 1-D sample ``x``, equal bit for bit to ``np.quantile(x.astype(float64), qs)``.

    NumPy's default ``method="linear"`` (Hyndman & Fan 1996, definition 7): with the sorted sample
    ``x_(0) <= ... <= x_(n-1)``, the virtual index ``v = (n - 1) q``, ``j = floor(v)``, ``g = v - j``,
    ``Q(q) = x_(j) + (x_(j+1) - x_(j)) g`` (evaluated as ``x_(j+1) - (x_(j+1) - x_(j)) (1 - g)`` when
    ``g >= 0.5``, and from ``x_(n-1)`` when ``v >= n - 1``; NaN anywhere gives NaN): the same
    partition (same kth, so the same placement of tied values such as -0.0/0.0) and the same
    floating-point operations as NumPy's ``_quantile``/``_lerp``, with the index plan cached per
    ``(n, qs)``: ~3 us for 256 values instead of ``np.quantile``'s 20-50 us of generic machinery.
    ``x`` must be non-empty; ``qs`` a tuple in ``[0, 1]`` (trusted: internal metric helper).
    """
    x = np.asarray(x).ravel()
    if x.dtype.char not in "fd":  # float32 is partitioned as is: its order (ties included) is that of
        x = x.astype(np.float64)  # its exact float64 image, so the same elements are picked
    virt, prev, nxt, kth = _quantile_plan(x.shape[0], tuple(qs))
    part = np.partition(x, kth)
    if math.isnan(part[-1]):  # NaNs are ordered last
        return [math.nan] * len(virt)
    out = []
    for v, j, k in zip(virt, prev, nxt):
        a = float(part[j])
        b = float(part[k])
        g = v - j
        diff = b - a
        out.append(b - diff * (1 - g) if g >= 0.5 else a + diff * g)
    return out


_NORM_QS = (0.1, 0.5, 0.9)


def report_norm_quantiles(work, norms) -> None:
    """Report ``grad_norm_q10/q50/q90`` of the per-example norms ``norms`` (nothing when empty);
    equal bit for bit to ``np.quantile(norms.astype(float64), [0.1, 0.5, 0.9])``."""
    if norms.size:
        q = quantiles_linear(norms, _NORM_QS)
        work.report(grad_norm_q10=q[0], grad_norm_q50=q[1], grad_norm_q90=q[2])
