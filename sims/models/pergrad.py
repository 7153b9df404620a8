"""Per-example gradient information of dense layers, without a batch x parameters tensor.

For a dense layer ``z = W a + b`` the gradient of example ``i``'s loss is the
outer product ``delta_i a_i^T`` (and ``delta_i`` for the bias), where
``delta_i = d loss_i / d z_i``. Hence (Goodfellow 2015, "Efficient per-example
gradient computations"; the "norm trick" of Opacus' ghost clipping):

* ``||g_i^W||^2 = ||delta_i||^2 ||a_i||^2``, an O(B (in + out)) computation;
* with a 0/1 mask ``M`` on the weights,
  ``||M * g_i^W||^2 = sum_jk M_jk delta_ij^2 a_ik^2 = [(delta^2) M (a^2)^T]_ii``,
  one GEMM with the mask (mask-then-clip never materialises per-example grads);
* ``sum_i w_i g_i^W = delta^T (w[:, None] * a)``, one GEMM for the clipped sum.

For a SMALL kept set (a mask keeping a fraction ``rho`` of the weights, e.g. random freeze at
90 %), two O(B k) Numba kernels over the kept ``(row j, col k)`` pairs of each layer replace the
two GEMMs (``k = rho d``, GEMMs cost O(B d)):

* masked norms: ``sum_j delta_ij^2 (sum_{k kept in row j} a_ik^2 + [bias j kept])``, with
  ``delta^2`` and ``a^2`` stored transposed (``(out, B)``, ``(in, B)``) so the inner loop over the
  batch is contiguous;
* masked clipped sum ON THE KEPT COORDINATES ONLY (a compact vector of length k, in flat order):
  ``s_jk = sum_i (w_i delta_ij) a_ik``.

Which one runs is decided by :data:`SPARSE_MAX_KEPT` (measured crossover,
``benchmarks/bench_sparse_noise.py``).

A :class:`Backprop` record holds the per-layer inputs ``a_l`` and output
gradients ``delta_l`` of one batch; models produce it, mechanisms consume it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numba import prange

from .layout import Layout

__all__ = [
    "Backprop", "MaskBlocks", "mask_blocks", "sq_norms", "weighted_sum", "materialize",
    "weighted_sum_kept", "kept_sq_norms", "transposed", "SPARSE_MAX_KEPT", "KeptPairs",
]

#: Kept fraction at or below which :func:`sq_norms` (with ``blocks``) and the clip stage use the
#: O(B k) kept-pair kernels instead of the O(B d) mask GEMMs. Measured on the 784-1024-1024-10
#: float32 MLP, batch 256 (``benchmarks/bench_sparse_noise.py`` prints the crossover): ~0.2 with one
#: thread, ~0.45 with two (2026-11-23); the single-threaded crossover is used.
SPARSE_MAX_KEPT = 0.2

_N_BLOCKS = 16  # fixed row blocks of the masked-norm kernel: the reduction order never depends on threads


@dataclass(frozen=True)
class Backprop:
    """What one forward/backward pass over a batch leaves behind.

    Attributes
    ----------
    layout : Layout
    acts : tuple of ndarray
        ``acts[l]`` has shape ``(B, sizes[l])``: the input of layer ``l``.
    deltas : tuple of ndarray
        ``deltas[l]`` has shape ``(B, sizes[l+1])``: ``d loss_i / d z_l`` for each example
        (gradient of the per-example loss, NOT divided by the batch size).
    losses : ndarray
        Per-example losses, shape ``(B,)``.
    """

    layout: Layout
    acts: tuple
    deltas: tuple
    losses: np.ndarray

    @property
    def batch_size(self) -> int:
        return self.losses.shape[0]

    def rows(self, start: int, stop: int) -> "Backprop":
        """The record of examples ``start:stop`` (views, no copy): for chunked per-example work."""
        return Backprop(self.layout, tuple(a[start:stop] for a in self.acts),
                        tuple(x[start:stop] for x in self.deltas), self.losses[start:stop])


@dataclass(frozen=True)
class MaskBlocks:
    """A flat 0/1 mask converted once to float blocks, for repeated masked norms.

    Attributes
    ----------
    layout : Layout
    dtype : numpy dtype
        Float dtype of the blocks (that of the Backprop records they will be used with).
    flat : ndarray, shape ``(d,)``
        The mask as 0.0 / 1.0 in ``dtype`` (a float multiply by it is cheaper than a bool cast).
    blocks : tuple
        Per layer ``(M_W, m_b)`` views into ``flat`` (``M_W`` of shape ``(out, in)``, ``m_b`` of
        shape ``(out,)`` or ``None`` without bias).
    idx : ndarray of int64, shape ``(k,)``
        ``np.flatnonzero(mask)``: the kept coordinates, sorted (the order of compact vectors).
    pairs : tuple
        Per layer :class:`KeptPairs`: the kept weights as CSR rows and the kept biases.
    """

    layout: Layout
    dtype: np.dtype
    flat: np.ndarray
    blocks: tuple
    idx: np.ndarray | None = None
    pairs: tuple | None = None

    @property
    def kept_fraction(self) -> float:
        """``k / d``."""
        return self.idx.shape[0] / max(1, self.layout.n_params)

    @property
    def sparse(self) -> bool:
        """Whether the O(B k) kept-pair kernels are used (``kept_fraction <= SPARSE_MAX_KEPT``)."""
        return self.pairs is not None and self.kept_fraction <= SPARSE_MAX_KEPT


@dataclass(frozen=True)
class KeptPairs:
    """The kept coordinates of one dense layer, for the O(B k) kernels.

    Attributes
    ----------
    w_start : int
        Position in the compact (kept-only) vector of the layer's first kept weight.
    row_ptr : ndarray int64, ``(out + 1,)``
        Kept weights of row ``j`` are ``cols[row_ptr[j]:row_ptr[j+1]]`` (CSR, columns ascending).
    cols : ndarray int64, ``(k_W,)``
    b_start : int
        Position in the compact vector of the layer's first kept bias.
    brows : ndarray int64
        Kept bias rows, ascending (empty without bias).
    bflag : ndarray, ``(out,)``, in the blocks' dtype
        1.0 where the bias of row ``j`` is kept, else 0.0.
    """

    w_start: int
    row_ptr: np.ndarray
    cols: np.ndarray
    b_start: int
    brows: np.ndarray
    bflag: np.ndarray


def _kept_pairs(layout: Layout, idx: np.ndarray, dt: np.dtype) -> tuple:
    """Split sorted kept flat indices into per-layer :class:`KeptPairs` (an O(k + sum out) pass)."""
    out = []
    for l in range(layout.n_layers):
        n_in, n_out = layout.sizes[l], layout.sizes[l + 1]
        ws = layout.weight_slice(l)
        bs = layout.bias_slice(l)
        stop = ws.stop if bs is None else bs.stop
        p0, p1, p2 = (int(v) for v in np.searchsorted(idx, [ws.start, ws.stop, stop]))
        loc = idx[p0:p1] - ws.start
        rows = loc // n_in
        cols = np.ascontiguousarray(loc - rows * n_in, dtype=np.int64)
        row_ptr = np.searchsorted(rows, np.arange(n_out + 1)).astype(np.int64)
        brows = np.ascontiguousarray(idx[p1:p2] - (ws.stop if bs is not None else 0), dtype=np.int64)
        bflag = np.zeros(n_out, dtype=dt)
        bflag[brows] = 1.0
        out.append(KeptPairs(p0, row_ptr, cols, p1, brows, bflag))
    return tuple(out)


def mask_blocks(layout: Layout, mask, dtype) -> MaskBlocks:
    """Convert a flat ``(d,)`` 0/1 (or bool) mask to a :class:`MaskBlocks` record in ``dtype``.

    An O(d) conversion, worth caching while the mask does not change (e.g. a random-freeze mask
    redrawn once per epoch) and passing as ``sq_norms(bp, blocks=...)``.

    Raises
    ------
    ValueError
        If ``mask`` does not have shape ``(layout.n_params,)`` or ``dtype`` is not float32/float64.
    """
    from dptheory.validation import check_choice

    dt = np.dtype(dtype)
    check_choice("dtype", dt.name, ("float32", "float64"))
    mask = np.asarray(mask)
    if mask.shape != (layout.n_params,):
        raise ValueError(f"mask must have shape ({layout.n_params},), got {mask.shape}")
    flat = np.ascontiguousarray(mask, dtype=dt)
    flat.setflags(write=False)
    idx = np.flatnonzero(flat)
    pairs = _kept_pairs(layout, idx, dt)
    return MaskBlocks(layout, dt, flat, tuple(layout.views(flat)), idx, pairs)


@numba.njit(cache=True, fastmath={"reassoc"})
def _row_sq_kernel(x, out):
    """``out[i] = sum_k x[i, k]^2`` accumulated in ``x``'s dtype (reassociated: vectorised)."""
    for i in range(x.shape[0]):
        acc = x.dtype.type(0.0)
        for k in range(x.shape[1]):
            acc += x[i, k] * x[i, k]
        out[i] = acc


