"""Datasets for the simulator: synthetic teachers, bundled real data, public/private splits.

Every generator takes ``random_state`` (``None``, an int >= 0 or a ``np.random.Generator``; same
seed -> same arrays bit for bit) and ``dtype`` (float64 default, float32 on request) for the
features; regression targets share the feature dtype, class labels are ``int64``. Nothing here
touches the network: the real datasets are the ones bundled with scikit-learn, and MNIST-1D is
generated offline by the ``mnist1d`` package (Greydanus 2020, "Scaling down deep learning").

Train/test split rule used throughout: ``n_test = round(test_size * n)`` restricted to
``[1, n - 1]`` (so both splits are non-empty), drawn by a random permutation.

Privacy bookkeeping: ``X_train`` / ``y_train`` are the private rows. A public split must never
share a row with them; :func:`public_split` (or :func:`public_split_of` for a :class:`Dataset`) is
the one way to obtain a checked :class:`PublicSplit`. Any loader or transform here that computes a
statistic from private rows appends a sentence to ``meta["private_preprocessing"]`` (a tuple of
strings, kept by every later transform); :func:`private_preprocessing_notes` reads it.
"""
from __future__ import annotations

import hashlib
import math
import random as _pyrandom
from dataclasses import InitVar, dataclass, field, replace

import numpy as np

from dptheory.validation import as_generator, check_choice, check_finite_array, check_int, check_real

__all__ = [
    "Dataset", "make_linear", "make_logistic", "make_mixture",
    "load_digits", "load_breast_cancer", "load_wine", "load_mnist1d",
    "standardize", "scale_features", "split_public", "split_validation",
    "PublicSplit", "public_split", "public_split_of", "private_preprocessing_notes",
]

TASKS = ("regression", "binary", "multiclass")

#: ``meta`` key of the tuple of notes about pre-processing that read private rows.
_NOTES_KEY = "private_preprocessing"
_MNIST1D_NOTE = ("load_mnist1d: the mnist1d package centres and scales the signals with one scalar "
                 "mean and std computed over all {n} generated rows, the private training rows "
                 "included; this release is not covered by epsilon")


