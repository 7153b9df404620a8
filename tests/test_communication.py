"""dptheory.communication against real encodings: random sparse vectors (and the simulator's releases)
are encoded to bit strings / bytes here, decoded back, and their lengths compared with the closed forms."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dptheory import communication as cm
from sims.mechanisms import (
    InitContext,
    chain,
    clip,
    gaussian_noise,
    low_rank,
    top_k,
    topagg,
)
from sims.mechanisms.topagg import teacher_votes
from sims.models import materialize
from sims.models.dense import init_params, mlp
from sims.step import dpsgd_step, step_context

FAST = settings(derandomize=True, max_examples=40, deadline=None)
DTYPES = {32: np.float32, 64: np.float64}


# ----------------------------------------------------------------------------- reference encoders
def value_bits_of(x, b):
    """The IEEE bytes of the values as a bit string (b = 32 or 64)."""
    raw = np.asarray(x, dtype=DTYPES[b]).tobytes()
    return "".join(format(byte, "08b") for byte in raw)


def encode_index_pairs(x, b):
    d = x.size
    width = max(d - 1, 0).bit_length()
    idx = np.flatnonzero(x)
    return "".join((format(int(i), f"0{width}b") if width else "") + value_bits_of(x[i], b) for i in idx)


def decode_index_pairs(msg, d, b):
    width = max(d - 1, 0).bit_length()
    out = np.zeros(d, dtype=DTYPES[b])
    for j in range(0, len(msg), width + b):
        i = int(msg[j:j + width], 2) if width else 0
        out[i] = np.frombuffer(int(msg[j + width:j + width + b], 2).to_bytes(b // 8, "big"), dtype=DTYPES[b])[0]
    return out


def encode_bitmap(x, b):
    return "".join("1" if v != 0 else "0" for v in x) + value_bits_of(x[x != 0], b)


def decode_bitmap(msg, d, b):
    out = np.zeros(d, dtype=DTYPES[b])
    idx = [i for i in range(d) if msg[i] == "1"]
    vals = np.frombuffer(int(msg[d:], 2).to_bytes(len(idx) * b // 8, "big"), dtype=DTYPES[b]) if idx else []
    out[idx] = vals
    return out


def encode_ternary(v):
    """2 bits per coordinate of a {-1, 0, +1} vector."""
    return "".join({0: "00", 1: "01", -1: "10"}[int(x)] for x in v)


def encode_index_signs(v):
    width = max(v.size - 1, 0).bit_length()
    return "".join((format(int(i), f"0{width}b") if width else "") + ("1" if v[i] > 0 else "0") for i in np.flatnonzero(v))


def random_sparse(rng, k, d, b):
    x = np.zeros(d, dtype=DTYPES[b])
    vals = rng.standard_normal(k).astype(DTYPES[b])
    vals[vals == 0] = 1.0
    x[rng.choice(d, k, replace=False)] = vals
    return x


# ----------------------------------------------------------------------------- brute force
@FAST
@given(d=st.integers(1, 3000), frac=st.floats(0.0, 1.0), b=st.sampled_from([32, 64]), seed=st.integers(0, 2 ** 31))
def test_encodings_of_random_sparse_vectors(d, frac, b, seed):
    rng = np.random.default_rng(seed)
    k = max(1, round(frac * d))
    x = random_sparse(rng, k, d, b)
    pairs, bitmap = encode_index_pairs(x, b), encode_bitmap(x, b)
    np.testing.assert_array_equal(decode_index_pairs(pairs, d, b), x)
    np.testing.assert_array_equal(decode_bitmap(bitmap, d, b), x)
    assert len(pairs) == cm.sparse_index_bits(k, d, value_bits=b)
    assert len(bitmap) == cm.sparse_bitmap_bits(k, d, value_bits=b)
    assert min(len(pairs), len(bitmap)) == cm.sparse_bits(k, d, value_bits=b)
    name = f"float{b}"
    assert 8 * len(x.tobytes()) == cm.dense_bits(d, value_bits=name) == cm.dense_bits(d, value_bits=b)
    assert cm.index_bits(d) == (math.ceil(math.log2(d)) if d > 1 else 0)


@FAST
@given(d=st.integers(1, 500), frac=st.floats(0.0, 1.0), seed=st.integers(0, 2 ** 31))
def test_vote_encodings(d, frac, seed):
    rng = np.random.default_rng(seed)
    k = max(1, round(frac * d))
    G = rng.standard_normal((3, d))
    V, _ = teacher_votes(G, k, rng)           # the simulator's vote vectors
    for v in V:
        assert len(encode_index_signs(v)) == cm.topagg_vote_bits(k, d)
        assert len(encode_ternary(v)) == cm.topagg_vote_bits(k, d, encoding="ternary")
    # the counting bound of a vote message: log2(C(d, k) 2^k) = sparse_entropy_bits with 1-bit values
    assert cm.sparse_entropy_bits(k, d, value_bits=1) == pytest.approx(math.log2(math.comb(d, k)) + k, rel=1e-11)
    assert cm.sparse_entropy_bits(k, d, value_bits=1) <= cm.topagg_vote_bits(k, d) + 1e-9


def test_entropy_bound_is_the_count_of_messages_for_small_d():
    """log2 of the number of distinct (support, values) messages, enumerated (d <= 10, 2-bit values)."""
    import itertools
    for d in range(1, 11):
        for k in range(1, d + 1):
            supports = sum(1 for _ in itertools.combinations(range(d), k))
            assert cm.sparse_entropy_bits(k, d, value_bits=2) == pytest.approx(math.log2(supports * 4 ** k),
                                                                              rel=1e-12, abs=1e-12)


def test_bound_ordering_vectorised():
    """entropy bound <= min(index pairs, bitmap) <= each, over a grid of (k, d), broadcast together."""
    d = np.array([1, 2, 3, 10, 100, 1000, 10 ** 5, 10 ** 7])[:, None]
    k = np.unique(np.round(np.geomspace(1, 10 ** 7, 40)).astype(np.int64))[None, :]
    k = np.minimum(k, d)
    for b in (1, 16, 32, 64):
        H = cm.sparse_entropy_bits(k, d, value_bits=b)
        ip, bm, best = (cm.sparse_index_bits(k, d, value_bits=b), cm.sparse_bitmap_bits(k, d, value_bits=b),
                        cm.sparse_bits(k, d, value_bits=b))
        assert H.shape == ip.shape == bm.shape == best.shape == k.shape
        assert np.all(H <= best * (1 + 1e-12)) and np.all(best == np.minimum(ip, bm))
        assert np.all(best <= cm.dense_bits(d, value_bits=b) + d)   # never worse than bitmap with k = d
        assert np.all(H >= k * b * (1 - 1e-12))


def test_index_pairs_win_below_the_crossover():
    d = 4096   # 12 index bits: pairs win iff 12 k < d
    k = np.arange(1, d + 1)
    cheaper = cm.sparse_index_bits(k, d) < cm.sparse_bitmap_bits(k, d)
    np.testing.assert_array_equal(cheaper, 12 * k < d)


# ----------------------------------------------------------------------------- the simulator's releases
def _contexts(sizes=(8, 6, 3), B=10, seed=0):
    model = mlp(sizes)
    params = init_params(model, random_state=seed)
    r = np.random.default_rng(seed + 1)
    X, y = r.standard_normal((B, sizes[0])), r.integers(0, sizes[-1], B)
    sc = step_context(model, params, X, y, step=0, epoch=0, expected_batch_size=float(B), rng=np.random.default_rng(3))
    ic = InitContext(model=model, layout=model.layout, params=params, total_steps=10, steps_per_epoch=5,
                     expected_batch_size=float(B), public=None, rng=np.random.default_rng(4))
    return ic, sc


def _run(ch):
    ic, sc = _contexts()
    u, _, _ = dpsgd_step(ch, ch.init(ic), sc)
    return u, sc


@pytest.mark.parametrize("k", [1, 5, 40])
def test_noisy_top_k_release_costs_the_closed_form(k):
    u, _ = _run(chain(clip(1.0), gaussian_noise(1.0), top_k(k, "noisy")))
    d, b = u.size, 64
    assert np.count_nonzero(u) == k
    pairs, bitmap = encode_index_pairs(u, b), encode_bitmap(u, b)
    np.testing.assert_array_equal(decode_index_pairs(pairs, d, b), u)
    assert min(len(pairs), len(bitmap)) == cm.sparse_bits(k, d, value_bits="float64")


@pytest.mark.parametrize("k", [1, 4, 20])
def test_topagg_messages_cost_the_closed_form(k):
    """Each teacher's vote (from the step's batch) as index-sign pairs; the step's ternary release as 2 bits a coordinate."""
    ic, sc = _contexts()
    ch = chain(topagg(k, 1.0, beta=0.1))
    u, _, _ = dpsgd_step(ch, ch.init(ic), sc)
    d = u.size
    assert set(np.unique(u)) <= {-1.0, 0.0, 1.0}
    assert len(encode_ternary(u)) == cm.topagg_vote_bits(k, d, encoding="ternary") == 2 * d
    V, _ = teacher_votes(materialize(sc.bp), k, np.random.default_rng(0))
    assert {len(encode_index_signs(v)) for v in V} == {cm.topagg_vote_bits(k, d)}


