"""Many DP-SGD runs at once: :func:`train_stacked` (issue 11, item 1).

For small models a :func:`sims.train.train` call spends its time in Python per-step overhead.
:func:`train_stacked` advances R independent runs that share the model shapes and the chain
structure together, their parameters stacked on a leading axis, with one batched GEMM per layer
for all runs and Numba kernels (one thread per run) for the sampling, noise and selection.

Run ``r`` uses exactly the random numbers of
``train(model, data, mechanism=chain_for(...), lr=lr_r, random_state=seeds[r], ...)``: the same
initial parameters, Poisson masks (variable batch sizes, padded with zero rows, never resampled),
noise seeds and random-freeze masks (:mod:`sims.stacked.streams` replays NumPy's PCG64 streams),
so its final parameters and history agree with that call up to floating-point summation order.

Scope: float64 MLPs and linear / logistic / softmax regressions of :mod:`sims.models`; the chains
``"dense"`` (``chain(clip(C), gaussian_noise(sigma))``, Abadi et al. 2016), ``"random_freeze"``
(``chain(random_freeze(r_final, ramp), clip(C), gaussian_noise(sigma))``), ``"top_k_noisy"``
(``chain(clip(C), gaussian_noise(sigma), top_k(k, mode="noisy"))``) and ``"random_k"`` in either
order (a fresh random k-subset each step, noise on it only), ``"low_rank"`` (PowerSGD-style
compression of the noisy update), the masks chosen at init ``"public_freeze"`` and
``"magnitude_prune"`` (the latter optionally recomputed every ``every`` steps from the current
parameters), ``"public_select"`` (a new mask from the public gradient every step), and
``"top_k_per_example"`` (``chain(top_k(k, mode="per_example"), clip(C), gaussian_noise(sigma))``,
each example's gradient materialised, one run at a time), ``"topagg"`` (one example per teacher)
and ``"private_top_k"`` (Gumbel top-k of the clipped sum, noise on it; its selection budget in
``options``); Poisson
sampling; the optimizers and learning-rate schedules of :mod:`sims.optim`. Runs may differ in
seed, lr, clip norm, noise multiplier and r_final / k / fraction.
Anything else raises a ``ValueError`` naming the parameter, so a caller can fall back to
:func:`sims.train.train`.
"""
from __future__ import annotations

from sims.train import DIVERGENCE_FACTOR

from .loop import STEP_METRICS, StackedLoop
from .run import MECHANISMS, StackedRunResult, chain_for, resolve

__all__ = ["train_stacked", "chain_for", "StackedRunResult", "MECHANISMS", "STEP_METRICS"]


