"""Argument resolution, privacy reports and results of :func:`sims.stacked.train_stacked`."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dptheory.validation import as_seed_sequence, check_choice, check_finite_array, check_int, check_real

from sims.models.dense import Model
from sims.train import DIVERGENCE_NOTE, TrainResult, epsilon_after, run_checks, run_length, unpack_data
from sims.train import privacy_report as train_privacy_report

from .streams import pcg_words_supported

__all__ = ["MECHANISMS", "StackedRunResult", "batch_rows", "chain_for", "resolve", "privacy_report", "epsilon_at",
           "Resolved"]

#: The chains the stacked engine runs (anything else: use :func:`sims.train.train`).
MECHANISMS = ("dense", "random_freeze", "top_k_noisy", "random_k", "top_k_clean", "low_rank", "public_freeze",
              "magnitude_prune", "public_select", "top_k_per_example", "topagg", "private_top_k")
#: The mechanisms with a per-run ``k``.
K_MECHANISMS = ("top_k_noisy", "top_k_clean", "random_k", "top_k_per_example", "topagg", "private_top_k")
#: TopAgg's arguments besides ``k`` and ``noise_multiplier`` that a stacked run takes (shared, in
#: ``options``); one example per teacher (``teacher_size = 1``), the private variant.
TOPAGG_OPTIONS = ("beta", "stochastic", "coord_clip", "scale", "chunk_size")

#: Pre-clip transforms whose keep mask is chosen at init (noise on the kept coordinates only): a
#: stacked run takes its mask from its chain's own ``init`` (``magnitude_prune`` with ``every``
#: recomputes it from the current parameters every ``every`` steps).
FIXED_MASKS = ("public_freeze", "magnitude_prune")
#: The pre-clip mask transforms, with ``public_select`` (a new mask from public data every step):
#: they take ``fraction`` and ``options``.
MASKS = (*FIXED_MASKS, "public_select")

#: The error-feedback styles of :func:`sims.mechanisms.error_feedback`.
FEEDBACK = ("ef", "ef21")

#: The orders each mechanism with an ``order`` takes, its default first.
ORDERS = {"random_k": ("clip_then_mask", "mask_then_clip"),
          "low_rank": ("noise_then_compress", "compress_then_noise")}


@dataclass(frozen=True)
class StackedRunResult(TrainResult):
    """A :class:`sims.train.TrainResult` of one stacked run, with its divergence flag.

    ``diverged_step`` is None for a run that completed, else the 0-based step at which it stopped
    (the ``step`` of :class:`sims.train.TrainingDiverged`); ``divergence`` is then the message
    ``train()`` would have raised, and ``params``/``history``/``steps_done`` are those of the
    exception's ``.result``.
    """

    diverged_step: int | None = None
    divergence: str = ""


def resolved_order(mechanism: str, order, noisy: bool):
    """``order`` checked against :data:`ORDERS` of ``mechanism``; None for a mechanism without one.
    ``order=None`` is the default: ``"clip_then_mask"`` for random-k, and for low-rank
    ``"noise_then_compress"`` with noise, ``"compress_then_noise"`` without."""
    if mechanism not in ORDERS:
        return None
    if order is None:
        return "compress_then_noise" if mechanism == "low_rank" and not noisy else ORDERS[mechanism][0]
    return check_choice("order", order, ORDERS[mechanism])


def chain_for(mechanism: str, clip_norm, noise_multiplier, *, r_final=None, k=None, ramp: str = "linear",
              order: str | None = None, rank=None, reference_norm=None, fraction=None, options=None, feedback=None):
    """The :func:`sims.mechanisms.chain` that :func:`sims.train.train` runs for one stacked run.

    ``"dense"``: ``chain(clip(C), gaussian_noise(sigma))`` (Abadi et al. 2016);
    ``"random_freeze"``: ``chain(random_freeze(r_final, ramp), clip(C), gaussian_noise(sigma))``
    (Zhu & Blaschko, arXiv 2112.00845); ``"top_k_noisy"``:
    ``chain(clip(C), gaussian_noise(sigma), top_k(k, mode="noisy"))``; ``"random_k"``:
    ``chain(clip(C), random_k(k), gaussian_noise(sigma))`` (``order="clip_then_mask"``) or
    ``chain(random_k(k, "mask_then_clip"), clip(C), gaussian_noise(sigma))`` (Lin, arXiv 2211.00734);
    ``"low_rank"``: ``chain(clip(C), gaussian_noise(sigma), low_rank(rank))``, PowerSGD-style
    compression of the noisy update (post-processing; Vogels et al. 2019, Lin 2022);
    ``"public_freeze"`` / ``"magnitude_prune"``: ``chain(public_freeze(fraction, **options), clip(C),
    gaussian_noise(sigma))`` (Adamczewski & Park, arXiv 2303.04612) or the same with
    ``magnitude_prune(fraction, **options)`` (Watson et al.), masks chosen once at init from public
    data, the initial parameters or nothing; ``"public_select"``: ``public_select(fraction,
    **options)`` in front, a new mask each step from the public gradient at the current parameters;
    ``"top_k_per_example"``: ``chain(top_k(k, mode="per_example"), clip(C), gaussian_noise(sigma))``,
    each example's own top-k before clipping (an ablation of the five papers' sparsifiers);
    ``"topagg"``: ``chain(topagg(k, sigma, **options))`` (Wang et al. 2021, DataLens), one example
    per teacher, no clipping (the votes have norm sqrt(k)): ``clip_norm`` must be None;
    ``"private_top_k"``: ``chain(clip(C), private_top_k(k, options["selection_epsilon"]),
    gaussian_noise(sigma))``, the k coordinates chosen from the clipped sum by one-shot Gumbel
    top-k (Durfee & Rogers 2019), noise on them only.
    ``feedback="ef"`` or ``"ef21"`` wraps the compressor of ``"top_k_noisy"`` or ``"low_rank"`` in
    :func:`sims.mechanisms.error_feedback` (after the noise: post-processing).

    Non-private baselines (built with ``allow_non_private=True``): ``noise_multiplier=None`` drops
    the noise step, and ``clip_norm=None`` the clipping (``clip(None)``: plain minibatch SGD);
    ``"top_k_clean"`` is ``chain(clip(C or None), top_k(k, mode="clean"))``, the top-k of the clean
    sum, which exists only without noise; ``"low_rank"`` without noise is
    ``chain(clip(C or None), low_rank(rank, "compress_then_noise"))`` (the clean sum compressed).
    The noise-only ablation ``chain(clip(None, reference_norm=C_ref), gaussian_noise(sigma))``
    (noise of std ``sigma C_ref`` on the unclipped sum; not private) is ``clip_norm=None`` with a
    ``reference_norm``.
    """
    from sims.mechanisms import chain, clip, error_feedback, gaussian_noise, low_rank, random_freeze, random_k, top_k

    check_choice("mechanism", mechanism, MECHANISMS)
    if mechanism == "topagg":
        from sims.mechanisms import topagg
        return chain(topagg(k, noise_multiplier, **_topagg_options(options)))
    noisy = noise_multiplier is not None
    order = resolved_order(mechanism, order, noisy)
    if feedback is not None:
        check_choice("feedback", feedback, FEEDBACK)
        if mechanism not in ("top_k_noisy", "low_rank") or not noisy:
            raise ValueError(f"feedback (error feedback after the noise) wraps the compressor of 'top_k_noisy' or "
                             f"'low_rank' with noise; got mechanism={mechanism!r}, noise_multiplier={noise_multiplier!r}")
    if noisy and clip_norm is None and reference_norm is None:
        raise ValueError("noise_multiplier without a clip_norm needs a reference_norm (the noise-only ablation "
                         "clip(None, reference_norm=...): noise of std noise_multiplier * reference_norm)")
    if reference_norm is not None and clip_norm is not None:
        raise ValueError("reference_norm is the noise scale of an unclipped run: give it with clip_norm=None only")
    if mechanism == "low_rank" and order != ("noise_then_compress" if noisy else "compress_then_noise"):
        raise ValueError(f"mechanism='low_rank' runs order='noise_then_compress' with noise (post-processing) and "
                         f"'compress_then_noise' without (non-private baseline); got order={order!r}, "
                         f"noise_multiplier={noise_multiplier!r}")
    if (mechanism == "top_k_clean" and noisy) or (mechanism == "top_k_noisy" and not noisy):
        raise ValueError("mechanism='top_k_clean' (top-k of the clean sum) runs without noise "
                         "(noise_multiplier=None), and 'top_k_noisy' with noise; got "
                         f"mechanism={mechanism!r}, noise_multiplier={noise_multiplier!r}")
    c = clip(clip_norm) if reference_norm is None else clip(None, reference_norm=reference_norm)
    noise = (gaussian_noise(noise_multiplier),) if noisy else ()
    if mechanism == "random_freeze":
        steps = (random_freeze(r_final, ramp), c, *noise)
    elif mechanism == "random_k" and order == "mask_then_clip":
        steps = (random_k(k, order), c, *noise)
    elif mechanism == "random_k":
        steps = (c, random_k(k, order), *noise)
    elif mechanism == "dense":
        steps = (c, *noise)
    elif mechanism == "low_rank":
        steps = (c, *noise, low_rank(rank, order))
        if feedback is not None:
            steps = (c, *noise, error_feedback(steps[-1], feedback))
    elif mechanism in MASKS:
        steps = (_mask_transform(mechanism, fraction, options), c, *noise)
    elif mechanism == "top_k_per_example":
        steps = (top_k(k, mode="per_example"), c, *noise)
    elif mechanism == "private_top_k":
        from sims.mechanisms import private_top_k
        steps = (c, private_top_k(k, _selection_epsilon(options)), *noise)

    else:
        steps = (c, *noise, top_k(k, mode="noisy" if noisy else "clean"))
        if feedback is not None:
            steps = (c, *noise, error_feedback(steps[-1], feedback))
    if noisy and clip_norm is not None:
        return chain(*steps)
    return chain(*steps, allow_non_private=True)


def _mask_transform(mechanism: str, fraction, options):
    """The pre-clip transform of a :data:`MASKS` chain; ``options`` its other arguments."""
    from sims.mechanisms import magnitude_prune, public_freeze, public_select

    make = {"public_freeze": public_freeze, "magnitude_prune": magnitude_prune, "public_select": public_select}
    try:
        return make[mechanism](fraction, **(options or {}))
    except TypeError as e:
        raise ValueError(f"options: {e}") from None


@dataclass(frozen=True)
class Resolved:
    """Everything resolved before the first step (per-run arrays have length R)."""

    model: Model
    X: np.ndarray
    y: np.ndarray
    X_test: object
    y_test: object
    public: object
    notes: tuple
    mechanism: str
    ramp: str
    order: str | None
    rank: int | None
    reference_norm: float | None
    feedback: str | None
    roots: tuple
    params0: np.ndarray | None
    lr: np.ndarray
    optimizer: object
    schedules: tuple
    schedule: object
    clip_norm: np.ndarray
    noise_multiplier: np.ndarray
    r_final: np.ndarray | None
    k: np.ndarray | None
    fraction: np.ndarray | None
    options: dict | None
    chains: tuple
    q: float
    B: float
    spe: int
    total: int
    delta: float
    rec: int
    factor: float | None
    rows: int


def batch_rows(n: int, q: float) -> int:
    """Rows of one padded batch chunk: ``min(n, 8 ceil((n q + sqrt(n q (1 - q)) + 1) / 8))``.

    A function of ``(n, q)`` only, never of the other runs: every run's GEMMs have the same shapes
    whatever it is stacked with, so its result does not depend on its group (BLAS kernels are
    chosen by shape). A Poisson batch larger than this (at most one step in six by the normal
    approximation; 2 % at the digits split, n = 1437, B = 64, 80 rows) is processed in further
    chunks of the same rows (``sims.stacked.loop``). One standard deviation above the mean batch
    was the fastest of 0 to 4 measured on the digits MLP at R = 64 (``benchmarks/README.md``): fewer
    padding rows outweigh the occasional second chunk.
    """
    m = n * q
    return int(min(n, 8 * math.ceil((m + math.sqrt(m * (1.0 - q)) + 1.0) / 8.0)))


def _per_run(name, value, R, **bounds) -> np.ndarray:
    """A scalar or a length-R sequence as a float64 ``(R,)`` array, each entry checked (``name[r]``)."""
    if np.ndim(value) == 0:
        return np.full(R, check_real(name, value, **bounds))
    vals = list(value)
    if len(vals) != R:
        raise ValueError(f"{name} must be one number or a sequence of {R} (one per seed), got length {len(vals)}")
    return np.array([check_real(f"{name}[{r}]", v, **bounds) for r, v in enumerate(vals)])


#: The optimizers, by name (:func:`sims.optim.make_optimizer`): pure elementwise steps, applied to
#: every run's row of the stacked parameters at its own rate.
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")


def _optimizer_and_schedules(a: dict, lr: np.ndarray, total: int):
    """``(Optimizer, per-run schedules t -> lr_t)`` as ``train()`` resolves them for each run."""
    from sims import optim

    opt = optim.make_optimizer(a["optimizer"], momentum_=a["momentum"],
                               weight_decay=check_real("weight_decay", a["weight_decay"], low=0.0))
    kw = {} if a["strong_convexity"] is None else {"strong_convexity": a["strong_convexity"]}
    return opt, tuple(optim.make_schedule(a["schedule"], float(r), total, **kw) for r in lr)


def _refuse(name, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"train_stacked does not support {name}={value!r} (supported: {allowed}); "
                         f"use sims.train.train for this run")


def _check_scope(opts: dict) -> None:
    """Refuse what the stacked engine does not run, naming the parameter (callers fall back to train())."""
    _refuse("sampling", opts["sampling"], ("poisson",))
    _refuse("mode", opts["mode"], ("dp",))
    if not isinstance(opts["optimizer"], str):
        raise ValueError(f"train_stacked takes the optimizer by name ({OPTIMIZERS}), got "
                         f"{type(opts['optimizer']).__name__}; use sims.train.train for an Optimizer object")


def _unpack(model, data):
    """``(X, y, X_test, y_test, public, notes)`` of :func:`sims.train.unpack_data`, for a float64 model."""
    if not isinstance(model, Model):
        raise ValueError(f"model must be a sims.models.Model, got {type(model).__name__}")
    if model.dtype != np.float64:
        raise ValueError(f"train_stacked supports float64 models only, got model.dtype={model.dtype.name}; "
                         f"use sims.train.train for this run")
    X, y, Xt, yt, public, notes = unpack_data(data, model)
    return X, y, Xt, yt, public, tuple(notes)


def _roots(seeds) -> tuple:
    try:
        seeds = list(seeds)
    except TypeError:
        raise ValueError(f"seeds must be a sequence of ints >= 0 (one per run), got {seeds!r}") from None
    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    roots = []
    for r, seed in enumerate(seeds):
        try:
            root = as_seed_sequence(seed)
        except ValueError:
            root = None
        if isinstance(seed, np.random.Generator) or root is None or not pcg_words_supported(root):
            raise ValueError(f"seeds[{r}] must be an int >= 0, None or a SeedSequence with integer entropy, "
                             f"got {seed!r}")
        roots.append(root)
    roots = tuple(roots)
    return roots


def _mechanism_arrays(mechanism, r_final, k, R, d):
    if not isinstance(mechanism, str) or mechanism not in MECHANISMS:
        raise ValueError(f"mechanism must be one of {MECHANISMS} (the chains of sims.stacked.chain_for), got "
                         f"{mechanism!r}; other chains, or a Chain object, run with sims.train.train")
    rf = kk = None
    if mechanism == "random_freeze":
        if r_final is None:
            raise ValueError("r_final is required for mechanism='random_freeze'")
        rf = _per_run("r_final", r_final, R, low=0.0, high=1.0, high_open=True)
    if mechanism in K_MECHANISMS:
        if k is None:
            raise ValueError(f"k is required for mechanism={mechanism!r}")
        kk = _per_run("k", k, R, low=1.0, high=float(d))
        if not np.all(kk == np.round(kk)):
            raise ValueError(f"k must hold integers in [1, {d}], got {k!r}")
        kk = kk.astype(np.int64)
    return rf, kk


#: The arguments that only some mechanisms take (``fraction`` and ``options``: :func:`_mask_args`).
ARGUMENT_OF = {"r_final": ("random_freeze",), "k": K_MECHANISMS,
               "order": tuple(ORDERS), "rank": ("low_rank",), "feedback": ("top_k_noisy", "low_rank")}


def _check_arguments_used(a: dict) -> None:
    """Refuse an argument that the chosen mechanism does not take, so that it is never silently dropped."""
    mech = a["mechanism"]
    for name, mechs in ARGUMENT_OF.items():
        if a[name] is not None and mech not in mechs:
            raise ValueError(f"{name} is an argument of mechanism in {mechs} only, got mechanism={mech!r}")
    if a["ramp"] != "linear" and mech != "random_freeze":
        raise ValueError(f"ramp is an argument of mechanism='random_freeze' only, got mechanism={mech!r}")
    if a["reference_norm"] is not None and (mech == "topagg" or a["clip_norm"] is not None
                                            or a["noise_multiplier"] is None):
        raise ValueError("reference_norm belongs to the noise-only ablation (clip_norm=None with a "
                         f"noise_multiplier), got clip_norm={a['clip_norm']!r}, "
                         f"noise_multiplier={a['noise_multiplier']!r}")


def _selection_epsilon(options) -> float:
    """``private_top_k``'s selection budget, its one option."""
    if not isinstance(options, dict) or set(options) != {"selection_epsilon"}:
        raise ValueError("mechanism='private_top_k' takes options={'selection_epsilon': eps} (eps > 0, the "
                         f"pure-DP budget of each step's selection), got options={options!r}")
    return check_real("options['selection_epsilon']", options["selection_epsilon"], low=0.0, low_open=True)


