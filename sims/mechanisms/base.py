"""The transform contract: the records a chain's transforms see and the one surface they write.

A chain (:func:`sims.mechanisms.chain`) is a sequence of :class:`Transform` objects. Each
DECLARES its privacy-relevant behaviour in an :class:`Effect`; the chain derives the privacy
description from the declarations, and the step (:func:`sims.step.dpsgd_step`) runs the
transforms on one :class:`Work` record per step, whose methods are the ONLY way a transform
changes the release (``docs/mechanisms.md`` is the author's guide).

Stages, in the only order a chain accepts:

``pre_clip``   the per-example stage: masks applied to every example's gradient before clipping
               (:meth:`Work.restrict`), or a declared row-wise :class:`PerExampleMap` that the clip
               stage runs on each example's gradient;
``clip``       clips per-example gradients and sums them (exactly one per chain; built in);
``post_clip``  acts on the clipped, un-noised sum, only by a coordinate selection
               (:meth:`Work.restrict`) or by a map whose sensitivity factor it declares
               (:meth:`Work.replace_sum`);
``noise``      adds Gaussian noise and divides by the expected batch size (at most one; built in);
``post_noise`` acts on the released noisy update (post-processing: :meth:`Work.release`);
``aggregate``  a self-contained clip + noise (TopAgg); replaces ``clip`` and ``noise``.

What a transform's CHOICE of coordinates (or basis, or map) reads (``Effect.reads``):

``none``        data-independent (random masks, schedules);
``public``      the public split only (a :class:`sims.data.PublicSplit`, checked disjoint from
                the private rows);
``noised``      already-released noisy quantities (the DP iterate, the noisy update);
``per_example`` each example's own gradient, ONLY through a row-wise :class:`PerExampleMap` at
                the per-example stage (each clipped contribution still has norm <= C, so this is
                private iff the noise covers all d coordinates);
``private``     aggregated private, un-noised data (e.g. top-k of the clean sum): never private
                at or before the noise.
"""
from __future__ import annotations

import dataclasses
import types
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from dptheory.validation import check_choice, check_int, check_real

__all__ = [
    "InitContext", "StepContext", "PrivacyDescription", "Effect", "Transform", "PerExampleMap",
    "KeptSet", "BuiltIns", "Work", "Internals", "STAGES", "READS", "NOISE_ON", "METRICS",
]

STAGES = ("pre_clip", "clip", "post_clip", "noise", "post_noise", "aggregate")
READS = ("none", "public", "noised", "per_example", "private")
NOISE_ON = ("all", "kept")

#: The per-step metrics of every chain (the one list; ``sims.train`` records their means).
#: ``kept_fraction`` k/d of the signal mask; ``clipped_fraction`` of examples with norm > C;
#: ``signal_sq_before_mask`` ||clipped sum / B||^2 before any post-clip selection;
#: ``signal_sq_after_mask`` the released signal energy; ``noise_sq`` the released noise energy;
#: ``nsr`` their ratio (0 when the signal is 0); ``phi`` the captured energy fraction of a top-k;
#: ``grad_norm_q10/q50/q90`` quantiles of the per-example gradient norms.
METRICS = (
    "kept_fraction", "clipped_fraction", "signal_sq_before_mask", "signal_sq_after_mask", "noise_sq",
    "nsr", "phi", "grad_norm_q10", "grad_norm_q50", "grad_norm_q90",
)
_METRIC_DEFAULTS = {
    "kept_fraction": 1.0, "clipped_fraction": 0.0, "signal_sq_before_mask": 0.0,
    "signal_sq_after_mask": 0.0, "noise_sq": 0.0, "nsr": 0.0, "phi": 1.0,
    "grad_norm_q10": 0.0, "grad_norm_q50": 0.0, "grad_norm_q90": 0.0,
}


