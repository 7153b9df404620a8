"""Run claims: every arm at every seed (and every step size of its grid), through the results store.

For a :class:`sims.claims.Claim` with ``n_seeds = n`` and arm configs ``A_r``, the runs are
``A_r`` with ``data.seed = training.seed = s`` for ``s = 0 .. n-1`` (which pairs the arms by
seed), at the arm's own ``optimizer.lr`` and at every step size of ``claim.lr_grid[r]``. All runs
of all claims go to one :func:`sims.sweep.run_sweep` call over their distinct configs, so an arm
shared by several claims is trained once, a store makes the whole set resumable, and the local
workers (or a Dask cluster) run them in parallel.

Two verdicts per claim, both by :func:`sims.claims.verdict`:

* **fixed step**: the per-seed metric of each arm at its own ``optimizer.lr``;
* **tuned step**: for each arm, the step size of its grid with the best mean validation accuracy
  over the seeds (``data.validation_fraction`` must be set; steps at which a seed diverged are
  not eligible), and the per-seed metric at that step. The test split is never used to choose.
  Choosing on private validation data is a release that the reported epsilon does not include
  (Papernot & Steinke 2022); the report says so.

A run that diverged has no metric; a verdict with a diverged run is not computed and says so.
Private arms of one claim must spend the same epsilon (to 1e-6 relative): a claim that compares
private arms at different privacy is refused before any run.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np

from .record import Claim
from .verdict import Verdict, verdict

__all__ = ["ArmOutcome", "ClaimResult", "run_configs", "run_claims", "evaluate"]

_EPS_RTOL = 1e-6


def _with(config: dict, *, seed: int, lr: float) -> dict:
    cfg = copy.deepcopy(config)
    cfg.setdefault("data", {})["seed"] = seed
    cfg.setdefault("training", {})["seed"] = seed
    cfg.setdefault("optimizer", {})["lr"] = float(lr)
    return cfg


def _fixed_lr(config: dict) -> float:
    from sims import config as sc

    return float(sc.validate(config)["optimizer"]["lr"])


def _check_targets(claim: Claim) -> None:
    """Every private arm names the same ``privacy.epsilon`` target (and ``delta``), so that
    ``dptheory.calibrate_noise`` puts them all at the same privacy."""
    from sims import config as sc

    targets = {}
    for role in claim.roles:
        priv = sc.validate(claim.arms[role])["privacy"]
        if not priv["allow_non_private"]:
            targets[role] = (priv["epsilon"], priv["delta"])
    if any(t[0] is None for t in targets.values()) or len(set(targets.values())) > 1:
        raise ValueError(f"claim {claim.name!r}: every private arm must set the same privacy.epsilon (and "
                         f"delta) target, got {targets}")


def run_configs(claim: Claim) -> dict:
    """``{(role, lr, seed): config}``: every run ``claim`` needs (module docstring), validated."""
    from sims import config as sc

    if not isinstance(claim, Claim):
        raise ValueError(f"claim must be a sims.claims.Claim, got {type(claim).__name__}")
    _check_targets(claim)
    out = {}
    for role in claim.roles:
        arm = claim.arms[role]
        if claim.tuned and sc.validate(arm)["data"]["validation_fraction"] is None:
            raise ValueError(f"claim {claim.name!r}: arm {role!r} has a step-size grid but no "
                             f"data.validation_fraction to tune on")
        for lr in sorted({_fixed_lr(arm), *claim.lr_grid[role]}):
            for seed in range(claim.n_seeds):
                out[(role, lr, seed)] = sc.validate(_with(arm, seed=seed, lr=lr))
    return out


@dataclass(frozen=True)
class ArmOutcome:
    """One arm of a claim after its runs: per-seed ``metric`` at the fixed and at the tuned step.

    ``fixed_lr`` / ``tuned_lr`` the step sizes (``tuned_lr`` None without a grid, or when every step
    of the grid diverged for some seed); ``fixed`` / ``tuned`` the per-seed metric values (NaN for
    a diverged run); ``validation`` the mean validation accuracy per grid step (``{lr: value}``,
    NaN when a seed diverged there); ``epsilon`` the epsilon each run reports (None for a
    non-private arm); ``diverged`` the number of diverged runs at the fixed step.
    """

    role: str
    label: str
    fixed_lr: float
    fixed: tuple
    tuned_lr: float | None
    tuned: tuple | None
    validation: dict
    epsilon: float | None
    diverged: int


@dataclass(frozen=True)
class ClaimResult:
    """A claim with its arms' outcomes and its two verdicts (``None`` when not computable; then
    ``fixed_reason`` / ``tuned_reason`` say why)."""

    claim: Claim
    arms: dict
    fixed: Verdict | None
    tuned: Verdict | None
    fixed_reason: str = ""
    tuned_reason: str = ""

    @property
    def epsilon(self) -> float | None:
        """The epsilon of the claim's private arms (None when no arm is private)."""
        eps = [a.epsilon for a in self.arms.values() if a.epsilon is not None]
        return max(eps) if eps else None


