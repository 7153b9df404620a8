"""Tests of sims.store (schema, WAL, leases, load / where / CSV, histories, hashes) and the fault tests of sweeps.

Fault tests (issue 10): ``kill -9`` of the sweep process mid-run and a rerun; ``kill -9`` of one local
worker; two concurrent sweeps on one store; a Dask ``LocalCluster`` sweep with one worker killed.
After each, every config has exactly one successful attempt and its stored record is equal, byte for
byte, to the record of an uninterrupted serial run. Everything runs on loopback. The functions swept
are module-level so that worker processes (which get the parent's ``sys.path``) can import them.
"""
import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from sims import store, sweep
from sims.store import Outcome, Store

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS_DIR)
TIMEOUT = 120  # seconds any subprocess or wait may take before the test fails (a hang, not a timing assert)


# ----------------------------------------------------------------------------- functions swept
def noisy_sum(x):
    """A small seeded computation (its floats make byte equality of records informative)."""
    if os.environ.get("DPSPARSE_TEST_PIDS"):
        open(os.path.join(os.environ["DPSPARSE_TEST_PIDS"], str(os.getpid())), "w").close()
    time.sleep(float(os.environ.get("DPSPARSE_TEST_DELAY", "0")))
    if "DPSPARSE_TEST_HANG_FROM" in os.environ and x >= int(os.environ["DPSPARSE_TEST_HANG_FROM"]):
        time.sleep(600)  # busy when its sweep is killed: only the parent-death watch can end it
    z = np.random.default_rng(x).standard_normal(5)
    return {"total": float(z.sum()), "z": z}


def die_once(x, marker):
    """SIGKILLs its own process on x == 1 unless ``marker`` exists (then creates it): a worker killed once."""
    if x == 1 and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return {"y": float(np.sqrt(x + 0.5))}


_MET_PEER = False


def rendezvous(x):
    """On its process's first call, waits until two sweeps hold leases in the store (forces overlap)."""
    global _MET_PEER
    if not _MET_PEER:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and _running_owners(os.environ["DPSPARSE_TEST_DB"]) < 2:
            time.sleep(0.05)
        _MET_PEER = True
    time.sleep(0.05)
    return noisy_sum(x)


def _running_owners(db):
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute("SELECT count(DISTINCT lease_owner) FROM runs WHERE status = 'running'").fetchone()[0]


def with_history(seed):
    rng = np.random.default_rng(seed)
    return {"final": float(seed), HISTORY: {"loss": rng.random(4), "steps": np.arange(4)}}


HISTORY = store.HISTORY_KEY


def train_mlp(seed):
    """A few DP-SGD steps of an MLP large enough that 2 BLAS threads change the last bits of the result."""
    from sims.data import make_mixture
    from sims.models import mlp
    from sims.train import train
    ds = make_mixture(1000, 32, 4, random_state=3)
    res = train(mlp([32, 256, 4]), ds, steps=3, sampling_rate=0.5, lr=0.1, noise_multiplier=1.0, record_every=1,
                random_state=seed)
    return {"train_loss": res.history["train_loss"][-1], HISTORY: {"params": res.params}}


# ----------------------------------------------------------------------------- helpers
def _rows(db):
    """``{hash: (status, record text)}`` straight from the ``runs`` table."""
    with sqlite3.connect(db) as conn:
        return {h: (s, r) for h, s, r in conn.execute("SELECT config_hash, status, record FROM runs")}


def _outcomes(db):
    """``{hash: [outcome of each attempt, in order]}``."""
    out = {}
    with sqlite3.connect(db) as conn:
        for h, o in conn.execute("SELECT config_hash, outcome FROM attempts ORDER BY config_hash, attempt"):
            out.setdefault(h, []).append(o)
    return out


def _histories(db):
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT config_hash, npz FROM histories"))


def _reference(fn, configs, tmp_path, name="reference.db"):
    db = tmp_path / name
    sweep.run_sweep(fn, configs, executor="serial", store=db)
    return _rows(db)


