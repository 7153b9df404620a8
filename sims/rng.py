"""Counter-based random numbers: every draw is a pure function of (key, index).

Generator
---------
* **Mixer.** ``mix64`` is the SplitMix64 finaliser (Steele, Lea & Flood 2014,
  "Fast splittable pseudorandom number generators", OOPSLA; constants of
  Stafford's "Mix13" variant), a bijection of 64-bit words.
* **Words.** The ``i``-th word of stream ``key`` is ``mix64(key + (i+1) * GAMMA)``
  (mod 2**64) with ``GAMMA = 0x9E3779B97F4A7C15``: random access into the
  SplitMix64 sequence started at ``key``. Since it depends only on ``(key, i)``,
  a parallel fill gives the same array for any thread count or chunking.
* **Keys.** ``key_from_seed(seed, domain) = mix64(mix64(seed) + domain * GAMMA2)``
  separates uses of one seed (normals, uniforms, Poisson sampling, ...);
  ``child_key(key, r)`` derives the key of sub-stream ``r`` (e.g. replicate r).
  Two streams overlap within n words only if their keys differ by a multiple of
  GAMMA below n: probability about 2n / 2**64 for hashed keys.
* **Uniforms.** float64: the top 53 bits, ``(w >> 11) * 2**-53`` in ``[0, 1)``;
  ``uniform_open`` adds one ulp, giving ``(0, 1]`` (safe for ``log``).
  float32: each word yields two draws (low and high 32-bit halves), ``(h >> 8) * 2**-24``.
* **Normals.** Ziggurat method of Marsaglia & Tsang (2000, J. Stat. Softw. 5(8)) in the
  128-strip formulation of Doornik (2005, "An improved ziggurat method to generate
  normal random samples"): a uniform ``u`` in ``[-1, 1)`` and a strip index ``i``
  come from one word (float64) or one 32-bit half-word (float32); the fast path
  ``|u| < X[i+1]/X[i]`` returns ``u X[i]`` (about 98.8% of draws); otherwise a
  wedge/tail test runs on extra words of a per-element side stream
  ``mix64(mix64((key ^ SIDE) + (e+1) GAMMA) + (j+1) GAMMA)``, j = 0, 1, ..., so
  even a rejection keeps the value a function of (key, e) alone.

Every Numba function here has a plain-NumPy twin (suffix ``_reference``) that
implements the same arithmetic with vectorised ``uint64`` NumPy operations; the
tests check that they agree (bitwise for words and uniforms).
"""
from __future__ import annotations

import math

import numba
import numpy as np

from dptheory.validation import check_int

__all__ = [
    "GAMMA", "mix64", "key_from_seed", "child_key", "word", "uniform64", "uniform_open64",
    "normal64", "normal32_from_half", "DOMAIN_NORMAL", "DOMAIN_UNIFORM",
    "DOMAIN_REPLICATE_SAMPLING", "DOMAIN_REPLICATE_NOISE",
    "ZIG_X", "ZIG_R", "derive_seed", "seed_sequence_pools", "pcg64_states",
]

_U = np.uint64
GAMMA = _U(0x9E3779B97F4A7C15)
_GAMMA2 = _U(0xD1B54A32D192ED03)
_M1 = _U(0xBF58476D1CE4E5B9)
_M2 = _U(0x94D049BB133111EB)
_SIDE = _U(0x5851F42D4C957F2D)
_S30, _S27, _S31, _S32, _S11, _S8 = _U(30), _U(27), _U(31), _U(32), _U(11), _U(8)
_ONE = _U(1)
_MASK32 = _U(0xFFFFFFFF)
_MASK7 = _U(127)

#: Domain tags for :func:`key_from_seed` (one per use of a seed).
DOMAIN_NORMAL = 1
DOMAIN_UNIFORM = 2
DOMAIN_REPLICATE_SAMPLING = 3
DOMAIN_REPLICATE_NOISE = 4
DOMAIN_REPLICATE = 5

