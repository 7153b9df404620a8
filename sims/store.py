"""The results store: one embedded SQLite file (standard library ``sqlite3``, WAL mode) per project.

:func:`sims.sweep.run_sweep` writes every run it makes here; :func:`load` reads the runs back as a
tidy table (one record per run, config columns flattened with dotted key paths, then the metrics),
:func:`export_csv` writes that table to a CSV file and :func:`load_history` returns a run's arrays.
The schema, the lease protocol that lets several sweeps share one file, what survives a ``kill -9``
and the bit-identity guarantee are described in ``docs/store.md``.

Run identity: :func:`config_hash` is the SHA-256 (hex) of :func:`config_key`, the canonical JSON of
the JSON-normalised config (sorted keys, no whitespace), so the same config has the same hash on any
machine and in any key order. ``1`` and ``1.0`` are different configs; a tuple equals a list.

Histories: a sweep function may return, under the reserved key :data:`HISTORY_KEY` (``"_history"``),
a dict of named numeric arrays (e.g. a training history). They are kept out of the metrics and stored
in the ``histories`` table as one NPZ archive (the format of ``np.savez_compressed``, written with
fixed zip timestamps so that the same arrays give the same bytes); :func:`load_history` reads them.

Only the standard library is imported at module level (NumPy is imported by the history functions,
pandas only by ``load(..., as_frame=True)``).
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import hashlib
import io
import json
import os
import pathlib
import socket
import sqlite3
import sys
import time
import zipfile

__all__ = [
    "dumps",
    "HISTORY_KEY",
    "META_COLUMNS",
    "OUTCOMES",
    "SCHEMA_VERSION",
    "STATUSES",
    "Store",
    "config_hash",
    "config_key",
    "export_csv",
    "flatten",
    "load",
    "load_history",
    "migrate_jsonl",
    "package_version",
]

#: Reserved key of a sweep function's output: a dict of named arrays stored in the ``histories`` table.
HISTORY_KEY = "_history"

#: Values of ``runs.status``.
STATUSES = ("pending", "running", "done", "failed")

#: Values of ``attempts.outcome`` (``docs/store.md``, "The lease protocol").
OUTCOMES = ("done", "failed", "abandoned", "released", "superseded")

#: Columns that :func:`load` adds after the config and metric columns (all start with ``_``, a prefix
#: that configs and metrics may not use; ``error`` is the other reserved name).
META_COLUMNS = ("_status", "_attempts", "_wall_time", "_cpu_time", "_started", "_finished", "_host",
                "_version", "_hash")

#: Version of the schema below, kept in the ``meta`` table; a store of another version is refused.
SCHEMA_VERSION = 1

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS runs (
        config_hash     TEXT PRIMARY KEY,
        config          TEXT NOT NULL,
        status          TEXT NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'running', 'done', 'failed')),
        record          TEXT,
        error           TEXT,
        seed            INTEGER,
        attempts        INTEGER NOT NULL DEFAULT 0,
        package_version TEXT,
        host            TEXT,
        lease_owner     TEXT,
        lease_expires   REAL,
        created         REAL NOT NULL,
        started         REAL,
        finished        REAL,
        wall_time       REAL,
        cpu_time        REAL)""",
    "CREATE INDEX IF NOT EXISTS runs_status ON runs (status)",
    """CREATE TABLE IF NOT EXISTS attempts (
        config_hash TEXT NOT NULL REFERENCES runs (config_hash),
        attempt     INTEGER NOT NULL,
        outcome     TEXT NOT NULL
                    CHECK (outcome IN ('done', 'failed', 'abandoned', 'released', 'superseded')),
        error       TEXT,
        owner       TEXT NOT NULL,
        host        TEXT,
        started     REAL,
        finished    REAL NOT NULL,
        wall_time   REAL,
        PRIMARY KEY (config_hash, attempt))""",
    """CREATE TABLE IF NOT EXISTS histories (
        config_hash TEXT PRIMARY KEY REFERENCES runs (config_hash),
        names       TEXT NOT NULL,
        npz         BLOB NOT NULL)""",
)

_CHUNK = 500  # hashes per "IN (...)" query (SQLite's default limit is 32766 parameters)


