"""Compose transforms into one DP-SGD mechanism and derive its privacy from their declarations.

Order rules (a violation is always a ``ValueError``):

* stages are non-decreasing in pre_clip < clip < post_clip < noise < post_noise; exactly one
  ``clip`` (or one ``aggregate``), at most one ``noise``; ``aggregate`` excludes both, and only
  post_noise steps may follow it.

Privacy rules (docs/theory.md §1.6: a selection that reads private un-noised data leaks through
its support). The chain is private iff all hold:

1. clipping is on and the noise multiplier is > 0;
2. ``reads="per_example"`` appears only at the per-example stage (``pre_clip``, as a declared
   row-wise :class:`PerExampleMap`, or inside an ``aggregate`` step), never with noise on the
   kept coordinates only;
3. ``reads="private"`` appears at no stage up to and including the noise (or aggregate) step,
   and no post-noise step reads private or per-example data. The one exception is
   :func:`private_top_k` (a registered built-in, at most one per chain, before the noise and after
   no sensitivity-changing map): its selection is itself differentially private (the Gumbel
   exponential mechanism with a declared budget), and the chain's event becomes
   ``SelectedGaussian(sigma, k, selection_epsilon)`` instead of ``Gaussian(sigma)``;
4. every post-clip map that replaces the sum declares its sensitivity factor; the chain
   multiplies the sensitivity by it and divides the noise multiplier by it, and an unbounded
   factor makes the chain non-private;
5. the clip, noise and aggregate stages are the package's own (:func:`clip`,
   :func:`gaussian_noise`, :func:`topagg`), so that the clip norm and noise multiplier the chain
   accounts with are those the stages run with (a copy made by ``dataclasses.replace`` or a
   hand-made stage is not).

Data-independent, public and noised selections (random-k, random freeze, public-data masks,
pruning of released weights, top-k of the noisy update) leave the accounting of dense DP-SGD
unchanged: same noise multiplier, no amplification claimed from the mask. For a fresh secret mask
with noise on the kept coordinates (random-k) that bound is valid but not tight. A non-private chain is
refused with a ``ValueError`` naming the step and the reason, unless ``allow_non_private=True``;
then ``privacy.private`` is False, ``privacy.event`` is ``NonPrivate(reason)``.
"""
from __future__ import annotations

import math

from dptheory.events import Gaussian, NonPrivate, SelectedGaussian

from . import clip_noise, topagg
from .private_top_k import made_here as _private_selection_made_here
from .base import STAGES, PrivacyDescription, Transform

__all__ = ["chain", "Chain"]

_RANK = {"pre_clip": 0, "clip": 1, "aggregate": 1, "post_clip": 2, "noise": 3, "post_noise": 4}
_BUILD = object()  # only chain() holds it: Chain objects cannot be made around the rules


def _check_order(transforms) -> None:
    for i, t in enumerate(transforms):
        if not isinstance(t, Transform):
            raise ValueError(f"transforms[{i}] must be a mechanism Transform, got {type(t).__name__}")
    stages = [t.effect.stage for t in transforms]
    for i in range(1, len(stages)):
        if _RANK[stages[i]] < _RANK[stages[i - 1]]:
            raise ValueError(
                f"step {i} ({transforms[i].name!r}, stage {stages[i]!r}) comes after step {i - 1} "
                f"({transforms[i - 1].name!r}, stage {stages[i - 1]!r}); the order must be {STAGES[:5]}"
            )
    n_clip, n_noise, n_agg = stages.count("clip"), stages.count("noise"), stages.count("aggregate")
    if n_agg > 1 or (n_agg and (n_clip or n_noise)):
        raise ValueError("an 'aggregate' step (e.g. topagg) replaces clip and noise: use exactly one and no clip/noise")
    if n_agg and any(st in ("pre_clip", "post_clip") for st in stages):
        i = next(j for j, st in enumerate(stages) if st in ("pre_clip", "post_clip"))
        raise ValueError(f"step {i} ({transforms[i].name!r}, stage {stages[i]!r}): an 'aggregate' step (topagg) "
                         "reads the raw per-example gradients and would ignore it; only post_noise steps may "
                         "follow an aggregate step")
    if not n_agg and n_clip != 1:
        raise ValueError(f"a chain needs exactly one clip step, got {n_clip}")
    if n_noise > 1:
        raise ValueError(f"a chain takes at most one noise step, got {n_noise}")
    if not (n_noise or n_agg) and "post_noise" in stages:
        i = stages.index("post_noise")
        raise ValueError(f"step {i} ({transforms[i].name!r}, stage 'post_noise') acts on the released noisy update, "
                         f"but the chain has no noise (or aggregate) step; without noise use a post_clip "
                         f"compressor instead (e.g. top_k(mode='clean'), low_rank(order='compress_then_noise'))")


