"""Which run configs the stacked engine runs, and running a group of them at once (issue 11, item 2).

A config is *stackable* when :func:`sims.stacked.train_stacked` runs exactly what
:func:`sims.train.train` would run for it: a float64 model (a public split is allowed), Poisson
sampling, any optimizer and schedule of the config, and one of the chains below (both of them, for
a run that switches chains at ``training.switch_at``; it then runs as two stacked calls, one per
phase, merged as :func:`sims.config.run` merges them):

* ``[clip, gaussian_noise]`` (dense DP-SGD),
* ``[random_freeze, clip, gaussian_noise]``,
* ``[clip, gaussian_noise, top_k]`` with ``top_k``'s ``mode = "noisy"``,
* ``[clip, random_k, gaussian_noise]`` (clip then mask) or ``[random_k, clip, gaussian_noise]``
  (``order = "mask_then_clip"``),
* ``[clip, gaussian_noise, low_rank]`` (``order = "noise_then_compress"``),
* these top-k and low-rank chains with their compressor wrapped in ``error_feedback`` (``"ef"`` or
  ``"ef21"``),
* the same chains without ``gaussian_noise`` (non-private baselines, ``privacy.allow_non_private``;
  ``clip_norm = None`` for plain minibatch SGD), ``[clip, top_k]`` with ``mode = "clean"`` and
  ``[clip, low_rank]`` with ``order = "compress_then_noise"``,
* ``[top_k, clip, gaussian_noise]`` with ``mode = "per_example"`` (each example keeps its own top-k
  before clipping; every per-example gradient is materialised, one run at a time),
* ``[topagg]`` with one example per teacher (``teacher_size = 1``; its other arguments are shared),
* ``[clip, private_top_k, gaussian_noise]`` (``k`` per run, ``selection_epsilon`` shared),
* the noise-only ablation: ``clip_norm = None`` with a ``reference_norm`` before ``gaussian_noise``
  (dense or after ``random_freeze``; non-private),
* ``[public_freeze, clip, gaussian_noise]``, ``[magnitude_prune, clip, gaussian_noise]`` and
  ``[public_select, clip, gaussian_noise]`` (masks from public data, the parameters or at random;
  any arguments), with or without noise,

every other transform argument at its default. Configs that differ only in the per-run axes
(:data:`PER_RUN`: the seed, the step size, the noise multiplier or epsilon target, the clip norm,
``r_final``, ``k`` and a mask's ``fraction``) share a :func:`stack_key` and can run as one stacked
call. A zero noise multiplier (a non-private baseline) runs with ``sims.train.train``.

Reproducibility: the stacked engine runs every stackable config, alone or in a group (a group of
one for :func:`sims.config.run`), and a run's result does not depend on its group, bit for bit
(:mod:`sims.stacked.engine`), so a config's record is the same from ``python -m sims run``, a
serial sweep, local workers or Dask. It agrees with ``sims.train.train`` of the same config to
about 1e-10 relative (float64 summation order), not bit for bit, except where a run makes a
discrete choice from values that differ only by rounding (docs/runs.md, "When the engines part").
"""
from __future__ import annotations

import json
import time

import numpy as np

from sims.stacked.run import K_MECHANISMS, MASKS, TOPAGG_OPTIONS

__all__ = ["PER_RUN", "stack_key", "run_stacked"]

#: Config entries that may differ between the runs of one stacked call.
PER_RUN = ("training.seed", "optimizer.lr", "privacy.noise_multiplier", "privacy.epsilon", "clip.clip_norm",
           "random_freeze.r_final", "top_k.k", "random_k.k", "public_freeze.fraction", "magnitude_prune.fraction",
           "public_select.fraction", "topagg.k", "topagg.noise_multiplier", "private_top_k.k")

