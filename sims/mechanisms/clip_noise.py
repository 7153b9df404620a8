"""Per-example clipping and the Gaussian noise step of DP-SGD.

DP-SGD (Abadi et al. 2016, Alg. 1): ``u = (sum_i clip_C(g_i) + N(0, sigma^2 C^2 I)) / B`` with
``clip_C(g) = g * min(1, C / ||g||)``. Adding or removing one example changes the clipped sum by
at most ``C`` in L2, so the Gaussian mechanism has noise multiplier ``sigma`` (std / sensitivity);
with Poisson sampling at rate ``q`` its RDP is that of dp_accounting's
``PoissonSampledDpEvent(q, GaussianDpEvent(sigma))`` (Mironov, Talwar & Zhang 2019).
"""
from __future__ import annotations

import math

import numpy as np

from dptheory.validation import check_real
from sims.models.clip import clip_factors, flat_clip_factors
from sims.noise import step_kernel_threads
from sims.rng import derive_seed
from sims.models.pergrad import (
    Backprop, kept_sq_norms, materialize, sq_norms, transposed, weighted_sum, weighted_sum_kept,
)

from ._kernels import noisy_release
from ._util import report_norm_quantiles, sq
from .base import BuiltIns, Effect, Transform

__all__ = ["clip", "gaussian_noise", "finish_clip", "made_here"]

_MADE = BuiltIns()


def made_here(transform) -> bool:
    """True when ``transform`` is a clip or noise stage built by this module (see :class:`BuiltIns`)."""
    return transform in _MADE


def _total(nsq: np.ndarray) -> np.ndarray:
    """Whole-model squared norms ``nsq.sum(axis=1)`` (the column itself for one layer: same values)."""
    return nsq[:, 0] if nsq.shape[1] == 1 else nsq.sum(axis=1)


def _factors(norms_sq: np.ndarray, clip_norm, per_layer: bool, layout):
    """Clip factors (:func:`sims.models.clip.clip_factors`) and the clipped indicator per example."""
    f, _ = clip_factors(norms_sq, clip_norm, per_layer=per_layer, layout=layout)
    under = f < 1
    return f, (under.any(axis=1) if per_layer else under)


def _per_example_path(bp: Backprop, work, clip_norm, per_layer, maps):
    """Chunked path of the declared per-example maps: materialise per-example gradients, apply the
    pre-clip mask and the maps row by row, clip, sum. Returns the clipped sum of the mapped rows
    and, for the ``signal_sq_before_mask`` metric, the same clip factors applied to the unmapped rows."""
    chunk = min(m.chunk_size for m in maps)
    layout = bp.layout
    d = layout.n_params
    total = np.zeros(d, dtype=work.dtype)
    before = np.zeros(d, dtype=work.dtype)
    phis, clipped_all, norms_all = [], [], []
    for start in range(0, bp.batch_size, chunk):
        stop = min(start + chunk, bp.batch_size)
        sub = bp.rows(start, stop)
        G = materialize(sub)
        mask = work.internal.mask
        if mask is not None:
            G[:, ~mask] = 0
        S = G
        for m in maps:
            S = m.fn(S, layout)
            if not (isinstance(S, np.ndarray) and S.shape == G.shape):
                raise ValueError(f"a PerExampleMap must return an array of the shape of its input {G.shape}, got "
                                 f"{type(S).__name__} {getattr(S, 'shape', '')}")
        if mask is not None:  # a map may not write outside the pre-clip selection (noise may cover only it)
            S[:, ~mask] = 0
        full = np.einsum("ij,ij->i", G, G)
        kept = np.einsum("ij,ij->i", S, S)
        phis.append(np.where(full > 0, kept / np.where(full > 0, full, 1), 1.0))
        nsq = np.stack([np.einsum("ij,ij->i", S[:, layout.layer_slice(l)], S[:, layout.layer_slice(l)])
                        for l in range(layout.n_layers)], axis=1)
        f, clipped = _factors(nsq, clip_norm, per_layer, layout)
        if per_layer:
            for l in range(layout.n_layers):
                sl = layout.layer_slice(l)
                total[sl] += f[:, l] @ S[:, sl]
                before[sl] += f[:, l] @ G[:, sl]
        else:
            total += f @ S
            before += f @ G
        clipped_all.append(clipped)
        norms_all.append(np.sqrt(nsq.sum(axis=1)))
    if bp.batch_size:
        work.report(phi=float(np.mean(np.concatenate(phis))),
                    clipped_fraction=float(np.mean(np.concatenate(clipped_all))))
        report_norm_quantiles(work, np.concatenate(norms_all))
    return total, before


