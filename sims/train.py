"""The DP-SGD training loop: sampling, mechanism chain, optimizer, history and privacy report.

One step ``t`` (Abadi et al. 2016, "Deep Learning with Differential Privacy", Algorithm 1):

1. sample a batch: Poisson at rate ``q`` (each example independently; ``B_t ~ Binomial(n, q)``)
   or the next batch of a per-epoch shuffled permutation (fixed size ``B``);
2. one forward/backward pass on the batch (``sims.models.backprop``);
3. the mechanism chain (``sims.mechanisms``) turns it into the released update
   ``u_t = (sum_i clip_C(g_i) + N(0, sigma^2 C^2 I)) / (q n)`` (plus whatever
   sparsification or feedback the chain applies);
4. the optimizer (SGD, heavy-ball momentum, Adam; ``sims.optim``) applies ``u_t`` at the scheduled
   learning rate. The optimizer only sees ``u_t`` and public state, so it is post-processing.

Randomness consumption (documented so that a reference implementation can replay it). The run's
root is ``root = dptheory.validation.as_seed_sequence(random_state)`` (``SeedSequence(int)`` for an int); every
stream is a child with a FIXED spawn key, so step ``t`` draws the same numbers whatever happened
before it and whatever the thread count:

* :func:`init_generators`: ``child_sequence(root, 0).spawn(2)`` (``child_sequence(root, *k)`` is
  ``SeedSequence(root.entropy, spawn_key=root.spawn_key + k)``, :mod:`dptheory.validation`)
  -> ``(params_rng, mechanism_init_rng)``; initial parameters are
  ``sims.models.init_params(model, int(params_rng.integers(2**63)))`` unless ``params0`` is given;
* :func:`step_generators`: ``child_sequence(root, 1, t).spawn(2)``
  -> ``(sampling_rng, mechanism_rng)``; Poisson sampling uses ``sims.sampling.poisson_mask(n, q,
  sampling_rng)``; ``mechanism_rng`` is ``StepContext.rng`` (the noise seed comes from it);
* :func:`epoch_generator`: ``child_sequence(root, 2, e)`` -> the
  generator of ``sims.sampling.shuffled_batches`` for epoch ``e`` (shuffle sampling only).

Divergence: if the released update, the new parameters or a recorded loss is not finite, the run
stops and raises :class:`TrainingDiverged` (a ``FloatingPointError``) whose message gives the
0-based step; its ``.result`` is a :class:`TrainResult` with the last finite parameters and the
history recorded so far (no NaN is ever written to the history).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from dptheory.accounting import steps_per_epoch
from dptheory.events import SelectedGaussian, epsilon_of
from dptheory.validation import (as_seed_sequence, child_sequence, check_choice, check_delta, check_finite_array, check_int,
                                 check_real)

from . import optim as _optim
from .data import Dataset, PublicSplit, private_preprocessing_notes, public_split
from .mechanisms.base import METRICS
from .rng import derive_seed, pcg64_states, seed_sequence_pools
from .sampling import PoissonSampler, n_shuffled_batches, shuffled_batches, take_rows
from .step import dpsgd_step, step_context

__all__ = [
    "train", "run_length", "TrainResult", "TrainingDiverged", "DIVERGENCE_FACTOR", "default_mechanism", "default_delta",
    "init_generators", "step_generators", "epoch_generator", "StepStreams", "privacy_report", "epsilon_after",
    "unpack_data", "run_checks", "MODES", "SAMPLINGS",
]

MODES = ("dp", "nonprivate", "clip_only", "noise_only")
SAMPLINGS = ("poisson", "shuffle")

SHUFFLE_CAVEAT = (
    "sampling='shuffle' (fixed-size shuffled batches): the reported epsilon is the RDP accounting of "
    "POISSON subsampling at q = batch_size / n and does NOT cover shuffled fixed-size batches; it is not "
    "a valid privacy guarantee for this run (the mismatch noted in the random-freeze paper's code)."
)


# ----------------------------------------------------------------------------- records
@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train`.

    Attributes
    ----------
    params : ndarray (d,)
        Final parameters (``model.dtype``).
    history : dict[str, ndarray]
        One entry per record (see :func:`train`), all float64 (``step`` int64).
    privacy : dict
        ``private, epsilon, delta, order, noise_multiplier, sensitivity, sampling_rate, steps, sampling,
        accounting, accounting_valid, event, reason, notes``.
    config : dict
        The resolved arguments (steps, sampling rate, expected batch size, seed entropy, ...).
    steps_done : int
        Number of completed steps.
    """

    params: np.ndarray
    history: dict
    privacy: dict
    config: dict
    steps_done: int


#: Default of ``train(divergence_factor=...)``: a training loss this many times the initial loss
#: stops the run. The main job's runs stay below 1.1 times it at every step size of its grids
#: (``tests/test_train.py::test_divergence_check_never_fires_on_the_main_jobs_runs``).
DIVERGENCE_FACTOR = 100.0
DIVERGENCE_NOTE = ("stopped by divergence_factor: when to stop was decided from the un-noised training loss, "
                   "a release not covered by epsilon (divergence_factor=None for runs that must not stop on it)")


