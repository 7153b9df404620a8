"""Helpers shared by the proof modules: Gaussian densities, sums over masks, telescoping, numeric checks."""
from __future__ import annotations

from itertools import combinations

import sympy as sp

__all__ = ["check_points", "mask_average", "normal_pdf", "rel_err", "std_normal", "telescoped_average"]


def normal_pdf(z, mean=0, sd=1):
    r"""Density of :math:`N(\text{mean}, \text{sd}^2)` at ``z``, as a sympy expression."""
    return sp.exp(-(z - mean) ** 2 / (2 * sd ** 2)) / (sp.sqrt(2 * sp.pi) * sd)


def std_normal():
    """``(z, phi(z))``: a real symbol and the standard normal density."""
    z = sp.Symbol("z", real=True)
    return z, normal_pdf(z)


def mask_average(d, k, term):
    r"""Exact :math:`\mathbb{E}_m\, \text{term}(m)` over the uniformly random ``k``-subsets ``m`` of ``{0..d-1}``.

    The average of ``term(set(m))`` over all :math:`\binom{d}{k}` subsets (the definition of the
    random-k mask, no sampling).
    """
    masks = list(combinations(range(d), k))
    return sp.Add(*[term(set(m)) for m in masks]) / len(masks)


def telescoped_average(weight, excess, steps, gap):
    r"""Average of ``G_t`` from the one-step inequality ``weight G_t <= F_t - F_{t+1} + excess``.

    Sums the inequality over ``t = 0 .. steps-1`` (``sympy.Sum(...).doit()``, which telescopes the
    ``F`` terms to ``F_0 - F_T``), bounds ``F_0 - F_T`` by ``gap`` and divides by ``weight * steps``:

    .. math:: \frac1T\sum_{t<T} G_t \le \frac{\Delta F + T\,\text{excess}}{w\,T}

    Returns ``(sum of the right-hand sides, the bound on the average)``.
    """
    t = sp.Symbol("t", integer=True, nonnegative=True)
    F = sp.Function("F")
    total = sp.Sum(F(t) - F(t + 1) + excess, (t, 0, steps - 1)).doit()
    avg = sp.simplify(total.subs(F(0), gap + F(steps)) / (weight * steps))
    return total, avg


def rel_err(got, want) -> float:
    """``|got - want| / max(|want|, 1e-300)`` in floating point (``want`` may be a sympy number)."""
    want = float(sp.N(want, 30)) if isinstance(want, sp.Basic) else float(want)
    return abs(float(got) - want) / max(abs(want), 1e-300)


def check_points(show, what, pairs, rtol, atol=0.0) -> bool:
    """Check ``dptheory`` values against derived ones: ``|got - want| <= rtol |want| + atol`` for each pair.

    ``pairs`` is an iterable of ``(got, want)``; the largest relative error is shown as a step
    (``what`` names the function), so the report states how close the numbers are.
    """
    pairs = list(pairs)
    ok, worst = True, 0.0
    for got, want in pairs:
        w = float(sp.N(want, 30)) if isinstance(want, sp.Basic) else float(want)
        ok &= abs(float(got) - w) <= rtol * abs(w) + atol
        worst = max(worst, rel_err(got, w) if w != 0 else abs(float(got)))
    show(f"{what}: {len(pairs)} numeric points, max relative error (tolerance {rtol:g})",
         sp.Float(worst, 3))
    return bool(ok) and bool(pairs)
