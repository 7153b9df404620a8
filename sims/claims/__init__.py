"""Claims about DP-SGD with sparse updates, stated as records and decided by a fixed rule.

:class:`Claim` (``sims.claims.record``) says what is compared, in which direction, with which
minimal effect and interval; :func:`verdict` (``sims.claims.verdict``) turns the per-seed values
of its arms into an effect, a confidence interval and one of :data:`VERDICTS`;
:func:`run_claims` (``sims.claims.runner``) trains every arm at every seed through a results
store and gives each claim a fixed-step and a tuned-step verdict. The source papers' claims are
in ``sims.claims.catalog`` (one module per paper); ``python -m sims reproduce`` runs them and
writes the report (``sims.claims.report``). ``docs/claims.md`` describes all of it.
"""
from .record import CI_METHODS, COMPARISONS, CONTRASTS, DIRECTIONS, Claim
from .runner import ArmOutcome, ClaimResult, run_claims
from .verdict import N_RESAMPLES, VERDICTS, Verdict, verdict

__all__ = ["Claim", "Verdict", "verdict", "run_claims", "ClaimResult", "ArmOutcome", "COMPARISONS", "CONTRASTS",
           "DIRECTIONS", "CI_METHODS", "VERDICTS", "N_RESAMPLES"]