_PATTERNS = {("clip", "gaussian_noise"): "dense", ("random_freeze", "clip", "gaussian_noise"): "random_freeze",
             ("clip", "gaussian_noise", "top_k"): "top_k_noisy", ("clip", "random_k", "gaussian_noise"): "random_k",
             ("random_k", "clip", "gaussian_noise"): "random_k",
             # non-private baselines (no noise step; privacy.allow_non_private)
             ("clip",): "dense", ("random_freeze", "clip"): "random_freeze", ("clip", "top_k"): "top_k_clean",
             ("clip", "random_k"): "random_k", ("random_k", "clip"): "random_k",
             ("clip", "gaussian_noise", "low_rank"): "low_rank", ("clip", "low_rank"): "low_rank",
             ("public_freeze", "clip", "gaussian_noise"): "public_freeze", ("public_freeze", "clip"): "public_freeze",
             ("magnitude_prune", "clip", "gaussian_noise"): "magnitude_prune",
             ("magnitude_prune", "clip"): "magnitude_prune",
             ("public_select", "clip", "gaussian_noise"): "public_select", ("public_select", "clip"): "public_select",
             ("top_k", "clip", "gaussian_noise"): "top_k_per_example", ("top_k", "clip"): "top_k_per_example",
             ("topagg",): "topagg", ("clip", "private_top_k", "gaussian_noise"): "private_top_k"}
#: the top_k mode each top-k pattern needs
_TOP_K_MODE = {"top_k_noisy": "noisy", "top_k_clean": "clean", "top_k_per_example": "per_example"}
#: the order random_k must have at its place in the chain
_RANDOM_K_ORDER = {0: "mask_then_clip", 1: "clip_then_mask"}
_OWN = {"clip": ("clip_norm", "reference_norm"), "gaussian_noise": ("noise_multiplier",),
        "random_freeze": ("r_final", "ramp"), "top_k": ("k", "mode"), "random_k": ("k", "order"),
        "low_rank": ("rank", "order"), "topagg": ("k", "noise_multiplier", *TOPAGG_OPTIONS),
        "private_top_k": ("k", "selection_epsilon")}
#: the low-rank order with noise (post-processing) and without (the clean sum compressed)
_LOW_RANK_ORDER = {True: "noise_then_compress", False: "compress_then_noise"}


def _defaults_only(t: dict) -> bool:
    """Every argument of transform ``t`` other than its stackable ones is at the constructor's default."""
    from sims.config import transform_defaults

    if t["name"] in MASKS:
        return True
    params = transform_defaults(t["name"])
    return all(v == params[k] for k, v in t.items() if k != "name" and k not in _OWN[t["name"]])


def _unwrapped(mechanism: list):
    """``(transforms, feedback style or None)``: a last ``error_feedback`` replaced by its compressor."""
    if mechanism and mechanism[-1]["name"] == "error_feedback":
        ef = mechanism[-1]
        return [*mechanism[:-1], ef["compressor"]], ef.get("style", "ef")
    return list(mechanism), None


def _mechanism_of(mechanism: list) -> str | None:
    """The stacked mechanism name of one chain's validated transform list, or None."""
    transforms, feedback = _unwrapped(mechanism)
    names = tuple(t["name"] for t in transforms)
    mech = _PATTERNS.get(names)
    if mech is None or not all(_defaults_only(t) for t in transforms):
        return None
    stage = dict(zip(names, transforms))
    noisy = "gaussian_noise" in names
    if noisy and stage["gaussian_noise"].get("noise_multiplier") == 0:
        return None  # zero noise (a non-private baseline): train()'s gaussian_noise(0), not the stacked engine's
    if feedback is not None and (mech not in ("top_k_noisy", "low_rank") or not noisy):
        return None
    if mech == "topagg":  # one example per teacher (teacher_size at its default, 1): the private TopAgg
        return None if stage["topagg"].get("noise_multiplier") == 0 else mech
    if mech in _TOP_K_MODE and stage["top_k"].get("mode", "noisy") != _TOP_K_MODE[mech]:
        return None
    if mech == "random_k" and stage["random_k"].get("order", "clip_then_mask") != _RANDOM_K_ORDER[names.index("random_k")]:
        return None
    if mech == "low_rank" and stage["low_rank"].get("order", "noise_then_compress") != _LOW_RANK_ORDER[noisy]:
        return None
    clip = stage["clip"]
    if clip.get("clip_norm") is not None and clip.get("reference_norm", 1.0) != 1.0:
        return None  # a reference norm that train() ignores: keep the config as it is
    if noisy and clip.get("clip_norm") is None and not (names[-1] == "gaussian_noise" and mech in ("dense", "random_freeze")):
        return None  # noise without clipping: only the noise-only ablation (dense or after random freeze)
    return mech


