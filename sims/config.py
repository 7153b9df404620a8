"""A run written down: a plain, typed config (a TOML file or a dict), validated before any work.

Sections and keys (every key optional unless marked; defaults in brackets)::

    [data]       name [digits]: one of DATASETS; the loader's own keys (n, d, n_classes, noise,
                 margin, label_noise, separation, test_size, as its function takes them);
                 public_fraction [none] in (0, 1) and public_shift [0] >= 0 (sims.data.split_public);
                 feature_scale [1] > 0: a constant every feature is multiplied by first
                 (data-independent, e.g. 1/16 for digits' 0-16 pixels; sims.data.scale_features);
                 validation_fraction [none] in (0, 1): a private validation split held out of the
                 training rows after the public one (sims.data.split_validation), for tuning;
                 standardize [auto]: auto (public split if any, else none) | public | train | none;
                 seed [0]: the data generator's and the split's seed.
    [model]      kind [mlp]: mlp | softmax | logistic | linear; hidden [[64]] (mlp);
                 activation [relu]; bias [true]; dtype [float64] | float32.
    [[mechanism]] one table per transform, in chain order: name (required, one of TRANSFORMS) and
                 the constructor's own keyword arguments (error_feedback takes a table
                 compressor = {name = ..., ...}). Default: clip(1.0) then gaussian_noise.
    [[switch_mechanism]] [none] the chain after training.switch_at (same tables as [[mechanism]]):
                 a run that switches chains part-way (e.g. SGD then DP-SGD, Watson et al. 2023);
                 needs privacy.allow_non_private (the accountant does not compose a switch).
    [optimizer]  name [sgd]: sgd | momentum | nesterov | adam; lr [0.1]; momentum [0];
                 weight_decay [0]; schedule [constant]: constant | cosine | step | warmup_cosine.
    [privacy]    noise_multiplier [1.0, when no transform sets its own], or epsilon (> 0) that
                 dptheory.calibrate_noise turns into one for this run's q and steps (with a private_top_k
                 stage: dptheory.selection.calibrate_noise_selected); delta [train's default min(1e-5, n^-1.1)];
                 allow_non_private [false] (ablations and audits only).
    [training]   exactly one of epochs / steps [epochs = 10]; exactly one of batch_size /
                 sampling_rate [batch_size = 64]; sampling [poisson] | shuffle; record_every
                 [epoch] | end (the last step only) | an int; seed [0]; switch_at [none] in (0, 1): the
                 fraction of the steps after which [[switch_mechanism]] takes over.

:func:`validate` checks everything and returns the normalised config (every key present, in a
fixed order); an unknown key, a wrong type or an out-of-range value raises one ``ValueError``
naming the key path (``mechanism[1].k``) and what is allowed, and so does a chain that would not
be private. :func:`config_id` is a stable hash of the normalised config (same on any machine, in
any key order). :func:`run` trains it and returns a record.
"""
from __future__ import annotations

import functools
import inspect
import math
import time
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np

from dptheory.validation import check_choice, check_int, check_real

__all__ = ["load", "read_toml", "validate", "config_id", "build", "run", "sweep_run", "sweep_run_stack",
           "transform_defaults", "second_phase", "switch_seed", "switched_privacy", "merge_phases", "validation_accuracy",
           "record_of",
           "DATASETS", "TRANSFORMS", "SECTIONS"]

SECTIONS = ("data", "model", "mechanism", "switch_mechanism", "optimizer", "privacy", "training")
MODEL_KINDS = ("mlp", "softmax", "logistic", "linear")
STANDARDIZE = ("auto", "public", "train", "none")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")
SCHEDULES = ("constant", "cosine", "step", "warmup_cosine")


def _datasets():
    from sims import data

    return {"digits": data.load_digits, "breast_cancer": data.load_breast_cancer, "wine": data.load_wine,
            "mnist1d": data.load_mnist1d, "linear": data.make_linear, "logistic": data.make_logistic,
            "mixture": data.make_mixture}


def _transforms():
    import sims.mechanisms as m

    return {name: getattr(m, name) for name in TRANSFORMS}


