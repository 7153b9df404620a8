"""The training loop's fast paths against their plain references: the same streams, batches and rows."""
from __future__ import annotations

import numpy as np
import pytest

from sims.rng import pcg64_states, seed_sequence_pools
from sims.sampling import PoissonSampler, poisson_batch, take_rows
from sims.train import StepStreams, step_generators

ROOTS = [np.random.SeedSequence(0), np.random.SeedSequence(2 ** 100 + 12345), np.random.SeedSequence([1, 2, 3, 4, 5]),
         np.random.SeedSequence(7, spawn_key=(3, 0)), np.random.SeedSequence(11, pool_size=8), np.random.SeedSequence()]


@pytest.mark.parametrize("root", ROOTS, ids=range(len(ROOTS)))
def test_seed_sequence_pools_and_pcg64_states_equal_numpys(root):
    steps = np.array([0, 1, 2, 255, 256, 4097, 2 ** 31 + 5, 2 ** 32 - 1], dtype=np.int64)
    prefix = tuple(root.spawn_key) + (1,)
    for j in (0, 1):
        pools = seed_sequence_pools(root.entropy, prefix, [steps, np.full(steps.shape, j)], root.pool_size)
        states = pcg64_states(pools)
        for c, t in enumerate(steps):
            ss = np.random.SeedSequence(root.entropy, spawn_key=prefix + (int(t), j), pool_size=root.pool_size)
            np.testing.assert_array_equal(pools[:, c], ss.pool)
            assert states[c] == np.random.PCG64(ss).state["state"]


@pytest.mark.parametrize("root", ROOTS, ids=range(len(ROOTS)))
def test_step_streams_replay_step_generators(root):
    total = 1100
    streams = StepStreams(root, total)
    for t in [0, 1, 5, 511, 512, 513, 1099, 3, 1100]:  # out of order, a block boundary, past the end
        fast = streams(t)
        ref = step_generators(root, t)
        for a, b in zip(fast, ref):
            assert a.bit_generator.state == b.bit_generator.state
        np.testing.assert_array_equal(fast[0].random(50), ref[0].random(50))
        assert int(fast[1].integers(2 ** 63)) == int(ref[1].integers(2 ** 63))
    assert root.n_children_spawned == 0  # the root is never advanced


def test_step_streams_other_entropy_takes_the_plain_path():
    root = np.random.SeedSequence(np.array([3, 4], dtype=np.uint32))
    streams = StepStreams(root, 10)
    for a, b in zip(streams(4), step_generators(root, 4)):
        assert a.bit_generator.state == b.bit_generator.state


@pytest.mark.parametrize("n,q", [(1, 1.0), (1, 0.3), (50, 0.5), (2000, 0.128), (1000, 1e-4), (300, 1.0)])
def test_poisson_sampler_draws_what_poisson_batch_draws(n, q):
    sampler = PoissonSampler(n, q)
    a, b = np.random.default_rng(9), np.random.default_rng(9)
    for _ in range(5):
        got = sampler.indices(a).copy()
        want = poisson_batch(n, q, b)
        np.testing.assert_array_equal(got, want)
        assert got.dtype == np.int64
    assert a.bit_generator.state == b.bit_generator.state  # the same draws consumed


def test_poisson_sampler_checks_its_arguments_once():
    with pytest.raises(ValueError, match="sampling_rate"):
        PoissonSampler(10, 0.0)
    with pytest.raises(ValueError, match="n"):
        PoissonSampler(0, 0.5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_take_rows_equals_np_take(dtype):
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((40, 7)) * 10).astype(dtype)
    out = np.full((30, 7), -1, dtype=dtype)
    for idx in (np.array([], dtype=np.int64), np.array([3]), np.sort(rng.choice(40, 25, replace=False)),
                rng.permutation(40)[:30]):
        got = take_rows(X, idx.astype(np.int64), out)
        np.testing.assert_array_equal(got, np.take(X, idx, axis=0))
        assert got.base is out or got is out or np.shares_memory(got, out)


def test_step_kernels_run_on_one_thread_while_blas_spins(monkeypatch):
    import numba

    import sims.noise as noise

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs a Numba pool of at least 2 threads")
    before = numba.get_num_threads()
    monkeypatch.setattr(noise, "_SPINS", [True])
    with noise.step_kernel_threads(10 ** 9, 0):
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == before
    monkeypatch.setattr(noise, "_SPINS", [False])
    with noise.step_kernel_threads(10 ** 9, 0):
        assert numba.get_num_threads() == before
    with noise.step_kernel_threads(5, 100):  # small: one thread whatever BLAS does
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == before


def test_blas_spins_is_decided_once_and_is_a_bool():
    import sims.noise as noise

    assert noise.blas_spins() in (True, False)
    assert noise.blas_spins() is noise.blas_spins()


def test_history_epsilon_equals_the_privacy_report():
    from sims.data import make_logistic
    from sims.models import logistic_regression
    from sims.train import train

    ds = make_logistic(300, 5, test_size=0.2, random_state=0)
    r = train(logistic_regression(5), ds, steps=12, batch_size=30, record_every=4, random_state=1)
    last = train(logistic_regression(5), ds, steps=12, batch_size=30, record_every=12, random_state=1)
    assert r.history["epsilon"][-1] == r.privacy["epsilon"] == last.privacy["epsilon"]
    assert np.all(np.diff(r.history["epsilon"]) > 0)
