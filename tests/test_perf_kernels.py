"""Fast paths of the sparse-update and small-model steps against plain-NumPy references.

* ``pergrad.kept_sq_norms`` / ``weighted_sum_kept`` (O(B k) Numba kernels over the kept pairs)
  against their NumPy twins and a materialised ``(B, d)`` reference: 1e-10 relative in float64,
  ~1e-5 in float32; bitwise independent of the Numba thread count;
* ``pergrad.transposed`` (tiled Numba transpose): bitwise equal to ``np.ascontiguousarray(x.T)``;
* the clip stage's choice of path (``SPARSE_MAX_KEPT``): the freeze chain gives the same update
  and metrics through the kernels and through the GEMMs (up to float rounding), and the same
  update bit for bit for the same seed;
* ``noisy_release(..., size=d)`` on a compact sum: bitwise equal to its NumPy twin and to the
  non-compact call on the scattered sum;
* ``quantiles_linear``: bitwise equal to ``np.quantile`` (default linear method);
* ``clip.flat_clip_factors`` and the fused one-layer norm against NumPy;
* ``sims.noise.standard_normal``'s small-n path (chunked kernel on one thread): bitwise equal to
  the serial kernels, for 1 and 2 threads.
No statistical tests here: every comparison is deterministic.
"""
import numba
import numpy as np

from sims.step import dpsgd_step
import pytest
from hypothesis import given, settings, strategies as st

from sims import noise, rng as _r
from sims.mechanisms import clip_noise
from sims.mechanisms import InitContext, StepContext, chain, clip, gaussian_noise, random_freeze, random_k
from sims.mechanisms._kernels import noisy_release, noisy_release_reference
from sims.mechanisms._util import quantiles_linear
from sims.models import Backprop, Layout, materialize, pergrad
from sims.models.clip import flat_clip_factors, flat_clip_factors_reference
from sims.models.pergrad import (
    kept_sq_norms, kept_sq_norms_reference, mask_blocks, sq_norms, transposed, weighted_sum_kept,
    weighted_sum_kept_reference,
)


def _bp(sizes, B, seed, dtype=np.float64, bias=True):
    lay = Layout(tuple(sizes), bias=bias)
    r = np.random.default_rng(seed)
    acts = tuple(r.standard_normal((B, sizes[l])).astype(dtype) for l in range(len(sizes) - 1))
    deltas = tuple(r.standard_normal((B, sizes[l + 1])).astype(dtype) for l in range(len(sizes) - 1))
    return Backprop(lay, acts, deltas, np.zeros(B, dtype=dtype))


def _layer_sq(lay, G):
    return np.stack([np.einsum("ij,ij->i", G[:, lay.layer_slice(l)], G[:, lay.layer_slice(l)])
                     for l in range(lay.n_layers)], axis=1)


def _rel_close(got, ref, rtol):
    scale = max(1e-300, float(np.max(np.abs(ref)))) if ref.size else 1.0
    assert got.shape == ref.shape
    assert np.all(np.abs(got.astype(np.float64) - ref) <= rtol * scale), (got, ref)


@given(sizes=st.lists(st.integers(1, 40), min_size=2, max_size=4), B=st.integers(0, 20), bias=st.booleans(),
       frac=st.sampled_from([0.0, 0.05, 0.3, 1.0]), seed=st.integers(0, 10**6))