DATASETS = ("digits", "breast_cancer", "wine", "mnist1d", "linear", "logistic", "mixture")
TRANSFORMS = ("clip", "gaussian_noise", "random_k", "random_freeze", "top_k", "public_freeze", "public_select",
              "magnitude_prune", "topagg", "low_rank", "error_feedback", "private_top_k")
_DATA_COMMON = {"name": "digits", "feature_scale": 1.0, "public_fraction": None, "public_shift": 0.0, "validation_fraction": None,
                "standardize": "auto", "seed": 0}
_DEFAULTS = {
    "model": {"kind": "mlp", "hidden": [64], "activation": "relu", "bias": True, "dtype": "float64"},
    "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0, "schedule": "constant"},
    "privacy": {"noise_multiplier": None, "epsilon": None, "delta": None, "allow_non_private": False},
    "training": {"epochs": None, "steps": None, "batch_size": None, "sampling_rate": None, "sampling": "poisson",
                 "record_every": "epoch", "seed": 0, "switch_at": None},
}


# ----------------------------------------------------------------------------- small checks
def _table(path: str, value) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{path} must be a table (a dict), got {type(value).__name__}")
    return value


def _known(path: str, table: dict, allowed) -> None:
    for key in table:
        if key not in allowed:
            raise ValueError(f"{path}.{key} is not a known key; allowed: {', '.join(sorted(allowed))}")


