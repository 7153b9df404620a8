r"""Empirical privacy audit of a mechanism chain: a measured LOWER bound on the epsilon it leaks.

The accountant (:mod:`dptheory`) turns a chain's DECLARED privacy description into an upper bound
on epsilon, and a transform that lies in its declaration passes every static rule
(``docs/privacy.md``). This module plays a distinguishing game against the chain as it actually
runs (:func:`check`: every release is :func:`sims.step.dpsgd_step` of the real chain) and turns the
auditor's success into a lower bound that holds with a stated confidence (``docs/audit.md``).

**The game** (white-box on the released updates, add/remove adjacency). ``D`` is a fixed synthetic
batch of per-example gradients; ``D' = [canary] + D`` adds one example whose gradient the auditor
chooses, ``A c`` with ``||c|| = 1`` and ``A = 1000 C`` (clipped to exactly ``C``). A trial runs
``T`` steps of the chain from a fresh state; in world ``D'`` the canary joins each step's batch
independently with probability ``q`` (Poisson sampling of the canary; the rows of ``D`` are in
every batch, which conditions the other examples' sampling, and the accountant's bound holds for
every such condition). The auditor sees every release ``u_1..u_T`` and computes scores (larger
means ``D'``): the projection ``sum_t <u_t, c>``; the released projection ``sum_t <u_t, c_S>/||c_S||``
with ``c_S`` the canary restricted to the released coordinates ``S_t = {u_t != 0}``; the support
score ``sum_t ||c_{S_t}||^2`` (for a Dirac canary: the number of steps in which its coordinate was
selected); the mean difference ``<sum_t u_t, w>`` with ``w`` the difference of the two worlds'
mean releases; and for ``q < 1, T > 1`` the Gaussian-mixture log-likelihood ratio of the per-step
released projections (the Neyman-Pearson test of subsampled DP-SGD). The direction ``w`` and the
likelihood-ratio parameters are fitted on ``trials // 4`` further trials per world. The score and a
threshold ``t`` (guess ``D'`` iff ``score >= t``) are chosen on the first half of each world's
trials; the other half counts the false positives ``FP`` of ``N0`` and the false negatives ``FN``
of ``N1``.

**The bound.** One-sided Clopper-Pearson upper limits (Clopper & Pearson 1934)
``FPR_hi = Beta^{-1}(1 - alpha/2; FP + 1, N0 - FP)`` and ``FNR_hi`` likewise, ``alpha = 1 -
confidence`` split between the two (Bonferroni). An ``(epsilon, delta)``-DP mechanism forces every
test to satisfy ``FPR + e^eps FNR >= 1 - delta`` and ``FNR + e^eps FPR >= 1 - delta`` (Kairouz, Oh &
Viswanath 2015, "The composition theorem for differential privacy", Thm 2.1), so

.. math::
    \varepsilon_{lb} = \max\Big(0,\ \log\frac{1 - \delta - \mathrm{FNR_{hi}}}{\mathrm{FPR_{hi}}},\
                                \log\frac{1 - \delta - \mathrm{FPR_{hi}}}{\mathrm{FNR_{hi}}}\Big)

is below the chain's true epsilon with probability at least ``confidence`` (the recipe of
Jagielski, Ullman & Oprea 2020, "Auditing differentially private machine learning: how private is
private SGD?", and Nasr et al. 2021, "Adversary instantiation: lower bounds for differentially
private machine learning", who audit DP-SGD white-box with gradient canaries). A lower bound
above the claimed epsilon is a VIOLATION: the declaration, the accountant or the code is wrong (or,
with probability at most ``1 - confidence``, the audit was unlucky). A consistent verdict proves
nothing: a lower bound is only a lower bound.

:func:`one_run` is the second, cheaper estimator (Steinke, Nasr & Jagielski 2023, "Privacy auditing
with one (1) training run"): ``m`` canaries in ONE run, each included with probability 1/2.
:func:`audit_gaussian` plays the game of dense DP-SGD in closed form, vectorised over trials.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

from dptheory.accounting import epsilon as _accountant_epsilon
from dptheory.accounting import steps_per_epoch as _steps_per_epoch
from dptheory.validation import as_seed_sequence, check_delta, check_finite_array, check_int, check_real

__all__ = [
    "AuditOutcome",
    "AuditResult", "OneRunResult", "check", "audit_gaussian", "one_run", "audit_scores",
    "epsilon_lower_bound", "one_run_lower_bound", "clopper_pearson_upper", "claimed_epsilon",
    "builtin_chains", "non_private_variants", "undeclared_rescale", "post_clip_example_mask",
    "audit_catalogue", "audit_run_config", "audit_section", "plot_audit", "Entry", "MIN_TRIALS", "CANARIES",
]

#: Fewest trials per world (and canaries of a one-run audit) accepted.
MIN_TRIALS = 100
#: The named canaries of :func:`check` (a coordinate index or a direction is also accepted).
CANARIES = ("dirac", "aligned")
_MAX_THRESHOLDS = 4096   # thresholds tried per score on the selection half (order statistics beyond)
_CHUNK = 1 << 21         # release entries held at once by check (trials x steps x d)
_CANARY_SCALE = 1000.0   # canary gradient norm / clip norm: clipped to exactly C
_ONE_RUN_GRID = np.linspace(0.0, 20.0, 1001)  # epsilons at which the one-run p-value is evaluated


# ============================================================================= results
@dataclass(frozen=True)
class AuditOutcome:
    """What every audit reports (immutable): ``epsilon_lower_bound`` holds with probability
    ``confidence``; ``claimed_epsilon`` is what the claim (``claim_basis``) gives for the same
    ``delta``, ``sampling_rate`` and ``steps`` (``None`` without a noise multiplier)."""

    epsilon_lower_bound: float
    claimed_epsilon: float | None
    verdict: str
    claim_basis: str
    private: bool
    confidence: float
    delta: float
    steps: int
    sampling_rate: float

    @property
    def violation(self) -> bool:
        """True when the measured lower bound exceeds the claimed epsilon."""
        return self.verdict.startswith("VIOLATION")

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class AuditResult(AuditOutcome):
    """The outcome of one distinguishing game (same seed, same result, bit for bit).

    The test: ``statistic`` >= ``threshold`` guesses ``D'``; on the evaluation half it made
    ``false_positives`` of ``negatives`` and ``false_negatives`` of ``positives``, with
    Clopper-Pearson upper limits ``fpr_upper``, ``fnr_upper``. ``epsilon_upper`` is the upper
    confidence limit of this test's own epsilon (from the lower limits of the rates; ``inf`` when a
    count is 0): the top of the figure's bar, NOT a bound on the chain's epsilon. ``trials`` per
    world (both halves). The rest as in :class:`AuditOutcome`.
    """

    trials: int
    canary: str
    statistic: str
    threshold: float
    false_positives: int
    negatives: int
    false_negatives: int
    positives: int
    fpr_upper: float
    fnr_upper: float
    epsilon_upper: float


@dataclass(frozen=True)
class OneRunResult(AuditOutcome):
    """The outcome of a one-run audit (:func:`one_run`): ``correct`` of ``guesses`` guesses about
    ``canaries`` canaries were right; the rest as in :class:`AuditOutcome`."""

    canaries: int
    guesses: int
    correct: int


# ============================================================================= the bound
def clopper_pearson_upper(k, n, alpha):
    """One-sided Clopper-Pearson upper limit of a binomial rate, vectorised over ``k``.

    ``Beta^{-1}(1 - alpha; k + 1, n - k)``, and 1 when ``k == n``: for ``k ~ Binomial(n, p)``,
    ``P(p <= upper) >= 1 - alpha`` (Clopper & Pearson 1934). The lower limit is
    ``1 - clopper_pearson_upper(n - k, n, alpha)``.
    """
    from scipy.stats import beta

    k = np.asarray(k, dtype=np.float64)
    full = k >= n
    return np.where(full, 1.0, beta.ppf(1.0 - alpha, k + 1.0, np.where(full, 1.0, n - k)))


def _kov_epsilon(fpr, fnr, delta):
    """Smallest epsilon whose (eps, delta) privacy region contains the rates (Kairouz et al. 2015,
    Thm 2.1): ``max(log((1-delta-fnr)/fpr), log((1-delta-fpr)/fnr))``; ``-inf`` where both
    numerators are <= 0, ``inf`` where a rate is 0 with a positive numerator."""
    fpr, fnr = np.asarray(fpr, np.float64), np.asarray(fnr, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(1.0 - delta - fnr > 0, np.log(1.0 - delta - fnr) - np.log(fpr), -np.inf)
        b = np.where(1.0 - delta - fpr > 0, np.log(1.0 - delta - fpr) - np.log(fnr), -np.inf)
    return np.maximum(a, b)


def _check_confidence(confidence) -> float:
    return check_real("confidence", confidence, low=0.0, high=1.0, low_open=True, high_open=True)


def epsilon_lower_bound(false_positives, negatives, false_negatives, positives, *, delta=1e-5, confidence=0.95):
    """Lower bound on epsilon at ``delta`` from the errors of ONE fixed test, valid with probability ``confidence``.

    ``eps_lb = max(0, log((1 - delta - FNR_hi) / FPR_hi), log((1 - delta - FPR_hi) / FNR_hi))`` with
    one-sided Clopper-Pearson upper limits at level ``(1 - confidence) / 2`` each (the module
    docstring gives the argument). The test must not have been chosen on these counts.

    Returns
    -------
    (eps_lb, fpr_hi, fnr_hi) : three floats
    """
    n0 = check_int("negatives", negatives, low=1)
    n1 = check_int("positives", positives, low=1)
    fp = check_int("false_positives", false_positives, low=0, high=n0)
    fn = check_int("false_negatives", false_negatives, low=0, high=n1)
    d = check_delta(delta)
    a = (1.0 - _check_confidence(confidence)) / 2.0
    fpr_hi, fnr_hi = float(clopper_pearson_upper(fp, n0, a)), float(clopper_pearson_upper(fn, n1, a))
    return max(0.0, float(_kov_epsilon(fpr_hi, fnr_hi, d))), fpr_hi, fnr_hi


def _best_threshold(x0, x1, delta, a):
    """``(eps, t)``: the threshold (guess D' iff score >= t) with the largest predicted bound.

    The selection half predicts each threshold's evaluation counts with one pseudo-error added
    per world (``(k + 1) n / (n + 2)``, the posterior mean under a uniform prior) and bounds them at
    level ``a / 10^4``: an edge threshold that made no error on this half by luck would otherwise win
    and fail on the evaluation half. This only steers the choice; validity comes from the split.
    """
    x0, x1 = np.sort(x0), np.sort(x1)
    n0, n1 = x0.size, x1.size
    cand = np.unique(np.concatenate([x0, x1]))  # sorted
    if cand.size > _MAX_THRESHOLDS:  # evenly spaced order statistics, both ends included
        cand = cand[np.unique(np.linspace(0, cand.size - 1, _MAX_THRESHOLDS).round().astype(np.intp))]
    fp = (n0 - np.searchsorted(x0, cand, side="left") + 1.0) * n0 / (n0 + 2.0)
    fn = (np.searchsorted(x1, cand, side="left") + 1.0) * n1 / (n1 + 2.0)
    eps = _kov_epsilon(clopper_pearson_upper(fp, n0, a * 1e-4), clopper_pearson_upper(fn, n1, a * 1e-4), delta)
    i = int(np.argmax(eps))
    return float(eps[i]), float(cand[i])


def audit_scores(scores0, scores1, *, delta=1e-5, confidence=0.95) -> dict:
    """Choose a score and a threshold on the first half of each world's trials, bound on the second half.

    Parameters
    ----------
    scores0, scores1 : dict[str, array (n0,)], dict[str, array (n1,)]
        Scores of the i.i.d. trials of world ``D`` and of world ``D'`` (same keys; larger values
        point to ``D'``; at least 4 trials per world). The first half of each array selects, the
        second evaluates. A score fitted on data (a direction, a likelihood ratio) must be fitted on
        OTHER trials: in-sample values would win the selection by overfitting.
    delta, confidence : floats in (0, 1)

    Returns
    -------
    dict
        ``epsilon_lower_bound``, ``statistic``, ``threshold``, ``false_positives``, ``negatives``,
        ``false_negatives``, ``positives``, ``fpr_upper``, ``fnr_upper``, ``epsilon_upper``.
    """
    d = check_delta(delta)
    conf = _check_confidence(confidence)
    if not scores0 or set(scores0) != set(scores1):
        raise ValueError(f"scores0 and scores1 must be non-empty dicts with the same keys, got "
                         f"{sorted(scores0)} and {sorted(scores1)}")
    x = {k: (check_finite_array(f"scores0[{k!r}]", scores0[k], ndim=1, dtype=np.float64),
             check_finite_array(f"scores1[{k!r}]", scores1[k], ndim=1, dtype=np.float64)) for k in scores0}
    n0, n1 = (len(v) for v in next(iter(x.values())))
    if min(n0, n1) < 4 or any(len(a) != n0 or len(b) != n1 for a, b in x.values()):
        raise ValueError(f"every score needs the same number (>= 4) of trials per world, got {n0} and {n1}")
    a = (1.0 - conf) / 2.0
    h0, h1 = n0 // 2, n1 // 2
    best = {k: _best_threshold(s0[:h0], s1[:h1], d, a) for k, (s0, s1) in x.items()}
    name = max(best, key=lambda k: best[k][0])  # first of equals, in the dict's order
    t = best[name][1]
    e0, e1 = x[name][0][h0:], x[name][1][h1:]
    fp, fn = int(np.count_nonzero(e0 >= t)), int(np.count_nonzero(e1 < t))
    eps, fpr_hi, fnr_hi = epsilon_lower_bound(fp, e0.size, fn, e1.size, delta=d, confidence=conf)
    fpr_lo = 1.0 - float(clopper_pearson_upper(e0.size - fp, e0.size, a))
    fnr_lo = 1.0 - float(clopper_pearson_upper(e1.size - fn, e1.size, a))
    upper = max(0.0, float(_kov_epsilon(fpr_lo, fnr_lo, d)))
    return {"epsilon_lower_bound": eps, "statistic": name, "threshold": t, "false_positives": fp,
            "negatives": int(e0.size), "false_negatives": fn, "positives": int(e1.size),
            "fpr_upper": fpr_hi, "fnr_upper": fnr_hi, "epsilon_upper": upper}


# ============================================================================= the claim
def claimed_epsilon(privacy, *, sampling_rate=1.0, steps=1, delta=1e-5):
    """``(epsilon or None, basis)``: the epsilon a chain's description is held against.

    A private chain: the accountant's (:func:`dptheory.accounting.epsilon`, RDP) for ``steps``
    Poisson-sampled steps of its Gaussian event. A chain built with ``allow_non_private=True``: the
    epsilon that its noise multiplier would give for dense DP-SGD (the claim the refused chain
    would have made); ``None`` when it has no noise.
    """
    sigma = privacy.noise_multiplier
    where = f"q={sampling_rate:g}, {steps} step(s), delta={delta:g}"
    if sigma is None or not sigma > 0:
        return None, f"non-private chain without noise ({privacy.reason}): no epsilon is claimed"
    eps = float(_accountant_epsilon(sampling_rate, sigma, steps, delta)[0])
    if privacy.private:
        return eps, f"accountant: {privacy.event} Poisson-sampled, {where}"
    return eps, f"dense DP-SGD at the chain's noise multiplier {sigma:g}, {where} (non-private: {privacy.reason})"


def _verdict(lb, claimed, basis) -> str:
    if claimed is None:
        return f"no claim: {basis}; measured lower bound {lb:.4g}"
    if lb > claimed:
        return f"VIOLATION: measured lower bound {lb:.4g} > claimed epsilon {claimed:.4g}"
    return "consistent"


def _common(trials, sampling_rate, steps, delta, confidence):
    return (check_int("trials", trials, low=MIN_TRIALS),
            check_real("sampling_rate", sampling_rate, low=0.0, high=1.0, low_open=True),
            check_int("steps", steps, low=1), check_delta(delta), _check_confidence(confidence))


def _result(res, claim, *, private, conf, delta, trials, steps, q, canary) -> AuditResult:
    claimed, basis = claim
    return AuditResult(claimed_epsilon=claimed, verdict=_verdict(res["epsilon_lower_bound"], claimed, basis),
                       claim_basis=basis, private=private, confidence=conf, delta=delta, trials=trials,
                       steps=steps, sampling_rate=q, canary=canary, **res)


def _streams(random_state, n):
    """``n`` independent generators from ``random_state`` (fixed spawn keys: replayable)."""
    root = as_seed_sequence(random_state)
    return [np.random.default_rng(np.random.SeedSequence(root.entropy, spawn_key=tuple(root.spawn_key) + (i,)))
            for i in range(n)]


# ============================================================================= dense DP-SGD, closed form
def _mixture_llr(x, q, mu, scale):
    """Per-step log-likelihood ratio of ``(1-q) N(0, s^2) + q N(mu, s^2)`` against ``N(0, s^2)``."""
    with np.errstate(over="ignore"):
        return np.logaddexp(math.log1p(-q), math.log(q) + (mu * x - 0.5 * mu * mu) / (scale * scale))


def audit_gaussian(noise_multiplier, *, trials=10_000, sampling_rate=1.0, steps=1, delta=1e-5, confidence=0.95,
                   random_state=0) -> AuditResult:
    """The game of dense DP-SGD with a Dirac canary, in closed form and vectorised over trials.

    In units of ``C / B``, the canary coordinate of step ``t``'s release is ``x_t = sigma z_t``
    in world ``D`` and ``x_t = b_t + sigma z_t`` in ``D'`` (``b_t ~ Bernoulli(q)``: the canary is
    in the batch; the other examples add the same constant in both worlds and are dropped). Scores:
    ``projection = sum_t x_t`` and, for ``q < 1`` and ``T > 1``, the exact log-likelihood ratio
    ``sum_t log(1 - q + q exp((x_t - 1/2) / sigma^2))``. Same split and bound as :func:`check`,
    which plays the same game on ``chain(clip(C), gaussian_noise(sigma))`` itself.
    """
    sigma = check_real("noise_multiplier", noise_multiplier, low=0.0, low_open=True)
    trials, q, steps, d, conf = _common(trials, sampling_rate, steps, delta, confidence)
    g0, g1 = _streams(random_state, 2)
    x0 = sigma * g0.standard_normal((trials, steps))
    x1 = (g1.random((trials, steps)) < q) + sigma * g1.standard_normal((trials, steps))
    s0, s1 = {"projection": x0.sum(axis=1)}, {"projection": x1.sum(axis=1)}
    if q < 1.0 and steps > 1:
        s0["likelihood ratio"] = _mixture_llr(x0, q, 1.0, sigma).sum(axis=1)
        s1["likelihood ratio"] = _mixture_llr(x1, q, 1.0, sigma).sum(axis=1)
    res = audit_scores(s0, s1, delta=d, confidence=conf)
    basis = f"accountant: Gaussian(noise_multiplier={sigma:g}) Poisson-sampled, q={q:g}, {steps} step(s), delta={d:g}"
    claim = (float(_accountant_epsilon(q, sigma, steps, d)[0]), basis)
    return _result(res, claim, private=True, conf=conf, delta=d, trials=trials, steps=steps, q=q,
                   canary="dirac (closed form)")


# ============================================================================= the game on a real chain
@dataclass(frozen=True)
class _Game:
    """One instance of the game: the model, the public context and the two batches."""

    model: object
    params: np.ndarray
    public: object
    batch_size: float
    without: object      # Backprop of D
    with_canary: object  # Backprop of D' = [canary] + D
    canary: np.ndarray   # unit direction (d,) of the canary's gradient
    description: str

    @property
    def layout(self):
        return self.model.layout


def _clip_norm(chain) -> float:
    """The L2 sensitivity the chain's clip (or aggregate) stage declares; 1.0 if none (no clipping)."""
    for t in chain.transforms:
        if t.effect.stage in ("clip", "aggregate"):
            s = t.info.get("sensitivity")
            if s is not None and math.isfinite(s) and s > 0:
                return float(s)
    return 1.0