def train_stacked(model, data, *, seeds, mechanism="dense", clip_norm=1.0, noise_multiplier=1.0, lr=0.1,
                  r_final=None, k=None, ramp="linear", order=None, rank=None, reference_norm=None, fraction=None,
                  options=None, feedback=None, steps=None, epochs=None, sampling_rate=None, batch_size=None,
                  delta=None, record_every=None, divergence_factor=DIVERGENCE_FACTOR, sampling="poisson",
                  optimizer="sgd", schedule=None, mode="dp", momentum=0.0, weight_decay=0.0, strong_convexity=None, params0=None, allow_non_private=False) -> list:
    """Train R = ``len(seeds)`` independent DP-SGD runs of ``model`` on ``data`` at once.

    Every run is ``w_{t+1} = opt(w_t, u_t, lr_t)`` (plain SGD: ``w_t - lr_t u_t``) with the DP-SGD release (Abadi et al. 2016, Alg. 1)
    ``u_t = (sum_{i in batch_t} clip_C(m_t * g_i) + N(0, sigma^2 C^2 I_{kept})) / (q n)``,
    ``clip_C(g) = g min(1, C / ||g||)``, batches Poisson-sampled at rate ``q`` (``B_t ~ Bin(n, q)``),
    ``m_t`` the random-freeze keep mask (all ones otherwise), then the top-k of ``u_t`` for
    ``"top_k_noisy"`` or its rank-r compression for ``"low_rank"``. Privacy per run: the ``Gaussian(sigma)`` event Poisson-sampled and composed
    over the steps, accounted by RDP (Mironov, Talwar & Zhang 2019), as ``train()`` reports it.

    Parameters
    ----------
    model : sims.models.Model
        float64; an MLP or a single-layer (linear / logistic / softmax) model.
    data : sims.data.Dataset
        Training split, optional test and public splits (the public split is read only by the
        public-data masks, as in ``train()``).
    seeds : sequence of int >= 0 (or SeedSequence with integer entropy)
        One per run: run ``r`` is ``train(..., random_state=seeds[r])``.
    mechanism : str, one of :data:`MECHANISMS`
        ``"dense"``, ``"random_freeze"``, ``"top_k_noisy"``, ``"random_k"``, ``"top_k_clean"``,
        ``"low_rank"``, ``"public_freeze"``, ``"magnitude_prune"``, ``"public_select"``,
        ``"top_k_per_example"``, ``"topagg"``, ``"private_top_k"``.
        The chain (:func:`chain_for`); a Chain object is refused (its hidden options, e.g. the
        freeze ramp or a layer-wise top-k, cannot be read back). ``"top_k_clean"`` (top-k of the
        clean sum) exists only as a non-private baseline.
    clip_norm, noise_multiplier, lr : float or sequence of R floats
        ``C > 0``, ``sigma > 0``, constant ``lr >= 0``; a scalar is shared by all runs.
        ``clip_norm=None`` (no clipping, ``clip(None)``) or ``noise_multiplier=None`` (no noise
        step), for all runs, gives the non-private baselines (plain minibatch SGD, clipping only)
        and needs ``allow_non_private=True``; noise without a clip norm is refused. TopAgg takes
        ``clip_norm=None`` (its votes have norm sqrt(k)) and a noise multiplier.
    r_final : float in [0, 1) or sequence
        Final frozen fraction (``"random_freeze"`` only), frozen set redrawn at each epoch start.
    k : int in [1, d] or sequence
        Kept coordinates (``"top_k_noisy"``, ``"top_k_clean"``, ``"random_k"`` and
        ``"top_k_per_example"``; a fresh uniform k-subset each step for ``"random_k"``, each
        example's own top-k for ``"top_k_per_example"``).
    order : str or None
        Shared by all runs. ``"random_k"``: ``"clip_then_mask"`` (default) or ``"mask_then_clip"``;
        ``"low_rank"``: ``"noise_then_compress"`` (the default with noise: post-processing) or
        ``"compress_then_noise"`` (the default without noise: the clean sum compressed, a non-private
        baseline). Ignored by the other mechanisms.
    rank : int >= 1
        ``"low_rank"`` only (shared): one warm-started power iteration per weight matrix,
        ``P = orth(M Q)``, ``Q <- M^T P``, ``M_hat = P Q^T`` (Vogels, Karimireddy & Jaggi 2019,
        Alg. 1), rank capped at ``min(out, in)``; biases pass uncompressed.
    fraction : float in [0, 1) or sequence of R floats
        ``"public_freeze"`` / ``"magnitude_prune"`` / ``"public_select"`` only: the fraction not
        updated (frozen, pruned or not selected). The mask is chosen by the transform itself (from
        the public split ``data.X_public``, the run's parameters, or at random): once at init, every
        ``every`` steps for ``magnitude_prune(source="current", every=...)``, every step for
        ``public_select``; noise goes on the kept coordinates only.
    options : dict or None
        The masks' other arguments, shared by all runs (e.g. ``{"criterion": "random"}``,
        ``{"source": "public", "public_epochs": 3}``, ``{"source": "current", "every": 20}``);
        TopAgg's (``beta``, ``stochastic``, ``coord_clip``, ``scale``, ``chunk_size``);
        ``private_top_k``'s ``{"selection_epsilon": eps}`` (required).
    feedback : {None, "ef", "ef21"}
        Error feedback around the compressor of ``"top_k_noisy"`` or ``"low_rank"``, after the
        noise (:func:`sims.mechanisms.error_feedback`): ``"ef"`` (Seide et al. 2014; Karimireddy
        et al. 2019) ``v = e + u``, release ``C(v)``, ``e <- v - C(v)``; ``"ef21"`` (Richtarik,
        Sokolov & Fatkhullin 2021) ``g <- g + C(u - g)``, release ``g``. Shared by all runs.
    reference_norm : float > 0 or None
        With ``clip_norm=None`` and a noise multiplier: the noise-only ablation
        ``chain(clip(None, reference_norm=C_ref), gaussian_noise(sigma))``, noise of std
        ``sigma C_ref`` on the unclipped sum (not private; needs ``allow_non_private=True``).
    ramp : {"linear", "step", "cosine", "constant"}
        Random-freeze ramp, shared by all runs.
    steps, epochs, sampling_rate, batch_size, delta, record_every, divergence_factor
        As :func:`sims.train.train` (shared by all runs).
    optimizer, momentum, weight_decay, schedule, strong_convexity
        As :func:`sims.train.train`, shared by all runs: ``optimizer`` by name (``"sgd"``,
        ``"momentum"``, ``"nesterov"``, ``"adam"``; :func:`sims.optim.make_optimizer`), its
        state stacked per run; ``schedule`` a name or a callable of :func:`sims.optim.make_schedule`,
        built for each run from its own ``lr``. The step is the optimizer's own pure function on
        the stacked arrays, elementwise, so each run gets the numbers of its ``train()`` call.
    params0 : None, array (d,) or (R, d)
        Initial parameters (shared, or one row per run) instead of ``init_params`` of each seed,
        as ``train(..., params0=...)``; the mechanisms' own initial draws still come from the seed.
    sampling, mode
        Accepted for a drop-in call, but only their defaults (``"poisson"``, ``"dp"``): anything
        else raises ``ValueError``.
    allow_non_private : bool
        Required for ``clip_norm=None`` or ``noise_multiplier=None``; the runs' privacy reports
        then say ``private: False``, ``epsilon: inf`` and why, as ``train()``'s do.

    Returns
    -------
    list of StackedRunResult
        One per seed, in order: a :class:`sims.train.TrainResult` (params, history, privacy,
        config, steps_done) plus ``diverged_step`` (None, or the 0-based step at which the run
        stopped alone, as :class:`sims.train.TrainingDiverged` would have said) and ``divergence``
        (the message). History keys: ``step, epoch, lr, train_loss, train_accuracy, test_loss,
        test_accuracy, epsilon`` and the means of :data:`STEP_METRICS` since the previous record,
        recorded at the steps ``train()`` records.

    Raises
    ------
    ValueError
        A bad argument (named), or one outside the stacked engine's scope (named, with "use
        sims.train.train").
    """
    args = {name: value for name, value in locals().items() if name not in ("model", "data")}
    return StackedLoop(resolve(model, data, args)).run()