@numba.njit(cache=True, fastmath={"reassoc"})
def _layer_sq_kernel(a, d, bias, out, col):
    """``out[i, col] = ||d_i||^2 (||a_i||^2 + bias)``: one dense layer's per-example squared
    gradient norm (norm trick), row sums reassociated as in :func:`_row_sq_kernel`."""
    for i in range(a.shape[0]):
        sa = a.dtype.type(0.0)
        for k in range(a.shape[1]):
            sa += a[i, k] * a[i, k]
        sd = a.dtype.type(0.0)
        for j in range(d.shape[1]):
            sd += d[i, j] * d[i, j]
        out[i, col] = sd * sa + sd * bias


def row_sq(x: np.ndarray) -> np.ndarray:
    """Squared L2 norm of each row of a 2-D float32/float64 array, in its dtype (Numba kernel).

    Internal helper of :func:`sq_norms`; equals :func:`row_sq_reference` up to float rounding
    (the kernel's sum is reassociated for SIMD). Other dtypes fall back to the reference.
    """
    if x.dtype not in (np.float32, np.float64):
        return row_sq_reference(x)
    x = np.ascontiguousarray(x)
    out = np.empty(x.shape[0], dtype=x.dtype)
    _row_sq_kernel(x, out)
    return out


def row_sq_reference(x: np.ndarray) -> np.ndarray:
    """Plain-NumPy twin of :func:`row_sq`: ``einsum("ij,ij->i", x, x)``."""
    return np.einsum("ij,ij->i", x, x)


