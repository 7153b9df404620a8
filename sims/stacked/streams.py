"""The random streams of many :func:`sims.train.train` runs, replayed without Generator objects.

A run with root ``SeedSequence`` ``root`` draws, at 0-based step ``t``, from the two PCG64
generators of ``child_sequence(root, 1, t).spawn(2)`` (:func:`sims.train.step_generators`):

* the sampling stream: ``u = rng.random(n)`` (``u_i = (x_i >> 11) 2^-53`` for the successive
  64-bit outputs ``x_i``), example ``i`` in the batch iff ``u_i < q`` (:func:`sims.sampling.poisson_mask`);
* the mechanism stream: the noise seed ``int(rng.integers(2**63))`` (:func:`sims.rng.derive_seed`),
  which for a range of exactly ``2^63`` is Lemire's bounded draw ``floor(x 2^63 / 2^64) = x >> 1``
  of the first output (the rejection threshold ``(2^64 - 2^63) mod 2^63`` is 0, so it never rejects).

PCG64 (O'Neill 2014, "PCG: A Family of Simple Fast Space-Efficient Statistically Good Algorithms
for Random Number Generation"; NumPy's ``pcg64.h``): a 128-bit LCG ``s <- s M + inc`` (mod 2^128)
whose output, computed on the NEW state, is the XSL-RR permutation
``rotr64(hi(s) ^ lo(s), hi(s) >> 58)``. The initial ``(state, inc)`` of a generator seeded by a
``SeedSequence`` comes from ``generate_state(4, uint64) = (a, b, c, d)``:
``inc = ((c << 64 | d) << 1) | 1``, ``s = (inc + (a << 64 | b)) M + inc`` (PCG's ``srandom_r``).

Here the SeedSequence pools of all steps of a run are hashed at once
(:func:`sims.rng.seed_sequence_pools`), the PCG64 states are computed in uint64 pairs by Numba
kernels, and the draws of all runs of one step are made by one kernel. Every kernel has a
plain-NumPy (Python-integer) twin, ``*_reference``, that the tests compare with it and with NumPy.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

from sims.rng import seed_sequence_pools

__all__ = ["run_states", "run_states_reference", "poisson_draws", "poisson_draws_reference",
           "noise_seeds", "noise_seeds_reference", "generator_at", "words_of_pools", "pcg_words_supported"]

_U = np.uint64
_M32 = _U(0xFFFFFFFF)
_S32, _S58, _S63, _S11, _S1 = _U(32), _U(58), _U(63), _U(11), _U(1)
_MULT = 0x2360ED051FC65DA44385DF649FCCF645  # PCG_DEFAULT_MULTIPLIER_128 (NumPy's pcg64.h)
_MULT_HI, _MULT_LO = _U(_MULT >> 64), _U(_MULT & 0xFFFFFFFFFFFFFFFF)
_M128 = (1 << 128) - 1
_TWO_M53 = 2.0 ** -53
# SeedSequence.generate_state's hash constants (numpy/random/bit_generator.pyx)
_INIT_B, _MULT_B = 0x8B51F9DD, 0x58F38DED


# ----------------------------------------------------------------------------- 128-bit arithmetic
@numba.njit(inline="always", cache=True)
def _mulhi64(a, b):
    """High 64 bits of the 128-bit product of two uint64 words (schoolbook on 32-bit halves)."""
    a0, a1 = a & _M32, a >> _S32
    b0, b1 = b & _M32, b >> _S32
    p00, p01, p10, p11 = a0 * b0, a0 * b1, a1 * b0, a1 * b1
    mid = (p00 >> _S32) + (p01 & _M32) + (p10 & _M32)
    return p11 + (p01 >> _S32) + (p10 >> _S32) + (mid >> _S32)


@numba.njit(inline="always", cache=True)
def _lcg(hi, lo, ihi, ilo):
    """One PCG64 state step ``s <- s M + inc`` (mod 2^128) on ``(hi, lo)`` words."""
    nlo = lo * _MULT_LO
    nhi = _mulhi64(lo, _MULT_LO) + lo * _MULT_HI + hi * _MULT_LO
    slo = nlo + ilo
    carry = _U(1) if slo < nlo else _U(0)
    return nhi + ihi + carry, slo


@numba.njit(inline="always", cache=True)
def _xsl_rr(hi, lo):
    """PCG's XSL-RR output: ``rotr64(hi ^ lo, hi >> 58)``."""
    x = hi ^ lo
    rot = hi >> _S58
    return (x >> rot) | (x << ((_U(64) - rot) & _S63))


