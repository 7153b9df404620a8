"""Tests of sims.sweep: grid order, executor-independent records, error capture, the SQLite store, resume.

No statistical tests here: every assertion is exact. The functions run by the sweeps are defined at
module level so that the spawned worker processes can unpickle them.
"""
import concurrent.futures as cf
import json
import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from sims import store, sweep
from sims.data import make_logistic
from sims.models import logistic_regression
from sims.store import load
from sims.train import train


# ----------------------------------------------------------------------------- functions swept
def train_logistic(lr, seed, noise_multiplier):
    """A few DP-SGD steps of logistic regression; metrics include the final parameter vector."""
    ds = make_logistic(120, 4, label_noise=0.1, random_state=7)
    res = train(logistic_regression(4), ds, steps=6, sampling_rate=0.2, lr=lr, clip_norm=1.0,
                noise_multiplier=noise_multiplier, record_every=3, random_state=seed)
    return {"params": res.params, "train_loss": res.history["train_loss"], "epsilon": res.privacy["epsilon"],
            "steps_done": np.int64(res.steps_done)}


def square_or_fail(x, fail_on=()):
    if x in fail_on:
        raise ValueError(f"bad x={x}")
    return {"y": x * x}


def fail_if_marker(x, marker):
    """Fails on odd x while the file ``marker`` exists (a stand-in for an interrupted first run)."""
    if x % 2 and os.path.exists(marker):
        raise RuntimeError("interrupted")
    return {"y": 10 * x}


