"""Derivations behind :mod:`dptheory.communication`: bits of a message, from an encoder or a count.

Each length is derived from an explicit encoder written here (bit strings; the decoder inverts it
on every message of a small case), and the lower bound from counting the messages. Values are
``b``-bit words (``b`` = 32 for float32); the proofs treat them as integers in ``[0, 2^b)``.
"""
from __future__ import annotations

import itertools
import math

import sympy as sp

from . import derivation
from .common import check_points
from .topagg import vote_vectors

_d, _k, _b, _L = sp.symbols("d k b L", positive=True, integer=True)


def _min_index_width(d):
    """The smallest L with 2^L >= d: L-bit strings name at most 2^L coordinates."""
    L = 0
    while 2 ** L < d:
        L += 1
    return L


def _bits(x, width):
    return format(x, f"0{width}b") if width else ""


def encode_pairs(support, values, d, b):
    """``k`` (index, value) pairs, each ``L = min width`` index bits then ``b`` value bits."""
    L = _min_index_width(d)
    return "".join(_bits(i, L) + _bits(v, b) for i, v in zip(support, values))


def decode_pairs(msg, d, b):
    L = _min_index_width(d)
    chunks = [msg[j:j + L + b] for j in range(0, len(msg), L + b)]
    return (tuple(int(c[:L] or "0", 2) for c in chunks), tuple(int(c[L:], 2) for c in chunks))


def encode_bitmap(support, values, d, b):
    """A ``d``-bit support map, then the values in coordinate order."""
    return "".join("1" if i in support else "0" for i in range(d)) + "".join(_bits(v, b) for v in values)


def decode_bitmap(msg, d, b):
    support = tuple(i for i in range(d) if msg[i] == "1")
    return support, tuple(int(msg[d + j * b: d + (j + 1) * b], 2) for j in range(len(support)))


def encode_dense(values, b):
    """Every coordinate's ``b``-bit value, in order."""
    return "".join(_bits(v, b) for v in values)


def _round_trip_lengths(d, k, b):
    """``(all decode, {lengths of the pair code}, {lengths of the bitmap code})`` over every message."""
    ok, lp, lb = True, set(), set()
    for m in _messages(d, k, b):
        e1, e2 = encode_pairs(*m, d, b), encode_bitmap(*m, d, b)
        ok &= decode_pairs(e1, d, b) == m and decode_bitmap(e2, d, b) == m
        lp.add(len(e1))
        lb.add(len(e2))
    return ok, lp, lb


def _messages(d, k, b):
    """Every (support, values) message with ``k`` of ``d`` coordinates and ``b``-bit values."""
    for support in itertools.combinations(range(d), k):
        for values in itertools.product(range(2 ** b), repeat=k):
            yield support, values


@derivation("index width ceil(log2 d): the smallest L with 2^L >= d", covers=("communication.index_bits",))
def index_width(show):
    """Searched for d = 1..2100 from the definition, compared with sympy's ceiling(log2 d) (d <= 300) and the
    function (exact)."""
    from dptheory.communication import index_bits
    widths = {d: _min_index_width(d) for d in range(1, 2101)}
    ok = all(widths[d] == sp.ceiling(sp.log(d, 2)) for d in range(1, 301))
    show("smallest L with 2^L >= d, d = 1..9", sp.Tuple(*[widths[d] for d in range(1, 10)]))
    got = index_bits(list(widths))
    ok &= check_points(show, "index_bits", zip(got, widths.values()), rtol=0.0)
    return bool(ok)


@derivation("sparse messages: k (index, value) pairs k (ceil(log2 d) + b); bitmap d + k b; dense d b; the "
            "cheaper of the two", covers=("communication.sparse_index_bits", "communication.sparse_bitmap_bits",
                                          "communication.sparse_bits", "communication.dense_bits"))
def sparse_lengths(show):
    """Encoders that decode every message for d <= 6, b <= 2; lengths as sums over fields; then the functions (exact)."""
    from dptheory.communication import (
        dense_bits,
        sparse_bitmap_bits,
        sparse_bits,
        sparse_index_bits,
    )
    j = sp.Symbol("j", integer=True)
    pair_len = sp.Sum(_L + _b, (j, 1, _k)).doit()
    bitmap_len = _d + sp.Sum(_b, (j, 1, _k)).doit()
    show("index pairs: sum over k pairs of (L + b)", pair_len)
    show("bitmap: d + sum over k values of b", bitmap_len)
    show("index pairs cheaper iff", sp.simplify(pair_len - bitmap_len < 0))
    ok, pairs = True, []
    for d in range(1, 7):
        for k in range(1, d + 1):
            for b in (1, 2):
                fine, lp, lb = _round_trip_lengths(d, k, b)
                want_p = pair_len.subs({_k: k, _L: _min_index_width(d), _b: b})
                ok &= fine and lp == {want_p} and lb == {bitmap_len.subs({_d: d, _k: k, _b: b})}
                pairs += [(sparse_index_bits(k, d, value_bits=b), want_p),
                          (sparse_bitmap_bits(k, d, value_bits=b), min(lb)),
                          (sparse_bits(k, d, value_bits=b), min(lp | lb)),
                          (dense_bits(d, value_bits=b), len(encode_dense((0,) * d, b)))]
    ok &= check_points(show, "sparse_index_bits, sparse_bitmap_bits, sparse_bits, dense_bits", pairs, rtol=0.0)
    return bool(ok)


