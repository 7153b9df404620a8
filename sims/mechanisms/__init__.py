"""Sparse-update mechanisms for DP-SGD with explicit privacy semantics.

Optax-style transforms composed by :func:`chain`; each declares an :class:`Effect` (stage, noise
coverage, what its selection reads, whether it changes the sensitivity) from which the chain
derives its :class:`PrivacyDescription` or refuses to build. One step is
:func:`sims.step.dpsgd_step`: ``(update, state, metrics)`` with
``update = (sum_i clip(mask * g_i) + noise) / expected_batch_size`` after whatever sparsification
or feedback the chain applies. Transforms change the release only through :class:`Work`
(``docs/mechanisms.md``: how to add a mechanism).
"""
from .base import (METRICS, Effect, InitContext, KeptSet, PerExampleMap, PrivacyDescription, StepContext,
                   Transform, Work)
from .chain import Chain, chain
from .clip_noise import clip, gaussian_noise
from .random_k import random_k
from .freeze import frozen_fraction, random_freeze
from .top_k import top_k
from .private_top_k import private_top_k
from .public_selection import public_freeze, public_select
from .pruning import magnitude_prune
from .topagg import topagg
from .low_rank import low_rank
from .feedback import error_feedback

__all__ = [
    "METRICS", "Effect", "InitContext", "KeptSet", "PerExampleMap", "PrivacyDescription", "StepContext",
    "Transform", "Work", "Chain", "chain",
    "clip", "gaussian_noise", "random_k", "random_freeze", "frozen_fraction", "top_k", "private_top_k",
    "public_freeze", "public_select", "magnitude_prune", "topagg", "low_rank", "error_feedback",
]