# ----------------------------------------------------------------------------- identity
def _to_json_default(obj):
    """``json.dumps`` hook: NumPy scalars -> Python numbers, arrays -> nested lists, dataclass
    records (e.g. a :mod:`dptheory.events` event) -> ``{"type": class name, field: value, ...}``,
    ranges -> lists; anything else (sets included) is refused."""
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


def dumps(obj, *, sort_keys=False) -> str:
    """The JSON text of ``obj`` as the store writes it (NumPy scalars and arrays converted, NaN kept)."""
    return json.dumps(obj, default=_to_json_default, allow_nan=True, sort_keys=sort_keys, separators=(",", ":"))


def normalise(obj):
    """JSON round trip: the form a value has after being written to and read from the store."""
    return json.loads(dumps(obj))


def config_key(config: dict) -> str:
    """Canonical JSON key of a config: ``json.dumps`` of its normalised form, sorted keys, no spaces.

    Two configs have the same key exactly when their JSON-normalised forms are equal (so a tuple and
    a list with the same items match; ``1`` and ``1.0`` do not).

    Parameters
    ----------
    config : dict
        A config with string keys and JSON-serialisable values (NumPy scalars and arrays, ranges and
        dataclass records are converted).

    Returns
    -------
    str

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
        return dumps(normalise(config), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"config values must be JSON-serialisable, got {config!r} ({exc})") from None


def config_hash(config: dict) -> str:
    """Identity of a run: the SHA-256 hex digest of :func:`config_key` (UTF-8).

    The same config gives the same 64-character hash on any machine and in any key order.

    Raises
    ------
    ValueError
        As :func:`config_key`.
    """
    return hashlib.sha256(config_key(config).encode("utf-8")).hexdigest()


@functools.lru_cache(maxsize=1)
def package_version() -> str:
    """Installed version of ``dpsparse`` (``importlib.metadata``), or ``"unknown"``."""
    from importlib import metadata
    try:
        return metadata.version("dpsparse")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
        return "unknown"


def _seed_of(config: dict):
    """The run's integer seed: ``config["seed"]``, else ``config["training"]["seed"]`` (``sims.config``), else None."""
    seed = config.get("seed")
    training = config.get("training")
    if seed is None and isinstance(training, dict):
        seed = training.get("seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


# ----------------------------------------------------------------------------- histories (NPZ)
def history_bytes(arrays) -> bytes:
    """A dict of named numeric arrays as NPZ bytes (``np.load`` reads them), the same bytes for the same arrays.

    Raises
    ------
    TypeError
        ``arrays`` is not a dict with non-empty string names, or an array has an object dtype.
    """
    import numpy as np
    if not isinstance(arrays, dict):
        raise TypeError(f"{HISTORY_KEY} must be a dict of named arrays, got {type(arrays).__name__}")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, value in arrays.items():
            if not isinstance(name, str) or not name or "/" in name:
                raise TypeError(f"{HISTORY_KEY} names must be non-empty strings without '/', got {name!r}")
            arr = np.asarray(value)
            if arr.dtype.hasobject:
                raise TypeError(f"{HISTORY_KEY}[{name!r}] must be a numeric array, got dtype {arr.dtype}")
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, arr, allow_pickle=False)
    return buf.getvalue()


def _read_npz(blob: bytes, names) -> dict:
    import numpy as np
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        return {name: npz[name] for name in names}


# ----------------------------------------------------------------------------- connection
def _check_path(name, path, *, must_exist):
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"{name} must be a file path, got {type(path).__name__}")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{name} must be a file path, got the directory {path!r}")
    if must_exist and not os.path.isfile(path):
        raise ValueError(f"{name} must be an existing store file, got {path!r}")
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise ValueError(f"{name} must be a file path in an existing directory, got {path!r}")
    return path


@contextlib.contextmanager
def _transaction(conn):
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception): one write transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _connect(path, *, create, timeout):
    uri = pathlib.Path(os.path.abspath(path)).as_uri() + ("?mode=rwc" if create else "?mode=rw")
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False)
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"path must be a dpsparse SQLite store, but {path!r} could not be opened ({exc})") from None
    if mode.lower() != "wal":
        conn.close()
        raise ValueError(f"path must be on a file system where SQLite can use WAL mode, got journal mode {mode!r}")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _init_schema(conn, path):
    with _transaction(conn):
        for stmt in _SCHEMA:
            conn.execute(stmt)
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    if version != str(SCHEMA_VERSION):
        raise ValueError(f"path must be a store of schema version {SCHEMA_VERSION}, got version {version} in {path!r}")