class TrainingDiverged(FloatingPointError):
    """Raised when an update, the parameters or a recorded loss becomes NaN or infinite.

    ``step`` is the 0-based step at which it happened; ``result`` the :class:`TrainResult` up to the
    last finite state (its history holds only finite values).
    """

    def __init__(self, message: str, step: int, result: TrainResult):
        super().__init__(message)
        self.step = step
        self.result = result


# ----------------------------------------------------------------------------- randomness
def init_generators(root: np.random.SeedSequence):
    """``(params_rng, mechanism_init_rng)`` of a run (spawn key ``(0,)``)."""
    a, b = child_sequence(root, 0).spawn(2)
    return np.random.default_rng(a), np.random.default_rng(b)


def step_generators(root: np.random.SeedSequence, step: int):
    """``(sampling_rng, mechanism_rng)`` of 0-based step ``step`` (spawn key ``(1, step)``)."""
    a, b = child_sequence(root, 1, step).spawn(2)
    return np.random.default_rng(a), np.random.default_rng(b)


def epoch_generator(root: np.random.SeedSequence, epoch: int) -> np.random.Generator:
    """Generator of the shuffled permutation of 0-based epoch ``epoch`` (spawn key ``(2, epoch)``)."""
    return np.random.default_rng(child_sequence(root, 2, epoch))


def _is_words(x) -> bool:
    """An int >= 0 (not a bool), or a list/tuple of them: entropy the vectorised SeedSequence takes."""
    if isinstance(x, (tuple, list)):
        return len(x) > 0 and all(_is_words(v) and not isinstance(v, (tuple, list)) for v in x)
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_)) and int(x) >= 0


class StepStreams:
    """:func:`step_generators` for a whole run, at a fraction of its cost.

    ``streams(t)`` returns two Generators whose states equal those of ``step_generators(root, t)``
    (the same streams, draw for draw), but the SeedSequence hashing is done for blocks of up to
    ``BLOCK`` steps at once (:func:`sims.rng.seed_sequence_pools`, checked against NumPy's in the
    tests) and the two Generator objects are re-seeded in place instead of being rebuilt (six
    object constructions, ~20 us, per step). The generators are those of step ``t`` until the
    next call. A root whose entropy is not an int or a sequence of ints takes the plain path.
    """

    BLOCK = 512

    def __init__(self, root: np.random.SeedSequence, total_steps: int):
        self.root = root
        self.total = int(total_steps)
        self.fast = _is_words(root.entropy) and all(_is_words(k) for k in root.spawn_key)
        self.gens = tuple(np.random.Generator(np.random.PCG64(0)) for _ in range(2))
        self.start = None
        self.states = None

    def _fill(self, start: int) -> None:
        r = self.root
        steps = np.arange(start, max(start + 1, min(start + self.BLOCK, self.total)), dtype=np.uint32)
        prefix = tuple(int(k) for k in r.spawn_key) + (1,)
        self.states = [pcg64_states(seed_sequence_pools(r.entropy, prefix, [steps, np.full(steps.shape, j)],
                                                        r.pool_size)) for j in (0, 1)]
        self.start = start

    def __call__(self, t: int):
        if not self.fast or t >= self.total or self.total >= 2 ** 32:
            return step_generators(self.root, t)
        start = t - t % self.BLOCK
        if start != self.start:
            self._fill(start)
        for g, states in zip(self.gens, self.states):
            g.bit_generator.state = {"bit_generator": "PCG64", "state": states[t - start],
                                     "has_uint32": 0, "uinteger": 0}
        return self.gens


# ----------------------------------------------------------------------------- helpers
def default_delta(n: int) -> float:
    """Default ``delta = min(1e-5, n ** -1.1)``: the customary 1e-5, and always below ``1/n``
    (a ``delta >= 1/n`` admits mechanisms that publish a random example outright; Dwork & Roth 2014, Sec. 2.3)."""
    n = check_int("n", n, low=1)
    return min(1e-5, float(n) ** -1.1)


def default_mechanism(mode: str, clip_norm, noise_multiplier):
    """The chain :func:`train` builds when no ``mechanism`` is given.

    ``"dp"``: ``chain(clip(C), gaussian_noise(sigma))`` (Abadi et al. 2016);
    ``"nonprivate"``: ``chain(clip(None))`` (plain minibatch SGD, the sum divided by ``q n``);
    ``"clip_only"``: ``chain(clip(C))``; ``"noise_only"``: ``chain(clip(None, reference_norm=C),
    gaussian_noise(sigma))`` (the same noise std ``sigma C`` as "dp", no clipping; Watson et al. 2023).
    The three ablations are built with ``allow_non_private=True`` and report ``private=False``.
    """
    from sims.mechanisms import chain, clip, gaussian_noise

    check_choice("mode", mode, MODES)
    if mode == "dp":
        return chain(clip(clip_norm), gaussian_noise(noise_multiplier))
    if mode == "nonprivate":
        return chain(clip(None), allow_non_private=True)
    if mode == "clip_only":
        return chain(clip(clip_norm), allow_non_private=True)
    return chain(clip(None, reference_norm=clip_norm), gaussian_noise(noise_multiplier), allow_non_private=True)


