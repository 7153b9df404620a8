"""A sweep written down: a base run config plus axes, expanded into run configs (:mod:`sims.config`).

A sweep file (TOML)::

    [base]                 # a run config (sims.config), every key optional
    data.public_fraction = 0.1
    privacy.epsilon = 2.0

    [grid]                 # dotted key paths into the run config -> lists of values (Cartesian product)
    "optimizer.lr" = [0.125, 0.5]
    "mechanism[0].r_final" = [0.5, 0.7, 0.9]

    [[points]]             # optional: explicit combinations, each a table of dotted paths -> values
    "model.hidden" = [64]
    [[points]]
    "model.hidden" = [256]

    seeds = [0, 1, 2]      # optional: training.seed of every run (default: the base's)

The runs are every point x every grid combination x every seed, in that order (points outer, seeds
inner). Each expanded config is validated (:func:`sims.config.validate`): a bad axis path or value
is an error that names it, before anything runs.
"""
from __future__ import annotations

import copy
import itertools
import re

from . import config as _config

__all__ = ["expand", "load", "set_path"]

_STEP = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)")


def _steps(path: str) -> list:
    """``"mechanism[1].k"`` -> ``["mechanism", 1, "k"]``."""
    out = []
    for part in path.split("."):
        m = _STEP.fullmatch(part)
        if not m:
            raise ValueError(f"axis {path!r} is not a dotted key path such as 'optimizer.lr' or 'mechanism[1].k'")
        out.append(m.group(1))
        out += [int(i) for i in re.findall(r"\[(\d+)\]", m.group(2))]
    return out


def set_path(cfg: dict, path: str, value) -> dict:
    """A copy of ``cfg`` with ``value`` at the dotted key path ``path`` (missing tables are created)."""
    out = copy.deepcopy(cfg)
    node, steps = out, _steps(path)
    for here, nxt in zip(steps[:-1], steps[1:]):
        if isinstance(here, int):
            if not isinstance(node, list) or here >= len(node):
                raise ValueError(f"axis {path!r}: index [{here}] is out of range")
            node = node[here]
        else:
            if not isinstance(node, dict):
                raise ValueError(f"axis {path!r}: {here!r} is not inside a table")
            node = node.setdefault(here, [] if isinstance(nxt, int) else {})
    last = steps[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise ValueError(f"axis {path!r}: index [{last}] is out of range")
    elif not isinstance(node, dict):
        raise ValueError(f"axis {path!r}: {last!r} is not inside a table")
    node[last] = copy.deepcopy(value)
    return out


def _table(name, value) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"sweep.{name} must be a table of dotted key paths, got {type(value).__name__}")
    return value


def expand(raw: dict) -> list[dict]:
    """The normalised run configs of a sweep (module docstring), validated, in order."""
    raw = _table("sweep", raw)
    unknown = set(raw) - {"base", "grid", "points", "seeds"}
    if unknown:
        raise ValueError(f"sweep.{sorted(unknown)[0]} is not a known key; allowed: base, grid, points, seeds")
    base = _table("base", raw.get("base", {}))
    grid = _table("grid", raw.get("grid", {}))
    for path, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"sweep.grid.{path} must be a non-empty list of values, got {values!r}")
    points = raw.get("points", [{}])
    if not isinstance(points, list) or not points or not all(isinstance(p, dict) for p in points):
        raise ValueError("sweep.points must be a non-empty list of tables ([[points]] in TOML)")
    seeds = raw.get("seeds")
    if seeds is not None and (not isinstance(seeds, list) or not seeds):
        raise ValueError(f"sweep.seeds must be a non-empty list of ints >= 0, got {seeds!r}")
    out = []
    for point in points:
        for combo in itertools.product(*grid.values()):
            cfg = base
            for path, value in list(point.items()) + list(zip(grid, combo)):
                cfg = set_path(cfg, path, value)
            for seed in (seeds if seeds is not None else [None]):
                c = cfg if seed is None else set_path(cfg, "training.seed", seed)
                out.append(_config.validate(c))
    keys = [_config.config_id(c) for c in out]
    if len(set(keys)) != len(keys):
        raise ValueError("sweep: two runs of the sweep have the same config (repeated axis values?)")
    return out


def load(path) -> list[dict]:
    """Read a sweep file (TOML) and :func:`expand` it."""
    return expand(_config.read_toml(path, "sweep file"))
