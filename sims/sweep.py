"""Grids of training runs on local worker processes, a Dask cluster or in-process, stored in SQLite.

A sweep is a list of configs (plain dicts of keyword arguments, usually from :func:`grid`) and a
function ``fn(**config) -> dict`` of JSON-serialisable metrics. :func:`run_sweep` calls ``fn`` for
every config that its store (:mod:`sims.store`, one SQLite file) does not already hold as done, and
returns one record ``{**config, **metrics}`` per config, in config order, read back from the store.

Output of ``fn``: a dict of metrics (NumPy scalars and arrays, ranges and dataclass records such as
a :mod:`dptheory.events` event are converted to JSON), whose keys differ from the config's, are not
``"error"`` and do not start with ``"_"``, except for :data:`HISTORY_KEY` (``"_history"``): a dict of
named numeric arrays (e.g. a training history) stored in the store's ``histories`` table and read
with :func:`sims.store.load_history`; it is not part of the record.

Records are JSON-normalised (a tuple becomes a list, ``float`` and ``int`` stay distinct), so the
record of a fresh run equals the record read back from the store. Runs that failed are recorded
with their error and retried, up to ``max_attempts`` times per sweep; a later sweep tries them again.

Reproducibility: ``fn`` must take all its randomness from its config (e.g. a ``seed`` axis passed
to ``sims.train.train(random_state=seed)``). Every executor runs ``fn`` with the same BLAS / OpenMP
/ Numba thread cap (``threads_per_worker``, 1 by default), the serial path included, so the same
config gives the same stored record bit for bit whatever the executor and the parent's thread
settings, on machines with the same CPU type and library builds (``docs/store.md``).

Stacking: when ``fn`` has the attributes ``stack_key(config) -> hashable or None`` and
``run_stack(configs) -> list of outputs`` (as :func:`sims.config.sweep_run` has), the claimable
configs with one key run as ONE task of up to :data:`MAX_STACK` configs (``run_stack``), split over
the executor's free slots; a config whose key is None runs alone. ``run_stack(configs)[j]`` must be
what ``fn(**configs[j])`` returns, whatever the group, so the store's records do not depend on the
grouping. If ``run_stack`` raises, each config of the group is run alone, so that an error is its own.

Several sweeps may share one store: each claims a config in a transaction and holds a lease on it
that a heartbeat renews, so no config is run twice at once, and a config whose sweep died is taken
over once its lease expires. ``kill -9`` loses only the runs in flight; rerun the sweep to finish.
"""
from __future__ import annotations

import collections
import concurrent.futures as _cf
import contextlib
import dataclasses
import itertools
import json
import math
import os
import pickle
import queue
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid

from . import store as _store
from .store import HISTORY_KEY, config_hash, config_key

# NOTE: only the standard library (and sims.store, which imports only the standard library) at module
# level: a local worker imports this module first, and dptheory.validation imports NumPy.

__all__ = [
    "HISTORY_KEY",
    "MAX_STACK",
    "RESERVED_KEYS",
    "THREAD_ENV_VARS",
    "config_hash",
    "config_key",
    "dask_client",
    "grid",
    "limit_threads",
    "run_sweep",
]

#: Environment variables that cap the thread pools of BLAS / OpenMP libraries and of Numba.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                   "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "NUMBA_NUM_THREADS")

#: Keys that neither a config nor an ``fn`` output may use; names starting with ``"_"`` are reserved
#: too (the store's columns, :data:`HISTORY_KEY`).
RESERVED_KEYS = ("error",)

#: Most configs in one stacked task (``fn.run_stack``); fewer when that keeps executor slots idle.
MAX_STACK = 64
#: Fewest configs per stacked task when a group is split to fill the executor's free slots.
MIN_STACK = 4

_EXECUTORS = ("serial",)
_PLUGIN_NAME = "dpsparse-thread-limits"
_IMPORTING_MAIN = None  # set in a local worker while it imports the parent's main script


def _check_int(name, value, **kw):
    from dptheory.validation import check_int
    return check_int(name, value, **kw)


def _check_choice(name, value, choices):
    from dptheory.validation import check_choice
    return check_choice(name, value, choices)


def _reserved(key) -> bool:
    return key in RESERVED_KEYS or (isinstance(key, str) and key.startswith("_"))


