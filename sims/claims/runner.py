"""Run claims: every arm at every seed and step size, through the results store, in two stages.

For a :class:`sims.claims.Claim` with ``n_seeds = n`` and arm configs ``A_r``, a run is ``A_r``
with ``data.seed = training.seed = s`` (which pairs the arms by seed: the same split and, for
equal shapes, the same initialisation and batches) at a step size ``lr``.

* **Stage 1**, seeds ``0 .. n-1``: each arm at its own ``optimizer.lr`` and at every step size of
  ``claim.lr_grid[r]``.
* **Stage 2**, fresh seeds ``n .. 2n-1``: each arm at its tuned step, the step of its grid with
  the best mean validation accuracy over the stage-1 seeds (``data.validation_fraction`` must be
  set; ties go to the smaller step; a step at which a stage-1 seed diverged or failed is not
  eligible). Evaluating on fresh seeds keeps the winner's curse of the choice out of the tuned
  verdict; the test split is never used to choose.

The runs of all claims go to one :func:`sims.sweep.run_sweep` call per stage over their distinct
configs, so an arm shared by several claims trains once, a store makes the whole set resumable,
and the local workers (or a Dask cluster) run them in parallel.

Two verdicts per claim, by :func:`sims.claims.verdict`: **fixed step** (stage 1 at each arm's own
step) and **tuned step** (stage 2). Choosing on private validation data is a release that the
reported epsilon does not include (Papernot & Steinke 2022); the report says so.

A run that diverged or failed has no metric: a verdict that needs it is not computed and says
which arm. Private arms of one claim must name the same epsilon target, and their runs must
report the same epsilon and delta (to 1e-6 relative): a claim that compares private arms at
different privacy is refused.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np

from .record import Claim
from .verdict import Verdict, verdict

__all__ = ["ArmOutcome", "ClaimResult", "run_configs", "tuned_configs", "choose_steps", "run_claims", "evaluate"]

_RTOL = 1e-6


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
    """``{(role, lr, seed): config}``: the stage-1 runs of ``claim`` (module docstring), validated."""
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


def _value(claim: Claim, rec: dict, key: str) -> float:
    """The metric ``key`` of a run record; NaN for a failed or diverged run."""
    if "error" in rec or rec.get("diverged_at") is not None:
        return math.nan
    if key not in rec:
        raise ValueError(f"claim {claim.name!r}: metric {key!r} is not in the run record (its keys: "
                         f"{', '.join(sorted(k for k in rec if not k.startswith('_')))})")
    return math.nan if rec[key] is None else float(rec[key])


def choose_steps(claim: Claim, records: dict) -> dict:
    """``{role: (tuned lr or None, {lr: mean validation accuracy})}`` from the stage-1 ``records``
    (``{(role, lr, seed): record}``): the best mean over the seeds, ties to the smaller step, NaN
    (not eligible) where a seed diverged or failed."""
    out = {}
    for role in claim.roles:
        means = {}
        for lr in claim.lr_grid[role]:
            vals = [_value(claim, records[(role, lr, s)], "validation_accuracy") for s in range(claim.n_seeds)]
            means[lr] = float(np.mean(vals)) if all(math.isfinite(v) for v in vals) else math.nan
        ok = {lr: v for lr, v in means.items() if math.isfinite(v)}
        out[role] = (max(ok, key=lambda lr: (ok[lr], -lr)) if ok else None, means)
    return out


def tuned_configs(claim: Claim, steps: dict) -> dict:
    """``{(role, lr, seed): config}``: the stage-2 runs, each arm at its tuned step ``steps[role][0]``
    (from :func:`choose_steps`; none for an arm without one) on seeds ``n .. 2n-1``."""
    from sims import config as sc

    n = claim.n_seeds
    return {(role, lr, seed): sc.validate(_with(claim.arms[role], seed=seed, lr=lr))
            for role in claim.roles for lr in [steps[role][0]] if lr is not None for seed in range(n, 2 * n)}


@dataclass(frozen=True)
class ArmOutcome:
    """One arm of a claim after its runs.

    ``fixed_lr`` / ``fixed``: its own step and the per-seed metric there (stage 1); ``tuned_lr`` /
    ``tuned``: the chosen step and the per-seed metric on the fresh stage-2 seeds (None without a
    grid, or when no step was eligible); ``validation``: the mean validation accuracy per grid step
    (``{lr: value}``, NaN where a seed diverged or failed); NaN entries of ``fixed`` / ``tuned`` are
    diverged or failed runs (``diverged``, ``failed``: their counts over both stages); ``epsilon`` /
    ``delta``: what each run reports (None for a non-private arm).
    """

    role: str
    label: str
    fixed_lr: float
    fixed: tuple
    tuned_lr: float | None
    tuned: tuple | None
    validation: dict
    epsilon: float | None
    delta: float | None
    diverged: int
    failed: int


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

    @property
    def delta(self) -> float | None:
        """The delta of the claim's private arms (None when no arm is private)."""
        d = [a.delta for a in self.arms.values() if a.delta is not None]
        return max(d) if d else None


def _same(values, what: str, claim: Claim, where: str) -> float | None:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    if max(vals) - min(vals) > _RTOL * max(abs(v) for v in vals):
        raise ValueError(f"claim {claim.name!r}: {where} spend different {what}s {sorted(set(vals))}; calibrate "
                         f"every private arm to the same (epsilon, delta)")
    return max(vals)