def finish_clip(work, s: np.ndarray, nsq: np.ndarray, clipped, norms=None, defer: bool = False,
                compact: bool = False) -> None:
    """The non-GEMM tail of the clip stage: mask the clipped sum in place, store it, then its metrics.

    ``s`` is the (d,) sum ``sum_i w_i g_i`` of the GEMM path, or (``compact=True``) the (k,) sum on
    the kept coordinates of the prepared signal mask of the sparse path (already masked). ``s`` is
    multiplied by the pre-clip signal mask (by its prepared float form when there is one), so
    ``s = sum_i clip_C(m * g_i)`` (mask-then-clip), and ``signal_sq_before_mask = ||s / B||^2`` is
    the energy of that clipped sum before any post-clip selection (O(k) on the compact sum).
    ``clipped`` is the bool per-example clipped indicator or its count; ``norms`` (optional) the
    whole-model norms already computed. With ``defer``, the energy of the (masked) (d,) sum is
    left to the noise stage (its fused pass computes the same sum of squares) or to the first
    reader of the sum.
    Shared with ``benchmarks/bench_sparse_noise.py``.
    """
    it = work.internal
    if compact:
        it.sum, it.sum_kept = None, (s, it.mask_blocks.idx, it.mask)
    else:
        if it.mask is not None:
            m = it.mask if it.mask_blocks is None else it.mask_blocks.flat
            np.multiply(s, m, out=s)
        it.sum, it.sum_kept = s, None
    if defer and not compact:
        it.before_pending = True
    else:
        work.report(signal_sq_before_mask=sq(s) / work.expected_batch_size ** 2)
    B = nsq.shape[0]
    if B:
        n_clipped = clipped if isinstance(clipped, int) else int(np.count_nonzero(clipped))
        work.report(clipped_fraction=n_clipped / B)
        report_norm_quantiles(work, np.sqrt(_total(nsq)) if norms is None else norms)


def clip(clip_norm, per_layer: bool = False, *, reference_norm: float = 1.0) -> Transform:
    """Clip each example's gradient to L2 norm ``clip_norm`` and sum (the ``clip`` stage).

    ``clip_C(g_i) = g_i min(1, C/||g_i||)`` (Abadi et al. 2016, Alg. 1). With ``per_layer=True``
    layer ``l`` is clipped to ``C_l`` (McMahan et al. 2018): a scalar ``C`` is split as
    ``C_l = C / sqrt(n_layers)`` (as in ``sims.models.clip``), a sequence gives ``C_l``; the L2
    sensitivity of the sum is ``sqrt(sum_l C_l^2)`` (= ``C`` for a scalar).
    When a ``pre_clip`` mask is present the norms are those of the masked gradients
    (mask-then-clip, computed by the norm trick without materialising per-example gradients).

    Parameters
    ----------
    clip_norm : float > 0, sequence of float > 0 (per layer), or None
        ``None`` disables clipping (noise-only ablation, Watson et al. 2023): the chain is then NOT
        private, and the noise std is ``noise_multiplier * reference_norm``.
    per_layer : bool
    reference_norm : float > 0
        Only used when ``clip_norm is None``.
    """
    per_layer = bool(per_layer)
    sens = None
    if clip_norm is not None:
        if np.ndim(clip_norm) == 0:
            clip_norm = check_real("clip_norm", clip_norm, low=0.0, low_open=True)
            sens = clip_norm
        else:
            if not per_layer:
                raise ValueError(f"clip_norm must be one positive number for flat clipping (a sequence "
                                 f"of per-layer norms needs per_layer=True), got {clip_norm!r}")
            clip_norm = tuple(check_real(f"clip_norm[{l}]", c, low=0.0, low_open=True)
                              for l, c in enumerate(np.ravel(np.asarray(clip_norm, dtype=object))))
            sens = math.sqrt(sum(c * c for c in clip_norm))
    reference_norm = check_real("reference_norm", reference_norm, low=0.0, low_open=True)

    flat = clip_norm is not None and not per_layer

    def init(ctx):
        return ()

    def update(ctx, state, work):
        bp = work.bp
        it = work.internal
        blk = it.mask_blocks
        if it.per_example_maps:
            s, before = _per_example_path(bp, work, clip_norm, per_layer, it.per_example_maps)
            it.sum = s
            work.report(signal_sq_before_mask=sq(before) / work.expected_batch_size ** 2)
        elif blk is not None and blk.sparse:
            # small kept set: O(B k) kernels on the kept (row, col) pairs, compact (k,) sum; their
            # Numba threads only when BLAS threads do not spin (sims.noise.blas_spins)
            with step_kernel_threads(blk.idx.shape[0], 0):
                tr = transposed(bp)
                nsq = kept_sq_norms(bp, blk, tr)
                f, clipped = _factors(nsq, clip_norm, per_layer, work.layout)
                s_kept = weighted_sum_kept(bp, f, blk, tr)
            finish_clip(work, s_kept, nsq, clipped, compact=True)
        elif flat:  # flat clipping: norms, factors, clipped count in one fused pass
            nsq = sq_norms(bp, it.mask, blocks=blk)
            f, norms, n_clipped = flat_clip_factors(nsq, clip_norm)
            finish_clip(work, weighted_sum(bp, f), nsq, n_clipped, norms, defer=True)
        else:
            nsq = sq_norms(bp, it.mask, blocks=blk)
            f, clipped = _factors(nsq, clip_norm, per_layer, work.layout)
            finish_clip(work, weighted_sum(bp, f), nsq, clipped, defer=True)
        it.total_clip = reference_norm if clip_norm is None else sens
        return state

    return _MADE.register(Transform("clip", Effect("clip"), init, update,
                                    info={"clip_norm": clip_norm, "per_layer": per_layer, "sensitivity": sens}))