@settings(max_examples=30)
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 2e-5)])
def test_kept_kernels_match_references(dtype, rtol, sizes, B, bias, frac, seed):
    bp = _bp(sizes, B, seed, dtype=dtype, bias=bias)
    lay = bp.layout
    r = np.random.default_rng(seed + 1)
    mask = r.random(lay.n_params) < frac
    blk = mask_blocks(lay, mask, dtype)
    bp64 = Backprop(lay, tuple(a.astype(np.float64) for a in bp.acts),
                    tuple(d.astype(np.float64) for d in bp.deltas), np.zeros(B))
    G = materialize(bp64) * mask
    ref_norms = _layer_sq(lay, G)
    got = kept_sq_norms(bp, blk)
    assert got.dtype == dtype
    _rel_close(got, ref_norms, rtol)
    _rel_close(kept_sq_norms_reference(bp, blk), ref_norms, rtol)
    for w in (r.random(B), r.random((B, lay.n_layers))):
        w = w.astype(dtype)
        ref = np.zeros(lay.n_params)
        for l in range(lay.n_layers):
            sl = lay.layer_slice(l)
            ref[sl] = (w if w.ndim == 1 else w[:, l]).astype(np.float64) @ G[:, sl]
        got = weighted_sum_kept(bp, w, blk)
        assert got.dtype == dtype and got.shape == (blk.idx.size,)
        _rel_close(got, ref[blk.idx], rtol)
        _rel_close(weighted_sum_kept_reference(bp, w, blk), ref[blk.idx], rtol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transposed_bitwise(dtype):
    bp = _bp((37, 19, 3), 23, 5, dtype=dtype)
    for (at, dT), a, d in zip(transposed(bp), bp.acts, bp.deltas):
        assert at.flags.c_contiguous and dT.flags.c_contiguous
        assert at.tobytes() == np.ascontiguousarray(a.T).tobytes()
        assert dT.tobytes() == np.ascontiguousarray(d.T).tobytes()


def test_kept_kernels_thread_count_independent():
    bp = _bp((300, 200, 10), 64, 2, dtype=np.float32)
    blk = mask_blocks(bp.layout, np.random.default_rng(3).random(bp.layout.n_params) < 0.1, np.float32)
    w = np.random.default_rng(4).random(64).astype(np.float32)
    a = (kept_sq_norms(bp, blk), weighted_sum_kept(bp, w, blk))
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        b = (kept_sq_norms(bp, blk), weighted_sum_kept(bp, w, blk))
    finally:
        numba.set_num_threads(old)
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()


def test_sq_norms_dispatch_same_values(monkeypatch):
    bp = _bp((12, 9, 4), 7, 8)
    blk = mask_blocks(bp.layout, np.random.default_rng(1).random(bp.layout.n_params) < 0.2, np.float64)
    monkeypatch.setattr(pergrad, "SPARSE_MAX_KEPT", 1.0)
    assert blk.sparse
    sparse = sq_norms(bp, blocks=blk)
    monkeypatch.setattr(pergrad, "SPARSE_MAX_KEPT", 0.0)
    assert not blk.sparse
    gemm = sq_norms(bp, blocks=blk)
    np.testing.assert_allclose(sparse, gemm, rtol=1e-12, atol=1e-300)


def _run(ch, lay, bp, steps=2, seed=1):
    p = np.zeros(lay.n_params, dtype=bp.losses.dtype)
    B = float(bp.batch_size)
    state = ch.init(InitContext(model=None, layout=lay, params=p, total_steps=10, steps_per_epoch=5, expected_batch_size=B, rng=np.random.default_rng(seed)))
    out = []
    for step in range(steps):
        sc = StepContext(model=None, layout=lay, step=step, epoch=0, params=p, bp=bp, expected_batch_size=B, rng=np.random.default_rng(100 + step))
        u, state, m = dpsgd_step(ch, state, sc)
        out.append((u, m))
    return out, state


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 1e-4)])
@pytest.mark.parametrize("per_layer", [False, True])
def test_freeze_chain_kernels_equal_gemm_path(monkeypatch, dtype, rtol, per_layer):
    """The freeze chain through the O(B k) kernels (compact sum, compact release) equals the chain
    through the mask GEMMs: same noise (same seeds and coordinates), sums equal up to rounding."""
    bp = _bp((30, 20, 5), 12, 3, dtype=dtype)
    lay = bp.layout

    def make():
        return chain(random_freeze(0.8, "constant"), clip(0.05, per_layer=per_layer), gaussian_noise(1.3))
    calls = []
    real = clip_noise.noisy_release

    def spy(*args, **kw):
        calls.append(kw.get("size"))
        return real(*args, **kw)
    monkeypatch.setattr(clip_noise, "noisy_release", spy)
    monkeypatch.setattr(pergrad, "SPARSE_MAX_KEPT", 1.0)
    sparse, st_sparse = _run(make(), lay, bp)
    sparse2, _ = _run(make(), lay, bp)
    assert calls == [lay.n_params] * 4  # the compact release ran at every step
    monkeypatch.setattr(pergrad, "SPARSE_MAX_KEPT", 0.0)
    gemm, _ = _run(make(), lay, bp)
    assert calls[4:] == [None, None]  # the (d,) release
    keep = ~st_sparse[0]["frozen"]
    for (u1, m1), (u1b, m1b), (u2, m2) in zip(sparse, sparse2, gemm):
        assert u1.tobytes() == u1b.tobytes() and m1 == m1b  # same seed -> same bits
        assert u1.dtype == dtype and np.all(u1[~keep] == 0)
        _rel_close(u1, u2.astype(np.float64), rtol)
        for key in m2:
            assert m1[key] == pytest.approx(m2[key], rel=rtol, abs=1e-12), key
    # signal_sq_before_mask is the energy of the masked clipped sum (mask-then-clip)
    G = materialize(bp).astype(np.float64) * keep
    nsq = _layer_sq(lay, G)
    if per_layer:
        c = 0.05 / np.sqrt(lay.n_layers)
        f = c / np.maximum(np.sqrt(nsq), c)
        s = sum(f[:, l] @ np.where(np.isin(np.arange(lay.n_params), np.arange(*lay.layer_slice(l).indices(
            lay.n_params))), G, 0) for l in range(lay.n_layers))
    else:
        n = np.sqrt(nsq.sum(axis=1))
        s = (0.05 / np.maximum(n, 0.05)) @ G
    assert sparse[0][1]["signal_sq_before_mask"] == pytest.approx(np.dot(s, s) / 144.0, rel=rtol)