def _chunks(seq):
    seq = list(seq)
    for start in range(0, len(seq), _CHUNK):
        yield seq[start:start + _CHUNK]


@dataclasses.dataclass(frozen=True)
class RunState:
    """What a sweep needs to know of one row of ``runs`` (``record`` only when ``status == "done"``)."""

    status: str
    lease_expires: float | None
    error: str | None
    record: str | None


@dataclasses.dataclass(frozen=True)
class Outcome:
    """The result of one attempt, as a sweep hands it to :meth:`Store.finish`.

    ``record`` is the metrics JSON text (``None`` for a failure, when ``error`` is set) and ``history``
    the NPZ bytes of :data:`HISTORY_KEY` (or ``None``).
    """

    record: str | None
    error: str | None
    history: bytes | None = None
    wall_time: float | None = None
    cpu_time: float | None = None


class Store:
    """A connection to a store file, with the claim / renew / finish / release steps of a sweep.

    Each method that writes is one ``BEGIN IMMEDIATE`` transaction. A ``Store`` may be used from
    one thread at a time; the heartbeat of a sweep opens its own.

    Parameters
    ----------
    path : str or path-like
        The store file, created (with the schema) if missing.
    timeout : float > 0
        Seconds a statement waits for another process's write lock before failing.

    Raises
    ------
    ValueError
        ``path`` is a directory, in a missing directory, not a SQLite file, or of another schema version;
        ``timeout`` not > 0.
    """

    def __init__(self, path, *, timeout=60.0, create=True):
        self.path = _check_path("path", path, must_exist=not create)
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        self.host = socket.gethostname()
        self.conn = _connect(self.path, create=create, timeout=float(timeout))
        try:
            if create:
                _init_schema(self.conn, self.path)
            else:
                _check_is_store(self.conn, self.path)
        except BaseException:
            self.conn.close()
            raise

    def close(self):
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- a sweep's steps
    def register(self, configs) -> list[str]:
        """Insert each config as a ``pending`` run unless its hash is already stored; return the hashes."""
        rows, now = [], time.time()
        for cfg in configs:
            key = config_key(cfg)
            rows.append((hashlib.sha256(key.encode("utf-8")).hexdigest(), key, _seed_of(cfg), now))
        with _transaction(self.conn):
            self.conn.executemany("INSERT OR IGNORE INTO runs (config_hash, config, seed, created) VALUES (?, ?, ?, ?)",
                                  rows)
        return [r[0] for r in rows]

    def states(self, hashes) -> dict:
        """``{hash: RunState}`` of the stored runs among ``hashes`` (one read)."""
        out = {}
        for chunk in _chunks(hashes):
            marks = ",".join("?" * len(chunk))
            for h, status, expires, error, record in self.conn.execute(
                    "SELECT config_hash, status, lease_expires, error, CASE WHEN status = 'done' THEN record END "
                    f"FROM runs WHERE config_hash IN ({marks})", chunk):
                out[h] = RunState(status, expires, error, record)
        return out

    def claim(self, hashes, owner, lease_seconds) -> dict:
        """Claim every claimable run among ``hashes``: one transaction; returns ``{hash: attempt number}``.

        Claimable: ``pending``, ``failed``, or ``running`` under an expired lease (the previous
        attempt is then recorded as ``abandoned``). A claimed run is ``running`` under ``owner``'s
        lease until ``now + lease_seconds``.
        """
        now, claimed = time.time(), {}
        with _transaction(self.conn):
            rows = []
            for chunk in _chunks(hashes):
                marks = ",".join("?" * len(chunk))
                rows += self.conn.execute(
                    "SELECT config_hash, status, lease_owner, lease_expires, attempts, started, host "
                    f"FROM runs WHERE config_hash IN ({marks})", chunk).fetchall()
            for h, status, old_owner, expires, attempts, started, host in rows:
                if status == "running" and expires is not None and expires < now:
                    self.conn.execute(
                        "INSERT OR REPLACE INTO attempts (config_hash, attempt, outcome, error, owner, host, started, "
                        "finished) VALUES (?, ?, 'abandoned', ?, ?, ?, ?, ?)",
                        (h, attempts, f"the lease of {old_owner} expired: its process died or stalled",
                         old_owner or "?", host, started, now))
                elif status not in ("pending", "failed"):
                    continue
                self.conn.execute(
                    "UPDATE runs SET status = 'running', lease_owner = ?, lease_expires = ?, attempts = ?, "
                    "started = ?, finished = NULL, host = ? WHERE config_hash = ?",
                    (owner, now + lease_seconds, attempts + 1, now, self.host, h))
                claimed[h] = attempts + 1
        return claimed

    def renew(self, owner, lease_seconds) -> int:
        """Extend every lease held by ``owner`` to ``now + lease_seconds`` (the heartbeat); returns the count."""
        with _transaction(self.conn):
            cur = self.conn.execute("UPDATE runs SET lease_expires = ? WHERE lease_owner = ? AND status = 'running'",
                                    (time.time() + lease_seconds, owner))
        return cur.rowcount

    def finish(self, h, owner, attempt, outcome: Outcome) -> str:
        """Commit one attempt's outcome (run row, history, attempt row) in one transaction.

        Returns the attempt's recorded outcome: ``"done"`` or ``"failed"``, or ``"superseded"``
        when the lease had been lost (expired and claimed by another sweep): a lost lease's
        success is still stored unless the run is already ``done``, a lost lease's failure is not.
        """
        now = time.time()
        with _transaction(self.conn):
            status, lease_owner, attempts, started = self.conn.execute(
                "SELECT status, lease_owner, attempts, started FROM runs WHERE config_hash = ?", (h,)).fetchone()
            mine = status == "running" and lease_owner == owner and attempts == attempt
            if outcome.error is None and (mine or status != "done"):
                self._write_done(h, outcome, now)
                result = "done" if mine else "superseded"
            elif outcome.error is not None and mine:
                self.conn.execute(
                    "UPDATE runs SET status = 'failed', record = NULL, error = ?, finished = ?, lease_owner = NULL, "
                    "lease_expires = NULL, wall_time = ?, cpu_time = ? WHERE config_hash = ?",
                    (outcome.error, now, outcome.wall_time, outcome.cpu_time, h))
                result = "failed"
            else:
                result = "superseded"
            self.conn.execute(
                "INSERT OR REPLACE INTO attempts (config_hash, attempt, outcome, error, owner, host, started, finished, "
                "wall_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (h, attempt, result, outcome.error, owner, self.host, started if mine else None, now,
                 outcome.wall_time))
        return result

    def _write_done(self, h, outcome, now):
        self.conn.execute(
            "UPDATE runs SET status = 'done', record = ?, error = NULL, finished = ?, lease_owner = NULL, "
            "lease_expires = NULL, wall_time = ?, cpu_time = ?, package_version = ?, host = ? WHERE config_hash = ?",
            (outcome.record, now, outcome.wall_time, outcome.cpu_time, package_version(), self.host, h))
        self.conn.execute("DELETE FROM histories WHERE config_hash = ?", (h,))
        if outcome.history is not None:
            names = _npz_names(outcome.history)
            self.conn.execute("INSERT INTO histories (config_hash, names, npz) VALUES (?, ?, ?)",
                              (h, json.dumps(names), outcome.history))

    def release(self, claims: dict, owner, reason) -> None:
        """Give back runs claimed but not finished (an interrupt, ``fail_fast``): ``pending`` again.

        ``claims`` is ``{hash: attempt number}``; each attempt is recorded as ``released``.
        """
        now = time.time()
        with _transaction(self.conn):
            for h, attempt in claims.items():
                cur = self.conn.execute(
                    "UPDATE runs SET status = 'pending', lease_owner = NULL, lease_expires = NULL "
                    "WHERE config_hash = ? AND status = 'running' AND lease_owner = ? AND attempts = ?",
                    (h, owner, attempt))
                if cur.rowcount:
                    self.conn.execute(
                        "INSERT OR REPLACE INTO attempts (config_hash, attempt, outcome, error, owner, host, finished) "
                        "VALUES (?, ?, 'released', ?, ?, ?, ?)", (h, attempt, reason, owner, self.host, now))


