"""Error feedback around a compressor, placed AFTER the noise.

EF (Seide et al. 2014; Karimireddy et al. 2019): ``v = e + u``, release ``C(v)``, ``e <- v - C(v)``.
EF21 (Richtarik, Sokolov & Fatkhullin 2021): ``g <- g + C(u - g)``, release ``g``.

Here ``u`` is the released NOISY update of the chain, so the residual ``e`` (or ``g``) is a
deterministic function of noised quantities only: it never holds un-noised private information
and the feedback is post-processing (same accounting as the chain without it). Feeding back
before the noise would carry clean gradient information into later releases; the chain's order
check forbids it (this transform has stage ``post_noise``) and only compressors that themselves
run on noised data (``top_k(mode="noisy")``, ``low_rank("noise_then_compress")``) are accepted.
"""
from __future__ import annotations

import numpy as np

from dptheory.validation import check_choice

from ._util import sq
from .base import Effect, Transform

__all__ = ["error_feedback"]


def error_feedback(compressor: Transform, style: str = "ef") -> Transform:
    """Wrap a post-noise ``compressor`` in error feedback (``style`` "ef" or "ef21")."""
    style = check_choice("style", style, ("ef", "ef21"))
    if not isinstance(compressor, Transform) or compressor.compress is None:
        raise ValueError("compressor must be a compressor transform such as top_k(k, 'noisy') or low_rank(r)")
    if compressor.effect.stage != "post_noise":
        raise ValueError(f"compressor must act on the noisy update (stage 'post_noise'), got "
                         f"{compressor.name!r} with stage {compressor.effect.stage!r}")

    def init(ctx):
        return {"e": np.zeros(ctx.layout.n_params, dtype=np.asarray(ctx.params).dtype),
                "inner": compressor.init(ctx)}

    def update(ctx, state, work):
        u = work.update
        if style == "ef":
            v = state["e"] + u
            y, inner = compressor.compress(ctx, state["inner"], v)
            new = {"e": v - y, "inner": inner}
            out = y
            work.report(phi=sq(y) / sq(v) if sq(v) > 0 else 1.0)
        else:
            y, inner = compressor.compress(ctx, state["inner"], u - state["e"])
            g = state["e"] + y
            new = {"e": g, "inner": inner}
            out = g.copy()
        work.release(out, kept=out != 0)
        return new

    # the wrapper reads exactly what its compressor reads: its declaration is inherited, never widened
    eff = compressor.effect
    return Transform(f"error_feedback[{style}]({compressor.name})", Effect("post_noise", eff.noise_on, eff.reads),
                     init, update, info={})