def _topagg_options(options) -> dict:
    """TopAgg's shared options, each one of :data:`TOPAGG_OPTIONS`."""
    if options is not None and not isinstance(options, dict):
        raise ValueError(f"options must be a dict of topagg's arguments {TOPAGG_OPTIONS}, got {options!r}")
    opts = dict(options or {})
    bad = sorted(set(opts) - set(TOPAGG_OPTIONS))
    if bad:
        raise ValueError(f"options of mechanism='topagg' must be among {TOPAGG_OPTIONS}, got {bad[0]!r} "
                         "(micro-batch teachers, teacher_size > 1, are not private; use sims.train.train)")
    return opts


def _mask_args(mechanism, fraction, options, R):
    """Per-run ``fraction`` and the shared ``options`` of a :data:`MASKS` mechanism (None, None
    otherwise; TopAgg's options: :func:`_topagg_options`)."""
    if mechanism in ("topagg", "private_top_k"):
        if fraction is not None:
            raise ValueError(f"fraction is an argument of mechanism in {MASKS} only, got mechanism={mechanism!r}")
        if mechanism == "private_top_k":
            return None, {"selection_epsilon": _selection_epsilon(options)}
        return None, _topagg_options(options)
    if mechanism not in MASKS:
        for name, value in (("fraction", fraction), ("options", options)):
            if value is not None:
                raise ValueError(f"{name} is an argument of mechanism in {MASKS} only, got mechanism={mechanism!r}")
        return None, None
    if fraction is None:
        raise ValueError(f"fraction is required for mechanism={mechanism!r}")
    if options is not None and not isinstance(options, dict):
        raise ValueError(f"options must be a dict of {mechanism}'s arguments (besides fraction), got {options!r}")
    return _per_run("fraction", fraction, R, low=0.0, high=1.0, high_open=True), dict(options or {})


