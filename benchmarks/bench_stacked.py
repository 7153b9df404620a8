"""Benchmark: many DP-SGD runs at once with ``sims.stacked.train_stacked`` (issue 11 targets).

A. Digits MLP 64-64-10 (n = 1437 after the default split), 20 epochs, expected batch 64, C = 1,
   sigma = 1, lr = 0.5, for the chains dense, random freeze (r_final = 0.9) and top-k of the noisy
   update (k = d/10): R stacked runs against sequential ``sims.train.train`` calls of the same
   runs in this process. Sequential time is measured on ``--sequential`` of the runs and reported
   per run (both sides are per-run times; the ratio is sequential / stacked).
B. Logistic regression, d = 50, n = 2000, 500 steps, expected batch 64, 1000 runs (``--quick``:
   100): ``train_stacked`` (history only at the end) against the same DP-SGD vectorised over
   replicates in plain NumPy (``bench_replicate.numpy_vectorised``).
C. Peak memory of the stacked digits runs (``tracemalloc``: NumPy's allocations).

The two sides of each comparison alternate, ``--rounds`` times; medians are printed. Timings are
never asserted in tests. Usage: ``python benchmarks/bench_stacked.py [--quick] [--rounds N]``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

from bench_replicate import numpy_vectorised  # noqa: E402

from sims.data import Dataset, load_digits, scale_features  # noqa: E402
from sims.models import logistic_regression, mlp  # noqa: E402
from sims.stacked import chain_for, train_stacked  # noqa: E402
from sims.train import train  # noqa: E402

CHAINS = {"dense": {}, "random_freeze": {"r_final": 0.9}, "top_k_noisy": {"k": None}}


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def digits_runs(R, n_seq, rounds, epochs=20):
    ds = scale_features(load_digits(random_state=0), 1 / 16)
    model = mlp((64, 64, 10))
    common = dict(epochs=epochs, batch_size=64, lr=0.5)
    rows = []
    for mech, kw in CHAINS.items():
        kw = {"k": model.n_params // 10} if "k" in kw else kw
        ch = chain_for(mech, 1.0, 1.0, **kw)
        stacked = lambda: train_stacked(model, ds, seeds=list(range(R)), mechanism=mech, **kw, **common)  # noqa: E731
        seq = lambda: [train(model, ds, mechanism=ch, random_state=s, **common) for s in range(n_seq)]  # noqa: E731
        train_stacked(model, ds, seeds=[0, 1], mechanism=mech, **kw, **{**common, "epochs": 1})  # compile
        train(model, ds, mechanism=ch, random_state=0, **{**common, "epochs": 1})
        ts, tq = [], []
        for _ in range(rounds):
            ts.append(_timed(stacked) / R)
            tq.append(_timed(seq) / n_seq)
        s, q = statistics.median(ts), statistics.median(tq)
        rows.append((mech, s * 1e3, q * 1e3, q / s))
    return rows


def logistic_runs(R, rounds):
    n, d, steps, B = 2000, 50, 500, 64
    q = B / n
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d)) / np.sqrt(d)
    y = (X @ rng.normal(size=d) + 0.3 * rng.normal(size=n) > 0).astype(float)
    ds = Dataset(X_train=X, y_train=y, X_test=X[:0], y_test=y[:0], task="binary", n_classes=2)
    model = logistic_regression(d)
    stacked = lambda: train_stacked(model, ds, seeds=list(range(R)), steps=steps, sampling_rate=q, lr=0.5,  # noqa: E731
                                    record_every=steps)
    base = lambda: numpy_vectorised(X, y, R, steps, q, 1.0, 1.0, 0.5, 1)  # noqa: E731
    train_stacked(model, ds, seeds=[0], steps=2, sampling_rate=q)
    ts, tb = [], []
    for _ in range(rounds):
        ts.append(_timed(stacked))
        tb.append(_timed(base))
    return statistics.median(ts), statistics.median(tb)


def peak_memory_mb(R):
    ds = scale_features(load_digits(random_state=0), 1 / 16)
    model = mlp((64, 64, 10))
    tracemalloc.start()
    train_stacked(model, ds, seeds=list(range(R)), epochs=1, batch_size=64, mechanism="random_freeze", r_final=0.9)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2 ** 20


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="A: 16 runs, 8 epochs; B: 100 runs")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sequential", type=int, default=8, help="sequential train() calls timed per round (A)")
    args = ap.parse_args()
    R = 16 if args.quick else 64
    print(f"A. digits MLP 64-64-10, {R} stacked runs vs sequential train() ({args.sequential} timed), "
          f"{'8' if args.quick else '20'} epochs, B = 64; per-run ms, medians of {args.rounds} alternating rounds")
    print(f"{'chain':<16}{'stacked':>10}{'train()':>10}{'ratio':>8}")
    for mech, s, q, ratio in digits_runs(R, args.sequential, args.rounds, epochs=8 if args.quick else 20):
        print(f"{mech:<16}{s:>10.2f}{q:>10.2f}{ratio:>7.2f}x")
    Rl = 100 if args.quick else 1000
    s, b = logistic_runs(Rl, args.rounds)
    print(f"\nB. {Rl} logistic runs (d = 50, n = 2000, 500 steps, B = 64): train_stacked {s:.2f} s, "
          f"NumPy vectorised {b:.2f} s, ratio {b / s:.2f}x")
    print(f"\nC. peak NumPy memory of {R} stacked digits runs (random freeze): {peak_memory_mb(R):.1f} MB")


if __name__ == "__main__":
    main()