def _audited_model(model, shape):
    """The model whose layout the game runs on: ``model``, or one linear layer of ``shape``."""
    from sims.models import Model, linear_regression, softmax_regression

    if model is not None:
        if not isinstance(model, Model):
            raise ValueError(f"model must be a sims.models.Model, got {type(model).__name__}")
        return model
    if isinstance(shape, (tuple, list)):
        if len(shape) != 2:
            raise ValueError(f"shape must be an int d or a pair (out, in), got {shape!r}")
        out, n_in = check_int("shape[0]", shape[0], low=1), check_int("shape[1]", shape[1], low=1)
        if out > 1:
            return softmax_regression(n_in, out, bias=False)
        return linear_regression(n_in, bias=False)
    return linear_regression(check_int("shape", shape, low=1), bias=False)


def _backprop(model, acts, deltas):
    """A Backprop whose example ``i`` has, in layer ``l``, the gradient ``outer(deltas[l][i], acts[l][i])``."""
    from sims.models import Backprop

    dt = model.dtype
    acts = tuple(np.ascontiguousarray(a, dtype=dt) for a in acts)
    return Backprop(model.layout, acts, tuple(np.ascontiguousarray(x, dtype=dt) for x in deltas),
                    np.zeros(acts[0].shape[0], dtype=dt))