def test_compact_sum_materialises_for_post_clip_transform(monkeypatch):
    """A post-clip transform after a sparse freeze reads ``work.sum``: the compact sum is scattered
    to a (d,) vector and the step equals the GEMM path's."""
    bp = _bp((16, 8, 3), 9, 6)
    lay = bp.layout

    def make():
        return chain(random_freeze(0.7, "constant"), clip(1.0), random_k(20, "clip_then_mask"), gaussian_noise(0.9))
    monkeypatch.setattr(pergrad, "SPARSE_MAX_KEPT", 1.0)
    a, _ = _run(make(), lay, bp)
    monkeypatch.setattr(pergrad, "SPARSE_MAX_KEPT", 0.0)
    b, _ = _run(make(), lay, bp)
    for (u1, m1), (u2, m2) in zip(a, b):
        np.testing.assert_allclose(u1, u2, rtol=1e-10, atol=1e-14)
        for key in m2:
            assert m1[key] == pytest.approx(m2[key], rel=1e-10, abs=1e-14), key


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d,frac", [(1, 1.0), (50, 0.3), (40_001, 0.9), (100, 0.0)])
def test_noisy_release_compact(dtype, d, frac):
    r = np.random.default_rng(d)
    idx = np.flatnonzero(r.random(d) < frac).astype(np.int64)
    vals = r.standard_normal(idx.size).astype(dtype)
    for seed, std, fac in [(0, 1.3, 1 / 256), (2**63 - 1, 2.5, 0.7)]:
        u, ss, zz = noisy_release(vals, idx, std, fac, seed, size=d)
        ur, ssr, zzr = noisy_release_reference(vals, idx, std, fac, seed, size=d)
        full = np.zeros(d, dtype=dtype)
        full[idx] = vals
        uf, ssf, zzf = noisy_release(full, idx, std, fac, seed)
        assert u.shape == (d,) and u.dtype == dtype
        assert u.tobytes() == ur.tobytes() == uf.tobytes()
        assert ss == pytest.approx(ssr, rel=1e-12, abs=1e-300) and ss == ssf
        assert zz == pytest.approx(zzr, rel=1e-12, abs=1e-300) and zz == zzf


_finite = st.floats(-1e6, 1e6, allow_nan=False, width=64)


@given(x=st.lists(st.one_of(_finite, st.sampled_from([0.0, -0.0, 1.0, np.inf, np.nan])), min_size=1, max_size=60),
       qs=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=4))
@settings(max_examples=200)
def test_quantiles_linear_bitwise_equal_numpy(x, qs):
    x = np.array(x)
    with np.errstate(invalid="ignore"):
        ref = np.quantile(x, qs)
    got = np.array(quantiles_linear(x, tuple(qs)))
    assert got.tobytes() == ref.tobytes(), (x, qs, got, ref)


