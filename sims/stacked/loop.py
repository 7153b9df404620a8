"""The stacked training loop: R DP-SGD runs advanced together, each on its own random streams.

Step ``t`` of every active run ``r`` (Abadi et al. 2016, Alg. 1, as :func:`sims.train.train`):
Poisson batch from the run's sampling stream, stacked backprop, flat clipping by the norm trick,
``u_r = (sum_i clip_C(m_r * g_i) + sigma_r C_r z_r) / B`` with ``z_r`` from the run's noise seed,
optional top-k of ``u_r``, then ``w_r <- w_r - lr_r u_r``. A run whose update, parameters or
recorded loss is not finite, or whose training loss exceeds ``divergence_factor`` times its
initial loss at a record, is finished alone (its result says at which step) and removed from the
stack; the others go on.
"""
from __future__ import annotations

import numpy as np

from dptheory.noise_signal import n_frozen
from sims.mechanisms.freeze import frozen_fraction
from sims.models.dense import init_params
from sims.noise import one_thread_if_small, step_kernel_threads
from sims.rng import derive_seed
from sims.train import init_generators

from . import engine as E
from . import per_example as PE
from .kernels import CONVEX_HEADS, convex_clipped_sums, gather_batches, noisy_releases, norm_quantiles, top_k_rows
from .run import FIXED_MASKS, MASKS, Resolved, epsilon_at, result_of
from .streams import generator_at, noise_seeds, poisson_draws, run_states

__all__ = ["StackedLoop", "STEP_METRICS"]

#: Per-step metrics recorded (means since the previous record), as in ``train()``'s history.
STEP_METRICS = ("kept_fraction", "clipped_fraction", "signal_sq_before_mask", "signal_sq_after_mask", "noise_sq",
                "nsr", "phi", "grad_norm_q10", "grad_norm_q50", "grad_norm_q90", "signal_norm", "noise_norm",
                "update_norm", "batch_size")
_BLOCK = 512  # steps whose PCG64 states are computed at once per run


def _initial_bases(layout, rank, rng) -> list:
    """Low-rank's initial ``Q`` per layer, ``(in, min(rank, in, out))`` standard normals from the
    mechanism-init generator (as ``sims.mechanisms.low_rank``'s ``init``)."""
    sizes = layout.sizes
    return [rng.standard_normal((sizes[l], min(rank, sizes[l], sizes[l + 1]))) for l in range(layout.n_layers)]


def _draw_frozen(rng, d, rate) -> np.ndarray:
    """Random-freeze's draw: ``floor(rate d)`` coordinates without replacement (``rng.choice``)."""
    frozen = np.zeros(d, dtype=bool)
    n = int(n_frozen(rate, d))
    if n:
        frozen[rng.choice(d, size=n, replace=False)] = True
    return frozen


#: Where a mechanism's per-run ``k`` lives in the loop's arrays: ``"k"`` is the top-k of the
#: released update (noisy or clean), ``"rk"`` random-k's subset size, ``"pk"`` per-example top-k's.
_K_KEY = {"random_k": "rk", "top_k_per_example": "pk", "topagg": "vk", "private_top_k": "sk"}


