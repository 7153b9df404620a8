"""Random freeze (Zhu & Blaschko, arXiv 2112.00845): a growing, uniformly random frozen set.

At epoch ``e`` of ``E`` a fraction ``r_e`` of the ``d`` coordinates is frozen (``floor(r_e d)``
coordinates drawn uniformly without replacement, independent of the data), redrawn every epoch
or every ``refresh`` steps. The mask is applied BEFORE clipping (per-example gradients are
zeroed on frozen coordinates, then clipped), noise is not drawn on frozen coordinates, and by
default there is no ``1/(1-r)`` rescaling (as in the authors' code; docs/sources.md §S1,
docs/theory.md §2 "Random freeze schedule"). The mask is data-independent: same accounting as
dense DP-SGD.

Ramps (``E`` = number of epochs, ``e = 0..E-1``; with ``E = 1`` every ramp gives ``r_final``):

``linear``   ``r_e = r_final e / (E-1)`` (the paper's gradual schedule);
``step``     ``r_e = 0`` for ``e < E // 2``, ``r_final`` afterwards;
``cosine``   ``r_e = r_final (1 - cos(pi e / (E-1))) / 2``;
``constant`` ``r_e = r_final``.
"""
from __future__ import annotations

import numpy as np

from dptheory.validation import check_choice, check_int, check_real
from dptheory.noise_signal import FREEZE_KINDS as RAMPS, freeze_schedule, n_frozen

from .base import Effect, KeptSet, Transform

__all__ = ["random_freeze", "frozen_fraction", "RAMPS"]

def frozen_fraction(r_final, epoch, n_epochs, ramp: str = "linear") -> float:
    """Frozen fraction ``r_e`` at ``epoch`` (0-based; clamped to the last epoch) of ``n_epochs``.

    The schedule is :func:`dptheory.noise_signal.freeze_schedule` (one definition for theory and
    simulation).
    """
    epoch = check_int("epoch", epoch, low=0)
    n_epochs = check_int("n_epochs", n_epochs, low=1)
    return float(freeze_schedule(r_final, n_epochs, ramp)[min(epoch, n_epochs - 1)])


def random_freeze(r_final, ramp: str = "linear", *, refresh=None, rescale: bool = False) -> Transform:
    """Freeze a uniformly random fraction ``r_e`` of the coordinates (mask, then clip; no noise there).

    Parameters
    ----------
    r_final : float in [0, 1)
        Final frozen fraction.
    ramp : "linear", "step", "cosine" or "constant"
    refresh : None or int >= 1
        ``None``: redraw the frozen set at each epoch start; an int: every ``refresh`` steps.
    rescale : bool
        Multiply the update by ``d / (number of trainable coordinates)`` (off in the paper).
    """
    r_final = check_real("r_final", r_final, low=0.0, high=1.0, high_open=True)
    ramp = check_choice("ramp", ramp, RAMPS)
    if refresh is not None:
        refresh = check_int("refresh", refresh, low=1)

    def draw(rng, d, rate):
        frozen = np.zeros(d, dtype=bool)
        n = int(n_frozen(rate, d))
        if n:
            frozen[rng.choice(d, size=n, replace=False)] = True
        return frozen

    def init(ctx):
        spe = check_int("steps_per_epoch", ctx.steps_per_epoch, low=1)
        total = check_int("total_steps", ctx.total_steps, low=1)
        n_epochs = -(-total // spe)
        d = ctx.layout.n_params
        frozen = draw(ctx.rng, d, frozen_fraction(r_final, 0, n_epochs, ramp))
        return {"key": 0, "n_epochs": n_epochs, "frozen": frozen, "keep": KeptSet(~frozen)}

    def update(ctx, state, work):
        key = ctx.epoch if refresh is None else ctx.step // refresh
        if key != state["key"]:
            rate = frozen_fraction(r_final, ctx.epoch, state["n_epochs"], ramp)
            frozen = draw(ctx.rng, work.d, rate)
            state = dict(state, key=key, frozen=frozen, keep=KeptSet(~frozen))
        keep = state["keep"]
        if keep.idx.size == work.d:
            # Nothing frozen (the first epochs of a ramp): the update is the dense one, so the step
            # keeps the dense norm trick instead of the masked kernels (1.4x dense at kept 1.0,
            # benchmarks/README.md, bench_scaling).
            return state
        work.restrict(keep, "kept")  # a KeptSet: prepared for the sparse kernels once per redraw
        if rescale:
            work.rescale(work.d / max(1.0, float(keep.idx.size)))
        return state

    return Transform("random_freeze", Effect("pre_clip", noise_on="kept", reads="none"), init, update,
                     frozen=lambda s: s["frozen"], info={"r_final": r_final})
