"""Fast paths of the sparse-update step against plain-NumPy references.

* ``sims.mechanisms._kernels.noisy_release`` (fused gather + normal draw + axpy + scale + scatter)
  must equal the unfused computation with ``sims.noise.standard_normal`` and the same seed,
  bit for bit for the update, to 1e-12 (relative) for its float64 metric sums;
* ``sims.models.pergrad.row_sq`` (Numba, reassociated) against ``einsum``;
* ``sq_norms(bp, blocks=mask_blocks(...))`` against ``sq_norms(bp, mask)`` and a materialised
  reference; the cached float mask of ``random_freeze`` gives the same step as a fresh one.
No statistical tests here (all comparisons are deterministic).
"""
import numpy as np

from sims.step import dpsgd_step
import pytest
from hypothesis import given, settings, strategies as st

from sims.mechanisms import KeptSet, InitContext, StepContext, chain, clip, gaussian_noise, random_freeze
from sims.mechanisms._kernels import noisy_release, noisy_release_reference
from sims.models import Backprop, Layout, materialize
from sims.models.pergrad import MaskBlocks, mask_blocks, row_sq, row_sq_reference, sq_norms


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 7, 785, 40_001])  # 40_001 > the one-thread cutoff: chunked, parallel
@pytest.mark.parametrize("frac", [None, 0.0, 0.1, 0.9])
def test_noisy_release_equals_unfused_reference(dtype, n, frac):
    r = np.random.default_rng(n)
    s = r.standard_normal(n).astype(dtype)
    idx = None if frac is None else np.flatnonzero(r.random(n) < frac)
    for seed, std, fac in [(0, 1.3, 1 / 256), (2**63 - 1, 0.0, 3.0), (123456789, 2.5, 0.7)]:
        u, ss, zz = noisy_release(s, idx, std, fac, seed)
        ur, ssr, zzr = noisy_release_reference(s, idx, std, fac, seed)
        assert u.dtype == dtype and u.shape == (n,)
        assert u.tobytes() == ur.tobytes()
        assert ss == pytest.approx(ssr, rel=1e-12, abs=1e-300)
        assert zz == pytest.approx(zzr, rel=1e-12, abs=1e-300)
        if idx is not None and n:
            off = np.ones(n, bool)
            off[idx] = False
            assert np.all(u[off] == 0)


def test_noisy_release_thread_count_independent():
    import numba

    s = np.random.default_rng(1).standard_normal(70_000).astype(np.float32)
    idx = np.arange(0, 70_000, 2)
    a = noisy_release(s, None, 1.0, 0.5, 9)
    b = noisy_release(s, idx, 1.0, 0.5, 9)
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        a1 = noisy_release(s, None, 1.0, 0.5, 9)
        b1 = noisy_release(s, idx, 1.0, 0.5, 9)
    finally:
        numba.set_num_threads(old)
    assert a[0].tobytes() == a1[0].tobytes() and a[1:] == a1[1:]
    assert b[0].tobytes() == b1[0].tobytes() and b[1:] == b1[1:]