@dataclass(frozen=True, kw_only=True)
class InitContext:
    """What a chain sees once, before training (keyword construction only).

    ``public`` is ``None`` or a :class:`sims.data.PublicSplit` (rows checked disjoint from the
    private training rows); ``rng`` is the chain's own initialisation generator.
    """

    model: Any
    layout: Any
    params: np.ndarray
    total_steps: int
    steps_per_epoch: int
    expected_batch_size: float
    public: Any = None
    rng: np.random.Generator


@dataclass(frozen=True, kw_only=True)
class StepContext:
    """What a chain sees at each step (keyword construction only).

    ``bp`` is the :class:`sims.models.Backprop` record of the sampled private batch at ``params``;
    ``rng`` the step's mechanism generator (the noise seed is drawn from it).
    """

    model: Any
    layout: Any
    step: int
    epoch: int
    params: np.ndarray
    bp: Any
    expected_batch_size: float
    public: Any = None
    rng: np.random.Generator


@dataclass(frozen=True)
class PrivacyDescription:
    """What accounting needs to know about ONE step of a chain (immutable).

    ``event`` is a typed :mod:`dptheory.events` event: ``Gaussian(noise_multiplier)`` when the
    released update is a Gaussian mechanism with that multiplier (noise std / L2 sensitivity of
    the sum), so that Poisson sampling at rate ``q`` for ``T`` steps is
    ``event.poisson_sampled(q, T)`` (dp_accounting's ``PoissonSampledDpEvent(q,
    GaussianDpEvent(sigma))`` self-composed); or ``NonPrivate(reason)``.
    ``noise_multiplier`` is the EFFECTIVE multiplier (the noise step's sigma divided by every
    declared sensitivity factor); ``sensitivity`` the L2 sensitivity of the noised sum.
    """

    private: bool
    noise_multiplier: float | None
    sensitivity: float | None
    event: Any
    reason: str
    notes: tuple = ()

    def to_dp_accounting(self):
        """The per-step event as a real ``dp_accounting`` ``DpEvent`` (needs dp-accounting)."""
        return self.event.to_dp_accounting()


@dataclass(frozen=True)
class Effect:
    """Declared privacy-relevant behaviour of one transform.

    Attributes
    ----------
    stage : one of :data:`STAGES`
    noise_on : "all" or "kept"
        "kept": the noise step draws noise only on the coordinates this transform keeps.
    reads : one of :data:`READS`
        What the transform's choice of coordinates (or basis, or map) depends on.
    sensitivity_factor : None or float >= 1 (``math.inf`` allowed)
        Only at ``post_clip``: the transform REPLACES the clipped sum ``s`` by ``h(s)`` with
        ``||h(s) - h(s')|| <= factor ||s - s'||`` (a data-independent map); the chain multiplies
        the L2 sensitivity by it and divides the noise multiplier by it, or refuses the chain
        when it is ``inf`` (unknown). ``None``: the transform never replaces the sum (a
        selection by :meth:`Work.restrict` is a contraction and needs no factor).
    """

    stage: str
    noise_on: str = "all"
    reads: str = "none"
    sensitivity_factor: float | None = None

    def __init_subclass__(cls, **kwargs):
        raise TypeError("Effect cannot be subclassed: a subclass could skip the declaration checks (e.g. "
                        "declare a sensitivity_factor below 1 and overstate the privacy)")

    def __post_init__(self):
        check_choice("stage", self.stage, STAGES)
        check_choice("noise_on", self.noise_on, NOISE_ON)
        check_choice("reads", self.reads, READS)
        if self.noise_on == "kept" and self.stage not in ("pre_clip", "post_clip", "aggregate"):
            raise ValueError(f"noise_on='kept' is only meaningful where the noise is still to be drawn (stages "
                             f"'pre_clip', 'post_clip', 'aggregate'), got stage {self.stage!r}")
        if self.sensitivity_factor is not None:
            f = self.sensitivity_factor
            if isinstance(f, bool) or not isinstance(f, (int, float, np.integer, np.floating)) or not (f >= 1.0):
                raise ValueError(f"sensitivity_factor must be None or a number in [1, inf] (a factor below 1 "
                                 f"would claim an amplification the chain cannot check), got {f!r}")
            if self.stage != "post_clip":
                raise ValueError(f"sensitivity_factor is only meaningful at stage 'post_clip' (between the "
                                 f"clip and the noise), got stage {self.stage!r}")
            object.__setattr__(self, "sensitivity_factor", float(f))