def _metric(rec: dict, key: str) -> float:
    if "error" in rec:
        raise RuntimeError(f"a run of config {rec.get('id', '?')} failed: {rec['error']}")
    v = rec.get(key)
    return math.nan if v is None else float(v)


def _epsilon(claim: Claim, role: str, recs) -> float | None:
    if not all(r["private"] for r in recs):
        return None
    eps = {float(r["epsilon"]) for r in recs}
    if max(eps) - min(eps) > _EPS_RTOL * max(eps):
        raise ValueError(f"claim {claim.name!r}: arm {role!r} spends different epsilons across its runs: {sorted(eps)}")
    return max(eps)


def _arm(claim: Claim, role: str, recs: dict) -> ArmOutcome:
    """``recs``: ``{(lr, seed): record}`` of one arm."""
    seeds = range(claim.n_seeds)
    lr0 = _fixed_lr(claim.arms[role])
    fixed = tuple(_metric(recs[(lr0, s)], claim.metric) for s in seeds)
    validation = {}
    for lr in claim.lr_grid[role]:
        vals = [_metric(recs[(lr, s)], "validation_accuracy") for s in seeds]
        validation[lr] = float(np.mean(vals)) if all(math.isfinite(v) for v in vals) else math.nan
    finite = {lr: v for lr, v in validation.items() if math.isfinite(v)}
    tuned_lr = max(finite, key=lambda lr: (finite[lr], -lr)) if finite else None  # ties: the smaller step
    tuned = None if tuned_lr is None else tuple(_metric(recs[(tuned_lr, s)], claim.metric) for s in seeds)
    diverged = sum(recs[(lr0, s)].get("diverged_at") is not None for s in seeds)
    return ArmOutcome(role, claim.labels[role], lr0, fixed, tuned_lr, tuned, validation,
                      _epsilon(claim, role, list(recs.values())), diverged)


def _decide(claim: Claim, arms: dict, which: str, random_state: int):
    values = {r: getattr(a, which) for r, a in arms.items()}
    if which == "tuned" and not claim.tuned:
        return None, "no step-size grid"
    if any(v is None for v in values.values()):
        return None, "every step of an arm's grid diverged for some seed"
    bad = {r: int(np.sum(~np.isfinite(v))) for r, v in values.items()}
    if any(bad.values()):
        return None, "diverged runs: " + ", ".join(f"{claim.labels[r]} {k}" for r, k in bad.items() if k)
    return verdict(claim, {r: np.asarray(v) for r, v in values.items()}, random_state=random_state), ""


def _check_privacy(claim: Claim, arms: dict) -> None:
    eps = {r: a.epsilon for r, a in arms.items() if a.epsilon is not None}
    if eps and max(eps.values()) - min(eps.values()) > _EPS_RTOL * max(eps.values()):
        raise ValueError(f"claim {claim.name!r}: its private arms spend different epsilons {eps}; calibrate "
                         f"every private arm to the same (epsilon, delta)")


def evaluate(claim: Claim, records: dict, *, random_state: int = 0) -> ClaimResult:
    """The :class:`ClaimResult` of ``claim`` from ``records``: ``{(role, lr, seed): run record}``
    covering :func:`run_configs` (module docstring for the two verdicts)."""
    per_role = {r: {} for r in claim.roles}
    for (role, lr, seed), rec in records.items():
        if role in per_role:
            per_role[role][(lr, seed)] = rec
    arms = {r: _arm(claim, r, per_role[r]) for r in claim.roles}
    _check_privacy(claim, arms)
    fixed, fixed_reason = _decide(claim, arms, "fixed", random_state)
    tuned, tuned_reason = _decide(claim, arms, "tuned", random_state)
    return ClaimResult(claim, arms, fixed, tuned, fixed_reason, tuned_reason)


def run_claims(claims, *, store=None, executor=None, n_workers=None, progress=None,
               random_state: int = 0) -> list:
    """Run every claim of ``claims`` (module docstring) and return their :class:`ClaimResult` s.

    Parameters
    ----------
    claims : iterable of Claim
        Distinct names.
    store : path, optional
        The SQLite results store (:mod:`sims.store`): runs already there are read back, so an
        interrupted call resumes. Default: a temporary store.
    executor, n_workers, progress
        As for :func:`sims.sweep.run_sweep` (default: one local worker per core).
    random_state : int
        Seed of the bootstrap intervals.
    """
    from sims import config as sc
    from sims import sweep
    from sims.store import config_hash

    claims = list(claims)
    names = [c.name for c in claims]
    if not claims or len(set(names)) != len(names):
        raise ValueError(f"claims must be a non-empty list of claims with distinct names, got {names}")
    wanted = {c.name: run_configs(c) for c in claims}
    unique = {}
    for runs in wanted.values():
        for cfg in runs.values():
            unique.setdefault(config_hash(cfg), cfg)
    recs = sweep.run_sweep(sc.sweep_run, list(unique.values()), store=store, executor=executor,
                           n_workers=n_workers, progress=progress)
    by_hash = dict(zip(unique, recs))
    return [evaluate(c, {key: by_hash[config_hash(cfg)] for key, cfg in wanted[c.name].items()},
                     random_state=random_state) for c in claims]