def unpack_data(data, model):
    """``(X, y, X_test, y_test, public, notes)`` from a ``sims.data.Dataset`` (or a duck-typed
    equivalent): ``public`` a :class:`sims.data.PublicSplit` checked disjoint from ``X``, ``notes``
    the pre-processing that read private rows (:func:`sims.data.private_preprocessing_notes`)."""
    def first(*names):
        for name in names:
            if hasattr(data, name):
                return getattr(data, name)
        return None

    X = first("X_train", "X")
    y = first("y_train", "y")
    if X is None or y is None:
        raise ValueError(f"data must be a sims.data.Dataset with training arrays, got {type(data).__name__}")
    X_test, y_test = first("X_test"), first("y_test")
    public = first("public")
    if public is None and first("X_public") is not None:
        public = (first("X_public"), first("y_public"))
    X = check_finite_array("data.X_train", X, ndim=2)
    y = check_finite_array("data.y_train", y, ndim=1)
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"data.X_train and data.y_train must have the same number of rows, got {X.shape[0]} and {y.shape[0]}")
    if X.shape[0] < 1:
        raise ValueError("data.X_train must have at least 1 row, got 0")
    if X.shape[1] != model.n_features:
        raise ValueError(f"data.X_train must have {model.n_features} columns (model input size), got {X.shape[1]}")
    X = np.ascontiguousarray(X, dtype=model.dtype)
    from sims.models.dense import check_targets

    try:  # once per run: the loop's backprop then skips its per-step checks
        y = check_targets(model, y, X.shape[0])
    except ValueError as e:
        raise ValueError(f"data.y_train: {e}") from None
    if X_test is not None and y_test is not None and np.asarray(X_test).shape[0] > 0:
        X_test = check_finite_array("data.X_test", X_test, ndim=2)
        y_test = check_finite_array("data.y_test", y_test, ndim=1)
        if X_test.shape[0] != y_test.shape[0] or X_test.shape[1] != model.n_features:
            raise ValueError(f"data.X_test / data.y_test shapes {X_test.shape} / {y_test.shape} disagree with the model "
                             f"({model.n_features} features)")
        X_test = np.ascontiguousarray(X_test, dtype=model.dtype)
    else:
        X_test = y_test = None
    if public is not None:
        Xp, yp = (public.X, public.y) if isinstance(public, PublicSplit) else public
        Xp = check_finite_array("data.X_public", Xp, ndim=2)
        yp = check_finite_array("data.y_public", yp, ndim=1)
        if Xp.shape[0] != yp.shape[0] or Xp.shape[1] != model.n_features:
            raise ValueError(f"data.X_public / data.y_public shapes {Xp.shape} / {yp.shape} disagree with the model")
        public = public_split(np.ascontiguousarray(Xp, dtype=model.dtype), yp, X)  # refuses an overlap
    notes = private_preprocessing_notes(data) if isinstance(data, Dataset) else ()
    return X, y, X_test, y_test, public, notes


def run_length(n, *, sampling="poisson", sampling_rate=None, batch_size=None, steps=None, epochs=None):
    """``(q, B, steps_per_epoch, total_steps)`` of a run on ``n`` private rows, as :func:`train` resolves them.

    Exactly one of ``sampling_rate`` / ``batch_size`` and one of ``steps`` / ``epochs`` (see
    :func:`train`). What a noise calibration needs before the run: ``q`` and ``total_steps``.
    """
    n = check_int("n", n, low=1)
    sampling = check_choice("sampling", sampling, SAMPLINGS)
    q, B, spe = _resolve_sampling(n, sampling, sampling_rate, batch_size)
    if (steps is None) == (epochs is None):
        raise ValueError("give exactly one of steps (int >= 1) and epochs (int >= 1)")
    total = check_int("steps", steps, low=1) if steps is not None else check_int("epochs", epochs, low=1) * spe
    return q, B, spe, total


def run_checks(n: int, spe: int, a: dict):
    """``(delta, record_every, divergence_factor)`` of a run's arguments ``a`` on ``n`` private rows
    with ``spe`` steps per epoch, checked as :func:`train` checks them (``delta`` defaults to
    :func:`default_delta`, ``record_every`` to one record per epoch)."""
    delta = default_delta(n) if a["delta"] is None else check_delta(a["delta"], n)
    rec = spe if a["record_every"] in (None, "epoch") else check_int("record_every", a["record_every"], low=1)
    factor = a["divergence_factor"]
    if factor is not None:
        factor = check_real("divergence_factor", factor, low=1.0, low_open=True)
    return delta, rec, factor