@dataclass(frozen=True)
class PerExampleMap:
    """A declared row-wise map of per-example gradients, run by the clip stage before clipping.

    ``fn(G, layout) -> S`` maps a ``(b, d)`` block of per-example gradients (already multiplied by
    the pre-clip signal mask) to a block of the same shape whose row ``i`` depends on row ``i``
    only. The clip stage then clips each row of ``S`` and sums: every example's contribution
    keeps norm <= C, whatever ``fn`` selects. ``chunk_size`` rows are materialised at once
    (memory ``chunk_size * d``).
    """

    fn: Callable
    chunk_size: int = 64

    def __post_init__(self):
        if not callable(self.fn):
            raise ValueError(f"PerExampleMap.fn must be callable, got {type(self.fn).__name__}")
        object.__setattr__(self, "chunk_size", check_int("chunk_size", self.chunk_size, low=1))


@dataclass(frozen=True)
class Transform:
    """One step of a chain: ``init(ictx) -> state`` and ``update(sctx, state, work) -> state``.

    ``update`` changes the release only through the methods of ``work`` (:class:`Work`).
    ``per_example`` (pre_clip, ``reads="per_example"`` only): a :class:`PerExampleMap` that the
    clip stage runs on each example's gradient. ``frozen(state)`` (optional) returns the bool
    (d,) mask of coordinates it leaves untouched. ``compress(sctx, state, x) -> (y, state)``
    (optional) exposes the transform as a compressor for :func:`sims.mechanisms.error_feedback`.
    ``info`` (read-only mapping) carries clip norm / noise multiplier / sensitivity for the chain.
    """

    name: str
    effect: Effect
    init: Callable
    update: Callable
    frozen: Callable | None = None
    compress: Callable | None = None
    per_example: PerExampleMap | None = None
    info: Any = field(default_factory=dict)

    def __post_init__(self):
        if type(self.effect) is not Effect:
            raise ValueError(f"effect of transform {self.name!r} must be an Effect, got {type(self.effect).__name__}")
        if self.per_example is not None:
            if not isinstance(self.per_example, PerExampleMap):
                raise ValueError(f"per_example of {self.name!r} must be a PerExampleMap")
            if self.effect.stage != "pre_clip" or self.effect.reads != "per_example":
                raise ValueError(f"{self.name!r}: a per-example map needs Effect(stage='pre_clip', "
                                 f"reads='per_example'), got stage {self.effect.stage!r}, reads {self.effect.reads!r}")
        object.__setattr__(self, "info", types.MappingProxyType(dict(self.info)))

    def __copy__(self):
        return self  # immutable: a copy is the same transform (and keeps its built-in registration)

    def __deepcopy__(self, memo):
        return self


class KeptSet:
    """A fixed set of kept coordinates that a transform holds over many steps.

    Passing a ``KeptSet`` instead of a bool array to :meth:`Work.restrict` lets the chain reuse
    the preparation of the set for its sparse kernels (indices and float blocks, computed once
    per layout and dtype) instead of redoing an O(d) conversion every step. Same semantics.
    ``keep`` is a read-only copy of the array given (later writes to that array change nothing).
    """

    __slots__ = ("keep", "idx", "_prepared")

    def __init__(self, keep):
        keep = np.asarray(keep)
        if keep.dtype != bool or keep.ndim != 1:
            raise ValueError(f"keep must be a 1-D bool array, got dtype {keep.dtype} and shape {keep.shape}")
        self.keep = keep.copy()
        self.keep.flags.writeable = False
        self.idx = np.flatnonzero(self.keep)
        self.idx.flags.writeable = False
        self._prepared = None

    def prepared(self, layout, dtype):
        """The :class:`sims.models.pergrad.MaskBlocks` of this set for ``layout`` and ``dtype`` (cached)."""
        from sims.models.pergrad import mask_blocks

        blk = self._prepared
        if blk is None or blk.dtype != dtype or blk.layout != layout:
            blk = self._prepared = mask_blocks(layout, self.keep, dtype)
        return blk


