"""Accountant speed over a parameter box, before vs after (issue 14, item 6; prints, never asserts).

    python benchmarks/bench_accounting_speed.py [--points N] [--repeats R] [--before REV] [--no-pld]

Box (fixed seed 14): q log-uniform in [1e-6, 1], sigma in [0.5, 100], steps in [1, 1e6], delta in
[1e-10, 1e-3]; calibration targets epsilon log-uniform in [0.05, 20]. "before" is
``git show REV:dptheory/accounting.py`` (default 8d6299a~1, the version before this work) loaded as a
separate module next to the current one; the two are timed round-robin on each point (``repeats``
rounds for epsilon and calibrate_noise, one for PLD), so background load hits both alike.
Reports median / max wall time per call and the largest relative change of epsilon.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _timing import machine

from dptheory import accounting as new


def load_before(rev: str):
    """dptheory/accounting.py at ``rev`` as the module ``dptheory.accounting_before``."""
    src = subprocess.run(["git", "show", f"{rev}:dptheory/accounting.py"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    path = pathlib.Path(tempfile.mkdtemp()) / "accounting_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("dptheory.accounting_before", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def box(n: int, seed: int = 14):
    """n points (q, sigma, steps, delta, target epsilon) of the box."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        q = float(10 ** rng.uniform(-6, 0))
        sigma = float(10 ** rng.uniform(math.log10(0.5), 2))
        steps = round(10 ** rng.uniform(0, 6))
        delta = float(10 ** rng.uniform(-10, -3))
        target = float(10 ** rng.uniform(math.log10(0.05), math.log10(20)))
        out.append((q, sigma, steps, delta, target))
    return out


def timed(fn):
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def race(calls, repeats):
    """Round-robin timings of the zero-argument ``calls``: (best time of each, value of each)."""
    best = [math.inf] * len(calls)
    values = [None] * len(calls)
    for _ in range(repeats):
        for j, call in enumerate(calls):
            t, values[j] = timed(call)
            best[j] = min(best[j], t)
    return best, values


def rel_change(after, before):
    if before == 0 or not math.isfinite(before):
        return 0.0 if after == before else math.inf
    return (after - before) / before


def bench(name, points, make_calls, repeats):
    """Time old vs new per point; returns a table row (name, med/max before, med/max after, change)."""
    t_old, t_new, worst = [], [], [0.0, 0.0]
    for p in points:
        (to, tn), (vo, vn) = race(make_calls(p), repeats)
        t_old.append(to)
        t_new.append(tn)
        r = rel_change(vn, vo)
        worst = [min(worst[0], r), max(worst[1], r)]
    return (name, statistics.median(t_old), max(t_old), statistics.median(t_new), max(t_new), worst)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=40, help="points of the box (default 40)")
    ap.add_argument("--repeats", type=int, default=3, help="round-robin rounds for RDP and calibration")
    ap.add_argument("--before", default="8d6299a~1", help="git revision of the 'before' accounting.py")
    ap.add_argument("--no-pld", action="store_true", help="skip the PLD accountant")
    ap.add_argument("--pld-points", type=int, default=16, help="box points for PLD (default 16)")
    args = ap.parse_args(argv)
    old = load_before(args.before)
    pts = box(args.points)
    new.epsilon(0.01, 1.0, 10, 1e-5)
    old.epsilon(0.01, 1.0, 10, 1e-5)   # warm-up (imports)
    rows = [bench("epsilon (RDP)", pts, lambda p: [lambda: old.epsilon(*p[:4])[0],
                                                   lambda: new.epsilon(*p[:4])[0]], args.repeats),
            bench("calibrate_noise", pts, lambda p: [lambda: old.calibrate_noise(p[0], p[2], p[4], p[3]),
                                                     lambda: new.calibrate_noise(p[0], p[2], p[4], p[3])],
                  max(1, args.repeats - 2))]
    if not args.no_pld:
        rows.append(bench("epsilon (PLD)", pts[:args.pld_points],
                          lambda p: [lambda: old.epsilon(*p[:4], accountant="pld")[0],
                                     lambda: new.epsilon(*p[:4], accountant="pld")[0]], 1))
        gaps = [new.epsilon_pld(*p[:4]) for p in pts[:args.pld_points]]
        rel = [g / e for e, g in gaps if e > 0]
    print(f"{machine()}; {args.points} box points (seed 14), before = {args.before}")
    print("| call | before median ms | before max ms | after median ms | after max ms | epsilon/sigma change |")
    print("|---|---:|---:|---:|---:|---|")
    for name, mo, xo, mn, xn, (lo, hi) in rows:
        print(f"| {name} | {1e3 * mo:.1f} | {1e3 * xo:.1f} | {1e3 * mn:.1f} | {1e3 * xn:.1f} | "
              f"{lo:+.2e} .. {hi:+.2e} |")
    if not args.no_pld:
        print(f"PLD gap / epsilon over {len(rel)} points with epsilon > 0: median {statistics.median(rel):.2e}, "
              f"max {max(rel):.2e}; target {new.PLD_ACCURACY:g}")


if __name__ == "__main__":
    main()