@derivation("entropy bound log2 C(d, k) + k b: the count of (support, values) messages; at most both encodings",
            covers=("communication.sparse_entropy_bits",))
def entropy_bound(show):
    """Supports counted by enumeration (d <= 12); C(d, k) <= d^k (a support is the image of a k-tuple of
    indices) and <= 2^d (a support is a subset); then the function against log2 of the exact count
    ``math.comb(d, k)`` (rtol 1e-11)."""
    from dptheory.communication import sparse_entropy_bits
    ok = True
    for d in range(1, 13):
        for k in range(1, d + 1):
            count = sum(1 for _ in itertools.combinations(range(d), k))
            ok &= count == sp.binomial(d, k) and count <= d ** k and count <= 2 ** d
    ok &= sum(1 for _ in _messages(5, 2, 2)) == sp.binomial(5, 2) * 2 ** (2 * 2)
    bound = sp.log(sp.binomial(_d, _k) * 2 ** (_k * _b), 2)
    show("log2 #messages", sp.expand_log(bound, force=True))
    show("log2 C(d, k) <= k log2 d <= k ceil(log2 d), and <= d", sp.true if ok else sp.false)
    pts = [(1, 1, 32), (3, 10, 32), (50, 100, 1), (1000, 10 ** 6, 32), (20000, 10 ** 6, 64), (5 * 10 ** 4, 10 ** 5, 1)]
    pairs = [(sparse_entropy_bits(k, d, value_bits=b), math.log2(math.comb(d, k)) + k * b) for k, d, b in pts]
    ok &= check_points(show, "sparse_entropy_bits", pairs, rtol=1e-11, atol=1e-12)
    return bool(ok)


def encode_votes_ternary(v):
    """Two bits per coordinate: 00 for 0, 01 for +1, 10 for -1."""
    return "".join({0: "00", 1: "01", -1: "10"}[int(x)] for x in v)


@derivation("TopAgg votes: k (ceil(log2 d) + 1) as (index, sign) pairs, 2 d as a ternary vector; low rank r (m + n) b",
            covers=("communication.topagg_vote_bits", "communication.low_rank_bits"))
def votes_and_low_rank(show):
    """Both vote encoders are injective on all C(d, k) 2^k vote vectors (d <= 5); PowerSGD's factors P (m x r) and
    Q (n x r) hold r (m + n) entries; then the functions (exact)."""
    from dptheory.communication import low_rank_bits, topagg_vote_bits
    ok, pairs = True, []
    for d in range(1, 6):
        for k in range(1, d + 1):
            vs = vote_vectors(d, k)
            ok &= len(vs) == sp.binomial(d, k) * 2 ** k
            sparse = [encode_pairs([i for i in range(d) if v[i]], [int(int(v[i]) > 0) for i in range(d) if v[i]], d, 1)
                      for v in vs]
            tern = [encode_votes_ternary(v) for v in vs]
            ok &= len(set(sparse)) == len(set(tern)) == len(vs)
            ok &= math.log2(len(vs)) <= min(len(sparse[0]), len(tern[0]))
            pairs += [(topagg_vote_bits(k, d), len(sparse[0])), (topagg_vote_bits(k, d, encoding="ternary"), len(tern[0]))]
    m, n, r = sp.symbols("m n r", positive=True, integer=True)
    entries = sp.MatrixSymbol("P", m, r).shape[0] * r + sp.MatrixSymbol("Q", n, r).shape[0] * r
    show("entries of P (m x r) and Q (n x r)", sp.factor(entries))
    for mm, nn, rr, b in ((3, 4, 1, 32), (100, 50, 4, 32), (784, 128, 2, 64)):
        pairs.append((low_rank_bits(mm, nn, rr, value_bits=b), entries.subs({m: mm, n: nn, r: rr}) * b))
    ok &= check_points(show, "topagg_vote_bits, low_rank_bits", pairs, rtol=0.0)
    return bool(ok)
