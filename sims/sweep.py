"""Grids of training runs on a local process pool, a Dask cluster or in-process, with a results store.

A sweep is a list of configs (plain dicts of keyword arguments, usually from :func:`grid`) and a
function ``fn(**config) -> dict`` of JSON-serialisable metrics. :func:`run_sweep` calls ``fn`` once
per config and returns one record ``{**config, **fn_output}`` per config, in config order.

Reproducibility: ``fn`` must take all its randomness from its config (e.g. a ``seed`` axis passed to
``sims.train.train(random_state=seed)``). The simulator's results do not depend on the thread count
(see the randomness notes of :mod:`sims.train`), so the same configs give the same records bit for
bit whatever the executor and the number of workers.

Records are JSON-normalised (``json.loads(json.dumps(record))`` with NumPy scalars and arrays turned
into Python numbers and lists; tuples become lists), so a record read back from the store equals the
record of a fresh run. ``float`` and ``int`` values of a config are distinct (``1.0`` is not ``1``).

Store (``store=path``): a JSON-lines file, one finished record per line, appended (and flushed to
disk) as soon as the run finishes, so an interrupted sweep loses at most the runs in flight. Each
line carries the reserved field ``"_config_keys"`` (the names of the config entries) so that the
config part of a stored record can be recovered; :func:`load_results` strips it. Re-running a sweep
with the same store skips every config that already has a successful record (matched on the
canonical JSON key of the config: sorted keys, no whitespace); configs whose stored record is an
error are run again.
"""
from __future__ import annotations

import concurrent.futures as _cf
import dataclasses
import itertools
import json
import multiprocessing
import os
import pickle
import sys
import warnings

# NOTE: only the standard library at module level (dptheory.validation, which imports NumPy, is imported
# inside the functions): a spawned worker imports this module to unpickle its initializer, and the
# thread-count environment variables must be set before NumPy's BLAS or Numba is loaded there.


def _check_int(name, value, **kw):
    from dptheory.validation import check_int
    return check_int(name, value, **kw)


def _check_choice(name, value, choices):
    from dptheory.validation import check_choice
    return check_choice(name, value, choices)

__all__ = ["grid", "run_sweep", "load_results", "config_key", "limit_threads", "THREAD_ENV_VARS",
           "RESERVED_KEYS"]

#: Environment variables that cap the thread pools of BLAS / OpenMP libraries and of Numba.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                   "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "NUMBA_NUM_THREADS")

#: Keys that neither a config nor an ``fn`` output may use.
RESERVED_KEYS = ("error", "_config_keys")

_EXECUTORS = ("serial",)


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
        No axes; an axis that is a string, a mapping, not iterable, empty, or has repeated values.
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
        if name in RESERVED_KEYS:
            raise ValueError(f"axis names must not be one of {list(RESERVED_KEYS)} (reserved), got {name!r}")
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


# ----------------------------------------------------------------------------- JSON helpers
def _to_json_default(obj):
    """``json.dumps`` hook: NumPy scalars -> Python numbers, arrays -> nested lists, dataclass
    records (e.g. a :mod:`dptheory.events` event) -> ``{"type": class name, field: value, ...}``,
    sets refused."""
    if "numpy" in sys.modules:
        np = sys.modules["numpy"]
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    if isinstance(obj, range):
        return list(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"type": type(obj).__name__, **{f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}}
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _normalise(obj):
    """JSON round trip: the form a record has after being written to and read from the store."""
    return json.loads(json.dumps(obj, default=_to_json_default, allow_nan=True))


def config_key(config: dict) -> str:
    """Canonical JSON key of a config: ``json.dumps`` of its normalised form, sorted keys, no spaces.

    Two configs have the same key exactly when their JSON-normalised forms are equal (so a tuple and
    a list with the same items match; ``1`` and ``1.0`` do not).

    Raises
    ------
    ValueError
        ``config`` is not a dict with string keys, or a value is not JSON-serialisable.
    """
    if not isinstance(config, dict):
        raise ValueError(f"config must be a dict, got {type(config).__name__}")
    bad = [k for k in config if not isinstance(k, str)]
    if bad:
        raise ValueError(f"config keys must be strings, got {bad!r}")
    try:
        return json.dumps(config, default=_to_json_default, allow_nan=True, sort_keys=True,
                          separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"config values must be JSON-serialisable, got {config!r} ({exc})") from None


