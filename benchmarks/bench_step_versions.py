"""Old vs new DP-SGD step of ``bench_step.py`` measured in ONE run, the two trees side by side.

    python benchmarks/bench_step_versions.py [--against REV] [--new REV] [--quick]
    python benchmarks/bench_step.py --against REV [--quick]          (same thing)

``REV`` is either a directory holding a checked-out tree (``REV/sims/__init__.py``; default
``/tmp/oldmain``) or a git revision of this repository, which is then checked out by
``git worktree add --detach`` under a temporary directory in /tmp and removed at the end.
``--new`` is the tree under test, a directory or a revision likewise (default: the tree holding
this script, as it is on disk, uncommitted edits included; ``--new HEAD`` measures the last commit).

How it measures. One long-lived worker subprocess per tree (this same file with ``--worker``);
each puts its tree root first on ``sys.path``, checks that ``sims`` and ``dptheory`` are imported
from that tree (prints ``sims.__file__``), builds the workloads and warms up (Numba compilation
and first-call costs are excluded). Both workers get the same environment (thread settings are
inherited and printed by each worker; ``PYTHONDONTWRITEBYTECODE=1`` and a ``NUMBA_CACHE_DIR`` under
/tmp, so nothing is written into either tree). The driver then runs ROUNDS: in each round and for
each workload, one worker times ``k`` iterations while the other one is idle, then the other
worker does the same (the order old/new is flipped every round), so background load on the shared
cores hits both trees alike. Within a worker iteration the functions run back to back:

* ``np floor``  : a bare-NumPy non-private step using no project code (own weights; forward,
                  head, backward, mean gradient, SGD update) -- identical in both trees, so it is
                  the control: old/new np floors should agree;
* ``floor``     : ``bench_step.py``'s floor: ``sims.models.backprop`` + ``weighted_sum`` (mean
                  gradient) + SGD update (project code, unchanged by the step refactor);
* ``chain``     : ``bench_step.py``'s chain step: backprop + ``chain(clip(1.0), gaussian_noise(1.0))``
                  run by the tree's step API (new: ``sims.step.dpsgd_step(chain, state, ctx)``;
                  old: ``chain.step(ctx, state)``) + SGD update.

Workloads W1-W3 are those of ``bench_step.py`` (float32, B = 256); W1m is W1's chain step on one
fixed backprop record without the backprop and the update (``chain`` = the mechanism alone: the
part the refactor changed, to see its share). T* time the full training loop
``sims.train.train`` (Poisson sampling at q = 256/n, default chain clip 1 + noise 1, SGD lr 0.1)
per step = call time / steps, against the np floor of the same model at B = 256 (each floor
sample the median of 21 calls timed right before the train call):
T1 logistic d_in = 784, n_train = 2000, 40 steps with the default history (one record per epoch,
each with its epsilon: the RDP accounting dominates); T1s the same for 200 steps with one record
(mostly the loop itself); T2 / T2s the same for the digits MLP 64-128-10 (n_train = 1348).

Reported per workload and tree: median absolute times, the median over iterations of
chain/floor (and chain/np floor), and new/old = ratio_new / ratio_old with a 90 % bootstrap interval
(rounds resampled, the same rounds for both trees). The verdict is "within 5 %" when
new/old <= 1.05, "SLOWER" when even the interval's lower end exceeds 1.05, otherwise "not significant".
Each worker also reports a checksum of its first chain update and of a train run's final
parameters, so one sees that both trees compute the same thing.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _floor import NpFloor  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from _timing import machine  # noqa: E402

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
DEFAULT_OLD = "/tmp/oldmain"

B, CLIP, SIGMA, LR = 256, 1.0, 1.0, 0.1
# train workloads: (steps per call, record_every); None = the default (once per epoch)
TRAIN_RUNS = {"T1": (40, None), "T1s": (200, 200), "T2": (40, None), "T2s": (200, 200)}

# name -> (kind, title, iterations per round: quick, full)
WORKLOADS = {
    "W1": ("step", "W1 logistic 784", (40, 60)),
    "W2": ("step", "W2 MLP 784-256-256-10", (6, 8)),
    "W3": ("step", "W3 MLP 784-1024-1024-10", (1, 2)),
    "W1m": ("step", "W1m logistic 784, mechanism only", (40, 60)),
    "T1": ("train", "T1 train logistic 784 n=2000, 40 steps, record per epoch", (1, 3)),
    "T1s": ("train", "T1s train logistic 784 n=2000, 200 steps, 1 record", (1, 3)),
    "T2": ("train", "T2 train digits MLP 64-128-10, 40 steps, record per epoch", (1, 3)),
    "T2s": ("train", "T2s train digits MLP 64-128-10, 200 steps, 1 record", (1, 3)),
}


# ============================================================================ worker side
def _worker(tree: str, label: str) -> None:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything printed by library code goes to stderr, not into the protocol pipe
    sys.path.insert(0, tree)
    # the editable install's finder would resolve a submodule missing from this tree (e.g. sims.step in
    # an old tree) to the installed tree: drop it, so every sims/dptheory module comes from ``tree``
    sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("__editable__")]

    import numpy as np

    import dptheory
    import sims

    root = Path(tree).resolve()
    for mod in (sims, dptheory):
        f = Path(mod.__file__).resolve()
        if root not in f.parents:
            raise SystemExit(f"[{label}] {mod.__name__} imported from {f}, not from the tree {root}")

    from sims.data import load_digits, make_logistic
    from sims.mechanisms import InitContext, StepContext, chain, clip, gaussian_noise
    from sims.models import backprop, init_params, logistic_regression, mlp, weighted_sum
    from sims.train import train

    if (root / "sims" / "step.py").is_file():
        from sims.step import dpsgd_step

        def run_chain(ch, state, ctx):
            return dpsgd_step(ch, state, ctx)
        api = "sims.step.dpsgd_step(chain, state, ctx)"
    else:
        def run_chain(ch, state, ctx):
            return ch.step(ctx, state)
        api = "chain.step(ctx, state)"

    DT = np.float32

    def threads():
        import numba
        out = {"OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "unset"),
               "NUMBA_NUM_THREADS": os.environ.get("NUMBA_NUM_THREADS", "unset"),
               "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset"),
               "numba.get_num_threads()": numba.get_num_threads()}
        try:
            from threadpoolctl import threadpool_info
            out["threadpools"] = "; ".join(sorted(f"{i['internal_api']} {i.get('version')} {i['num_threads']} threads"
                                                  for i in threadpool_info()))
        except ImportError:
            out["blas"] = "threadpoolctl not installed"
        return out

    def digest(a):
        return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]

    def step_workload(name):
        mech_only = name.endswith("m")
        name = name.rstrip("m")
        model = {"W1": lambda: logistic_regression(784, dtype=DT),
                 "W2": lambda: mlp((784, 256, 256, 10), dtype=DT),
                 "W3": lambda: mlp((784, 1024, 1024, 10), dtype=DT)}[name]()
        rng = np.random.default_rng({"W1": 0, "W2": 1, "W3": 2}[name])
        X = rng.standard_normal((B, model.n_features)).astype(DT)
        y = rng.integers(0, model.n_classes, size=B)
        params = init_params(model, 0)
        inv_b = np.full(B, 1.0 / B, dtype=DT)
        seed_rng = np.random.default_rng(2)
        lay = model.layout
        ch = chain(clip(CLIP), gaussian_noise(SIGMA))
        ch_state = ch.init(InitContext(model=model, layout=lay, params=params, total_steps=10, steps_per_epoch=1,
                                       expected_batch_size=float(B), public=None, rng=np.random.default_rng(3)))

        def ctx(p, rng_):
            return StepContext(model=model, layout=lay, step=0, epoch=0, params=p, bp=backprop(model, p, X, y),
                               expected_batch_size=float(B), public=None, rng=rng_)

        u0, _, m0 = run_chain(ch, ch_state, ctx(params.copy(), np.random.default_rng(7)))
        check = {"first chain update": digest(u0), "metrics": ",".join(sorted(m0))}

        def floor():
            bp = backprop(model, params, X, y)
            g = weighted_sum(bp, inv_b)
            params[...] -= DT(LR) * g

        def dp_chain():
            u, _, _ = run_chain(ch, ch_state, ctx(params, seed_rng))
            np.subtract(params, DT(LR) * u, out=params)

        fixed = ctx(params.copy(), seed_rng)  # for "mechanism only": one backprop record, reused

        def mechanism():
            run_chain(ch, ch_state, fixed)

        head = "logistic" if model.head == "logistic" else "softmax"
        return [NpFloor(lay.sizes, head, X, y, 5, dtype=DT, lr=LR), floor, mechanism if mech_only else dp_chain], check, model.n_params

    def train_workload(name):
        steps, record_every = TRAIN_RUNS[name]
        if name.startswith("T1"):
            model = logistic_regression(784, dtype=DT)
            ds = make_logistic(2500, 784, test_size=0.2, random_state=0, dtype=DT)
        else:
            model = mlp((64, 128, 10), dtype=DT)
            ds = load_digits(random_state=0, dtype=DT)
        Xb, yb = ds.X_train[:B], ds.y_train[:B].astype(np.int64)

        def run():
            return train(model, ds, steps=steps, batch_size=B, clip_norm=CLIP, noise_multiplier=SIGMA,
                         lr=LR, record_every=record_every, random_state=0)

        r = run()
        check = {"final params": digest(r.params), "n_train": int(ds.X_train.shape[0]),
                 "history": ",".join(sorted(r.history))}
        head = "logistic" if model.head == "logistic" else "softmax"

        def per_step():  # the round timer divides its time by the number of steps
            run()
        return [NpFloor(model.layout.sizes, head, Xb, yb, 5, dtype=DT, lr=LR), per_step], check, model.n_params

    fns, checks, dims = {}, {}, {}
    send = lambda obj: proto.write(json.dumps(obj) + "\n")  # noqa: E731
    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg["cmd"]
        if cmd == "setup":
            t0 = time.perf_counter()
            for name in msg["workloads"]:
                kind = WORKLOADS[name][0]
                fs, chk, d = (step_workload if kind == "step" else train_workload)(name)
                for _ in range(msg["warmup"] if kind == "step" else 2):
                    for f in fs:
                        f()
                fns[name], checks[name], dims[name] = fs, chk, d
            foreign = sorted(m for m, mod in sys.modules.items() if m.split(".")[0] in ("sims", "dptheory")
                             and getattr(mod, "__file__", None) and root not in Path(mod.__file__).resolve().parents)
            if foreign:
                raise SystemExit(f"[{label}] modules imported from outside {root}: {foreign}")
            send({"label": label, "tree": str(root), "sims": sims.__file__, "dptheory": dptheory.__file__,
                  "api": api, "threads": threads(), "numpy": np.__version__, "checks": checks, "dims": dims,
                  "python": platform.python_version(), "setup_s": time.perf_counter() - t0})
        elif cmd == "round":
            fs = fns[msg["w"]]
            div = [1.0] * len(fs)
            if WORKLOADS[msg["w"]][0] == "train":
                div[-1] = float(TRAIN_RUNS[msg["w"]][0])
            ts = [[] for _ in fs]
            # a train call is long and its np floor short: the floor sample is the median of 21 calls
            inner = [21 if div[-1] > 1 and j == 0 else 1 for j in range(len(fs))]
            for _ in range(msg["k"]):
                for j, f in enumerate(fs):
                    tj = []
                    for _ in range(inner[j]):
                        t0 = time.perf_counter()
                        f()
                        tj.append((time.perf_counter() - t0) / div[j])
                    ts[j].append(statistics.median(tj))
            send({"ts": ts})
        elif cmd == "quit":
            send({"bye": label})
            return


# ============================================================================ driver side
def _git(*args, cwd=REPO, check=True):
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=check).stdout.strip()


def _is_tree(p: Path) -> bool:
    return (p / "sims" / "__init__.py").is_file() and (p / "dptheory" / "__init__.py").is_file()


def _resolve_tree(rev: str, option: str):
    """Return ``(tree_path, cleanup)``; a git revision is checked out into a temporary worktree."""
    p = Path(rev).expanduser()
    if p.is_dir():
        if not _is_tree(p):
            raise SystemExit(f"{option} {rev}: directory without sims/ and dptheory/ packages")
        return p.resolve(), None
    sha = _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
    if not sha:
        raise SystemExit(f"{option} {rev}: neither a directory nor a git revision of {REPO}")
    tmp = Path(tempfile.mkdtemp(prefix="bench_step_versions_", dir="/tmp"))
    tree = tmp / "tree"
    _git("worktree", "add", "--detach", str(tree), sha)
    print(f"created temporary worktree {tree} at {sha[:12]}")

    def cleanup():
        _git("worktree", "remove", "--force", str(tree), check=False)
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"removed temporary worktree {tree}")
    return tree, cleanup


def _describe(tree: Path) -> str:
    head = _git("rev-parse", "--short=12", "HEAD", cwd=tree, check=False) or "?"
    dirty = _git("status", "--porcelain", "--", "sims", "dptheory", cwd=tree, check=False)
    paths = [ln.split(None, 1)[1] for ln in dirty.splitlines() if ln.strip()]
    state = ("clean sims/ dptheory/" if not paths else
             f"uncommitted under sims/ dptheory/: {', '.join(paths[:6])}{' ...' if len(paths) > 6 else ''}")
    return f"{tree} (HEAD {head}, {state})"


class _Worker:
    def __init__(self, tree: Path, label: str, env: dict):
        self.label = label
        self.proc = subprocess.Popen([sys.executable, str(HERE), "--worker", "--tree", str(tree), "--label", label],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                     env=env, cwd="/tmp")

    def send(self, **msg):
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()

    def recv(self):
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"worker {self.label} died (exit code {self.proc.wait()}); see its stderr above")
        return json.loads(line)

    def close(self):
        if self.proc.poll() is None:
            try:
                self.send(cmd="quit")
                self.recv()
                self.proc.wait(timeout=30)
            except Exception:  # noqa: BLE001
                self.proc.terminate()
                self.proc.wait(timeout=30)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", default=DEFAULT_OLD, metavar="REV",
                    help=f"old tree: a checked-out directory or a git revision (default {DEFAULT_OLD})")
    ap.add_argument("--new", default=str(REPO), metavar="REV",
                    help="new tree: a directory or a git revision, e.g. HEAD to leave out uncommitted edits "
                         "(default: this script's tree, as it is on disk)")
    ap.add_argument("--quick", action="store_true", help="fewer rounds")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per workload (default 8 quick, 30 full)")
    ap.add_argument("--pause", type=float, default=0.2,
                    help="seconds of idle time at each hand-off between the workers, so the previous worker's "
                         "spinning BLAS/Numba threads are asleep (default 0.2)")
    ap.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated subset of " + ",".join(WORKLOADS))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tree", help=argparse.SUPPRESS)
    ap.add_argument("--label", help=argparse.SUPPRESS)
    return ap


def _start(old_tree, new_tree, names):
    """The two workers (old, new), set up and warmed; prints what each imported and its threads."""
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"machine: {machine()}, {platform.node()}")
    la = os.getloadavg()
    print(f"load average at start: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")
    print(f"old tree: {_describe(old_tree)}")
    print(f"new tree: {_describe(new_tree)}")
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    cache_root = Path(tempfile.gettempdir()) / "bench_step_versions_numba_cache"
    workers = []
    for label, tree in (("old", old_tree), ("new", new_tree)):
        wenv = dict(env, NUMBA_CACHE_DIR=str(cache_root / hashlib.sha1(str(tree).encode()).hexdigest()[:12]))
        workers.append(_Worker(tree, label, wenv))
    for w in workers:
        w.send(cmd="setup", workloads=names, warmup=5)
    infos = [w.recv() for w in workers]
    for info in infos:
        print(f"[{info['label']}] sims from {info['sims']}; dptheory from {info['dptheory']}")
        print(f"[{info['label']}] step API {info['api']}; numpy {info['numpy']}, python {info['python']}; "
              f"setup + warm-up {info['setup_s']:.1f} s")
        print(f"[{info['label']}] threads: " + ", ".join(f"{k}={v}" for k, v in info["threads"].items()))
    if infos[0]["threads"] != infos[1]["threads"]:
        print("WARNING: the two workers report different thread settings")
    for n in names:
        c_old, c_new = infos[0]["checks"][n], infos[1]["checks"][n]
        parts = []
        for key in c_old:
            same = c_old[key] == c_new.get(key)
            parts.append(f"{key} {'same' if same else 'DIFFERENT'} ({c_old[key]}" + ("" if same else f" vs {c_new.get(key)}") + ")")
        print(f"check {n} old vs new: " + "; ".join(parts))
    return workers, infos


def _rounds(workers, names, rounds, quick, pause):
    """Time every workload ``rounds`` times in each worker, the old/new order flipped every round.

    Returns ``(ts, by_round, per_round_abs)``: per label and workload, the iterations (tuples of
    times), the same grouped by round, and the median chain time of each round."""
    ts = {w.label: {n: [] for n in names} for w in workers}
    per_round_abs = {w.label: {n: [] for n in names} for w in workers}
    by_round = {w.label: {n: [] for n in names} for w in workers}
    for r in range(rounds):
        order = workers if r % 2 == 0 else workers[::-1]
        for n in names:
            k = WORKLOADS[n][2][0 if quick else 1]
            for w in order:
                if pause:
                    time.sleep(pause)
                w.send(cmd="round", w=n, k=k)
                it = list(zip(*w.recv()["ts"]))
                ts[w.label][n].extend(it)
                by_round[w.label][n].append(it)
                per_round_abs[w.label][n].append(statistics.median(t[-1] for t in it))
    return ts, by_round, per_round_abs


def _boot_ci(by_round, n, kind, rng, n_boot=2000, level=0.90):
    """Bootstrap over rounds (the same resampled rounds for both trees: they are paired in time)
    of new/old = median_new(chain/floor) / median_old(chain/floor)."""
    import numpy as np

    ratio = {}
    for lab in ("old", "new"):
        arr = np.array(by_round[lab][n], dtype=float)  # (rounds, k, n_fns)
        ratio[lab] = arr[:, :, -1] / arr[:, :, 1 if kind == "step" else 0]  # (rounds, k)
    R = ratio["old"].shape[0]
    qs = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, R, size=R)
        qs[b] = np.median(ratio["new"][idx]) / np.median(ratio["old"][idx])
    lo, hi = np.quantile(qs, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _medians(it, kind) -> dict:
    med = statistics.median
    tnp, tc = [t[0] for t in it], [t[-1] for t in it]
    tf = [t[1] for t in it] if kind == "step" else tnp
    return dict(np=med(tnp), fl=med(tf) if kind == "step" else float("nan"), ch=med(tc),
                r=med(c / f for c, f in zip(tc, tf)), rnp=med(c / f for c, f in zip(tc, tnp)))


def _verdict(q, lo, hi) -> str:
    if q <= 1.05:
        return "within 5 %" if hi <= 1.05 else f"within 5 % (CI reaches {hi:.3f})"
    if lo <= 1.05:
        return f"+{100 * (q - 1):.1f} %, not significant (CI low {lo:.3f} <= 1.05)"
    return f"**SLOWER by {100 * (q - 1):.1f} %**"


def _report(names, infos, timings, rounds, quick) -> None:
    import numpy as np  # the driver only (never timed)

    ts, by_round, per_round_abs = timings
    rng = np.random.default_rng(12345)
    print()
    print(f"rounds: {rounds} per workload, old/new order flipped every round; iterations per round: "
          + ", ".join(f"{n} {WORKLOADS[n][2][0 if quick else 1]}" for n in names))
    print("ratios: median over iterations of t / t_floor (floor timed right before, same worker; for T* the np floor); "
          "new/old = ratio_new / ratio_old; 90 % CI = bootstrap over rounds (paired); "
          "abs chain new/old = median over rounds of the quotient of the two workers' median chain times "
          "(adjacent in time)")
    print()
    hdr = ("| workload | d | floor ms old / new | chain ms old / new | chain/floor old | chain/floor new | "
           "**new/old** | 90 % CI | abs chain new/old | np floor ms old / new | chain/np floor old / new | verdict |")
    print(hdr)
    print("|" + "---|" * (hdr.count("|") - 1))
    for n in names:
        kind, title, _ = WORKLOADS[n]
        row = {lab: _medians(ts[lab][n], kind) for lab in ("old", "new")}
        q = row["new"]["r"] / row["old"]["r"]
        lo, hi = _boot_ci(by_round, n, kind, rng)
        qa = statistics.median(nw / od for od, nw in zip(per_round_abs["old"][n], per_round_abs["new"][n]))
        fl = (f"{row['old']['fl'] * 1e3:.3f} / {row['new']['fl'] * 1e3:.3f}" if kind == "step" else "(np floor)")
        print(f"| {title} | {infos[1]['dims'][n]:,} | {fl} | {row['old']['ch'] * 1e3:.3f} / "
              f"{row['new']['ch'] * 1e3:.3f} | {row['old']['r']:.3f} | {row['new']['r']:.3f} | **{q:.3f}** | "
              f"{lo:.3f}-{hi:.3f} | {qa:.3f} | "
              f"{row['old']['np'] * 1e3:.3f} / {row['new']['np'] * 1e3:.3f} | "
              f"{row['old']['rnp']:.3f} / {row['new']['rnp']:.3f} | {_verdict(q, lo, hi)} |")
    print()
    print("(T*: chain = one step of sims.train.train = call time / steps, incl. sampling, optimizer, history "
          "records with their epsilon, and the final privacy report; ratio to the np floor of the same model at B=256.)")


def main(argv=None) -> int:
    a = _parser().parse_args(argv)
    if a.worker:
        _worker(a.tree, a.label)
        return 0
    names = [n.strip() for n in a.only.split(",") if n.strip()]
    bad = [n for n in names if n not in WORKLOADS]
    if bad:
        raise SystemExit(f"--only: unknown workload(s) {bad}; choose from {list(WORKLOADS)}")
    rounds = a.rounds or (8 if a.quick else 30)
    old_tree, cleanup_old = _resolve_tree(a.against, "--against")
    try:
        new_tree, cleanup_new = _resolve_tree(a.new, "--new")
    except BaseException:
        if cleanup_old is not None:
            cleanup_old()
        raise
    cleanups = [c for c in (cleanup_old, cleanup_new) if c is not None]
    t_start = time.perf_counter()
    workers = []
    try:
        workers, infos = _start(old_tree, new_tree, names)
        print(f"hand-off pause between workers: {a.pause} s")
        timings = _rounds(workers, names, rounds, a.quick, a.pause)
    finally:
        for w in workers:
            w.close()
        for c in cleanups:
            c()
    _report(names, infos, timings, rounds, a.quick)
    la_end = os.getloadavg()
    print(f"load average at the end: {la_end[0]:.2f} {la_end[1]:.2f} {la_end[2]:.2f}; "
          f"wall time {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
