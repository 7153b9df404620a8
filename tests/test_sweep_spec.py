"""Sweep files: a base config plus axes, expanded into validated run configs."""
from __future__ import annotations

import glob

import pytest

from sims import config, sweep_spec

_BASE = {"privacy": {"epsilon": 2.0}, "training": {"steps": 3},
         "mechanism": [{"name": "random_freeze", "r_final": 0.5}, {"name": "clip", "clip_norm": 1.0},
                       {"name": "gaussian_noise"}]}


def test_grid_points_and_seeds_expand_in_order():
    cfgs = sweep_spec.expand({"base": _BASE, "grid": {"optimizer.lr": [0.1, 0.5], "mechanism[0].r_final": [0.3, 0.9]},
                              "points": [{"model.hidden": [8]}, {"model.hidden": [16]}], "seeds": [0, 1]})
    got = [(c["model"]["hidden"][0], c["optimizer"]["lr"], c["mechanism"][0]["r_final"], c["training"]["seed"])
           for c in cfgs]
    assert got == [(h, lr, r, s) for h in (8, 16) for lr in (0.1, 0.5) for r in (0.3, 0.9) for s in (0, 1)]
    assert all(c == config.validate(c) for c in cfgs)
    assert len({config.config_id(c) for c in cfgs}) == 16


def test_set_path_leaves_its_input_alone():
    base = {"optimizer": {"lr": 0.1}}
    out = sweep_spec.set_path(base, "optimizer.lr", 0.2)
    assert base == {"optimizer": {"lr": 0.1}} and out == {"optimizer": {"lr": 0.2}}
    assert sweep_spec.set_path({}, "data.name", "wine") == {"data": {"name": "wine"}}


@pytest.mark.parametrize("raw, match", [
    ({"grid": {"optimizer.lrr": [1.0]}}, r"optimizer\.lrr is not a known key"),
    ({"grid": {"optimizer.lr": []}}, r"sweep\.grid\.optimizer\.lr must be a non-empty list"),
    ({"grid": {"optimizer.lr": [-1.0]}}, r"optimizer\.lr must be in"),
    ({"base": _BASE, "grid": {"mechanism[7].k": [1]}}, r"axis 'mechanism\[7\]\.k': index \[7\] is out of range"),
    ({"grid": {"optimizer..lr": [1]}}, r"axis 'optimizer\.\.lr' is not a dotted key path"),
    ({"seed": [1]}, r"sweep\.seed is not a known key"),
    ({"seeds": []}, r"sweep\.seeds must be a non-empty list"),
    ({"points": [1]}, r"sweep\.points must be a non-empty list of tables"),
    ({"grid": {"optimizer.lr": [0.1, 0.1]}}, r"two runs of the sweep have the same config"),
])
def test_bad_sweeps_name_the_axis(raw, match):
    with pytest.raises(ValueError, match=match):
        sweep_spec.expand(raw)


@pytest.mark.parametrize("path", sorted(glob.glob("examples/sweep_*.toml")))
def test_every_example_sweep_expands_and_its_first_run_runs(path):
    cfgs = sweep_spec.load(path)
    assert len(cfgs) >= 6
    c = cfgs[0]
    c["training"].update(epochs=None, steps=2)
    assert config.run(c)["steps"] == 2