def _stackable(cfg) -> tuple | None:
    """The stacked mechanism of each phase of a validated config (one, or two with a chain switch), or None."""
    m, tr = cfg["model"], cfg["training"]
    if m["dtype"] != "float64" or tr["sampling"] != "poisson":
        return None
    if cfg["privacy"].get("noise_multiplier") == 0:
        return None  # as a stage's own zero noise multiplier (_mechanism_of)
    keys = ("mechanism",) if cfg["switch_mechanism"] is None else ("mechanism", "switch_mechanism")
    mechs = tuple(_mechanism_of(cfg[key]) for key in keys)
    return None if None in mechs else mechs


def _key_chain(mechanism: list) -> dict:
    """One chain's part of the stack key: its transforms without the per-run entries (a clip norm is
    per run, but clipping or not is the chain's structure), and its feedback style."""
    transforms, feedback = _unwrapped(mechanism)
    return {"feedback": feedback,
            "transforms": [{k: v for k, v in t.items() if k not in ("noise_multiplier", "r_final", "k", "fraction")
                            and not (k == "clip_norm" and v is not None)} for t in transforms]}


def stack_key(config: dict) -> str | None:
    """The key shared by the configs that can run stacked with ``config``, or None if it cannot.

    The validated config (:func:`sims.config.validate`) without its :data:`PER_RUN` entries, as
    canonical JSON. An invalid config gets None (it fails in :func:`sims.config.run` with its own error).
    """
    from sims.config import validate

    try:
        cfg = validate(config)
    except ValueError:
        return None
    mechs = _stackable(cfg)
    if mechs is None:
        return None
    cfg["training"] = {k: v for k, v in cfg["training"].items() if k != "seed"}
    cfg["optimizer"] = {k: v for k, v in cfg["optimizer"].items() if k != "lr"}
    cfg["privacy"] = {k: v for k, v in cfg["privacy"].items() if k not in ("noise_multiplier", "epsilon")}
    for key in ("mechanism", "switch_mechanism"):
        if cfg[key] is not None:
            cfg[key] = _key_chain(cfg[key])
    return json.dumps({"stacked": list(mechs), **cfg}, sort_keys=True, default=str)


def _float_or_none(x):
    return None if x is None else float(x)


def _noise_multiplier(cfg, stage, ch):
    """The run's noise multiplier: the chain's (calibrated or given), or the stage's own in a
    non-private config (the noise-only ablation, a switched run)."""
    noised = stage.get("gaussian_noise", stage.get("topagg"))
    if noised is None:
        return None
    own = noised.get("noise_multiplier")
    return float(ch.privacy.noise_multiplier if own is None or not cfg["privacy"]["allow_non_private"] else own)


def _run_arguments(cfg, ch, key: str = "mechanism") -> dict:
    """The per-run arguments of :func:`sims.stacked.train_stacked` for one validated config's chain
    ``cfg[key]`` and its built chain ``ch``."""
    transforms, feedback = _unwrapped(cfg[key])
    stage = {t["name"]: t for t in transforms}
    clip = stage.get("clip")  # None for TopAgg, which has no clip stage
    C = None if clip is None else _float_or_none(clip["clip_norm"])
    ordered = stage.get("random_k", stage.get("low_rank", {}))
    mask = next((stage[name] for name in MASKS if name in stage), {})
    if "topagg" in stage:
        options = {k: v for k, v in stage["topagg"].items() if k in TOPAGG_OPTIONS}
    elif "private_top_k" in stage:
        options = {"selection_epsilon": stage["private_top_k"]["selection_epsilon"]}
    else:
        options = {k: v for k, v in mask.items() if k not in ("name", "fraction")}
    return {"seed": cfg["training"]["seed"], "lr": float(cfg["optimizer"]["lr"]), "clip_norm": C,
            "noise_multiplier": _noise_multiplier(cfg, stage, ch),
            "reference_norm": float(clip.get("reference_norm", 1.0)) if C is None and clip is not None else None,
            "r_final": stage.get("random_freeze", {}).get("r_final"),
            "k": next((stage[n]["k"] for n in ("top_k", "random_k", "topagg", "private_top_k") if n in stage), None),
            "rank": stage.get("low_rank", {}).get("rank"),
            "ramp": stage.get("random_freeze", {}).get("ramp", "linear"), "order": ordered.get("order"),
            "fraction": mask.get("fraction"), "options": options,
            "feedback": feedback}