_TWO_M53 = 2.0 ** -53
_TWO_M52 = 2.0 ** -52


# ----------------------------------------------------------------------------- ziggurat tables
def _ziggurat_tables(n_strips: int = 128, r: float = 3.442619855899, v: float = 9.91256303526217e-3):
    """Strip edges ``X[0..C]`` and ratios ``X[i+1]/X[i]`` of the C=128 normal ziggurat.

    ``r`` is the start of the tail and ``v`` the common strip area (Marsaglia & Tsang 2000;
    Doornik 2005 for C=128). ``X[0] = v / f(r)`` is the width of the base strip
    (which includes the tail), ``X[1] = r``, ``X[i] = f^{-1}(v / X[i-1] + f(X[i-1]))``, ``X[C] = 0``,
    with ``f(x) = exp(-x^2/2)``.
    """
    f = lambda x: math.exp(-0.5 * x * x)  # noqa: E731
    x = np.zeros(n_strips + 1)
    x[0] = v / f(r)
    x[1] = r
    for i in range(2, n_strips):
        x[i] = math.sqrt(-2.0 * math.log(v / x[i - 1] + f(x[i - 1])))
    x[n_strips] = 0.0
    ratio = x[1:] / x[:-1]
    return x, ratio


ZIG_X, ZIG_R = _ziggurat_tables()
ZIG_TAIL = float(ZIG_X[1])
_ZX32 = ZIG_X.astype(np.float32)
_ZR32 = ZIG_R.astype(np.float32)


