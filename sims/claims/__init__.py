"""Claims about DP-SGD with sparse updates, stated as records and decided by a fixed rule.

:class:`Claim` (``sims.claims.record``) says what is compared, in which direction, with which
minimal effect and interval; :func:`verdict` (``sims.claims.verdict``) turns the per-seed values
of its arms into an effect, a confidence interval and one of :data:`VERDICTS`.
"""
from .record import CI_METHODS, COMPARISONS, CONTRASTS, DIRECTIONS, Claim
from .verdict import N_RESAMPLES, VERDICTS, Verdict, verdict

__all__ = ["Claim", "Verdict", "verdict", "COMPARISONS", "CONTRASTS", "DIRECTIONS", "CI_METHODS", "VERDICTS", "N_RESAMPLES"]