def _synthetic_public(model, X_private, rng):
    from sims.data import public_split

    n_in, out = model.n_features, model.layout.sizes[-1]
    X = rng.standard_normal((64, n_in))
    y = rng.standard_normal(64) if model.head == "squared" else rng.integers(0, max(2, out), 64)
    return public_split(X, y, X_private)


def _rows(model, batch_size, rows, C, rng):
    """``(acts, deltas)`` per layer of D: the given rows, or random gradients of norm ``C / 2``."""
    from sims.models.pergrad import materialize

    lay = model.layout
    if rows is not None:
        if lay.n_layers != 1 or lay.bias or lay.sizes[1] != 1:
            raise ValueError("rows can only be given for one linear output without bias (an int shape)")
        G = check_finite_array("rows", rows, ndim=2, dtype=np.float64)
        if G.shape[0] < 1 or G.shape[1] != lay.sizes[0]:
            raise ValueError(f"rows must have shape (B >= 1, {lay.sizes[0]}), got {G.shape}")
        return [G], [np.ones((G.shape[0], 1))]
    B = check_int("batch_size", batch_size, low=1)
    acts = [rng.standard_normal((B, n)) for n in lay.sizes[:-1]]
    deltas = [rng.standard_normal((B, n)) for n in lay.sizes[1:]]
    norm = np.linalg.norm(materialize(_backprop(model, acts, deltas)), axis=1)
    return acts, [x * (0.5 * C / norm)[:, None] for x in deltas]


