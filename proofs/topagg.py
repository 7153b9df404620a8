"""Derivations behind :mod:`dptheory.topagg` (docs/theory.md §1.6, TopAgg-style sign votes).

Conventions: a vote vector is ``v in {-1, 0, +1}^d`` with exactly ``k`` non-zero entries; the vote
sum over teachers is ``S(D) = sum_t v_t``; the noise on ``S`` is ``N(0, s^2 I_d)`` (``s`` absolute).
"""
from __future__ import annotations

import itertools

import numpy as np
import sympy as sp

from . import derivation
from .common import check_points, normal_pdf

_Z = sp.Symbol("z", real=True)
_S = sp.Symbol("s", positive=True)           # absolute noise std
_DELTA = sp.Symbol("Delta", positive=True)   # L2 sensitivity
_ALPHA = sp.Symbol("alpha", positive=True)
_Q = sp.Symbol("q", positive=True)
_DK = [(d, k) for d in range(1, 6) for k in range(1, d + 1)]   # exhaustive (d, k) grid


def vote_vectors(d, k):
    """Every vector of ``{-1, 0, +1}^d`` with exactly ``k`` non-zero entries, as tuples of sympy Integers."""
    out = []
    for support in itertools.combinations(range(d), k):
        for signs in itertools.product((-1, 1), repeat=k):
            v = [sp.Integer(0)] * d
            for i, sgn in zip(support, signs):
                v[i] = sp.Integer(sgn)
            out.append(tuple(v))
    return out


def _sq_norm(v):
    return sum(x * x for x in v)


def _max_change(d, k):
    """``(max ||v||^2, max ||v - v'||^2)`` over all vote vectors (exact integers)."""
    vs = vote_vectors(d, k)
    add = max(_sq_norm(v) for v in vs)
    rep = max(_sq_norm([a - b for a, b in zip(v, w)]) for v in vs for w in vs)
    return add, rep


def _slice_teacher_change(n):
    """|S(D) - S(D - x_0)| for d = k = 1, teachers = consecutive pairs of ``x_i = (-1)^i (n - i)``.

    Removing ``x_0`` re-pairs every later example: each pair ``(x_{2j}, x_{2j+1})`` sums to ``+1``
    and each new pair ``(x_{2j+1}, x_{2j+2})`` to ``-1``, so every teacher flips its vote.
    """
    x = [(-1) ** i * (n - i) for i in range(n)]

    def votes(xs):
        return sum(1 if sum(xs[j:j + 2]) >= 0 else -1 for j in range(0, len(xs), 2))
    return abs(votes(x) - votes(x[1:]))


def _vote_sum_difference(show):
    """S(D + x) - S(D) and S(D - x + x') - S(D) from the definition of S, symbolically (3 teachers, d = 2)."""
    v = [sp.Matrix(sp.symbols(f"v{t}_1:3", real=True)) for t in range(4)]

    def S(teachers):
        return sum(teachers, sp.zeros(2, 1))
    add = sp.simplify(S(v[:3] + [v[3]]) - S(v[:3]))
    rep = sp.simplify(S(v[:2] + [v[3]]) - S(v[:3]))
    show("S(D + x) - S(D)", add.T)
    show("S(D with x_2 replaced by x) - S(D)", rep.T)
    return add == v[3] and rep == v[3] - v[2]


@derivation("TopAgg vote sum: sensitivity max ||v|| = sqrt(k) (add/remove), max ||v - v'|| = 2 sqrt(k) "
            "(replace-one), unbounded for batch-slice teachers", covers=("topagg.topagg_sensitivity",))
def topagg_sensitivity(show):
    """The change of S is one vote vector (or a difference of two), so the sensitivity is a max over
    vote vectors: enumerated exhaustively for d <= 5, every k; then the function (rtol 1e-15)."""
    from dptheory.topagg import topagg_sensitivity as sens
    ok = _vote_sum_difference(show)
    derived = {}
    for d, k in _DK:
        add, rep = _max_change(d, k)
        derived[(d, k)] = (sp.sqrt(add), sp.sqrt(rep))
        ok &= add == k and rep == 4 * k
    show("max ||v||, max ||v - v'|| over all vote vectors (d = 5, k = 3)", sp.Tuple(*derived[(5, 3)]))
    pairs = [(sens(k), derived[(d, k)][0]) for d, k in _DK]
    pairs += [(sens(k, neighbouring="replace_one"), derived[(d, k)][1]) for d, k in _DK]
    ok &= check_points(show, "topagg_sensitivity", pairs, rtol=1e-15)
    changes = [_slice_teacher_change(2 * m) for m in range(1, 9)]
    show("slice teachers (pairs), d = k = 1: |change| for batches of 2, 4, ..., 16 (2 sqrt(k) = 2)",
         sp.Tuple(*changes))
    ok &= changes == [2 * m for m in range(1, 9)]
    try:
        sens(1, teacher_size=2)
        ok = False
    except ValueError:
        pass
    return bool(ok)