# ----------------------------------------------------------------------------- grid
def grid(**axes) -> list[dict]:
    """Cartesian product of named axes, as a list of config dicts.

    ``grid(lr=[0.1, 0.5], seed=range(2))`` gives
    ``[{"lr": 0.1, "seed": 0}, {"lr": 0.1, "seed": 1}, {"lr": 0.5, "seed": 0}, {"lr": 0.5, "seed": 1}]``:
    the axes vary in the order they are given, the LAST one fastest (``itertools.product`` order),
    so the order is deterministic. Size: the product of the axis lengths.

    Parameters
    ----------
    **axes : iterable
        Each axis is a non-empty, non-string iterable (list, tuple, range, 1-d array) of distinct values.

    Returns
    -------
    list of dict

    Raises
    ------
    ValueError
        No axes; an axis that is a string, a mapping, not iterable, empty, or has repeated values;
        a reserved axis name (``"error"`` or a name starting with ``"_"``).
    """
    if not axes:
        raise ValueError("axes must contain at least one named axis, e.g. grid(seed=range(3)); got none")
    names, values = [], []
    for name, axis in axes.items():
        if isinstance(axis, (str, bytes, dict)) or not hasattr(axis, "__iter__"):
            raise ValueError(f"axis {name!r} must be a non-empty list/tuple/range of values, got {axis!r}")
        vals = list(axis)
        if not vals:
            raise ValueError(f"axis {name!r} must have at least 1 value, got 0")
        keys = [config_key({"v": v}) for v in vals]
        if len(set(keys)) != len(keys):
            raise ValueError(f"axis {name!r} must have distinct values, got {vals!r}")
        names.append(name)
        values.append(vals)
    for name in names:
        if _reserved(name):
            raise ValueError(f"axis names must not be {list(RESERVED_KEYS)} or start with '_' (reserved), got {name!r}")
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


# ----------------------------------------------------------------------------- threads
def limit_threads(n_threads: int = 1) -> None:
    """Cap this process's BLAS / OpenMP / Numba thread pools at ``n_threads``, for good.

    Sets every variable of :data:`THREAD_ENV_VARS` (effective for libraries loaded afterwards), calls
    ``threadpoolctl.threadpool_limits(n_threads)`` for the libraries already loaded, and
    ``numba.set_num_threads`` when Numba is already imported (Numba's count is per calling thread).
    :func:`run_sweep` runs it at the start of each local worker and, through a worker plugin, in
    every Dask worker (a restarted one included).

    Raises
    ------
    ValueError
        ``n_threads`` not an integer >= 1.
    """
    n = _check_int("n_threads", n_threads, low=1)
    for var in THREAD_ENV_VARS:
        os.environ[var] = str(n)
    _pin_threads(n)


def _pin_threads(n):
    """Cap the BLAS / OpenMP pools loaded now (process-wide) and Numba's count in this thread."""
    from threadpoolctl import threadpool_limits
    threadpool_limits(limits=n)
    numba = sys.modules.get("numba")
    if numba is not None:
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


@contextlib.contextmanager
def _serial_threads(n):
    """The thread cap of a worker, inside this process for one run, restored afterwards.

    NumPy and SciPy are imported first so that their BLAS libraries are capped; a library that
    ``fn`` loads for the first time inside the run is not (``docs/store.md``, "Bit identity").
    """
    import numpy  # noqa: F401  (loads NumPy's BLAS before the cap is applied)
    from threadpoolctl import threadpool_limits
    with contextlib.suppress(ImportError):
        import scipy.linalg  # noqa: F401
    numba = sys.modules.get("numba")
    before = numba.get_num_threads() if numba is not None else None
    with threadpool_limits(limits=n):
        if numba is not None:
            numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        try:
            yield
        finally:
            if numba is not None:
                numba.set_num_threads(before)


# ----------------------------------------------------------------------------- one run
def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _split_output(out, config):
    """``fn``'s output as (metrics JSON text, history NPZ bytes or None); TypeError/ValueError if malformed."""
    if not isinstance(out, dict):
        raise TypeError(f"fn must return a dict of metrics, got {type(out).__name__}")
    bad = [k for k in out if not isinstance(k, str)]
    if bad:
        raise TypeError(f"fn output keys must be strings, got {bad!r}")
    metrics = {k: v for k, v in out.items() if k != HISTORY_KEY}
    clash = sorted(k for k in metrics if k in config or _reserved(k))
    if clash:
        raise ValueError(f"fn output keys {clash} clash with config keys or reserved names ({list(RESERVED_KEYS)}, "
                         f"names starting with '_' other than {HISTORY_KEY!r})")
    history = _store.history_bytes(out[HISTORY_KEY]) if HISTORY_KEY in out else None
    return _store.dumps(metrics), history


def _run_one(fn, config, fail_fast=False) -> dict:
    """Call ``fn(**config)`` and return its outcome dict (``record``, ``history``, ``error``, ``exc``, timings).

    Runs in the worker. ``exc`` (the exception itself) is kept only with ``fail_fast``, for re-raising.
    """
    t0, c0 = time.perf_counter(), time.process_time()
    record = history = error = exc = None
    try:
        record, history = _split_output(fn(**config), config)
    except Exception as e:
        error, exc = _error_text(e), (e if fail_fast else None)
    return {"record": record, "history": history, "error": error, "exc": exc,
            "wall_time": time.perf_counter() - t0, "cpu_time": time.process_time() - c0}


