"""Argument validation shared by ``dptheory`` and ``sims`` (the project's one validation module).

Every public function checks its arguments at the boundary and raises a ``ValueError`` that
names the parameter and the allowed range, never returning NaN or silently clamping
(scikit-learn style). :func:`as_seed_sequence` is the one ``random_state`` normaliser;
:func:`as_generator` is its ``Generator`` view.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["check_real", "check_int", "check_finite_array", "check_choice", "check_delta", "check_broadcast",
           "check_real_array", "check_int_array", "check_k_d", "float_or_array",
           "as_seed_sequence", "as_generator", "child_sequence"]


def _interval(low, high, low_open, high_open) -> str:
    lo = "-inf" if low is None else repr(low)
    hi = "inf" if high is None else repr(high)
    left = "(" if (low_open or low is None) else "["
    right = ")" if (high_open or high is None) else "]"
    return f"{left}{lo}, {hi}{right}"


def check_real(name: str, value, *, low=None, high=None, low_open=False, high_open=False) -> float:
    """Return ``value`` as a finite float inside the given interval, else raise ``ValueError``.

    ``low_open`` / ``high_open`` make the corresponding end exclusive.
    """
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    rng = _interval(low, high, low_open, high_open)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite and in {rng}, got {value!r}")
    if low is not None and (v < low or (low_open and v == low)):
        raise ValueError(f"{name} must be in {rng}, got {value!r}")
    if high is not None and (v > high or (high_open and v == high)):
        raise ValueError(f"{name} must be in {rng}, got {value!r}")
    return v


def check_int(name: str, value, *, low=None, high=None) -> int:
    """Return ``value`` as an int inside ``[low, high]``; integral floats (e.g. ``1e6``) are accepted."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if isinstance(value, (numbers.Integral, np.integer)):
        v = int(value)
    elif isinstance(value, (numbers.Real, np.floating)) and math.isfinite(value) and float(value).is_integer():
        v = int(value)
    else:
        raise ValueError(f"{name} must be an integer in {_interval(low, high, False, False)}, got {value!r}")
    if (low is not None and v < low) or (high is not None and v > high):
        raise ValueError(f"{name} must be an integer in {_interval(low, high, False, False)}, got {value!r}")
    return v


def check_finite_array(name: str, value, *, ndim=None, dtype=None) -> np.ndarray:
    """Return ``value`` as an array with only finite entries (and ``ndim`` dimensions if given)."""
    arr = np.asarray(value, dtype=dtype)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must contain only finite values (found NaN or inf)")
    return arr


def check_choice(name: str, value, choices) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError`` listing them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


def check_delta(delta, n=None) -> float:
    """``delta`` in ``(0, 1)``; with the dataset size ``n``, also ``delta < 1/n``.

    A ``delta >= 1/n`` admits a mechanism that publishes one random example outright and still
    claims ``(epsilon, delta)``-DP (Dwork & Roth 2014, Sec. 2.3), so it is refused, naming ``n``.
    """
    d = check_real("delta", delta, low=0.0, high=1.0, low_open=True, high_open=True)
    if n is not None and d * n >= 1.0:
        raise ValueError(f"delta must be below 1/n = {1.0 / n:.6g} for n = {n} training examples "
                         f"(a delta >= 1/n permits publishing a random example), got {delta!r}")
    return d


def check_broadcast(**arrays) -> tuple:
    """The common NumPy broadcast shape of the named arguments, else a ``ValueError`` naming them.

    ``check_broadcast(k=[1, 2, 3], d=[10, 20])`` raises ``ValueError("k and d do not broadcast
    together: k has shape (3,), d has shape (2,)")`` instead of NumPy's anonymous "shape mismatch".
    The parameters named are those whose sizes conflict along some axis (aligned from the right,
    sizes other than 1 that differ); scalars and size-1 axes never conflict. Values are only
    inspected for their shape (``np.shape``); a ragged sequence raises ``ValueError`` naming it.

    Parameters
    ----------
    **arrays : array_like
        The arguments, by parameter name, in the order the message should list them.

    Returns
    -------
    tuple of int
        ``np.broadcast_shapes`` of all the shapes (``()`` for scalars only).
    """
    shapes = {}
    for name, value in arrays.items():
        try:
            shapes[name] = tuple(np.shape(value))
        except ValueError:   # ragged nested sequence
            raise ValueError(f"{name} must be a scalar or a regular (non-ragged) array") from None
    try:
        return tuple(np.broadcast_shapes(*shapes.values()))
    except ValueError:
        pass
    bad = []
    for axis in range(1, max(len(s) for s in shapes.values()) + 1):
        sizes = {n: s[-axis] for n, s in shapes.items() if len(s) >= axis and s[-axis] != 1}
        if len(set(sizes.values())) > 1:
            bad += [n for n in sizes if n not in bad]
    bad = [n for n in shapes if n in bad]   # keep the caller's order
    names = ", ".join(bad[:-1]) + " and " + bad[-1]
    detail = ", ".join(f"{n} has shape {shapes[n]}" for n in bad)
    raise ValueError(f"{names} do not broadcast together: {detail}")


