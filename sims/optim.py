"""Optimizers and learning-rate schedules for (DP-)SGD.

In DP-SGD the Gaussian noise is added to the clipped gradient sum BEFORE the optimizer, so
every optimizer here is post-processing of the privatised update and costs no privacy
(Abadi et al. 2016, Sec. 3.1; Dwork & Roth 2014, Prop. 2.1).

An :class:`Optimizer` is a pair of pure functions in the style of optax:
``state = opt.init(params)`` and ``params, state = opt.step(params, grad, state, lr)``;
``step`` never modifies its inputs. Weight decay is *coupled* (L2 regularisation):
``g <- g + weight_decay * w`` before the update rule, for every optimizer.

A schedule is a callable ``lr(t) -> float`` of the 0-based step ``t``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from dptheory.validation import check_int, check_real

__all__ = [
    "Optimizer", "sgd", "momentum", "adam", "make_optimizer",
    "constant", "step_decay", "cosine", "linear_warmup", "inverse_time", "make_schedule",
]


@dataclass(frozen=True)
class Optimizer:
    """An optimizer as explicit state: ``init(params) -> state``, ``step(params, grad, state, lr) -> (params, state)``."""

    name: str
    init: Callable
    step: Callable
    hyperparams: tuple = ()


def _decayed(grad, params, weight_decay):
    return grad if weight_decay == 0.0 else grad + weight_decay * params


def sgd(weight_decay: float = 0.0) -> Optimizer:
    """Plain SGD: ``w <- w - lr * (g + lambda w)``.

    Parameters
    ----------
    weight_decay : float
        ``lambda >= 0`` (coupled L2 decay).
    """
    wd = check_real("weight_decay", weight_decay, low=0.0)

    def init(params):
        return ()

    def step(params, grad, state, lr):
        return params - lr * _decayed(grad, params, wd), state

    return Optimizer("sgd", init, step, (("weight_decay", wd),))


def momentum(beta: float = 0.9, *, nesterov: bool = False, weight_decay: float = 0.0) -> Optimizer:
    """Heavy-ball momentum (Polyak 1964), in the PyTorch convention.

    ``v <- beta v + g``, then ``w <- w - lr v`` (heavy ball) or ``w <- w - lr (g + beta v)``
    (Nesterov, Sutskever et al. 2013 form), with ``g`` the (weight-decayed) update and ``v_0 = 0``.

    Parameters
    ----------
    beta : float
        Momentum in ``[0, 1)``; ``beta = 0`` is plain SGD.
    nesterov : bool
    weight_decay : float
        ``>= 0``, coupled.
    """
    beta = check_real("beta", beta, low=0.0, high=1.0, high_open=True)
    wd = check_real("weight_decay", weight_decay, low=0.0)
    nesterov = bool(nesterov)

    def init(params):
        return (np.zeros_like(params),)

    def step(params, grad, state, lr):
        g = _decayed(grad, params, wd)
        v = beta * state[0] + g
        direction = g + beta * v if nesterov else v
        return params - lr * direction, (v,)

    return Optimizer("nesterov" if nesterov else "momentum", init, step,
                     (("beta", beta), ("nesterov", nesterov), ("weight_decay", wd)))


def adam(beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, *, weight_decay: float = 0.0) -> Optimizer:
    """Adam (Kingma & Ba 2015, Algorithm 1) with bias correction.

    ``m <- b1 m + (1-b1) g``, ``v <- b2 v + (1-b2) g^2``, ``t <- t+1``,
    ``w <- w - lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)``; ``g`` includes coupled weight decay.

    Parameters
    ----------
    beta1, beta2 : float
        In ``[0, 1)``.
    eps : float
        ``> 0``.
    weight_decay : float
        ``>= 0``, coupled (this is Adam with L2, not AdamW).
    """
    b1 = check_real("beta1", beta1, low=0.0, high=1.0, high_open=True)
    b2 = check_real("beta2", beta2, low=0.0, high=1.0, high_open=True)
    eps = check_real("eps", eps, low=0.0, low_open=True)
    wd = check_real("weight_decay", weight_decay, low=0.0)

    def init(params):
        return (np.zeros_like(params), np.zeros_like(params), 0)

    def step(params, grad, state, lr):
        m, v, t = state
        g = _decayed(grad, params, wd)
        t = t + 1
        m = b1 * m + (1.0 - b1) * g
        v = b2 * v + (1.0 - b2) * (g * g)
        mhat = m / (1.0 - b1 ** t)
        vhat = v / (1.0 - b2 ** t)
        return params - lr * mhat / (np.sqrt(vhat) + eps), (m, v, t)

    return Optimizer("adam", init, step, (("beta1", b1), ("beta2", b2), ("eps", eps), ("weight_decay", wd)))


def make_optimizer(name: str, *, momentum_: float = 0.0, weight_decay: float = 0.0) -> Optimizer:
    """Build an optimizer by name: ``"sgd"`` (heavy-ball momentum if ``momentum_ > 0``), ``"momentum"``,
    ``"nesterov"`` or ``"adam"``. Unknown names raise ``ValueError``."""
    choices = ("sgd", "momentum", "nesterov", "adam")
    if name not in choices:
        raise ValueError(f"optimizer must be one of {list(choices)} or an Optimizer, got {name!r}")
    if name == "adam":
        return adam(weight_decay=weight_decay)
    if name == "sgd":
        m = check_real("momentum", momentum_, low=0.0, high=1.0, high_open=True)
        return sgd(weight_decay) if m == 0.0 else momentum(m, weight_decay=weight_decay)
    m = check_real("momentum", momentum_ if momentum_ else 0.9, low=0.0, high=1.0, high_open=True)
    return momentum(m, nesterov=(name == "nesterov"), weight_decay=weight_decay)


# ----------------------------------------------------------------------------- schedules

def constant(lr: float) -> Callable:
    """``lr_t = lr`` (``lr >= 0``)."""
    lr = check_real("lr", lr, low=0.0)
    return lambda t: lr


def step_decay(lr: float, every: int, gamma: float = 0.1) -> Callable:
    """Piecewise constant: ``lr_t = lr * gamma ** floor(t / every)``.

    ``lr >= 0``, ``every >= 1``, ``gamma`` in ``(0, 1]``.
    """
    lr = check_real("lr", lr, low=0.0)
    every = check_int("every", every, low=1)
    gamma = check_real("gamma", gamma, low=0.0, high=1.0, low_open=True)
    return lambda t: lr * gamma ** (t // every)


def cosine(lr: float, total_steps: int, final_lr: float = 0.0) -> Callable:
    """Cosine annealing (Loshchilov & Hutter 2017, no restarts):
    ``lr_t = final + (lr - final) (1 + cos(pi t / T)) / 2`` for ``t < T``, ``final`` after.

    ``lr >= 0``, ``total_steps = T >= 1``, ``final_lr`` in ``[0, lr]``.
    """
    lr = check_real("lr", lr, low=0.0)
    T = check_int("total_steps", total_steps, low=1)
    final = check_real("final_lr", final_lr, low=0.0, high=lr)

    def sched(t):
        if t >= T:
            return final
        return final + (lr - final) * 0.5 * (1.0 + math.cos(math.pi * t / T))

    return sched


def linear_warmup(schedule: Callable, warmup_steps: int) -> Callable:
    """Linear warm-up (Goyal et al. 2017): ``lr_t = schedule(t) * (t + 1) / warmup_steps`` for
    ``t < warmup_steps``, ``schedule(t)`` afterwards. ``warmup_steps >= 1``."""
    if not callable(schedule):
        raise ValueError(f"schedule must be a callable t -> lr, got {schedule!r}")
    w = check_int("warmup_steps", warmup_steps, low=1)
    return lambda t: schedule(t) * ((t + 1) / w if t < w else 1.0)


def inverse_time(strong_convexity: float, t0: int = 1) -> Callable:
    """``lr_t = 1 / (lambda (t + t0))``: the step of SGD on a lambda-strongly convex objective
    (e.g. Rakhlin, Shamir & Sridharan 2012; Bassily, Smith & Thakurta 2014 for DP-SGD), which gives
    the ``O(G^2 / (lambda T))`` rate. ``lambda > 0``, ``t0 >= 1`` (``t0 = 1`` is ``1/(lambda t)``
    with 1-based ``t``)."""
    lam = check_real("strong_convexity", strong_convexity, low=0.0, low_open=True)
    t0 = check_int("t0", t0, low=1)
    return lambda t: 1.0 / (lam * (t + t0))


def make_schedule(schedule, lr: float, total_steps: int, **kwargs) -> Callable:
    """Resolve ``train``'s ``schedule`` argument into a callable.

    ``None`` or ``"constant"``: ``constant(lr)``; ``"cosine"``: ``cosine(lr, total_steps)``;
    ``"step"``: ``step_decay(lr, every=max(1, total_steps // 3), gamma=0.1)``;
    ``"warmup_cosine"``: ``linear_warmup(cosine(lr, total_steps), max(1, total_steps // 20))``;
    ``"inverse_time"``: ``inverse_time(kwargs["strong_convexity"])`` (``lr`` unused);
    a callable is returned as is (it gives the absolute rate; ``lr`` is unused).
    """
    if callable(schedule):
        return schedule
    choices = ("constant", "cosine", "step", "warmup_cosine", "inverse_time")
    if schedule is not None and schedule not in choices:
        raise ValueError(f"schedule must be None, a callable t -> lr or one of {list(choices)}, got {schedule!r}")
    total_steps = check_int("total_steps", total_steps, low=1)
    if schedule is None or schedule == "constant":
        return constant(lr)
    if schedule == "cosine":
        return cosine(lr, total_steps)
    if schedule == "step":
        return step_decay(lr, max(1, total_steps // 3), 0.1)
    if schedule == "warmup_cosine":
        return linear_warmup(cosine(lr, total_steps), max(1, total_steps // 20))
    if "strong_convexity" not in kwargs:
        raise ValueError("schedule='inverse_time' needs strong_convexity > 0")
    return inverse_time(kwargs["strong_convexity"])