def _resolve_sampling(n, sampling, sampling_rate, batch_size):
    if (sampling_rate is None) == (batch_size is None):
        raise ValueError("give exactly one of sampling_rate (in (0, 1]) and batch_size (in [1, n])")
    if sampling_rate is not None:
        q = check_real("sampling_rate", sampling_rate, low=0.0, high=1.0, low_open=True)
        if sampling == "shuffle":
            B = max(1, int(round(q * n)))
            q = B / n
        else:
            B = q * n
    else:
        B = check_int("batch_size", batch_size, low=1, high=n)
        q = B / n
    if sampling == "shuffle":
        spe = n_shuffled_batches(n, int(B))
    else:
        spe = steps_per_epoch(q)
    return q, float(B), spe


def privacy_report(description, *, sampling_rate: float, steps: int, delta: float, sampling: str = "poisson",
                   preprocessing=(), notes=()) -> dict:
    """The ``privacy`` dict of a :class:`TrainResult` after ``steps`` steps of a chain.

    The chain's per-step event (``description.event``, a ``dptheory.events`` event) is
    Poisson-sampled at ``q = sampling_rate`` and self-composed ``steps`` times, and accounted by
    RDP (Mironov, Talwar & Zhang 2019) via :func:`dptheory.epsilon_of`. A non-private description
    gets ``epsilon = inf``; shuffled batches get the shuffle caveat and ``accounting_valid = False``.
    ``preprocessing`` lists pre-processing that read private rows (not covered by epsilon);
    ``notes`` are appended as they are.
    """
    desc = description
    notes_out = list(desc.notes)
    private = bool(desc.private)
    if private and steps > 0:
        event = desc.event.poisson_sampled(sampling_rate, steps)
        eps, order = _accounted(desc.event, sampling_rate, steps, delta)
    elif private:
        event, eps, order = desc.event, 0.0, None
    else:
        event, eps, order = desc.event, math.inf, None
        notes_out.append(f"not private: {desc.reason}")
    if sampling == "shuffle":
        notes_out.append(SHUFFLE_CAVEAT)
    notes_out.extend(f"pre-processing not covered by epsilon: {n}" for n in preprocessing)
    return {
        "private": private, "epsilon": eps, "delta": delta, "order": order,
        "noise_multiplier": desc.noise_multiplier, "sensitivity": desc.sensitivity,
        "sampling_rate": sampling_rate, "steps": int(steps), "sampling": sampling,
        "accounting": _accounting_name(desc.event),
        "accounting_valid": private and sampling == "poisson", "event": event, "reason": desc.reason,
        "private_preprocessing": tuple(preprocessing), "notes": tuple(notes_out) + tuple(notes),
    }


def _accounting_name(event) -> str:
    """How ``epsilon`` was computed, for the report."""
    if isinstance(event, SelectedGaussian):
        return ("RDP of Poisson-subsampled private top-k selection + Gaussian (Zhu & Wang 2019 general bound; "
                "dptheory.epsilon_of)")
    return "RDP of the Poisson-subsampled Gaussian (dptheory.epsilon_of)"


def epsilon_after(description, *, sampling_rate: float, steps: int, delta: float) -> float:
    """The ``epsilon`` of :func:`privacy_report` after ``steps`` steps (the history's column):
    ``inf`` for a non-private chain, 0 before the first step."""
    if not description.private:
        return math.inf
    if steps <= 0:
        return 0.0
    return _accounted(description.event, sampling_rate, steps, delta)[0]


def _privacy_report(run, steps: int) -> dict:
    return privacy_report(run.mech.privacy, sampling_rate=run.q, steps=steps, delta=run.delta,
                          sampling=run.sampling, preprocessing=run.notes)


@functools.lru_cache(maxsize=4096)
def _poisson_epsilon(event, q: float, steps: int, delta: float) -> tuple:
    """``epsilon_of(event.poisson_sampled(q, steps), delta)`` as ``(float epsilon, order)``, cached
    across runs: the RDP accounting costs ~7 ms per call, and the records, the final report,
    replicates and sweeps ask for the same ``(q, T)`` again."""
    eps, order = epsilon_of(event.poisson_sampled(q, steps), delta)
    return float(eps), order


def _accounted(event, q: float, steps: int, delta: float) -> tuple:
    """:func:`_poisson_epsilon`, uncached for an unhashable event."""
    try:
        return _poisson_epsilon(event, q, int(steps), delta)
    except TypeError:
        return _poisson_epsilon.__wrapped__(event, q, int(steps), delta)


def _epsilon_at(run, steps: int) -> float:
    return epsilon_after(run.mech.privacy, sampling_rate=run.q, steps=steps, delta=run.delta)