# ----------------------------------------------------------------------------- initial states
def words_of_pools(pools: np.ndarray) -> np.ndarray:
    """``SeedSequence.generate_state(4, uint64)`` of every pool column: ``(4, lanes)`` uint64.

    The second hash of NumPy's SeedSequence (the lines of :func:`sims.rng.pcg64_states` before its
    Python-integer part), eight uint32 words per lane, paired little-endian into four uint64 words.
    """
    pool_size = pools.shape[0]
    words = np.empty((8, pools.shape[1]), dtype=np.uint32)
    hc = _INIT_B
    for i in range(8):
        v = pools[i % pool_size] ^ np.uint32(hc)
        hc = (hc * _MULT_B) & 0xFFFFFFFF
        v = v * np.uint32(hc)
        words[i] = v ^ (v >> np.uint32(16))
    return (words[1::2].astype(np.uint64) << np.uint64(32)) | words[0::2].astype(np.uint64)


@numba.njit(cache=True)
def _seed_pcg(w, out):
    """``out[:, lane] = (state_hi, state_lo, inc_hi, inc_lo)`` from ``w = (a, b, c, d)`` (srandom_r)."""
    for j in range(w.shape[1]):
        a, b, c, d = w[0, j], w[1, j], w[2, j], w[3, j]
        ihi = (c << _S1) | (d >> _S63)
        ilo = (d << _S1) | _U(1)
        lo = ilo + b
        hi = ihi + a + (_U(1) if lo < ilo else _U(0))
        hi, lo = _lcg(hi, lo, ihi, ilo)
        out[0, j], out[1, j], out[2, j], out[3, j] = hi, lo, ihi, ilo


def pcg_words_supported(root: np.random.SeedSequence) -> bool:
    """Whether the vectorised SeedSequence hash applies: int entropy and spawn keys (as in
    :class:`sims.train.StepStreams`' fast path) and at most ``2^32 - 1`` steps."""
    def words(x):
        if isinstance(x, (tuple, list)):
            return len(x) > 0 and all(words(v) and not isinstance(v, (tuple, list)) for v in x)
        return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_)) and int(x) >= 0

    return words(root.entropy) and all(words(k) for k in root.spawn_key)


def run_states(root: np.random.SeedSequence, total_steps: int, start: int = 0) -> np.ndarray:
    """PCG64 states of the step generators of steps ``start .. total_steps - 1`` of a run:
    ``(total_steps - start, 2, 4)`` uint64.

    ``[t - start, j] = (state_hi, state_lo, inc_hi, inc_lo)`` of the ``j``-th generator of
    ``child_sequence(root, 1, t).spawn(2)`` (``j = 0`` sampling, ``j = 1`` mechanism), i.e.
    :func:`sims.train.step_generators` ``(root, t)[j].bit_generator.state``.
    Reference: :func:`run_states_reference`.
    """
    steps = np.arange(start, total_steps, dtype=np.uint32)
    prefix = tuple(int(k) for k in root.spawn_key) + (1,)
    out = np.empty((steps.shape[0], 2, 4), dtype=np.uint64)
    for j in (0, 1):
        pools = seed_sequence_pools(root.entropy, prefix, [steps, np.full(steps.shape, j)], root.pool_size)
        tmp = np.empty((4, steps.shape[0]), dtype=np.uint64)
        _seed_pcg(words_of_pools(pools), tmp)
        out[:, j, :] = tmp.T
    return out


def run_states_reference(root: np.random.SeedSequence, total_steps: int) -> np.ndarray:
    """Plain twin of :func:`run_states`: NumPy's own ``PCG64(SeedSequence)`` states, split in words."""
    from dptheory.validation import child_sequence

    out = np.empty((total_steps, 2, 4), dtype=np.uint64)
    for t in range(total_steps):
        for j, ss in enumerate(child_sequence(root, 1, t).spawn(2)):
            st = np.random.PCG64(ss).state["state"]
            s, inc = st["state"], st["inc"]
            out[t, j] = (s >> 64, s & 0xFFFFFFFFFFFFFFFF, inc >> 64, inc & 0xFFFFFFFFFFFFFFFF)
    return out


