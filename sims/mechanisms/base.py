"""Records shared by the training loop and the mechanism chain, and the transform protocol.

The contract with ``sims/train.py``: :class:`InitContext`, :class:`StepContext` and
:class:`PrivacyDescription` are frozen records; a chain (see :mod:`sims.mechanisms.chain`)
is built from :class:`Transform` objects, each of which DECLARES its privacy-relevant
behaviour in an :class:`Effect`.

Stages, in the only order a chain accepts:

``pre_clip``   acts on per-example gradients (e.g. a mask applied before clipping);
``clip``       clips per-example gradients and sums them (exactly one per chain);
``post_clip``  acts on the clipped, un-noised sum;
``noise``      adds Gaussian noise and divides by the expected batch size (at most one);
``post_noise`` acts on the released noisy update (post-processing);
``aggregate``  a self-contained clip + noise (TopAgg); replaces ``clip`` and ``noise``.

What a transform's CHOICE of coordinates reads (``Effect.reads``):

``none``        data-independent (random masks, schedules);
``public``      the public split only;
``noised``      already-released noisy quantities (the DP iterate, the noisy update);
``per_example`` each example's own gradient, inside the per-example map before clipping
                (its clipped contribution still has norm <= C, so this is private iff the
                noise covers all d coordinates);
``private``     aggregated private, un-noised data (e.g. top-k of the clean sum).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

__all__ = [
    "InitContext", "StepContext", "PrivacyDescription", "Effect", "Transform", "Work",
    "STAGES", "READS", "NOISE_ON",
]

STAGES = ("pre_clip", "clip", "post_clip", "noise", "post_noise", "aggregate")
READS = ("none", "public", "noised", "per_example", "private")
NOISE_ON = ("all", "kept")


@dataclass(frozen=True)
class InitContext:
    """What a chain sees once, before training. ``public`` is ``None`` or ``(X_public, y_public)``."""

    model: Any
    layout: Any
    params: np.ndarray
    total_steps: int
    steps_per_epoch: int
    expected_batch_size: float
    public: Any
    rng: np.random.Generator


@dataclass(frozen=True)
class StepContext:
    """What a chain sees at each step. ``bp`` is the Backprop record of the Poisson-sampled private batch."""

    model: Any
    layout: Any
    step: int
    epoch: int
    params: np.ndarray
    bp: Any
    expected_batch_size: float
    public: Any
    rng: np.random.Generator


@dataclass(frozen=True)
class PrivacyDescription:
    """What accounting needs to know about one step of a chain.

    ``private=True`` means: the released update is a Poisson-subsampled Gaussian mechanism whose
    RDP equals that of dense DP-SGD at ``noise_multiplier`` (= noise std / L2 sensitivity), i.e.
    dp_accounting's ``PoissonSampledDpEvent(q, GaussianDpEvent(noise_multiplier))``.
    ``private=False`` comes with a ``reason``.
    """

    private: bool
    noise_multiplier: float | None
    sensitivity: float | None
    event: str
    reason: str
    notes: tuple = ()


@dataclass(frozen=True)
class Effect:
    """Declared privacy-relevant behaviour of one transform.

    Attributes
    ----------
    stage : one of :data:`STAGES`
    noise_on : "all" or "kept"
        "kept": the noise step draws noise only on the coordinates this transform keeps.
    reads : one of :data:`READS`
        What the transform's choice of coordinates (or basis) depends on.
    """

    stage: str
    noise_on: str = "all"
    reads: str = "none"

    def __post_init__(self):
        from dptheory.validation import check_choice

        check_choice("stage", self.stage, STAGES)
        check_choice("noise_on", self.noise_on, NOISE_ON)
        check_choice("reads", self.reads, READS)


@dataclass(frozen=True)
class Transform:
    """One step of a chain: ``init(ictx) -> state`` and ``update(sctx, state, work) -> state``.

    ``update`` reads and writes the mutable :class:`Work` record of the current step.
    ``frozen(state)`` (optional) returns the bool (d,) mask of coordinates it leaves untouched.
    ``compress(sctx, state, x) -> (y, state)`` (optional) exposes the transform as a compressor
    for :func:`sims.mechanisms.error_feedback`.
    ``info`` carries clip norm / noise multiplier / sensitivity for the privacy derivation.
    """

    name: str
    effect: Effect
    init: Callable
    update: Callable
    frozen: Callable | None = None
    compress: Callable | None = None
    info: dict = field(default_factory=dict)


class Work:
    """Mutable per-step scratch record passed through the transforms of a chain (internal).

    mask : None or bool (d,)       coordinates kept in the signal (None = all)
    noise_mask : None or bool (d,) coordinates that will receive noise (None = all)
    sum : clipped (masked) sum of per-example gradients, (d,)
    sum_kept : None or (values (k,), idx (k,), mask): the same sum held compactly on the kept
               coordinates ``idx`` of ``mask`` (the O(k) sparse clip path); reading ``sum``
               materialises it as a (d,) vector (and drops the compact form)
    update : released update (after the noise stage), (d,)
    """

    def __init__(self, ctx: StepContext):
        self.ctx = ctx
        self.bp = ctx.bp
        self.layout = ctx.bp.layout
        self.d = self.layout.n_params
        self.dtype = ctx.bp.losses.dtype
        self.batch = float(ctx.expected_batch_size)
        self.mask = None
        self.noise_mask = None
        self.noise_idx = None  # cached np.flatnonzero(noise_mask), or None
        self.mask_blocks = None  # cached sims.models.pergrad.MaskBlocks of ``mask`` (float blocks), or None
        self.per_example_top_k = None  # (k, layerwise, chunk_size) when set by top_k(mode="per_example")
        self._sum = None
        self.sum_kept = None
        self.before_pending = False  # signal_sq_before_mask not yet computed from the (d,) sum
        self.update = None
        self.total_clip = None
        self.scale = 1.0  # rescaling of the released update (e.g. d/k), applied by the noise stage
        self.norms = None
        self.metrics = {
            "kept_fraction": 1.0, "clipped_fraction": 0.0, "signal_sq_before_mask": 0.0,
            "signal_sq_after_mask": 0.0, "noise_sq": 0.0, "nsr": 0.0, "phi": 1.0,
            "grad_norm_q10": 0.0, "grad_norm_q50": 0.0, "grad_norm_q90": 0.0,
        }

    def resolve_before(self) -> None:
        """Compute the deferred ``signal_sq_before_mask = ||sum / B||^2`` (the clip stage defers it
        so that the noise stage can take it from its fused pass when nothing changed the sum)."""
        if self.before_pending:
            from ._util import sq

            self.before_pending = False
            self.metrics["signal_sq_before_mask"] = sq(self._sum) / self.batch ** 2

    @property
    def sum(self):
        self.resolve_before()  # a reader may modify the sum in place
        if self._sum is None and self.sum_kept is not None:
            vals, idx, _ = self.sum_kept
            s = np.zeros(self.d, dtype=vals.dtype)
            s[idx] = vals
            self._sum, self.sum_kept = s, None
        return self._sum

    @sum.setter
    def sum(self, value):
        self.resolve_before()
        self._sum, self.sum_kept = value, None

    def restrict(self, keep: np.ndarray, noise_on: str, keep_idx=None, blocks=None) -> None:
        """Intersect the signal mask (and the noise mask when ``noise_on == "kept"``) with ``keep``.

        ``keep_idx`` (optional) is ``np.flatnonzero(keep)``, cached by the caller so the noise stage
        need not scan all d coordinates; ``blocks`` (optional) is ``keep`` converted by
        :func:`sims.models.pergrad.mask_blocks` to this step's dtype, cached by the caller so the clip
        stage need not convert the mask again. Both are dropped when masks are intersected.
        """
        if self.mask is None:
            self.mask, self.mask_blocks = keep, blocks
        else:
            self.mask, self.mask_blocks = self.mask & keep, None
        if noise_on == "kept":
            if self.noise_mask is None:
                self.noise_mask, self.noise_idx = keep, keep_idx
            else:
                self.noise_mask, self.noise_idx = self.noise_mask & keep, None