class StackedLoop:
    """State of the active runs (per-run arrays on a leading axis) and their histories."""

    def __init__(self, res: Resolved):
        self.res = res
        R, d = len(res.roots), res.model.n_params
        self.results = [None] * R
        self.hist = [dict() for _ in range(R)]
        self.count = 0
        self.n_epochs = -(-res.total // res.spe)
        P = np.empty((R, d))
        keep = (np.ones((R, d), dtype=bool) if res.mechanism in ("random_freeze", "random_k", "private_top_k", *MASKS)
                else None)
        Q0 = []
        for r, root in enumerate(res.roots):
            params_rng, mech_init_rng = init_generators(root)
            P[r] = init_params(res.model, derive_seed(params_rng)) if res.params0 is None else res.params0[r]
            if res.mechanism == "random_freeze":
                rate = frozen_fraction(float(res.r_final[r]), 0, self.n_epochs, res.ramp)
                keep[r] = ~_draw_frozen(mech_init_rng, d, rate)
            elif res.mechanism in FIXED_MASKS:
                keep[r] = self.fixed_keep(r, P[r], mech_init_rng)
            elif res.mechanism == "low_rank":
                Q0.append(_initial_bases(res.model.layout, res.rank, mech_init_rng))
        # noise std sigma C (sigma C_ref for the unclipped noise-only ablation; 0 without noise)
        scale = np.where(np.isinf(res.clip_norm), res.reference_norm or 0.0, res.clip_norm)
        self.ostate = res.optimizer.init(P)  # arrays (R, d) stacked per run; Adam's step count is shared
        self.a = {"ids": np.arange(R), "P": P, "lr": res.lr.copy(), "C": res.clip_norm.copy(),
                  "std": res.noise_multiplier * scale, "acc": np.zeros((R, len(STEP_METRICS))),
                  "fkey": np.zeros(R, dtype=np.int64)}
        for l, Q in enumerate(zip(*Q0)):  # the low-rank bases, one stacked (R, in, r) array per layer
            self.a[f"Q{l}"] = np.stack(Q)
        if res.mechanism == "topagg":  # noise N(0, sigma^2 k) on the vote sums (norm sqrt(k) per teacher)
            self.a["std"] = res.noise_multiplier * np.sqrt(res.k)
        if res.feedback is not None:  # the error-feedback memory (e, or g of EF21), zero at the start
            self.a["e"] = np.zeros((R, d))
        if keep is not None:
            self.a["keep"] = keep
        self.mask_at = 0  # magnitude_prune(every=N): the step of the last mask
        if res.k is not None:
            self.a[_K_KEY.get(res.mechanism, "k")] = res.k.copy()
        # per-example top-k: each run's own row map (the chain's declared PerExampleMap), by run id
        self.row_maps = ([ch.per_example_maps[0].fn for ch in res.chains] if res.mechanism == "top_k_per_example"
                         else None)
        self.a["loss0"] = (E.evaluate_stacked(res.model, P, res.X, res.y)[0] if res.factor is not None
                           else np.zeros(R))
        self.block = None
        lay = res.model.layout
        # linear / logistic regression: clipped sums straight from the batch indices (kernels.convex_clipped_sums)
        convex = (lay.n_layers == 1 and lay.sizes[1] == 1 and res.model.head in CONVEX_HEADS
                  and res.mechanism not in ("top_k_per_example", "topagg"))
        self.sqx = np.einsum("ij,ij->i", res.X, res.X) if convex else None

    def fixed_keep(self, r: int, params, rng) -> np.ndarray:
        """The keep mask of a :data:`FIXED_MASKS` run: its chain's own ``init`` (the context
        ``train()`` builds), the complement of the chain's frozen mask."""
        from sims.mechanisms import InitContext

        res = self.res
        ch = res.chains[r]
        state = ch.init(InitContext(model=res.model, layout=res.model.layout, params=params.copy(),
                                    total_steps=res.total, steps_per_epoch=res.spe, expected_batch_size=res.B,
                                    public=res.public, rng=rng))
        return ~ch.frozen_mask(state)

    # ------------------------------------------------------------------ bookkeeping
    @property
    def n_active(self) -> int:
        return self.a["ids"].shape[0]

    def drop(self, gone: np.ndarray) -> None:
        """Remove the runs at positions ``gone`` (bool over the active runs) from every stacked array."""
        stay = ~gone
        self.a = {k: v[stay] for k, v in self.a.items()}
        self.ostate = tuple(v[stay] if isinstance(v, np.ndarray) else v for v in self.ostate)
        if self.block is not None:
            self.block = (self.block[0], self.block[1][stay])

    def states(self, t: int) -> np.ndarray:
        """``(R_active, 2, 4)`` PCG64 words of the step generators of step ``t`` of every active run."""
        start = t - t % _BLOCK
        if self.block is None or self.block[0] != start:
            stop = min(start + _BLOCK, self.res.total)
            self.block = (start, np.stack([run_states(self.res.roots[i], stop, start) for i in self.a["ids"]]))
        return self.block[1][:, t - start]

    def finish(self, pos, params, steps_done, diverged_step=None, message="", factor_stop=False) -> None:
        i = int(self.a["ids"][pos])
        hist = {k: np.asarray(v, dtype=np.int64 if k == "step" else np.float64) for k, v in self.hist[i].items()}
        self.results[i] = result_of(self.res, i, np.array(params, copy=True), hist, steps_done, diverged_step,
                                    message, factor_stop)

    # ------------------------------------------------------------------ one step
    def redraw(self, t: int, ST: np.ndarray, seeds: np.ndarray) -> None:
        """Random freeze: at an epoch start, redraw the frozen sets from the mechanism streams (through
        NumPy's own Generator), and take the noise seed from the same stream after the draw."""
        res, a = self.res, self.a
        epoch = t // res.spe
        d = res.model.n_params
        for pos in np.flatnonzero(a["fkey"] != epoch):
            i = int(a["ids"][pos])
            g = generator_at(ST[pos, 1])
            rate = frozen_fraction(float(res.r_final[i]), epoch, self.n_epochs, res.ramp)
            a["keep"][pos] = ~_draw_frozen(g, d, rate)
            seeds[pos] = derive_seed(g)
            a["fkey"][pos] = epoch

    def draw_random_k(self, ST: np.ndarray, seeds: np.ndarray) -> None:
        """Random-k: a fresh uniform k-subset per run from its mechanism stream (NumPy's own
        ``Generator.choice``, as ``sims.mechanisms._util.random_k_mask``), the noise seed after it."""
        a, d = self.a, self.res.model.n_params
        a["keep"][:] = False
        for pos in range(self.n_active):
            g = generator_at(ST[pos, 1])
            a["keep"][pos, g.choice(d, size=int(a["rk"][pos]), replace=False)] = True
            seeds[pos] = derive_seed(g)

    def select_public(self, ST: np.ndarray, seeds: np.ndarray) -> None:
        """Public selection: each run's mask from the public gradient at its current parameters
        (or at random), drawing from its mechanism stream as ``public_select`` does, then the
        noise seed from the same stream after it (:func:`sims.mechanisms.public_selection.selection_mask`)."""
        from sims.mechanisms.public_selection import selection_mask

        res, a = self.res, self.a
        opts = res.options
        for pos in range(self.n_active):
            g = generator_at(ST[pos, 1])
            a["keep"][pos] = selection_mask(res.model.layout, res.model, a["P"][pos], res.public, float(res.fraction[a["ids"][pos]]),
                                            opts.get("criterion", "magnitude"), g, opts.get("public_batch_size"))
            seeds[pos] = derive_seed(g)

    def prune_current(self, t: int) -> None:
        """``magnitude_prune(source="current", every=N)``: every N steps, each run's mask from the
        magnitudes of its current parameters (:func:`sims.mechanisms.pruning.magnitude_mask`)."""
        from sims.mechanisms.pruning import magnitude_mask, mask_due

        res, a = self.res, self.a
        if not mask_due(t, self.mask_at, res.options["every"]):
            return
        for pos in range(self.n_active):
            a["keep"][pos] = magnitude_mask(a["P"][pos], float(res.fraction[a["ids"][pos]]), res.model.layout)
        self.mask_at = t

    def clipped_sums(self, xb, yb, valid, sel=None):
        """``(S (R', d), n_clipped (R',), norms (R', rows), extra)``: masked, clipped per-example sums
        of one chunk of rows of the runs at positions ``sel`` (all active runs when None); ``extra``
        is None, or per-example top-k's ``(before, phi_sum)`` (:meth:`per_example_sums`)."""
        res, a = self.res, self.a
        layout = res.model.layout
        pick = (lambda v: v) if sel is None else (lambda v: v[sel])
        acts, deltas = E.backprop_stacked(res.model, pick(a["P"]), xb, yb, valid)
        positions = np.arange(self.n_active) if sel is None else sel
        if self.row_maps is not None:
            return self.per_example_sums(acts, deltas, valid, positions)
        if res.mechanism == "topagg":
            return self.vote_sums(acts, deltas, valid, positions)
        keep = self.pre_clip_keep()
        keepf = None if keep is None else pick(keep).astype(np.float64)
        nsq = E.sq_norms_stacked(layout, acts, deltas)
        if keepf is not None:
            # Runs that freeze nothing keep the dense norms, as train() does; the masked GEMM per
            # run only for the others (per-run shapes either way, so a run's bits do not depend on
            # the runs stacked with it).
            part = np.flatnonzero(~pick(keep).all(axis=1))
            if part.size:
                nsq[part] = E.masked_sq_norms_stacked(layout, [x[part] for x in acts], [x[part] for x in deltas],
                                                      layout.views(keepf[part]))
        C = pick(a["C"])
        f, norms = E.clip_factors_stacked(nsq, C)
        n_clipped = np.count_nonzero((norms > C[:, None]) & (valid > 0), axis=1)
        S = E.weighted_sum_stacked(layout, acts, deltas, f)
        if keepf is not None:
            S *= keepf
        return S, n_clipped, norms, None

    def pre_clip_keep(self):
        """The bool ``(R', d)`` masks applied to every example's gradient before clipping, or None."""
        a, res = self.a, self.res
        post_clip = (res.mechanism == "random_k" and res.order == "clip_then_mask") or res.mechanism == "private_top_k"
        masked = "keep" in a and not post_clip
        return a["keep"] if masked else None

    def per_example_sums(self, acts, deltas, valid, positions):
        """:func:`per_example.top_k_sums` of the runs at ``positions`` (their own row maps and clip norms)."""
        ids = self.a["ids"][positions]
        return PE.top_k_sums(self.res.model.layout, acts, deltas, valid, [self.row_maps[i] for i in ids],
                             self.a["C"][positions])

    def vote_sums(self, acts, deltas, valid, positions):
        """:func:`per_example.vote_sums` of the runs at ``positions``."""
        opts = self.res.options
        rngs = [self.step_rngs[p] for p in positions] if opts.get("stochastic", False) else None
        return PE.vote_sums(self.res.model.layout, acts, deltas, valid, self.a["vk"][positions], rngs, opts)

    def batch_sums(self, idx, counts):
        """``(S, n_clipped, norms, extra)`` of the step's Poisson batches, in chunks of ``res.rows`` rows
        (``extra``: :meth:`clipped_sums`'s, summed over the chunks).

        Chunk ``c`` holds rows ``[c rows, (c + 1) rows)`` of the runs whose batch reaches it; a run's
        sum is the sum of its chunks' sums, so every GEMM has the shape ``(rows, .)`` and a run's
        arithmetic does not depend on the runs stacked with it (nor on their batch sizes).
        """
        res, rows = self.res, self.res.rows
        if self.sqx is not None:  # a linear model: no gathered batch (see kernels.convex_clipped_sums)
            keep = self.pre_clip_keep()
            S, n_clipped, norms = convex_clipped_sums(res.X, self.sqx, res.y, idx, counts, self.a["P"], self.a["C"],
                                                      keep, bias=res.model.layout.bias, head=res.model.head)
            if keep is not None:
                S *= keep
            return S, n_clipped, norms, None
        n_chunks = max(1, -(-int(counts.max()) // rows))
        norms = np.zeros((self.n_active, n_chunks * rows))
        for c in range(n_chunks):
            lo = c * rows
            sel = None if c == 0 else np.flatnonzero(counts > lo)
            part = counts if sel is None else counts[sel]
            sub = np.ascontiguousarray(idx[:, :rows] if sel is None else idx[sel, lo:lo + rows])
            xb, yb, valid = gather_batches(res.X, res.y, sub, np.minimum(part - lo, rows), rows)
            Sc, nc, nrm, xc = self.clipped_sums(xb, yb, valid, sel)
            if sel is None:
                S, n_clipped, extra = Sc, nc, xc
                norms[:, :rows] = nrm
            else:
                S[sel] += Sc
                n_clipped[sel] += nc
                norms[sel, lo:lo + rows] = nrm
                if extra is not None:
                    if extra[0] is not None:
                        extra[0][sel] += xc[0]
                    extra[1][sel] += xc[1]
        return S, n_clipped, norms, extra

    def compressed(self, V: np.ndarray) -> np.ndarray:
        """The compressor of an error-feedback run applied to a copy of ``V``: top-k per row or low-rank."""
        if "k" in self.a:
            Y = V.copy()
            top_k_rows(Y, self.a["k"])
            return Y
        return self.compress(V)

    def feed_back(self, u: np.ndarray):
        """Error feedback around the compressor, after the noise (:func:`sims.mechanisms.error_feedback`):
        ``"ef"``: ``v = e + u``, release ``C(v)``, ``e <- v - C(v)`` (``phi = ||C(v)||^2 / ||v||^2``);
        ``"ef21"``: ``g <- g + C(u - g)``, release ``g``. Returns ``(release, phi, kept fraction)``,
        the kept fraction being the release's non-zero share, as the transform reports it."""
        a, R = self.a, self.n_active
        if self.res.feedback == "ef":
            v = a["e"] + u
            out = self.compressed(v)
            a["e"] = v - out
            vv, yy = np.einsum("rd,rd->r", v, v), np.einsum("rd,rd->r", out, out)
            phi = np.where(vv > 0, yy / np.where(vv > 0, vv, 1.0), 1.0)
        else:
            a["e"] = a["e"] + self.compressed(u - a["e"])
            out, phi = a["e"].copy(), np.ones(R)
        return out, phi, np.count_nonzero(out, axis=1) / out.shape[1]

    def rates(self, t: int) -> np.ndarray:
        """``lr_t`` of every active run (its own schedule), checked as ``train()`` checks it.

        A rate that is not finite and >= 0 comes from a bad ``schedule`` callable: a ``ValueError``
        for the whole call (an argument error, not a run's divergence). ``train()`` would first
        report a non-finite update of the same step as a divergence."""
        lr = np.array([float(self.res.schedules[i](t)) for i in self.a["ids"]])
        bad = ~(np.isfinite(lr) & (lr >= 0))
        if bad.any():
            raise ValueError(f"lr schedule must give finite rates >= 0, got {lr[bad][0]!r} at step {t}")
        return lr

    def compress(self, U: np.ndarray) -> np.ndarray:
        """Low-rank: every run's update compressed with its warm-started bases, which it updates."""
        a, layout = self.a, self.res.model.layout
        Y, Qs = E.power_compress_stacked(layout, U, [a[f"Q{l}"] for l in range(layout.n_layers)])
        for l, Q in enumerate(Qs):
            a[f"Q{l}"] = Q
        return Y

    def draw(self, t: int, ST: np.ndarray, seeds: np.ndarray) -> None:
        """The mechanism's own draws of step ``t`` from the runs' mechanism streams (masks, and the
        generators of stochastic TopAgg votes), updating the noise seeds that follow them."""
        res = self.res
        if res.mechanism == "random_freeze":
            self.redraw(t, ST, seeds)
        elif res.mechanism == "random_k":
            self.draw_random_k(ST, seeds)
        elif res.mechanism == "public_select":
            self.select_public(ST, seeds)
        elif res.mechanism == "magnitude_prune" and res.options.get("every") is not None:
            self.prune_current(t)
        elif res.mechanism == "private_top_k" or (res.mechanism == "topagg" and res.options.get("stochastic", False)):
            # their draws (Gumbel noise, stochastic votes) come from the mechanism stream after the sums
            self.step_rngs = [generator_at(ST[pos, 1]) for pos in range(self.n_active)]

    def step(self, t: int) -> None:
        """Step ``t`` of every active run (see the module docstring)."""
        res, a = self.res, self.a
        ST = self.states(t)
        idx, counts = poisson_draws(ST[:, 0], np.full(self.n_active, res.q), res.X.shape[0])
        seeds = noise_seeds(ST[:, 1])
        self.draw(t, ST, seeds)
        S, n_clipped, norms, extra = self.batch_sums(idx, counts)
        if res.mechanism == "topagg":
            u, sig, nz, phi, kept = self.vote_release(S, extra, seeds, counts)
            before, div = None, 1.0  # TopAgg's metrics are on the vote scale
        else:
            u, sig, nz, phi, kept, before = self.release(S, extra, seeds, counts)
            div = res.B
        a["lr"] = self.rates(t)
        with np.errstate(over="ignore", invalid="ignore"):
            usq = np.einsum("rd,rd->r", u, u)
            newP, ostate = res.optimizer.step(a["P"], u, self.ostate, a["lr"][:, None])
        bad_u = ~np.isfinite(usq)
        bad_p = ~bad_u & ~np.isfinite(newP).all(axis=1)
        for pos in np.flatnonzero(bad_u | bad_p):
            what = "the released update" if bad_u[pos] else "the parameter vector"
            self.finish(pos, a["P"][pos], t, t, f"training diverged at step {t} (0-based): {what} is not finite "
                        f"(lr={float(a['lr'][pos])!r}); history kept up to the last finite record")
        a["P"], self.ostate = newP, ostate
        if res.mechanism == "top_k_clean":  # the top-k mask acts before the (absent) noise: u is the kept signal
            before, sig = sig, usq * res.B ** 2
        self.accumulate(counts, n_clipped, norms, sig, nz, phi, usq, before, kept, div)
        if (bad_u | bad_p).any():
            self.drop(bad_u | bad_p)
        done = t + 1
        if self.n_active and (done % res.rec == 0 or done == res.total):
            self.record(done, t)

    def release(self, S, extra, seeds, counts):
        """``(u, signal energy, noise energy, phi, kept or None, before or None)``: the noisy release
        of the clipped sums ``S`` and what follows it (compression, top-k, error feedback)."""
        res, a = self.res, self.a
        before = np.einsum("rd,rd->r", S, S) if res.order in ("clip_then_mask", "compress_then_noise") else None
        if extra is not None:  # per-example top-k: the clipped sum of the unmapped rows, and the mean phi
            before = np.einsum("rd,rd->r", extra[0], extra[0])
        if res.order == "compress_then_noise":
            S = self.compress(S)
        if res.mechanism == "private_top_k":
            before, phi, seeds = self.select_private(S)
        u, sig, nz = noisy_releases(S, a.get("keep"), seeds, a["std"], np.full(self.n_active, 1.0 / res.B))
        if res.mechanism == "private_top_k":
            return u, sig, nz, phi, None, before
        if res.feedback is not None:
            u, phi, kept = self.feed_back(u)
            return u, sig, nz, phi, kept, before
        if res.order == "noise_then_compress":
            u = self.compress(u)
        if "k" in a:
            phi = top_k_rows(u, a["k"])
        elif extra is not None:
            phi = np.where(counts > 0, extra[1] / np.maximum(counts, 1), 1.0)  # 1: the metric's default
        else:
            phi = np.ones(self.n_active)
        return u, sig, nz, phi, None, before

    def select_private(self, S):
        """:func:`per_example.select_private` of every active run (its keep mask set in place)."""
        return PE.select_private(S, self.a["sk"], self.a["C"], self.step_rngs, self.res.options["selection_epsilon"],
                                 self.a["keep"])

    def vote_release(self, V, extra, seeds, counts):
        """:func:`per_example.vote_release` of every active run (the noise seeds follow the stochastic
        votes' draws in the mechanism streams, as in ``train()``)."""
        if self.res.options.get("stochastic", False):
            seeds = np.array([derive_seed(g) for g in self.step_rngs], dtype=np.uint64)
        return PE.vote_release(V, extra[1], seeds, self.a["std"], self.res.B, self.res.options, counts)

    def accumulate(self, counts, n_clipped, norms, sig, nz, phi, usq, before=None, kept=None, div=None) -> None:
        """Add the step's metrics (:data:`STEP_METRICS`, those of ``train()``) to the accumulators;
        ``before``: ``||S||^2`` before a post-clip mask (clip-then-mask random-k), else the released
        signal's; energies are of the sums divided by ``div`` (the expected batch size by default;
        1 for TopAgg's votes)."""
        res, a = self.res, self.a
        B, d, R = res.B if div is None else div, res.model.n_params, self.n_active
        signal = sig / B ** 2
        signal_before = signal if before is None else before / B ** 2
        noise = (a["std"] / B) ** 2 * nz
        if kept is None:  # else: error feedback's share of non-zero released coordinates
            kept = (np.count_nonzero(a["keep"], axis=1) / d if "keep" in a
                    else a["k"] / d if "k" in a else np.ones(R))
        safe = np.maximum(counts, 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            cols = [kept, np.where(counts > 0, n_clipped / safe, 0.0), signal_before, signal, noise,
                    np.where(signal > 0, noise / np.where(signal > 0, signal, 1.0), 0.0), phi]
            cols += list(norm_quantiles(norms, counts).T)
            cols += [np.sqrt(np.maximum(signal, 0.0)), np.sqrt(np.maximum(noise, 0.0)), np.sqrt(usq),
                     counts.astype(np.float64)]
        vals = np.stack(cols, axis=1)
        a["acc"] += np.where(np.isfinite(vals), vals, 0.0)
        self.count += 1

    # ------------------------------------------------------------------ records
    def record(self, done: int, t: int) -> None:
        """Evaluate every active run; finish the runs whose record diverged; append the others' rows."""
        res, a = self.res, self.a
        rows = {}
        rows["train_loss"], rows["train_accuracy"] = E.evaluate_stacked(res.model, a["P"], res.X, res.y)
        if res.X_test is not None:
            rows["test_loss"], rows["test_accuracy"] = E.evaluate_stacked(res.model, a["P"], res.X_test, res.y_test)
        bad = ~np.all([np.isfinite(v) for v in rows.values()], axis=0)
        f = res.factor
        stop = np.zeros_like(bad) if f is None else ~bad & (a["loss0"] > 0) & (rows["train_loss"] > f * a["loss0"])
        for pos in np.flatnonzero(bad):
            self.finish(pos, a["P"][pos], t, t, f"training diverged at step {t} (0-based): the recorded loss is not "
                        f"finite (lr={float(a['lr'][pos])!r}); history kept up to the last finite record")
        for pos in np.flatnonzero(stop):
            self.finish(pos, a["P"][pos], t + 1, t, (
                f"training diverged by step {t} (0-based; checked at the records): the training loss "
                f"{rows['train_loss'][pos]:.4g} exceeds divergence_factor = {f:g} times the initial loss "
                f"{a['loss0'][pos]:.4g} (lr={float(a['lr'][pos])!r}); .result holds the parameters after it and the "
                f"history before it"), factor_stop=True)
        means = a["acc"] / self.count
        for pos in np.flatnonzero(~(bad | stop)):
            i = int(a["ids"][pos])
            row = {k: float(means[pos, j]) for j, k in enumerate(STEP_METRICS)}
            row.update({k: float(v[pos]) for k, v in rows.items()})
            row.update(step=done, epoch=done / res.spe, lr=float(a["lr"][pos]), epsilon=epsilon_at(res, i, done))
            for k, v in row.items():
                self.hist[i].setdefault(k, []).append(v)
        a["acc"][:] = 0.0
        self.count = 0
        if (bad | stop).any():
            self.drop(bad | stop)

    def run(self) -> list:
        """Run every step; returns the per-run results in seed order."""
        work = self.n_active * self.res.model.n_params
        # one Numba thread when the work is small or OpenBLAS threads spin between the GEMMs (sims.noise);
        # a linear model's step makes no GEMM (kernels.convex_clipped_sums): only the size decides
        threads = one_thread_if_small(work) if self.sqx is not None else step_kernel_threads(work)
        with threads, np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for t in range(self.res.total):
                if not self.n_active:
                    break
                self.step(t)
        for pos in range(self.n_active):
            self.finish(pos, self.a["P"][pos], self.res.total)
        return list(self.results)