class _History:
    """Accumulates per-step mechanism metrics between records and appends finite records."""

    def __init__(self):
        self.rows = {}
        self._reset()

    def _reset(self):
        self.acc = {}
        self.count = 0

    def add_step(self, metrics: dict, batch_size: int, update_sq: float):
        self.count += 1
        row = dict(metrics)
        row["signal_norm"] = math.sqrt(max(float(metrics.get("signal_sq_after_mask", 0.0)), 0.0))
        row["noise_norm"] = math.sqrt(max(float(metrics.get("noise_sq", 0.0)), 0.0))
        row["update_norm"] = math.sqrt(update_sq)
        row["batch_size"] = float(batch_size)
        for k, v in row.items():
            v = float(v)
            self.acc[k] = self.acc.get(k, 0.0) + (v if math.isfinite(v) else 0.0)

    def record(self, fixed: dict):
        row = {k: v / self.count for k, v in self.acc.items()} if self.count else {}
        row.update(fixed)
        for k in METRICS:
            row.setdefault(k, 0.0)
        n_prev = len(next(iter(self.rows.values()))) if self.rows else 0
        for k in row:
            if k not in self.rows:
                self.rows[k] = [0.0] * n_prev
        for k, col in self.rows.items():
            col.append(row.get(k, 0.0))
        self._reset()

    def arrays(self) -> dict:
        out = {}
        for k, col in self.rows.items():
            out[k] = np.asarray(col, dtype=np.int64 if k == "step" else np.float64)
        return out


# ----------------------------------------------------------------------------- resolution
@dataclass(frozen=True)
class _Run:
    """Everything :func:`train` resolved before the first step."""

    model: object
    X: np.ndarray
    y: np.ndarray
    X_test: object
    y_test: object
    public: object
    sampling: str
    q: float
    B: float
    spe: int
    total_steps: int
    delta: float
    rec: int
    divergence_factor: float | None
    mech: object
    opt: object
    sched: object
    root: np.random.SeedSequence
    notes: tuple
    config: dict


def _resolve_mechanism(mode, mechanism, clip_norm, noise_multiplier):
    from sims.mechanisms import Chain

    if mechanism is not None:
        if mode != "dp":
            raise ValueError(f"mode must be 'dp' when a mechanism is given (the chain decides), got {mode!r}")
        if not isinstance(mechanism, Chain):
            raise ValueError(f"mechanism must be a sims.mechanisms.Chain made by sims.mechanisms.chain(...), "
                             f"got {type(mechanism).__name__}")
        return mechanism, clip_norm, noise_multiplier
    if mode != "nonprivate":
        clip_norm = check_real("clip_norm", clip_norm, low=0.0, low_open=True)
    if mode in ("dp", "noise_only"):
        noise_multiplier = check_real("noise_multiplier", noise_multiplier, low=0.0, low_open=True)
    elif noise_multiplier is not None:
        noise_multiplier = check_real("noise_multiplier", noise_multiplier, low=0.0)
    return default_mechanism(mode, clip_norm, noise_multiplier), clip_norm, noise_multiplier


def _resolve_optimizer(optimizer, momentum, weight_decay):
    if isinstance(optimizer, _optim.Optimizer):
        if momentum or weight_decay:
            raise ValueError("momentum and weight_decay must be 0 when optimizer is an Optimizer object "
                             "(configure the object instead)")
        return optimizer
    check_choice("optimizer", optimizer, ("sgd", "momentum", "nesterov", "adam"))
    if optimizer == "adam" and momentum:
        raise ValueError(f"momentum must be 0 with optimizer='adam' (use sims.optim.adam(beta1=...)), got {momentum!r}")
    return _optim.make_optimizer(optimizer, momentum_=check_real("momentum", momentum, low=0.0, high=1.0, high_open=True),
                                 weight_decay=check_real("weight_decay", weight_decay, low=0.0))


def _resolve_schedule(lr, schedule, strong_convexity, total_steps):
    """``(schedule t -> lr_t, description of lr for the config)``."""
    if callable(lr):
        if schedule is not None:
            raise ValueError("give the learning-rate schedule either as a callable lr or as schedule, not both")
        return lr, "callable"
    lr = check_real("lr", lr, low=0.0)
    kw = {} if strong_convexity is None else {"strong_convexity": strong_convexity}
    return _optim.make_schedule(schedule, lr, total_steps, **kw), lr


def _resolve(model, data, a: dict) -> _Run:
    """Validate and resolve the arguments ``a`` of :func:`train` (one error per bad argument)."""
    from sims.models import dense as _dense

    if not isinstance(model, _dense.Model):
        raise ValueError(f"model must be a sims.models.Model, got {type(model).__name__}")
    check_choice("mode", a["mode"], MODES)
    sampling = check_choice("sampling", a["sampling"], SAMPLINGS)
    X, y, X_test, y_test, public, notes = unpack_data(data, model)
    n = X.shape[0]
    q, B, spe, total = run_length(n, sampling=sampling, sampling_rate=a["sampling_rate"], batch_size=a["batch_size"],
                                  steps=a["steps"], epochs=a["epochs"])
    delta, rec, factor = run_checks(n, spe, a)
    mech, clip_norm, sigma = _resolve_mechanism(a["mode"], a["mechanism"], a["clip_norm"], a["noise_multiplier"])
    opt = _resolve_optimizer(a["optimizer"], a["momentum"], a["weight_decay"])
    sched, lr_desc = _resolve_schedule(a["lr"], a["schedule"], a["strong_convexity"], total)
    root = as_seed_sequence(a["random_state"])
    custom = a["mechanism"] is not None
    schedule = a["schedule"]
    config = {
        "n": n, "d": model.layout.n_params, "steps": total, "steps_per_epoch": spe, "sampling": sampling,
        "sampling_rate": q, "expected_batch_size": B, "mode": "custom" if custom else a["mode"],
        "clip_norm": None if custom else clip_norm,
        "noise_multiplier": mech.privacy.noise_multiplier if custom else sigma,
        "optimizer": opt.name, "optimizer_hyperparams": opt.hyperparams, "lr": lr_desc,
        "schedule": schedule if (schedule is None or isinstance(schedule, str)) else "callable",
        "delta": delta, "record_every": rec, "divergence_factor": factor, "entropy": root.entropy, "spawn_key": tuple(root.spawn_key),
        "dtype": str(model.dtype),
    }
    return _Run(model, X, y, X_test, y_test, public, sampling, q, B, spe, total, delta, rec, factor, mech, opt,
                sched, root, notes, config)


