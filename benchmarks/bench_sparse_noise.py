"""Step time vs kept fraction for random freeze (Zhu & Blaschko) on a 784-1024-1024-10 float32 MLP, batch 256.

Prints
1. the crossover between the two ways of computing the mask-then-clip norms and the masked
   clipped sum: the mask GEMMs (``(delta^2) M (a^2)^T`` + ``delta^T (w a)`` then masking, O(B d))
   and the O(B k) kept-pair kernels (``sims.models.pergrad.kept_sq_norms`` /
   ``weighted_sum_kept``, including the transposes they need), per kept fraction; the clip stage
   uses the kernels when the kept fraction is <= ``pergrad.SPARSE_MAX_KEPT``;
2. per frozen fraction, the median time of (a) the NON-BLAS part of the step (masking, signal
   energy, noise on the kept coordinates only, scatter, metrics), with the norm / clipped-sum
   computation replaced by precomputed results (a copy of the sum stands for its output write),
   and (b) the whole mechanism step, against the dense chain measured in the same run.
   Target: non-BLAS part >= 3x cheaper than dense at 90 % frozen.

Run: ``python benchmarks/bench_sparse_noise.py [--quick]``. All variants are timed round-robin
(background load hits all alike); medians. Timings are never asserted in tests.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sims.step import dpsgd_step  # noqa: E402
from sims.mechanisms import InitContext, StepContext, chain, clip, gaussian_noise, random_freeze  # noqa: E402
from sims.mechanisms.base import Work  # noqa: E402
from sims.mechanisms.clip_noise import finish_clip  # noqa: E402
from sims.models import Backprop, Layout  # noqa: E402
from sims.models import pergrad  # noqa: E402

from _timing import paired  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def _non_blas_part(ch, state, sc, s, s_kept, nsq):
    """The chain's work outside the norm / clipped-sum computation: mask selection, masking the
    clipped sum and its energy (``finish_clip``, the clip stage's own tail), fused noise on the
    noised coordinates, scatter, metrics. The clipped sum is a copy of the precomputed ``s`` (d,)
    on the GEMM path or ``s_kept`` (k,) on the sparse path (the copy stands for the output write)."""
    work = Work(sc)
    it = work.internal
    st = list(state)
    for i, t in enumerate(ch.transforms):
        if t.effect.stage == "clip":
            it.total_clip = 1.0
            blk = it.mask_blocks
            if blk is not None and blk.sparse:
                finish_clip(work, s_kept[id(blk)].copy(), nsq, 0, compact=True)
            else:
                finish_clip(work, s.copy(), nsq, 0, defer=True)
        else:
            st[i] = work.apply(t, st[i])
    return work.update


def _crossover(bp, lay, rng, fracs, repeats):
    """Median time of the GEMM path and of the kept-pair kernels for the norms + clipped sum."""
    B = bp.batch_size
    w = rng.random(B).astype(np.float32)
    fns = []
    for rho in fracs:
        blk = pergrad.mask_blocks(lay, rng.random(lay.n_params) < rho, np.float32)
        gemm_blk = pergrad.MaskBlocks(lay, blk.dtype, blk.flat, blk.blocks, blk.idx, None)  # forces the GEMMs

        def gemm(b=gemm_blk):
            pergrad.sq_norms(bp, blocks=b)
            s = pergrad.weighted_sum(bp, w)
            np.multiply(s, b.flat, out=s)

        def sparse(b=blk):
            tr = pergrad.transposed(bp)
            pergrad.kept_sq_norms(bp, b, tr)
            pergrad.weighted_sum_kept(bp, w, b, tr)

        fns += [gemm, sparse]
    t, _ = paired(fns, repeats)
    return [(rho, t[2 * i], t[2 * i + 1]) for i, rho in enumerate(fracs)]


def main(quick=False):
    sizes, B = (784, 1024, 1024, 10), 256
    lay = Layout(sizes)
    d = lay.n_params
    r = np.random.default_rng(0)
    acts = tuple(r.standard_normal((B, sizes[l]), dtype=np.float32) for l in range(3))
    deltas = tuple(r.standard_normal((B, sizes[l + 1]), dtype=np.float32) for l in range(3))
    bp = Backprop(lay, acts, deltas, np.zeros(B, np.float32))
    params = np.zeros(d, np.float32)
    s = r.standard_normal(d, dtype=np.float32)
    load = os.getloadavg()
    print(f"d = {d}, batch {B}, float32; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"SPARSE_MAX_KEPT = {pergrad.SPARSE_MAX_KEPT}")

    fracs = (0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
    rows = _crossover(bp, lay, np.random.default_rng(1), fracs, 3 if quick else 7)
    print(f"\n{'kept':>6} {'GEMM ms':>9} {'kernels ms':>11} {'GEMM/kernels':>13}   (norms + masked clipped sum)")
    cross = None
    for rho, tg, tk in rows:
        print(f"{rho:6.2f} {1e3 * tg:9.2f} {1e3 * tk:11.2f} {tg / tk:12.2f}x")
        if cross is None and tk > tg:
            cross = rho
    print(f"crossover: kernels slower than the GEMMs from kept fraction ~{cross} on "
          f"(threshold in use: {pergrad.SPARSE_MAX_KEPT})" if cross is not None else
          "crossover: kernels faster at every kept fraction tried")

    nsq = np.ones((B, lay.n_layers), np.float32)
    s_kept = {}
    fns, ks, frozens = [], [], (0.0, 0.5, 0.9, 0.99)
    for frozen in frozens:
        ch = chain(clip(1.0), gaussian_noise(1.0)) if frozen == 0 else \
            chain(random_freeze(frozen, "constant"), clip(1.0), gaussian_noise(1.0))
        ic = InitContext(model=None, layout=lay, params=params, total_steps=100, steps_per_epoch=10, expected_batch_size=float(B), rng=np.random.default_rng(2))
        state = ch.init(ic)
        sc = StepContext(model=None, layout=lay, step=0, epoch=0, params=params, bp=bp, expected_batch_size=float(B), rng=np.random.default_rng(3))
        _, state, _ = dpsgd_step(ch, state, sc)  # first step fills the cached mask blocks (once per redraw)
        ks.append(d if frozen == 0 else int((~ch.frozen_mask(state)).sum()))
        if frozen:
            blk = state[0]["keep"].prepared(lay, np.dtype(np.float32))
            s_kept[id(blk)] = np.ascontiguousarray(s[blk.idx])
        fns.append((lambda ch=ch, state=state, sc=sc: _non_blas_part(ch, state, sc, s, s_kept, nsq),
                    lambda ch=ch, state=state, sc=sc: dpsgd_step(ch, state, sc)))
    t_nb, _ = paired([f for f, _ in fns], 7 if quick else 15)
    t_step, _ = paired([g for _, g in fns], 3 if quick else 7)
    print(f"\n{'frozen':>7} {'k':>9} {'path':>8} {'non-BLAS ms':>12} {'dense/this':>10} {'chain step ms':>14} "
          f"{'dense/this':>10}")
    for frozen, k, tn, ts in zip(frozens, ks, t_nb, t_step):
        path = "dense" if frozen == 0 else ("kernels" if k / d <= pergrad.SPARSE_MAX_KEPT else "GEMM")
        print(f"{frozen:7.2f} {k:9d} {path:>8} {1e3 * tn:12.2f} {t_nb[0] / tn:9.2f}x {1e3 * ts:14.2f} "
              f"{t_step[0] / ts:9.2f}x")
    print("ratio = dense time / this time (higher is cheaper); medians, all variants timed round-robin.")
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    main(ap.parse_args().quick)