class BuiltIns:
    """Identity registry of the transforms that one package module made.

    The chain accepts a ``clip``, ``noise`` or ``aggregate`` stage only if the module that defines
    it registered that very object when it built it (``dataclasses.replace`` or a hand-made
    :class:`Transform` gives a new object, which is not registered): the ``info`` the chain
    accounts with is then the one the stage runs with.
    """

    __slots__ = ("_made",)

    def __init__(self):
        self._made = weakref.WeakValueDictionary()

    def register(self, transform: Transform) -> Transform:
        """Record ``transform`` as made here and return it."""
        self._made[id(transform)] = transform
        return transform

    def __contains__(self, transform) -> bool:
        return self._made.get(id(transform)) is transform


class Internals:
    """The chain's own storage and performance caches for one step (not part of the contract).

    Only the package's clip, noise and aggregate stages read or write it (:attr:`Work.internal`
    refuses every other stage). ``mask`` / ``noise_mask`` the signal selection and the noised
    coordinates (bool (d,) or None = all); ``sum`` the clipped (masked) (d,) sum; ``sum_kept``
    the same sum held compactly as ``(values (k,), idx (k,), mask)`` on the sparse path;
    ``before_pending``: the energy before post-clip selections is not computed yet;
    ``mask_blocks`` the prepared signal mask; ``noise_idx`` cached indices of the noise mask;
    ``total_clip`` the clip stage's L2 sensitivity (noise std = sigma * total_clip);
    ``per_example_maps`` the chain's declared maps.
    """

    __slots__ = ("mask", "noise_mask", "sum", "sum_kept", "before_pending", "mask_blocks", "noise_idx",
                 "total_clip", "per_example_maps")

    def __init__(self, per_example_maps=()):
        self.mask = None
        self.noise_mask = None
        self.sum = None
        self.sum_kept = None
        self.before_pending = False
        self.mask_blocks = None
        self.noise_idx = None
        self.total_clip = None
        self.per_example_maps = per_example_maps


def _sq(x) -> float:
    from ._util import sq

    return sq(x)


def _readonly_copy(a):
    """A read-only copy of ``a`` (None stays None): what the contract hands to transforms."""
    if a is None:
        return None
    c = np.array(a, copy=True)
    c.flags.writeable = False
    return c


#: Stages at which a transform is the package's own (the chain accepts only built-in ones there).
_CHAIN_STAGES = ("clip", "noise", "aggregate")
_CHAIN_STAGES_OR_NONE = frozenset(_CHAIN_STAGES + (None,))