def _params0(params0, R: int, d: int):
    """``params0`` as ``(R, d)`` float64 (one shared ``(d,)`` vector repeated), or None."""
    if params0 is None:
        return None
    P = check_finite_array("params0", params0)
    if P.shape == (d,):
        P = np.broadcast_to(P, (R, d))
    if P.shape != (R, d):
        raise ValueError(f"params0 must have shape ({d},) or ({R}, {d}) (one row per seed), got {P.shape}")
    return np.array(P, dtype=np.float64)


def _clip_and_noise(a: dict, R: int):
    """Per-run clip norms (``inf`` for ``clip_norm=None``: no clipping) and noise multipliers (0 for
    ``noise_multiplier=None``: no noise step). Either None makes every run non-private, which
    needs ``allow_non_private=True``; TopAgg has no clip norm (its votes are bounded) and needs a
    noise multiplier."""
    if a["mechanism"] == "topagg":
        if a["clip_norm"] is not None or a["noise_multiplier"] is None:
            raise ValueError("mechanism='topagg' takes clip_norm=None (each vote vector has norm sqrt(k)) and a "
                             f"noise_multiplier > 0, got clip_norm={a['clip_norm']!r}, "
                             f"noise_multiplier={a['noise_multiplier']!r}")
        return np.full(R, math.inf), _per_run("noise_multiplier", a["noise_multiplier"], R, low=0.0, low_open=True)
    C = (np.full(R, math.inf) if a["clip_norm"] is None
         else _per_run("clip_norm", a["clip_norm"], R, low=0.0, low_open=True))
    sigma = (np.zeros(R) if a["noise_multiplier"] is None
             else _per_run("noise_multiplier", a["noise_multiplier"], R, low=0.0, low_open=True))
    missing = [name for name in ("clip_norm", "noise_multiplier") if a[name] is None]
    if missing and not a["allow_non_private"]:
        raise ValueError(f"{' and '.join(missing)}=None makes every run non-private (no clipping bounds the "
                         "sensitivity, or no noise is added); pass allow_non_private=True for a non-private "
                         "baseline")
    return C, sigma


