"""Time one DP-SGD step against the non-private NumPy step measured in the same run.

    python benchmarks/bench_step.py [--quick]
    python benchmarks/bench_step.py --against REV [--quick]   # old tree vs this tree in one run
                                                              # (benchmarks/bench_step_versions.py)

Workloads (float32, batch 256, flat clipping):
  W1 logistic regression, d_in = 784
  W2 MLP 784-256-256-10
  W3 MLP 784-1024-1024-10

For each workload it prints the median wall time of
  * floor : non-private step = backprop + mean gradient + SGD update (NumPy/BLAS);
  * dp    : backprop + clipped_grad_sum (norm trick) + N(0, (sigma C)^2) on all d coordinates + update;
  * naive : backprop + materialize (B x d) + norms + clipped sum (the reference our tests use);
  * noise alone: sims.noise.standard_normal (if present) and numpy Generator.standard_normal(float32);
  * a profile of the DP step (backprop / clipped sum / noise / update);
and ratios to the floor. torch+opacus and jax are timed only if importable (they are not dependencies).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sims.models import (  # noqa: E402
    backprop, clipped_grad_sum, init_params, logistic_regression, materialize, mlp, weighted_sum,
)

from sims.step import dpsgd_step  # noqa: E402
from sims.mechanisms import InitContext, StepContext, chain, clip, gaussian_noise  # noqa: E402
from sims.mechanisms._kernels import noisy_release  # noqa: E402

from _timing import machine, paired  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

try:  # the project's counter-based parallel generator
    from sims.noise import standard_normal as _sims_normal
except ImportError:  # pragma: no cover
    _sims_normal = None

B, CLIP, SIGMA, LR = 256, 1.0, 1.0, 0.1
DT = np.float32


def _median_time(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _workloads():
    return [
        ("W1 logistic 784", logistic_regression(784, dtype=DT)),
        ("W2 MLP 784-256-256-10", mlp((784, 256, 256, 10), dtype=DT)),
        ("W3 MLP 784-1024-1024-10", mlp((784, 1024, 1024, 10), dtype=DT)),
    ]


def _data(model, rng):
    X = rng.standard_normal((B, model.n_features)).astype(DT)
    k = model.n_classes
    y = rng.integers(0, k, size=B)
    return X, y


def bench(quick=False):
    rng = np.random.default_rng(0)
    reps = 7 if quick else 25
    print(f"machine: {machine()}, numpy {np.__version__}, python {platform.python_version()}")
    load = os.getloadavg()
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; threads: OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')} NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', 'unset')}")
    print(f"batch {B}, float32, flat clipping C={CLIP}, sigma={SIGMA}; median of {reps} repeats; "
          f"noise generator: {'sims.noise.standard_normal' if _sims_normal else 'numpy Generator'}")
    rows = []
    for name, model in _workloads():
        d = model.n_params
        params = init_params(model, 0)
        X, y = _data(model, rng)
        noise_buf = np.empty(d, dtype=DT)
        gen = np.random.default_rng(1)
        seed_rng = np.random.default_rng(2)
        inv_b = np.full(B, 1.0 / B, dtype=DT)

        def noise():
            if _sims_normal is not None:
                return _sims_normal(d, int(seed_rng.integers(2**63)), dtype=DT, out=noise_buf)
            return gen.standard_normal(d, dtype=DT, out=noise_buf)

        def floor():
            bp = backprop(model, params, X, y)
            g = weighted_sum(bp, inv_b)
            params[...] -= DT(LR) * g  # noqa: B023

        def dp():  # noise added by the mechanisms' fused kernel: u = (s + sigma C z) * lr / B
            bp = backprop(model, params, X, y)
            s, _, _ = clipped_grad_sum(bp, CLIP)
            u, _, _ = noisy_release(s, None, SIGMA * CLIP, LR / B, int(seed_rng.integers(2**63)))
            params[...] -= u

        ch = chain(clip(CLIP), gaussian_noise(SIGMA))
        lay = model.layout if hasattr(model, "layout") else backprop(model, params, X, y).layout
        ch_state = ch.init(InitContext(model=model, layout=lay, params=params, total_steps=10, steps_per_epoch=1, expected_batch_size=float(B), rng=np.random.default_rng(3)))

        def dp_chain():  # the full mechanism chain step (with its metrics)
            bp = backprop(model, params, X, y)
            sc = StepContext(model=model, layout=lay, step=0, epoch=0, params=params, bp=bp, expected_batch_size=float(B), rng=seed_rng)  # noqa: B023
            u, _, _ = dpsgd_step(ch, ch_state, sc)  # noqa: B023
            np.subtract(params, DT(LR) * u, out=params)

        def naive():
            bp = backprop(model, params, X, y)
            G = materialize(bp)
            norms = np.sqrt(np.einsum("ij,ij->i", G, G))
            f = CLIP / np.maximum(norms, CLIP)
            return f @ G

        bp0 = backprop(model, params, X, y)
        s0, _, _ = clipped_grad_sum(bp0, CLIP)
        (t_floor, t_dp, t_ch), (_, r_dp, r_ch) = paired([floor, dp, dp_chain], reps * (8 if d < 10_000 else 1), warmup=2)
        (t_floor2, t_naive), (_, r_naive) = paired([floor, naive], max(3, reps // 5), warmup=1)
        t_sims_noise = _median_time(noise, reps) if _sims_normal is not None else float("nan")
        t_np_noise = _median_time(lambda: gen.standard_normal(d, dtype=DT, out=noise_buf), reps)  # noqa: B023
        prof = {
            "backprop": _median_time(lambda: backprop(model, params, X, y), reps),  # noqa: B023
            "clipped_sum": _median_time(lambda: clipped_grad_sum(bp0, CLIP), reps),  # noqa: B023
            "noise": _median_time(noise, reps),
            "fused_noise": _median_time(lambda: noisy_release(s0, None, SIGMA * CLIP, LR / B, 5), reps),  # noqa: B023
            "update": _median_time(lambda: np.subtract(params, DT(LR / B) * s0, out=params), reps),  # noqa: B023
        }
        rows.append((name, d, t_floor, t_dp, r_dp, t_naive, r_naive, t_sims_noise, t_np_noise, prof, t_ch, r_ch))

    print()
    print(f"{'workload':26s} {'d':>9s} {'floor ms':>9s} {'dp ms':>8s} {'dp/floor':>9s} {'chain ms':>9s} "
          f"{'chain/floor':>11s} {'naive ms':>9s} {'naive/floor':>11s} {'sims.noise ms':>13s} {'np noise ms':>11s}")
    for name, d, tf, td, rd, tn, rn, tsn, tnn, _, tc, rc in rows:
        print(f"{name:26s} {d:9d} {tf * 1e3:9.2f} {td * 1e3:8.2f} {rd:9.2f} {tc * 1e3:9.2f} {rc:11.2f} "
              f"{tn * 1e3:9.2f} {rn:11.2f} {tsn * 1e3:13.2f} {tnn * 1e3:11.2f}")
    print("(ratios: median over rounds of t / t_floor, floor and candidate timed alternately)")
    print()
    print("DP step profile (ms, each part timed alone):")
    for name, *_, prof, _tc, _rc in rows:
        print(f"  {name:26s} " + "  ".join(f"{k} {v * 1e3:.2f}" for k, v in prof.items()))
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    _optional_frameworks()
    return rows


def _optional_frameworks():
    try:
        import opacus  # noqa: F401
        import torch  # noqa: F401
        print("torch+opacus importable: timing not implemented in this harness")
    except ImportError:
        print("torch+opacus: not installed (skipped)")
    try:
        import jax  # noqa: F401
        print("jax importable: timing not implemented in this harness")
    except ImportError:
        print("jax: not installed (skipped)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--against", metavar="REV", default=None,
                    help="time the chain step of the tree REV (a checked-out directory or a git revision) and of "
                         "this tree side by side, interleaved (see bench_step_versions.py)")
    args, rest = ap.parse_known_args()
    if args.against is not None:
        from bench_step_versions import main as _versions
        sys.exit(_versions(["--against", args.against, *(["--quick"] if args.quick else []), *rest]))
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    bench(args.quick)