def _check_dtype(dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in (np.dtype(np.float64), np.dtype(np.float32)):
        raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
    return dt


@dataclass(frozen=True, eq=False)
class Dataset:
    """A private train split, a test split and an optional public split.

    Attributes
    ----------
    X_train, y_train, X_test, y_test : ndarray
        Features ``(n, d)`` and targets ``(n,)`` (float for regression, int64 labels otherwise).
    task : {"regression", "binary", "multiclass"}
    n_classes : int or None
        ``None`` for regression, 2 for binary, ``K`` for multiclass.
    X_public, y_public : ndarray or None
        Public data (see :func:`split_public`), never part of ``X_train``; mechanisms get it as a
        checked :class:`PublicSplit` from :func:`public_split_of`.
    X_val, y_val : ndarray or None
        A private validation split held out of the training rows (see :func:`split_validation`),
        for choosing hyper-parameters; never trained on.
    name : str
    meta : dict
        Ground truth and provenance, e.g. ``w_star`` for :func:`make_linear`;
        ``meta["private_preprocessing"]`` lists steps that read private rows
        (:func:`private_preprocessing_notes`).
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    task: str
    n_classes: int | None
    X_public: np.ndarray | None = None
    y_public: np.ndarray | None = None
    name: str = ""
    meta: dict = field(default_factory=dict)
    X_val: np.ndarray | None = None
    y_val: np.ndarray | None = None

    def __post_init__(self):
        check_choice("task", self.task, TASKS)
        if (self.task == "regression") != (self.n_classes is None):
            raise ValueError(f"n_classes must be None exactly for task='regression', got {self.n_classes!r}")
        if self.task == "binary" and self.n_classes != 2:
            raise ValueError(f"n_classes must be 2 for task='binary', got {self.n_classes!r}")
        pairs = [("train", self.X_train, self.y_train), ("test", self.X_test, self.y_test)]
        if (self.X_public is None) != (self.y_public is None):
            raise ValueError("X_public and y_public must be given together")
        if self.X_public is not None:
            pairs.append(("public", self.X_public, self.y_public))
        if (self.X_val is None) != (self.y_val is None):
            raise ValueError("X_val and y_val must be given together")
        if self.X_val is not None:
            pairs.append(("val", self.X_val, self.y_val))
        d = None
        for split, X, y in pairs:
            X = check_finite_array(f"X_{split}", X, ndim=2)
            y = check_finite_array(f"y_{split}", y, ndim=1)
            if X.shape[0] != y.shape[0]:
                raise ValueError(f"X_{split} and y_{split} must have the same number of rows, "
                                 f"got {X.shape[0]} and {y.shape[0]}")
            if d is not None and X.shape[1] != d:
                raise ValueError(f"X_{split} must have {d} columns like X_train, got {X.shape[1]}")
            d = X.shape[1]
            if self.n_classes is not None and y.size and (y.min() < 0 or y.max() >= self.n_classes):
                raise ValueError(f"y_{split} labels must lie in [0, {self.n_classes - 1}]")

    @property
    def n_train(self) -> int:
        return self.X_train.shape[0]

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]


def _split(X, y, test_size, rng):
    n = X.shape[0]
    n_test = min(max(int(round(test_size * n)), 1), n - 1)
    perm = rng.permutation(n)
    te, tr = perm[:n_test], perm[n_test:]
    return X[tr], y[tr], X[te], y[te]


def _common(n, test_size, dtype, n_min=2):
    n = check_int("n", n, low=n_min)
    ts = check_real("test_size", test_size, low=0.0, high=1.0, low_open=True, high_open=True)
    return n, ts, _check_dtype(dtype)


# ----------------------------------------------------------------------------- synthetic
def make_linear(n, d, *, noise=0.1, test_size=0.25, random_state=None, dtype=np.float64) -> Dataset:
    """Linear teacher: ``x ~ N(0, I_d)``, ``y = x . w* + noise * eps``, ``eps ~ N(0, 1)``.

    ``w* ~ N(0, I_d / d)`` (so ``Var(x . w*) ~ 1``), no intercept; ``meta = {"w_star", "noise"}``.
    Least squares on the train split recovers ``w*`` with error of order ``noise * sqrt(d / n)``.
    """
    n, ts, dt = _common(n, test_size, dtype)
    d = check_int("d", d, low=1)
    noise = check_real("noise", noise, low=0.0)
    rng = as_generator(random_state)
    w = rng.standard_normal(d) / math.sqrt(d)
    X = rng.standard_normal((n, d))
    y = X @ w + noise * rng.standard_normal(n)
    Xtr, ytr, Xte, yte = _split(X.astype(dt), y.astype(dt), ts, rng)
    return Dataset(Xtr, ytr, Xte, yte, "regression", None, name="linear",
                   meta={"w_star": w.astype(dt), "noise": noise})


def make_logistic(n, d, *, margin=0.5, label_noise=0.0, test_size=0.25, random_state=None,
                  dtype=np.float64) -> Dataset:
    """Linearly separable binary data with a margin around a unit teacher ``w*``.

    ``x0 ~ N(0, I_d)``, ``y = 1[x0 . w* > 0]``, then ``x = x0 + margin (2y - 1) w*`` so that
    ``|x . w*| >= margin`` for every point (every point at distance ``>= margin`` from the teacher's
    hyperplane). A fraction ``label_noise`` in ``[0, 0.5)`` of labels is then flipped at random
    (each independently). ``meta = {"w_star", "margin", "label_noise"}``.
    """
    n, ts, dt = _common(n, test_size, dtype)
    d = check_int("d", d, low=1)
    margin = check_real("margin", margin, low=0.0)
    label_noise = check_real("label_noise", label_noise, low=0.0, high=0.5, high_open=True)
    rng = as_generator(random_state)
    w = rng.standard_normal(d)
    w /= np.linalg.norm(w)
    X = rng.standard_normal((n, d))
    y = (X @ w > 0).astype(np.int64)
    X += margin * (2 * y - 1)[:, None] * w
    flip = rng.random(n) < label_noise
    y = np.where(flip, 1 - y, y)
    Xtr, ytr, Xte, yte = _split(X.astype(dt), y, ts, rng)
    return Dataset(Xtr, ytr, Xte, yte, "binary", 2, name="logistic",
                   meta={"w_star": w.astype(dt), "margin": margin, "label_noise": label_noise})


def make_mixture(n, d, n_classes, *, separation=3.0, test_size=0.25, random_state=None,
                 dtype=np.float64) -> Dataset:
    """Gaussian mixture: ``x = mu_y + N(0, I_d)`` with balanced labels ``y in {0..K-1}``.

    Means ``mu_k = (separation / sqrt 2) u_k`` with orthonormal random ``u_k`` when ``K <= d`` (all
    pairwise distances equal ``separation``), independent random unit ``u_k`` otherwise.
    Labels: ``arange(n) % K``, shuffled. ``meta = {"means", "separation"}``.
    """
    n, ts, dt = _common(n, test_size, dtype)
    d = check_int("d", d, low=1)
    k = check_int("n_classes", n_classes, low=2)
    sep = check_real("separation", separation, low=0.0)
    rng = as_generator(random_state)
    G = rng.standard_normal((d, k))
    if k <= d:
        U = np.linalg.qr(G)[0].T
    else:
        U = (G / np.linalg.norm(G, axis=0)).T
    means = sep / math.sqrt(2.0) * U
    y = rng.permutation(np.arange(n) % k).astype(np.int64)
    X = means[y] + rng.standard_normal((n, d))
    Xtr, ytr, Xte, yte = _split(X.astype(dt), y, ts, rng)
    task = "binary" if k == 2 else "multiclass"
    return Dataset(Xtr, ytr, Xte, yte, task, k, name="mixture", meta={"means": means.astype(dt), "separation": sep})


# ----------------------------------------------------------------------------- real data (offline)
def _sklearn(loader, name, test_size, random_state, dtype):
    ts = check_real("test_size", test_size, low=0.0, high=1.0, low_open=True, high_open=True)
    dt = _check_dtype(dtype)
    X, y = loader(return_X_y=True)
    y = np.asarray(y, dtype=np.int64)
    k = int(y.max()) + 1
    rng = as_generator(random_state)
    Xtr, ytr, Xte, yte = _split(np.asarray(X, dtype=dt), y, ts, rng)
    return Dataset(Xtr, ytr, Xte, yte, "binary" if k == 2 else "multiclass", k, name=name)


def load_digits(*, test_size=0.25, random_state=None, dtype=np.float64) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 x 64, 10 classes; UCI optical digits), random split."""
    from sklearn.datasets import load_digits as _ld
    return _sklearn(_ld, "digits", test_size, random_state, dtype)


def load_breast_cancer(*, test_size=0.25, random_state=None, dtype=np.float64) -> Dataset:
    """scikit-learn's bundled Wisconsin breast cancer data (569 x 30, binary), random split."""
    from sklearn.datasets import load_breast_cancer as _lb
    return _sklearn(_lb, "breast_cancer", test_size, random_state, dtype)


def load_wine(*, test_size=0.25, random_state=None, dtype=np.float64) -> Dataset:
    """scikit-learn's bundled wine data (178 x 13, 3 classes), random split."""
    from sklearn.datasets import load_wine as _lw
    return _sklearn(_lw, "wine", test_size, random_state, dtype)


def load_mnist1d(n=5000, *, test_size=0.2, random_state=None, dtype=np.float64) -> Dataset:
    """MNIST-1D (Greydanus 2020): 40-long 1-D signals of 10 digit templates, generated OFFLINE.

    Calls ``mnist1d.data.make_dataset`` with ``get_dataset_args()`` (``num_samples = n``,
    ``train_split = 1 - test_size``, ``seed``); never the package's download path. ``n`` must be a
    multiple of 10 (the generator makes ``n / 10`` examples per class). ``random_state=None`` uses the
    package's default seed 42 (the published dataset's generation seed); an int is used as the seed
    (``< 2**32``); a Generator draws one. The package seeds NumPy's and Python's global RNGs: their
    states are saved and restored, so callers' global random streams are unaffected.
    The package standardises the signals over the whole set (its own convention): one scalar mean
    and std over all ``n`` rows, the private training rows included, so this release is not covered
    by epsilon; a note says so in ``meta["private_preprocessing"]`` (see
    :func:`private_preprocessing_notes`).
    """
    n = check_int("n", n, low=20)
    if n % 10:
        raise ValueError(f"n must be a multiple of 10 (equal examples per class), got {n}")
    ts = check_real("test_size", test_size, low=0.0, high=1.0, low_open=True, high_open=True)
    dt = _check_dtype(dtype)
    if random_state is None:
        seed = 42
    elif isinstance(random_state, np.random.Generator):
        seed = int(random_state.integers(2**32))
    else:
        seed = check_int("random_state", random_state, low=0, high=2**32 - 1)
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = n
    args.train_split = 1.0 - ts
    args.seed = seed
    np_state, py_state = np.random.get_state(), _pyrandom.getstate()
    try:
        raw = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        _pyrandom.setstate(py_state)
    return Dataset(np.asarray(raw["x"], dtype=dt), np.asarray(raw["y"], dtype=np.int64),
                   np.asarray(raw["x_test"], dtype=dt), np.asarray(raw["y_test"], dtype=np.int64),
                   "multiclass", 10, name="mnist1d",
                   meta={"seed": seed, _NOTES_KEY: (_MNIST1D_NOTE.format(n=n),)})


# ----------------------------------------------------------------------------- privacy bookkeeping
def _with_note(meta: dict, note: str) -> dict:
    """A copy of ``meta`` with ``note`` appended to ``meta["private_preprocessing"]``."""
    return dict(meta, **{_NOTES_KEY: tuple(meta.get(_NOTES_KEY, ())) + (note,)})


def private_preprocessing_notes(ds: Dataset) -> tuple[str, ...]:
    """The notes of every loader / transform applied to ``ds`` that read private training rows.

    Parameters
    ----------
    ds : Dataset

    Returns
    -------
    tuple of str
        ``ds.meta["private_preprocessing"]`` in the order the steps ran; ``()`` when no step read a
        private row. Each note describes a release that the DP-SGD accounting does NOT cover.
    """
    if not isinstance(ds, Dataset):
        raise ValueError(f"ds must be a sims.data.Dataset, got {type(ds).__name__}")
    return tuple(ds.meta.get(_NOTES_KEY, ()))


# ----------------------------------------------------------------------------- checked public split
_PUBLIC_SPLIT_TOKEN = object()  # only public_split() holds it; PublicSplit(...) without it is refused
_HASH_CHUNK = 4096  # rows converted to float64 at a time (bounded memory for 70 000 x 784)


def _row_digests(X: np.ndarray) -> list:
    """blake2b digest of every row of ``X`` as contiguous float64 with ``-0.0`` mapped to ``0.0``.

    Equal rows (as real numbers, whatever their float dtype) get equal digests; the converse is only
    true up to a hash collision, so callers confirm a digest match with ``np.array_equal``.
    """
    out = []
    for start in range(0, X.shape[0], _HASH_CHUNK):
        block = np.ascontiguousarray(X[start:start + _HASH_CHUNK], dtype=np.float64) + 0.0
        out.extend(hashlib.blake2b(row, digest_size=16).digest() for row in block)
    return out


def _overlapping_rows(X_public, X_private, pub_digests=None, priv_digests=None) -> list:
    """Indices of the rows of ``X_public`` equal to some row of ``X_private``: O(n + m) expected."""
    if pub_digests is None:
        pub_digests = _row_digests(X_public)
    if priv_digests is None:
        priv_digests = _row_digests(X_private)
    index: dict = {}
    for j, h in enumerate(priv_digests):
        index.setdefault(h, []).append(j)
    hits = []
    for i, h in enumerate(pub_digests):
        js = index.get(h)
        # a digest match is confirmed exactly, so a collision can never cause a false refusal
        if js is not None and any(np.array_equal(X_public[i], X_private[j]) for j in js):
            hits.append(i)
    return hits


def _overlap_error(hits) -> ValueError:
    shown = ", ".join(str(i) for i in hits[:5]) + (", ..." if len(hits) > 5 else "")
    return ValueError(f"public split overlaps the private training rows: {len(hits)} public row(s) "
                      f"equal a private row (public indices [{shown}]); a public-data mechanism would "
                      f"then read private data")


@dataclass(frozen=True, eq=False)
class PublicSplit:
    """Public rows checked to share no row with the private training rows.

    Obtain one only from :func:`public_split` (or :func:`public_split_of`); calling
    ``PublicSplit(...)`` (or ``dataclasses.replace`` on one) raises ``TypeError``.

    Attributes
    ----------
    X : ndarray, shape (m, d)
        Public features, a read-only copy (float dtype kept; integer input becomes float64).
    y : ndarray, shape (m,)
        Public targets, a read-only copy.
    n_private : int
        Number of private rows the split was checked against.
    """

    X: np.ndarray
    y: np.ndarray
    n_private: int
    _token: InitVar[object] = None

    def __post_init__(self, _token):
        if _token is not _PUBLIC_SPLIT_TOKEN:
            raise TypeError("PublicSplit cannot be constructed directly: use "
                            "sims.data.public_split(X_public, y_public, X_private) (or "
                            "public_split_of(ds)), which checks that no public row equals a private "
                            "training row")

    @property
    def n_public(self) -> int:
        return self.X.shape[0]

    def verify_disjoint(self, X_private) -> "PublicSplit":
        """Re-check against ``X_private`` (e.g. the rows a training loop is given); return ``self``.

        Raises ``ValueError`` naming ``X_private`` on a shape mismatch, or the overlap error of
        :func:`public_split` if some public row equals a row of ``X_private``.
        """
        Xq = _check_private(X_private, self.X.shape[1])
        hits = _overlapping_rows(self.X, Xq)
        if hits:
            raise _overlap_error(hits)
        return self


def _check_private(X_private, d):
    Xq = check_finite_array("X_private", X_private, ndim=2)
    if Xq.shape[1] != d:
        raise ValueError(f"X_private must have {d} columns like X_public, got {Xq.shape[1]}")
    return Xq


def public_split(X_public, y_public, X_private) -> PublicSplit:
    """Check that no public row equals a private training row and wrap the public rows.

    Rows are compared as real numbers (``-0.0 == 0.0``; float32 and float64 rows compare by value):
    each row is hashed (blake2b of its float64 bytes, ``-0.0`` normalised), the hash sets are
    compared, and every hash match is confirmed with ``np.array_equal``. Time and memory are
    ``O((n + m) d)`` (70 000 x 784 takes well under a few seconds); labels are not compared.

    Parameters
    ----------
    X_public : array_like, shape (m, d)
        Public features, finite, ``m >= 1``, ``d >= 1``.
    y_public : array_like, shape (m,)
        Public targets, finite.
    X_private : array_like, shape (n, d)
        The private training features (``Dataset.X_train``), finite.

    Returns
    -------
    PublicSplit
        Read-only copies of ``X_public`` and ``y_public``.

    Raises
    ------
    ValueError
        On a shape or finiteness problem (naming ``X_public``, ``y_public`` or ``X_private``), or
        if some public row equals a private row ("public split overlaps the private training
        rows: ...", with the number of such rows and the first five public indices).
    """
    Xp = check_finite_array("X_public", X_public, ndim=2)
    yp = check_finite_array("y_public", y_public, ndim=1)
    if Xp.shape[0] < 1 or Xp.shape[1] < 1:
        raise ValueError(f"X_public must have at least one row and one column, got shape {Xp.shape}")
    if yp.shape[0] != Xp.shape[0]:
        raise ValueError(f"X_public and y_public must have the same number of rows, "
                         f"got {Xp.shape[0]} and {yp.shape[0]}")
    Xq = _check_private(X_private, Xp.shape[1])
    hits = _overlapping_rows(Xp, Xq)
    if hits:
        raise _overlap_error(hits)
    X = np.array(Xp, dtype=Xp.dtype if Xp.dtype.kind == "f" else np.float64, copy=True)
    y = np.array(yp, copy=True)
    X.setflags(write=False)
    y.setflags(write=False)
    return PublicSplit(X, y, int(Xq.shape[0]), _PUBLIC_SPLIT_TOKEN)


def public_split_of(ds: Dataset) -> PublicSplit | None:
    """``public_split(ds.X_public, ds.y_public, ds.X_train)``, or ``None`` without a public split."""
    if not isinstance(ds, Dataset):
        raise ValueError(f"ds must be a sims.data.Dataset, got {type(ds).__name__}")
    if ds.X_public is None:
        return None
    return public_split(ds.X_public, ds.y_public, ds.X_train)


# ----------------------------------------------------------------------------- transforms
def standardize(ds: Dataset, *, fit_on: str | None = None) -> Dataset:
    """Centre and scale every feature with the mean and standard deviation of one split.

    ``x -> (x - mean) / std`` is applied to the train, test and public features, with the
    statistics of the ``fit_on`` split. A constant feature (std 0) is only centred (scale 1), as in
    scikit-learn's ``StandardScaler``. ``meta["standardize"] = (mean, scale)``.

    Privacy: with ``fit_on="train"`` the statistics are computed from the private rows, so the
    released features are NOT covered by the DP-SGD accounting (changing one private row moves
    every row's features); the note ``"standardize: feature mean and std fitted on the n private
    training rows; this release is not covered by epsilon"`` is then appended to
    ``meta["private_preprocessing"]`` (see :func:`private_preprocessing_notes`). With
    ``fit_on="public"`` (the default whenever ``ds`` has a public split) nothing private is read;
    the public split is first checked to share no row with the private one (:func:`public_split`).

    Parameters
    ----------
    ds : Dataset
    fit_on : {"public", "train"} or None, default None
        Split whose statistics are used. ``None`` means ``"public"`` when ``ds.X_public`` is not
        ``None`` and ``"train"`` otherwise. ``"public"`` without a public split raises; split one
        off first with :func:`split_public`.

    Returns
    -------
    Dataset
        A new dataset with standardised features; ``meta`` is copied (earlier notes kept).

    Raises
    ------
    ValueError
        If ``ds`` is not a :class:`Dataset`, ``fit_on`` is not a valid choice, ``fit_on="public"``
        without a public split, or the public split overlaps the private rows.
    """
    if not isinstance(ds, Dataset):
        raise ValueError(f"ds must be a sims.data.Dataset, got {type(ds).__name__}")
    if fit_on is None:
        fit_on = "train" if ds.X_public is None else "public"
    check_choice("fit_on", fit_on, {"train", "public"})
    if fit_on == "public" and ds.X_public is None:
        raise ValueError("fit_on='public' needs a public split: call split_public(ds, fraction) first")
    if fit_on == "public":
        public_split_of(ds)  # raises if a public row is a private row (fitting would read it)
    X_fit = ds.X_train if fit_on == "train" else ds.X_public
    mean = X_fit.mean(axis=0)
    scale = X_fit.std(axis=0)
    scale = np.where(scale > 0, scale, 1).astype(ds.X_train.dtype)

    def tr(X):
        return None if X is None else ((X - mean) / scale).astype(ds.X_train.dtype)

    meta = dict(ds.meta, standardize=(mean, scale))
    if fit_on == "train":
        meta = _with_note(meta, f"standardize: feature mean and std fitted on the {ds.n_train} private "
                                f"training rows; this release is not covered by epsilon")
    return replace(ds, X_train=tr(ds.X_train), X_test=tr(ds.X_test), X_public=tr(ds.X_public),
                   X_val=tr(ds.X_val), meta=meta)


def scale_features(ds: Dataset, factor) -> Dataset:
    """Every feature of every split multiplied by the constant ``factor > 0``, e.g. ``1/16`` to map
    the digits' 0-16 pixel intensities to [0, 1].

    The factor is fixed in advance, not computed from the data, so nothing private is read and no
    note is added (contrast :func:`standardize` with ``fit_on="train"``).
    """
    if not isinstance(ds, Dataset):
        raise ValueError(f"ds must be a sims.data.Dataset, got {type(ds).__name__}")
    f = check_real("factor", factor, low=0.0, low_open=True)

    def tr(X):
        return None if X is None else (X * f).astype(ds.X_train.dtype)

    return replace(ds, X_train=tr(ds.X_train), X_test=tr(ds.X_test), X_public=tr(ds.X_public), X_val=tr(ds.X_val),
                   meta=dict(ds.meta, feature_scale=f))


def split_public(ds: Dataset, fraction, *, shift=0.0, random_state=None) -> Dataset:
    """Carve a public split off the train set; optionally move it to a shifted distribution.

    ``m = round(fraction * n_train)`` (restricted to ``[1, n_train - 1]``) random train rows become
    ``X_public, y_public`` and are removed from the private train split. The two are disjoint as
    sets of rows, not only of indices: identical train rows always go to the same side (the side
    of the copy that comes first in the random permutation), so with duplicated rows the public
    size can differ from ``m``; ``meta["public_duplicates_moved"]`` counts the rows so reassigned
    (0 without duplicates, when the split is exactly the first ``m`` rows of the permutation).
    With ``shift > 0`` the public features get a covariate shift ``x -> x + shift * u`` for a random
    unit direction ``u`` drawn from ``random_state`` (labels unchanged), so the public mean moves by
    exactly ``shift`` along ``u``: a model of public data that is informative but not identically
    distributed. ``meta["public_shift_direction"] = u``, ``meta["public_indices"]`` = the rows taken
    (indices into the original ``X_train``); other ``meta`` entries (e.g. the notes of
    :func:`private_preprocessing_notes`) are kept. Raises if ``ds`` already has a public split, if
    all train rows are identical (no disjoint split exists), or if a shifted public row happens to
    equal a private row.
    """
    if not isinstance(ds, Dataset):
        raise ValueError(f"ds must be a sims.data.Dataset, got {type(ds).__name__}")
    if ds.X_public is not None:
        raise ValueError("ds already has a public split")
    if ds.X_val is not None:
        raise ValueError("ds has a validation split: split the public part off first, then the validation one")
    frac = check_real("fraction", fraction, low=0.0, high=1.0, low_open=True, high_open=True)
    shift = check_real("shift", shift, low=0.0)
    n = ds.n_train
    if n < 2:
        raise ValueError(f"ds must have at least 2 train rows to split off a public part, got {n}")
    rng = as_generator(random_state)
    m = min(max(int(round(frac * n)), 1), n - 1)
    perm = rng.permutation(n)
    # identical rows go to the side of their first copy in the permutation
    digests = _row_digests(ds.X_train)
    first_rank: dict = {}
    for r, i in enumerate(perm):
        first_rank.setdefault(digests[i], r)
    group_rank = np.fromiter((first_rank[h] for h in digests), dtype=np.int64, count=n)
    is_pub = group_rank < m
    if is_pub.all():
        if len(first_rank) < 2:
            raise ValueError("ds.X_train rows are all identical: no public split can be disjoint "
                             "from the private rows")
        is_pub &= group_rank != group_rank.max()  # the last-drawn group stays private
    naive = np.zeros(n, dtype=bool)
    naive[perm[:m]] = True
    moved = int(np.count_nonzero(is_pub != naive))
    pub, priv = np.flatnonzero(is_pub), np.flatnonzero(~is_pub)
    u = rng.standard_normal(ds.n_features)
    u /= np.linalg.norm(u)
    Xp = ds.X_train[pub]
    X_priv = ds.X_train[priv]
    if shift > 0:
        Xp = (Xp + shift * u).astype(ds.X_train.dtype)
        hits = _overlapping_rows(Xp, X_priv, priv_digests=[digests[i] for i in priv])
        if hits:
            raise _overlap_error(hits)
    meta = dict(ds.meta, public_shift_direction=u.astype(ds.X_train.dtype), public_shift=shift,
                public_indices=pub, public_duplicates_moved=moved)
    return replace(ds, X_train=X_priv, y_train=ds.y_train[priv],
                   X_public=Xp, y_public=ds.y_train[pub], meta=meta)


def split_validation(ds: Dataset, fraction, *, random_state=None) -> Dataset:
    """Hold a private validation split out of the training rows, for choosing hyper-parameters.

    ``m = round(fraction * n_train)`` (restricted to ``[1, n_train - 1]``) rows drawn by a random
    permutation become ``X_val, y_val`` and leave ``X_train`` (both keep their original row order);
    ``meta["validation_indices"]`` holds the rows taken (indices into the original ``X_train``).

    Privacy: the validation rows are private data too. DP-SGD never reads them, so the accounted
    epsilon covers the training rows only; choosing a hyper-parameter by validation accuracy is a
    further release whose cost the accounting does not include (Papernot & Steinke 2022,
    "Hyperparameter tuning with Renyi differential privacy"). Reports that tune say so.

    Raises
    ------
    ValueError
        ``ds`` not a :class:`Dataset`, already with a validation split, with fewer than 2 training
        rows, or ``fraction`` outside (0, 1).
    """
    if not isinstance(ds, Dataset):
        raise ValueError(f"ds must be a sims.data.Dataset, got {type(ds).__name__}")
    if ds.X_val is not None:
        raise ValueError("ds already has a validation split")
    frac = check_real("fraction", fraction, low=0.0, high=1.0, low_open=True, high_open=True)
    n = ds.n_train
    if n < 2:
        raise ValueError(f"ds must have at least 2 train rows to hold out a validation split, got {n}")
    m = min(max(int(round(frac * n)), 1), n - 1)
    perm = as_generator(random_state).permutation(n)
    val, tr = np.sort(perm[:m]), np.sort(perm[m:])
    return replace(ds, X_train=ds.X_train[tr], y_train=ds.y_train[tr], X_val=ds.X_train[val],
                   y_val=ds.y_train[val], meta=dict(ds.meta, validation_indices=val))