@numba.njit(parallel=True, cache=True)
def _kept_sq_norms_kernel(d2t, a2t, row_ptr, cols, bflag, partial):
    """``partial[b, i] = sum_{j in block b} d2t[j, i] (sum_{k kept in row j} a2t[k, i] + bflag[j])``.

    Rows are split into ``partial.shape[0]`` FIXED contiguous blocks (one accumulator row each), so
    the summation order does not depend on the thread count or on scheduling.
    """
    n_out, B = d2t.shape
    n_blk = partial.shape[0]
    per = (n_out + n_blk - 1) // n_blk
    for b in prange(n_blk):
        part = partial[b]
        acc = np.empty(B, dtype=d2t.dtype)
        for i in range(B):
            part[i] = 0.0
        for j in range(b * per, min(n_out, (b + 1) * per)):
            lo, hi = row_ptr[j], row_ptr[j + 1]
            if lo == hi and bflag[j] == 0.0:
                continue
            f = bflag[j]
            for i in range(B):
                acc[i] = f
            for p in range(lo, hi):
                k = cols[p]
                for i in range(B):
                    acc[i] += a2t[k, i]
            for i in range(B):
                part[i] += d2t[j, i] * acc[i]


@numba.njit(parallel=True, cache=True, fastmath={"reassoc"})
def _kept_wsum_kernel(dwt, at, row_ptr, cols, brows, w_start, b_start, out):
    """``out[w_start + p] = sum_i dwt[j, i] at[cols[p], i]`` for the kept pair ``p`` of row ``j``;
    ``out[b_start + t] = sum_i dwt[brows[t], i]``. Each output is written by one iteration (its
    reassociated dot product has a fixed order): no cross-thread reduction."""
    n_out, B = dwt.shape
    for j in prange(n_out):
        for p in range(row_ptr[j], row_ptr[j + 1]):
            k = cols[p]
            acc = dwt.dtype.type(0.0)
            for i in range(B):
                acc += dwt[j, i] * at[k, i]
            out[w_start + p] = acc
    for t in prange(brows.shape[0]):
        j = brows[t]
        acc = dwt.dtype.type(0.0)
        for i in range(B):
            acc += dwt[j, i]
        out[b_start + t] = acc