def _train_group(model, ds, kw, mech, runs, **override) -> list:
    """One :func:`sims.stacked.train_stacked` call for the per-run arguments ``runs`` of one chain
    (``override``: seeds, params0, steps, epochs)."""
    from sims.stacked import train_stacked

    col = (lambda name: [r[name] for r in runs])
    first = runs[0]
    shared_none = (lambda name: None if first[name] is None else col(name))  # None: the chain has no such step
    args = dict(seeds=col("seed"), mechanism=mech, lr=col("lr"), clip_norm=shared_none("clip_norm"),
                noise_multiplier=shared_none("noise_multiplier"),
                allow_non_private=mech != "topagg" and (first["noise_multiplier"] is None or first["clip_norm"] is None),
                r_final=col("r_final") if mech == "random_freeze" else None,
                k=col("k") if mech in K_MECHANISMS else None, ramp=first["ramp"],
                order=first["order"], rank=first["rank"], feedback=first["feedback"],
                fraction=col("fraction") if mech in MASKS else None,
                options=first["options"] if mech in (*MASKS, "topagg", "private_top_k") else None,
                reference_norm=first["reference_norm"] if first["noise_multiplier"] is not None else None,
                optimizer=kw["optimizer"], momentum=kw["momentum"], weight_decay=kw["weight_decay"],
                schedule=kw["schedule"], strong_convexity=kw.get("strong_convexity"), steps=kw["steps"],
                epochs=kw["epochs"], sampling_rate=kw["sampling_rate"], batch_size=kw["batch_size"],
                delta=kw["delta"], record_every=kw["record_every"])
    return train_stacked(model, ds, **{**args, **override})


def _switched(model, ds, kw, mechs, cfgs, runs, phase2) -> list:
    """``(result, diverged_at)`` per run of a chain switch (as :func:`sims.config.run`): phase 1 for
    ``t1`` steps, then, for the runs that did not diverge, phase 2 from their parameters on the seeds
    :func:`sims.config.switch_seed`, the two merged by :func:`sims.config.merge_phases`."""
    from dataclasses import replace

    from sims.config import merge_phases, switch_seed, switched_privacy

    t1, total, _ = phase2[0]
    first = _train_group(model, ds, kw, mechs[0], runs, steps=t1, epochs=None)
    alive = [r for r, res in enumerate(first) if res.diverged_step is None]
    out = [(replace(res, privacy=switched_privacy(res.privacy, res.privacy, t1)), res.diverged_step) for res in first]
    if alive:
        runs2 = [_run_arguments(cfgs[r], phase2[r][2], "switch_mechanism") for r in alive]
        second = _train_group(model, ds, kw, mechs[1], runs2, seeds=[switch_seed(runs[r]["seed"]) for r in alive],
                              params0=np.stack([first[r].params for r in alive]), steps=total - t1, epochs=None)
        for r, res in zip(alive, second):
            at = None if res.diverged_step is None else t1 + res.diverged_step
            out[r] = (merge_phases(first[r], res, t1), at)
    return out


def run_stacked(configs) -> list[dict]:
    """Train configs that share one :func:`stack_key` in one :func:`sims.stacked.train_stacked` call
    (two with a chain switch: one per phase).

    Returns one dict per config, in order, with the keys of :func:`sims.config.run` (its
    ``wall_time`` is the group's wall time divided equally among its runs).

    Raises
    ------
    ValueError
        ``configs`` empty, or not all stackable with one key.
    """
    from sims.config import build, record_of, second_phase, validate

    configs = list(configs)
    keys = {stack_key(c) for c in configs}
    if not configs or len(keys) != 1 or None in keys:
        raise ValueError("configs must be a non-empty list of stackable configs with one stack_key")
    t0 = time.perf_counter()
    built = [build(c) for c in configs]
    model, ds, _, kw = built[0]
    cfgs = [validate(c) for c in configs]
    mechs = _stackable(cfgs[0])
    runs = [_run_arguments(v, b[2]) for v, b in zip(cfgs, built)]
    if len(mechs) == 1:
        out = [(res, res.diverged_step) for res in _train_group(model, ds, kw, mechs[0], runs)]
    else:
        out = _switched(model, ds, kw, mechs, cfgs, runs, [second_phase(v, ds, b[3]) for v, b in zip(cfgs, built)])
    share = (time.perf_counter() - t0) / len(configs)
    return [record_of(c, model, ds, res, at, share) for c, (res, at) in zip(configs, out)]