def thread_info(i):
    import numba
    import threadpoolctl
    blas = [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
    return {"numba_threads": numba.get_num_threads(), "blas_threads": blas,
            "omp_env": os.environ.get("OMP_NUM_THREADS")}


def returns_list(x):
    return [x]


def clashing_output(x):
    return {"x": 2 * x}


# ----------------------------------------------------------------------------- grid
def test_grid_order_and_size():
    g = sweep.grid(lr=[0.1, 0.5], seed=range(3), keep=(0.1, 1.0))
    assert len(g) == 2 * 3 * 2
    expected = [{"lr": a, "seed": b, "keep": c} for a in (0.1, 0.5) for b in range(3) for c in (0.1, 1.0)]
    assert g == expected
    assert all(list(c) == ["lr", "seed", "keep"] for c in g)  # key order = axis order
    assert sweep.grid(a=[1]) == [{"a": 1}]
    # axis order decides which varies fastest
    assert sweep.grid(b=[1, 2], a=[3, 4])[1] == {"b": 1, "a": 4}


@pytest.mark.parametrize("kwargs, match", [
    ({}, "axes"),
    ({"lr": []}, "lr"),
    ({"lr": "abc"}, "lr"),
    ({"lr": 0.1}, "lr"),
    ({"lr": {"a": 1}}, "lr"),
    ({"seed": [1, 1]}, "seed"),
    ({"error": [1]}, "reserved"),
])
def test_grid_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sweep.grid(**kwargs)


# ----------------------------------------------------------------------------- determinism across executors
CONFIGS = sweep.grid(lr=[0.05, 0.5], seed=[0, 1], noise_multiplier=[1.0])


@pytest.fixture(scope="module")
def serial_records():
    return sweep.run_sweep(train_logistic, CONFIGS, executor="serial")


def test_serial_records_match_direct_training(serial_records):
    assert [{k: r[k] for k in c} for r, c in zip(serial_records, CONFIGS)] == CONFIGS
    for rec, cfg in zip(serial_records, CONFIGS):
        direct = train(logistic_regression(4), make_logistic(120, 4, label_noise=0.1, random_state=7), steps=6,
                       sampling_rate=0.2, lr=cfg["lr"], clip_norm=1.0, noise_multiplier=cfg["noise_multiplier"],
                       record_every=3, random_state=cfg["seed"])
        assert rec["params"] == direct.params.tolist()
        assert rec["steps_done"] == 6 and type(rec["steps_done"]) is int
        assert "error" not in rec
    # the runs really differ between configs (so equality across executors is informative)
    assert len({json.dumps(r["params"]) for r in serial_records}) == len(CONFIGS)


def test_local_workers_and_thread_pool_give_identical_records(serial_records):
    pool = sweep.run_sweep(train_logistic, CONFIGS, n_workers=2)
    with cf.ThreadPoolExecutor(max_workers=2) as ex:
        threaded = sweep.run_sweep(train_logistic, CONFIGS, executor=ex)
    assert pool == serial_records
    assert threaded == serial_records


def test_results_in_config_order_whatever_completion_order():
    # later configs finish first on a thread pool (the first one waits longest)
    configs = [{"x": x} for x in range(6)]
    with cf.ThreadPoolExecutor(max_workers=6) as ex:
        recs = sweep.run_sweep(_sleep_inverse, configs, executor=ex)
    assert [r["x"] for r in recs] == list(range(6))
    assert [r["y"] for r in recs] == [x + 100 for x in range(6)]


def _sleep_inverse(x):
    import time
    time.sleep(0.02 * (6 - x))
    return {"y": x + 100}


def test_local_workers_are_limited_to_one_thread():
    recs = sweep.run_sweep(thread_info, [{"i": 0}], n_workers=1)
    assert "error" not in recs[0], recs[0]
    assert recs[0]["numba_threads"] == 1
    assert recs[0]["omp_env"] == "1"
    assert recs[0]["blas_threads"] and all(n == 1 for n in recs[0]["blas_threads"])


class _EagerResult:
    """A future-like object that is not a concurrent.futures.Future (as some cluster clients return)."""

    def __init__(self, fn, args):
        try:
            self._value, self._exc = fn(*args), None
        except Exception as exc:
            self._value, self._exc = None, exc

    def result(self):
        if self._exc is not None:
            raise self._exc
        return self._value

    def cancel(self):
        return False


class _EagerExecutor:
    """Only ``submit``: runs the call at once (the minimal Executor-like interface run_sweep accepts)."""

    def __init__(self):
        self.calls = 0

    def submit(self, fn, *args):
        self.calls += 1
        return _EagerResult(fn, args)


def test_any_object_with_submit_is_an_executor(serial_records):
    ex = _EagerExecutor()
    assert sweep.run_sweep(train_logistic, CONFIGS, executor=ex) == serial_records
    assert ex.calls == len(CONFIGS)
    recs = sweep.run_sweep(square_or_fail, [{"x": x, "fail_on": [0]} for x in range(2)], executor=ex)
    assert recs[0]["error"] == "ValueError: bad x=0" and recs[1]["y"] == 1
    with pytest.raises(ValueError, match="bad x=0"):
        sweep.run_sweep(square_or_fail, [{"x": 0, "fail_on": [0]}], executor=ex, fail_fast=True)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("executor", ["serial", "threads"])
def test_error_is_recorded_and_others_run(executor):
    configs = [{"x": x, "fail_on": [2]} for x in range(4)]
    if executor == "threads":
        with cf.ThreadPoolExecutor(max_workers=2) as ex:
            recs = sweep.run_sweep(square_or_fail, configs, executor=ex)
    else:
        recs = sweep.run_sweep(square_or_fail, configs, executor=executor)
    assert recs[2] == {"x": 2, "fail_on": [2], "error": "ValueError: bad x=2"}
    assert [r.get("y") for r in recs] == [0, 1, None, 9]


def test_bad_fn_outputs_are_recorded_as_errors():
    recs = sweep.run_sweep(returns_list, [{"x": 1}], executor="serial")
    assert recs[0]["error"].startswith("TypeError:")
    recs = sweep.run_sweep(clashing_output, [{"x": 1}], executor="serial")
    assert recs[0]["error"].startswith("ValueError:") and "clash" in recs[0]["error"]
    recs = sweep.run_sweep(underscore_output, [{"x": 1}], executor="serial")
    assert "clash" in recs[0]["error"] and "_private" in recs[0]["error"]


def underscore_output(x):
    return {"_private": x}


def test_fail_fast_reraises_serial_and_local_workers(tmp_path):
    configs = [{"x": x, "fail_on": [1]} for x in range(3)]
    with pytest.raises(ValueError, match="bad x=1"):
        sweep.run_sweep(square_or_fail, configs, executor="serial", fail_fast=True)
    db = tmp_path / "ff.db"
    with pytest.raises(ValueError, match="bad x=1"):
        sweep.run_sweep(square_or_fail, configs, n_workers=2, fail_fast=True, store=db)
    rows = {r["x"]: r for r in load(db)}
    # the failure is recorded, once (no retry on fail_fast); whatever finished is a valid record
    assert rows[1]["_status"] == "failed" and rows[1]["error"] == "ValueError: bad x=1" and rows[1]["_attempts"] == 1
    assert all(r["y"] == x ** 2 for x, r in rows.items() if r["_status"] == "done")
    assert {r["_status"] for r in rows.values()} <= {"done", "failed", "pending"}


def test_failed_config_is_retried_up_to_max_attempts(tmp_path):
    db = tmp_path / "retry.db"
    recs = sweep.run_sweep(square_or_fail, [{"x": 0, "fail_on": [0]}, {"x": 1, "fail_on": [0]}], executor="serial",
                           store=db, max_attempts=3)
    assert recs[0]["error"] == "ValueError: bad x=0" and recs[1]["y"] == 1
    assert _outcomes(db, {"x": 0, "fail_on": [0]}) == ["failed"] * 3
    assert _outcomes(db, {"x": 1, "fail_on": [0]}) == ["done"]


# ----------------------------------------------------------------------------- store and resume
def _outcomes(db, config):
    with sqlite3.connect(db) as conn:
        return [o for (o,) in conn.execute("SELECT outcome FROM attempts WHERE config_hash = ? ORDER BY attempt",
                                           (sweep.config_hash(config),))]


def _n_attempts(db):
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM attempts").fetchone()[0]


def test_store_resumes_and_runs_only_what_is_missing(tmp_path):
    db = tmp_path / "runs.db"
    configs = sweep.grid(x=range(6))
    first = sweep.run_sweep(square_or_fail, configs[:3], executor="serial", store=db)
    assert _n_attempts(db) == 3
    full = sweep.run_sweep(square_or_fail, configs, executor="serial", store=db)
    assert _n_attempts(db) == 6  # the second sweep called fn only for the 3 missing configs
    assert full[:3] == first
    assert full == [{"x": x, "y": x * x} for x in range(6)]
    # a third sweep calls nothing and returns the stored records
    again = sweep.run_sweep(square_or_fail, configs, executor="serial", store=db)
    assert _n_attempts(db) == 6
    assert again == full
    assert [{"x": r["x"], "y": r["y"]} for r in load(db)] == full


def test_resume_reruns_failed_configs_only(tmp_path):
    db = tmp_path / "runs.db"
    marker = tmp_path / "interrupted"
    marker.write_text("")
    configs = [{"x": x, "marker": str(marker)} for x in range(6)]
    first = sweep.run_sweep(fail_if_marker, configs, executor="serial", store=db, max_attempts=1)
    assert [("error" in r) for r in first] == [x % 2 == 1 for x in range(6)]
    assert _n_attempts(db) == 6
    marker.unlink()
    second = sweep.run_sweep(fail_if_marker, configs, executor="serial", store=db, max_attempts=1)
    assert _n_attempts(db) == 9
    assert [len(_outcomes(db, c)) for c in configs] == [1, 2, 1, 2, 1, 2]
    assert _outcomes(db, configs[1]) == ["failed", "done"]
    assert [r["y"] for r in second] == [10 * x for x in range(6)]


def test_store_records_equal_fresh_records_with_local_workers(tmp_path, serial_records):
    db = tmp_path / "train.db"
    sweep.run_sweep(train_logistic, CONFIGS[:2], executor="serial", store=db)
    resumed = sweep.run_sweep(train_logistic, CONFIGS, n_workers=2, store=db)
    assert resumed == serial_records  # floats survive the JSON round trip exactly
    assert _n_attempts(db) == len(CONFIGS)


def test_config_key_is_canonical():
    assert sweep.config_key({"b": 1, "a": (1, 2)}) == sweep.config_key({"a": [1, 2], "b": 1})
    assert sweep.config_key({"a": np.float64(0.5)}) == sweep.config_key({"a": 0.5})
    assert sweep.config_key({"a": 1}) != sweep.config_key({"a": 1.0})
    assert sweep.config_hash is store.config_hash and sweep.config_key is store.config_key


# ----------------------------------------------------------------------------- validation
def _ok(x):
    return {"y": x}


@pytest.mark.parametrize("kwargs, match", [
    ({"fn": 3}, "fn"),
    ({"configs": []}, "configs"),
    ({"configs": [{"x": 1}, {"x": 1}]}, "distinct"),
    ({"configs": [1]}, r"configs\[0\]"),
    ({"configs": [{"x": object()}]}, "JSON"),
    ({"configs": [{"error": 1}]}, "reserved"),
    ({"configs": [{"_x": 1}]}, "reserved"),
    ({"n_workers": 0}, "n_workers"),
    ({"n_workers": 1.5}, "n_workers"),
    ({"threads_per_worker": 0}, "threads_per_worker"),
    ({"executor": "dask"}, "executor"),
    ({"executor": 42}, "executor"),
    ({"executor": "serial", "n_workers": 2}, "n_workers"),
    ({"executor": cf.ThreadPoolExecutor(1), "threads_per_worker": 2}, "threads_per_worker"),
    ({"fn": lambda x: {"y": x}}, "picklable"),
    ({"store": "/nonexistent-dir-xyz/runs.db"}, "store"),
    ({"max_attempts": 0}, "max_attempts"),
    ({"lease_seconds": 0.0}, "lease_seconds"),
    ({"lease_seconds": float("inf")}, "lease_seconds"),
    ({"progress": "yes"}, "progress"),
])
def test_run_sweep_validation(kwargs, match):
    args = {"fn": _ok, "configs": [{"x": 1}], **kwargs}
    fn, configs = args.pop("fn"), args.pop("configs")
    with pytest.raises(ValueError, match=match):
        sweep.run_sweep(fn, configs, **args)


def test_limit_threads_validation():
    with pytest.raises(ValueError, match="n_threads"):
        sweep.limit_threads(0)


def test_module_does_not_import_dask_or_numpy():
    code = "import sys, sims.sweep; print(sorted(m for m in ('dask', 'distributed', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _privacy_of(sigma):
    from dptheory.events import Gaussian

    return {"event": Gaussian(sigma).poisson_sampled(0.01, 100), "step": Gaussian(sigma)}


def test_privacy_events_are_stored_as_typed_records(tmp_path):
    recs = sweep.run_sweep(_privacy_of, [{"sigma": 2.0}], executor="serial", store=tmp_path / "s.db")
    assert recs[0]["step"] == {"type": "Gaussian", "noise_multiplier": 2.0}
    assert recs[0]["event"] == {"type": "PoissonGaussian", "sampling_rate": 0.01, "noise_multiplier": 2.0,
                                "steps": 100}
    row = load(tmp_path / "s.db")[0]
    assert {k: v for k, v in row.items() if k.startswith("event.")} == {
        "event.type": "PoissonGaussian", "event.sampling_rate": 0.01, "event.noise_multiplier": 2.0, "event.steps": 100}


# ----------------------------------------------------------------------------- progress bar
def test_progress_bar_shows_done_running_failed(capsys):
    sweep.run_sweep(square_or_fail, [{"x": x, "fail_on": [1]} for x in range(3)], executor="serial", progress=True)
    err = capsys.readouterr().err
    assert "3/3" in err and "done=2" in err and "failed=1" in err and "running=" in err


def test_progress_bar_quiet_when_stderr_is_not_a_terminal(capsys):
    sweep.run_sweep(square_or_fail, [{"x": x} for x in range(3)], executor="serial")
    assert capsys.readouterr().err == ""


def test_fn_of_an_interactive_main_is_refused_for_local_workers():
    code = ("from sims.sweep import run_sweep\n"
            "def fn(x):\n    return {'y': x}\n"
            "try:\n    run_sweep(fn, [{'x': 1}], n_workers=1)\n"
            "except ValueError as e:\n    print('ValueError', e)\n"
            "print(run_sweep(fn, [{'x': 1}], executor='serial'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("ValueError fn must be importable") and out.endswith("[{'x': 1, 'y': 1}]\n")


@pytest.mark.parametrize("kwargs, match", [
    ({"address": "localhost:8786"}, "address"),
    ({"address": 3}, "address"),
    ({"address": "tcp://127.0.0.1:1", "n_workers": 2}, "n_workers"),
    ({"threads_per_worker": 0}, "threads_per_worker"),
    ({"n_workers": 0}, "n_workers"),
])
def test_dask_client_validation(kwargs, match):
    with pytest.raises(ValueError, match=match), sweep.dask_client(**kwargs):
        pass