@numba.njit(parallel=True, cache=True)
def _transpose_kernel(x, out):
    """``out[k, i] = x[i, k]`` by 16 x 16 tiles; the columns ``i0:i0+16`` of ``out`` are written by one iteration."""
    B, n = x.shape
    T = 16
    for ib in prange((B + T - 1) // T):
        i0 = ib * T
        i1 = min(B, i0 + T)
        for k0 in range(0, n, T):
            for i in range(i0, i1):
                for k in range(k0, min(n, k0 + T)):
                    out[k, i] = x[i, k]


def transposed(bp: Backprop) -> tuple:
    """Per layer ``(a_l^T, delta_l^T)`` as C-contiguous ``(in, B)`` and ``(out, B)`` arrays.

    Input of the kept-pair kernels (:func:`kept_sq_norms`, :func:`weighted_sum_kept`), computed
    once per step and shared by both; a tiled Numba transpose (NumPy's strided copy of ``x.T`` is
    ~3x slower at ``(256, 1024)``). Reference: ``np.ascontiguousarray(x.T)`` (bitwise equal).
    """
    out = []
    for a, d in zip(bp.acts, bp.deltas):
        pair = []
        for x in (a, d):
            x = np.ascontiguousarray(x)
            t = np.empty((x.shape[1], x.shape[0]), dtype=x.dtype)
            if x.dtype in (np.float32, np.float64):
                _transpose_kernel(x, t)
            else:
                t[...] = x.T
            pair.append(t)
        out.append(tuple(pair))
    return tuple(out)


def _check_blocks(bp: Backprop, blocks) -> None:
    if not isinstance(blocks, MaskBlocks) or blocks.layout != bp.layout or blocks.dtype != bp.losses.dtype:
        raise ValueError(f"blocks must be a MaskBlocks record for this layout and dtype {bp.losses.dtype.name}")


def kept_sq_norms(bp: Backprop, blocks: MaskBlocks, tr=None) -> np.ndarray:
    """Per-layer squared norms of the masked per-example gradients by the O(B k) kept-pair kernel.

    Same quantity as :func:`sq_norms` with a mask (mask-then-clip): for layer ``l``,
    ``||M * g_i^l||^2 = sum_j delta_ij^2 (sum_{k: M_jk = 1} a_ik^2 + m_b[j])`` (Goodfellow 2015
    norm trick restricted to the kept pairs). Computed in the Backprop dtype; shape ``(B, n_layers)``.
    ``tr`` (optional) is :func:`transposed` ``(bp)``, computed here when not given.
    Reference: :func:`kept_sq_norms_reference`.
    """
    _check_blocks(bp, blocks)
    dt = bp.losses.dtype
    B = bp.batch_size
    if tr is None:
        tr = transposed(bp)
    out = np.empty((B, bp.layout.n_layers), dtype=dt)
    for l, ((at, dT), kp) in enumerate(zip(tr, blocks.pairs)):
        d2t = np.square(dT)
        a2t = np.square(at)
        partial = np.empty((min(_N_BLOCKS, dT.shape[0]), B), dtype=dt)
        _kept_sq_norms_kernel(d2t, a2t, kp.row_ptr, kp.cols, kp.bflag, partial)
        out[:, l] = partial.sum(axis=0)
    return out


def kept_sq_norms_reference(bp: Backprop, blocks: MaskBlocks) -> np.ndarray:
    """Plain-NumPy twin of :func:`kept_sq_norms`: gather ``delta_ij a_ik`` on the kept pairs, square, sum."""
    out = np.zeros((bp.batch_size, bp.layout.n_layers), dtype=bp.losses.dtype)
    for l, (a, d, kp) in enumerate(zip(bp.acts, bp.deltas, blocks.pairs)):
        rows = np.repeat(np.arange(d.shape[1]), np.diff(kp.row_ptr))
        g = d[:, rows] * a[:, kp.cols]
        out[:, l] = np.einsum("ij,ij->i", g, g) + np.einsum("ij,ij->i", d[:, kp.brows], d[:, kp.brows])
    return out


def weighted_sum_kept(bp: Backprop, weights, blocks: MaskBlocks, tr=None) -> np.ndarray:
    """``sum_i w_i g_i`` on the kept coordinates only: a compact vector of length ``k`` (flat order).

    Equals ``weighted_sum(bp, weights)[blocks.idx]``: ``s_jk = sum_i (w_i delta_ij) a_ik`` and
    ``s_j^b = sum_i w_i delta_ij`` for the kept weight ``(j, k)`` / bias ``j`` of each layer, by an
    O(B k) Numba kernel (``(w delta)^T`` and ``a^T`` stored ``(out, B)``, ``(in, B)``: contiguous
    dot products over the batch). ``weights`` has shape ``(B,)`` or ``(B, n_layers)`` (per layer).
    ``tr`` (optional) is :func:`transposed` ``(bp)``, shared with :func:`kept_sq_norms`.
    Reference: :func:`weighted_sum_kept_reference`.
    """
    _check_blocks(bp, blocks)
    dt = bp.losses.dtype
    w = np.asarray(weights, dtype=dt)
    if w.shape not in ((bp.batch_size,), (bp.batch_size, bp.layout.n_layers)):
        raise ValueError(f"weights must have shape ({bp.batch_size},) or "
                         f"({bp.batch_size}, {bp.layout.n_layers}), got {w.shape}")
    if tr is None:
        tr = transposed(bp)
    out = np.empty(blocks.idx.shape[0], dtype=dt)
    for l, ((at, dT), kp) in enumerate(zip(tr, blocks.pairs)):
        dwt = dT * (w if w.ndim == 1 else np.ascontiguousarray(w[:, l]))[None, :]
        _kept_wsum_kernel(dwt, at, kp.row_ptr, kp.cols, kp.brows, kp.w_start, kp.b_start, out)
    return out


def weighted_sum_kept_reference(bp: Backprop, weights, blocks: MaskBlocks) -> np.ndarray:
    """Plain-NumPy twin of :func:`weighted_sum_kept`: the dense ``weighted_sum`` gathered at ``idx``."""
    return weighted_sum(bp, weights)[blocks.idx]


def _mask_blocks(layout: Layout, mask, dtype):
    """Split a flat (d,) mask into per-layer (M_W, m_b) float blocks."""
    return mask_blocks(layout, mask, dtype).blocks


def sq_norms(bp: Backprop, mask=None, *, blocks: MaskBlocks | None = None) -> np.ndarray:
    """Squared L2 norms of each example's gradient, per layer: shape ``(B, n_layers)``.

    ``sum(axis=1)`` gives the whole-model squared norm. Without a mask (Goodfellow 2015, norm trick)
    ``||g_i^l||^2 = ||delta_il||^2 (||a_il||^2 + [bias])``, O(B (in + out)) per layer.
    With ``mask`` (flat, shape ``(d,)``, 0/1), the norms are those of ``mask * g_i``
    (mask-then-clip): ``[(delta_l^2) M_W (a_l^2)^T]_ii + (delta_l^2) m_b``, one GEMM per layer in the
    Backprop dtype.

    Parameters
    ----------
    bp : Backprop
    mask : None or array (d,) of bool / 0-1
    blocks : MaskBlocks, optional
        The mask already converted by :func:`mask_blocks` (same layout and dtype as ``bp``); it is
        then used instead of ``mask`` (the caller guarantees they are the same mask), saving the
        O(d) conversion on every call. When it keeps at most :data:`SPARSE_MAX_KEPT` of the
        coordinates the O(B k) kernel :func:`kept_sq_norms` replaces the GEMMs (equal up to rounding).
    """
    layout = bp.layout
    dtype = bp.losses.dtype
    B = bp.batch_size
    if blocks is not None:
        _check_blocks(bp, blocks)
        if blocks.sparse:
            return kept_sq_norms(bp, blocks)
        bl = blocks.blocks
    elif mask is not None:
        bl = mask_blocks(layout, mask, dtype).blocks
    else:
        bl = None
    out = np.empty((B, layout.n_layers), dtype=dtype)
    fused = bl is None and dtype.char in "fd"  # float32 / float64
    one = dtype.type(1.0 if layout.bias else 0.0)
    for l, (a, d) in enumerate(zip(bp.acts, bp.deltas)):
        if fused:  # one Numba pass: ||d_i||^2 (||a_i||^2 + [bias])
            _layer_sq_kernel(np.ascontiguousarray(a, dtype=dtype), np.ascontiguousarray(d, dtype=dtype), one, out, l)
        elif bl is None:
            sq = row_sq(a)
            dd = row_sq(d)
            out[:, l] = dd * sq + dd if layout.bias else dd * sq
        else:
            MW, mb = bl[l]
            d2 = np.multiply(d, d)
            t = np.matmul(d2, MW)  # (B, in): sum_j delta_ij^2 M_jk
            np.multiply(t, a, out=t)
            col = np.einsum("ij,ij->i", t, a)  # sum_k t_ik a_ik^2
            if mb is not None:
                col += np.matmul(d2, mb)
            out[:, l] = col
    return out


def weighted_sum(bp: Backprop, weights, out=None) -> np.ndarray:
    """``sum_i w_i g_i`` as a flat vector of length d.

    ``weights`` has shape ``(B,)`` (one weight per example, e.g. ``min(1, C/||g_i||)``
    for flat clipping) or ``(B, n_layers)`` (per-layer clipping).
    """
    layout = bp.layout
    w = np.asarray(weights, dtype=bp.losses.dtype)
    if w.shape not in ((bp.batch_size,), (bp.batch_size, layout.n_layers)):
        raise ValueError(
            f"weights must have shape ({bp.batch_size},) or ({bp.batch_size}, {layout.n_layers}), got {w.shape}"
        )
    if out is None:
        out = np.empty(layout.n_params, dtype=bp.losses.dtype)
    for l, ((W, b), a, d) in enumerate(zip(layout.views(out), bp.acts, bp.deltas)):
        wl = (w if w.ndim == 1 else w[:, l])[:, None]
        if d.shape[1] <= a.shape[1]:  # weight the smaller factor: (w * delta)^T a
            dw = d * wl
            np.matmul(dw.T, a, out=W)
            if b is not None:
                np.sum(dw, axis=0, out=b)
        else:  # delta^T (w * a)
            np.matmul(d.T, a * wl, out=W)
            if b is not None:
                np.matmul(wl[:, 0], d, out=b)
    return out


def materialize(bp: Backprop) -> np.ndarray:
    """Per-example gradients as a ``(B, d)`` array. Only for references, tests and per-example top-k."""
    layout = bp.layout
    G = np.empty((bp.batch_size, layout.n_params), dtype=bp.losses.dtype)
    for l, (a, d) in enumerate(zip(bp.acts, bp.deltas)):
        ws = layout.weight_slice(l)
        G[:, ws] = np.einsum("bo,bi->boi", d, a).reshape(bp.batch_size, ws.stop - ws.start)  # explicit: B = 0 allowed
        bs = layout.bias_slice(l)
        if bs is not None:
            G[:, bs] = d
    return G