def _gaussian_divergence(show=None):
    r"""Renyi divergence of order alpha of N(Delta, s^2) from N(0, s^2), from its definition."""
    expo = sp.expand(-(_ALPHA * (_Z - _DELTA) ** 2 + (1 - _ALPHA) * _Z ** 2) / (2 * _S ** 2))
    integral = sp.simplify(sp.integrate(sp.exp(expo), (_Z, -sp.oo, sp.oo)) / (sp.sqrt(2 * sp.pi) * _S))
    rdp = sp.simplify(sp.expand_log(sp.log(integral), force=True) / (_ALPHA - 1))
    if show:
        show("E_{N(0,s^2)}[(p_Delta/p_0)^alpha]", integral)
        show("D_alpha(N(Delta, s^2) || N(0, s^2))", rdp)
    return rdp


def _subsampled_moment(order, delta, s):
    """A_alpha = E_{N(0,s^2)}[((1-q) + q p_Delta/p_0)^alpha] for an integer order, integrated term by term."""
    ratio = sp.exp((2 * _Z * delta - delta ** 2) / (2 * s ** 2))
    integrand = sp.expand(((1 - _Q) + _Q * ratio) ** order) * normal_pdf(_Z, 0, s)
    return sp.simplify(sp.integrate(sp.expand(integrand), (_Z, -sp.oo, sp.oo)))


@derivation("TopAgg effective multiplier s / Delta: the Gaussian and the subsampled Gaussian depend on s and "
            "Delta only through s / Delta", covers=("topagg.topagg_noise_multiplier", "topagg.topagg_epsilon"))
def topagg_effective_multiplier(show):
    """The noise is isotropic, so a shift of S by a vote vector v reduces to one dimension along v,
    with Delta = ||v||. D_alpha(N(Delta, s^2) || N(0, s^2)) = alpha Delta^2 / (2 s^2) = D_alpha at (1, s/Delta) by
    integration; the subsampled moments A_2, A_3 likewise. The RDP of the subsampled vote sum (Delta =
    sqrt(k)) is then the accountant's at topagg_noise_multiplier (rtol 1e-10), and topagg_epsilon is
    epsilon at that multiplier (rtol 1e-12)."""
    from dptheory.accounting import epsilon, rdp_subsampled_gaussian
    from dptheory.topagg import topagg_epsilon, topagg_noise_multiplier
    rdp = _gaussian_divergence(show)
    sigma = sp.Symbol("sigma", positive=True)
    ok = sp.simplify(rdp - _ALPHA * _DELTA ** 2 / (2 * _S ** 2)) == 0
    ok &= sp.simplify(rdp - rdp.subs({_DELTA: 1, _S: sigma}).subs(sigma, _S / _DELTA)) == 0
    moments = {a: _subsampled_moment(a, _DELTA, _S) for a in (2, 3)}
    for a, m in moments.items():
        ok &= sp.simplify(m - _subsampled_moment(a, 1, sigma).subs(sigma, _S / _DELTA)) == 0
    show("A_2 of the subsampled mechanism (sensitivity Delta, std s)", moments[2])
    pairs, eps_pairs = [], []
    for k, s, q in ((1, 1.5, 0.01), (9, 3.0, 0.05), (200, 20.0, 0.2)):
        for a in (2, 3):
            want = sp.log(moments[a].subs({_DELTA: sp.sqrt(k), _S: sp.nsimplify(s), _Q: sp.nsimplify(q)})) / (a - 1)
            pairs.append((rdp_subsampled_gaussian(a, q, topagg_noise_multiplier(s, k))[0], want))
        eps_pairs.append((topagg_epsilon(k, s, q, 500, 1e-5)[0], epsilon(q, s / np.sqrt(k), 500, 1e-5)[0]))
        eps_pairs.append((topagg_epsilon(k, s, 1.0, 3, 1e-5, neighbouring="replace_one")[0],
                          epsilon(1.0, s / (2 * np.sqrt(k)), 3, 1e-5)[0]))
    ok &= check_points(show, "rdp_subsampled_gaussian at topagg_noise_multiplier vs A_alpha", pairs, rtol=1e-10)
    ok &= check_points(show, "topagg_epsilon vs epsilon(q, s / Delta, T, delta)", eps_pairs, rtol=1e-12)
    return bool(ok)


@derivation("DataLens per-step charge 2 k alpha / s^2: the Gaussian divergence at the replace-one "
            "sensitivity 2 sqrt(k)", covers=("topagg.datalens_rdp",))
def datalens_charge(show):
    """D_alpha at Delta = 2 sqrt(k), summed over T steps (RDP composes additively); then the function (rtol 1e-14)."""
    from dptheory.topagg import datalens_rdp
    k, T = sp.symbols("k T", positive=True)
    charge = sp.simplify(T * _gaussian_divergence().subs(_DELTA, 2 * sp.sqrt(k)))
    show("T D_alpha(N(2 sqrt(k), s^2) || N(0, s^2))", charge)
    ok = sp.simplify(charge - 2 * k * _ALPHA * T / _S ** 2) == 0
    add = sp.simplify(_gaussian_divergence().subs(_DELTA, sp.sqrt(k)))
    show("ratio to the add/remove charge at Delta = sqrt(k)", sp.simplify(charge / (T * add)))
    ok &= sp.simplify(charge / (T * add)) == 4
    pts = [(2.0, 1, 1.0, 1), (8.0, 200, 5000.0, 10), (32.5, 7, 3.0, 1000)]
    pairs = [(datalens_rdp([a], kk, s, steps)[0], charge.subs({_ALPHA: a, k: kk, _S: s, T: steps}))
             for a, kk, s, steps in pts]
    ok &= check_points(show, "datalens_rdp", pairs, rtol=1e-14)
    return bool(ok)