def _privacy(claim: Claim, role: str, recs) -> tuple:
    ok = [r for r in recs if "error" not in r]
    if not ok or not all(r["private"] for r in ok):
        return None, None
    where = f"the runs of arm {role!r}"
    return (_same([r["epsilon"] for r in ok], "epsilon", claim, where),
            _same([r["delta"] for r in ok], "delta", claim, where))


def _arm(claim: Claim, role: str, recs: dict, step) -> ArmOutcome:
    """``recs``: ``{(lr, seed): record}`` of one arm over both stages; ``step``: its
    :func:`choose_steps` entry."""
    n = claim.n_seeds
    lr0 = _fixed_lr(claim.arms[role])
    fixed = tuple(_value(claim, recs[(lr0, s)], claim.metric) for s in range(n))
    tuned_lr, validation = step
    tuned = None if tuned_lr is None else tuple(_value(claim, recs[(tuned_lr, s)], claim.metric)
                                                for s in range(n, 2 * n))
    failed = sum("error" in r for r in recs.values())
    diverged = sum(r.get("diverged_at") is not None for r in recs.values() if "error" not in r)
    eps, delta = _privacy(claim, role, list(recs.values()))
    return ArmOutcome(role, claim.labels[role], lr0, fixed, tuned_lr, tuned, validation, eps, delta, diverged, failed)


def _decide(claim: Claim, arms: dict, which: str, random_state: int):
    if which == "tuned" and not claim.tuned:
        return None, "no step-size grid"
    values = {r: getattr(a, which) for r, a in arms.items()}
    if any(v is None for v in values.values()):
        return None, "no eligible step in an arm's grid (every step had a diverged or failed run)"
    bad = {r: int(np.sum(~np.isfinite(v))) for r, v in values.items()}
    if any(bad.values()):
        return None, "diverged or failed runs: " + ", ".join(f"{claim.labels[r]} {k}" for r, k in bad.items() if k)
    return verdict(claim, {r: np.asarray(v) for r, v in values.items()}, random_state=random_state), ""


def evaluate(claim: Claim, records: dict, *, random_state: int = 0) -> ClaimResult:
    """The :class:`ClaimResult` of ``claim`` from ``records``: ``{(role, lr, seed): run record}``
    covering :func:`run_configs` and the :func:`tuned_configs` of :func:`choose_steps` (module
    docstring for the two verdicts)."""
    steps = choose_steps(claim, records)
    per_role = {r: {} for r in claim.roles}
    for (role, lr, seed), rec in records.items():
        if role in per_role:
            per_role[role][(lr, seed)] = rec
    arms = {r: _arm(claim, r, per_role[r], steps[r]) for r in claim.roles}
    _same([a.epsilon for a in arms.values()], "epsilon", claim, "its private arms")
    _same([a.delta for a in arms.values()], "delta", claim, "its private arms")
    fixed, fixed_reason = _decide(claim, arms, "fixed", random_state)
    tuned, tuned_reason = _decide(claim, arms, "tuned", random_state)
    return ClaimResult(claim, arms, fixed, tuned, fixed_reason, tuned_reason)


def _sweep(wanted: dict, **kw) -> dict:
    """Run the distinct configs of ``wanted`` (``{claim name: {key: config}}``) in one sweep and
    return ``{claim name: {key: record}}``."""
    from sims import config as sc
    from sims import sweep
    from sims.store import config_hash

    unique = {}
    for runs in wanted.values():
        for cfg in runs.values():
            unique.setdefault(config_hash(cfg), cfg)
    if not unique:
        return {name: {} for name in wanted}
    by_hash = dict(zip(unique, sweep.run_sweep(sc.sweep_run, list(unique.values()), **kw)))
    return {name: {key: by_hash[config_hash(cfg)] for key, cfg in runs.items()} for name, runs in wanted.items()}


def run_claims(claims, *, store=None, executor=None, n_workers=None, progress=None,
               random_state: int = 0) -> list:
    """Run every claim of ``claims`` in two stages (module docstring) and return their
    :class:`ClaimResult` s, in order.

    Parameters
    ----------
    claims : iterable of Claim
        Distinct names.
    store : path, optional
        The SQLite results store (:mod:`sims.store`): runs already there are read back, so an
        interrupted call resumes. Default: a temporary store (shared by both stages).
    executor, n_workers, progress
        As for :func:`sims.sweep.run_sweep` (default: one local worker per core).
    random_state : int
        Seed of the bootstrap intervals.
    """
    import tempfile
    from pathlib import Path

    claims = list(claims)
    names = [c.name for c in claims]
    if not claims or len(set(names)) != len(names):
        raise ValueError(f"claims must be a non-empty list of claims with distinct names, got {names}")
    with tempfile.TemporaryDirectory() as tmp:
        kw = dict(store=str(Path(tmp) / "claims.db") if store is None else store, executor=executor,
                  n_workers=n_workers, progress=progress)
        first = _sweep({c.name: run_configs(c) for c in claims}, **kw)
        steps = {c.name: choose_steps(c, first[c.name]) for c in claims}
        second = _sweep({c.name: tuned_configs(c, steps[c.name]) for c in claims}, **kw)
    return [evaluate(c, {**first[c.name], **second[c.name]}, random_state=random_state) for c in claims]