def _initial_params(run: _Run, params0, params_rng) -> np.ndarray:
    from sims.models import dense as _dense

    if params0 is None:
        return _dense.init_params(run.model, derive_seed(params_rng))
    d = run.model.layout.n_params
    params = check_finite_array("params0", params0, ndim=1)
    if params.shape != (d,):
        raise ValueError(f"params0 must have shape ({d},), got {params.shape}")
    return np.array(params, dtype=run.model.dtype, copy=True)


# ----------------------------------------------------------------------------- the loop
class _Loop:
    """The training loop of one resolved run: the step, the optimizer, records, divergence."""

    def __init__(self, run: _Run, params0):
        from sims.mechanisms import InitContext

        self.run = run
        params_rng, mech_init_rng = init_generators(run.root)
        self.params = _initial_params(run, params0, params_rng)
        self.mstate = run.mech.init(InitContext(
            model=run.model, layout=run.model.layout, params=self.params.copy(), total_steps=run.total_steps,
            steps_per_epoch=run.spe, expected_batch_size=run.B, public=run.public, rng=mech_init_rng))
        self.ostate = run.opt.init(self.params)
        self.loss0 = None if run.divergence_factor is None else _evaluate(run, self.params)["train_loss"]
        self.hist = _History()
        self.eps_cache = {}
        self.epoch_batches = None
        self.streams = StepStreams(run.root, run.total_steps)
        n = run.X.shape[0]
        self.sampler = PoissonSampler(n, run.q) if run.sampling == "poisson" else None
        self.xbuf = self.ybuf = None

    def indices(self, t: int, sampling_rng) -> np.ndarray:
        """Sorted (Poisson) or shuffled indices of the batch of step ``t``."""
        run = self.run
        if run.sampling == "poisson":
            return self.sampler.indices(sampling_rng)
        if t % run.spe == 0:
            self.epoch_batches = shuffled_batches(run.X.shape[0], int(run.B), epoch_generator(run.root, t // run.spe))
        return self.epoch_batches[t % run.spe]

    def batch(self, idx: np.ndarray):
        """``(X[idx], y[idx])`` gathered into buffers reused across steps, as read-only views."""
        X, y = self.run.X, self.run.y
        k = idx.shape[0]
        if self.xbuf is None or self.xbuf.shape[0] < k:  # grow (a Poisson batch size varies)
            cap = min(X.shape[0], max(k, int(1.25 * self.run.B) + 16))
            self.xbuf = np.empty((cap, X.shape[1]), dtype=X.dtype)
            self.ybuf = np.empty(cap, dtype=y.dtype)
        xb = take_rows(X, idx, self.xbuf)
        yb = np.take(y, idx, out=self.ybuf[:k])
        xb.flags.writeable = False
        yb.flags.writeable = False
        return xb, yb

    def step(self, t: int) -> None:
        """Step ``t``: sample, release (:func:`sims.step.dpsgd_step`), apply, accumulate metrics."""
        run = self.run
        sampling_rng, mech_rng = self.streams(t)
        idx = self.indices(t, sampling_rng)
        xb, yb = self.batch(idx)
        ctx = step_context(run.model, self.params, xb, yb, step=t, epoch=t // run.spe,
                           expected_batch_size=run.B, public=run.public, rng=mech_rng, validate=False)
        update, self.mstate, metrics = dpsgd_step(run.mech, self.mstate, ctx)
        u64 = update.astype(np.float64)
        usq = float(np.dot(u64, u64))
        if not math.isfinite(usq):
            self.diverged("the released update", t)
        lr_t = float(run.sched(t))
        if not (math.isfinite(lr_t) and lr_t >= 0):
            raise ValueError(f"lr schedule must give finite rates >= 0, got {lr_t!r} at step {t}")
        new_params, self.ostate = run.opt.step(self.params, update, self.ostate, lr_t)
        if not np.isfinite(new_params).all():
            self.diverged("the parameter vector", t)
        self.params = np.asarray(new_params, dtype=run.model.dtype)
        self.hist.add_step(metrics, idx.shape[0], usq)
        done = t + 1
        if done % run.rec == 0 or done == run.total_steps:
            self.record(done, t, lr_t)

    def record(self, done: int, t: int, lr_t: float) -> None:
        run = self.run
        with np.errstate(over="ignore", invalid="ignore"):
            row = _evaluate(run, self.params)
        if not all(math.isfinite(v) for v in row.values()):
            self.diverged("the recorded loss", t)
        f = run.divergence_factor
        if f is not None and self.loss0 > 0 and row["train_loss"] > f * self.loss0:
            res = self.result(t + 1)
            res.privacy["notes"] = res.privacy["notes"] + (DIVERGENCE_NOTE,)
            raise TrainingDiverged(
                f"training diverged by step {t} (0-based; checked at the records): the training loss "
                f"{row['train_loss']:.4g} exceeds divergence_factor = {f:g} times the initial loss {self.loss0:.4g} "
                f"(lr={lr_t!r}); .result holds the parameters after it and the history before it", t, res)
        if done not in self.eps_cache:
            self.eps_cache[done] = _epsilon_at(run, done)
        row.update(step=done, epoch=done / run.spe, lr=lr_t, epsilon=self.eps_cache[done])
        self.hist.record(row)

    def result(self, t_done: int) -> TrainResult:
        return TrainResult(params=self.params, history=self.hist.arrays(), privacy=_privacy_report(self.run, t_done),
                           config=dict(self.run.config), steps_done=t_done)

    def diverged(self, what: str, t: int):
        raise TrainingDiverged(f"training diverged at step {t} (0-based): {what} is not finite "
                               f"(lr={float(self.run.sched(t))!r}); history kept up to the last finite record",
                               t, self.result(t))


def _evaluate(run: _Run, p) -> dict:
    from sims.models import dense as _dense

    m = run.model
    tr = _dense.evaluate(m, p, run.X, run.y)
    row = {"train_loss": tr["loss"], "train_accuracy": tr["accuracy"]}
    if run.X_test is not None:
        te = _dense.evaluate(m, p, run.X_test, run.y_test)
        row["test_loss"], row["test_accuracy"] = te["loss"], te["accuracy"]
    return row


def train(model, data, *, steps=None, epochs=None, sampling_rate=None, batch_size=None,
          clip_norm=1.0, noise_multiplier=1.0, mode="dp", mechanism=None, optimizer="sgd",
          lr=0.1, schedule=None, momentum=0.0, weight_decay=0.0, strong_convexity=None,
          sampling="poisson", delta=None, record_every=None, params0=None,
          divergence_factor=DIVERGENCE_FACTOR, random_state=None) -> TrainResult:
    """Train ``model`` on ``data`` with DP-SGD (or one of its ablations).

    Algorithm (Abadi et al. 2016, Alg. 1): at step ``t`` sample a batch (Poisson at rate ``q``,
    or shuffled fixed-size), let the mechanism chain release
    ``u_t = (sum_{i in batch} clip_C(g_i) + N(0, sigma^2 C^2 I)) / (q n)`` (divided by the EXPECTED
    batch size ``q n``; for shuffle sampling by the nominal batch size), then
    ``w_{t+1} = optimizer(w_t, u_t, lr_t)``. Privacy (add/remove adjacency): the chain's per-step
    event (``mechanism.privacy.event``, ``Gaussian(sigma)`` for every private built-in chain)
    Poisson-sampled at ``q`` and self-composed over the ``T`` steps,
    ``dptheory.epsilon_of(event.poisson_sampled(q, T), delta)``: the RDP of the subsampled Gaussian
    (Mironov, Talwar & Zhang 2019) converted to ``(epsilon, delta)`` (docs/theory.md §1.2-1.3); a
    chain with ``private_top_k`` has the event ``SelectedGaussian``, accounted with Zhu & Wang's
    (2019) general subsampling bound (docs/selection.md).

    Parameters
    ----------
    model : sims.models.Model
    data : sims.data.Dataset
        Training split (``X_train, y_train``), optional test split and optional public split.
    steps, epochs : int
        Exactly one: ``steps >= 1``, or ``epochs >= 1`` with ``steps = epochs * steps_per_epoch`` where
        ``steps_per_epoch = round(1/q)`` (Poisson) or ``ceil(n / B)`` (shuffle).
    sampling_rate, batch_size : float, int
        Exactly one: ``q`` in ``(0, 1]`` or ``B`` in ``[1, n]`` (``q = B / n``). For shuffle sampling a
        ``sampling_rate`` is turned into ``B = max(1, round(q n))``.
    clip_norm : float > 0
        Per-example L2 clip norm ``C`` of the default chain (for "noise_only" it sets the noise std
        ``sigma C`` only).
    noise_multiplier : float
        ``sigma > 0`` for "dp" and "noise_only" (``>= 0`` or None accepted and unused for the other modes).
    mode : {"dp", "nonprivate", "clip_only", "noise_only"}
        Which default chain to build (see :func:`default_mechanism`). Must be "dp" when
        ``mechanism`` is given.
    mechanism : sims.mechanisms.Chain, optional
        A user chain; replaces the default, and ``clip_norm`` / ``noise_multiplier`` are then unused
        (privacy comes from ``mechanism.privacy``).
    optimizer : {"sgd", "momentum", "nesterov", "adam"} or sims.optim.Optimizer
        "sgd" with ``momentum > 0`` is heavy-ball momentum; "momentum"/"nesterov" default to 0.9 when
        ``momentum == 0``; ``momentum > 0`` with "adam" is refused. ``weight_decay`` (coupled L2) and
        ``momentum`` apply to named optimizers only (both must be 0 with an Optimizer object).
    momentum : float in [0, 1)
    weight_decay : float >= 0
    strong_convexity : float > 0, optional
        lambda of ``schedule="inverse_time"`` (``lr_t = 1 / (lambda (t + 1))``).
    lr : float >= 0 or callable
        Base learning rate, or a schedule ``t -> lr_t`` (then ``schedule`` must be None).
    schedule : None, "constant", "cosine", "step", "warmup_cosine", "inverse_time" or callable
        See :func:`sims.optim.make_schedule`; "inverse_time" needs ``strong_convexity`` (lambda > 0).
    sampling : {"poisson", "shuffle"}
    delta : float in (0, 1/n), optional
        Defaults to :func:`default_delta` ``= min(1e-5, n^-1.1)``. A ``delta >= 1/n`` is refused
        (it admits publishing a random example outright).
    record_every : None, "epoch" or int >= 1
        History record interval in steps (default: once per epoch); the last step is always recorded.
    params0 : ndarray (d,), optional
        Initial parameters (copied); default ``sims.models.init_params`` from the run's seed.
    divergence_factor : float > 1 or None
        Stop with :class:`TrainingDiverged` at the first record whose training loss exceeds
        ``divergence_factor`` times the training loss at the initial parameters (default
        :data:`DIVERGENCE_FACTOR` = 100; None turns the check off, and it is off when the initial
        loss is 0). Clipping keeps a DP run finite at any learning rate, so an exploding run would
        otherwise finish with a loss of 1e40 and no error. The check reads the un-noised training
        loss, like the history: when it fires, the stopping step is not covered by epsilon, and the
        report of ``TrainingDiverged.result`` says so (``privacy["notes"]``).
    random_state : None, int >= 0, SeedSequence or Generator
        The run's root ``dptheory.validation.as_seed_sequence(random_state)`` (a SeedSequence is
        not advanced; a Generator gives one draw). Every stream is a child of it with a fixed spawn
        key (module docstring), so the same ``random_state`` gives the same run, bit for bit, on the
        same machine and BLAS thread count.

    Returns
    -------
    TrainResult
        ``history`` keys, one value per record: ``step`` (steps completed), ``epoch`` (steps / steps
        per epoch), ``lr``, ``train_loss`` (full training set), ``train_accuracy``, ``test_loss``,
        ``test_accuracy`` (when a test split exists; "accuracy" is R^2 for the squared head),
        ``epsilon`` (spent so far; inf when not private), and the MEAN over the steps since the
        previous record of: the chain's metrics (:data:`sims.mechanisms.METRICS`), ``signal_norm`` =
        sqrt(signal_sq_after_mask), ``noise_norm`` = sqrt(noise_sq), ``update_norm`` and
        ``batch_size`` (realised). Undefined metrics are 0.0, never NaN. These are un-noised
        statistics of the private data, NOT covered by epsilon (docs/privacy.md).
        ``privacy`` keys: ``private``, ``epsilon``, ``delta``, ``order`` (the optimal RDP order),
        ``noise_multiplier`` (effective, per step), ``sensitivity``, ``sampling_rate``, ``steps``,
        ``sampling``, ``accounting`` (how epsilon was computed), ``accounting_valid`` (False for
        shuffle sampling, whose epsilon uses the Poisson analysis), ``event`` (the composed
        ``dptheory.events`` event), ``reason`` (why not private, or ""),
        ``private_preprocessing`` (pre-processing fitted on private rows, not covered by epsilon)
        and ``notes``.

    Raises
    ------
    ValueError
        Bad arguments (named), shapes that disagree, NaN/inf in the data.
    TrainingDiverged
        (a ``FloatingPointError``) when the run produces a non-finite update, parameter or loss, or
        its training loss explodes (``divergence_factor``).
    """
    args = dict(steps=steps, epochs=epochs, sampling_rate=sampling_rate, batch_size=batch_size,
                clip_norm=clip_norm, noise_multiplier=noise_multiplier, mode=mode, mechanism=mechanism,
                optimizer=optimizer, lr=lr, schedule=schedule, momentum=momentum, weight_decay=weight_decay,
                strong_convexity=strong_convexity, sampling=sampling, delta=delta, record_every=record_every,
                divergence_factor=divergence_factor, random_state=random_state)
    loop = _Loop(_resolve(model, data, args), params0)
    for t in range(loop.run.total_steps):
        loop.step(t)
    return loop.result(loop.run.total_steps)
