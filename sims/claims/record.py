"""A claim as a record, fixed before any run: what is compared, in which direction, and by which rule.

A claim names its source (the paper, ``docs/sources.md`` id, and the sentence it tests), its arms
(run configs, one per arm, keyed by role), the metric, the comparison, the claimed direction, the
minimal effect of interest and the confidence level. :func:`sims.claims.verdict` turns the
per-seed metric values of the arms into an effect, a confidence interval and a verdict; nothing
about the rule depends on the data.

Comparisons (``effect`` on the per-seed values, paired by seed when ``paired``):

``"difference"``            arms ``treatment``, ``control``:
                            ``effect = mean(treatment) - mean(control)``;
``"gap_reduction"``         arms ``treatment``, ``control``, ``treatment_ref``, ``control_ref``:
                            the relative reduction of a gap, ``1 - gap_t / gap_c`` with
                            ``gap_t = mean(treatment_ref) - mean(treatment)`` and
                            ``gap_c = mean(control_ref) - mean(control)`` (e.g. Lin et al.'s "the
                            accuracy lost to privacy shrinks under compression": ``*_ref`` the
                            non-private runs of the same method);
``"difference_in_differences"`` the same four arms: ``(mean(treatment) - mean(control)) -
                            (mean(treatment_ref) - mean(control_ref))``, e.g. "the gain of random
                            freeze grows with width": the gain on the wide network minus the gain
                            on the narrow one.

Directions: ``"greater"`` (the effect is claimed > 0), ``"less"`` (claimed < 0), ``"equivalent"``
(claimed within ``± min_effect``: an "on par" claim).
"""
from __future__ import annotations

import types
from dataclasses import dataclass, field

from dptheory.validation import check_choice, check_int, check_real

__all__ = ["Claim", "COMPARISONS", "CONTRASTS", "DIRECTIONS", "CI_METHODS", "MIN_SEEDS"]

#: The comparisons and the arm roles each one needs.
COMPARISONS = types.MappingProxyType({
    "difference": ("treatment", "control"),
    "gap_reduction": ("treatment", "control", "treatment_ref", "control_ref"),
    "difference_in_differences": ("treatment", "control", "treatment_ref", "control_ref"),
})
#: The weights of the linear comparisons: ``effect = sum_r w_r mean(arm_r)``.
CONTRASTS = types.MappingProxyType({
    "difference": {"treatment": 1.0, "control": -1.0},
    "difference_in_differences": {"treatment": 1.0, "control": -1.0, "treatment_ref": -1.0, "control_ref": 1.0},
})
DIRECTIONS = ("greater", "less", "equivalent")
#: ``"t"``: Student-t interval of the mean paired difference (Welch for unpaired arms);
#: ``"bootstrap"``: BCa bootstrap (scipy.stats.bootstrap, resampling seeds jointly when paired).
CI_METHODS = ("t", "bootstrap")
#: The fewest seeds per arm each interval method takes.
MIN_SEEDS = types.MappingProxyType({"t": 2, "bootstrap": 3})