def _npz_names(blob):
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        return [n[:-4] for n in zf.namelist()]


def _check_is_store(conn, path):
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not {"meta", "runs", "attempts", "histories"} <= tables:
        conn.close()
        raise ValueError(f"path must be a dpsparse store (tables runs, attempts, histories, meta), got {path!r}")


# ----------------------------------------------------------------------------- reading
def flatten(obj, prefix="") -> dict:
    """Flatten nested dicts to dotted key paths, and lists of dicts to ``key[i]`` paths.

    ``{"data": {"name": "mnist1d"}, "mechanism": [{"name": "topk", "k": 5}], "lr": 0.1}`` becomes
    ``{"data.name": "mnist1d", "mechanism[0].name": "topk", "mechanism[0].k": 5, "lr": 0.1}``.
    Other lists (e.g. a list of losses) stay values; an empty dict stays a value.
    """
    if isinstance(obj, dict) and obj:
        out = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else k))
        return out
    if isinstance(obj, list) and obj and all(isinstance(x, dict) and x for x in obj):
        out = {}
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: obj}


def _parse_where(where) -> dict:
    """``where`` as ``{flattened key: value}``: a dict, one ``"key=value"`` string or a list of them.

    A ``value`` string is read as JSON when it parses (``lr=0.1``, ``flag=true``, ``name="a"``),
    otherwise it is the string itself (``name=topk``).
    """
    if where is None:
        return {}
    if isinstance(where, dict):
        bad = [k for k in where if not isinstance(k, str)]
        if bad:
            raise ValueError(f"where keys must be strings (flattened key paths), got {bad!r}")
        return dict(where)
    items = [where] if isinstance(where, str) else where
    if not isinstance(items, (list, tuple)):
        raise ValueError(f"where must be None, a dict, a 'key=value' string or a list of them, got "
                         f"{type(where).__name__}")
    out = {}
    for item in items:
        if not isinstance(item, str) or "=" not in item or not item.split("=", 1)[0].strip():
            raise ValueError(f"where items must be 'key=value' strings, got {item!r}")
        key, text = (s.strip() for s in item.split("=", 1))
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def _equal(a, b) -> bool:
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return a == b