def _info(transforms, i, key):
    t = transforms[i]
    if key not in t.info:
        raise ValueError(f"step {i} ({t.name!r}, stage {t.effect.stage!r}) declares no info[{key!r}]")
    return t.info[key]


def _check_built_in(transforms, fail) -> None:
    for i, t in enumerate(transforms):
        if t.effect.stage in ("clip", "noise", "aggregate") and not (clip_noise.made_here(t) or topagg.made_here(t)):
            fail(f"step {i} ({t.name!r}) is a {t.effect.stage!r} stage not built by sims.mechanisms (clip, "
                 f"gaussian_noise, topagg): its declared clip norm or noise multiplier cannot be checked "
                 f"against what it runs")


def _noise_and_sensitivity(transforms, fail, notes):
    """``(sigma, sensitivity, index of the noise or aggregate step)`` before sensitivity factors."""
    stages = [t.effect.stage for t in transforms]
    if "aggregate" in stages:
        i = stages.index("aggregate")
        agg = transforms[i]
        notes.extend(agg.info.get("notes", ()))
        if agg.info.get("non_private_reason"):
            fail(f"step {i} ({agg.name!r}): {agg.info['non_private_reason']}")
        sigma = _info(transforms, i, "noise_multiplier")
        if sigma == 0:
            fail(f"step {i} ({agg.name!r}): noise_multiplier is 0, nothing is noised")
        return sigma, _info(transforms, i, "sensitivity"), i
    ci = stages.index("clip")
    c = transforms[ci]
    if _info(transforms, ci, "clip_norm") is None:
        fail(f"step {ci} ('clip'): clip_norm=None, per-example sensitivity is unbounded")
    if c.info.get("per_layer"):
        notes.append("per-layer clipping: L2 sensitivity = sqrt(sum_l C_l^2)")
    sens = _info(transforms, ci, "sensitivity")
    if "noise" not in stages:
        fail("no noise step: the update is released without noise")
        return None, sens, len(transforms)
    ni = stages.index("noise")
    sigma = _info(transforms, ni, "noise_multiplier")
    if sigma == 0:
        fail(f"step {ni} ({transforms[ni].name!r}): noise_multiplier is 0")
    return sigma, sens, ni


def _check_reads(i, t, noise_idx, fail, notes) -> float:
    """Apply rules 2-4 to step ``i``; returns its sensitivity factor (1 when it declares none)."""
    e = t.effect
    where = f"step {i} ({t.name!r}) at stage {e.stage!r}"
    if e.reads == "per_example":
        if e.stage not in ("pre_clip", "aggregate"):
            fail(f"{where} reads per-example gradients outside the per-example stage: only a row-wise map "
                 f"before clipping keeps each example's influence inside its own clipped contribution")
        elif e.stage == "pre_clip" and t.per_example is None:
            fail(f"{where} reads per-example gradients but declares no PerExampleMap: a selection computed "
                 f"from some examples and applied to all is not bounded by the clip norm")
        if e.noise_on == "kept":
            fail(f"{where} selects per example but noise covers only the kept coordinates")
    if e.reads == "private" and _private_selection_made_here(t):
        # always before the noise: private_top_k is built at stage post_clip, and _check_order
        # refuses a post_clip step after the noise (a copy at another stage is not made here)
        notes.append(f"step {i} ({t.name!r}) selects {t.info['k']} coordinates privately "
                     f"(Gumbel top-k, selection_epsilon={t.info['selection_epsilon']:g}); noise on them only")
    elif e.reads == "private":
        if i <= noise_idx:
            fail(f"{where} chooses coordinates from private, un-noised data up to the noise: its support "
                 f"leaks; select from noised or public data instead")
        else:
            fail(f"{where} reads private data after the noise")
    if e.reads == "public":
        notes.append(f"step {i} ({t.name!r}) reads the public split only (no privacy cost)")
    if e.reads == "noised":
        notes.append(f"step {i} ({t.name!r}) is post-processing of noised/released quantities")
    f = e.sensitivity_factor
    if f is None:
        return 1.0
    if math.isinf(f):
        fail(f"{where} replaces the clipped sum by a map of unbounded sensitivity factor")
        return 1.0
    notes.append(f"step {i} ({t.name!r}) multiplies the L2 sensitivity of the sum by {f:g} (declared)")
    return f


