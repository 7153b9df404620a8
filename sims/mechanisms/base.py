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

import types
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from dptheory.validation import check_choice, check_int, check_real

__all__ = [
    "InitContext", "StepContext", "PrivacyDescription", "Effect", "Transform", "PerExampleMap",
    "KeptSet", "Work", "Internals", "STAGES", "READS", "NOISE_ON", "METRICS",
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

    def __post_init__(self):
        check_choice("stage", self.stage, STAGES)
        check_choice("noise_on", self.noise_on, NOISE_ON)
        check_choice("reads", self.reads, READS)
        if self.sensitivity_factor is not None:
            f = self.sensitivity_factor
            if isinstance(f, bool) or not isinstance(f, (int, float, np.floating)) or not (f >= 1.0):
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
        if not isinstance(self.effect, Effect):
            raise ValueError(f"effect of transform {self.name!r} must be an Effect, got {type(self.effect).__name__}")
        if self.per_example is not None:
            if not isinstance(self.per_example, PerExampleMap):
                raise ValueError(f"per_example of {self.name!r} must be a PerExampleMap")
            if self.effect.stage != "pre_clip" or self.effect.reads != "per_example":
                raise ValueError(f"{self.name!r}: a per-example map needs Effect(stage='pre_clip', "
                                 f"reads='per_example'), got stage {self.effect.stage!r}, reads {self.effect.reads!r}")
        object.__setattr__(self, "info", types.MappingProxyType(dict(self.info)))


class KeptSet:
    """A fixed set of kept coordinates that a transform holds over many steps.

    Passing a ``KeptSet`` instead of a bool array to :meth:`Work.restrict` lets the chain reuse
    the preparation of the set for its sparse kernels (indices and float blocks, computed once
    per layout and dtype) instead of redoing an O(d) conversion every step. Same semantics.
    """

    __slots__ = ("keep", "idx", "_prepared")

    def __init__(self, keep):
        keep = np.asarray(keep)
        if keep.dtype != bool or keep.ndim != 1:
            raise ValueError(f"keep must be a 1-D bool array, got dtype {keep.dtype} and shape {keep.shape}")
        self.keep = keep
        self.idx = np.flatnonzero(keep)
        self._prepared = None

    def prepared(self, layout, dtype):
        """The :class:`sims.models.pergrad.MaskBlocks` of this set for ``layout`` and ``dtype`` (cached)."""
        from sims.models.pergrad import mask_blocks

        blk = self._prepared
        if blk is None or blk.dtype != dtype or blk.layout != layout:
            blk = self._prepared = mask_blocks(layout, self.keep, dtype)
        return blk


class Internals:
    """The chain's own storage and performance caches for one step (not part of the contract).

    Only the package's clip, noise and aggregate stages read or write it; a transform author
    never needs it. ``sum`` the clipped (masked) (d,) sum; ``sum_kept`` the same sum held
    compactly as ``(values (k,), idx (k,), mask)`` on the sparse path; ``before_pending``: the
    energy before post-clip selections is not computed yet; ``mask_blocks`` the prepared signal
    mask; ``noise_idx`` cached indices of the noise mask; ``total_clip`` the clip stage's L2
    sensitivity (noise std = sigma * total_clip); ``per_example_maps`` the chain's declared maps.
    """

    __slots__ = ("sum", "sum_kept", "before_pending", "mask_blocks", "noise_idx", "total_clip",
                 "per_example_maps")

    def __init__(self, per_example_maps=()):
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


class Work:
    """The per-step record through which transforms change the release (the transform contract).

    Read: ``ctx`` (the :class:`StepContext`), ``bp`` (its backprop record), ``layout``, ``d``,
    ``dtype``, ``expected_batch_size`` (B), :attr:`mask` (signal selection, None = all), :attr:`noise_mask` (coordinates
    that get noise, None = all), :attr:`scale` (factor on the released update),
    :attr:`clipped_sum` (after the clip stage; a read-only array), :attr:`update` (after the noise
    stage; read-only). Write, only through: :meth:`restrict`, :meth:`rescale`,
    :meth:`replace_sum` (declared sensitivity factor only), :meth:`release`, :meth:`report`.
    Each method checks the stage of the transform that calls it.
    """

    __slots__ = ("ctx", "bp", "layout", "d", "dtype", "expected_batch_size", "internal", "_mask", "_noise_mask", "_scale",
                 "_update", "_metrics", "_transform", "_stage")

    def __init__(self, ctx: StepContext, per_example_maps=()):
        self.ctx = ctx
        self.bp = ctx.bp
        self.layout = ctx.bp.layout
        self.d = self.layout.n_params
        self.dtype = ctx.bp.losses.dtype
        self.expected_batch_size = float(ctx.expected_batch_size)
        self.internal = Internals(per_example_maps)
        self._mask = None
        self._noise_mask = None
        self._scale = 1.0
        self._update = None
        self._metrics = dict(_METRIC_DEFAULTS)
        self._transform = None
        self._stage = None

    # ------------------------------------------------------------------ running transforms
    def apply(self, transform: Transform, state):
        """Run ``transform.update(ctx, state, self)`` with this record's stage checks set to it."""
        self._transform, self._stage = transform, transform.effect.stage
        try:
            return transform.update(self.ctx, state, self)
        finally:
            self._transform = self._stage = None

    def _require(self, method: str, stages) -> None:
        if self._stage is not None and self._stage not in stages:
            name = self._transform.name if self._transform is not None else "?"
            raise RuntimeError(f"transform {name!r} (stage {self._stage!r}) called Work.{method}, which is "
                               f"allowed only at stages {tuple(stages)}")

    # ------------------------------------------------------------------ read
    @property
    def mask(self):
        """Bool (d,) signal selection, or None (all coordinates)."""
        return self._mask

    @property
    def noise_mask(self):
        """Bool (d,) coordinates that receive noise, or None (all)."""
        return self._noise_mask

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
        """The clipped (masked) sum ``sum_i clip_C(m * g_i)``, (d,), read-only (after the clip stage)."""
        s = self.materialized_sum()
        if s is None:
            raise RuntimeError("Work.clipped_sum read before the clip stage")
        v = s.view()
        v.flags.writeable = False
        return v

    @property
    def update(self):
        """The released update (after the noise stage), (d,), read-only; None before it."""
        if self._update is None:
            return None
        v = self._update.view()
        v.flags.writeable = False
        return v

    # ------------------------------------------------------------------ write
    def restrict(self, keep, noise_on: str = "all") -> None:
        """Keep only the coordinates ``keep`` (a bool (d,) array or a :class:`KeptSet`).

        pre_clip: every example's gradient is multiplied by the mask before clipping (and the
        noise is drawn only on ``keep`` when ``noise_on="kept"``); post_clip: the clipped sum is
        zeroed outside ``keep`` (a contraction: the sensitivity does not grow); post_noise: the
        released update is zeroed outside ``keep`` (``noise_on`` must be "all": the noise is drawn).
        """
        self._require("restrict", ("pre_clip", "post_clip", "post_noise"))
        check_choice("noise_on", noise_on, NOISE_ON)
        prepared = None
        if isinstance(keep, KeptSet):
            prepared, keep = keep.prepared(self.layout, self.dtype), keep.keep
            keep_idx = prepared.idx  # the same array as the compact sum's indices (the fast path checks identity)
        else:
            keep_idx = None
            if not (isinstance(keep, np.ndarray) and keep.dtype == bool and keep.shape == (self.d,)):
                raise ValueError(f"keep must be a bool array of shape ({self.d},) or a KeptSet, got "
                                 f"{type(keep).__name__} {getattr(keep, 'dtype', '')} {getattr(keep, 'shape', '')}")
        stage = self._stage
        if stage == "post_clip":
            s = self.materialized_sum(resolve=True)
            s[~keep] = 0
        elif stage == "post_noise":
            if noise_on != "all":
                raise ValueError("noise_on must be 'all' after the noise stage (the noise is already drawn)")
            self._update[~keep] = 0
        it = self.internal
        if self._mask is None:
            self._mask, it.mask_blocks = keep, prepared
        else:
            self._mask, it.mask_blocks = self._mask & keep, None
        if noise_on == "kept":
            if self._noise_mask is None:
                self._noise_mask, it.noise_idx = keep, keep_idx
            else:
                self._noise_mask, it.noise_idx = self._noise_mask & keep, None

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
        self.materialized_sum(resolve=True)
        self.internal.sum = np.array(new, dtype=self.dtype)
        self.internal.sum_kept = None

    def release(self, update, kept=None) -> None:
        """Set the released update (noise, aggregate and post_noise stages); ``kept`` (optional
        bool (d,)) replaces the signal mask reported as ``kept_fraction``."""
        self._require("release", ("noise", "aggregate", "post_noise"))
        self._update = update
        if kept is not None:
            self._mask = kept

    def report(self, **metrics) -> None:
        """Record metrics of this step; names must be in :data:`METRICS`."""
        for k, v in metrics.items():
            if k not in _METRIC_DEFAULTS:
                raise ValueError(f"unknown metric {k!r}; the metrics are {METRICS}")
            self._metrics[k] = v

    # ------------------------------------------------------------------ the chain's own stages
    def resolve_before(self) -> None:
        """Compute the deferred ``signal_sq_before_mask = ||sum / B||^2`` (the clip stage defers it
        so that the noise stage can take it from its fused pass when nothing changed the sum)."""
        it = self.internal
        if it.before_pending:
            it.before_pending = False
            self._metrics["signal_sq_before_mask"] = _sq(it.sum) / self.expected_batch_size ** 2

    def materialized_sum(self, resolve: bool = True):
        """The writable (d,) clipped sum (the compact sparse form expanded); chain stages only."""
        if resolve:
            self.resolve_before()
        it = self.internal
        if it.sum is None and it.sum_kept is not None:
            vals, idx, _ = it.sum_kept
            s = np.zeros(self.d, dtype=vals.dtype)
            s[idx] = vals
            it.sum, it.sum_kept = s, None
        return it.sum

    def finish(self) -> tuple[np.ndarray, dict]:
        """The released update and the metrics of the step (after the last transform).

        A chain without a noise step (non-private ablations) releases ``scale * sum / B`` masked.
        """
        self.resolve_before()
        if self._update is None:
            s = self.materialized_sum()
            u = (s * (self._scale / self.expected_batch_size)).astype(self.dtype, copy=False)
            if self._mask is not None:
                u[~self._mask] = 0
            self._update = u
            self._metrics["signal_sq_after_mask"] = float(np.dot(u.astype(np.float64), u.astype(np.float64)))
        self._metrics["kept_fraction"] = 1.0 if self._mask is None else float(np.count_nonzero(self._mask)) / self.d
        return self._update, self._metrics

