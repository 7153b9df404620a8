"""Same seed, same history, bit for bit: histories recorded before the step/chain refactor.

``tests/pinned/histories.npz`` was written by ``tests/pinned/make_pinned_histories.py`` on the code
before the one-step-function refactor; every case (each built-in chain, the ablations, both
samplings, float32 and float64) must replay exactly.
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
    for key, ref in want.items():
        assert key in got, f"{name}: {key} is no longer recorded"
        np.testing.assert_array_equal(got[key], ref, err_msg=f"{name}: {key} changed")