def resolve(model, data, a: dict) -> Resolved:
    """Validate and resolve the arguments ``a`` of :func:`sims.stacked.train_stacked`."""
    _check_scope(a)
    X, y, Xt, yt, public, notes = _unpack(model, data)
    roots = _roots(a["seeds"])
    R, n, d = len(roots), X.shape[0], model.n_params
    q, B, spe, total = run_length(n, sampling="poisson", sampling_rate=a["sampling_rate"], batch_size=a["batch_size"],
                                  steps=a["steps"], epochs=a["epochs"])
    delta, rec, factor = run_checks(n, spe, a)
    lr = _per_run("lr", a["lr"], R, low=0.0)
    opt, scheds = _optimizer_and_schedules(a, lr, total)
    schedule = a["schedule"] if a["schedule"] is None or isinstance(a["schedule"], str) else "callable"
    C, sigma = _clip_and_noise(a, R)
    rf, kk = _mechanism_arrays(a["mechanism"], a["r_final"], a["k"], R, d)
    _check_arguments_used(a)
    ramp = a["ramp"]
    if a["mechanism"] == "random_freeze":
        from sims.mechanisms.freeze import RAMPS
        ramp = check_choice("ramp", ramp, RAMPS)
    mech = a["mechanism"]
    rank = None
    if mech == "low_rank":
        rank = check_int("rank", a["rank"], low=1) if a["rank"] is not None else None
        if rank is None:
            raise ValueError("rank is required for mechanism='low_rank'")
    ref = a["reference_norm"]
    if ref is not None:
        ref = check_real("reference_norm", ref, low=0.0, low_open=True)
    frac, opts = _mask_args(mech, a["fraction"], a["options"], R)
    chains = tuple(chain_for(mech, None if np.isinf(C[r]) else float(C[r]), None if sigma[r] == 0 else float(sigma[r]),
                             r_final=None if rf is None else float(rf[r]), k=None if kk is None else int(kk[r]),
                             ramp=ramp, order=a["order"], rank=rank, reference_norm=ref,
                             fraction=None if frac is None else float(frac[r]), options=opts,
                             feedback=a["feedback"]) for r in range(R))
    order = resolved_order(mech, a["order"], a["noise_multiplier"] is not None)
    return Resolved(model, X, y, Xt, yt, public, notes, mech, ramp, order, rank, ref, a["feedback"], roots,
                    _params0(a["params0"], R, d), lr, opt,
                    scheds, schedule, C, sigma, rf, kk, frac, opts, chains, q, B, spe, total, delta, rec, factor,
                    batch_rows(n, q))