def _weight_example(lay, layer, delta, act):
    """``(acts, deltas)`` of one example whose gradient is ``outer(delta, act)`` in ``layer`` (0 elsewhere;
    with biases, the layer's bias gradient is ``delta``)."""
    acts = [np.zeros((1, n)) for n in lay.sizes[:-1]]
    deltas = [np.zeros((1, n)) for n in lay.sizes[1:]]
    acts[layer][0], deltas[layer][0] = act, delta
    return acts, deltas


def _dirac_example(lay, j, A):
    """The canary ``A e_j`` on weight coordinate ``j`` (plus ``A e_p`` on its row's bias, if any)."""
    for l in range(lay.n_layers):
        ws = lay.weight_slice(l)
        if ws.start <= j < ws.stop:
            p, q = divmod(j - ws.start, lay.sizes[l])
            return _weight_example(lay, l, A * np.eye(lay.sizes[l + 1])[p], np.eye(lay.sizes[l])[q])
    raise ValueError(f"canary must index a weight coordinate (a bias alone is no per-example gradient), got {j}")


def _weight_coordinates(lay):
    return np.concatenate([np.arange(lay.weight_slice(l).start, lay.weight_slice(l).stop)
                           for l in range(lay.n_layers)])


def _canary(canary, s_sum, lay, pilot, A):
    """``(acts, deltas, description)`` of the canary example (its gradient has norm >= A)."""
    weights = _weight_coordinates(lay)
    if isinstance(canary, str):
        if canary not in CANARIES:
            raise ValueError(f"canary must be one of {list(CANARIES)}, a weight coordinate or a "
                             f"({lay.n_params},) array, got {canary!r}")
        if canary == "dirac":  # the quietest weight coordinate of D's clipped sum
            j = int(weights[np.argmin(np.abs(s_sum[weights]))])
            return (*_dirac_example(lay, j, A), f"dirac on coordinate {j}")
        return (*_aligned_example(lay, np.where(s_sum < 0, -1.0, 1.0) * pilot(), s_sum, A),
                "aligned with the support frequencies of world D")
    if isinstance(canary, (int, np.integer)) and not isinstance(canary, bool):
        j = check_int("canary", canary, low=0, high=lay.n_params - 1)
        return (*_dirac_example(lay, j, A), f"dirac on coordinate {j}")
    c = check_finite_array("canary", canary, dtype=np.float64)
    if c.shape != (lay.n_params,):
        raise ValueError(f"canary must be a ({lay.n_params},) array (one gradient of the audited layer), "
                         f"got shape {c.shape}")
    if lay.n_layers != 1 or lay.bias:
        raise ValueError("canary arrays need one layer without bias (shape=d or (out, in)); use 'dirac', "
                         "'aligned' or a weight coordinate for this model")
    out, n_in = lay.sizes[1], lay.sizes[0]
    U, sv, Vt = np.linalg.svd(c.reshape(out, n_in))
    if sv[0] == 0 or (sv.size > 1 and sv[1] > 1e-9 * sv[0]):
        raise ValueError(f"canary must be a non-zero rank-1 matrix for shape ({out}, {n_in}): a per-example "
                         f"gradient of one linear layer is an outer product")
    return (*_weight_example(lay, 0, U[:, 0], A * Vt[0]),
            f"direction with {int(np.count_nonzero(c))} non-zero coordinate(s)")


def _aligned_example(lay, c, s_sum, A):
    """The rank-1 per-example gradient nearest to ``c`` in the layer where ``c`` weighs most."""
    if not np.any(c):
        c = np.zeros(lay.n_params)
        c[int(np.argmax(np.abs(s_sum)))] = 1.0
    blocks = [c[lay.weight_slice(l)].reshape(lay.sizes[l + 1], lay.sizes[l]) for l in range(lay.n_layers)]
    l = int(np.argmax([np.linalg.norm(b) for b in blocks]))
    U, _, Vt = np.linalg.svd(blocks[l])
    return _weight_example(lay, l, U[:, 0], A * Vt[0])


def _setup(chain, model, batch_size, rows, public, canary, pilot_run, rng) -> _Game:
    from sims.models import init_params
    from sims.models.pergrad import materialize

    from .measure import clip_rows

    lay = model.layout
    C = _clip_norm(chain)
    acts, deltas = _rows(model, batch_size, rows, C, rng)
    without = _backprop(model, acts, deltas)
    if lay.n_layers == 1:
        params = rng.standard_normal(lay.n_params).astype(model.dtype)
    else:
        params = init_params(model, int(rng.integers(2 ** 63)))
    if public is True:
        public = _synthetic_public(model, acts[0], rng)
    s_sum = clip_rows(materialize(without), C).sum(axis=0)
    base = _Game(model, params, public, float(acts[0].shape[0]), without, None, None, "")
    ca, cd, desc = _canary(canary, s_sum, lay, lambda: pilot_run(base), _CANARY_SCALE * C)
    g = materialize(_backprop(model, ca, cd))[0]
    with_canary = _backprop(model, [np.vstack(p) for p in zip(ca, acts)], [np.vstack(p) for p in zip(cd, deltas)])
    return _Game(model, params, public, base.batch_size, without, with_canary, g / np.linalg.norm(g),
                 f"{desc}, gradient norm {np.linalg.norm(g):g}")


def _contexts(game, steps, q, rng):
    """The init context and one step context per (step, canary present), sharing ``rng``."""
    from .mechanisms import InitContext, StepContext

    spe = _steps_per_epoch(q)
    ictx = InitContext(model=game.model, layout=game.layout, params=game.params, total_steps=steps,
                       steps_per_epoch=spe, expected_batch_size=game.batch_size, public=game.public, rng=rng)
    ctxs = [[StepContext(model=game.model, layout=game.layout, step=t, epoch=t // spe, params=game.params, bp=bp,
                         expected_batch_size=game.batch_size, public=game.public, rng=rng)
             for bp in (game.without, game.with_canary)] for t in range(steps)]
    return ictx, ctxs


def _releases(chain, ictx, ctxs, present):
    """``(n, steps, d)`` releases of ``n`` fresh runs; ``present[r, t]`` selects the batch (0: D, 1: D')."""
    from .step import dpsgd_step

    n, steps = present.shape
    R = np.empty((n, steps, ictx.layout.n_params))
    for r, row in enumerate(present.tolist()):
        state = chain.init(ictx)
        for t, p in enumerate(row):
            R[r, t], state, _ = dpsgd_step(chain, state, ctxs[t][p])
    return R


