"""Symbolic derivations (sympy) behind every closed form in :mod:`dptheory`.

Each proof module registers entries with :func:`derivation`. An entry has a *kind*:

``derived``
    starts from a definition (an integral, an expectation, a sum over masks, a recursion with
    its base case, a telescoping sum of a one-step inequality), lets sympy reach the expression
    that ``dptheory`` evaluates, and at the end evaluates the ``dptheory`` function itself at a
    few numeric points against the derived expression (tolerance stated in the entry);
``identity``
    shows that two expressions, at least one of them typed in, agree (weaker: kept only where
    no definition is available to start from);
``composition``
    the function only combines other closed forms (a bisection, a min over orders, an argmin);
    the entry checks the combination at a few points, and ``tests/test_compositions.py`` tests
    it against its docstring.

Each entry records the steps it wants a reader to see with ``show(title, expr)`` and returns
``True`` when the check holds (``False`` or an exception is a failure). ``covers`` names the
public ``dptheory`` functions it accounts for, as ``"module.function"`` (``"events.Gaussian.rdp"``
for a method); :func:`coverage` lists every public closed form against the entries.

``python -m proofs`` runs them all; ``--report FILE.md`` writes the derivations as Markdown with
LaTeX; ``--coverage`` prints the coverage table.
"""
from __future__ import annotations

import importlib
import inspect
import time
from dataclasses import dataclass, field

__all__ = [
    "DPTHEORY_MODULES",
    "KINDS",
    "MODULES",
    "NOT_CLOSED_FORMS",
    "Outcome",
    "coverage",
    "derivation",
    "public_closed_forms",
    "run_all",
]

#: proof modules; each is imported by :func:`run_all`.
MODULES = ("accounting", "noise_signal", "convergence", "clipping", "topagg", "communication", "compositions",
           "mask_amplification", "selection", "error_feedback", "reference_rates")

#: the kinds of entry, strongest first.
KINDS = ("derived", "identity", "composition")

#: the ``dptheory`` modules whose public functions are closed forms (``validation`` only checks inputs).
DPTHEORY_MODULES = ("accounting", "gdp", "events", "noise_signal", "convergence", "clipping", "topagg",
                    "communication", "mask_amplification", "selection", "error_feedback", "reference_rates")

#: public callables of those modules that are not closed forms, with the reason.
NOT_CLOSED_FORMS = {
    "accounting.check_orders": "argument validation",
    "accounting.require_dp_accounting": "optional-import helper",
    "accounting.compose_pld": "the numerical FFT composition of PLD PMFs with its floating-point noise check "
                              "(tests/test_selection.py::test_selection_pld_never_reports_below_a_rigorous_lower_bound)",
    "accounting.epsilon_pld": "numerical PLD accounting on dp-accounting's PMFs over a ladder of grids, "
                              "min with the RDP bound (its gap is the accuracy it reports; "
                              "tests/test_accounting.py, tests/test_accounting_speed.py)",
    "accounting.calibrate_sigma": "a search, not a closed form: brackets the root of a caller's non-increasing "
                                  "eps(sigma) - target on log sigma, then Illinois false position; its users "
                                  "calibrate_noise (proofs.compositions) and selection.calibrate_noise_selected "
                                  "(proofs.selection) have entries; tests/test_selection.py tests it on a closed "
                                  "form and pins their results",
    "events.Gaussian.poisson_sampled": "constructor of another event",
    "events.SelectedGaussian.poisson_sampled": "constructor of another event",
    "events.Gaussian.to_dp_accounting": "conversion to a dp-accounting object",
    "events.PoissonGaussian.to_dp_accounting": "conversion to a dp-accounting object",
    "events.NonPrivate.to_dp_accounting": "conversion to a dp-accounting object",
}

_REGISTRY: list = []


@dataclass(frozen=True)
class _Entry:
    name: str
    module: str
    kind: str
    covers: tuple
    func: object


@dataclass
class Outcome:
    name: str
    module: str
    passed: bool
    seconds: float
    kind: str = "derived"
    covers: tuple = ()
    steps: list = field(default_factory=list)   # (title, latex) pairs
    error: str = ""


def derivation(name: str, *, kind: str = "derived", covers=()):
    """Register ``func(show) -> bool`` as an entry called ``name``.

    Parameters
    ----------
    name : str
        The title ``python -m proofs`` prints.
    kind : {"derived", "identity", "composition"}
    covers : iterable of str
        The ``dptheory`` functions the entry accounts for, ``"module.function"``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    covers = tuple(covers)

    def register(func):
        _REGISTRY.append(_Entry(name, func.__module__, kind, covers, func))
        return func
    return register


def _import(modules):
    for mod in modules:
        try:
            importlib.import_module(f"proofs.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"proofs.{mod}":
                raise


def _entries(modules):
    _import(modules)
    return [e for e in _REGISTRY if e.module.rsplit(".", 1)[-1] in modules]


def run_all(modules=MODULES) -> list:
    """Import the proof modules, run every registered entry and return the outcomes."""
    import sympy

    outcomes = []
    for entry in _entries(modules):
        steps = []

        def show(title, expr, _steps=steps):
            _steps.append((title, expr if isinstance(expr, str) else sympy.latex(expr)))

        t0 = time.perf_counter()
        try:
            ok, err = bool(entry.func(show)), ""
        except Exception as exc:  # noqa: BLE001 -- a crash is a failed entry, reported, not hidden
            ok, err = False, f"{type(exc).__name__}: {exc}"
        outcomes.append(Outcome(entry.name, entry.module, ok, time.perf_counter() - t0, entry.kind,
                                entry.covers, steps, err))
    return outcomes


def public_closed_forms() -> list:
    """Every public function of the :data:`DPTHEORY_MODULES` (from ``__all__``), as ``"module.name"``.

    Classes contribute their public methods (``"events.Gaussian.rdp"``); constants are skipped, and
    so are the names in :data:`NOT_CLOSED_FORMS`.
    """
    names = []
    for mod_name in DPTHEORY_MODULES:
        mod = importlib.import_module(f"dptheory.{mod_name}")
        for attr in mod.__all__:
            obj = getattr(mod, attr)
            if inspect.isclass(obj):
                names += [f"{mod_name}.{attr}.{m}" for m, v in vars(obj).items()
                          if inspect.isfunction(v) and not m.startswith("_")]
            elif callable(obj):
                names.append(f"{mod_name}.{attr}")
    return [n for n in names if n not in NOT_CLOSED_FORMS]


def coverage(modules=MODULES) -> dict:
    """``{public closed form: [(entry kind, entry name), ...]}``; an empty list means no entry."""
    table = {name: [] for name in public_closed_forms()}
    for entry in _entries(modules):
        for name in entry.covers:
            table.setdefault(name, []).append((entry.kind, entry.name))
    return table
