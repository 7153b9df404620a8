"""Same seed, same history: histories recorded before the step/chain refactor.

``tests/pinned/histories.npz`` was written by ``tests/pinned/make_pinned_histories.py`` on the code
before the one-step-function refactor; every case (each built-in chain, the ablations, both
samplings, float32 and float64) must replay it.

Bit for bit holds on one machine and one set of library builds (and it held on the machine that
recorded the file, before and after the refactor). On another CPU, OpenBLAS dispatches other GEMM
kernels (FMA and blocking differ), which moves results in the last bits; measured on a second
machine: relative L2 difference at most 6e-14 (float64) and 5e-8 (float32) over every recorded
array. The test therefore allows 1e-11 (float64) and 1e-6 (float32), norm-wise per array, and
requires exact equality of every non-finite entry and of the integer-valued records: a changed
random stream, a missing mask or a wrong scale moves results by orders of magnitude more.
``tests/test_train.py::test_bit_identical_reruns_and_seed_matters`` checks bit-identical reruns
on the machine at hand.
"""
from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve().parent / "pinned"
sys.path.insert(0, str(HERE))
import make_pinned_histories as pinned  # noqa: E402

STORE = np.load(HERE / "histories.npz")
CASES = pinned.cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_history_replays_bit_for_bit(name):
    model, ds, kw = CASES[name]
    got = pinned.run_case(model, ds, kw)
    want = {k.split("/", 1)[1]: STORE[k] for k in STORE.files if k.startswith(name + "/")}
    assert want, f"no pinned arrays for {name}"
    rtol = RTOL[np.asarray(got["params"]).dtype.type]
    for key, ref in want.items():
        assert key in got, f"{name}: {key} is no longer recorded"
        _assert_replays(np.asarray(got[key]), ref, rtol if key not in EXACT else 0.0, f"{name}: {key} changed")


RTOL = {np.float64: 1e-11, np.float32: 1e-6}
EXACT = ("history.step", "history.epoch", "history.batch_size", "history.lr")


def _assert_replays(got, ref, rtol, msg):
    assert got.shape == ref.shape, msg
    if rtol == 0.0 or not np.issubdtype(ref.dtype, np.floating):
        np.testing.assert_array_equal(got, ref, err_msg=msg)
        return
    a, b = got.astype(np.float64), ref.astype(np.float64)
    fin = np.isfinite(b)
    np.testing.assert_array_equal(np.isfinite(a), fin, err_msg=msg)
    np.testing.assert_array_equal(a[~fin], b[~fin], err_msg=msg)
    scale = np.linalg.norm(b[fin])
    assert np.linalg.norm(a[fin] - b[fin]) <= rtol * max(scale, 1e-300), msg