@dataclass(frozen=True)
class Claim:
    """One claim, stated before the runs (immutable).

    Parameters
    ----------
    name : str
        Short identifier, e.g. ``"zhu_random_freeze_keeps_accuracy"``.
    source : str
        The paper (``docs/sources.md`` id) and the sentence the claim tests.
    arms : mapping role -> config dict
        The roles of :data:`COMPARISONS` for ``comparison``; each config is what the claim's
        runner turns into runs (one per seed).
    metric : str
        The per-run quantity compared, e.g. ``"test_accuracy"``.
    comparison : one of :data:`COMPARISONS`
    direction : one of :data:`DIRECTIONS`
    min_effect : float > 0
        The minimal effect of interest, in the units of the effect: the equivalence margin of an
        ``"equivalent"`` claim, and the target precision used to say how many seeds an
        inconclusive directional claim would need.
    confidence : float in (0, 1)
        Level of the two-sided interval (default 0.95); an equivalence uses the
        ``1 - 2 (1 - confidence)`` two-sided interval, i.e. two one-sided tests at ``1 - confidence``.
    paired : bool
        Seeds pair the arms (same data split and initialisation per seed).
    ci_method : one of :data:`CI_METHODS`
        ``"gap_reduction"`` (a ratio) needs ``"bootstrap"``.
    notes : tuple of str
        Caveats printed with the verdict (e.g. why this data set, what the claim does not cover).
    n_seeds : int >= 2
        Seeds per arm (seed ``s`` sets ``data.seed`` and ``training.seed`` of every arm, which
        pairs the arms: the same split and, for equal shapes, the same initialisation).
    lr_grid : tuple of float, or mapping role -> tuple of float
        The step sizes over which each arm is tuned on its validation split for the tuned-step
        verdict (the fixed-step verdict uses each arm's own ``optimizer.lr``); a mapping gives each
        role its own grid (e.g. TopAgg's sign updates need other step sizes). Empty: no tuned verdict.
    labels : mapping role -> str
        What each arm is, for tables and figures (default: the role names).
    """

    name: str
    source: str
    arms: dict
    metric: str
    comparison: str = "difference"
    direction: str = "greater"
    min_effect: float = 0.01
    confidence: float = 0.95
    paired: bool = True
    ci_method: str = "t"
    notes: tuple = field(default=())
    n_seeds: int = 10
    lr_grid: object = ()
    labels: dict = field(default_factory=dict)

    def __post_init__(self):
        for key in ("name", "source", "metric"):
            if not (isinstance(getattr(self, key), str) and getattr(self, key)):
                raise ValueError(f"Claim.{key} must be a non-empty string, got {getattr(self, key)!r}")
        check_choice("comparison", self.comparison, tuple(COMPARISONS))
        check_choice("direction", self.direction, DIRECTIONS)
        check_choice("ci_method", self.ci_method, CI_METHODS)
        object.__setattr__(self, "min_effect", check_real("min_effect", self.min_effect, low=0.0, low_open=True))
        object.__setattr__(self, "confidence", check_real("confidence", self.confidence, low=0.0, high=1.0,
                                                          low_open=True, high_open=True))
        if self.direction == "equivalent" and self.confidence <= 0.5:
            raise ValueError(f"confidence must be in (0.5, 1) for an equivalence claim (its interval has level "
                             f"1 - 2 (1 - confidence)), got {self.confidence}")
        if not isinstance(self.paired, bool):
            raise ValueError(f"Claim.paired must be True or False, got {self.paired!r}")
        roles = COMPARISONS[self.comparison]
        if not isinstance(self.arms, dict) or set(self.arms) != set(roles):
            got = sorted(self.arms) if isinstance(self.arms, dict) else type(self.arms).__name__
            raise ValueError(f"Claim.arms must have exactly the roles {roles} for comparison "
                             f"{self.comparison!r}, got {got}")
        if self.comparison == "gap_reduction" and self.ci_method != "bootstrap":
            raise ValueError("ci_method must be 'bootstrap' for comparison 'gap_reduction' (a ratio of means)")
        bad = [r for r, v in self.arms.items() if not isinstance(v, dict)]
        if bad:
            raise ValueError(f"Claim.arms[{bad[0]!r}] must be a run config (a dict), got {type(self.arms[bad[0]]).__name__}")
        object.__setattr__(self, "arms", types.MappingProxyType({k: dict(v) for k, v in self.arms.items()}))
        if isinstance(self.notes, str) or not all(isinstance(x, str) for x in self.notes):
            raise ValueError(f"Claim.notes must be a tuple of strings, got {self.notes!r}")
        object.__setattr__(self, "notes", tuple(self.notes))
        object.__setattr__(self, "n_seeds", check_int("n_seeds", self.n_seeds, low=MIN_SEEDS[self.ci_method]))
        object.__setattr__(self, "lr_grid", self._grids(self.lr_grid, roles))
        if not isinstance(self.labels, dict) or not set(self.labels) <= set(roles):
            raise ValueError(f"Claim.labels must map some of the roles {roles} to strings, got {self.labels!r}")
        object.__setattr__(self, "labels", types.MappingProxyType({r: str(self.labels.get(r, r)) for r in roles}))

    @staticmethod
    def _grids(grid, roles) -> types.MappingProxyType:
        """``lr_grid`` as a mapping role -> sorted tuple of step sizes > 0 (empty: no tuning)."""
        per_role = dict(grid) if isinstance(grid, dict) else {r: grid for r in roles}
        if set(per_role) != set(roles):
            raise ValueError(f"Claim.lr_grid as a mapping needs exactly the roles {roles}, got {sorted(per_role)}")
        out = {}
        for r in roles:
            values = tuple(per_role[r]) if isinstance(per_role[r], (tuple, list)) else None
            if values is None:
                raise ValueError(f"Claim.lr_grid[{r!r}] must be a tuple of step sizes, got {per_role[r]!r}")
            out[r] = tuple(sorted({check_real(f"lr_grid[{r!r}][{i}]", v, low=0.0, low_open=True)
                                   for i, v in enumerate(values)}))
        if len({bool(v) for v in out.values()}) > 1:
            raise ValueError("Claim.lr_grid must give every role a grid, or none")
        return types.MappingProxyType(out)

    @property
    def tuned(self) -> bool:
        """Whether the claim has a tuned-step verdict (a non-empty ``lr_grid``)."""
        return bool(self.lr_grid[self.roles[0]])

    @property
    def roles(self) -> tuple:
        """The arm roles of this claim's comparison, in order."""
        return COMPARISONS[self.comparison]

    @property
    def alpha(self) -> float:
        """``1 - confidence``."""
        return 1.0 - self.confidence

    def describe(self) -> str:
        """One line: what is claimed, e.g. ``"test_accuracy: treatment - control > 0 (95 % CI)"``."""
        eff = {"difference": "mean(treatment) - mean(control)",
               "gap_reduction": "1 - gap(treatment) / gap(control)",
               "difference_in_differences": "(treatment - control) - (treatment_ref - control_ref)"}[self.comparison]
        rel = {"greater": "> 0", "less": "< 0", "equivalent": f"within ±{self.min_effect:g}"}[self.direction]
        return f"{self.metric}: {eff} {rel} ({100 * self.confidence:g} % CI, {self.ci_method})"