def _derive(transforms) -> PrivacyDescription:
    """Check the order and derive the per-step privacy description."""
    _check_order(transforms)
    notes, reasons = [], []
    fail = reasons.append
    _check_built_in(transforms, fail)
    sigma, sens, noise_idx = _noise_and_sensitivity(transforms, fail, notes)
    factor = 1.0
    for i, t in enumerate(transforms):
        factor *= _check_reads(i, t, noise_idx, fail, notes)
    selection = _private_selection(transforms, fail)
    if sens is not None:
        sens = sens * factor
    sigma = None if sigma is None else float(sigma) / factor
    if reasons:
        reason = "; ".join(reasons)
        return PrivacyDescription(False, sigma, sens, NonPrivate(reason), reason, tuple(notes))
    if selection is not None:
        event = SelectedGaussian(sigma, selection.info["k"], selection.info["selection_epsilon"])
        return PrivacyDescription(True, sigma, sens, event, "", tuple(notes))
    return PrivacyDescription(True, sigma, sens, Gaussian(sigma), "", tuple(notes))


def _private_selection(transforms, fail):
    """The chain's one :func:`private_top_k` step (or None); refuses two, and one placed after a
    post-clip map that changes the sensitivity (its Gumbel scale uses the clip stage's)."""
    idx = [i for i, t in enumerate(transforms) if _private_selection_made_here(t)]
    if not idx:
        return None
    if len(idx) > 1:
        fail(f"steps {idx} are private_top_k selections: a chain takes at most one (its event accounts one)")
    i = idx[0]
    for j in range(i):
        if transforms[j].effect.sensitivity_factor is not None:
            fail(f"step {i} ({transforms[i].name!r}) comes after step {j} ({transforms[j].name!r}), which "
                 f"changes the sensitivity of the sum: put the private selection first")
    return transforms[i]


class Chain:
    """A composed mechanism (made only by :func:`chain`; immutable).

    ``transforms`` the steps; ``privacy`` the per-step :class:`PrivacyDescription`;
    ``per_example_maps`` the declared per-example maps that the clip stage runs, in order;
    ``releases`` whether a noise or aggregate stage releases the update.
    One step is :func:`sims.step.dpsgd_step`.
    """

    __slots__ = ("transforms", "privacy", "per_example_maps", "releases")

    def __init_subclass__(cls, **kwargs):
        raise TypeError("Chain cannot be subclassed: a chain is made only by sims.mechanisms.chain(...)")

    def __init__(self, transforms, privacy, *, _token=None):
        if _token is not _BUILD:
            raise TypeError("Chain objects are made only by sims.mechanisms.chain(...), which checks the "
                            "privacy rules")
        object.__setattr__(self, "transforms", tuple(transforms))
        object.__setattr__(self, "privacy", privacy)
        object.__setattr__(self, "per_example_maps",
                           tuple(t.per_example for t in self.transforms if t.per_example is not None))
        object.__setattr__(self, "releases",
                           any(t.effect.stage in ("noise", "aggregate") for t in self.transforms))

    def __setattr__(self, name, value):
        raise AttributeError(f"Chain is immutable: cannot set {name!r} (build a new chain with chain(...))")

    def __delattr__(self, name):
        raise AttributeError(f"Chain is immutable: cannot delete {name!r}")

    def __reduce__(self):
        return (_rebuild, (self.transforms, not self.privacy.private))

    def init(self, ctx):
        """Initial state: a tuple with one entry per transform."""
        return tuple(t.init(ctx) for t in self.transforms)

    def frozen_mask(self, state):
        """Bool (d,) mask of coordinates held frozen by the current state, or None."""
        out = None
        for t, s in zip(self.transforms, state):
            if t.frozen is not None:
                m = t.frozen(s)
                if m is not None:
                    out = m.copy() if out is None else (out | m)
        return out

    def __repr__(self):
        return f"Chain({', '.join(t.name for t in self.transforms)}; private={self.privacy.private})"


def _rebuild(transforms, allow_non_private):
    return chain(*transforms, allow_non_private=allow_non_private)


def chain(*transforms, allow_non_private: bool = False) -> Chain:
    """Compose mechanism transforms into a :class:`Chain` and derive its :class:`PrivacyDescription`.

    Raises ``ValueError`` for an unknown or inconsistent order (noise before clip, two noise steps,
    no clip) and, unless ``allow_non_private``, for any chain that is not differentially private
    (the message names the offending step and why; see the module docstring for the rules).
    """
    desc = _derive(transforms)
    if not desc.private and not allow_non_private:
        raise ValueError(f"chain is not differentially private: {desc.reason} (pass allow_non_private=True "
                         f"to build it for auditing)")
    return Chain(transforms, desc, _token=_BUILD)