@pytest.mark.parametrize("rank", [1, 2])
def test_low_rank_release_is_sent_by_its_factors(rank):
    """The simulator's rank-r weight matrices are rebuilt exactly from r (m + n) values (truncated SVD)."""
    u, sc = _run(chain(clip(1.0), gaussian_noise(1.0), low_rank(rank)))
    lay = sc.layout
    for layer in range(lay.n_layers):
        m, n = lay.sizes[layer + 1], lay.sizes[layer]
        M = u[lay.weight_slice(layer)].reshape(m, n)
        U, s, Vt = np.linalg.svd(M)
        P, Q = U[:, :rank] * s[:rank], Vt[:rank].T
        np.testing.assert_allclose(P @ Q.T, M, atol=1e-12)
        assert 8 * (len(P.astype(np.float64).tobytes()) + len(Q.astype(np.float64).tobytes())) == \
            cm.low_rank_bits(m, n, rank, value_bits="float64")


# ----------------------------------------------------------------------------- arguments
@pytest.mark.parametrize("call, name", [
    (lambda: cm.index_bits(0), "d"),
    (lambda: cm.dense_bits(5, value_bits=0), "value_bits"),
    (lambda: cm.dense_bits(5, value_bits="int8"), "value_bits"),
    (lambda: cm.sparse_bits(6, 5), "k"),
    (lambda: cm.sparse_index_bits(0, 5), "k"),
    (lambda: cm.sparse_bitmap_bits([1, 2], [3, 4, 5]), "k and d"),
    (lambda: cm.sparse_entropy_bits(1.5, 5), "k"),
    (lambda: cm.topagg_vote_bits(1, 5, encoding="unary"), "encoding"),
    (lambda: cm.low_rank_bits(3, 4, 4), "rank"),
    (lambda: cm.low_rank_bits(0, 4, 1), "m"),
])
def test_errors_name_the_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_scalars_are_python_numbers():
    assert isinstance(cm.sparse_bits(3, 100), int) and isinstance(cm.index_bits(7), int)
    assert isinstance(cm.sparse_entropy_bits(3, 100), float)