def _assert_each_done_once(db, reference):
    """Every config: done, its record byte-equal to the reference, exactly one successful attempt."""
    rows, outcomes = _rows(db), _outcomes(db)
    assert rows.keys() == reference.keys()
    for h, (status, record) in rows.items():
        assert status == "done", (h, status)
        assert record == reference[h][1]
        assert outcomes[h].count("done") == 1 and "superseded" not in outcomes[h], outcomes[h]


def _wait_until(predicate, what):
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _alive(pid) -> bool:
    """A process exists and is not a zombie (a reparented zombie may wait for a busy init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def _script(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(f"import sys\nsys.path[:0] = [{ROOT!r}, {TESTS_DIR!r}]\n" + textwrap.dedent(body))
    return path


def _status_counts(db):
    with sqlite3.connect(db, timeout=30) as conn:
        return dict(conn.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall())


# ----------------------------------------------------------------------------- schema, WAL, identity
def test_schema_and_wal(tmp_path):
    db = tmp_path / "s.db"
    Store(db).close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == {"meta", "runs", "attempts", "histories"}
        cols = {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
        assert cols == {"config_hash", "config", "status", "record", "error", "seed", "attempts", "package_version",
                        "host", "lease_owner", "lease_expires", "created", "started", "finished", "wall_time",
                        "cpu_time"}
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "1"
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("INSERT INTO runs (config_hash, config, status, created) VALUES ('h', '{}', 'bogus', 0)")


def test_run_row_holds_config_seed_version_host_timings(tmp_path):
    db = tmp_path / "s.db"
    sweep.run_sweep(noisy_sum, [{"x": 3}], executor="serial", store=db)
    sweep.run_sweep(with_history, [{"seed": 7}], executor="serial", store=db)
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        a, b = conn.execute("SELECT * FROM runs ORDER BY rowid").fetchall()
    assert a["config"] == '{"x":3}' and a["seed"] is None and b["seed"] == 7
    with Store(db) as st:
        st.register([{"training": {"seed": 4}, "lr": 0.1}, {"seed": True}])
    with sqlite3.connect(db) as conn:
        assert dict(conn.execute("SELECT config, seed FROM runs WHERE status = 'pending'")) == {
            '{"lr":0.1,"training":{"seed":4}}': 4, '{"seed":true}': None}  # a bool is not a seed
    assert a["config_hash"] == store.config_hash({"x": 3})
    assert a["package_version"] == store.package_version() == "0.1.0"
    assert a["status"] == "done" and a["attempts"] == 1 and a["lease_owner"] is None and a["error"] is None
    assert a["started"] <= a["finished"] and a["wall_time"] >= 0 and a["cpu_time"] >= 0 and a["host"]
    assert json.loads(a["record"])["total"] == noisy_sum(3)["total"]


def test_config_hash_is_stable_across_key_order_and_types():
    cfg = {"model": {"width": 256, "depth": 2}, "lr": 0.1, "mechanism": [{"name": "topk", "k": 5}], "seed": 0}
    shuffled = {"seed": 0, "mechanism": [{"k": 5, "name": "topk"}], "lr": 0.1, "model": {"depth": 2, "width": 256}}
    # a fixed value: the same on every machine (sha256 of the canonical JSON)
    assert store.config_key(cfg) == ('{"lr":0.1,"mechanism":[{"k":5,"name":"topk"}],"model":{"depth":2,"width":256},'
                                     '"seed":0}')
    assert store.config_hash(cfg) == "a01587616a1f3d0b6c9884ee93835a982af870fdcff8934b7539c6c1f7b3241c"
    assert store.config_hash(shuffled) == store.config_hash(cfg)
    assert store.config_hash({"a": np.int64(1), "b": (1, 2)}) == store.config_hash({"b": [1, 2], "a": 1})
    assert store.config_hash({"a": 1}) != store.config_hash({"a": 1.0})
    with pytest.raises(ValueError, match="JSON"):
        store.config_hash({"a": {1, 2}})


# ----------------------------------------------------------------------------- leases
class _Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def time(self):
        return self.now


def test_claims_are_exclusive_until_the_lease_expires(tmp_path, monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(store, "time", clock)
    db = tmp_path / "lease.db"
    with Store(db) as a, Store(db) as b:
        hashes = a.register([{"x": x} for x in range(3)])
        assert b.register([{"x": 0}]) == hashes[:1]  # registering again inserts nothing
        assert a.claim(hashes[:2], "A", lease_seconds=10) == {hashes[0]: 1, hashes[1]: 1}
        assert b.claim(hashes, "B", lease_seconds=10) == {hashes[2]: 1}  # only the unclaimed one
        clock.now += 9
        assert a.renew("A", lease_seconds=10) == 2  # the heartbeat: A's leases now end at 1019
        clock.now += 5
        assert b.claim(hashes[:2], "B", lease_seconds=10) == {}
        clock.now += 6  # A stopped renewing (its process died): both leases expire
        assert b.claim(hashes[:1], "B", lease_seconds=10) == {hashes[0]: 2}
        assert _outcomes(db)[hashes[0]] == ["abandoned"]
        # A comes back and finishes: its success is kept (nothing was done yet), marked superseded
        assert a.finish(hashes[0], "A", 1, Outcome(record='{"y":0}', error=None)) == "superseded"
        assert b.finish(hashes[0], "B", 2, Outcome(record='{"y":0}', error=None)) == "superseded"
        assert a.finish(hashes[1], "A", 1, Outcome(record=None, error="E: lost")) == "failed"
        assert b.finish(hashes[2], "B", 1, Outcome(record='{"y":4}', error=None)) == "done"
    assert _rows(db) == {hashes[0]: ("done", '{"y":0}'), hashes[1]: ("failed", None), hashes[2]: ("done", '{"y":4}')}
    assert _outcomes(db) == {hashes[0]: ["superseded", "superseded"], hashes[1]: ["failed"], hashes[2]: ["done"]}


def test_release_makes_a_claim_pending_again(tmp_path):
    db = tmp_path / "rel.db"
    with Store(db) as st:
        (h,) = st.register([{"x": 0}])
        claim = st.claim([h], "A", lease_seconds=30)
        st.release(claim, "A", "interrupted")
        assert _rows(db)[h] == ("pending", None)
        assert st.claim([h], "B", lease_seconds=30) == {h: 2}
    assert _outcomes(db)[h] == ["released"]


def test_interrupted_sweep_gives_its_claim_back(tmp_path):
    db = tmp_path / "kb.db"
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(interrupt_on_two, [{"x": x} for x in range(4)], executor="serial", store=db)
    assert sorted(s for s, _ in _rows(db).values()) == ["done", "done", "pending", "pending"]
    assert sweep.run_sweep(interrupt_on_two, [{"x": x} for x in range(2)], executor="serial", store=db)[1] == {
        "x": 1, "y": 1}


def interrupt_on_two(x):
    if x == 2:
        raise KeyboardInterrupt
    return {"y": x}


# ----------------------------------------------------------------------------- load, where, CSV, pandas
NESTED = [{"data": {"name": "mix", "n": 100}, "mechanism": [{"name": "topk", "k": k}], "lr": lr, "seed": 0}
          for k in (1, 5) for lr in (0.1, 0.5)]


def nested_fn(data, mechanism, lr, seed):
    return {"acc": lr * mechanism[0]["k"], "report": {"epsilon": 1.5}, "losses": [1.0, 0.5]}


@pytest.fixture(scope="module")
def nested_db(tmp_path_factory):
    db = tmp_path_factory.mktemp("nested") / "n.db"
    sweep.run_sweep(nested_fn, NESTED, executor="serial", store=db)
    return db


def test_load_flattens_config_and_metrics(nested_db):
    rows = store.load(nested_db)
    assert len(rows) == 4
    r = rows[1]
    assert {k: r[k] for k in ("data.name", "data.n", "mechanism[0].name", "mechanism[0].k", "lr", "seed")} == {
        "data.name": "mix", "data.n": 100, "mechanism[0].name": "topk", "mechanism[0].k": 1, "lr": 0.5, "seed": 0}
    assert r["acc"] == 0.5 and r["report.epsilon"] == 1.5 and r["losses"] == [1.0, 0.5] and r["error"] is None
    assert r["_status"] == "done" and r["_hash"] == store.config_hash(NESTED[1])
    assert list(r)[-len(store.META_COLUMNS):] == list(store.META_COLUMNS)


@pytest.mark.parametrize("where, expected", [
    ({"lr": 0.5}, [1, 3]),
    ("lr=0.5", [1, 3]),
    (["mechanism[0].k=5", "lr=0.1"], [2]),
    ({"_status": "done"}, [0, 1, 2, 3]),
    ("data.name=mix", [0, 1, 2, 3]),
    ('data.name="mix"', [0, 1, 2, 3]),
    ({"lr": "0.5"}, []),  # a string is not a number
    ({"seed": False}, []),  # a bool is not an int
])
def test_load_where(nested_db, where, expected):
    assert [store.config_hash(NESTED[i]) for i in expected] == [r["_hash"] for r in store.load(nested_db, where=where)]


@pytest.mark.parametrize("where, match", [
    ({"nope": 1}, "nope"),
    ("lr", "key=value"),
    ([3], "key=value"),
    ({1: 2}, "strings"),
    (3.5, "where"),
])
def test_load_where_errors(nested_db, where, match):
    with pytest.raises(ValueError, match=match):
        store.load(nested_db, where=where)


def test_where_is_never_sql(nested_db):
    assert store.load(nested_db, where="lr=0.1 OR 1=1; DROP TABLE runs") == []
    assert store.load(nested_db, where={"lr": "0.1' OR '1'='1"}) == []
    assert len(store.load(nested_db)) == 4


def test_load_as_frame(nested_db):
    frame = store.load(nested_db, as_frame=True, where={"lr": 0.1})
    assert list(frame["mechanism[0].k"]) == [1, 5] and list(frame["acc"]) == [0.1, 0.5]
    assert list(frame.columns) == list(store.load(nested_db)[0])


def test_load_as_frame_without_pandas_is_a_clear_import_error(nested_db, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pandas"):
        store.load(nested_db, as_frame=True)
    assert len(store.load(nested_db)) == 4


def test_export_csv_round_trips(nested_db, tmp_path):
    out = tmp_path / "t.csv"
    assert store.export_csv(nested_db, out, where="lr=0.5") == 2
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    loaded = store.load(nested_db, where="lr=0.5")
    assert list(rows[0]) == list(loaded[0])
    for got, want in zip(rows, loaded):
        assert float(got["acc"]) == want["acc"] and float(got["_wall_time"]) == want["_wall_time"]
        assert json.loads(got["losses"]) == want["losses"] and got["error"] == ""
    with pytest.raises(ValueError, match="out"):
        store.export_csv(nested_db, tmp_path)
    with pytest.raises(ValueError, match="out"):
        store.export_csv(nested_db, tmp_path / "missing" / "t.csv")


def test_load_refuses_what_is_not_a_store(tmp_path):
    with pytest.raises(ValueError, match="path"):
        store.load(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()
    (tmp_path / "text.db").write_text("not sqlite " * 100)
    with pytest.raises(ValueError, match="path"):
        store.load(tmp_path / "text.db")
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE t (a)").connection.close()
    with pytest.raises(ValueError, match="dpsparse store"):
        store.load(tmp_path / "other.db")
    with pytest.raises(ValueError, match="directory"):
        store.load(tmp_path)


def test_failed_and_pending_runs_are_rows_too(tmp_path):
    db = tmp_path / "f.db"
    sweep.run_sweep(interrupt_free_fail, [{"x": 0}, {"x": 1}], executor="serial", store=db, max_attempts=1)
    rows = store.load(db)
    assert [(r["x"], r["_status"], r["error"]) for r in rows] == [(0, "done", None), (1, "failed", "ValueError: odd")]
    assert "y" not in rows[1]


def interrupt_free_fail(x):
    if x % 2:
        raise ValueError("odd")
    return {"y": x}


# ----------------------------------------------------------------------------- histories
def test_histories_are_stored_as_npz_and_kept_out_of_records(tmp_path):
    db1, db2 = tmp_path / "h1.db", tmp_path / "h2.db"
    recs = sweep.run_sweep(with_history, [{"seed": 1}, {"seed": 2}], executor="serial", store=db1)
    assert recs[0] == {"seed": 1, "final": 1.0}
    hist = store.load_history(db1, {"seed": 1})
    rng = np.random.default_rng(1)
    assert list(hist) == ["loss", "steps"]
    np.testing.assert_array_equal(hist["loss"], rng.random(4))
    assert hist["steps"].dtype == np.arange(4).dtype and hist["steps"].tolist() == [0, 1, 2, 3]
    assert store.load_history(db1, store.config_hash({"seed": 2}))["loss"].shape == (4,)
    # the same arrays give the same bytes (fixed zip timestamps), in another store, later, by local workers
    sweep.run_sweep(with_history, [{"seed": 1}, {"seed": 2}], n_workers=1, store=db2)
    assert _histories(db1) == _histories(db2) and len(_histories(db1)) == 2
    sweep.run_sweep(noisy_sum, [{"x": 0}], executor="serial", store=db1)
    assert store.load_history(db1, {"x": 0}) == {}
    with pytest.raises(ValueError, match="run"):
        store.load_history(db1, {"seed": 99})
    with pytest.raises(ValueError, match="run"):
        store.load_history(db1, "abc")


def bad_history(x):
    return {"y": x, HISTORY: {"a": np.array([object()])}}


def test_bad_history_is_a_recorded_error():
    rec = sweep.run_sweep(bad_history, [{"x": 1}], executor="serial")[0]
    assert rec["error"].startswith("TypeError:") and "numeric" in rec["error"]


# ----------------------------------------------------------------------------- migration from JSON lines
def test_migrate_jsonl(tmp_path):
    old = tmp_path / "old.jsonl"
    lines = [{"x": 0, "y": 0, "_config_keys": ["x"]},
             {"x": 1, "error": "RuntimeError: interrupted", "_config_keys": ["x"]},
             {"x": 1, "y": 10, "_config_keys": ["x"]},
             {"x": 2, "error": "RuntimeError: interrupted", "_config_keys": ["x"]}]
    old.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"x": 3, "y"')  # a cut-off last line
    db = tmp_path / "new.db"
    assert store.migrate_jsonl(old, db) == 3
    assert [(r["x"], r.get("y"), r["_status"], r["error"]) for r in store.load(db)] == [
        (0, 0, "done", None), (1, 10, "done", None), (2, None, "failed", "RuntimeError: interrupted")]
    # a sweep on the migrated store runs only the failed config
    recs = sweep.run_sweep(square, [{"x": x} for x in range(3)], executor="serial", store=db)
    assert recs == [{"x": 0, "y": 0}, {"x": 1, "y": 10}, {"x": 2, "y": 4}]
    with pytest.raises(ValueError, match="jsonl_path"):
        store.migrate_jsonl(tmp_path / "none.jsonl", db)


def square(x):
    return {"y": x * x}


# ----------------------------------------------------------------------------- fault tests
CONFIGS = [{"x": x} for x in range(8)]


def test_kill_9_of_the_sweep_process_then_rerun(tmp_path):
    reference = _reference(noisy_sum, CONFIGS, tmp_path)
    db, pids = tmp_path / "sweep.db", tmp_path / "pids"
    pids.mkdir()
    script = _script(tmp_path, "sweep_script.py", f"""
        from sims.sweep import run_sweep
        from test_store import noisy_sum, CONFIGS
        if __name__ == "__main__":
            run_sweep(noisy_sum, CONFIGS, n_workers=2, store={str(db)!r}, lease_seconds=1.0)
        """)
    env = dict(os.environ, DPSPARSE_TEST_PIDS=str(pids), DPSPARSE_TEST_DELAY="0.2", DPSPARSE_TEST_HANG_FROM="2")
    Store(db).close()
    proc = subprocess.Popen([sys.executable, str(script)], env=env)
    try:  # kill -9 once 2 runs are done and 2 hang in their workers
        _wait_until(lambda: _status_counts(db) == {"done": 2, "running": 2, "pending": 4}, "2 runs done, 2 running")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # no worker outlives the sweep: both were busy in fn when their parent was killed
    workers = [int(p) for p in os.listdir(pids)]
    assert len(workers) == 2
    try:
        _wait_until(lambda: not any(_alive(p) for p in workers), "the orphaned workers to exit")
    finally:  # on failure, do not leave them hanging
        for pid in filter(_alive, workers):
            os.kill(pid, signal.SIGKILL)
    # the rerun takes over the expired leases and runs only what had not finished
    done_before = {h for h, (s, _) in _rows(db).items() if s == "done"}
    sweep.run_sweep(noisy_sum, CONFIGS, n_workers=2, store=db)
    _assert_each_done_once(db, reference)
    outcomes = _outcomes(db)
    assert all(outcomes[h] == ["done"] for h in done_before)
    assert sum(o.count("abandoned") for o in outcomes.values()) >= 1


def test_kill_9_of_one_worker_fails_only_its_config(tmp_path):
    marker = tmp_path / "killed"
    configs = [{"x": x, "marker": str(marker)} for x in range(5)]
    marker.touch()  # the reference run must not kill the test process
    reference = _reference(die_once, configs, tmp_path)
    marker.unlink()
    db = tmp_path / "w.db"
    recs = sweep.run_sweep(die_once, configs, n_workers=2, store=db)
    assert marker.exists()  # the worker running x == 1 was killed
    assert all("error" not in r for r in recs)
    _assert_each_done_once(db, reference)
    outcomes = _outcomes(db)
    killed = store.config_hash(configs[1])
    assert outcomes[killed] == ["failed", "done"]
    assert all(outcomes[store.config_hash(c)] == ["done"] for c in configs if c["x"] != 1)
    with sqlite3.connect(db) as conn:
        error = conn.execute("SELECT error FROM attempts WHERE config_hash = ? AND attempt = 1", (killed,)).fetchone()[0]
    assert "died with signal SIGKILL" in error


def test_two_concurrent_sweeps_on_one_store_never_run_a_config_twice(tmp_path):
    configs = [{"x": x} for x in range(10)]
    reference = _reference(noisy_sum, configs, tmp_path)
    db = tmp_path / "shared.db"
    script = _script(tmp_path, "two_sweeps.py", f"""
        import json
        from sims.sweep import run_sweep
        from test_store import rendezvous
        if __name__ == "__main__":
            recs = run_sweep(rendezvous, [{{"x": x}} for x in range(10)], executor="serial", store={str(db)!r})
            print(json.dumps(recs))
        """)
    store.Store(db).close()  # both sweeps open an existing store
    env = dict(os.environ, DPSPARSE_TEST_DB=str(db))
    procs = [subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        outs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert [p.returncode for p in procs] == [0, 0]
    expected = [{**c, **json.loads(reference[store.config_hash(c)][1])} for c in configs]
    assert [json.loads(o) for o in outs] == [expected, expected]  # each sweep returns every record
    _assert_each_done_once(db, reference)
    assert all(o == ["done"] for o in _outcomes(db).values())  # no config was attempted twice
    with sqlite3.connect(db) as conn:
        owners = {r[0] for r in conn.execute("SELECT owner FROM attempts")}
    assert len(owners) == 2  # both sweeps ran configs


def test_script_without_main_guard_fails_loudly(tmp_path):
    db = tmp_path / "unguarded.db"
    script = _script(tmp_path, "unguarded.py", f"""
        from sims.sweep import run_sweep

        def fn(x):
            return {{"y": x}}

        run_sweep(fn, [{{"x": 0}}, {{"x": 1}}], n_workers=1, store={str(db)!r})
        """)
    res = subprocess.run([sys.executable, str(script)], check=False, capture_output=True, text=True, timeout=TIMEOUT)
    assert res.returncode != 0
    assert 'if __name__ == "__main__":' in res.stderr
    assert set(_status_counts(db)) == {"pending"}  # nothing recorded as an error
    # an unguarded script whose fn lives in a module works: the workers do not import the script
    ok = _script(tmp_path, "unguarded_ok.py", f"""
        from sims.sweep import run_sweep
        from test_store import square
        run_sweep(square, [{{"x": 0}}, {{"x": 1}}], n_workers=1, store={str(db)!r})
        """)
    subprocess.run([sys.executable, str(ok)], check=True, timeout=TIMEOUT)
    assert [r["y"] for r in store.load(db, where={"_status": "done"})] == [0, 1]


def test_guarded_script_with_fn_in_main_runs_on_local_workers(tmp_path):
    db = tmp_path / "guarded.db"
    script = _script(tmp_path, "guarded.py", f"""
        from sims.sweep import run_sweep

        def fn(x):
            return {{"y": x + 1}}

        if __name__ == "__main__":
            run_sweep(fn, [{{"x": 0}}, {{"x": 1}}], n_workers=2, store={str(db)!r})
        """)
    subprocess.run([sys.executable, str(script)], check=True, timeout=TIMEOUT)
    assert [r["y"] for r in store.load(db)] == [1, 2]


# ----------------------------------------------------------------------------- Dask
@pytest.fixture(scope="module")
def dask_client():
    with sweep.dask_client("local", n_workers=2) as client:
        yield client


def _worker_env():
    import threadpoolctl
    return {"numba": os.environ.get("NUMBA_NUM_THREADS"), "blis": os.environ.get("BLIS_NUM_THREADS"),
            "blas": sorted({p["num_threads"] for p in threadpoolctl.threadpool_info()})}


def test_dask_sweep_with_one_worker_killed(tmp_path, dask_client):
    marker = tmp_path / "killed"
    configs = [{"x": x, "marker": str(marker)} for x in range(4)]
    marker.touch()
    reference = _reference(die_once, configs, tmp_path)
    marker.unlink()
    before = set(dask_client.scheduler_info()["workers"])
    db = tmp_path / "dask.db"
    recs = sweep.run_sweep(die_once, configs, executor=dask_client, store=db)
    assert marker.exists() and all("error" not in r for r in recs)
    _assert_each_done_once(db, reference)
    # the killed worker was restarted, and the thread limits hold in every worker, the new one included
    dask_client.wait_for_workers(2, timeout=TIMEOUT)
    _wait_until(lambda: len(dask_client.scheduler_info()["workers"]) == 2, "the restarted worker")
    assert set(dask_client.scheduler_info()["workers"]) != before
    envs = dask_client.run(_worker_env)
    assert list(envs.values()) == [{"numba": "1", "blis": "1", "blas": [1]}] * 2


def test_same_record_bit_for_bit_whatever_the_executor(tmp_path, dask_client):
    """Serial in a parent running 2 BLAS threads, local workers, Dask: the same stored bytes.

    On a 2-core machine, ``train_mlp`` run directly under 2 BLAS threads ends on other last bits than
    under 1; the serial path must pin the threads as the workers do.
    """
    configs = [{"seed": s} for s in range(3)]
    dbs = {name: tmp_path / f"{name}.db" for name in ("serial", "local", "dask")}
    with threadpool_limits(limits=2):
        sweep.run_sweep(train_mlp, configs, executor="serial", store=dbs["serial"])
    sweep.run_sweep(train_mlp, configs, n_workers=2, store=dbs["local"])
    sweep.run_sweep(train_mlp, configs, executor=dask_client, store=dbs["dask"])
    rows = {name: _rows(db) for name, db in dbs.items()}
    hist = {name: _histories(db) for name, db in dbs.items()}
    assert all(s == "done" for s, _ in rows["serial"].values()) and len(hist["serial"]) == 3
    assert rows["local"] == rows["serial"] and rows["dask"] == rows["serial"]
    assert hist["local"] == hist["serial"] and hist["dask"] == hist["serial"]
    params = [store.load_history(dbs["serial"], c)["params"] for c in configs]
    assert len({p.tobytes() for p in params}) == 3  # the runs differ, so equality is informative