def _row_record(config_text, record_text, error, status, attempts, wall, cpu, started, finished, host, version, h):
    row = flatten(json.loads(config_text))
    if record_text is not None:
        row.update(flatten(json.loads(record_text)))
    row["error"] = error
    row.update(zip(META_COLUMNS, (status, attempts, wall, cpu, started, finished, host, version, h)))
    return row


def load(path, *, where=None, as_frame=False):
    """The runs of a store as a tidy table: one record per run, in the order they were first registered.

    Each record holds the config flattened with dotted key paths (:func:`flatten`), the metrics
    (flattened the same way), ``error`` (``None`` unless the run failed) and the columns of
    :data:`META_COLUMNS`: ``_status`` (one of :data:`STATUSES`), ``_attempts``, ``_wall_time`` and
    ``_cpu_time`` (seconds of the last attempt's ``fn`` call), ``_started`` / ``_finished`` (seconds
    since the epoch), ``_host``, ``_version`` (of ``dpsparse``) and ``_hash`` (:func:`config_hash`).
    Histories are not included (:func:`load_history`).

    Parameters
    ----------
    path : str or path-like
        An existing store file.
    where : None, dict, str or list of str
        Equality filters on the record's keys, all of which must hold: ``{"lr": 0.1, "_status": "done"}``,
        or ``"key=value"`` strings (``["lr=0.1", "mechanism[0].name=topk"]``; the value is read as
        JSON when it parses, else kept as a string). Filtering is done in Python, never in SQL.
    as_frame : bool
        Return a ``pandas.DataFrame`` (pandas is optional) instead of a list of dicts.

    Returns
    -------
    list of dict, or pandas.DataFrame

    Raises
    ------
    ValueError
        ``path`` not an existing store; ``where`` malformed, or naming a key that no run has.
    ImportError
        ``as_frame=True`` without pandas installed.
    """
    filters = _parse_where(where)
    if as_frame:
        pandas = _import_pandas()
    with Store(path, create=False) as st:
        rows = [_row_record(*r) for r in st.conn.execute(
            "SELECT config, record, error, status, attempts, wall_time, cpu_time, started, finished, host, "
            "package_version, config_hash FROM runs ORDER BY rowid")]
    columns = _columns(rows)
    unknown = sorted(set(filters) - set(columns))
    if unknown:
        raise ValueError(f"where keys must be columns of the store, got {unknown}; columns are {columns}")
    rows = [r for r in rows if all(k in r and _equal(r[k], v) for k, v in filters.items())]
    if as_frame:
        return pandas.DataFrame.from_records(rows, columns=columns)
    return rows