def check_real_array(name, value, *, low=None, high=None, low_open=False, high_open=False):
    """Vectorised :func:`check_real`: a finite float64 array (or scalar) inside the interval, else ValueError
    naming ``name`` and the interval."""
    if np.ndim(value) == 0:
        return np.float64(check_real(name, value, low=low, high=high, low_open=low_open,
                                     high_open=high_open))
    arr = check_finite_array(name, value).astype(np.float64)
    bad = np.zeros(arr.shape, bool)
    if low is not None:
        bad |= (arr <= low) if low_open else (arr < low)
    if high is not None:
        bad |= (arr >= high) if high_open else (arr > high)
    if bad.any():   # let check_real build the message (names the parameter and the interval)
        check_real(name, arr[bad].flat[0], low=low, high=high, low_open=low_open, high_open=high_open)
    return arr


def check_int_array(name, value, *, low=None, high=None):
    """Vectorised :func:`check_int` (integral floats accepted); returns an int64 array (or scalar)."""
    if np.ndim(value) == 0:
        return np.int64(check_int(name, value, low=low, high=high))
    arr = check_finite_array(name, value)
    if arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
        check_int(name, float(arr[arr != np.round(arr)].flat[0]))
    arr = arr.astype(np.int64)
    for v in arr.flat:   # cheap: only reached for bad or small arrays in practice
        if (low is not None and v < low) or (high is not None and v > high):
            check_int(name, int(v), low=low, high=high)
    return arr


def check_k_d(k, d):
    """``(k, d)`` as int64 arrays (or scalars) with ``1 <= k <= d`` elementwise, else ValueError naming them."""
    d = check_int_array("d", d, low=1)
    k = check_int_array("k", k, low=1)
    if np.any(k > d):
        raise ValueError(f"k must be an integer in [1, d], got k={k!r} with d={d!r}")
    return k, d


def float_or_array(x):
    """``x`` as a Python float when it is a scalar, else a float64 array (the closed forms' outputs)."""
    x = np.asarray(x, dtype=np.float64)
    return float(x) if x.ndim == 0 else x



_RS_ERROR = "random_state must be None, an int >= 0, a numpy SeedSequence or Generator, got {!r}"


def as_seed_sequence(random_state) -> np.random.SeedSequence:
    """The root ``SeedSequence`` of ``random_state``: the project's one ``random_state`` rule.

    ``None``: fresh OS entropy (``.entropy`` records it, so the run can be replayed); an int
    ``>= 0``: ``SeedSequence(int)``; a ``SeedSequence``: itself; a ``Generator``:
    ``SeedSequence(int(gen.integers(2**63)))`` (one draw). Anything else raises ``ValueError``.
    """
    if random_state is None:
        return np.random.SeedSequence()
    if isinstance(random_state, np.random.SeedSequence):
        return random_state
    if isinstance(random_state, np.random.Generator):
        return np.random.SeedSequence(int(random_state.integers(2 ** 63)))
    if isinstance(random_state, (numbers.Integral, np.integer)) and not isinstance(random_state, bool):
        if int(random_state) >= 0:
            return np.random.SeedSequence(int(random_state))
    raise ValueError(_RS_ERROR.format(random_state))


def child_sequence(root: np.random.SeedSequence, *key: int) -> np.random.SeedSequence:
    """The child of ``root`` at spawn key ``root.spawn_key + key``, without touching ``root``.

    ``child_sequence(root, r)`` is the ``r``-th child that a fresh ``root.spawn`` would give, but
    ``root.spawn`` advances the root's counter, so a caller's SeedSequence passed twice would give
    other streams the second time; this does not.
    """
    return np.random.SeedSequence(root.entropy, spawn_key=tuple(root.spawn_key) + tuple(int(k) for k in key),
                                  pool_size=root.pool_size)


def as_generator(random_state) -> np.random.Generator:
    """A ``Generator`` for ``random_state``: a ``Generator`` is returned as is (shared, so draws
    advance it); anything else is ``default_rng(as_seed_sequence(random_state))`` (for an int this
    is ``default_rng(int)``, the same stream)."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    return np.random.default_rng(as_seed_sequence(random_state))
