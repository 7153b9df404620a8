"""The headline experiments of the main job: theory and simulation side by side.

Each function runs one experiment in seconds to a minute on a laptop CPU and returns a plain
``dict`` of lists / floats (JSON-serialisable, so the main job can store it and
:mod:`sims.figures` can draw it later without re-running anything):

* :func:`accounting_curves` -- epsilon vs steps for the RDP (classic and Balle et al. 2020
  conversions), the GDP central-limit approximation and, when available, the PLD accountant.
* :func:`nsr_vs_k` -- one-step noise-to-signal ratio of random-k sparsification, clip-then-mask and
  mask-then-clip, measured on an MLP batch and compared with ``dptheory.noise_signal``.
* :func:`convex_bound_vs_steps` -- mean suboptimality of projected DP-SGD on logistic regression over
  many replicates against the averaged-iterate bound of ``dptheory.convergence``.
* :func:`keep_fraction_tradeoff` -- test accuracy of mask-then-clip random sparsification (the random
  freeze mechanism) against the kept fraction rho, with the theory's optimum rho*.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

import dptheory
from dptheory import convergence as conv
from dptheory import noise_signal as ns
from dptheory.validation import check_int

from . import data as sdata
from . import mechanisms as mech
from . import models as M
from .measure import mean_se
from .replicate import full_loss, replicate_dpsgd
from .step import dpsgd_step
from .train import train

__all__ = ["accounting_curves", "nsr_vs_k", "convex_bound_vs_steps", "keep_fraction_tradeoff",
           "digits_mlp_setup"]


def accounting_curves(*, sampling_rate=256 / 60000, noise_multiplier=1.1, delta=1e-5, max_epochs=60,
                      n_points=12, with_pld=True):
    """Epsilon spent after ``T`` steps of DP-SGD (Poisson rate q, multiplier sigma) under four accountants.

    RDP with the classic conversion (Mironov 2017) and with Balle et al. 2020 (Thm 21), the GDP CLT
    approximation (Bu, Dong, Long & Su 2020: not a bound) and, if ``dp_accounting`` is importable,
    its PLD accountant (tight). Returns steps and the four epsilon curves.
    """
    epochs = np.unique(np.geomspace(1, max_epochs, n_points).round().astype(int))
    steps = [dptheory.steps_for_epochs(sampling_rate, int(e)) for e in epochs]
    out = {"sampling_rate": sampling_rate, "noise_multiplier": noise_multiplier, "delta": delta,
           "epochs": epochs.tolist(), "steps": steps, "rdp_balle": [], "rdp_classic": [], "gdp_clt": [], "pld": []}
    orders = dptheory.DEFAULT_ORDERS
    for T in steps:
        out["rdp_balle"].append(dptheory.epsilon(sampling_rate, noise_multiplier, T, delta)[0])
        rdp = T * dptheory.rdp_subsampled_gaussian(orders, sampling_rate, noise_multiplier)
        out["rdp_classic"].append(float(dptheory.epsilon_from_rdp_classic(orders, rdp, delta)[0]))
        out["gdp_clt"].append(dptheory.epsilon_gdp(sampling_rate, noise_multiplier, T, delta))
    if with_pld:
        try:
            out["pld"] = [dptheory.epsilon(sampling_rate, noise_multiplier, T, delta, accountant="pld")[0]
                          for T in steps]
        except ImportError:
            out["pld"] = []
    return out


def digits_mlp_setup(hidden=64, random_state=0, public_fraction=0.1, validation_fraction=0.2):
    """Digits split into private train / private validation / public / test, and a 64-``hidden``-10 MLP.

    The public split (``public_fraction`` of the training rows) is carved off first and the features
    are standardised with ITS statistics only, so pre-processing reads no private row. A further
    ``validation_fraction`` of the private training rows is held out (``ds.X_val``, ``ds.y_val``;
    :func:`sims.data.split_validation`) to choose step sizes; it is never trained on and the reported accuracies are
    on the test split. (Choosing hyper-parameters on private validation data has its own privacy
    cost, not included in the reported epsilon; Papernot & Steinke 2022.)
    """
    ds = sdata.split_public(sdata.load_digits(random_state=random_state), public_fraction,
                            random_state=random_state)
    ds = sdata.standardize(ds, fit_on="public")
    ds = sdata.split_validation(ds, validation_fraction, random_state=np.random.default_rng([random_state, 1]))
    model = M.mlp((ds.X_train.shape[1], hidden, ds.n_classes), activation="relu")
    return ds, model


def nsr_vs_k(*, n_k=9, clip_norm=0.05, noise_multiplier=1.0, batch_size=64, repeats=200, random_state=0):
    """Measured one-step signal, noise and NSR of random-k against the closed forms, for k from d/64 to d.

    On one fixed mini-batch of the digits MLP (at initialisation) and a clip norm far below every
    per-example gradient norm (the all-clipped regime of docs/theory.md §2), the chain
    ``random_k(k, order) -> clip -> gaussian_noise`` is stepped ``repeats`` times with fresh masks and
    noise. Reported per k: mean and standard error of the retained signal energy
    ``||u_signal||^2`` and of the noise energy, the ratio of means (NSR), and the theory:
    clip-then-mask ``(k/d)||g_bar||^2`` with NSR equal to dense; mask-then-clip signal flat
    ``~||g_bar||^2`` with NSR ``~ rho * NSR_dense``.
    """
    ds, model = digits_mlp_setup(random_state=random_state)
    rng = np.random.default_rng(random_state)
    params = M.init_params(model, rng)
    idx = rng.choice(ds.X_train.shape[0], size=batch_size, replace=False)
    bp = M.backprop(model, params, ds.X_train[idx], ds.y_train[idx])
    d = model.layout.n_params
    ks = np.unique(np.geomspace(max(1, d // 64), d, n_k).round().astype(int))
    norms = np.sqrt(M.sq_norms(bp).sum(axis=1))
    dense_sum, _, _ = M.clipped_grad_sum(bp, clip_norm)
    dense_signal = float(np.dot(dense_sum, dense_sum)) / batch_size ** 2
    out = {"d": d, "batch_size": batch_size, "clip_norm": clip_norm, "noise_multiplier": noise_multiplier,
           "min_example_norm": float(norms.min()), "dense_signal_sq": dense_signal,
           "nsr_dense_theory": float(ns.nsr_dense(d, noise_multiplier, clip_norm, batch_size, dense_signal)),
           "k": ks.tolist()}
    for order in ("clip_then_mask", "mask_then_clip"):
        rec = {"signal": [], "signal_se": [], "noise": [], "noise_se": [], "nsr": [], "nsr_se": [],
               "signal_theory": [], "nsr_theory": []}
        for k in ks:
            rk = mech.random_k(int(k), order=order)
            steps_ = (rk, mech.clip(clip_norm)) if order == "mask_then_clip" else (mech.clip(clip_norm), rk)
            ch = mech.chain(*steps_, mech.gaussian_noise(noise_multiplier))
            step_rng = np.random.default_rng([random_state, int(k), order == "mask_then_clip"])
            state = ch.init(mech.InitContext(model=model, layout=model.layout, params=params, total_steps=repeats,
                                             steps_per_epoch=repeats, expected_batch_size=float(batch_size),
                                             rng=step_rng))
            sig, noi = np.empty(repeats), np.empty(repeats)
            for r in range(repeats):
                ctx = mech.StepContext(model=model, layout=model.layout, step=r, epoch=0, params=params, bp=bp,
                                       expected_batch_size=float(batch_size), rng=step_rng)
                _, state, m = dpsgd_step(ch, state, ctx)
                sig[r], noi[r] = m["signal_sq_after_mask"], m["noise_sq"]
            (ms, se_s), (mn, se_n) = mean_se(sig), mean_se(noi)
            rec["signal"].append(ms)
            rec["signal_se"].append(se_s)
            rec["noise"].append(mn)
            rec["noise_se"].append(se_n)
            rec["nsr"].append(mn / ms)
            rec["nsr_se"].append(mn / ms * np.hypot(se_s / ms, se_n / mn))  # delta method
            if order == "clip_then_mask":
                rec["signal_theory"].append(float(ns.signal_random_k(int(k), d, dense_signal)))
                rec["nsr_theory"].append(float(ns.nsr_random_k(int(k), d, noise_multiplier, clip_norm, batch_size,
                                                               dense_signal)))
            else:
                rec["signal_theory"].append(float(ns.signal_mask_then_clip(dense_signal)))
                rec["nsr_theory"].append(float(ns.nsr_mask_then_clip(int(k), d, noise_multiplier, clip_norm,
                                                                     batch_size, dense_signal)))
        out[order] = {key: [float(v) for v in val] for key, val in rec.items()}
    return out


def _logistic_problem(n=2000, d=10, random_state=0):
    """A logistic problem with label noise (finite minimiser) and per-example gradient norms <= G."""
    ds = sdata.make_logistic(n, d, margin=0.0, label_noise=0.1, test_size=0.25, random_state=random_state)
    X = ds.X_train / np.sqrt(d)  # rows of norm ~1
    G = float(np.sqrt((np.einsum("ij,ij->i", X, X) + 1.0).max()))  # ||(sigmoid - y) [x, 1]|| <= ||[x, 1]||
    return X, ds.y_train.astype(np.float64), G


def _constrained_minimum(X, y, radius):
    """``min F`` over the ball ``||theta|| <= radius`` (theta = [w, b]) by SLSQP on the exact logistic loss."""
    def f(th):
        return float(full_loss(X, y, th[None, :], model="logistic")[0])

    def grad(th):
        z = X @ th[:-1] + th[-1]
        r = 1.0 / (1.0 + np.exp(-z)) - y
        return np.concatenate([X.T @ r, [r.sum()]]) / X.shape[0]

    cons = {"type": "ineq", "fun": lambda th: radius ** 2 - th @ th, "jac": lambda th: -2 * th}
    res = minimize(f, np.zeros(X.shape[1] + 1), jac=grad, constraints=[cons], method="SLSQP",
                   options={"ftol": 1e-14, "maxiter": 500})
    return float(res.fun), res.x


def convex_bound_vs_steps(*, steps_grid=(25, 50, 100, 200, 400, 800), n_replicates=200, sampling_rate=0.05,
                          noise_multiplier=1.0, radius=2.0, random_state=0):
    """Projected DP-SGD on logistic regression, clip inactive (C = G), optimal constant step per T.

    For each T: ``eta* = R/sqrt(T (G'^2 + N))`` with ``N = d sigma^2 C^2 / B^2`` and
    ``G'^2 = G^2 (1 + (1 - q)/B)`` (the second moment of the Poisson mini-batch sum divided by the
    expected batch size B = qn), then the mean over replicates of ``F(x_bar_T) - F*`` with its
    standard error, next to ``conv.convex_bound`` at that step. ``R`` bounds ``||x0 - x*||``
    (x0 = 0, projection radius R). ``replicate_dpsgd`` averages ``x_1..x_T`` while the bound is for
    ``x_0..x_{T-1}``; by convexity the difference is at most ``(F(x_T) - F(x_0))/T``, which is negative
    here (training decreases F), so the comparison is conservative. The rigorous version, with the
    correction and a stated false-failure probability, is tests/test_sim_vs_theory_convergence.py.
    """
    check_int("n_replicates", n_replicates, low=2)
    X, y, G = _logistic_problem(random_state=random_state)
    n, d = X.shape[0], X.shape[1] + 1
    B = sampling_rate * n
    N = d * noise_multiplier ** 2 * G ** 2 / B ** 2
    G_eff = G * np.sqrt(1.0 + (1.0 - sampling_rate) / B)
    f_star, _ = _constrained_minimum(X, y, radius)
    out = {"steps": list(steps_grid), "measured": [], "measured_se": [], "bound": [], "lr": [],
           "G": G, "noise_energy": N, "radius": radius, "f_star": f_star, "n_replicates": n_replicates}
    for T in steps_grid:
        lr = float(conv.convex_optimal_lr(radius, G_eff, T, N))
        res = replicate_dpsgd(X, y, model="logistic", n_replicates=n_replicates, steps=T,
                              sampling_rate=sampling_rate, clip_norm=G, noise_multiplier=noise_multiplier, lr=lr,
                              project_radius=radius, random_state=random_state * 1000 + T)
        gap = res.avg_losses - f_star
        out["measured"].append(float(gap.mean()))
        out["measured_se"].append(float(gap.std(ddof=1) / np.sqrt(n_replicates)))
        out["bound"].append(float(conv.convex_bound(radius, G_eff, T, lr, N)))
        out["lr"].append(lr)
    return out


def _accuracy_runs(make_chain, ds, model, *, epochs, batch_size, lr, seeds, **train_kw):
    """Validation and test accuracy of one configuration, per seed."""
    val, test = [], []
    for seed in seeds:
        res = train(model, ds, epochs=epochs, batch_size=batch_size, mechanism=make_chain(), lr=lr,
                    random_state=seed, **train_kw)
        val.append(float(M.accuracy(model, res.params, ds.X_val, ds.y_val)))
        test.append(float(M.accuracy(model, res.params, ds.X_test, ds.y_test)))
    return val, test, res


def _lr_sweep(make_chain, ds, model, lrs, **kw):
    """For each step size in ``lrs``: mean validation accuracy, and mean / standard error of the test accuracy."""
    val_means, means, ses, eps = [], [], [], None
    for lr in lrs:
        val, test, res = _accuracy_runs(make_chain, ds, model, lr=lr, **kw)
        val_means.append(float(np.mean(val)))
        means.append(float(np.mean(test)))
        ses.append(float(np.std(test, ddof=1) / np.sqrt(len(test))) if len(test) > 1 else 0.0)
        eps = float(res.privacy["epsilon"])
    return val_means, means, ses, eps


def _private_digits(epsilon, delta, epochs, batch_size, random_state):
    """Digits MLP setup and the noise multiplier that spends (epsilon, delta) in ``epochs`` Poisson epochs."""
    ds, model = digits_mlp_setup(random_state=random_state)
    q = batch_size / ds.X_train.shape[0]
    steps = dptheory.steps_for_epochs(q, epochs)
    return ds, model, steps, dptheory.calibrate_noise(q, steps, epsilon, delta)


def _record_sweep(out, val, test, se):
    out["acc_val_grid"].append(val)
    out["acc"].append(test)
    out["acc_se_grid"].append(se)


def _tuned(out, lrs):
    """Add the fixed-step reading (``lrs[0]``) and the tuned reading: the step with the best VALIDATION
    accuracy, and the TEST accuracy at that step (so the selection does not see the test split)."""
    best = np.asarray(out["acc_val_grid"]).argmax(axis=1)  # (n_settings,)
    out["acc_mean"] = [row[0] for row in out["acc"]]
    out["acc_se"] = [row[0] for row in out["acc_se_grid"]]
    out["acc_tuned"] = [row[b] for row, b in zip(out["acc"], best)]
    out["acc_tuned_se"] = [row[b] for row, b in zip(out["acc_se_grid"], best)]
    out["lr_tuned"] = [float(lrs[b]) for b in best]
    return out


def keep_fraction_tradeoff(*, fractions=(0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0), lrs=(0.5, 0.125, 0.25, 1.0, 2.0),
                           epsilon=2.0, delta=1e-5, epochs=20, batch_size=64, clip_norm=1.0, seeds=(0, 1, 2),
                           random_state=0):
    """Test accuracy of mask-then-clip random sparsification against the kept fraction rho at fixed epsilon.

    The mask is redrawn every step (``random_k(order="mask_then_clip")``, as in the random-freeze code:
    mask before clipping, noise on kept coordinates, no rescaling), so every rho spends exactly the
    same privacy (data-independent mask). Two readings per rho: at the fixed step size ``lrs[0]``
    (the setting of the paper's claim), and at the best step size of the grid ``lrs`` (the open
    question of docs/sources.md §S1: does the gain survive re-tuning the learning rate?).

    The theory's trade-off bound ``a/sqrt(rho) + b sqrt(rho)`` (docs/theory.md §3.3,
    ``dptheory.noise_signal.tradeoff_coefficients``) is evaluated at ``lrs[0]`` with
    ``DeltaF = log(10)`` (cross-entropy at a uniform prediction) and an assumed smoothness ``L = 1``;
    its minimiser rho* is reported beside the measured best rho.
    """
    ds, model, steps, sigma = _private_digits(epsilon, delta, epochs, batch_size, random_state)
    d = model.layout.n_params
    out = {"fractions": list(fractions), "lrs": list(lrs), "epsilon": epsilon, "delta": delta,
           "noise_multiplier": sigma, "d": d, "steps": steps, "acc": [], "acc_se_grid": [], "acc_val_grid": []}
    for rho in fractions:
        k = max(1, int(round(rho * d)))
        val, test, se, _ = _lr_sweep(lambda: mech.chain(mech.random_k(k, order="mask_then_clip"),
                                                        mech.clip(clip_norm), mech.gaussian_noise(sigma)),
                                     ds, model, lrs, epochs=epochs, batch_size=batch_size, seeds=seeds, delta=delta)
        _record_sweep(out, val, test, se)
    _tuned(out, lrs)
    a, b = ns.tradeoff_coefficients(np.log(10.0), 1.0, lrs[0], clip_norm, steps, d, sigma, batch_size)
    kept = [max(1, int(round(rho * d))) / d for rho in fractions]
    for spread, key in (("worst_case", ""), ("spread_out", "_spread_out")):
        out["bound" + key] = [float(ns.tradeoff_bound(r, a, b, spread=spread)) for r in kept]
        out["rho_star_theory" + key] = float(ns.optimal_keep_fraction(d, sigma, batch_size, np.log(10.0), 1.0,
                                                                      lrs[0], clip_norm, steps, spread=spread))
    # the best rho is chosen on VALIDATION accuracy too; test accuracy is only reported
    v = np.asarray(out["acc_val_grid"])                      # (n_fractions, n_lrs)
    i_fixed = int(v[:, 0].argmax())
    i_tuned = int(v.max(axis=1).argmax())
    out["rho_best_measured"], out["acc_at_best"] = float(fractions[i_fixed]), out["acc_mean"][i_fixed]
    out["rho_best_tuned"], out["acc_tuned_at_best"] = float(fractions[i_tuned]), out["acc_tuned"][i_tuned]
    return out
