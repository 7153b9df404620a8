"""One DP-SGD step: the released update of a mechanism chain on one sampled batch.

Abadi et al. 2016, Alg. 1, the part between the gradient and the optimizer:

    u_t = scale * (sum_{i in batch} clip_C(m_t * g_i) + sigma C z_t) / B,    z_t ~ N(0, I) on the noised set,

with whatever selection ``m_t``, per-example map, post-clip selection or post-noise compression
the chain's transforms declare (``sims.mechanisms``). ``B`` is the EXPECTED batch size ``q n``.

:func:`dpsgd_step` is the only place where a chain's transforms are run: ``sims.train``,
``sims.measure`` and ``sims.experiments`` all call it. It is pure given its inputs: the same
context (same ``rng`` state) and chain state give the same update, bit for bit.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .mechanisms.base import StepContext, Work
from .models.dense import backprop
from .mechanisms.chain import Chain

__all__ = ["dpsgd_step", "step_context", "StepOutput"]


class StepOutput(NamedTuple):
    """What one step returns: ``update`` (d,) in the model's dtype, the new chain ``state`` and
    the step's ``metrics`` (a dict over :data:`sims.mechanisms.METRICS`)."""

    update: np.ndarray
    state: tuple
    metrics: dict


def dpsgd_step(mechanism: Chain, state, ctx: StepContext) -> StepOutput:
    """Run one DP-SGD step of ``mechanism`` on the batch of ``ctx``.

    Parameters
    ----------
    mechanism : sims.mechanisms.Chain
        Made by :func:`sims.mechanisms.chain` (its privacy rules checked at construction).
    state : tuple
        The chain state (``mechanism.init(...)`` or the state returned by the previous step).
    ctx : sims.mechanisms.StepContext
        The parameters ``ctx.params``, the sampled batch's backprop record ``ctx.bp`` (see
        :func:`step_context`), the step and epoch, the expected batch size, the public split and
        the step's mechanism generator.

    Returns
    -------
    StepOutput
        ``(update, state, metrics)``.
    """
    if not isinstance(mechanism, Chain):
        raise ValueError(f"mechanism must be a sims.mechanisms.Chain made by chain(...), got {type(mechanism).__name__}")
    transforms = mechanism.transforms
    if not isinstance(state, tuple) or len(state) != len(transforms):
        raise ValueError(f"state must be the chain's state, a tuple of {len(transforms)} entries (one per "
                         f"transform; mechanism.init(...) or the previous step's state), got "
                         f"{type(state).__name__} of length {len(state) if hasattr(state, '__len__') else '?'}")
    work = Work(ctx, mechanism.per_example_maps)
    new = tuple(work.apply(t, s) for t, s in zip(transforms, state))
    update, metrics = work.finish(mechanism.releases)
    d = work.d
    if update.shape != (d,):
        raise ValueError(f"mechanism released an update of shape {update.shape}, expected ({d},)")
    if update.dtype != work.dtype:
        update = update.astype(work.dtype)
    return StepOutput(update, new, metrics)


def step_context(model, params, X, y, *, step, epoch, expected_batch_size, rng, public=None,
                 validate=True) -> StepContext:
    """Backprop ``model`` at ``params`` on the batch ``(X, y)`` and wrap it in a :class:`StepContext`.

    ``params`` is copied into the context (a transform may keep it, e.g. to prune by magnitude).
    ``validate=False``: see :func:`sims.models.backprop` (for a loop over a dataset checked once).
    """
    bp = backprop(model, params, X, y, validate=validate)
    return StepContext(model=model, layout=model.layout, step=step, epoch=epoch, params=params.copy(), bp=bp,
                       expected_batch_size=expected_batch_size, public=public, rng=rng)