def _bool(path: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{path} must be true or false, got {value!r}")
    return value


def _str(path: str, value, choices) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{path} must be a string, one of {tuple(choices)}, got {value!r}")
    return check_choice(path, value, tuple(choices))


def _params(fn) -> dict:
    """Keyword parameters of ``fn`` with their defaults (``inspect.Parameter.empty`` when required)."""
    return {n: p.default for n, p in inspect.signature(fn).parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def transform_defaults(name: str) -> dict:
    """The arguments of the transform ``name`` (one of :data:`TRANSFORMS`) with their defaults
    (``inspect.Parameter.empty`` when required)."""
    return _params(_transforms()[check_choice("name", name, TRANSFORMS)])


# ----------------------------------------------------------------------------- sections
def _data(raw) -> dict:
    t = dict(_table("data", raw))
    name = _str("data.name", t.get("name", "digits"), DATASETS)
    own = {k: v for k, v in _params(_datasets()[name]).items() if k not in ("random_state", "dtype")}
    _known("data", t, set(_DATA_COMMON) | set(own))
    out = {**_DATA_COMMON, **{k: v for k, v in own.items() if v is not inspect.Parameter.empty}, **t, "name": name}
    for k, v in own.items():
        if v is inspect.Parameter.empty and k not in t:
            raise ValueError(f"data.{k} is required for data.name = {name!r}")
    if out["public_fraction"] is not None:
        out["public_fraction"] = check_real("data.public_fraction", out["public_fraction"], low=0.0, high=1.0,
                                            low_open=True, high_open=True)
    out["public_shift"] = check_real("data.public_shift", out["public_shift"], low=0.0)
    out["feature_scale"] = check_real("data.feature_scale", out["feature_scale"], low=0.0, low_open=True)
    if out["validation_fraction"] is not None:
        out["validation_fraction"] = check_real("data.validation_fraction", out["validation_fraction"], low=0.0,
                                                high=1.0, low_open=True, high_open=True)
    out["standardize"] = _str("data.standardize", out["standardize"], STANDARDIZE)
    out["seed"] = check_int("data.seed", out["seed"], low=0)
    for k, default in own.items():  # the loader's own keys: the type of their default (ranges: the loader)
        out[k] = _like(f"data.{k}", out[k], default)
    return out


def _like(path: str, value, default):
    """``value`` checked to have the type of ``default`` (bool, int, or real for a float default)."""
    if isinstance(default, bool):
        return _bool(path, value)
    if isinstance(default, int) or default is inspect.Parameter.empty:
        return check_int(path, value)
    if isinstance(default, float):
        return check_real(path, value)
    return value


def _model(raw) -> dict:
    t = _table("model", raw)
    _known("model", t, _DEFAULTS["model"])
    out = {**_DEFAULTS["model"], **t}
    out["kind"] = _str("model.kind", out["kind"], MODEL_KINDS)
    if out["kind"] != "mlp":
        if "hidden" in t and t["hidden"] is not None:
            raise ValueError(f"model.hidden is only for model.kind = 'mlp', got kind {out['kind']!r}")
        out["hidden"] = None  # normalised away: the same run has one identity
    elif not isinstance(out["hidden"], list) or not out["hidden"]:
        raise ValueError(f"model.hidden must be a non-empty list of layer widths (ints >= 1), got {out['hidden']!r}")
    else:
        out["hidden"] = [check_int(f"model.hidden[{i}]", h, low=1) for i, h in enumerate(out["hidden"])]
    out["activation"] = _str("model.activation", out["activation"], ("relu", "tanh"))
    out["bias"] = _bool("model.bias", out["bias"])
    out["dtype"] = _str("model.dtype", out["dtype"], ("float64", "float32"))
    return out


def _transform(path: str, raw) -> dict:
    t = dict(_table(path, raw))
    if "name" not in t:
        raise ValueError(f"{path}.name is required: one of {TRANSFORMS}")
    name = _str(f"{path}.name", t.pop("name"), TRANSFORMS)
    params = {k: v for k, v in _params(_transforms()[name]).items()}
    _known(path, t, set(params) | {"name"})
    if name == "error_feedback":
        if "compressor" not in t:
            raise ValueError(f"{path}.compressor is required: a table {{name = ..., ...}} (e.g. top_k or low_rank)")
        t["compressor"] = _transform(f"{path}.compressor", t["compressor"])
    for k, v in params.items():
        if v is inspect.Parameter.empty and k not in t and not (name in _NOISED and k == "noise_multiplier"):
            raise ValueError(f"{path}.{k} is required for {name}")
    for k in t:
        if k != "compressor":
            t[k] = _number(f"{path}.{k}", t[k], params[k], real=k in _REAL_ARGS)
    return {"name": name, **{k: t[k] for k in sorted(t)}}


#: transform arguments that are real numbers even where the constructor has no default to tell
_REAL_ARGS = ("clip_norm", "noise_multiplier", "r_final", "fraction", "selection_epsilon")


def _number(path, value, default, *, real):
    """A transform argument with ints written as floats where the argument is real (so that
    ``clip_norm = 1`` and ``clip_norm = 1.0`` are one config); other values are left as they are."""
    if isinstance(value, bool) or not isinstance(value, (int, float, list)):
        return value
    if real or (isinstance(default, float) and not isinstance(default, bool)):
        if isinstance(value, list):
            return [check_real(f"{path}[{i}]", v) for i, v in enumerate(value)]
        return check_real(path, value)
    return value


_NOISED = ("gaussian_noise", "topagg")  # their noise_multiplier may come from [privacy]


def _mechanism(raw, key="mechanism") -> list:
    if raw is None:
        return [{"name": "clip", "clip_norm": 1.0}, {"name": "gaussian_noise"}]
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{key} must be a non-empty list of tables ([[{key}]] in TOML), got {raw!r}")
    return [_transform(f"{key}[{i}]", t) for i, t in enumerate(raw)]


def _simple(section: str, raw) -> dict:
    t = _table(section, raw)
    _known(section, t, _DEFAULTS[section])
    return {**_DEFAULTS[section], **t}


def _optimizer(raw) -> dict:
    out = _simple("optimizer", raw)
    out["name"] = _str("optimizer.name", out["name"], OPTIMIZERS)
    out["lr"] = check_real("optimizer.lr", out["lr"], low=0.0)
    out["momentum"] = check_real("optimizer.momentum", out["momentum"], low=0.0, high=1.0, high_open=True)
    out["weight_decay"] = check_real("optimizer.weight_decay", out["weight_decay"], low=0.0)
    out["schedule"] = _str("optimizer.schedule", out["schedule"], SCHEDULES)
    return out


def _privacy(raw) -> dict:
    out = _simple("privacy", raw)
    if out["noise_multiplier"] is not None and out["epsilon"] is not None:
        raise ValueError("privacy: give noise_multiplier or epsilon, not both")
    if out["noise_multiplier"] is not None:
        out["noise_multiplier"] = check_real("privacy.noise_multiplier", out["noise_multiplier"], low=0.0)
    if out["epsilon"] is not None:
        out["epsilon"] = check_real("privacy.epsilon", out["epsilon"], low=0.0, low_open=True)
    if out["delta"] is not None:
        out["delta"] = check_real("privacy.delta", out["delta"], low=0.0, high=1.0, low_open=True, high_open=True)
    out["allow_non_private"] = _bool("privacy.allow_non_private", out["allow_non_private"])
    return out


def _training(raw) -> dict:
    out = _simple("training", raw)
    if out["epochs"] is not None and out["steps"] is not None:
        raise ValueError("training: give epochs or steps, not both")
    if out["epochs"] is None and out["steps"] is None:
        out["epochs"] = 10
    key = "epochs" if out["epochs"] is not None else "steps"
    out[key] = check_int(f"training.{key}", out[key], low=1)
    if out["batch_size"] is not None and out["sampling_rate"] is not None:
        raise ValueError("training: give batch_size or sampling_rate, not both")
    if out["batch_size"] is None and out["sampling_rate"] is None:
        out["batch_size"] = 64
    if out["batch_size"] is not None:
        out["batch_size"] = check_int("training.batch_size", out["batch_size"], low=1)
    else:
        out["sampling_rate"] = check_real("training.sampling_rate", out["sampling_rate"], low=0.0, high=1.0,
                                          low_open=True)
    out["sampling"] = _str("training.sampling", out["sampling"], ("poisson", "shuffle"))
    if out["record_every"] not in ("epoch", "end"):
        if isinstance(out["record_every"], str):
            raise ValueError(f"training.record_every must be 'epoch', 'end' or an int >= 1, got {out['record_every']!r}")
        out["record_every"] = check_int("training.record_every", out["record_every"], low=1)
    out["seed"] = check_int("training.seed", out["seed"], low=0)
    if out["switch_at"] is not None:
        out["switch_at"] = check_real("training.switch_at", out["switch_at"], low=0.0, high=1.0, low_open=True,
                                      high_open=True)
    return out


# ----------------------------------------------------------------------------- public
def read_toml(path, what: str = "config file") -> dict:
    """The table of a TOML file (``tomllib``); a missing file or bad TOML is a ``ValueError`` naming it."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{what} {str(p)!r} does not exist or is not a file")
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{what} {str(p)!r} is not valid TOML: {e}") from None


def load(path) -> dict:
    """Read a TOML run config and :func:`validate` it."""
    return validate(read_toml(path, "config file"))


def validate(raw: dict) -> dict:
    """The normalised config: every section and key present, defaults filled, values checked.

    Also builds the chain once (on the data's shapes) so that a chain that would not be private,
    or a transform argument out of range, is refused here, naming ``mechanism[i]``.
    """
    t = _table("config", raw)
    _known("config", t, SECTIONS)
    cfg = {"data": _data(t.get("data", {})), "model": _model(t.get("model", {})),
           "mechanism": _mechanism(t.get("mechanism")),
           "switch_mechanism": None if t.get("switch_mechanism") is None else _mechanism(t["switch_mechanism"],
                                                                                         "switch_mechanism"),
           "optimizer": _optimizer(t.get("optimizer", {})),
           "privacy": _privacy(t.get("privacy", {})), "training": _training(t.get("training", {}))}
    _noise_source(cfg)
    _check_switch(cfg)
    given = cfg["privacy"]["noise_multiplier"]
    # argument ranges and the privacy rules, before any data is touched (a calibrated sigma is > 0)
    _chain(cfg, noise_multiplier=1.0 if given is None else given)
    if cfg["switch_mechanism"] is not None:
        _chain(cfg, 1.0 if given is None else given, key="switch_mechanism")
    return cfg


def config_id(config: dict) -> str:
    """Stable identity of a run: ``sims.store.config_hash`` (sha256 of the canonical JSON) of the
    normalised config, so the id of a run and its key in a results store are the same."""
    from sims.store import config_hash

    return config_hash(validate(config))


def _noise_source(cfg) -> None:
    """Exactly one place gives the noise multiplier of each noised stage."""
    priv = cfg["privacy"]
    if cfg["training"]["sampling"] == "shuffle" and priv["epsilon"] is not None and not priv["allow_non_private"]:
        raise ValueError("privacy.epsilon with training.sampling = 'shuffle': the accountant's Poisson analysis "
                         "does not cover shuffled batches; use sampling = 'poisson', or give "
                         "privacy.noise_multiplier (the run then reports its epsilon as not valid)")
    from_privacy = priv["noise_multiplier"] is not None or priv["epsilon"] is not None
    for key in ("mechanism", "switch_mechanism"):
        for i, t in enumerate(cfg[key] or ()):
            if t["name"] not in _NOISED:
                continue
            own = "noise_multiplier" in t
            if own and from_privacy:
                raise ValueError(f"{key}[{i}].noise_multiplier and privacy.noise_multiplier/epsilon are both "
                                 f"given: keep one")
            if not own and not from_privacy:
                priv["noise_multiplier"] = from_privacy = 1.0  # train's default


def _check_switch(cfg) -> None:
    """A switch needs both its keys, and is a non-private ablation (its privacy is not accounted)."""
    at, after = cfg["training"]["switch_at"], cfg["switch_mechanism"]
    if (at is None) != (after is None):
        raise ValueError("training.switch_at and [[switch_mechanism]] go together: give both or neither")
    if at is not None and not cfg["privacy"]["allow_non_private"]:
        raise ValueError("a run that switches chains (training.switch_at) is not accounted: the accountant does "
                         "not compose two phases; set privacy.allow_non_private = true (an ablation)")
    if at is not None and cfg["privacy"]["epsilon"] is not None:
        raise ValueError("privacy.epsilon with training.switch_at: a switched run has no epsilon to calibrate to; "
                         "give privacy.noise_multiplier or each noised stage's own")


def _transform_obj(path, t, noise_multiplier):
    fns = _transforms()
    kw = {k: v for k, v in t.items() if k != "name"}
    if t["name"] in _NOISED and "noise_multiplier" not in kw:
        kw["noise_multiplier"] = noise_multiplier
    if t["name"] == "error_feedback":
        kw["compressor"] = _transform_obj(f"{path}.compressor", kw["compressor"], noise_multiplier)
    try:
        return fns[t["name"]](**kw)
    except ValueError as e:
        msg = str(e)
        first = msg.split(" ", 1)[0]
        raise ValueError(f"{path}.{msg}" if first in kw else f"{path} ({t['name']}): {msg}") from None


def _chain(cfg, noise_multiplier, key="mechanism"):
    import sims.mechanisms as mech

    ts = [_transform_obj(f"{key}[{i}]", t, noise_multiplier) for i, t in enumerate(cfg[key])]
    try:
        return mech.chain(*ts, allow_non_private=cfg["privacy"]["allow_non_private"])
    except ValueError as e:
        msg = str(e).replace("pass allow_non_private=True", "set privacy.allow_non_private = true")
        raise ValueError(f"{key}: {msg}") from None


def _dataset(cfg):
    from sims import data

    d = cfg["data"]
    own = {k: v for k, v in d.items() if k not in _DATA_COMMON}
    dtype = np.float32 if cfg["model"]["dtype"] == "float32" else np.float64
    try:
        ds = _datasets()[d["name"]](**own, random_state=d["seed"], dtype=dtype)
    except ValueError as e:
        msg = str(e)
        raise ValueError(f"data.{msg}" if msg.split(" ", 1)[0] in own else f"data ({d['name']}): {msg}") from None
    if d["feature_scale"] != 1.0:
        ds = data.scale_features(ds, d["feature_scale"])
    if d["public_fraction"] is not None:
        ds = data.split_public(ds, d["public_fraction"], shift=d["public_shift"], random_state=d["seed"] + 1)
    if d["validation_fraction"] is not None:
        ds = data.split_validation(ds, d["validation_fraction"], random_state=d["seed"] + 2)
    how = d["standardize"]
    if how == "auto":
        how = "public" if ds.X_public is not None else "none"
    return ds if how == "none" else data.standardize(ds, fit_on=how)


def _model_obj(cfg, ds):
    from sims import models

    m = cfg["model"]
    kw = {"bias": m["bias"], "dtype": np.float32 if m["dtype"] == "float32" else np.float64}
    n_in = ds.X_train.shape[1]
    if m["kind"] in ("linear", "logistic"):
        return (models.linear_regression if m["kind"] == "linear" else models.logistic_regression)(n_in, **kw)
    n_classes = int(np.max(ds.y_train)) + 1
    if m["kind"] == "softmax":
        return models.softmax_regression(n_in, n_classes, **kw)
    return models.mlp((n_in, *m["hidden"], n_classes), activation=m["activation"], **kw)


@functools.lru_cache(maxsize=256)
def _calibrated(q, steps, epsilon, delta) -> float:
    """``dptheory.calibrate_noise`` (deterministic), remembered: the runs of a sweep share few targets."""
    import dptheory

    return dptheory.calibrate_noise(q, steps, epsilon=epsilon, delta=delta)


@functools.lru_cache(maxsize=256)
def _calibrated_selected(q, steps, epsilon, delta, k, selection_epsilon) -> float:
    """``dptheory.selection.calibrate_noise_selected`` (deterministic), remembered like :func:`_calibrated`;
    an unreachable target raises naming ``privacy.epsilon``."""
    from dptheory.selection import calibrate_noise_selected

    try:
        return calibrate_noise_selected(q, steps, epsilon, delta, k, selection_epsilon)
    except ValueError as e:
        raise ValueError(f"privacy.{e}") from None


def build(config: dict):
    """``(model, dataset, chain, train_kwargs)`` of a config (validated first).

    With ``privacy.epsilon``, the noise multiplier is ``dptheory.calibrate_noise(q, T, epsilon,
    delta)`` for this run's ``q`` and step count ``T`` (:func:`sims.train.run_length`), or, for a
    chain with a ``private_top_k`` stage (event ``SelectedGaussian``),
    ``dptheory.selection.calibrate_noise_selected(q, T, epsilon, delta, k, selection_epsilon)``.
    """
    from dptheory.events import SelectedGaussian
    from sims.train import default_delta, run_length

    cfg = validate(config)
    ds = _dataset(cfg)
    model = _model_obj(cfg, ds)
    tr, priv = cfg["training"], cfg["privacy"]
    n = ds.X_train.shape[0]
    delta = priv["delta"] if priv["delta"] is not None else default_delta(n)
    q, _, _, steps = run_length(n, sampling=tr["sampling"], sampling_rate=tr["sampling_rate"],
                                batch_size=tr["batch_size"], steps=tr["steps"], epochs=tr["epochs"])
    sigma = priv["noise_multiplier"]
    if priv["epsilon"] is not None:
        # the target is the chain's EFFECTIVE multiplier (stage sigma / declared sensitivity factors)
        desc = _chain(cfg, 1.0).privacy
        factor = 1.0 / desc.noise_multiplier
        ev = desc.event
        if isinstance(ev, SelectedGaussian):
            base = _calibrated_selected(q, steps, priv["epsilon"], delta, ev.k, ev.selection_epsilon)
        else:
            base = _calibrated(q, steps, priv["epsilon"], delta)
        sigma = factor * base
    ch = _chain(cfg, sigma)
    opt = cfg["optimizer"]
    kw = dict(steps=tr["steps"], epochs=tr["epochs"], sampling_rate=tr["sampling_rate"], batch_size=tr["batch_size"],
              mechanism=ch, optimizer=opt["name"], lr=opt["lr"], momentum=opt["momentum"],
              weight_decay=opt["weight_decay"], schedule=opt["schedule"], sampling=tr["sampling"], delta=delta,
              record_every={"epoch": None, "end": steps}.get(tr["record_every"], tr["record_every"]),
              random_state=tr["seed"])
    return model, ds, ch, kw


def sweep_run(**config) -> dict:
    """:func:`run` for ``sims.sweep.run_sweep`` (``fn(**config)``): the record without the wall time
    (so that the same config stores the same record bit for bit; the store times each run itself)
    and with the history under the store's reserved key ``"_history"``."""
    rec = run(config)
    rec.pop("wall_time")
    rec["_history"] = rec.pop("history")
    return rec


def sweep_run_stack(configs) -> list[dict]:
    """:func:`sweep_run` of configs that share one :func:`sims.stacking.stack_key`, trained in one
    stacked call (:func:`sims.stacking.run_stacked`); output ``j`` is ``sweep_run(**configs[j])``
    bit for bit."""
    from sims.stacking import run_stacked

    out = []
    for rec in run_stacked(configs):
        rec.pop("wall_time")
        rec["_history"] = rec.pop("history")
        out.append(rec)
    return out


def _stack_key(config) -> str | None:
    from sims.stacking import stack_key

    return stack_key(config)


# sims.sweep.run_sweep runs the configs of one stack key as one task (its module docstring)
sweep_run.stack_key = _stack_key
sweep_run.run_stack = sweep_run_stack


def second_phase(cfg, ds, kw):
    """``(T1, chain_after)`` of a run with ``training.switch_at`` (``T1 = round(switch_at T)``, at
    least 1 and at most ``T - 1``), else None."""
    from sims.train import run_length

    at = cfg["training"]["switch_at"]
    if at is None:
        return None
    T = run_length(ds.n_train, sampling=kw["sampling"], sampling_rate=kw["sampling_rate"],
                   batch_size=kw["batch_size"], steps=kw["steps"], epochs=kw["epochs"])[3]
    if T < 2:
        raise ValueError(f"training.switch_at needs a run of at least 2 steps, got {T}")
    given = cfg["privacy"]["noise_multiplier"]
    return min(max(int(round(at * T)), 1), T - 1), T, _chain(cfg, 1.0 if given is None else given,
                                                              key="switch_mechanism")


def switched_privacy(first: dict, second: dict, t1: int) -> dict:
    """The privacy report of a switched run (or of its first phase, when that diverged): not
    private, whatever each phase's chain is, because the accountant does not compose them."""
    notes = tuple(first["notes"]) + (tuple(second["notes"]) if second is not first else ())
    return {**second, "private": False, "accounting_valid": False, "epsilon": math.inf, "notes": notes,
            "reason": f"the chain switches at step {t1}: the accountant does not compose the two phases"}


def _train(model, ds, kw, switch):
    """``(TrainResult, diverged_at)``; with a switch, phase 2 starts from phase 1's parameters with
    a fresh optimizer state and schedule and its own seed ``SeedSequence([seed, 1])``; its records'
    steps and epochs continue phase 1's."""
    from sims.train import TrainingDiverged, train

    try:
        if switch is None:
            return train(model, ds, **kw), None
        t1, total, after = switch
        first = train(model, ds, **{**kw, "steps": t1, "epochs": None})
    except TrainingDiverged as e:
        if switch is None:
            return e.result, int(e.step)
        return replace(e.result, privacy=switched_privacy(e.result.privacy, e.result.privacy, switch[0])), int(e.step)
    kw2 = {**kw, "steps": total - t1, "epochs": None, "mechanism": after, "params0": first.params,
           "random_state": switch_seed(kw["random_state"])}
    try:
        second, diverged_at = train(model, ds, **kw2), None
    except TrainingDiverged as e:
        second, diverged_at = e.result, t1 + int(e.step)
    return merge_phases(first, second, t1), diverged_at


def switch_seed(seed: int) -> np.random.SeedSequence:
    """The seed of a switched run's phase 2: ``SeedSequence([seed, 1])`` (phase 1 runs on ``seed``)."""
    return np.random.SeedSequence([seed, 1])


def merge_phases(first, second, t1: int):
    """The ``TrainResult`` of a switched run from its two phases' results: phase 2's parameters and
    config, the histories concatenated (phase 2's ``step`` and ``epoch`` shifted by phase 1's
    ``t1`` steps), :func:`switched_privacy`, and ``t1 + second.steps_done`` steps."""
    from sims.train import TrainResult

    h1, h2 = first.history, second.history
    shift = {"step": t1, "epoch": t1 / first.config["steps_per_epoch"]}
    hist = {k: np.concatenate([h1[k], h2[k] + shift.get(k, 0)]) for k in h1 if k in h2}
    privacy = switched_privacy(first.privacy, second.privacy, t1)
    return TrainResult(params=second.params, history=hist, privacy=privacy, config=dict(second.config),
                       steps_done=t1 + second.steps_done)


def validation_accuracy(model, params, ds) -> float:
    """Accuracy of ``params`` on the validation split of ``ds`` (``data.validation_fraction``), NaN without one."""
    from sims import models

    if ds.X_val is None:
        return math.nan
    return float(models.evaluate(model, params, ds.X_val, ds.y_val)["accuracy"])


def record_of(config: dict, model, ds, res, diverged_at, wall_time: float) -> dict:
    """The record of :func:`run` for one run's ``TrainResult`` ``res`` (``diverged_at``: its 0-based
    divergence step, or None): the last recorded test accuracy and train loss (NaN after a
    divergence), the validation accuracy of the final parameters, the privacy report's fields and
    the history as arrays."""
    h = res.history
    last = (lambda key: float(h[key][-1]) if key in h and len(h[key]) and diverged_at is None else math.nan)
    pr = res.privacy
    return {"id": config_id(config), "test_accuracy": last("test_accuracy"),
            "validation_accuracy": math.nan if diverged_at is not None else validation_accuracy(model, res.params, ds),
            "train_loss": last("train_loss"), "private": bool(pr["private"]),
            "accounting_valid": bool(pr["accounting_valid"]), "epsilon": float(pr["epsilon"]),
            "delta": float(pr["delta"]), "noise_multiplier": pr["noise_multiplier"], "steps": int(res.steps_done),
            "diverged_at": None if diverged_at is None else int(diverged_at), "wall_time": wall_time,
            "history": {k: np.asarray(v) for k, v in h.items()}}


def run(config: dict) -> dict:
    """Train a config; returns ``{"id", "test_accuracy", "validation_accuracy", "train_loss", "private",
    "accounting_valid", "epsilon", "delta", "noise_multiplier", "steps", "diverged_at", "wall_time",
    "history"}`` (``history``: the arrays of :func:`sims.train.train`'s history; ``validation_accuracy``:
    of the final parameters on ``data.validation_fraction``'s split, NaN without one).

    A stackable config (:func:`sims.stacking.stack_key`: the chains of :data:`sims.stacked.MECHANISMS`
    in float64 with Poisson sampling) runs on the stacked engine, alone or in a group
    (:func:`sims.stacking.run_stacked`), with the same record bit for bit either way; it agrees with
    ``sims.train.train`` to about 1e-10 relative (docs/runs.md gives the exceptions: discrete choices
    made from rounding-level differences). Other configs run ``sims.train.train``.

    A run that diverges (:class:`sims.train.TrainingDiverged`) is a result, not an error: its
    ``diverged_at`` is the 0-based step, its ``test_accuracy`` and ``validation_accuracy`` are NaN
    and its history runs up to the last finite record (``diverged_at`` is None otherwise).
    """
    from sims.stacking import run_stacked, stack_key

    if stack_key(config) is not None:  # the stacked engine runs every stackable config (sims.stacking)
        return run_stacked([config])[0]
    t0 = time.perf_counter()
    model, ds, ch, kw = build(config)
    res, diverged_at = _train(model, ds, kw, second_phase(validate(config), ds, kw))
    return record_of(config, model, ds, res, diverged_at, time.perf_counter() - t0)