def _import_pandas():
    try:
        import pandas
    except ImportError:
        raise ImportError("load(..., as_frame=True) needs pandas, an optional dependency: `pip install pandas`, "
                          "or call load() without as_frame for a list of records") from None
    return pandas


def _columns(rows) -> list:
    seen = {}
    for r in rows:
        for k in r:
            seen.setdefault(k, None)
    return list(seen)


def _csv_value(v):
    if v is None:
        return ""
    if isinstance(v, (dict, list)):
        return json.dumps(v, allow_nan=True)
    return v


def export_csv(path, out, where=None) -> int:
    """Write :func:`load`'s table (same ``where``) to the CSV file ``out``; return the number of rows.

    Columns are the union of the records' keys in first-seen order; a missing value, and ``None``,
    is an empty field; lists and dicts are written as JSON; floats with ``repr`` (they read back exactly).

    Raises
    ------
    ValueError
        As :func:`load`; ``out`` a directory or in a missing directory.
    """
    out = _check_path("out", out, must_exist=False)
    rows = load(path, where=where)
    columns = _columns(rows)
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for r in rows:
            writer.writerow([_csv_value(r.get(c)) for c in columns])
    return len(rows)


def load_history(path, run) -> dict:
    """The arrays a run stored under :data:`HISTORY_KEY`, as ``{name: numpy.ndarray}`` (``{}`` if none).

    Parameters
    ----------
    path : str or path-like
        An existing store file.
    run : dict or str
        The run's config, or its :func:`config_hash`.

    Raises
    ------
    ValueError
        ``path`` not a store; ``run`` neither a config nor a 64-hex hash; no such run in the store.
    """
    if isinstance(run, dict):
        h = config_hash(run)
    elif isinstance(run, str) and len(run) == 64 and all(c in "0123456789abcdef" for c in run):
        h = run
    else:
        raise ValueError(f"run must be a config dict or a 64-character config hash, got {run!r}")
    with Store(path, create=False) as st:
        if st.conn.execute("SELECT 1 FROM runs WHERE config_hash = ?", (h,)).fetchone() is None:
            raise ValueError(f"run must be a run of the store {st.path!r}; no run has the hash {h}")
        row = st.conn.execute("SELECT names, npz FROM histories WHERE config_hash = ?", (h,)).fetchone()
    return {} if row is None else _read_npz(row[1], json.loads(row[0]))


# ----------------------------------------------------------------------------- migration
def migrate_jsonl(jsonl_path, db_path) -> int:
    """Copy a JSON-lines store of the earlier ``sims.sweep`` into a SQLite store; return the runs written.

    Each line of the old store is one record ``{**config, **metrics}`` (or ``{**config, "error": ...}``)
    with the config's names under ``"_config_keys"``. A config with a successful line becomes a
    ``done`` run (the last such line wins), otherwise a ``failed`` run; its attempt is recorded with
    the owner ``"migrate_jsonl"``. Runs already ``done`` in ``db_path`` are left alone. Lines that
    are not valid JSON records (a write cut off by an interruption) are skipped.

    Raises
    ------
    ValueError
        ``jsonl_path`` missing; ``db_path`` not a store path.
    """
    if not isinstance(jsonl_path, (str, os.PathLike)) or not os.path.isfile(jsonl_path):
        raise ValueError(f"jsonl_path must be an existing JSON-lines file, got {jsonl_path!r}")
    latest = {}
    for row in _jsonl_rows(jsonl_path):
        keys = row.pop("_config_keys")
        config = {k: row.pop(k) for k in keys if k in row}
        key = config_key(config)
        if "error" not in row or key not in latest or latest[key][1].get("error") is not None:
            latest[key] = (config, row)
    owner = "migrate_jsonl"
    with Store(db_path) as st:
        hashes = st.register([c for c, _ in latest.values()])
        claims = st.claim(hashes, owner, lease_seconds=3600.0)
        for h, (config, row) in zip(hashes, latest.values()):
            if h in claims:
                error = row.get("error")
                record = None if error is not None else dumps(row)
                st.finish(h, owner, claims[h], Outcome(record=record, error=error))
    return len(claims)


def _jsonl_rows(path):
    with open(path, "rb") as f:
        for raw in f:
            try:
                row = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(row, dict) and isinstance(row.get("_config_keys"), list):
                yield row
