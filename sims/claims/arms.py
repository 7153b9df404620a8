"""The sizes of the three modes, and run configs for the arms of the papers' claims.

A :class:`Mode` fixes, before any run, how many seeds each arm gets, how long it trains and over
which step sizes the tuned-step verdict chooses:

========  =======  ======  ========================================  =====================
mode      seeds    epochs  step-size grid                            use
========  =======  ======  ========================================  =====================
quick     3        2       0.5, 2                                    the tests (seconds)
default   12       15      0.125, 0.25, 0.5, 1, 2                    the main job
full      32       30      0.0625, 0.125, 0.25, 0.5, 1, 2, 4         an evening
========  =======  ======  ========================================  =====================

The quick mode checks the machinery, not the papers: its verdicts mean nothing.

Every arm of :func:`digits` is the digits MLP ``64 - hidden - 10`` on scikit-learn's 8x8 digits
(1797 images, pixel intensities scaled from 0-16 to [0, 1] by the fixed factor 1/16, which reads no
data, and no standardisation, so that a shifted public split changes what public-data mechanisms
select and nothing else; 25 % test, then 20 % of the training rows held out as a private validation split, so 1078
training rows), Poisson batches of expected size 64, clip norm 1, plain SGD at step 0.5,
one record at the end. Digits is the smallest bundled data set on which a 10-class MLP reaches
well above chance under DP at epsilon 1 in seconds, and on which the mechanisms' differences are
of the order of the seed spread, so a verdict needs its seeds.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

from dptheory.validation import check_choice

__all__ = ["Mode", "MODES", "mode", "digits", "CLIP", "CLIP_T", "NOISE_T", "FIXED_LR", "dense", "nonprivate",
           "noise_multiplier", "noise_only_chain"]

CLIP = 1.0
FIXED_LR = 0.5
#: the clip and noise transforms of a private chain (the noise multiplier comes from privacy.epsilon)
CLIP_T = {"name": "clip", "clip_norm": CLIP}
NOISE_T = {"name": "gaussian_noise"}


@dataclass(frozen=True)
class Mode:
    """``name``, ``n_seeds`` per arm, ``epochs`` per run, ``lr_grid`` of the tuned-step verdict,
    ``widths`` of the width-scaling claims (hidden units)."""

    name: str
    n_seeds: int
    epochs: int
    lr_grid: tuple
    widths: tuple


MODES = {
    "quick": Mode("quick", 3, 2, (0.5, 2.0), (16, 64)),
    "default": Mode("default", 12, 15, (0.125, 0.25, 0.5, 1.0, 2.0), (64, 256, 1024)),
    "full": Mode("full", 32, 30, (0.0625, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0), (64, 256, 1024)),
}


def mode(name) -> Mode:
    """The :class:`Mode` called ``name`` (one of :data:`MODES`)."""
    return MODES[check_choice("mode", name, tuple(MODES))]


def digits(m: Mode, mechanism: list, *, epsilon=None, hidden=64, public_fraction=None, public_shift=0.0,
           non_private=False) -> dict:
    """The run config of one arm (module docstring); ``epsilon`` None with ``non_private``."""
    data = {"name": "digits", "feature_scale": 1 / 16, "validation_fraction": 0.2}
    if public_fraction is not None:  # "auto" would standardise on the public split
        data.update(public_fraction=public_fraction, public_shift=public_shift, standardize="none")
    privacy = {"allow_non_private": True} if non_private else {"epsilon": float(epsilon)}
    return {"data": data, "model": {"kind": "mlp", "hidden": [int(hidden)]},
            "mechanism": copy.deepcopy(mechanism), "optimizer": {"name": "sgd", "lr": FIXED_LR},
            "privacy": privacy, "training": {"epochs": m.epochs, "batch_size": 64, "record_every": "end"}}


def dense(m: Mode, epsilon, **kw) -> dict:
    """Dense DP-SGD: ``clip(1) -> gaussian_noise`` at ``epsilon``."""
    return digits(m, [CLIP_T, NOISE_T], epsilon=epsilon, **kw)


def nonprivate(m: Mode, *extra, **kw) -> dict:
    """Plain minibatch SGD (``clip(None)``), followed by the transforms ``extra`` if any."""
    return digits(m, [{"name": "clip", "clip_norm": None}, *extra], non_private=True, **kw)


def noise_only_chain(sigma) -> list:
    """The noise-only ablation of DP-SGD (Watson et al. 2023): no clipping, DP-SGD's noise std
    ``sigma * CLIP`` on the sum (``clip(None, reference_norm=CLIP)`` then ``gaussian_noise(sigma)``)."""
    return [{"name": "clip", "clip_norm": None, "reference_norm": CLIP},
            {"name": "gaussian_noise", "noise_multiplier": float(sigma)}]


def noise_multiplier(m: Mode, epsilon, **kw) -> float:
    """The noise multiplier that dense DP-SGD of :func:`dense` calibrates to at ``epsilon`` (for the
    non-private ablations that keep DP-SGD's noise and drop its clipping, or the reverse)."""
    from sims import config as sc

    return float(sc.build(dense(m, epsilon, **kw))[2].privacy.noise_multiplier)
