"""Benchmark: trials per second of the privacy audit (``sims.audit``).

* ``audit_gaussian``: the closed-form game of dense DP-SGD, vectorised over trials;
* ``check``: the game on the real chain, one ``sims.step.dpsgd_step`` per trial and step, for dense
  DP-SGD and a few sparse chains (d = 16, batch 16, Dirac canary; ``aligned`` adds pilot runs);
* ``one_run``: 1000 canaries in one run (one step; the cost is the step on d = 1000 and the bound).

A trial is one run of ``steps`` steps in one world; the rate counts the trials of both worlds and the
fitting trials (``check`` plays ``2 * (trials + trials // 4)``). Best of ``--repeat`` runs. Timings
are never asserted in tests.

Usage: python benchmarks/bench_audit.py [--repeat 3] [--trials 2000]
"""
from __future__ import annotations

import argparse

import sims.mechanisms as mech
from sims import audit
from _timing import best_of  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--trials", type=int, default=2000)
    args = ap.parse_args()
    n = args.trials
    played = 2 * (n + max(audit.MIN_TRIALS // 2, n // 4))
    cl, nz = mech.clip(1.0), mech.gaussian_noise(1.0)
    chains = {
        "dense DP-SGD": mech.chain(cl, nz),
        "random-k mask-then-clip": mech.chain(mech.random_k(4, "mask_then_clip"), cl, nz),
        "top-k of the noisy update": mech.chain(cl, nz, mech.top_k(4, "noisy")),
        "per-example top-k": mech.chain(mech.top_k(4, "per_example"), cl, nz),
        "TopAgg": mech.chain(mech.topagg(4, 1.0)),
    }
    audit.check(chains["dense DP-SGD"], trials=100)  # compile / load the Numba kernels
    print(f"{'audit':44s} {'trials':>8s} {'seconds':>8s} {'trials/s':>10s}")
    for trials in (10_000, 100_000):
        t = best_of(lambda: audit.audit_gaussian(1.0, trials=trials), args.repeat)
        print(f"{'audit_gaussian (closed form)':44s} {trials:8d} {t:8.3f} {2 * trials / t:10.0f}")
    t = best_of(lambda: audit.audit_gaussian(1.0, trials=10_000, sampling_rate=0.25, steps=8), args.repeat)
    print(f"{'audit_gaussian, 8 Poisson steps':44s} {10_000:8d} {t:8.3f} {2 * 10_000 / t:10.0f}")
    for name, ch in chains.items():
        t = best_of(lambda: audit.check(ch, trials=n), args.repeat)
        print(f"{'check: ' + name:44s} {n:8d} {t:8.3f} {played / t:10.0f}")
    t = best_of(lambda: audit.check(chains["dense DP-SGD"], trials=n, canary="aligned"), args.repeat)
    print(f"{'check: dense DP-SGD, aligned canary':44s} {n:8d} {t:8.3f} {played / t:10.0f}")
    t = best_of(lambda: audit.check(chains["dense DP-SGD"], trials=n // 4, steps=4, sampling_rate=0.5), args.repeat)
    print(f"{'check: dense DP-SGD, 4 Poisson steps':44s} {n // 4:8d} {t:8.3f} "
          f"{2 * (n // 4 + max(50, n // 16)) / t:10.0f}")
    t = best_of(lambda: audit.one_run(chains["dense DP-SGD"]), args.repeat)
    print(f"{'one_run: dense DP-SGD, 1000 canaries':44s} {1:8d} {t:8.3f} {'':>10s}")


if __name__ == "__main__":
    main()
