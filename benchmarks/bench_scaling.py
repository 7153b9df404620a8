"""How the cost of a DP-SGD step grows, as a ratio to the matching bare-NumPy floor (issue 11).

    python benchmarks/bench_scaling.py [--rounds R] [--quick] [--png FILE]

Four sweeps. At every point the DP variant and its floor are timed ROUND-ROBIN in one process
(each round: best of ``k`` calls of each), and the printed ratio is best/best with the median of
the per-round ratios in brackets. The floor is ``_floor.NpFloor``: a non-private SGD step of the
same dense ReLU stack in bare NumPy on a fixed batch (no project code).

1. width ``w`` of an MLP 784-w-w-10 (float32, B = 256), ``w`` = 64 ... 2048: the chain step
   ``backprop + dpsgd_step(chain(clip(1), gaussian_noise(1))) + update``;
2. batch ``B`` = 32 ... 1024 on the MLP 784-256-256-10 (float32): the same chain step;
3. runs ``R`` = 1 ... 256 of the digits MLP 64-64-10 (float64, expected batch 64, 2 epochs) with
   ``sims.stacked.train_stacked`` (dense DP-SGD, Poisson batches, per-run noise), per run and
   step, against ``R`` floor steps at B = 64 (the floor of R separate non-private runs);
4. the sparse path: ``random_freeze(rho, "constant")`` before the clip on the MLP 784-1024-1024-10
   (float32, B = 256) for kept fractions ``1 - rho`` = 0.01 ... 1, against the dense chain step
   and the floor.

A PNG with the four panels is written to ``--png`` (default ``benchmarks/scaling.png``). Timings
are never asserted in tests.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

from _floor import NpFloor  # noqa: E402
from bench_floor import _chain_step  # noqa: E402

from sims.data import load_digits, scale_features  # noqa: E402
from sims.mechanisms import random_freeze  # noqa: E402
from sims.models import mlp  # noqa: E402
from sims.stacked import train_stacked  # noqa: E402


def _best(fn, k):
    best = float("inf")
    for _ in range(k):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best / getattr(fn, "per_call", 1)


def compare(fns, rounds, k):
    """Round-robin best-of-``k`` times of ``fns`` (the first is the floor): per function, the best
    time (s) over the rounds, best/best to the floor, and the median per-round ratio."""
    for f in fns:
        f()
    ts = [[] for _ in fns]
    for _ in range(rounds):
        for j, f in enumerate(fns):
            ts[j].append(_best(f, k))
    base = ts[0]
    return [(min(t), min(t) / min(base), statistics.median(a / b for a, b in zip(t, base))) for t in ts]


def _batch(B, d, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((B, d)).astype(np.float32), rng.integers(0, 10, size=B)


def _mlp_pair(sizes, B, transforms=()):
    X, y = _batch(B, sizes[0])
    return NpFloor(sizes, "softmax", X, y, 5, dtype=np.float32, lr=0.1), _chain_step(mlp(sizes, dtype=np.float32), X, y, transforms)


def sweep_width(widths, rounds):
    rows = []
    for w in widths:
        floor, step = _mlp_pair((784, w, w, 10), 256)
        (tf, _, _), (tc, r, rm) = compare([floor, step], rounds, 3)
        rows.append((w, tf, tc, r, rm))
    return rows


def sweep_batch(batches, rounds):
    rows = []
    for B in batches:
        floor, step = _mlp_pair((784, 256, 256, 10), B)
        (tf, _, _), (tc, r, rm) = compare([floor, step], rounds, 3)
        rows.append((B, tf, tc, r, rm))
    return rows


def _stacked(ds, model, R, epochs):
    steps = int(round(epochs * ds.X_train.shape[0] / 64))

    def run():
        train_stacked(model, ds, seeds=list(range(R)), epochs=epochs, batch_size=64, lr=0.5, record_every=steps)
    run.per_call = R * steps
    return run


def _floor_runs(ds, R):
    X = np.ascontiguousarray(ds.X_train[:64])
    y = ds.y_train[:64].astype(np.int64)
    floor = NpFloor((64, 64, 10), "softmax", X, y, 5, dtype=np.float64, lr=0.5)

    def run():  # R separate non-private steps: the floor of R runs
        for _ in range(R):
            floor()
    run.per_call = R
    return run


def sweep_runs(Rs, rounds, epochs=2):
    ds = scale_features(load_digits(random_state=0), 1 / 16)
    model = mlp((64, 64, 10))
    train_stacked(model, ds, seeds=[0, 1], epochs=1, batch_size=64)  # compile
    rows = []
    for R in Rs:
        (tf, _, _), (tc, r, rm) = compare([_floor_runs(ds, R), _stacked(ds, model, R, epochs)], rounds, 1)
        rows.append((R, tf, tc, r, rm))
    return rows


def sweep_keep(keeps, rounds):
    sizes = (784, 1024, 1024, 10)
    floor, dense = _mlp_pair(sizes, 256)
    fns = [floor, dense] + [_mlp_pair(sizes, 256, (random_freeze(1.0 - f, "constant"),))[1] for f in keeps]
    res = compare(fns, rounds, 2)
    tf, (td, rd, rdm) = res[0][0], res[1]
    return tf, (td, rd, rdm), [(f, t, r, rm, t / td) for f, (t, r, rm) in zip(keeps, res[2:])]


def _print(title, label, rows):
    print(f"\n{title}")
    print(f"  {label:>8} {'floor ms':>10} {'DP ms':>10} {'DP/floor':>9} (median per round)")
    for x, tf, tc, r, rm in rows:
        print(f"  {x:>8} {tf * 1e3:>10.4f} {tc * 1e3:>10.4f} {r:>8.2f}x ({rm:.2f})")


def plot(width, batch, runs, keep, png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 4, figsize=(15, 3.6))
    for a, rows, xl in ((ax[0], width, "hidden width w (784-w-w-10, B = 256)"),
                        (ax[1], batch, "batch B (784-256-256-10)"),
                        (ax[2], runs, "stacked runs R (digits 64-64-10)")):
        a.plot([r[0] for r in rows], [r[3] for r in rows], "o-")
        a.set_xscale("log", base=2)
        a.set_xlabel(xl)
    ax[0].set_ylabel("DP step / bare NumPy floor")
    tf, (td, rd, _), krows = keep
    ax[3].plot([r[0] for r in krows], [r[2] for r in krows], "o-", label="random freeze")
    ax[3].axhline(rd, color="k", ls="--", label="dense DP step")
    ax[3].set_xscale("log")
    ax[3].set_xlabel("kept fraction (784-1024-1024-10, B = 256)")
    ax[3].legend()
    for a in ax:
        a.axhline(1.0, color="grey", lw=0.5)
        a.set_ylim(bottom=0)
        a.grid(alpha=0.3)
    fig.suptitle(f"DP-SGD step cost relative to a bare NumPy non-private step (load average {os.getloadavg()[0]:.1f})")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"\nwrote {png}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="fewer points, 2 rounds")
    ap.add_argument("--png", default=str(Path(__file__).with_name("scaling.png")))
    a = ap.parse_args()
    rounds = 2 if a.quick else a.rounds
    widths = (64, 256, 1024) if a.quick else (64, 128, 256, 512, 1024, 2048)
    batches = (32, 256) if a.quick else (32, 64, 128, 256, 512, 1024)
    Rs = (1, 16) if a.quick else (1, 4, 16, 64, 256)
    keeps = (0.01, 0.1) if a.quick else (0.01, 0.03, 0.1, 0.3, 1.0)
    print(f"load average {os.getloadavg()}; OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
          f"NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', 'unset')}; {rounds} rounds")
    width = sweep_width(widths, rounds)
    _print("1. width of the MLP 784-w-w-10, float32, B = 256: chain step vs floor", "w", width)
    batch = sweep_batch(batches, rounds)
    _print("2. batch size on the MLP 784-256-256-10, float32: chain step vs floor", "B", batch)
    runs = sweep_runs(Rs, rounds)
    _print("3. R stacked digits runs (train_stacked, per run and step) vs R floor steps at B = 64", "R", runs)
    keep = sweep_keep(keeps, rounds)
    tf, (td, rd, rdm), krows = keep
    print("\n4. sparse path on the MLP 784-1024-1024-10, float32, B = 256: random freeze before the clip")
    print(f"  floor {tf * 1e3:.3f} ms; dense chain {td * 1e3:.3f} ms = {rd:.2f}x floor ({rdm:.2f})")
    print(f"  {'kept':>8} {'DP ms':>10} {'DP/floor':>9} {'/dense':>7}")
    for f, t, r, rm, rel in krows:
        print(f"  {f:>8} {t * 1e3:>10.3f} {r:>8.2f}x ({rm:.2f}) {rel:>6.2f}")
    print(f"\nload average at the end {os.getloadavg()}")
    plot(width, batch, runs, keep, a.png)


if __name__ == "__main__":
    main()