def _run_task(fn, configs, fail_fast=False) -> list:
    """The outcomes of one task: one config (:func:`_run_one`), or a group run by ``fn.run_stack``.

    A group's wall and CPU times are shared equally among its configs. If ``run_stack`` raises,
    every config of the group runs alone (its error, if any, is then its own).
    """
    if len(configs) == 1:
        return [_run_one(fn, configs[0], fail_fast)]
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        outs = list(fn.run_stack(list(configs)))
        if len(outs) != len(configs):
            raise RuntimeError(f"fn.run_stack returned {len(outs)} outputs for {len(configs)} configs")
    except Exception:
        return [_run_one(fn, c, fail_fast) for c in configs]
    wall, cpu = (time.perf_counter() - t0) / len(configs), (time.process_time() - c0) / len(configs)
    done = []
    for config, out in zip(configs, outs):
        record = history = error = exc = None
        try:
            record, history = _split_output(out, config)
        except Exception as e:
            error, exc = _error_text(e), (e if fail_fast else None)
        done.append({"record": record, "history": history, "error": error, "exc": exc, "wall_time": wall,
                     "cpu_time": cpu})
    return done


def _run_pinned(fn, configs, fail_fast, n_threads):
    """:func:`_run_task` under the thread cap (a Dask task; the worker plugin has set the environment)."""
    _pin_threads(n_threads)
    return _run_task(fn, configs, fail_fast)


def _stack_keys(fn, configs) -> list:
    """``fn.stack_key(config)`` per config when ``fn`` stacks (module docstring), else all None."""
    key, run_stack = getattr(fn, "stack_key", None), getattr(fn, "run_stack", None)
    if not (callable(key) and callable(run_stack)):
        return [None] * len(configs)
    return [key(c) for c in configs]