def _play(chain, game, n, steps, q, world, rng_run, rng_sample):
    """Per-trial summaries of ``n`` trials of one world, in chunks of bounded memory."""
    ictx, ctxs = _contexts(game, steps, q, rng_run)
    c = game.canary
    chunk = max(1, _CHUNK // (steps * c.size))
    parts = []
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        present = (rng_sample.random((m, steps)) < q) if world else np.zeros((m, steps), dtype=bool)
        R = _releases(chain, ictx, ctxs, present.astype(np.intp))
        proj = R @ c
        supp = (R != 0) @ (c * c)
        rel = np.divide(proj, np.sqrt(supp), out=np.zeros_like(proj), where=supp > 0)
        parts.append((R.sum(axis=1), proj, rel, supp))
    return [np.concatenate(p) for p in zip(*parts)]


def _support_frequency(chain, game, trials, steps, q, rng):
    """Fraction of world-D releases in which each coordinate is non-zero (the mechanism's likely support)."""
    ictx, ctxs = _contexts(game, steps, q, rng)
    R = _releases(chain, ictx, ctxs, np.zeros((trials, steps), dtype=np.intp))
    return (R != 0).mean(axis=(0, 1))


def _scores(fit0, fit1, w0, w1, q, steps):
    """The scores of the game's trials ``w0``, ``w1``; directions and parameters fitted on ``fit0``, ``fit1``."""
    w = fit1[0].mean(axis=0) - fit0[0].mean(axis=0)
    out = []
    for U, proj, rel, supp in (w0, w1):
        out.append({"projection": proj.sum(1), "released projection": rel.sum(1), "support": supp.sum(1),
                    "mean difference": U @ w})
    if q < 1.0 and steps > 1:
        loc, scale = float(fit0[2].mean()), float(fit0[2].std())
        mu = (float(fit1[2].mean()) - loc) / q
        if scale > 0 and mu > 0:
            for sc, world in zip(out, (w0, w1)):
                sc["likelihood ratio"] = _mixture_llr(world[2] - loc, q, mu, scale).sum(1)
    return out


def _check_chain(chain):
    from .mechanisms import Chain

    if not isinstance(chain, Chain):
        raise ValueError(f"chain must be a sims.mechanisms.Chain made by chain(...), got {type(chain).__name__}")


def check(chain, *, trials=2000, sampling_rate=1.0, steps=1, delta=1e-5, confidence=0.95, random_state=0,
          canary="dirac", shape=16, model=None, batch_size=16, rows=None, public=None) -> AuditResult:
    """Audit any chain, custom transforms included, by the game of the module docstring.

    Runs the real chain: ``2 (trials + trials // 4) steps`` calls of :func:`sims.step.dpsgd_step`, plus
    ``trials // 16`` pilot trials for the aligned canary (about 30 000 trials per second for dense
    DP-SGD at the default size, 10 000 for the sparse chains; ``benchmarks/bench_audit.py``).

    Parameters
    ----------
    chain : sims.mechanisms.Chain
    trials : int >= 100
        Trials per world (half select the test, half evaluate it).
    sampling_rate : float in (0, 1]
        Probability that the canary joins each step's batch in world ``D'``; also the claim's ``q``.
    steps : int >= 1
        Composed steps per trial (a fresh chain state per trial, carried along its steps).
    delta, confidence : floats in (0, 1)
    random_state : int >= 0, SeedSequence or Generator
        All the game's randomness (synthetic batch, sampling, the chain's generators).
    canary : "dirac", "aligned", int or array (d,)
        ``"dirac"``: one weight coordinate, the quietest of ``D``'s clipped sum (where a
        data-dependent selection would not look without the canary); ``"aligned"``: each coordinate
        weighted by how often world ``D`` releases it non-zero (pilot runs, independent of the
        game), with the sign of ``D``'s sum (where a sparse mechanism's support lies), made a
        per-example gradient (rank-1 in one layer); an int: a Dirac canary on that weight
        coordinate; an array (one layer without bias only): that direction, rank-1 for a matrix.
    shape : int d or (out, in)
        The audited layer when no ``model`` is given: ``d`` parameters of one linear output, or an
        ``out x in`` weight matrix (low-rank compression needs a matrix).
    model : sims.models.Model, optional
        Audit on this model's layout (e.g. a run config's model); its public split goes in ``public``.
    batch_size : int >= 1
        Rows of the synthetic ``D`` (random gradients of norm ``C/2``); also the expected batch size.
    rows : array (B, d), optional
        The rows of ``D`` themselves (int ``shape`` only): the auditor may pick any ``D``.
    public : PublicSplit, True or None
        The public split of public-data mechanisms; ``True`` makes a synthetic one.
    """
    _check_chain(chain)
    trials, q, steps, dl, conf = _common(trials, sampling_rate, steps, delta, confidence)
    g_setup, g_pilot, g_run0, g_run1, g_sample = _streams(random_state, 5)
    pilot = max(MIN_TRIALS // 2, trials // 16)
    game = _setup(chain, _audited_model(model, shape), batch_size, rows, public, canary,
                  lambda base: _support_frequency(chain, base, pilot, steps, q, g_pilot), g_setup)
    n_fit = max(MIN_TRIALS // 2, trials // 4)
    w0 = _play(chain, game, n_fit + trials, steps, q, 0, g_run0, g_sample)
    w1 = _play(chain, game, n_fit + trials, steps, q, 1, g_run1, g_sample)
    fit0, fit1 = ([a[:n_fit] for a in w] for w in (w0, w1))
    game0, game1 = ([a[n_fit:] for a in w] for w in (w0, w1))
    res = audit_scores(*_scores(fit0, fit1, game0, game1, q, steps), delta=dl, confidence=conf)
    return _result(res, claimed_epsilon(chain.privacy, sampling_rate=q, steps=steps, delta=dl),
                   private=bool(chain.privacy.private), conf=conf, delta=dl, trials=trials, steps=steps, q=q,
                   canary=game.description)


# ============================================================================= one-run auditing
def _one_run_p_values(m, r, v, delta):
    """The p-value of ``v`` correct guesses out of ``r`` under ``(eps, delta)``-DP, on :data:`_ONE_RUN_GRID`.

    Steinke, Nasr & Jagielski 2023 (Thm 3.1 and its approximate-DP form, Cor. 5.4): with
    ``p_eps = e^eps / (1 + e^eps)`` and ``X ~ Binomial(r, p_eps)``,
    ``P[W >= v] <= P[X >= v] + 2 m delta max_{1<=i<=v} P[v - i <= X <= v - 1] / i``. An
    ``(eps, delta)``-DP mechanism is ``(eps', delta)``-DP for every ``eps' > eps``, so the bound
    is replaced by its minimum over the larger grid epsilons (monotone, still valid).
    """
    from scipy.stats import binom

    p = 1.0 / (1.0 + np.exp(-_ONE_RUN_GRID))[:, None]
    tail = binom.sf(v - 1, r, p[:, 0])
    if v > 0:
        pmf = binom.pmf(np.arange(v - 1, -1, -1)[None, :], r, p)  # X = v-1, v-2, ..., 0
        tail = tail + 2.0 * m * delta * np.max(np.cumsum(pmf, axis=1) / np.arange(1, v + 1), axis=1)
    return np.minimum.accumulate(np.minimum(tail, 1.0)[::-1])[::-1]


def one_run_lower_bound(canaries, guesses, correct, *, delta=1e-5, confidence=0.95) -> float:
    """Lower bound on epsilon from ``correct`` of ``guesses`` guesses about ``canaries`` canaries.

    The largest epsilon of a 0.02 grid on [0, 20] (rounding down) at which the p-value of
    :func:`_one_run_p_values` is still below ``1 - confidence``: with probability at least
    ``confidence`` the mechanism is not ``(eps, delta)``-DP for any smaller eps. 0 when even
    ``eps = 0`` is not rejected; 20 is the cap.
    """
    m = check_int("canaries", canaries, low=1)
    r = check_int("guesses", guesses, low=0, high=m)
    v = check_int("correct", correct, low=0, high=r)
    d = check_delta(delta)
    alpha = 1.0 - _check_confidence(confidence)
    rejected = _one_run_p_values(m, r, v, d) < alpha  # a prefix of the grid: the p-values are monotone
    n = int(np.count_nonzero(rejected))
    return 0.0 if n == 0 else float(_ONE_RUN_GRID[n - 1])


def one_run(chain, *, canaries=1000, steps=1, sampling_rate=1.0, delta=1e-5, confidence=0.95, random_state=0,
            shape=None, model=None, public=None) -> OneRunResult:
    """One-run audit (Steinke, Nasr & Jagielski 2023): ``m`` Dirac canaries in a single run of ``steps`` steps.

    Canary ``i`` is the gradient ``1000 C e_j`` on the ``i``-th weight coordinate ``j`` of the layout;
    each is in the dataset independently with probability 1/2 (``S_i = +-1``), and each included
    canary joins each step's batch with probability ``q``. The score of a canary is ``sum_t u_t[j]``.
    For each ``r`` of ``m * (1/50, 1/20, 1/10, 1/5, 1/2, 1)`` the auditor guesses "in" for the
    ``r/2`` highest scores and "out" for the ``r/2`` lowest; each ``r`` is tested at level
    ``(1 - confidence) / 6`` (Bonferroni) and the best bound is kept. Much cheaper than
    :func:`check` (one run instead of thousands), looser at large epsilon.

    Parameters
    ----------
    canaries : int >= 100
    shape : None (``d = canaries``), int ``d >= canaries`` or ``(out, in)``; ignored with ``model``
    model : sims.models.Model, optional (at least ``canaries`` weight coordinates)
    public : PublicSplit, True (synthetic) or None
    (the rest as in :func:`check`)
    """
    _check_chain(chain)
    m = check_int("canaries", canaries, low=MIN_TRIALS)
    q = check_real("sampling_rate", sampling_rate, low=0.0, high=1.0, low_open=True)
    steps, dl, conf = check_int("steps", steps, low=1), check_delta(delta), _check_confidence(confidence)
    model = _audited_model(model, m if shape is None else shape)
    weights = _weight_coordinates(model.layout)
    if weights.size < m:
        raise ValueError(f"canaries = {m} needs as many weight coordinates, the layout has {weights.size}")
    g_setup, g_run = _streams(random_state, 2)
    inside = g_setup.random(m) < 0.5
    if public is True:
        public = _synthetic_public(model, g_setup.standard_normal((8, model.n_features)), g_setup)
    game = _Game(model, np.zeros(model.n_params, dtype=model.dtype), public, q * max(1, int(inside.sum())),
                 None, None, None, "")
    score = _one_run_scores(chain, game, weights[:m], np.flatnonzero(inside), steps, q,
                            _CANARY_SCALE * _clip_norm(chain), g_run)
    r, v, lb = _one_run_best(score, inside, dl, conf)
    claimed, basis = claimed_epsilon(chain.privacy, sampling_rate=q, steps=steps, delta=dl)
    return OneRunResult(epsilon_lower_bound=lb, claimed_epsilon=claimed, verdict=_verdict(lb, claimed, basis),
                        claim_basis=basis, private=bool(chain.privacy.private), confidence=conf, delta=dl,
                        canaries=m, guesses=r, correct=v, steps=steps, sampling_rate=q)


def _one_run_batch(model, coords, A):
    """The Backprop of the canaries on weight coordinates ``coords`` (``A e_j`` each)."""
    examples = [_dirac_example(model.layout, int(j), A) for j in coords]
    if not examples:
        examples = [_weight_example(model.layout, 0, np.zeros(model.layout.sizes[1]), np.zeros(model.n_features))]
        return _backprop(model, [a[:0] for a in examples[0][0]], [x[:0] for x in examples[0][1]])
    return _backprop(model, [np.vstack(p) for p in zip(*(e[0] for e in examples))],
                     [np.vstack(p) for p in zip(*(e[1] for e in examples))])


def _one_run_scores(chain, game, coords, included, steps, q, A, rng):
    """``sum_t u_t[coords]`` of one run in which the canaries ``included`` are Poisson-sampled each step."""
    from .mechanisms import InitContext, StepContext
    from .step import dpsgd_step

    spe = _steps_per_epoch(q)
    state = chain.init(InitContext(model=game.model, layout=game.layout, params=game.params, total_steps=steps,
                                   steps_per_epoch=spe, expected_batch_size=game.batch_size, public=game.public,
                                   rng=rng))
    score = np.zeros(coords.size)
    for t in range(steps):
        batch = included[rng.random(included.size) < q]
        ctx = StepContext(model=game.model, layout=game.layout, step=t, epoch=t // spe, params=game.params,
                          bp=_one_run_batch(game.model, coords[batch], A), expected_batch_size=game.batch_size,
                          public=game.public, rng=rng)
        u, state, _ = dpsgd_step(chain, state, ctx)
        score += u[coords]
    return score


def _one_run_best(score, inside, delta, conf):
    """``(guesses, correct, bound)`` of the best guess count, each tested at a Bonferroni share."""
    m = score.size
    order = np.argsort(score, kind="stable")
    counts = sorted({max(2, 2 * (int(m * f) // 2)) for f in (1 / 50, 1 / 20, 1 / 10, 1 / 5, 1 / 2, 1)})
    conf_each = 1.0 - (1.0 - conf) / len(counts)
    best = (0, 0, 0.0)
    for r in counts:
        h = r // 2
        v = int(inside[order[m - h:]].sum() + (~inside[order[:h]]).sum())
        lb = one_run_lower_bound(m, 2 * h, v, delta=delta, confidence=conf_each)
        if lb > best[2]:
            best = (2 * h, v, lb)
    return best


# ============================================================================= deliberately broken transforms
def undeclared_rescale(factor=10.0):
    """A post-clip transform that LIES: it declares ``Effect(sensitivity_factor=1.0)`` and multiplies
    the clipped sum by ``factor`` (a sensitivity ``factor`` times larger). ``chain()`` accepts it as
    private; :func:`check` must report a VIOLATION. For audits only."""
    from .mechanisms import Effect, Transform

    factor = check_real("factor", factor, low=1.0)

    def update(ctx, state, work):
        work.replace_sum(factor * np.asarray(work.clipped_sum))
        return state

    return Transform(f"undeclared_rescale[{factor:g}]", Effect("post_clip", sensitivity_factor=1.0),
                     lambda ctx: (), update)


def post_clip_example_mask(k):
    """A post-clip selection from ONE example's gradient: keep the clipped sum only on the ``k``
    largest ``|g_0|`` of example 0 of the batch (read from ``ctx.bp``), noise on all coordinates.
    Declared ``reads="per_example"`` at ``post_clip``, so ``chain()`` refuses it unless
    ``allow_non_private=True``: the mask of one example moves every other example's contribution.
    For audits only."""
    from sims.models import Backprop
    from sims.models.pergrad import materialize

    from .mechanisms import Effect, Transform

    k = check_int("k", k, low=1)

    def update(ctx, state, work):
        bp = ctx.bp
        if bp.batch_size:
            g0 = materialize(Backprop(bp.layout, tuple(a[:1] for a in bp.acts), tuple(x[:1] for x in bp.deltas),
                                      bp.losses[:1]))[0]
            keep = np.zeros(work.d, dtype=bool)
            keep[np.argsort(-np.abs(g0), kind="stable")[:k]] = True
            work.restrict(keep)
        return state

    return Transform(f"post_clip_example_mask[{k}]", Effect("post_clip", reads="per_example"), lambda ctx: (), update)


# ============================================================================= the catalogue
class Entry(NamedTuple):
    """One audited chain: its ``name``, the ``chain``, the ``options`` of :func:`check` it needs and its ``kind``."""

    name: str
    chain: object
    options: dict
    kind: str


def builtin_chains(noise_multiplier=2.0, *, clip_norm=1.0, k=4) -> list:
    """Every private built-in chain, as :class:`Entry` records of kind ``"built-in"``.

    The options are keyword arguments of :func:`check` that the chain needs: low-rank compression
    audits a 4 x 4 weight matrix (``shape``), the public-data mechanisms a synthetic public split.
    ``k`` is the kept count of the sparsifiers, of d = 16 coordinates.
    """
    import sims.mechanisms as mech

    s, C = noise_multiplier, clip_norm
    frac = 1.0 - k / 16.0
    cl, nz = mech.clip(C), mech.gaussian_noise(s)
    pub, mat = {"public": True}, {"shape": (4, 4)}
    rows = [
        ("dense DP-SGD", (cl, nz), {}),
        ("random-k, mask then clip", (mech.random_k(k, "mask_then_clip"), cl, nz), {}),
        ("random-k, clip then mask", (cl, mech.random_k(k, "clip_then_mask"), nz), {}),
        ("random freeze", (mech.random_freeze(frac, "constant"), cl, nz), {}),
        ("public-data freezing", (mech.public_freeze(frac), cl, nz), pub),
        ("public-data selection", (mech.public_select(frac), cl, nz), pub),
        ("magnitude pruning", (mech.magnitude_prune(frac), cl, nz), {}),
        ("top-k of the noisy update", (cl, nz, mech.top_k(k, "noisy")), {}),
        ("per-example top-k", (mech.top_k(k, "per_example"), cl, nz), {}),
        ("TopAgg", (mech.topagg(k, s),), {}),
        ("low-rank, noise then compress", (cl, nz, mech.low_rank(1, "noise_then_compress")), mat),
        ("error feedback (top-k)", (cl, nz, mech.error_feedback(mech.top_k(k, "noisy"))), {}),
        ("EF21 (low-rank)", (cl, nz, mech.error_feedback(mech.low_rank(1), "ef21")), mat),
    ]
    return [Entry(name, mech.chain(*ts), opts, "built-in") for name, ts, opts in rows]


def non_private_variants(noise_multiplier=2.0, *, clip_norm=1.0, k=4, factor=10.0) -> list:
    """The chains that are NOT private, built on purpose, as :class:`Entry` records.

    Top-k of the clean sum with noise on its support only and low-rank compression before the
    noise (built-ins that ``chain()`` refuses without ``allow_non_private=True``); the undeclared
    rescale (a custom transform that lies: accepted as private); the post-clip per-example mask
    (refused), audited on a ``D`` of 16 identical rows of norm ``C`` on the last 4 coordinates
    (the auditor's choice of ``D``: when the canary becomes example 0, its mask cuts the whole
    batch's sum out of the release).
    """
    import sims.mechanisms as mech

    s, C = noise_multiplier, clip_norm
    cl, nz = mech.clip(C), mech.gaussian_noise(s)
    v = np.zeros(16)
    v[-4:] = 0.5 * C  # norm C on the last 4 coordinates; the canary's own mask is the first k
    return [
        Entry("top-k of the clean sum, noise on its support",
              mech.chain(cl, mech.top_k(k, "clean"), nz, allow_non_private=True), {}, "non-private built-in"),
        Entry("low-rank, compress then noise",
              mech.chain(cl, mech.low_rank(1, "compress_then_noise"), nz, allow_non_private=True),
              {"shape": (4, 4)}, "non-private built-in"),
        Entry(f"undeclared rescale (x{factor:g})", mech.chain(cl, undeclared_rescale(factor), nz), {},
              "custom, lying declaration"),
        Entry("post-clip per-example mask", mech.chain(cl, post_clip_example_mask(k), nz, allow_non_private=True),
              {"rows": np.tile(v, (16, 1))}, "custom, non-private"),
    ]


def audit_catalogue(noise_multiplier=(1.0, 2.0, 4.0), *, clip_norm=1.0, k=4, trials=2000, sampling_rate=1.0,
                    steps=1, delta=1e-5, confidence=0.95, random_state=0, canaries=1000, names=None) -> list:
    """Audit every built-in chain and every non-private variant at each noise multiplier.

    Each chain is audited with the Dirac and with the aligned canary, each at confidence
    ``1 - (1 - confidence) / 2`` (Bonferroni: the larger bound holds at ``confidence``), and by
    :func:`one_run` with ``canaries`` canaries at ``confidence`` (0 skips it). ``noise_multiplier``
    is one value or a sequence; ``names`` restricts the chains. One JSON-ready record per chain and
    multiplier: ``name``, ``kind``, ``noise_multiplier``, ``private``, ``claimed_epsilon``,
    ``epsilon_lower_bound``, ``epsilon_upper``, ``verdict``, ``confidence``, ``games``
    (:meth:`AuditResult.to_dict` per canary) and ``one_run``.
    """
    sigmas = [check_real("noise_multiplier", s, low=0.0, low_open=True) for s in np.atleast_1d(noise_multiplier)]
    conf_each = 1.0 - (1.0 - _check_confidence(confidence)) / 2.0
    kw = {"sampling_rate": sampling_rate, "steps": steps, "delta": delta}
    root = as_seed_sequence(random_state)
    out = []
    for a, sigma in enumerate(sigmas):
        entries = (builtin_chains(sigma, clip_norm=clip_norm, k=k)
                   + non_private_variants(sigma, clip_norm=clip_norm, k=k))
        if names is not None:
            unknown = set(names) - {e.name for e in entries}
            if unknown:
                raise ValueError(f"names: unknown mechanism(s) {sorted(unknown)}; known: {[e.name for e in entries]}")
            entries = [e for e in entries if e.name in names]
        for i, e in enumerate(entries):
            seed = [np.random.SeedSequence(root.entropy, spawn_key=tuple(root.spawn_key) + (a, i, j)) for j in range(3)]
            rec = _audit_entry(e, seed, trials=trials, conf_each=conf_each, confidence=confidence, canaries=canaries,
                               **kw)
            out.append(dict(rec, noise_multiplier=sigma))
    return out


def _audit_entry(e, seed, *, trials, conf_each, confidence, canaries, **kw) -> dict:
    games = [check(e.chain, trials=trials, confidence=conf_each, random_state=seed[j], canary=cn, **e.options, **kw)
             for j, cn in enumerate(CANARIES)]
    best = max(games, key=lambda r: r.epsilon_lower_bound)
    rec = {"name": e.name, "kind": e.kind, "private": best.private, "claimed_epsilon": best.claimed_epsilon,
           "epsilon_lower_bound": best.epsilon_lower_bound, "epsilon_upper": best.epsilon_upper,
           "verdict": _verdict(best.epsilon_lower_bound, best.claimed_epsilon, best.claim_basis),
           "confidence": confidence, "games": [g.to_dict() for g in games]}
    if "model" in e.options:  # one canary per weight coordinate, as many as the model has
        opts = {"model": e.options["model"]}
        canaries = min(canaries, _weight_coordinates(e.options["model"].layout).size)
    else:  # a matrix for the low-rank chains; otherwise d = canaries
        opts = {"shape": (canaries // 4 + 1, 4) if "shape" in e.options else None}
    if canaries >= MIN_TRIALS:
        rec["one_run"] = one_run(e.chain, canaries=canaries, confidence=confidence, random_state=seed[2],
                                 public=e.options.get("public"), **opts, **kw).to_dict()
    return rec


def audit_run_config(config, *, trials=2000, sampling_rate=1.0, steps=1, confidence=0.95, random_state=0,
                     canaries=1000, full_length=False) -> dict:
    """Audit the chain of a run config (:mod:`sims.config`: a TOML path or a dict) on the run's own model.

    The chain is built as the run would build it (a calibrated noise multiplier included), the game
    runs on the model's layout with synthetic gradients, the public split is the run's, and delta
    is the run's. ``sampling_rate`` and ``steps`` are the audit's own (default: one step with the
    canary always present, the per-step guarantee). ``full_length=True`` audits the whole run
    instead: the run's own Poisson rate ``q`` and step count ``T`` (``sims.train.run_length``),
    held against the epsilon the accountant gives the run; ``sampling_rate`` and ``steps`` must
    then be left at their defaults. Its cost grows as ``trials x T`` steps (about 25 s for
    500 trials of 50 steps of the digits MLP on 2 cores), and many composed steps make a
    lower bound from one canary weak. Returns one record as :func:`audit_catalogue` does (kind
    ``"run config"``).
    """
    from sims import config as run_config
    from sims.data import public_split_of

    cfg = run_config.load(config) if isinstance(config, (str, bytes)) or hasattr(config, "__fspath__") else config
    model, ds, ch, kw = run_config.build(cfg)
    if full_length:
        from sims.train import run_length

        if sampling_rate != 1.0 or steps != 1:
            raise ValueError("full_length=True audits the run's own sampling rate and steps: leave sampling_rate "
                             "and steps at their defaults")
        sampling_rate, _, _, steps = run_length(ds.n_train, sampling=kw["sampling"], sampling_rate=kw["sampling_rate"],
                                                batch_size=kw["batch_size"], steps=kw["steps"], epochs=kw["epochs"])
    name = str(config) if not isinstance(config, dict) else "run config"
    entry = Entry(name, ch, {"model": model, "public": public_split_of(ds)}, "run config")
    root = as_seed_sequence(random_state)
    seed = [np.random.SeedSequence(root.entropy, spawn_key=tuple(root.spawn_key) + (j,)) for j in range(3)]
    conf_each = 1.0 - (1.0 - _check_confidence(confidence)) / 2.0
    return _audit_entry(entry, seed, trials=trials, conf_each=conf_each, confidence=confidence, canaries=canaries,
                        sampling_rate=sampling_rate, steps=steps, delta=kw["delta"])


def audit_section(records, figure=None) -> str:
    """The "Privacy audit" section of a report (Markdown): one table row per record of
    :func:`audit_catalogue`, and the figure's path if given."""
    conf = records[0]["confidence"] if records else 0.95
    intro = (f"Measured lower bounds on epsilon ({conf:.0%} confidence, `sims.audit`, docs/audit.md) against the "
             "claimed epsilon. A lower bound above the claim is a VIOLATION; below it, the audit is merely "
             "consistent (a lower bound is only a lower bound).")
    lines = ["## Privacy audit", "", intro, "",
             "| # | mechanism | kind | claimed epsilon | lower bound (game) | lower bound (one run) | verdict |",
             "|---:|---|---|---:|---:|---:|---|"]
    for i, r in enumerate(records, 1):
        claim = "-" if r["claimed_epsilon"] is None else f"{r['claimed_epsilon']:.3g}"
        one = f"{r['one_run']['epsilon_lower_bound']:.3g}" if "one_run" in r else "-"
        lines.append(f"| {i} | {r['name']} | {r['kind']} | {claim} | {r['epsilon_lower_bound']:.3g} | {one} | "
                     f"{r['verdict']} |")
    if figure is not None:
        lines += ["", f"![privacy audit]({figure})"]
    return "\n".join(lines) + "\n"


# ============================================================================= the figure
def plot_audit(records, path):
    """Audited lower bound against the claimed epsilon, per mechanism; writes a PNG, returns ``str(path)``.

    Points are the game's lower bounds at the records' confidence (one per noise multiplier, joined
    per mechanism); a bar rises to the upper confidence limit of the same test's epsilon (cut at the
    top of the plot, where a caret marks an infinite limit); hollow diamonds are the one-run bounds.
    Blue: private built-ins; orange: non-private built-ins; red: custom transforms. Points above the
    diagonal are violations.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"built-in": "tab:blue", "non-private built-in": "tab:orange"}
    recs = [r for r in records if r["claimed_epsilon"] is not None]
    names = list(dict.fromkeys(r["name"] for r in recs))
    top = 1.1 * max([r["claimed_epsilon"] for r in recs] + [r["epsilon_lower_bound"] for r in recs] + [1.0])
    fig, ax = plt.subplots(figsize=(8, 6))
    ax.plot([0, top], [0, top], "k--", lw=1)
    for i, name in enumerate(names):
        rs = sorted((r for r in recs if r["name"] == name), key=lambda r: r["claimed_epsilon"])
        x = np.array([r["claimed_epsilon"] for r in rs]) + top * 0.04 * (i - len(names) / 2) / len(names)
        lb = np.array([r["epsilon_lower_bound"] for r in rs])
        hi = np.minimum([r["epsilon_upper"] for r in rs], top)
        color = colors.get(rs[0]["kind"], "tab:red")
        ax.errorbar(x, lb, yerr=[np.zeros_like(lb), hi - lb], fmt="o-", ms=4, lw=0.8, color=color, capsize=2,
                    ecolor=matplotlib.colors.to_rgba(color, 0.35))
        inf = [j for j, r in enumerate(rs) if math.isinf(r["epsilon_upper"])]
        ax.plot(x[inf], np.full(len(inf), top), "^", color=color, ms=4)
        one = [(xx, r["one_run"]["epsilon_lower_bound"]) for xx, r in zip(x, rs) if "one_run" in r]
        if one:
            ax.plot(*zip(*one), "D", mfc="none", color=color, ms=5)
        ax.annotate(str(i + 1), (x[-1], lb[-1]), textcoords="offset points", xytext=(4, 2), fontsize=7)
    for label, c in (("private built-in", "tab:blue"), ("non-private built-in", "tab:orange"),
                     ("custom transform", "tab:red")):
        ax.plot([], [], "o", color=c, label=label)
    ax.plot([], [], "D", mfc="none", color="gray", label="one-run bound")
    ax.plot([], [], "k--", label="lower bound = claim")
    conf = recs[0]["confidence"] if recs else 0.95
    ax.set(xlim=(0, top), ylim=(0, top * 1.02), title="Privacy audit",
           xlabel=r"claimed $\varepsilon$ (accountant; dense DP-SGD for non-private chains)",
           ylabel=rf"audited lower bound on $\varepsilon$ ({conf:.0%} confidence)")
    ax.legend(fontsize=7, loc="upper left")
    ax.text(1.02, 1.0, "\n".join(f"{i + 1}. {n}" for i, n in enumerate(names)), transform=ax.transAxes,
            fontsize=7, va="top")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return str(path)
