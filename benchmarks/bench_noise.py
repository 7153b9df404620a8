"""Benchmark: sims.noise.standard_normal vs numpy Generator.standard_normal.

For float32 and float64, n in {1e5, 1.86e6, 1e7}, 1 and 2 Numba threads: prints
ns/element (best of ``--repeat`` runs, output array preallocated for both) and the
ratio numpy_time / ours (> 1 means ours is faster). Both are timed in this run.

Usage: python benchmarks/bench_noise.py [--repeat 5]
"""
from __future__ import annotations

import argparse

import numba
import numpy as np

from sims.noise import standard_normal
from _timing import best_of  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    gen = np.random.default_rng(0)
    print(f"{'dtype':8s} {'n':>9s} {'threads':>7s} {'ours ns/el':>11s} {'numpy ns/el':>12s} {'ratio':>6s}")
    for dtype in (np.float32, np.float64):
        for n in (100_000, 1_860_000, 10_000_000):
            out = np.empty(n, dtype=dtype)
            standard_normal(n, 1, dtype=dtype, out=out)  # compile / load cache
            t_np = best_of(lambda: gen.standard_normal(n, dtype=dtype, out=out), args.repeat)
            for threads in (1, 2):
                numba.set_num_threads(threads)
                t_ours = best_of(lambda: standard_normal(n, 7, dtype=dtype, out=out), args.repeat)
                print(f"{np.dtype(dtype).name:8s} {n:9d} {threads:7d} {t_ours / n * 1e9:11.2f} "
                      f"{t_np / n * 1e9:12.2f} {t_np / t_ours:6.1f}")
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


if __name__ == "__main__":
    main()