# ----------------------------------------------------------------------------- threads
def limit_threads(n_threads: int = 1) -> None:
    """Cap this process's BLAS / OpenMP / Numba thread pools at ``n_threads``.

    Sets every variable of :data:`THREAD_ENV_VARS` (effective for libraries loaded afterwards);
    for libraries already loaded, calls ``threadpoolctl.threadpool_limits(n_threads)`` when
    ``threadpoolctl`` is importable (it is not a dependency; scikit-learn installs it) and
    ``numba.set_num_threads`` when Numba is already imported (Numba's count is per calling
    thread). :func:`run_sweep` runs it as the initializer of each local worker process; on a Dask
    cluster run it on every worker with ``client.run(limit_threads, 1)``.

    Raises
    ------
    ValueError
        ``n_threads`` not an integer >= 1.
    """
    n = _check_int("n_threads", n_threads, low=1)
    for var in THREAD_ENV_VARS:
        os.environ[var] = str(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        pass
    else:
        threadpool_limits(limits=n)
    if "numba" in sys.modules:
        numba = sys.modules["numba"]
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


# ----------------------------------------------------------------------------- one run
def _run_one(fn, config, fail_fast):
    """Call ``fn(**config)`` and return its JSON-normalised output dict, or ``{"error": ...}``.

    Runs in the worker. With ``fail_fast`` the exception propagates (to the caller's future).
    """
    try:
        out = fn(**config)
        if not isinstance(out, dict):
            raise TypeError(f"fn must return a dict of metrics, got {type(out).__name__}")
        bad = [k for k in out if not isinstance(k, str)]
        if bad:
            raise TypeError(f"fn output keys must be strings, got {bad!r}")
        clash = sorted(set(out) & (set(config) | set(RESERVED_KEYS)))
        if clash:
            raise ValueError(f"fn output keys {clash} clash with config keys or reserved keys {list(RESERVED_KEYS)}")
        return _normalise(out)
    except Exception as exc:
        if fail_fast:
            raise
        return {"error": _error_text(exc)}


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# ----------------------------------------------------------------------------- store
def _open_store_for_append(path):
    """Open the store for appending; if an interrupted write left a partial last line, end it."""
    f = open(path, "a+b")
    f.seek(0, os.SEEK_END)
    if f.tell() > 0:
        f.seek(-1, os.SEEK_END)
        if f.read(1) != b"\n":
            f.write(b"\n")
    return f


def _read_store(path) -> list[dict]:
    """Stored lines as dicts (with ``_config_keys``); undecodable lines are skipped with a warning."""
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                warnings.warn(f"{os.fspath(path)}:{lineno}: skipping a line that is not valid JSON "
                              "(probably a write cut off by an interruption)", RuntimeWarning, stacklevel=3)
                continue
            if not isinstance(row, dict) or not isinstance(row.get("_config_keys"), list):
                warnings.warn(f"{os.fspath(path)}:{lineno}: skipping a line that is not a sweep record",
                              RuntimeWarning, stacklevel=3)
                continue
            rows.append(row)
    return rows


def _stored_key(row: dict) -> str:
    return config_key({k: row.get(k) for k in row["_config_keys"]})


def _strip(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "_config_keys"}


def load_results(path) -> list[dict]:
    """Records stored by :func:`run_sweep` in the JSON-lines file ``path``, in file (completion) order.

    Every line is one record ``{**config, **fn_output}`` (or ``{**config, "error": "Type: message"}``);
    the reserved ``"_config_keys"`` field is removed. A re-run sweep appends, so a config that first
    failed and then succeeded appears twice. Lines that are not valid JSON (a write cut off by an
    interruption) are skipped with a ``RuntimeWarning``.

    Raises
    ------
    ValueError
        ``path`` does not exist.
    """
    if not os.path.isfile(path):
        raise ValueError(f"path must be an existing results file, got {os.fspath(path)!r}")
    return [_strip(row) for row in _read_store(path)]


# ----------------------------------------------------------------------------- sweep
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


def _local_pool(n_workers, threads_per_worker):
    # "spawn", not "fork": forking a process whose OpenMP / Numba thread pool is running is unsafe
    # (GNU OpenMP is not fork-safe), and a fresh interpreter lets limit_threads set the environment
    # before NumPy and Numba load.
    return _cf.ProcessPoolExecutor(max_workers=n_workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=limit_threads, initargs=(threads_per_worker,))


def run_sweep(fn, configs, *, executor=None, store=None, n_workers=None, threads_per_worker=1,
              fail_fast=False) -> list[dict]:
    """Call ``fn(**config)`` for every config and return one record per config, in config order.

    Each record is ``{**config, **fn(**config)}``, JSON-normalised (module docstring); ``fn`` returns
    a dict of JSON-serialisable metrics (NumPy scalars and arrays are accepted and converted) whose
    keys differ from the config's and from :data:`RESERVED_KEYS`. Records come back in config order
    whatever the completion order. With the same configs, and ``fn`` taking its randomness from its
    config (seeds), the records are identical bit for bit for every executor and worker count.

    Parameters
    ----------
    fn : callable
        ``fn(**config) -> dict``. For process pools (local or Dask) it must be picklable: a
        module-level function, not a lambda or closure.
    configs : iterable of dict
        Distinct configs (distinct canonical keys, :func:`config_key`), e.g. from :func:`grid`.
    executor : None, "serial" or concurrent.futures.Executor-like
        ``None``: a local ``concurrent.futures.ProcessPoolExecutor`` (``spawn`` start method) with
        ``n_workers`` processes, each initialised by :func:`limit_threads` (``threads_per_worker``
        BLAS / OpenMP / Numba threads, 1 by default: with one run per core, threads inside a run
        would only oversubscribe the cores). ``"serial"``: in this process, one after another
        (debugging; exceptions keep their tracebacks). Any object with the ``Executor.submit``
        interface: e.g. ``concurrent.futures.ThreadPoolExecutor``, or a Dask cluster through
        ``distributed.Client(...).get_executor()`` (``pip install dpsparse[dask]``; Dask is imported
        only by the caller). The caller owns such an executor (it is not shut down here) and its
        workers' threads: for Dask start workers with ``threads_per_worker=1`` and run
        ``client.run(limit_threads, 1)`` once.
    store : str or path-like, optional
        JSON-lines results file. Each finished record is appended (flushed and fsync'ed) as it
        completes; configs that already have a successful record in the file are not run again
        (resume after an interruption) and their stored record is returned. Only this process
        writes the file (workers return their results to it), so it is safe with any executor.
    n_workers : int >= 1, optional
        Processes of the local pool (``executor=None`` only); default ``os.cpu_count()``, and never
        more than the number of configs to run.
    threads_per_worker : int >= 1
        Thread cap of each local worker process (``executor=None`` only).
    fail_fast : bool
        False (default): an exception raised by one config is recorded as
        ``{**config, "error": "Type: message"}`` and the other configs still run. True: the first
        exception met (in config order for "serial", otherwise in completion order) is re-raised,
        configs not yet started are cancelled, and records already finished stay in the store.

    Returns
    -------
    list of dict
        One record per config, in the order of ``configs``.

    Raises
    ------
    ValueError
        ``fn`` not callable (or not picklable with the local process pool); ``configs`` empty, not
        dicts, with non-string keys, non-JSON values, reserved keys or duplicates; ``executor`` an
        unknown string or an object without ``submit``; ``n_workers`` / ``threads_per_worker`` not an
        integer >= 1 or given with another executor; ``store`` not a path in an existing directory.
    Exception
        With ``fail_fast=True``, the first exception raised by ``fn``.
    """
    # ---- validation
    if not callable(fn):
        raise ValueError(f"fn must be callable (fn(**config) -> dict), got {type(fn).__name__}")
    if isinstance(configs, dict) or not hasattr(configs, "__iter__"):
        raise ValueError(f"configs must be a list of dicts, got {type(configs).__name__}")
    configs = list(configs)
    if not configs:
        raise ValueError("configs must contain at least 1 config, got 0")
    keys = []
    for i, cfg in enumerate(configs):
        if not isinstance(cfg, dict):
            raise ValueError(f"configs[{i}] must be a dict, got {type(cfg).__name__}")
        reserved = sorted(set(cfg) & set(RESERVED_KEYS))
        if reserved:
            raise ValueError(f"configs[{i}] must not use the reserved keys {list(RESERVED_KEYS)}, got {reserved}")
        keys.append(config_key(cfg))
    first = {}
    for i, k in enumerate(keys):
        if k in first:
            raise ValueError(f"configs must be distinct, but configs[{i}] repeats configs[{first[k]}]: {configs[i]!r}")
        first[k] = i
    if executor is not None and not (isinstance(executor, str) or hasattr(executor, "submit")):
        raise ValueError(f"executor must be None, 'serial' or an object with a submit() method (a "
                         f"concurrent.futures.Executor), got {type(executor).__name__}")
    if isinstance(executor, str):
        _check_choice("executor", executor, _EXECUTORS)
    if executor is None:
        n_workers = (os.cpu_count() or 1) if n_workers is None else _check_int("n_workers", n_workers, low=1)
        threads_per_worker = _check_int("threads_per_worker", threads_per_worker, low=1)
        try:
            pickle.dumps(fn)
        except Exception as exc:
            raise ValueError(f"fn must be picklable for the local process pool (a module-level function, not a "
                             f"lambda or closure); use executor='serial' otherwise ({_error_text(exc)})") from None
    else:
        if n_workers is not None:
            raise ValueError(f"n_workers applies to the local process pool only (executor=None), got "
                             f"n_workers={n_workers!r} with executor={executor!r}")
        if threads_per_worker != 1:
            raise ValueError("threads_per_worker applies to the local process pool only (executor=None), got "
                             f"threads_per_worker={threads_per_worker!r} with executor={executor!r}")
    store = _check_store(store)
    fail_fast = bool(fail_fast)

    # ---- resume
    results = [None] * len(configs)
    if store is not None:
        done = {}
        for row in _read_store(store):
            if "error" not in row:
                done[_stored_key(row)] = _strip(row)
        for i, k in enumerate(keys):
            if k in done:
                results[i] = done[k]
    todo = [i for i in range(len(configs)) if results[i] is None]
    if not todo:
        return results

    fh = _open_store_for_append(store) if store is not None else None

    def finish(i, out):
        rec = _normalise({**configs[i], **out})
        results[i] = rec
        if fh is not None:
            line = json.dumps({**rec, "_config_keys": list(configs[i])}, allow_nan=True, separators=(",", ":"))
            fh.write(line.encode("utf-8") + b"\n")
            fh.flush()
            os.fsync(fh.fileno())

    try:
        if executor == "serial":
            for i in todo:
                finish(i, _run_one(fn, configs[i], fail_fast))
        else:
            own = executor is None
            ex = _local_pool(min(n_workers, len(todo)), threads_per_worker) if own else executor
            try:
                _run_on_executor(ex, fn, configs, todo, fail_fast, finish)
            finally:
                if own:
                    ex.shutdown(wait=True, cancel_futures=True)
    finally:
        if fh is not None:
            fh.close()
    return results


def _run_on_executor(ex, fn, configs, todo, fail_fast, finish):
    futures = {}
    try:
        for i in todo:
            futures[ex.submit(_run_one, fn, configs[i], fail_fast)] = i
        if all(isinstance(f, _cf.Future) for f in futures):
            ordered = _cf.as_completed(futures)  # record each run as soon as it finishes
        else:  # a future type concurrent.futures cannot wait on: collect in submission order
            ordered = list(futures)
        for fut in ordered:
            i = futures[fut]
            try:
                out = fut.result()
            except Exception as exc:  # raised by fn (fail_fast) or by the executor (pickling, dead worker)
                if fail_fast:
                    raise
                out = {"error": _error_text(exc)}
            finish(i, out)
    except BaseException:
        for fut in futures:
            fut.cancel()
        raise
