"""Random-k sparsification: a uniformly random set of k coordinates per step (Lin, arXiv 2211.00734).

The mask is drawn from ``ctx.rng`` only, independent of the data, so the released update has at most
the sensitivity of dense DP-SGD, and the chain accounts it as dense DP-SGD (docs/theory.md §1.6);
noise is drawn on the kept coordinates only (O(k)). That default accounting is valid but not tight
for ``clip_then_mask``: given the mask ``S`` the sensitivity is ``||Delta_S|| <= ||Delta||`` and
``E_S ||Delta_S||^2 = (k/d) ||Delta||^2``, so even with ``S`` released the RDP of a step is at most
``log(1 - k/d + (k/d) e^{(alpha-1) eps_SGM(alpha)}) / (alpha - 1)`` at integer orders, attained by a
canary on one coordinate (one step, sigma = 1, d = 10, k = 1: delta(eps = 1) = 0.013 against 0.127
dense). The chain does NOT claim this: it is offered as a clearly labelled OPTION,
:func:`dptheory.mask_amplification.epsilon_random_mask` (``keep_fraction = k/d``; layer-wise:
``max_l k / d_l``; docs/mask_amplification.md), valid only for ``clip_then_mask`` with this fresh
mask each step. ``mask_then_clip`` gains nothing (the masked gradient is clipped after masking, so
its norm can be ``C`` whatever ``S``). Orders:

``mask_then_clip``  zero the other coordinates of each per-example gradient, clip the masked
                    gradients (norms by the norm trick), sum: ``sum_i clip_C(m * g_i)``;
``clip_then_mask``  clip full gradients, sum, then mask: ``m * sum_i clip_C(g_i)``.

With ``rescale=True`` the released update is multiplied by ``d/k`` (``k/d``-unbiased estimator
``Q(x) = (d/k) m * x``; docs/theory.md §2 "Rescaled random-k"), signal and noise alike (post-processing).
"""
from __future__ import annotations

from dptheory.validation import check_choice, check_int

from ._util import check_k, random_k_mask
from .base import Effect, Transform

__all__ = ["random_k", "ORDERS"]

ORDERS = ("mask_then_clip", "clip_then_mask")


def random_k(k, order: str = "clip_then_mask", *, layerwise: bool = False, rescale: bool = False) -> Transform:
    """Keep ``k`` uniformly random coordinates per step (``k`` per layer when ``layerwise``).

    Parameters
    ----------
    k : int in [1, d] (``[1, smallest layer size]`` when layer-wise; checked at ``init``)
    order : "mask_then_clip" or "clip_then_mask"
    layerwise : bool
    rescale : bool
        Multiply the update by ``d / (number kept)``.
    """
    k = check_int("k", k, low=1)
    order = check_choice("order", order, ORDERS)
    layerwise = bool(layerwise)

    def init(ctx):
        check_k("k", k, ctx.layout, layerwise)
        return ()

    def update(ctx, state, work):
        keep = random_k_mask(ctx.rng, k, work.layout, layerwise)
        work.restrict(keep, "kept")  # pre_clip: masks the gradients; post_clip: zeroes the clipped sum
        if rescale:
            work.rescale(work.d / float(keep.sum()))
        return state

    stage = "pre_clip" if order == "mask_then_clip" else "post_clip"
    return Transform(f"random_k[{order}]", Effect(stage, noise_on="kept", reads="none"), init, update,
                     info={"k": k})