class Work:
    """The per-step record through which transforms change the release (the transform contract).

    Read: ``ctx`` (the :class:`StepContext`; its ``bp`` is None for a transform that does not
    declare ``reads="per_example"``), ``bp`` (the backprop record, same rule), ``layout``, ``d``,
    ``dtype``, ``expected_batch_size`` (B), :attr:`mask` (signal selection, None = all),
    :attr:`noise_mask` (coordinates that get noise, None = all), :attr:`scale` (factor on the
    released update), :attr:`clipped_sum` (post_clip, with ``reads="private"`` or a declared
    ``sensitivity_factor`` only), :attr:`sum_sensitivity` (post_clip), :attr:`update` (post_noise only).
    Every array handed out is a read-only copy. Write, only through: :meth:`restrict`,
    :meth:`rescale`, :meth:`replace_sum` (declared sensitivity factor only), :meth:`release`,
    :meth:`report`. Each method checks the stage of the transform that calls it; a ``pre_clip``
    transform with ``reads="per_example"`` acts only through its :class:`PerExampleMap` and may
    call none of them. The rest (:attr:`internal`, :meth:`materialized_sum`, :meth:`apply`,
    :meth:`finish`) belongs to the chain and refuses other stages.
    """

    __slots__ = ("_ctx", "_blind_ctx", "_bp", "layout", "d", "dtype", "expected_batch_size", "_it", "_scale",
                 "_update", "_metrics", "_transform", "_stage")

    def __init__(self, ctx: StepContext, per_example_maps=()):
        self._ctx = ctx
        self._blind_ctx = None
        self._bp = ctx.bp
        self.layout = ctx.bp.layout
        self.d = self.layout.n_params
        self.dtype = ctx.bp.losses.dtype
        self.expected_batch_size = float(ctx.expected_batch_size)
        self._it = Internals(per_example_maps)
        self._scale = 1.0
        self._update = None
        self._metrics = dict(_METRIC_DEFAULTS)
        self._transform = None
        self._stage = None

    # ------------------------------------------------------------------ running transforms
    def apply(self, transform: Transform, state):
        """Run ``transform.update(ctx, state, self)`` with this record's stage checks set to it
        (the step's loop; a transform cannot run another one)."""
        if self._stage is not None:
            raise RuntimeError(f"transform {self._transform.name!r} called Work.apply: only the step runs transforms")
        self._transform, self._stage = transform, transform.effect.stage
        try:
            return transform.update(self._ctx_for(transform), state, self)
        finally:
            self._transform = self._stage = None

    @staticmethod
    def _sees_examples(t) -> bool:
        """Whether transform ``t`` may see the batch's per-example data (``ctx.bp``)."""
        return t.effect.stage in _CHAIN_STAGES or t.effect.reads == "per_example"

    def _ctx_for(self, t) -> StepContext:
        """The context ``t`` is given: with ``bp = None`` unless it is a chain stage or declares
        ``reads="per_example"`` (an undeclared read of the examples is then impossible, not a lie)."""
        if self._sees_examples(t):
            return self._ctx
        if self._blind_ctx is None:
            self._blind_ctx = dataclasses.replace(self._ctx, bp=None)
        return self._blind_ctx

    @property
    def ctx(self) -> StepContext:
        """The step context as the calling transform sees it (:meth:`_ctx_for`)."""
        return self._ctx if self._transform is None else self._ctx_for(self._transform)

    @property
    def bp(self):
        """The batch's backprop record: for the chain's own stages and transforms that declare
        ``reads="per_example"`` only."""
        t = self._transform
        if t is not None and not self._sees_examples(t):
            raise RuntimeError(f"transform {t.name!r} read Work.bp (per-example data) without declaring "
                               f"Effect(reads='per_example')")
        return self._bp

    def _require(self, method: str, stages) -> None:
        t = self._transform
        if t is None:
            return
        if self._stage not in stages:
            raise RuntimeError(f"transform {t.name!r} (stage {self._stage!r}) used Work.{method}, which is "
                               f"allowed only at stages {tuple(stages)}")
        if t.effect.stage == "pre_clip" and t.effect.reads == "per_example":
            raise RuntimeError(f"transform {t.name!r} declares reads='per_example' at the per-example stage: it acts "
                               f"only through its PerExampleMap, not through Work.{method} (a selection computed "
                               f"from some examples and applied to all is not bounded by the clip norm)")

    @property
    def internal(self) -> Internals:
        """The chain's own storage (clip, noise and aggregate stages only)."""
        if self._stage not in _CHAIN_STAGES_OR_NONE:
            self._require("internal", _CHAIN_STAGES)
        return self._it

    # ------------------------------------------------------------------ read
    @property
    def mask(self):
        """Bool (d,) signal selection (a read-only copy), or None (all coordinates)."""
        return _readonly_copy(self._it.mask)

    @property
    def noise_mask(self):
        """Bool (d,) coordinates that receive noise (a read-only copy), or None (all)."""
        return _readonly_copy(self._it.noise_mask)

    @property
    def scale(self) -> float:
        """Factor applied to the released update, signal and noise alike (post-processing)."""
        return self._scale

    @property
    def metrics(self) -> dict:
        """A copy of the metrics reported so far (names: :data:`METRICS`)."""
        return dict(self._metrics)

    @property
    def clipped_sum(self) -> np.ndarray:
        """The clipped (masked) sum ``sum_i clip_C(m * g_i)``, (d,), a read-only copy (post_clip only)."""
        self._require("clipped_sum", ("post_clip",))
        t = self._transform
        if t is not None and t.effect.reads != "private" and t.effect.sensitivity_factor is None:
            raise RuntimeError(f"transform {t.name!r} read Work.clipped_sum (private, un-noised data) but declares "
                               f"reads={t.effect.reads!r} and no sensitivity_factor: declare reads='private' "
                               f"(a selection from the sum) or a sensitivity_factor (a map of the sum)")
        s = self._materialize()
        if s is None:
            raise RuntimeError("Work.clipped_sum read before the clip stage")
        return _readonly_copy(s)

    @property
    def sum_sensitivity(self) -> float:
        """The clip stage's L2 sensitivity of the clipped sum (``clip_norm``, or ``sqrt(sum_l C_l^2)``
        per layer; post_clip only): the scale a private selection calibrates its noise to."""
        self._require("sum_sensitivity", ("post_clip",))
        if self._it.total_clip is None:
            raise RuntimeError("Work.sum_sensitivity read before the clip stage")
        return float(self._it.total_clip)

    @property
    def update(self):
        """The released update (d,), a read-only copy (post_noise only); None before the noise stage."""
        self._require("update", ("post_noise",))
        return _readonly_copy(self._update)

    # ------------------------------------------------------------------ write
    def restrict(self, keep, noise_on: str = "all") -> None:
        """Keep only the coordinates ``keep`` (a bool (d,) array or a :class:`KeptSet`).

        pre_clip: every example's gradient is multiplied by the mask before clipping (and the
        noise is drawn only on ``keep`` when ``noise_on="kept"``); post_clip: the clipped sum is
        zeroed outside ``keep`` (a contraction: the sensitivity does not grow); post_noise: the
        released update is zeroed outside ``keep`` (``noise_on`` must be "all": the noise is drawn).
        ``noise_on`` must be the transform's declared ``Effect.noise_on``; ``keep`` is copied.
        """
        self._require("restrict", ("pre_clip", "post_clip", "post_noise"))
        check_choice("noise_on", noise_on, NOISE_ON)
        t = self._transform
        if t is not None and noise_on != t.effect.noise_on:
            raise RuntimeError(f"transform {t.name!r} declared Effect(noise_on={t.effect.noise_on!r}) but called "
                               f"Work.restrict(noise_on={noise_on!r})")
        prepared = None
        if isinstance(keep, KeptSet):
            prepared, keep = keep.prepared(self.layout, self.dtype), keep.keep
            keep_idx = prepared.idx  # the same array as the compact sum's indices (the fast path checks identity)
        else:
            keep_idx = None
            if not (isinstance(keep, np.ndarray) and keep.dtype == bool and keep.shape == (self.d,)):
                raise ValueError(f"keep must be a bool array of shape ({self.d},) or a KeptSet, got "
                                 f"{type(keep).__name__} {getattr(keep, 'dtype', '')} {getattr(keep, 'shape', '')}")
            keep = _readonly_copy(keep)
        stage = self._stage
        if stage == "post_clip":
            s = self._materialize()
            s[~keep] = 0
        elif stage == "post_noise":  # noise_on is "all" here: Effect refuses "kept" after the noise
            self._update[~keep] = 0
        it = self._it
        if it.mask is None:
            it.mask, it.mask_blocks = keep, prepared
        else:
            it.mask, it.mask_blocks = it.mask & keep, None
        if noise_on == "kept":
            if it.noise_mask is None:
                it.noise_mask, it.noise_idx = keep, keep_idx
            else:
                it.noise_mask, it.noise_idx = it.noise_mask & keep, None

    def rescale(self, factor) -> None:
        """Multiply the released update by ``factor > 0`` (applied by the noise stage to signal and
        noise alike, so it is post-processing: e.g. the ``d/k`` of unbiased random-k)."""
        self._require("rescale", ("pre_clip", "post_clip"))
        self._scale *= check_real("factor", factor, low=0.0, low_open=True)

    def replace_sum(self, new) -> None:
        """Replace the clipped sum by ``new`` (post_clip, and only for a transform whose Effect
        declares ``sensitivity_factor``: the chain then accounts for the larger sensitivity)."""
        self._require("replace_sum", ("post_clip",))
        t = self._transform
        if t is not None and t.effect.sensitivity_factor is None:
            raise RuntimeError(f"transform {t.name!r} replaced the clipped sum without declaring "
                               f"Effect(sensitivity_factor=...): the chain cannot account for it")
        new = np.asarray(new)
        if new.shape != (self.d,):
            raise ValueError(f"the new sum must have shape ({self.d},), got {new.shape}")
        self._materialize()
        self._it.sum = np.array(new, dtype=self.dtype)
        self._it.sum_kept = None

    def release(self, update, kept=None) -> None:
        """Set the released update (noise, aggregate and post_noise stages); ``kept`` (optional
        bool (d,)) replaces the signal mask reported as ``kept_fraction``."""
        self._require("release", ("noise", "aggregate", "post_noise"))
        update = np.asarray(update)
        if update.shape != (self.d,):
            raise ValueError(f"the released update must have shape ({self.d},), got {update.shape}")
        self._update = update
        if kept is not None:
            self._it.mask = kept

    def report(self, **metrics) -> None:
        """Record metrics of this step; names must be in :data:`METRICS`."""
        if not metrics.keys() <= _METRIC_DEFAULTS.keys():
            bad = sorted(set(metrics) - set(METRICS))
            raise ValueError(f"unknown metric {bad[0]!r}; the metrics are {METRICS}")
        self._metrics.update(metrics)

    # ------------------------------------------------------------------ the chain's own part
    def _resolve_before(self) -> None:
        """Compute the deferred ``signal_sq_before_mask = ||sum / B||^2`` (the clip stage defers it
        so that the noise stage can take it from its fused pass when nothing changed the sum)."""
        it = self._it
        if it.before_pending:
            it.before_pending = False
            self._metrics["signal_sq_before_mask"] = _sq(it.sum) / self.expected_batch_size ** 2

    def _materialize(self):
        self._resolve_before()
        it = self._it
        if it.sum is None and it.sum_kept is not None:
            vals, idx, _ = it.sum_kept
            s = np.zeros(self.d, dtype=vals.dtype)
            s[idx] = vals
            it.sum, it.sum_kept = s, None
        return it.sum

    def materialized_sum(self):
        """The writable (d,) clipped sum (the compact sparse form expanded; clip, noise and
        aggregate stages only)."""
        self._require("materialized_sum", _CHAIN_STAGES)
        return self._materialize()

    def finish(self, releases: bool = False) -> tuple[np.ndarray, dict]:
        """The released update and the metrics of the step (after the last transform; the step's).

        ``releases``: the chain has a noise or aggregate stage, which must have released the
        update. A chain without one (non-private ablations) releases ``scale * sum / B`` masked.
        """
        if self._stage is not None:
            raise RuntimeError(f"transform {self._transform.name!r} called Work.finish: only the step finishes it")
        self._resolve_before()
        if self._update is None:
            if releases:
                raise RuntimeError("the chain's noise (or aggregate) stage released no update")
            s = self._materialize()
            u = (s * (self._scale / self.expected_batch_size)).astype(self.dtype, copy=False)
            if self._it.mask is not None:
                u[~self._it.mask] = 0
            self._update = u
            self._metrics["signal_sq_after_mask"] = float(np.dot(u.astype(np.float64), u.astype(np.float64)))
        m = self._it.mask
        self._metrics["kept_fraction"] = 1.0 if m is None else float(np.count_nonzero(m)) / self.d
        return self._update, self._metrics