@pytest.mark.parametrize("dtype,rtol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@given(rows=st.integers(0, 9), cols=st.integers(0, 70), seed=st.integers(0, 10**6))
@settings(max_examples=20)
def test_row_sq_matches_reference(dtype, rtol, rows, cols, seed):
    x = np.random.default_rng(seed).standard_normal((rows, cols)).astype(dtype)
    got = row_sq(x)
    assert got.dtype == dtype and got.shape == (rows,)
    np.testing.assert_allclose(got, row_sq_reference(x.astype(np.float64)), rtol=rtol, atol=0)
    np.testing.assert_allclose(row_sq(x[:, ::2]), row_sq_reference(x[:, ::2].astype(np.float64)), rtol=rtol)


def _bp(sizes, B, seed, dtype=np.float64, bias=True):
    lay = Layout(tuple(sizes), bias=bias)
    r = np.random.default_rng(seed)
    acts = tuple(r.standard_normal((B, sizes[l])).astype(dtype) for l in range(len(sizes) - 1))
    deltas = tuple(r.standard_normal((B, sizes[l + 1])).astype(dtype) for l in range(len(sizes) - 1))
    return Backprop(lay, acts, deltas, np.zeros(B, dtype=dtype))


@given(sizes=st.lists(st.integers(1, 6), min_size=2, max_size=4), B=st.integers(1, 6), bias=st.booleans(),
       seed=st.integers(0, 10**6))
@settings(max_examples=25)
def test_sq_norms_with_blocks_matches_materialised(sizes, B, bias, seed):
    bp = _bp(sizes, B, seed, bias=bias)
    lay = bp.layout
    mask = np.random.default_rng(seed + 1).random(lay.n_params) < 0.4
    G = materialize(bp) * mask
    ref = np.stack([np.einsum("ij,ij->i", G[:, lay.layer_slice(l)], G[:, lay.layer_slice(l)])
                    for l in range(lay.n_layers)], axis=1)
    blk = mask_blocks(lay, mask, np.float64)
    np.testing.assert_allclose(sq_norms(bp, blocks=blk), ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sq_norms(bp, mask), ref, rtol=1e-10, atol=1e-12)
    Gd = materialize(bp)
    dense = np.stack([np.einsum("ij,ij->i", Gd[:, lay.layer_slice(l)], Gd[:, lay.layer_slice(l)])
                      for l in range(lay.n_layers)], axis=1)
    np.testing.assert_allclose(sq_norms(bp), dense, rtol=1e-10, atol=1e-12)


def test_mask_blocks_validation():
    lay = Layout((3, 2))
    with pytest.raises(ValueError, match="mask"):
        mask_blocks(lay, np.ones(5, bool), np.float64)
    with pytest.raises(ValueError, match="dtype"):
        mask_blocks(lay, np.ones(lay.n_params, bool), np.int32)
    blk = mask_blocks(lay, np.ones(lay.n_params, bool), np.float32)
    assert isinstance(blk, MaskBlocks) and blk.flat.dtype == np.float32
    with pytest.raises(ValueError, match="blocks"):
        sq_norms(_bp((3, 2), 2, 0), blocks=blk)  # float64 record, float32 blocks


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_freeze_cached_blocks_same_step_as_uncached(dtype):
    """Two steps of a freeze chain reuse the cached float mask; the result equals a chain whose
    cache is cleared before every step (blocks recomputed from the bool mask)."""
    bp = _bp((7, 5, 3), 6, 4, dtype=dtype)
    lay = bp.layout
    ch = chain(random_freeze(0.6, "constant"), clip(0.8), gaussian_noise(1.1))
    p = np.zeros(lay.n_params, dtype=dtype)
    ic = InitContext(model=None, layout=lay, params=p, total_steps=10, steps_per_epoch=5, expected_batch_size=6.0, rng=np.random.default_rng(1))
    s_cached = ch.init(ic)
    s_fresh = s_cached
    for step in range(3):
        sc = StepContext(model=None, layout=lay, step=step, epoch=0, params=p, bp=bp, expected_batch_size=6.0, rng=np.random.default_rng(10 + step))
        u1, s_cached, m1 = dpsgd_step(ch, s_cached, sc)
        s_fresh = (dict(s_fresh[0], keep=KeptSet(s_fresh[0]["keep"].keep)),) + s_fresh[1:]  # nothing prepared
        sc = StepContext(model=None, layout=lay, step=step, epoch=0, params=p, bp=bp, expected_batch_size=6.0, rng=np.random.default_rng(10 + step))
        u2, s_fresh, m2 = dpsgd_step(ch, s_fresh, sc)
        assert u1.tobytes() == u2.tobytes() and m1 == m2
        blk = s_cached[0]["keep"].prepared(lay, dtype)
        assert blk is s_cached[0]["keep"].prepared(lay, dtype)  # prepared once, then reused
        assert blk.flat.dtype == dtype
        assert np.array_equal(blk.flat, (~s_cached[0]["frozen"]).astype(dtype))
