"""Every paper's claims by name, at a mode (:mod:`sims.claims.arms`)."""
from __future__ import annotations

from . import adamczewski_park, arms, datalens, lin, watson, zhu_blaschko

__all__ = ["PAPERS", "claims"]

#: source id -> the module that states its claims (``claims(mode)``)
PAPERS = {"S0": lin, "S1": zhu_blaschko, "S2": watson, "S3": datalens, "S4": adamczewski_park}


def claims(mode="default", names=None) -> list:
    """The claims of every paper at ``mode``, or only those whose name is in (or starts with an entry
    of) ``names``, e.g. ``["zhu.", "lin.top_k_1pct_costs_accuracy_without_dp"]``.

    Raises
    ------
    ValueError
        An unknown mode, or an entry of ``names`` that matches no claim (the error lists them).
    """
    m = arms.mode(mode)
    every = [c for mod in PAPERS.values() for c in mod.claims(m)]
    if names is None:
        return every
    names = [names] if isinstance(names, str) else list(names)
    out = []
    for n in names:
        hits = [c for c in every if c.name == n or (n.endswith(".") and c.name.startswith(n))]
        if not hits:
            raise ValueError(f"claims: {n!r} matches no claim; the claims are: {', '.join(c.name for c in every)}")
        out += [c for c in hits if c not in out]
    return out