def generator_at(words) -> np.random.Generator:
    """A NumPy ``Generator(PCG64)`` in the state ``words = (state_hi, state_lo, inc_hi, inc_lo)``
    (for the rare draws replayed through NumPy itself, e.g. a random-freeze redraw)."""
    w = [int(v) for v in words]
    g = np.random.Generator(np.random.PCG64(0))
    g.bit_generator.state = {"bit_generator": "PCG64", "state": {"state": (w[0] << 64) | w[1],
                                                                 "inc": (w[2] << 64) | w[3]},
                             "has_uint32": 0, "uinteger": 0}
    return g


# ----------------------------------------------------------------------------- per-step draws
@numba.njit(parallel=True, cache=True)
def _poisson_kernel(states, q, n, idx, counts):
    """Run ``r``: ``idx[r, :counts[r]] = flatnonzero(u < q[r])`` with ``u`` the ``n`` doubles of
    the PCG64 generator in ``states[r]`` (step, then XSL-RR output, then ``(x >> 11) 2^-53``)."""
    for r in prange(states.shape[0]):
        hi, lo, ihi, ilo = states[r, 0], states[r, 1], states[r, 2], states[r, 3]
        qr = q[r]
        k = 0
        for i in range(n):
            hi, lo = _lcg(hi, lo, ihi, ilo)
            u = np.float64(_xsl_rr(hi, lo) >> _S11) * _TWO_M53
            if u < qr:
                idx[r, k] = i
                k += 1
        counts[r] = k


def poisson_draws(states: np.ndarray, q: np.ndarray, n: int):
    """Poisson batches of R runs at one step: ``(idx (R, n) int64, counts (R,) int64)``.

    Row ``r`` of ``idx`` starts with the sorted indices of :func:`sims.sampling.poisson_batch`
    ``(n, q[r], rng)`` for the sampling generator in state ``states[r]`` (``(R, 4)`` uint64 words);
    ``counts[r]`` is the batch size. One parallel kernel over runs (one thread per run).
    Reference: :func:`poisson_draws_reference`.
    """
    R = states.shape[0]
    idx = np.empty((R, n), dtype=np.int64)
    counts = np.empty(R, dtype=np.int64)
    _poisson_kernel(np.ascontiguousarray(states), np.ascontiguousarray(q, dtype=np.float64), int(n), idx, counts)
    return idx, counts


def poisson_draws_reference(states: np.ndarray, q: np.ndarray, n: int):
    """Plain twin of :func:`poisson_draws`: NumPy's ``Generator.random(n) < q`` per run."""
    R = states.shape[0]
    idx = np.zeros((R, n), dtype=np.int64)
    counts = np.empty(R, dtype=np.int64)
    for r in range(R):
        b = np.flatnonzero(generator_at(states[r]).random(n) < q[r])
        idx[r, :b.size] = b
        counts[r] = b.size
    return idx, counts


@numba.njit(cache=True)
def _seed_kernel(states, out):
    for r in range(states.shape[0]):
        hi, lo = _lcg(states[r, 0], states[r, 1], states[r, 2], states[r, 3])
        out[r] = _xsl_rr(hi, lo) >> _S1


def noise_seeds(states: np.ndarray) -> np.ndarray:
    """``derive_seed(rng) = int(rng.integers(2**63))`` for the generators in ``states`` ((R, 4)
    words): the first output shifted right by one (module docstring), as uint64 ``(R,)``.
    Reference: :func:`noise_seeds_reference`."""
    out = np.empty(states.shape[0], dtype=np.uint64)
    _seed_kernel(np.ascontiguousarray(states), out)
    return out


def noise_seeds_reference(states: np.ndarray) -> np.ndarray:
    """Plain twin of :func:`noise_seeds`: NumPy's ``Generator.integers(2**63)``."""
    return np.array([int(generator_at(s).integers(2 ** 63)) for s in states], dtype=np.uint64)