def _groups(candidates, keys, free) -> list:
    """Tasks for at most ``free`` slots: the candidates with one stack key together (at most
    :data:`MAX_STACK` per task), the largest task halved while slots stay free and it holds at
    least ``2 MIN_STACK``; a config without a key is a task of its own."""
    if free <= 0:
        return []
    tasks, where = [], {}
    for i in candidates:
        k = keys[i]
        if k is None:
            tasks.append([i])
        elif k in where and len(tasks[where[k]]) < MAX_STACK:
            tasks[where[k]].append(i)
        else:
            where[k] = len(tasks)
            tasks.append([i])
    while len(tasks) < free:
        big = max(range(len(tasks)), key=lambda j: len(tasks[j]), default=None)
        if big is None or len(tasks[big]) < 2 * MIN_STACK:
            break
        t = tasks[big]
        tasks[big:big + 1] = [t[:len(t) // 2], t[len(t) // 2:]]
    return [tuple(t) for t in tasks[:free]]


def _failure(exc, fail_fast) -> dict:
    """The outcome of an attempt that the executor itself failed (pickling, a dead worker)."""
    return {"record": None, "history": None, "error": _error_text(exc), "exc": exc if fail_fast else None,
            "wall_time": None, "cpu_time": None}


# ----------------------------------------------------------------------------- validation
@dataclasses.dataclass(frozen=True)
class _Plan:
    kind: str                 # "serial", "local", "dask" or "futures"
    executor: object
    n_workers: int | None
    threads: int
    fail_fast: bool
    max_attempts: int
    lease_seconds: float
    progress: bool


def _check_configs(configs) -> list:
    if isinstance(configs, dict) or not hasattr(configs, "__iter__"):
        raise ValueError(f"configs must be a list of dicts, got {type(configs).__name__}")
    configs = list(configs)
    if not configs:
        raise ValueError("configs must contain at least 1 config, got 0")
    first = {}
    for i, cfg in enumerate(configs):
        if not isinstance(cfg, dict):
            raise ValueError(f"configs[{i}] must be a dict, got {type(cfg).__name__}")
        reserved = sorted(k for k in cfg if _reserved(k))
        if reserved:
            raise ValueError(f"configs[{i}] must not use the reserved keys {list(RESERVED_KEYS)} or keys starting "
                             f"with '_', got {reserved}")
        k = config_key(cfg)
        if k in first:
            raise ValueError(f"configs must be distinct, but configs[{i}] repeats configs[{first[k]}]: {cfg!r}")
        first[k] = i
    return configs


def _executor_kind(executor) -> str:
    if executor is None:
        return "local"
    if isinstance(executor, str):
        _check_choice("executor", executor, _EXECUTORS)
        return executor
    if type(executor).__module__.split(".")[0] == "distributed":
        return "dask"
    if hasattr(executor, "submit"):
        return "futures"
    raise ValueError(f"executor must be None, 'serial', a distributed.Client or an object with a submit() method "
                     f"(a concurrent.futures.Executor), got {type(executor).__name__}")


def _check_fn_picklable(fn):
    try:
        fn_bytes = pickle.dumps(fn)
    except Exception as exc:
        raise ValueError(f"fn must be picklable for the local worker processes (a module-level function, not a "
                         f"lambda or closure); use executor='serial' otherwise ({_error_text(exc)})") from None
    _main_spec(fn_bytes)  # raises if fn lives in an interactive __main__


def _check_workers(kind, executor, n_workers, threads_per_worker):
    threads = _check_int("threads_per_worker", threads_per_worker, low=1)
    if kind == "local":
        return (os.cpu_count() or 1) if n_workers is None else _check_int("n_workers", n_workers, low=1), threads
    if n_workers is not None:
        raise ValueError(f"n_workers applies to the local worker processes only (executor=None), got "
                         f"n_workers={n_workers!r} with executor={executor!r}")
    if kind == "futures" and threads != 1:
        raise ValueError("threads_per_worker applies to executor=None, 'serial' or a Dask client only (the owner "
                         f"of another executor sets its threads), got threads_per_worker={threads_per_worker!r} "
                         f"with executor={executor!r}")
    return None, threads


def _plan(fn, executor, n_workers, threads_per_worker, fail_fast, max_attempts, lease_seconds, progress) -> _Plan:
    if not callable(fn):
        raise ValueError(f"fn must be callable (fn(**config) -> dict), got {type(fn).__name__}")
    kind = _executor_kind(executor)
    n_workers, threads = _check_workers(kind, executor, n_workers, threads_per_worker)
    if kind == "local":
        _check_fn_picklable(fn)
    max_attempts = _check_int("max_attempts", max_attempts, low=1)
    if (not isinstance(lease_seconds, (int, float)) or isinstance(lease_seconds, bool)
            or not math.isfinite(lease_seconds) or lease_seconds < 0.1):
        raise ValueError(f"lease_seconds must be a finite number of seconds >= 0.1, got {lease_seconds!r}")
    if progress is not None and not isinstance(progress, bool):
        raise ValueError(f"progress must be None (a bar when stderr is a terminal), True or False, got {progress!r}")
    if progress is None:
        progress = sys.stderr is not None and sys.stderr.isatty()
    return _Plan(kind, executor, n_workers, threads, bool(fail_fast), max_attempts, float(lease_seconds), progress)


def _check_store(store):
    if store is None:
        return None
    if not isinstance(store, (str, os.PathLike)):
        raise ValueError(f"store must be None or a file path, got {type(store).__name__}")
    parent = os.path.dirname(os.path.abspath(store))
    if not os.path.isdir(parent):
        raise ValueError(f"store must be a file path in an existing directory, got {os.fspath(store)!r}")
    if os.path.isdir(store):
        raise ValueError(f"store must be a file path, got the directory {os.fspath(store)!r}")
    return store


def _refuse_inside_worker_import():
    if _IMPORTING_MAIN is not None:
        raise RuntimeError(
            f"run_sweep was called while a sweep worker process imported the main script {_IMPORTING_MAIN!r} to find "
            "fn: that script starts a sweep at import time. Put the sweep under `if __name__ == \"__main__\":`, or "
            "define fn in a module of its own")


# ----------------------------------------------------------------------------- sweep state
class _Sweep:
    """The configs of one :func:`run_sweep` call and what this call knows of them."""

    def __init__(self, configs, hashes, st, plan, keys):
        self.configs, self.hashes, self.store, self.plan, self.keys = configs, hashes, st, plan, keys
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self.results = [None] * len(configs)
        self.tries = [0] * len(configs)        # attempts made by this call
        self.errors = [None] * len(configs)
        self.in_flight = {}                    # index -> attempt number
        self.tasks = 0                         # tasks in flight (a stacked task holds several indices)
        self.n_done = self.n_failed = 0

    def complete(self) -> bool:
        return self.n_done + self.n_failed == len(self.configs)

    def _resolve(self, i, state):
        cfg = _store.normalise(self.configs[i])
        if state.status == "done":
            self.results[i] = {**cfg, **json.loads(state.record)}
            self.n_done += 1
        else:
            self.results[i] = {**cfg, "error": state.error or self.errors[i] or f"not run ({state.status})"}
            self.n_failed += 1

    def refresh(self) -> list:
        """Read the unresolved configs' states; resolve the done and the exhausted; return the claimable."""
        idx = [i for i, r in enumerate(self.results) if r is None and i not in self.in_flight]
        states = self.store.states([self.hashes[i] for i in idx])
        now, claimable = time.time(), []
        for i in idx:
            s = states[self.hashes[i]]
            leased = s.status == "running" and s.lease_expires is not None and s.lease_expires >= now
            if s.status == "done" or (not leased and self.tries[i] >= self.plan.max_attempts):
                self._resolve(i, s)
            elif not leased:
                claimable.append(i)
        return claimable

    def claim(self, candidates, free) -> list:
        """Claim tasks (tuples of indices, :func:`_groups`) for ``free`` executor slots."""
        groups = _groups(candidates, self.keys, free)
        picks = [i for g in groups for i in g]
        got = self.store.claim([self.hashes[i] for i in picks], self.owner, self.plan.lease_seconds) if picks else {}
        out = [t for t in (tuple(i for i in g if self.hashes[i] in got) for g in groups) if t]
        for t in out:
            for i in t:
                self.in_flight[i] = got[self.hashes[i]]
                self.tries[i] += 1
        self.tasks += len(out)
        return out

    def record(self, i, outcome):
        attempt = self.in_flight.pop(i)
        self.errors[i] = outcome["error"]
        self.store.finish(self.hashes[i], self.owner, attempt, _store.Outcome(
            record=outcome["record"], error=outcome["error"], history=outcome["history"],
            wall_time=outcome["wall_time"], cpu_time=outcome["cpu_time"]))

    def release(self, reason):
        if self.in_flight:
            self.store.release({self.hashes[i]: a for i, a in self.in_flight.items()}, self.owner, reason)
            self.in_flight.clear()
            self.tasks = 0


class _Heartbeat:
    """A thread that renews the sweep's leases every ``lease_seconds / 4`` on its own connection."""

    def __init__(self, path, owner, lease_seconds):
        self._args = (path, owner, lease_seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sweep-heartbeat", daemon=True)

    def _run(self):
        path, owner, lease = self._args
        with _store.Store(path) as st:
            while not self._stop.wait(lease / 4):
                with contextlib.suppress(sqlite3.OperationalError):  # locked past the timeout: next beat
                    st.renew(owner, lease)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class _Progress:
    """A tqdm bar of runs resolved (done + failed), with done / running / failed counts and the time left."""

    def __init__(self, enabled, sweep):
        self._sweep, self._shown = sweep, sweep.n_done + sweep.n_failed
        self._bar = None
        if enabled:
            from tqdm import tqdm
            self._bar = tqdm(total=len(sweep.configs), initial=self._shown, unit="run", desc="sweep",
                             dynamic_ncols=True, file=sys.stderr)

    def update(self):
        if self._bar is None:
            return
        s = self._sweep
        self._bar.set_postfix(done=s.n_done, running=len(s.in_flight), failed=s.n_failed, refresh=False)
        resolved = s.n_done + s.n_failed
        self._bar.update(resolved - self._shown)
        self._shown = resolved

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self.update()
            self._bar.close()


# ----------------------------------------------------------------------------- backends
class _SerialBackend:
    """Runs each config in this process, at once, under the workers' thread cap."""

    capacity = 1

    def __init__(self, fn, threads, fail_fast):
        self._fn, self._threads, self._fail_fast, self._done = fn, threads, fail_fast, []

    def submit(self, tag, configs):
        with _serial_threads(self._threads):
            self._done.append((tag, _run_task(self._fn, configs, self._fail_fast)))

    def wait(self, timeout):
        out, self._done = self._done, []
        return out

    def close(self, abort):
        pass


class _FuturesBackend:
    """Any executor with ``submit``: concurrent.futures pools, a Dask ``ClientExecutor``, ..."""

    def __init__(self, executor, task, fn, capacity, fail_fast, extra=()):
        self._ex, self._task, self._fn, self._extra = executor, task, fn, (fail_fast, *extra)
        self.capacity, self._fail_fast = capacity, fail_fast
        self._futures = {}

    def submit(self, tag, configs):
        self._futures[self._ex.submit(self._task, self._fn, configs, *self._extra)] = tag

    def wait(self, timeout):
        if not self._futures:
            return []
        futs = list(self._futures)
        if all(isinstance(f, _cf.Future) for f in futs):
            done, _ = _cf.wait(futs, timeout=timeout, return_when=_cf.FIRST_COMPLETED)
        else:  # a future type concurrent.futures cannot wait on: collect in submission order
            done = futs[:1]
        out = []
        for fut in done:
            tag = self._futures.pop(fut)
            try:
                outcome = fut.result()
            except Exception as exc:  # raised by the executor (pickling, a dead worker, KilledWorker)
                outcome = [_failure(exc, self._fail_fast)] * len(tag)
            out.append((tag, outcome))
        return out

    def close(self, abort):
        for fut in self._futures:
            fut.cancel()


# ----------------------------------------------------------------------------- local workers (parent side)
_WORKER_BOOT = ("import sys, json; sys.path[:] = json.loads(sys.argv[1]); "
                "from sims.sweep import _worker_main; _worker_main(int(sys.argv[2]))")


@dataclasses.dataclass(eq=False)
class _Worker:
    proc: subprocess.Popen
    ready: bool = False
    task: tuple | None = None


def _main_spec(fn_bytes):
    """How a worker imports the parent's main module to unpickle ``fn`` (None if ``fn`` does not need it)."""
    if b"__main__" not in fn_bytes:
        return None
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return ("module", spec.name)
    path = getattr(main, "__file__", None)
    if path is None:
        raise ValueError("fn must be importable by the local worker processes, but it is defined in an interactive "
                         "session's __main__; define it in a module or a script file, or use executor='serial'")
    return ("path", os.path.abspath(path))


def _exit_text(rc) -> str:
    if rc is not None and rc < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-rc).name}"
    return f"exit code {rc}"


def _read_worker(w, events):
    """Reader thread: forward a worker's messages, then its exit code, to the parent's event queue."""
    try:
        while True:
            kind, payload = pickle.load(w.proc.stdout)
            events.put((w, kind, payload))
    except Exception:  # EOF (the worker exited) or a message that cannot be read
        with contextlib.suppress(OSError):
            w.proc.kill()
    events.put((w, "exit", w.proc.wait()))


def _send(w, message):
    try:
        pickle.dump(message, w.proc.stdin)
        w.proc.stdin.flush()
    except (BrokenPipeError, OSError, ValueError):  # the worker is gone: its reader reports the exit
        pass


class _LocalWorkers:
    """``n`` worker processes of this machine (``python -c``), each running one config at a time.

    A worker that dies fails only its config and is replaced; a worker exits when the parent dies
    (``PR_SET_PDEATHSIG`` on Linux, a parent-pid watch on POSIX, end of file on its stdin anywhere).
    """

    _MAX_START_FAILURES = 3

    def __init__(self, fn, n_workers, threads, fail_fast):
        fn_bytes = pickle.dumps(fn)
        self.capacity, self._threads = n_workers, threads
        self._hello = {"fn": fn_bytes, "threads": threads, "fail_fast": fail_fast, "main": _main_spec(fn_bytes)}
        self._events, self._backlog, self._workers = queue.Queue(), collections.deque(), []
        self._start_failures = 0
        for _ in range(n_workers):
            self._spawn()

    def _spawn(self):
        env = dict(os.environ, **{var: str(self._threads) for var in THREAD_ENV_VARS})
        path = [os.getcwd() if p == "" else p for p in sys.path]
        proc = subprocess.Popen([sys.executable, "-c", _WORKER_BOOT, json.dumps(path), str(os.getpid())],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        w = _Worker(proc)
        threading.Thread(target=_read_worker, args=(w, self._events), daemon=True).start()
        _send(w, self._hello)
        self._workers.append(w)

    def submit(self, tag, configs):
        self._backlog.append((tag, configs))
        self._dispatch()

    def _dispatch(self):
        for w in self._workers:
            if not self._backlog:
                return
            if w.ready and w.task is None:
                w.task = self._backlog.popleft()
                _send(w, w.task)

    def wait(self, timeout):
        try:
            events = [self._events.get(timeout=timeout)]
        except queue.Empty:
            return []
        with contextlib.suppress(queue.Empty):
            while True:
                events.append(self._events.get_nowait())
        out = []
        for w, kind, payload in events:
            self._handle(w, kind, payload, out)
        self._dispatch()
        return out

    def _handle(self, w, kind, payload, out):
        if kind == "ready":
            w.ready, self._start_failures = True, 0
        elif kind == "startup_error":
            raise RuntimeError(f"the sweep's worker processes could not start: {payload}")
        elif kind == "result":
            w.task = None
            out.append(payload)
        elif kind == "exit":
            self._workers.remove(w)
            if w.task is not None:
                dead = _failure(RuntimeError(f"the worker process (pid {w.proc.pid}) died with "
                                             f"{_exit_text(payload)} while running this config"), False)
                out.append((w.task[0], [dead] * len(w.task[0])))
            elif not w.ready:
                self._start_failures += 1
                if self._start_failures >= self._MAX_START_FAILURES:
                    raise RuntimeError(f"the sweep's worker processes keep dying at start (last: "
                                       f"{_exit_text(payload)}); their stderr says why")
            self._spawn()

    def close(self, abort):
        for w in self._workers:
            if abort or not w.ready:
                with contextlib.suppress(OSError):
                    w.proc.kill()
            with contextlib.suppress(OSError):
                w.proc.stdin.close()  # end of file: an idle worker exits
        for w in self._workers:
            try:
                w.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
        self._workers = []


# ----------------------------------------------------------------------------- local workers (worker side)
def _worker_main(parent_pid):
    """Entry point of a local worker process (``python -c``; see :class:`_LocalWorkers`)."""
    out = os.fdopen(os.dup(1), "wb")
    with contextlib.suppress(OSError):
        os.dup2(2, 1)  # what fn prints goes to stderr, not into the message channel
    _die_with_parent(parent_pid)
    tasks = queue.Queue()
    threading.Thread(target=_read_parent, args=(sys.stdin.buffer, tasks), daemon=True).start()
    hello = tasks.get()
    try:
        fn = _worker_setup(hello)
    except BaseException as exc:
        _reply(out, "startup_error", _error_text(exc) if isinstance(exc, RuntimeError) else traceback.format_exc())
        return
    _reply(out, "ready", os.getpid())
    while True:
        tag, configs = tasks.get()
        _reply(out, "result", (tag, [_picklable(o) for o in _run_task(fn, configs, hello["fail_fast"])]))


def _read_parent(stream, tasks):
    try:
        while True:
            tasks.put(pickle.load(stream))
    except Exception:  # end of file: the parent closed the pipe or died
        os._exit(0)


def _reply(out, kind, payload):
    pickle.dump((kind, payload), out)
    out.flush()


def _picklable(outcome):
    exc = outcome["exc"]
    if exc is not None:
        try:
            pickle.loads(pickle.dumps(exc))
        except Exception:
            outcome = {**outcome, "exc": RuntimeError(outcome["error"])}
    return outcome


def _worker_setup(hello):
    global _IMPORTING_MAIN
    limit_threads(hello["threads"])
    if hello["main"] is not None:
        import runpy
        import types
        kind, name = hello["main"]
        _IMPORTING_MAIN = name
        try:
            ns = (runpy.run_module(name, run_name="__mp_main__", alter_sys=False) if kind == "module"
                  else runpy.run_path(name, run_name="__mp_main__"))
        finally:
            _IMPORTING_MAIN = None
        main = types.ModuleType("__mp_main__")
        main.__dict__.update(ns)
        sys.modules["__main__"] = sys.modules["__mp_main__"] = main
    return pickle.loads(hello["fn"])


def _die_with_parent(parent_pid):
    """Make this worker exit when the parent does, even if the parent is killed with SIGKILL."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.name == "posix":
        if os.getppid() != parent_pid:  # the parent died before prctl
            os._exit(1)
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()


def _watch_parent(parent_pid, interval=0.5):
    while True:
        time.sleep(interval)
        if os.getppid() != parent_pid:
            os._exit(1)


# ----------------------------------------------------------------------------- Dask
def _thread_limit_plugin(n_threads):
    from distributed.diagnostics.plugin import WorkerPlugin

    class ThreadLimits(WorkerPlugin):
        """Runs :func:`limit_threads` in every worker, including one that joins or restarts later."""

        name = _PLUGIN_NAME

        def __init__(self, n):
            self.n = n

        def setup(self, worker):
            limit_threads(self.n)

    return ThreadLimits(n_threads)


def _dask_backend(executor, fn, threads, fail_fast):
    client = executor if hasattr(executor, "register_plugin") else getattr(executor, "_client", None)
    if client is None or not hasattr(client, "register_plugin"):
        raise ValueError(f"executor must be a distributed.Client or its get_executor(), got {type(executor).__name__}")
    client.register_plugin(_thread_limit_plugin(threads), name=_PLUGIN_NAME)
    capacity = max(1, sum(client.nthreads().values()))
    return _FuturesBackend(client.get_executor(pure=False), _run_pinned, fn, capacity, fail_fast, extra=(threads,))


@contextlib.contextmanager
def dask_client(address="local", *, n_workers=None, threads_per_worker=1):
    """A ``distributed.Client`` for :func:`run_sweep`: a new ``LocalCluster`` on loopback, or a running scheduler.

    ``with dask_client("local", n_workers=4) as client: run_sweep(fn, configs, executor=client)``.
    The local cluster (worker processes, ``threads_per_worker`` task threads each, scheduler and
    HTTP server on free ports of 127.0.0.1 only) is closed on exit; a remote scheduler is only disconnected.
    Needs ``pip install "dpsparse[dask]"``.

    Parameters
    ----------
    address : str
        ``"local"``, or a scheduler address ``"tcp://HOST:PORT"`` (or ``tls://``).
    n_workers : int >= 1, optional
        Worker processes of the local cluster (default ``os.cpu_count()``); ``"local"`` only.
    threads_per_worker : int >= 1
        Task threads per worker of the local cluster (their BLAS threads are set by ``run_sweep``).

    Raises
    ------
    ValueError
        ``address`` neither ``"local"`` nor a ``tcp://`` / ``tls://`` address; ``n_workers`` with a
        remote address, or ``n_workers`` / ``threads_per_worker`` not an integer >= 1.
    ImportError
        ``distributed`` is not installed.
    """
    if not isinstance(address, str) or not (address == "local" or address.startswith(("tcp://", "tls://"))):
        raise ValueError(f"address must be 'local' or a scheduler address 'tcp://HOST:PORT', got {address!r}")
    threads = _check_int("threads_per_worker", threads_per_worker, low=1)
    if address != "local" and n_workers is not None:
        raise ValueError(f"n_workers applies to address='local' only, got n_workers={n_workers!r} with {address!r}")
    try:
        import distributed
    except ImportError:
        raise ImportError("the Dask executor needs distributed: pip install \"dpsparse[dask]\"") from None
    if address != "local":
        with distributed.Client(address) as client:
            yield client
        return
    n = (os.cpu_count() or 1) if n_workers is None else _check_int("n_workers", n_workers, low=1)
    with distributed.LocalCluster(n_workers=n, threads_per_worker=threads, processes=True, host="127.0.0.1",
                                  dashboard_address="127.0.0.1:0") as cluster, distributed.Client(cluster) as client:
        yield client


# ----------------------------------------------------------------------------- run_sweep
def _backend(plan, fn, n_todo):
    if plan.kind == "serial":
        return _SerialBackend(fn, plan.threads, plan.fail_fast)
    if plan.kind == "local":
        return _LocalWorkers(fn, min(plan.n_workers, n_todo), plan.threads, plan.fail_fast)
    if plan.kind == "dask":
        return _dask_backend(plan.executor, fn, plan.threads, plan.fail_fast)
    capacity = getattr(plan.executor, "_max_workers", None) or (os.cpu_count() or 1)
    return _FuturesBackend(plan.executor, _run_task, fn, capacity, plan.fail_fast)


def _drive(sweep, backend, bar):
    """Claim what is claimable up to the backend's capacity, run it, record outcomes, until all are resolved."""
    poll = min(0.2, sweep.plan.lease_seconds / 5)
    while True:
        claimable = sweep.refresh()
        bar.update()
        if sweep.complete():
            return
        for tag in sweep.claim(claimable, backend.capacity - sweep.tasks):
            backend.submit(tag, [sweep.configs[i] for i in tag])
        if not sweep.in_flight:  # everything left is leased by other sweeps: wait for them
            time.sleep(poll)
            continue
        for tag, outcomes in backend.wait(poll):
            sweep.tasks -= 1
            for i, outcome in zip(tag, outcomes):
                sweep.record(i, outcome)
            for outcome in outcomes:
                if sweep.plan.fail_fast and outcome["error"] is not None:
                    raise outcome["exc"] if outcome["exc"] is not None else RuntimeError(outcome["error"])


@contextlib.contextmanager
def _opened_store(store):
    if store is not None:
        with _store.Store(store) as st:
            yield st
        return
    with tempfile.TemporaryDirectory(prefix="sweep-") as tmp, _store.Store(os.path.join(tmp, "sweep.db")) as st:
        yield st


def _execute(sweep, plan, fn):
    """Run the unresolved configs of ``sweep`` on the plan's backend; give back the claims on any exception."""
    n_todo = len(sweep.configs) - sweep.n_done - sweep.n_failed
    backend = None
    try:
        with _Heartbeat(sweep.store.path, sweep.owner, plan.lease_seconds), _Progress(plan.progress, sweep) as bar:
            backend = _backend(plan, fn, n_todo)
            _drive(sweep, backend, bar)
    except BaseException as exc:
        if backend is not None:
            backend.close(abort=True)
        sweep.release(f"released by its sweep on {type(exc).__name__}")
        raise
    backend.close(abort=False)


def run_sweep(fn, configs, *, executor=None, store=None, n_workers=None, threads_per_worker=1, fail_fast=False,
              max_attempts=2, lease_seconds=30.0, progress=None) -> list[dict]:
    """Call ``fn(**config)`` for every config not yet done in the store; return one record per config, in order.

    Each record is ``{**config, **metrics}`` (or ``{**config, "error": "Type: message"}`` for a config
    whose attempts all failed), JSON-normalised and read back from the store (module docstring).

    Parameters
    ----------
    fn : callable
        ``fn(**config) -> dict``. For local workers it must be picklable: a function of a module or
        of a script file, not a lambda or closure.
    configs : iterable of dict
        Distinct configs (distinct :func:`config_key`), e.g. from :func:`grid`.
    executor : None, "serial", distributed.Client or concurrent.futures.Executor-like
        ``None``: ``n_workers`` local worker processes (fresh interpreters; one config at a time
        each; one that dies fails only its config and is replaced; none outlives the sweep).
        ``"serial"``: in this process, one config after another. A ``distributed.Client`` (e.g. from
        :func:`dask_client`) or its ``get_executor()``: the Dask cluster, whose workers, a restarted
        one included, get the thread cap through a worker plugin. Any other object with
        ``submit``: used as it is (e.g. a ``ThreadPoolExecutor``); its owner sets its threads.
        The caller owns a given executor (it is not shut down here).
    store : str or path-like, optional
        The SQLite store (:mod:`sims.store`), created if missing; several sweeps may share it.
        Default: a temporary store, deleted on return.
    n_workers : int >= 1, optional
        Local worker processes (``executor=None`` only); default ``os.cpu_count()``, and never more
        than the configs to run.
    threads_per_worker : int >= 1
        BLAS / OpenMP / Numba threads of each run (local workers, serial runs and Dask workers).
    fail_fast : bool
        True: the first failure is recorded and re-raised (``fn``'s own exception; a local worker's
        loses its traceback), the other runs in flight are stopped and given back as ``pending``.
    max_attempts : int >= 1
        Attempts per config in this call: a config whose run raised, or whose worker died, is run
        again until it succeeds or has failed ``max_attempts`` times. Every attempt is a row of the
        store's ``attempts`` table.
    lease_seconds : float >= 0.1
        Lease of a claimed config, renewed every ``lease_seconds / 4`` while it runs. After a
        ``kill -9`` of a sweep, another sweep takes its configs over once their leases expire.
    progress : None or bool
        A tqdm bar on stderr (runs done, running, failed, time left); ``None``: when stderr is a terminal.

    Returns
    -------
    list of dict
        One record per config, in the order of ``configs``.

    Raises
    ------
    ValueError
        ``fn`` not callable (or not picklable for local workers); ``configs`` empty, not dicts, with
        non-string or reserved keys, non-JSON values or duplicates; ``executor`` an unknown string or
        without ``submit``; ``n_workers``, ``threads_per_worker`` or ``max_attempts`` not an integer
        >= 1, or given with an executor they do not apply to; ``lease_seconds`` < 0.1; ``store`` not a
        file path in an existing directory.
    RuntimeError
        The local workers could not start (e.g. a script without an ``if __name__ == "__main__":``
        guard that defines ``fn`` and starts the sweep at import time).
    Exception
        With ``fail_fast=True``, the first failure.
    """
    _refuse_inside_worker_import()
    plan = _plan(fn, executor, n_workers, threads_per_worker, fail_fast, max_attempts, lease_seconds, progress)
    configs = _check_configs(configs)
    with _opened_store(_check_store(store)) as st:
        sweep = _Sweep(configs, st.register(configs), st, plan, _stack_keys(fn, configs))
        sweep.refresh()
        if not sweep.complete():
            _execute(sweep, plan, fn)
    return sweep.results
