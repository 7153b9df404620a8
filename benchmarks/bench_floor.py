"""The DP-SGD step and the training loop against a bare-NumPy non-private step (issue 11, items 3-5).

    python benchmarks/bench_floor.py [--rounds R] [--only W1,W2,W3] [--tree DIR]

Variants of one workload are timed ROUND-ROBIN in one process (each round times every variant
once, ``k`` calls each, best of the round's calls), so background load hits all alike; reported
per variant: the best time over all rounds, and the ratio to the floor as (a) best/best and
(b) the median and range of the per-round ratios (the spread).

* ``np floor``  : non-private SGD step of the same dense stack in bare NumPy (no project code:
                  forward, head, backward, mean gradient, update), on a fixed batch of 256;
* ``chain``     : ``sims.models.backprop`` + ``sims.step.dpsgd_step`` of
                  ``chain(clip(1.0), gaussian_noise(1.0))`` + SGD update, same fixed batch;
* ``train``     : ``sims.train.train`` per step (call time / steps), Poisson sampling at
                  ``q = 256 / n`` from ``n = 2000`` rows (``make_logistic``), default chain; ``hist``
                  records once per epoch (8 steps: full-data loss and epsilon), ``1rec`` once;
* ``freeze90``  : the chain step with ``random_freeze(0.9, "constant")`` before the clip.

Workloads: W1 logistic 784 (float32 and float64), W2 MLP 784-256-256-10 (float32), W3 MLP
784-1024-1024-10 (float32, dense vs 90 % frozen). Threads are whatever the environment gives
(printed). Timings are never asserted in tests.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from _floor import NpFloor  # benchmarks/ is on sys.path when run as a script

B, LR = 256, 0.1


def _import_tree(tree):
    if tree is not None:
        sys.path.insert(0, str(Path(tree).resolve()))
        sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("__editable__")]
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _chain_step(model, X, y, transforms=()):
    from sims.mechanisms import InitContext, StepContext, chain, clip, gaussian_noise
    from sims.models import backprop, check_targets, init_params
    from sims.step import dpsgd_step

    params = init_params(model, 0)
    ch = chain(*transforms, clip(1.0), gaussian_noise(1.0))
    lay = model.layout
    state = ch.init(InitContext(model=model, layout=lay, params=params, total_steps=10, steps_per_epoch=10,
                                expected_batch_size=float(B), rng=np.random.default_rng(3)))
    rng = np.random.default_rng(2)
    yt = check_targets(model, y, X.shape[0])
    dt = model.dtype.type

    def step():
        bp = backprop(model, params, X, yt, validate=False)
        ctx = StepContext(model=model, layout=lay, step=0, epoch=0, params=params, bp=bp,
                          expected_batch_size=float(B), rng=rng)
        u, _, _ = dpsgd_step(ch, state, ctx)
        np.subtract(params, dt(LR) * u, out=params)
    return step


def _train_per_step(model, ds, steps, record_every):
    from sims.train import train

    def run():
        train(model, ds, steps=steps, batch_size=B, clip_norm=1.0, noise_multiplier=1.0, lr=LR,
              record_every=record_every, random_state=0)
    run.steps = steps
    return run


def workloads(only):
    from sims.data import make_logistic
    from sims.mechanisms import random_freeze
    from sims.models import logistic_regression, mlp

    out = []
    for dt in (np.float32, np.float64):
        name = f"W1 logistic 784 {np.dtype(dt).name}"
        if "W1" not in only:
            continue
        model = logistic_regression(784, dtype=dt)
        ds = make_logistic(2500, 784, test_size=0.2, random_state=0, dtype=dt)
        X, y = np.ascontiguousarray(ds.X_train[:B]), ds.y_train[:B].astype(np.int64)
        out.append((name, [("np floor", NpFloor((784, 1), "logistic", X, y, 5, dtype=dt, lr=LR)),
                           ("chain", _chain_step(model, X, y)),
                           ("train 1rec", _train_per_step(model, ds, 200, 200)),
                           ("train hist", _train_per_step(model, ds, 200, None))], 40))
    rng = np.random.default_rng(1)
    for key, sizes, k in (("W2", (784, 256, 256, 10), 4), ("W3", (784, 1024, 1024, 10), 1)):
        if key not in only:
            continue
        model = mlp(sizes, dtype=np.float32)
        X = rng.standard_normal((B, 784)).astype(np.float32)
        y = rng.integers(0, 10, size=B)
        fns = [("np floor", NpFloor(sizes, "softmax", X, y, 5, dtype=np.float32, lr=LR)), ("chain", _chain_step(model, X, y))]
        if key == "W3":
            fns.append(("freeze90", _chain_step(model, X, y, (random_freeze(0.9, "constant"),))))
        out.append((f"{key} MLP {'-'.join(map(str, sizes))} float32", fns, k))
    return out


def _time(fn, k):
    div = getattr(fn, "steps", 1)
    best = float("inf")
    for _ in range(k if div == 1 else 1):
        t0 = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - t0) / div)
    return best


def bench(rounds, only):
    import numba

    print(f"load average {os.getloadavg()}; OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')} "
          f"NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', 'unset')} (numba {numba.get_num_threads()} threads)")
    import sims
    print(f"sims from {Path(sims.__file__).parent}")
    for title, fns, k in workloads(only):
        for _, f in fns:  # warm-up: compilation, caches
            f()
            f()
        ts = [[] for _ in fns]
        for _ in range(rounds):
            for j, (_, f) in enumerate(fns):
                ts[j].append(_time(f, k))
        print(f"\n{title}  ({rounds} rounds, best of {k} calls per round)")
        base = ts[0]
        for (name, _), t in zip(fns, ts):
            r = [a / b for a, b in zip(t, base)]
            print(f"  {name:12s} best {min(t) * 1e3:9.4f} ms   best/best floor {min(t) / min(base):6.2f}   "
                  f"per-round ratio median {statistics.median(r):6.2f} [{min(r):.2f}, {max(r):.2f}]")
    print(f"\nload average at the end {os.getloadavg()}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--only", default="W1,W2,W3")
    ap.add_argument("--tree", default=None, help="import sims from this checked-out tree instead")
    a = ap.parse_args()
    _import_tree(a.tree)
    bench(a.rounds, a.only.split(","))