# ----------------------------------------------------------------------------- privacy and config
def epsilon_at(res: Resolved, r: int, steps: int) -> float:
    """The history's ``epsilon`` of run ``r`` after ``steps`` steps (:func:`sims.train.epsilon_after`)."""
    return epsilon_after(res.chains[r].privacy, sampling_rate=res.q, steps=steps, delta=res.delta)


def privacy_report(res: Resolved, r: int, steps: int, extra_notes=()) -> dict:
    """The ``privacy`` dict of run ``r`` after ``steps`` steps, as :func:`sims.train.train` reports
    it (:func:`sims.train.privacy_report` of the run's chain: its per-step event Poisson-sampled at
    ``q``, composed ``steps`` times, accounted by RDP; ``epsilon = inf`` for a non-private chain)."""
    return train_privacy_report(res.chains[r].privacy, sampling_rate=res.q, steps=steps, delta=res.delta,
                                preprocessing=res.notes, notes=extra_notes)


def config_of(res: Resolved, r: int) -> dict:
    """The ``config`` dict of run ``r``: that of ``train(..., mechanism=chain_for(...))``, plus ``stacked``."""
    root = res.roots[r]
    return {
        "n": res.X.shape[0], "d": res.model.n_params, "steps": res.total, "steps_per_epoch": res.spe,
        "sampling": "poisson", "sampling_rate": res.q, "expected_batch_size": res.B, "mode": "custom",
        "clip_norm": None, "noise_multiplier": res.chains[r].privacy.noise_multiplier, "optimizer": res.optimizer.name,
        "optimizer_hyperparams": res.optimizer.hyperparams, "lr": float(res.lr[r]), "schedule": res.schedule,
        "delta": res.delta, "record_every": res.rec, "divergence_factor": res.factor, "entropy": root.entropy,
        "spawn_key": tuple(root.spawn_key), "dtype": "float64",
        "stacked": {"mechanism": res.mechanism,
                    "clip_norm": None if np.isinf(res.clip_norm[r]) else float(res.clip_norm[r]),
                    "r_final": None if res.r_final is None else float(res.r_final[r]),
                    "k": None if res.k is None else int(res.k[r]), "ramp": res.ramp,
                    "order": res.order, "rank": res.rank, "reference_norm": res.reference_norm,
                    "feedback": res.feedback,
                    "fraction": None if res.fraction is None else float(res.fraction[r]),
                    "options": None if res.options is None else dict(res.options)},
    }


def result_of(res: Resolved, r: int, params, history, steps_done, diverged_step=None, divergence="",
              factor_stop=False) -> StackedRunResult:
    """The :class:`StackedRunResult` of run ``r``."""
    notes = (DIVERGENCE_NOTE,) if factor_stop else ()
    return StackedRunResult(params=params, history=history, privacy=privacy_report(res, r, steps_done, notes),
                            config=config_of(res, r), steps_done=int(steps_done), diverged_step=diverged_step,
                            divergence=divergence)

