r"""From per-seed values to an effect, a confidence interval and a verdict, by a rule fixed in the claim.

Interval (two-sided, level ``L``; ``L = confidence`` for a directional claim, ``L = 1 - 2 alpha``
for an equivalence claim, ``alpha = 1 - confidence``):

* ``ci_method="t"``, paired: with ``d_s = treatment_s - control_s`` over ``n`` seeds,
  ``mean(d) ± t_{(1+L)/2, n-1} s_d / sqrt(n)`` (Student 1908);
* ``"t"``, unpaired: Welch's interval, ``se = sqrt(s_t^2/n_t + s_c^2/n_c)`` with the
  Welch-Satterthwaite degrees of freedom (Welch 1947);
* ``"bootstrap"``: the BCa interval of ``scipy.stats.bootstrap`` (Efron 1987), resampling the
  seeds jointly across arms when paired, with a fixed generator (``random_state``), 9999 resamples.

Verdicts (all decided before the data, by :class:`sims.claims.Claim`):

* **supported**: the interval lies beyond 0 in the claimed direction;
* **contradicted**: it lies beyond 0 in the other direction (an equivalence claim: entirely outside
  ``± min_effect``);
* **equivalent** (equivalence claims only): the ``1 - 2 alpha`` interval lies inside
  ``(-min_effect, min_effect)`` -- two one-sided tests at level ``alpha`` (Schuirmann 1987);
* **inconclusive**: otherwise, with the number of seeds that would resolve it at the observed
  spread: the smallest ``n'`` with ``t_{(1+L)/2, n'-1} s / sqrt(n') < max(|effect|, min_effect)``
  (directional: the interval would exclude 0 if the effect is as observed, or of the minimal
  size of interest when the observed one is smaller), or with
  ``|effect| + t_{1-alpha, n'-1} s / sqrt(n') < min_effect`` (equivalence; none when
  ``|effect| >= min_effect``). ``s`` is the per-seed standard deviation of the effect (for the
  bootstrap, ``sqrt(n)`` times the bootstrap standard error).

For a directional claim with a two-sided 95 % interval the probability of "supported" under a
null effect is at most 2.5 %; its probability under a true effect ``delta`` with paired spread
``sigma`` is the power ``P(T > t_{0.975, n-1})``, ``T ~ noncentral t(n-1, delta sqrt(n)/sigma)``
(``tests/test_claims.py`` checks both by simulation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dptheory.validation import check_finite_array, check_int

from .record import CONTRASTS, MIN_SEEDS, Claim

__all__ = ["Verdict", "verdict", "VERDICTS", "N_RESAMPLES"]

VERDICTS = ("supported", "contradicted", "equivalent", "inconclusive")
N_RESAMPLES = 9999
_MAX_SEEDS = 10 ** 6


@dataclass(frozen=True)
class Verdict:
    """The outcome of one claim on one set of runs (immutable).

    ``effect`` the point estimate; ``ci_low``, ``ci_high`` the interval at level ``level``;
    ``n`` seeds per arm (the smallest arm when unpaired); ``method`` how the interval was made;
    ``seeds_needed`` (inconclusive only, else None) per arm at the observed spread, or None when
    no number of seeds would do (a zero spread, or an equivalence claim whose observed effect is
    already beyond the margin), and ``resolvable`` the effect size it refers to (directional:
    ``max(|effect|, min_effect)``; equivalence: the room ``min_effect - |effect|``); ``spread``
    the per-seed standard deviation of the effect.
    """

    claim: str
    verdict: str
    effect: float
    ci_low: float
    ci_high: float
    level: float
    n: int
    method: str
    spread: float
    seeds_needed: int | None
    resolvable: float | None = None

    def line(self) -> str:
        """``"name: verdict, effect e [lo, hi] (95 % CI, method, n seeds)"``."""
        more = (f"; about {self.seeds_needed} seeds per arm would resolve an effect of "
                f"{self.resolvable:.3g} at this spread" if self.seeds_needed else "")
        return (f"{self.claim}: {self.verdict}, effect {self.effect:.4g} [{self.ci_low:.4g}, {self.ci_high:.4g}] "
                f"({100 * self.level:g} % CI, {self.method}, n = {self.n}){more}")


def _arrays(claim: Claim, values) -> dict:
    if not hasattr(values, "keys") or set(values) != set(claim.roles):
        got = sorted(values) if hasattr(values, "keys") else type(values).__name__
        raise ValueError(f"values must map exactly the roles {claim.roles} of claim {claim.name!r} to per-seed "
                         f"arrays, got {got}")
    out = {r: check_finite_array(f"values[{r!r}]", values[r], ndim=1).astype(np.float64) for r in claim.roles}
    sizes = {r: a.size for r, a in out.items()}
    low = MIN_SEEDS[claim.ci_method]
    for r, k in sizes.items():
        if k < low:
            raise ValueError(f"values[{r!r}] needs at least {low} seeds for ci_method={claim.ci_method!r}, got {k}")
    if claim.paired and len(set(sizes.values())) != 1:
        raise ValueError(f"paired claim {claim.name!r}: every arm needs the same seeds, got sizes {sizes}")
    return out


def _effect_fn(claim: Claim):
    if claim.comparison in CONTRASTS:
        w = CONTRASTS[claim.comparison]
        return lambda *arms, axis=-1: sum(w[r] * np.mean(x, axis=axis) for r, x in zip(claim.roles, arms))

    def gap_reduction(t, c, tr, cr, axis=-1):
        gap_c = np.mean(cr, axis=axis) - np.mean(c, axis=axis)
        with np.errstate(divide="ignore", invalid="ignore"):
            return 1.0 - (np.mean(tr, axis=axis) - np.mean(t, axis=axis)) / gap_c
    return gap_reduction


def _t_interval(claim: Claim, a: dict, level: float):
    """The t interval of the linear contrast ``sum_r w_r mean(arm_r)`` (:data:`CONTRASTS`): paired, of
    the per-seed contrast; unpaired, Welch's, with ``se^2 = sum_r w_r^2 s_r^2 / n_r`` and the
    Welch-Satterthwaite degrees of freedom."""
    from scipy import stats

    w = CONTRASTS[claim.comparison]
    if claim.paired:
        d = sum(w[r] * a[r] for r in claim.roles)
        n, s = d.size, float(np.std(d, ddof=1))
        se, df, method = s / math.sqrt(n), n - 1, f"paired t, df = {n - 1}"
    else:
        v = {r: w[r] ** 2 * np.var(a[r], ddof=1) / a[r].size for r in claim.roles}
        se = math.sqrt(sum(v.values()))
        df = (se ** 4 / sum(v[r] ** 2 / (a[r].size - 1) for r in claim.roles) if se > 0
              else sum(a[r].size for r in claim.roles) - len(claim.roles))
        n = min(a[r].size for r in claim.roles)
        s, method = se * math.sqrt(n), f"Welch t, df = {df:.1f}"
    eff = float(sum(w[r] * np.mean(a[r]) for r in claim.roles))
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    return eff, eff - half, eff + half, n, s, method


def _bootstrap_interval(claim: Claim, a: dict, level: float, random_state):
    from scipy import stats

    fn = _effect_fn(claim)
    data = tuple(a[r] for r in claim.roles)
    eff = float(fn(*data))
    n = min(x.size for x in data)
    if not math.isfinite(eff):
        return eff, math.nan, math.nan, n, math.nan, "bootstrap (undefined effect)"
    res = stats.bootstrap(data, fn, n_resamples=N_RESAMPLES, vectorized=True, paired=claim.paired,
                          confidence_level=level, method="BCa", rng=np.random.default_rng(random_state))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    s = float(res.standard_error) * math.sqrt(n)
    pairing = "paired" if claim.paired else "unpaired"
    return eff, lo, hi, n, s, f"BCa bootstrap, {pairing}, {N_RESAMPLES} resamples"


def _gap_not_shown(claim: Claim, a: dict, level: float) -> str:
    """For ``gap_reduction``: why the ratio is not interpretable, or ``""``. The relative reduction
    ``1 - gap_t / gap_c`` means something only when the control's own gap is positive; unless the
    t interval of ``gap_c`` (paired: of ``control_ref - control``; else Welch) lies above 0, no
    verdict is drawn (a widened gap over a negative ``gap_c`` would read as "supported")."""
    if claim.comparison != "gap_reduction":
        return ""
    from scipy import stats

    c, cr = a["control"], a["control_ref"]
    if claim.paired:
        d = cr - c
        se, df = float(np.std(d, ddof=1)) / math.sqrt(d.size), d.size - 1
    else:
        vc, vr = np.var(c, ddof=1) / c.size, np.var(cr, ddof=1) / cr.size
        se = math.sqrt(vc + vr)
        df = (vc + vr) ** 2 / (vc ** 2 / (c.size - 1) + vr ** 2 / (cr.size - 1)) if se > 0 else c.size + cr.size - 2
    gap = float(np.mean(cr) - np.mean(c))
    low = gap - float(stats.t.ppf(0.5 + level / 2, df)) * se
    if low > 0:
        return ""
    return (f"undefined: the control's gap {gap:.4g} is not shown > 0 (its {100 * level:g} % t interval starts "
            f"at {low:.4g})")


def _rule(claim: Claim, lo: float, hi: float) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "inconclusive"
    if claim.direction == "equivalent":
        m = claim.min_effect
        if -m < lo and hi < m:
            return "equivalent"
        return "contradicted" if (lo >= m or hi <= -m) else "inconclusive"
    sign = 1.0 if claim.direction == "greater" else -1.0
    a, b = sorted((sign * lo, sign * hi))
    if a > 0:
        return "supported"
    return "contradicted" if b < 0 else "inconclusive"


def _seeds_needed(claim: Claim, effect: float, s: float, n: int, level: float):
    """``(n', target)``: the smallest ``n' > n`` whose interval half-width at the observed spread is
    below ``target`` (module docstring); ``n'`` is None when no number of seeds would do."""
    from scipy import stats

    if not (math.isfinite(s) and s > 0 and math.isfinite(effect)):
        return None, None
    if claim.direction == "equivalent":
        target = claim.min_effect - abs(effect)
        if target <= 0:
            return None, None
    else:
        target = max(abs(effect), claim.min_effect)

    def ok(k):  # the half-width of the interval with k seeds, at the observed spread, is below target
        return float(stats.t.ppf(0.5 + level / 2, k - 1)) * s / math.sqrt(k) < target

    hi = max(n + 1, 2)
    while not ok(hi):
        if hi >= _MAX_SEEDS:
            return None, target
        hi = min(2 * hi, _MAX_SEEDS)
    lo = max(n + 1, 2)
    while lo < hi:  # the half-width decreases in k
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if not ok(mid) else (lo, mid)
    return hi, target


def verdict(claim: Claim, values, *, random_state: int = 0) -> Verdict:
    """Effect, confidence interval and verdict of ``claim`` on per-seed values (module docstring).

    Parameters
    ----------
    claim : sims.claims.Claim
    values : mapping role -> 1-D array
        Per-seed metric values of each arm (``claim.roles``); paired claims need the same seeds
        in the same order in every arm.
    random_state : int >= 0
        Seed of the bootstrap's generator (the same seed gives the same interval, bit for bit).

    Returns
    -------
    Verdict
    """
    if not isinstance(claim, Claim):
        raise ValueError(f"claim must be a sims.claims.Claim, got {type(claim).__name__}")
    random_state = check_int("random_state", random_state, low=0)
    a = _arrays(claim, values)
    level = claim.confidence if claim.direction != "equivalent" else 1.0 - 2.0 * claim.alpha  # > 0: Claim checks
    if claim.ci_method == "t":
        eff, lo, hi, n, s, method = _t_interval(claim, a, level)
    else:
        eff, lo, hi, n, s, method = _bootstrap_interval(claim, a, level, random_state)
    undefined = _gap_not_shown(claim, a, level)
    if undefined:
        return Verdict(claim.name, "inconclusive", eff, math.nan, math.nan, level, n, f"{method}; {undefined}",
                       s, None, None)
    v = _rule(claim, lo, hi)
    need, size = _seeds_needed(claim, eff, s, n, level) if v == "inconclusive" else (None, None)
    return Verdict(claim.name, v, eff, lo, hi, level, n, method, s, need, size)