# ----------------------------------------------------------------------------- Numba primitives
@numba.njit(inline="always", cache=True)
def mix64(z):
    """SplitMix64 finaliser: a bijection of uint64 words (see module docstring)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@numba.njit(inline="always", cache=True)
def word(key, i):
    """Word ``i`` (uint64) of stream ``key``: ``mix64(key + (i+1) * GAMMA)``."""
    return mix64(key + (np.uint64(i) + _ONE) * GAMMA)


@numba.njit(inline="always", cache=True)
def uniform64(w):
    """Uniform in ``[0, 1)`` from the top 53 bits of word ``w``."""
    return np.float64(w >> _S11) * _TWO_M53


@numba.njit(inline="always", cache=True)
def uniform_open64(w):
    """Uniform in ``(0, 1]`` from the top 53 bits of word ``w`` (never 0: safe for log)."""
    return (np.float64(w >> _S11) + 1.0) * _TWO_M53


@numba.njit(cache=True)
def key_from_seed(seed, domain):
    """Stream key for ``(seed, domain)``: ``mix64(mix64(seed) + domain * GAMMA2)``."""
    return mix64(mix64(np.uint64(seed)) + np.uint64(domain) * _GAMMA2)


@numba.njit(inline="always", cache=True)
def child_key(key, r):
    """Key of sub-stream ``r`` of ``key``: ``mix64(key ^ mix64((r+1) * GAMMA2))``."""
    return mix64(key ^ mix64((np.uint64(r) + _ONE) * _GAMMA2))


@numba.njit(cache=True)
def _zig_slow(key, e, i, u, zx, zr):
    """Wedge / tail / retry part of the ziggurat for element ``e`` (float64 arithmetic)."""
    side = mix64((key ^ _SIDE) + (np.uint64(e) + _ONE) * GAMMA)
    j = np.uint64(0)
    while True:
        if i == 0:
            # Tail beyond R (Marsaglia 1964): x = -log(U1)/R, y = -log(U2), accept if 2y > x^2.
            while True:
                a = -math.log(uniform_open64(mix64(side + (j + _ONE) * GAMMA))) / ZIG_TAIL
                b = -math.log(uniform_open64(mix64(side + (j + _ONE + _ONE) * GAMMA)))
                j += _ONE + _ONE
                if b + b > a * a:
                    break
            return ZIG_TAIL + a if u >= 0.0 else -(ZIG_TAIL + a)
        x = u * zx[i]
        f0 = math.exp(-0.5 * (zx[i] * zx[i] - x * x))
        f1 = math.exp(-0.5 * (zx[i + 1] * zx[i + 1] - x * x))
        v = uniform64(mix64(side + (j + _ONE) * GAMMA))
        j += _ONE
        if f1 + v * (f0 - f1) < 1.0:
            return x
        w = mix64(side + (j + _ONE) * GAMMA)
        j += _ONE
        i = np.int64(w & _MASK7)
        u = np.float64(w >> _S11) * _TWO_M52 - 1.0
        if abs(u) < zr[i]:
            return u * zx[i]


@numba.njit(inline="always", cache=True)
def normal64(key, e, zx, zr):
    """Standard normal number ``e`` of stream ``key`` (float64 ziggurat; pass ZIG_X, ZIG_R)."""
    w = word(key, e)
    i = np.int64(w & _MASK7)
    u = np.float64(w >> _S11) * _TWO_M52 - 1.0
    if abs(u) < zr[i]:
        return u * zx[i]
    return _zig_slow(key, e, i, u, zx, zr)


@numba.njit(inline="always", cache=True)
def normal32_from_half(key, e, h, zx32, zr32, zx, zr):
    """Float32 standard normal number ``e`` from its 32-bit half-word ``h`` (float32 fast path)."""
    i = np.int64(h & _MASK7)
    u = np.float32(h >> _S8) * np.float32(2.0 ** -23) - np.float32(1.0)
    if abs(u) < zr32[i]:
        return u * zx32[i]
    return np.float32(_zig_slow(key, e, i, np.float64(u), zx, zr))


# ----------------------------------------------------------------------------- NumPy references
def _u64(x):
    return np.asarray(x, dtype=np.uint64)


def mix64_reference(z):
    """NumPy twin of :func:`mix64` (element-wise on a uint64 array, wrapping arithmetic)."""
    z = _u64(z)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> _S30)) * _M1
        z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def key_from_seed_reference(seed: int, domain: int) -> np.uint64:
    """NumPy twin of :func:`key_from_seed`."""
    with np.errstate(over="ignore"):
        k = mix64_reference(_u64([seed]))[0]
        return mix64_reference(_u64([k + _U(domain) * _GAMMA2]))[0]


def child_key_reference(key, r):
    """NumPy twin of :func:`child_key`; ``r`` may be an array (one key per entry)."""
    r = _u64(r)
    with np.errstate(over="ignore"):
        return mix64_reference(_u64(key) ^ mix64_reference((r + _ONE) * _GAMMA2))


def words_reference(key, start: int, count: int) -> np.ndarray:
    """Words ``start .. start+count-1`` of stream ``key`` (NumPy twin of :func:`word`)."""
    i = np.arange(start, start + count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return mix64_reference(_U(key) + (i + _ONE) * GAMMA)


def _zig_slow_reference(key, e, i, u):
    """Pure-Python twin of :func:`_zig_slow` (same words, same float64 operations)."""
    def side_word(j):
        with np.errstate(over="ignore"):
            s = mix64_reference(_u64([(_U(key) ^ _SIDE) + (_U(e) + _ONE) * GAMMA]))[0]
            return mix64_reference(_u64([s + (_U(j) + _ONE) * GAMMA]))[0]

    j = 0
    while True:
        if i == 0:
            while True:
                a = -math.log((float(side_word(j) >> _S11) + 1.0) * _TWO_M53) / ZIG_TAIL
                b = -math.log((float(side_word(j + 1) >> _S11) + 1.0) * _TWO_M53)
                j += 2
                if b + b > a * a:
                    break
            return ZIG_TAIL + a if u >= 0.0 else -(ZIG_TAIL + a)
        x = u * ZIG_X[i]
        f0 = math.exp(-0.5 * (ZIG_X[i] * ZIG_X[i] - x * x))
        f1 = math.exp(-0.5 * (ZIG_X[i + 1] * ZIG_X[i + 1] - x * x))
        v = float(side_word(j) >> _S11) * _TWO_M53
        j += 1
        if f1 + v * (f0 - f1) < 1.0:
            return x
        w = side_word(j)
        j += 1
        i = int(w & _MASK7)
        u = float(w >> _S11) * _TWO_M52 - 1.0
        if abs(u) < ZIG_R[i]:
            return u * ZIG_X[i]


def normal64_reference(key, start: int, count: int) -> np.ndarray:
    """Normals ``start .. start+count-1`` of stream ``key`` (NumPy twin of :func:`normal64`)."""
    w = words_reference(key, start, count)
    i = (w & _MASK7).astype(np.int64)
    u = (w >> _S11).astype(np.float64) * _TWO_M52 - 1.0
    out = u * ZIG_X[i]
    for j in np.flatnonzero(~(np.abs(u) < ZIG_R[i])):
        out[j] = _zig_slow_reference(key, start + j, int(i[j]), float(u[j]))
    return out


def normal32_reference(key, count: int) -> np.ndarray:
    """Float32 normals ``0 .. count-1`` of stream ``key``: element e uses half ``e & 1`` of word ``e >> 1``."""
    w = words_reference(key, 0, (count + 1) // 2)
    h = np.empty(2 * w.size, dtype=np.uint64)
    h[0::2] = w & _MASK32
    h[1::2] = w >> _S32
    h = h[:count]
    i = (h & _MASK7).astype(np.int64)
    u = (h >> _S8).astype(np.float32) * np.float32(2.0 ** -23) - np.float32(1.0)
    out = u * _ZX32[i]
    for j in np.flatnonzero(~(np.abs(u) < _ZR32[i])):
        out[j] = np.float32(_zig_slow_reference(key, j, int(i[j]), float(u[j])))
    return out


def check_seed(seed) -> int:
    """Validate a generator seed: an integer in ``[0, 2**64 - 1]``."""
    return check_int("seed", seed, low=0, high=2 ** 64 - 1)


def derive_seed(rng) -> int:
    """One 63-bit seed drawn from a ``numpy.random.Generator``: ``int(rng.integers(2**63))``.

    The toolkit's single way to hand a child stream (the counter-based generator here, a parameter
    initialisation, a replicate batch) a seed that is reproducible from the parent generator.
    """
    return int(rng.integers(2 ** 63))


# ----------------------------------------------------------------------------- SeedSequence children, vectorised
# NumPy's SeedSequence (numpy/random/bit_generator.pyx; O'Neill's seed_seq design): 32-bit hash
# constants, the entropy mixed into a pool of ``pool_size`` words, the pool expanded by a second hash.
_SS_INIT_A, _SS_MULT_A = np.uint32(0x43B0D7E5), np.uint32(0x931E8875)
_SS_INIT_B, _SS_MULT_B = np.uint32(0x8B51F9DD), np.uint32(0x58F38DED)
_SS_MIX_L, _SS_MIX_R = np.uint32(0xCA01F9DD), np.uint32(0x4973F715)
_SS_SHIFT = np.uint32(16)
_PCG_MULT = 0x2360ED051FC65DA44385DF649FCCF645  # PCG_DEFAULT_MULTIPLIER_128
_M128 = (1 << 128) - 1


def _int_words(value) -> list:
    """``value`` (an int >= 0) as little-endian uint32 words, ``[0]`` for 0 (NumPy's coercion rule)."""
    value = int(value)
    if value < 0:
        raise ValueError(f"SeedSequence entropy and spawn keys must be >= 0, got {value}")
    words = [value & 0xFFFFFFFF]
    value >>= 32
    while value:
        words.append(value & 0xFFFFFFFF)
        value >>= 32
    return words


def _entropy_words(entropy) -> list:
    """The uint32 words of a SeedSequence's ``entropy`` (an int or a sequence of ints)."""
    if isinstance(entropy, (int, np.integer)):
        return _int_words(entropy)
    return [w for v in entropy for w in _int_words(v)]


def _times(hc, mult) -> np.uint32:
    """``hc * mult`` mod 2**32 as a uint32 scalar (without NumPy's scalar overflow warning)."""
    return np.uint32((int(hc) * int(mult)) & 0xFFFFFFFF)


def _hashmix(value, hc):
    """One hashmix step on a vector of lanes; returns ``(value, new hash constant)``."""
    value = value ^ hc
    hc = _times(hc, _SS_MULT_A)
    value = value * hc
    return value ^ (value >> _SS_SHIFT), hc


def _mix(x, y):
    r = _SS_MIX_L * x - _SS_MIX_R * y
    return r ^ (r >> _SS_SHIFT)


def seed_sequence_pools(entropy, prefix, tail, pool_size: int = 4) -> np.ndarray:
    """Entropy pools of ``SeedSequence(entropy, spawn_key=prefix + (tail[0][c], tail[1][c], ...))``
    for every lane ``c``, as a ``(pool_size, n_lanes)`` uint32 array.

    ``tail`` is a sequence of int arrays of one length (the lanes; each entry in ``[0, 2**32)``, one
    word), ``prefix`` a tuple of ints >= 0. Vectorised twin of NumPy's ``SeedSequence.pool`` (the
    same hash, lane by lane); reference: the ``.pool`` of the NumPy objects (``tests/test_train.py``).
    """
    tail = [np.asarray(t, dtype=np.uint32) for t in tail]
    if not tail:
        raise ValueError("tail must hold at least one array of spawn-key entries")
    zero = np.zeros_like(tail[0])
    run = _entropy_words(entropy)
    run = run + [0] * (pool_size - len(run))  # the spawn key is never empty here: pad to the pool
    fixed = run + [w for v in prefix for w in _int_words(v)]
    lanes = [zero + np.uint32(w) for w in fixed] + [zero + t for t in tail]
    hc = _SS_INIT_A
    mixer = []
    for i in range(pool_size):
        v, hc = _hashmix(lanes[i] if i < len(lanes) else zero, hc)
        mixer.append(v)
    for i_src in range(pool_size):
        for i_dst in range(pool_size):
            if i_src != i_dst:
                h, hc = _hashmix(mixer[i_src], hc)
                mixer[i_dst] = _mix(mixer[i_dst], h)
    for i_src in range(pool_size, len(lanes)):
        for i_dst in range(pool_size):
            h, hc = _hashmix(lanes[i_src], hc)
            mixer[i_dst] = _mix(mixer[i_dst], h)
    return np.stack(mixer)


def pcg64_states(pools: np.ndarray) -> list:
    """The ``PCG64(seed_sequence).state["state"]`` dicts (``state``, ``inc``) of the pools of
    :func:`seed_sequence_pools` (one per column): ``generate_state(4, uint64)`` then PCG's
    ``srandom(initstate, initseq)`` (O'Neill 2014), in Python integers."""
    pool_size = pools.shape[0]
    words = np.empty((8, pools.shape[1]), dtype=np.uint32)
    hc = _SS_INIT_B
    for i in range(8):
        v = pools[i % pool_size] ^ hc
        hc = _times(hc, _SS_MULT_B)
        v = v * hc
        words[i] = v ^ (v >> _SS_SHIFT)
    w64 = (words[1::2].astype(np.uint64) << np.uint64(32)) | words[0::2].astype(np.uint64)  # little-endian pairs
    out = []
    for a, b, c, d in w64.T.tolist():
        inc = ((((c << 64) | d) << 1) | 1) & _M128
        state = (inc + ((a << 64) | b)) & _M128
        state = (state * _PCG_MULT + inc) & _M128
        out.append({"state": state, "inc": inc})
    return out