def _noise_idx(it):
    """Indices of the noised coordinates (cached by a KeptSet restriction, else computed)."""
    return it.noise_idx if it.noise_idx is not None else np.flatnonzero(it.noise_mask)


def _release_metrics(work, scale, signal_sq, noise_sq) -> None:
    work.report(signal_sq_after_mask=scale ** 2 * signal_sq, noise_sq=scale ** 2 * noise_sq,
                nsr=noise_sq / signal_sq if signal_sq > 0 else 0.0)  # a rescaling d/k cancels out


def gaussian_noise(noise_multiplier) -> Transform:
    """Add ``N(0, (sigma * C_total)^2)`` to the clipped sum and divide by the expected batch size.

    ``u = (s + sigma C_total z) / B``, ``z ~ N(0, I)`` drawn ONLY on the coordinates the noise
    mask keeps (O(k) draws; every mask transform with ``noise_on="kept"`` restricts it), where
    ``C_total`` is the L2 sensitivity of the clipped sum: ``clip_norm`` for flat clipping and for
    per-layer clipping with one number (split as ``C/sqrt(n_layers)`` per layer), ``sqrt(sum_l C_l^2)``
    for a list of per-layer norms. ``noise_multiplier = 0`` gives a
    non-private chain. Reports ``noise_sq = ||noise / B||^2`` and ``nsr = noise_sq / ||s / B||^2``
    (0.0 when the signal is exactly 0).

    Parameters
    ----------
    noise_multiplier : float >= 0
    """
    sigma = check_real("noise_multiplier", noise_multiplier, low=0.0)

    def init(ctx):
        return ()

    def update(ctx, state, work):
        B = work.expected_batch_size
        it = work.internal
        std = sigma * it.total_clip
        kept = it.sum_kept
        if (kept is not None and std > 0 and it.noise_idx is kept[1] and it.mask is kept[2]
                and it.noise_mask is it.mask):
            # compact sum on exactly the noised coordinates: O(k) release, no (d,) clipped sum
            vals, idx, _ = kept
            seed = derive_seed(ctx.rng)  # the seed rule of _util.normals
            u, s_sq, z_sq = noisy_release(vals, idx, std, work.scale / B, seed, size=work.d)
            _release_metrics(work, work.scale, s_sq / B ** 2, (std / B) ** 2 * z_sq)
            work.release(u)
            return state
        # pending: nothing has read or changed the sum since the clip stage; it is 0 outside the
        # signal mask, which lies inside the noise mask, so the fused pass's sum of squares over
        # the noised coordinates is its whole energy
        pending = it.before_pending and std > 0
        s = it.sum if pending else work.materialized_sum()
        inv_b = work.dtype.type(1.0 / B)
        scale = work.scale
        noise_sq = 0.0
        if std > 0:
            # fused O(k) pass (sims.mechanisms._kernels): u_c = (s_c + std z_j) * scale / B on the noised
            # coordinates (s is already 0 outside the signal mask, which lies inside the noise mask)
            seed = derive_seed(ctx.rng)  # the seed rule of _util.normals
            if it.noise_mask is None:
                idx = None
            else:
                idx = np.ascontiguousarray(_noise_idx(it), dtype=np.int64)
            sc = np.ascontiguousarray(s, dtype=work.dtype)
            u, s_sq, z_sq = noisy_release(sc, idx, std, scale / B, seed)
            signal_sq = s_sq / B ** 2
            if pending:  # the same sum of squares as over all d coordinates
                it.before_pending = False
                work.report(signal_sq_before_mask=signal_sq)
            noise_sq = (std / B) ** 2 * z_sq
        elif it.noise_mask is None:
            signal_sq = sq(s) / B ** 2
            u = (s * inv_b).astype(work.dtype, copy=False)
            if scale != 1.0:
                u *= work.dtype.type(scale)
        else:
            idx = _noise_idx(it)
            u = np.zeros(work.d, dtype=work.dtype)
            vals = s[idx] * inv_b
            signal_sq = sq(vals)
            if scale != 1.0:
                vals *= work.dtype.type(scale)
            u[idx] = vals
        _release_metrics(work, scale, signal_sq, noise_sq)
        work.release(u)
        return state

    return _MADE.register(Transform("gaussian_noise", Effect("noise"), init, update, info={"noise_multiplier": sigma}))
