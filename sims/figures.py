"""Matplotlib figures from the stored results of :mod:`sims.experiments`.

Every figure puts the theory (lines) and the simulation (points with error bars of +-2 standard
errors) on the same axes. Each function takes the experiment's result ``dict`` and a path, writes
a PNG and returns the path. The Agg backend is used, so no display is needed.
"""
from __future__ import annotations

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_accounting", "plot_nsr_vs_k", "plot_convex_bound", "plot_tradeoff", "plot_sweep",
           "OKABE_ITO", "mean_ci", "save"]


def save(fig, path) -> str:
    """Write ``fig`` as ``path`` with suffix ``.png`` (120 dpi) and the same name with ``.pdf``
    (parent directories made), close it, and return the PNG's path."""
    from pathlib import Path

    png = Path(path).with_suffix(".png")
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    fig.savefig(png.with_suffix(".pdf"))
    plt.close(fig)
    return str(png)


def plot_accounting(res, path):
    """Epsilon vs epochs: RDP (classic, Balle), PLD (tight) and the GDP CLT approximation (dashed)."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ep = res["epochs"]
    ax.plot(ep, res["rdp_classic"], "o-", label="RDP, classic conversion")
    ax.plot(ep, res["rdp_balle"], "s-", label="RDP, Balle et al. 2020 (ours)")
    if res["pld"]:
        ax.plot(ep, res["pld"], "^-", label="PLD (dp-accounting, tight)")
    ax.plot(ep, res["gdp_clt"], "k--", label="GDP CLT (approximation, not a bound)")
    ax.set_xscale("log")
    ax.set_xlabel("epochs")
    ax.set_ylabel(r"$\varepsilon$ at $\delta$=%g" % res["delta"])
    ax.set_title(r"DP-SGD, q=%.4g, $\sigma$=%g" % (res["sampling_rate"], res["noise_multiplier"]))
    ax.legend(fontsize=8)
    return save(fig, path)


def plot_nsr_vs_k(res, path):
    """Retained signal and NSR of random-k vs k: clip-then-mask and mask-then-clip, theory vs measured."""
    k = np.asarray(res["k"], dtype=float)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    styles = {"clip_then_mask": ("C0", "clip then mask"), "mask_then_clip": ("C3", "mask then clip")}
    for order, (color, label) in styles.items():
        r = res[order]
        axes[0].errorbar(k, r["signal"], yerr=2 * np.asarray(r["signal_se"]), fmt="o", color=color,
                         label=f"{label}: simulation")
        axes[0].plot(k, r["signal_theory"], "-", color=color, label=f"{label}: theory")
        axes[1].errorbar(k, r["nsr"], yerr=2 * np.asarray(r["nsr_se"]), fmt="o", color=color,
                         label=f"{label}: simulation")
        axes[1].plot(k, r["nsr_theory"], "-", color=color, label=f"{label}: theory")
    axes[1].axhline(res["nsr_dense_theory"], color="gray", ls=":", label="dense (theory)")
    for ax, ylab in zip(axes, [r"signal energy $\|u_{signal}\|^2$", "noise-to-signal ratio"]):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"kept coordinates k (d={res['d']})")
        ax.set_ylabel(ylab)
        ax.legend(fontsize=7)
    fig.suptitle(f"random-k, all-clipped regime (C={res['clip_norm']}, B={res['batch_size']}, "
                 f"sigma={res['noise_multiplier']})", fontsize=10)
    return save(fig, path)


def plot_convex_bound(res, path):
    """Measured mean suboptimality of the averaged iterate vs the convex bound, over T."""
    T = np.asarray(res["steps"], dtype=float)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.errorbar(T, res["measured"], yerr=2 * np.asarray(res["measured_se"]), fmt="o",
                label=f"simulation (mean of {res['n_replicates']} runs)")
    ax.plot(T, res["bound"], "-", label=r"bound $R\sqrt{G^2+N}/\sqrt{T}$")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(T)
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("steps T")
    ax.set_ylabel(r"$E F(\bar x_T) - F^*$")
    ax.set_title("projected DP-SGD, logistic regression")
    ax.legend(fontsize=8)
    return save(fig, path)


def plot_tradeoff(res, path):
    """Test accuracy vs kept fraction rho (mask then clip) with the theory's bound and rho*."""
    rho = np.asarray(res["fractions"], dtype=float)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.errorbar(rho, res["acc_mean"], yerr=2 * np.asarray(res["acc_se"]), fmt="o-",
                label=f"test accuracy, lr={res['lrs'][0]:g}")
    if len(res.get("lrs", ())) > 1:
        ax.errorbar(rho * 1.02, res["acc_tuned"], yerr=2 * np.asarray(res["acc_tuned_se"]), fmt="s--", color="C2",
                    label="test accuracy, lr tuned per rho")
    ax.axvline(res["rho_star_theory"], color="C3", ls="--", label=r"theory $\rho^*$ (no assumption)")
    if "rho_star_theory_spread_out" in res:
        ax.axvline(res["rho_star_theory_spread_out"], color="C1", ls="-.",
                   label=r"$\rho^*$ if $\|m\odot g_i\| = \sqrt{\rho}\,\|g_i\|$")
    ax.set_xscale("log")
    ax.set_xlabel(r"kept fraction $\rho = k/d$")
    ax.set_ylabel("test accuracy")
    ax2 = ax.twinx()
    ax2.plot(rho, res["bound"], "C3:", label=r"bound $a/\rho+b$ (no assumption)")
    if "bound_spread_out" in res:
        ax2.plot(rho, res["bound_spread_out"], "C1:", label=r"bound $a/\sqrt{\rho}+b\sqrt{\rho}$ (spread out)")
    ax2.set_ylabel("trade-off bound (theory)")
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
    ax.legend(lines, labels, fontsize=7, loc="lower left")
    ax.set_title(r"digits MLP, $\varepsilon$=%g, $\sigma$=%.3g" % (res["epsilon"], res["noise_multiplier"]))
    return save(fig, path)


#: Okabe & Ito's colour-blind-safe palette (the lines of :func:`plot_sweep` and of the claim figures).
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")


def mean_ci(values, level=0.95):
    """``(mean, half-width)`` of the two-sided Student-t interval of the mean of ``values`` at
    ``level``; the half-width is NaN for fewer than two values, or when a value is not finite (no
    interval, rather than a made-up one)."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if v.size < 2 or not np.all(np.isfinite(v)):
        return (float(np.mean(v)) if v.size else float("nan")), float("nan")
    return float(v.mean()), float(stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))


def plot_sweep(rows, *, x, line, metric, path, logx=False):
    """A stored sweep: ``metric`` against the column ``x``, one line per value of ``line`` (or one
    line), the mean over the rows of each point (the seeds) with its 95 % t-interval as a band."""
    groups = {}
    for r in rows:
        groups.setdefault(None if line is None else repr(r[line]), {}).setdefault(r[x], []).append(r[metric])
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, (key, pts) in enumerate(sorted(groups.items(), key=lambda kv: str(kv[0]))):
        xs = sorted(pts)
        stats_ = [mean_ci(pts[v]) for v in xs]
        m = np.array([s[0] for s in stats_])
        h = np.array([s[1] for s in stats_])
        n = min(len(pts[v]) for v in xs)
        color = OKABE_ITO[i % len(OKABE_ITO)]
        label = f"{line} = {key}" if line is not None else metric
        ax.plot(xs, m, "o-", color=color, label=f"{label} (n = {n})")
        ax.fill_between(xs, m - h, m + h, color=color, alpha=0.2, linewidth=0)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(f"{metric} (mean, 95 % CI over seeds)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