@pytest.mark.parametrize("n", [1, 2, 256, 4097, 10_000])
def test_quantiles_linear_bitwise_equal_numpy_sizes(n):
    r = np.random.default_rng(n)
    for x in (r.random(n), np.round(r.standard_normal(n), 1), r.random(n).astype(np.float32)):
        got = np.array(quantiles_linear(x, (0.1, 0.5, 0.9)))
        assert got.tobytes() == np.quantile(x.astype(np.float64), [0.1, 0.5, 0.9]).tobytes()


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 1e-6)])
@pytest.mark.parametrize("L", [1, 3])
def test_flat_clip_factors_match_reference(dtype, rtol, L):
    r = np.random.default_rng(L)
    nsq = (r.random((50, L)) * 4).astype(dtype)
    nsq[0] = 0.0
    f, n, k = flat_clip_factors(nsq, 1.0)
    fr, nr, kr = flat_clip_factors_reference(nsq, 1.0)
    assert f.dtype == dtype and n.dtype == dtype
    np.testing.assert_allclose(f, fr, rtol=rtol)
    np.testing.assert_allclose(n, nr, rtol=rtol)
    assert f[0] == 1.0
    if L == 1:  # one layer: the same float operations, bit for bit
        assert f.tobytes() == fr.tobytes() and n.tobytes() == nr.tobytes() and k == kr
    assert abs(k - kr) <= int(np.sum(np.abs(nr - 1.0) < 1e-5))


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_layer_norms_match_einsum(dtype, rtol, bias):
    bp = _bp((33, 17, 2), 11, 4, dtype=dtype, bias=bias)
    ref = np.stack([np.einsum("ij,ij->i", d.astype(np.float64), d.astype(np.float64))
                    * (np.einsum("ij,ij->i", a.astype(np.float64), a.astype(np.float64)) + bias)
                    for a, d in zip(bp.acts, bp.deltas)], axis=1)
    got = sq_norms(bp)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, ref, rtol=rtol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 785, 8193, 40_000])
def test_standard_normal_small_n_equals_serial_kernel(dtype, n):
    key = np.uint64(_r.key_from_seed(np.uint64(77), _r.DOMAIN_NORMAL))
    ref = np.empty(n, dtype=dtype)
    if dtype == np.float64:
        noise._fill_normal64_serial(ref, key, _r.ZIG_X, _r.ZIG_R)
    else:
        noise._fill_normal32_serial(ref, key, _r._ZX32, _r._ZR32, _r.ZIG_X, _r.ZIG_R)
    old = numba.get_num_threads()
    try:
        for t in {1, old}:
            numba.set_num_threads(t)
            got = noise.standard_normal(n, 77, dtype=dtype)
            assert got.tobytes() == ref.tobytes()
            assert numba.get_num_threads() == t  # the small-n path restores the thread count
    finally:
        numba.set_num_threads(old)


@pytest.mark.parametrize("extra", ["none", "random_k", "no_noise"])
def test_deferred_signal_energy_before_mask(extra):
    """The dense clip stage defers ``signal_sq_before_mask`` (taken from the fused noise pass, or
    computed when a post-clip transform or the chain's end reads the sum): it always equals
    ``||sum_i clip_C(g_i)||^2 / B^2`` of the reference ``clipped_grad_sum``."""
    from sims.models import clipped_grad_sum

    bp = _bp((10, 6, 3), 8, 11)
    lay = bp.layout
    ts = {"none": (clip(0.3), gaussian_noise(1.1)),
          "random_k": (clip(0.3), random_k(7, "clip_then_mask"), gaussian_noise(1.1)),
          "no_noise": (clip(0.3),)}[extra]
    ch = chain(*ts, allow_non_private=True)
    (res,), _ = _run(ch, lay, bp, steps=1)
    s, _, _ = clipped_grad_sum(bp, 0.3)
    assert res[1]["signal_sq_before_mask"] == pytest.approx(np.dot(s, s) / 64.0, rel=1e-12)
    if extra == "none":
        assert res[1]["signal_sq_after_mask"] == pytest.approx(np.dot(s, s) / 64.0, rel=1e-12)
