"""Figures of claim results: one per claim, a forest plot per paper, and the papers' classic views.

Every figure has labelled axes with units, 95 % confidence intervals as bars or bands, and the
Okabe-Ito colour-blind-safe palette (``sims.figures.OKABE_ITO``); each is written as PNG and PDF. Intervals of arm means are
Student-t intervals over the seeds; intervals of effects are the claim's own
(:func:`sims.claims.verdict`).
"""
from __future__ import annotations


import numpy as np

from ..figures import OKABE_ITO as PALETTE
from ..figures import mean_ci, save

__all__ = ["claim_figure", "forest_figure", "utility_curves", "width_scaling", "ablation_figure",
           "sparsity_curves", "bits_figure"]

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def claim_figure(result, path) -> str:
    """Per-arm mean test accuracy with 95 % CIs, at the fixed step and at the tuned step."""
    plt = _plt()
    arms = list(result.arms.values())
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.45 * len(arms)))
    for j, (which, marker) in enumerate((("fixed", "o"), ("tuned", "s"))):
        for i, a in enumerate(arms):
            vals = getattr(a, which)
            if vals is None or not np.all(np.isfinite(vals)):
                continue
            m, h = mean_ci(vals)
            lr = a.fixed_lr if which == "fixed" else a.tuned_lr
            ax.errorbar(m, i + 0.15 * (j - 0.5), xerr=h, fmt=marker, color=PALETTE[j], capsize=3,
                        label=f"{which} step" if i == 0 else None)
            ax.annotate(f"lr {lr:g}", (m, i + 0.15 * (j - 0.5)), textcoords="offset points", xytext=(6, 2), fontsize=7)
    ax.set_yticks(range(len(arms)), [a.label for a in arms])
    ax.invert_yaxis()
    ax.set_xlabel(f"{result.claim.metric.replace('_', ' ')} (fraction correct; mean, 95 % CI over seeds)")
    eps = result.epsilon
    ax.set_title(f"{result.claim.name}" + (f"  (epsilon {eps:.3g})" if eps is not None else ""), fontsize=9)
    ax.legend(fontsize=8, loc="best")
    ax.grid(axis="x", alpha=0.3)
    return save(fig, path)


def forest_figure(results, path, title) -> str:
    """The effect of every claim in ``results`` with its interval, fixed and tuned step; the claimed
    direction as a shaded side, equivalence margins as dotted lines."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 1.0 + 0.38 * len(results)))
    for i, r in enumerate(results):
        for j, (v, marker) in enumerate(((r.fixed, "o"), (r.tuned, "s"))):
            if v is None:
                continue
            y = i + 0.18 * (j - 0.5)
            ax.plot([v.ci_low, v.ci_high], [y, y], color=PALETTE[j], lw=2)
            ax.plot(v.effect, y, marker, color=PALETTE[j], label=("fixed step", "tuned step")[j] if i == 0 else None)
        if r.claim.direction == "equivalent":
            m = r.claim.min_effect
            ax.plot([-m, -m], [i - 0.4, i + 0.4], ":", color="grey")
            ax.plot([m, m], [i - 0.4, i + 0.4], ":", color="grey")
    ax.axvline(0.0, color="black", lw=0.8)
    ax.set_yticks(range(len(results)), [r.claim.name.partition(".")[2] or r.claim.name for r in results], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("effect (accuracy difference; relative gap reduction for gap claims)\n95 % CI; 90 % for "
                  "equivalence claims, whose margins are dotted")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="best")
    ax.grid(axis="x", alpha=0.3)
    return save(fig, path)


def _band(ax, x, runs, color, label, marker="o"):
    stats = [mean_ci(v) for v in runs]
    m, h = np.array([s[0] for s in stats]), np.array([s[1] for s in stats])
    ax.plot(x, m, marker=marker, color=color, label=label)
    ax.fill_between(x, m - h, m + h, color=color, alpha=0.2)


def utility_curves(series, path, *, which="fixed", title="") -> str:
    """Test accuracy against epsilon per mechanism: ``series`` maps a label to ``[(epsilon,
    per-seed values), ...]``; a non-private reference may be given as ``{label: values}`` under the
    key ``"_nonprivate"``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.6, 4.2))
    ref = series.get("_nonprivate")
    for i, (label, pts) in enumerate((k, v) for k, v in series.items() if k != "_nonprivate"):
        pts = sorted(pts)
        _band(ax, [p[0] for p in pts], [p[1] for p in pts], PALETTE[i % len(PALETTE)], label)
    if ref is not None:
        ax.axhline(mean_ci(ref)[0], color="black", ls="--", lw=1, label="dense SGD, no DP")
    ax.set_xscale("log")
    eps = sorted({p[0] for k, pts in series.items() if k != "_nonprivate" for p in pts})
    ax.set_xticks(eps, [f"{e:g}" for e in eps])
    ax.minorticks_off()
    ax.set_xlabel("epsilon (delta = 1e-5), log scale")
    ax.set_ylabel(f"test accuracy ({which} step; mean, 95 % CI band)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(alpha=0.3)
    return save(fig, path)


def width_scaling(widths, gains, path, *, title="") -> str:
    """The per-seed gain (treatment minus control) against the hidden width, per reading:
    ``gains`` maps ``"fixed step"`` / ``"tuned step"`` to a list of per-seed arrays, one per width."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for i, (label, runs) in enumerate(gains.items()):
        _band(ax, widths, runs, PALETTE[i], label, marker="os"[i % 2])
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(widths), [str(w) for w in widths])
    ax.minorticks_off()
    ax.set_xlabel("hidden units (log scale)")
    ax.set_ylabel("accuracy gain over dense\n(mean, 95 % CI band)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save(fig, path)


def ablation_figure(groups, path, *, title="") -> str:
    """Grouped bars: ``groups`` maps a setting (e.g. "clip + noise") to ``{arm label: per-seed
    values}``; bars are means with 95 % CIs."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    labels = sorted({a for g in groups.values() for a in g}, key=lambda a: list(groups.values())[0].get(a) is None)
    width = 0.8 / max(len(labels), 1)
    for j, arm in enumerate(labels):
        xs, ms, hs = [], [], []
        for i, g in enumerate(groups.values()):
            if arm in g:
                m, h = mean_ci(g[arm])
                xs.append(i + (j - (len(labels) - 1) / 2) * width)
                ms.append(m)
                hs.append(h)
        ax.bar(xs, ms, width, yerr=hs, capsize=3, color=PALETTE[j % len(PALETTE)], label=arm)
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_ylabel("test accuracy (fixed step; mean, 95 % CI)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return save(fig, path)


def sparsity_curves(panels, path, *, title="") -> str:
    """Test accuracy against the kept fraction, one line per epsilon, one panel per mechanism:
    ``panels`` maps a mechanism to ``{epsilon: [(kept fraction, per-seed values), ...]}``."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), sharey=True, squeeze=False)
    for ax, (mech, lines) in zip(axes[0], panels.items()):
        for i, (eps, pts) in enumerate(sorted(lines.items())):
            pts = sorted(pts)
            _band(ax, [p[0] for p in pts], [p[1] for p in pts], PALETTE[i % len(PALETTE)], f"epsilon {eps:g}")
        ax.set_xscale("log")
        xs = sorted({p[0] for pts in lines.values() for p in pts})
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.minorticks_off()
        ax.set_xlabel("kept fraction of the coordinates (log scale)")
        ax.set_title(mech, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (fixed step; mean, 95 % CI band)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    return save(fig, path)


#: one marker per mechanism family of :func:`bits_figure` (colours: the palette in the same order)
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def bits_figure(points, families, path, *, title="") -> str:
    """Test accuracy against the bits of one step's update (log scale): ``points`` is a list of
    ``(family, private, bits, per-seed values)``; ``families`` fixes each family's colour and marker
    (palette order). Means with 95 % CIs; filled markers private, open ones non-private. Points of equal
    bits are spread sideways by factors of 1.06 around their x (a dodge, so that their bars do not hide
    each other)."""
    plt = _plt()
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(7.8, 4.6))
    used, count, seen = [], {}, {}
    for p in points:
        count[p[2]] = count.get(p[2], 0) + 1
    for family, private, bits, vals in points:
        i = families.index(family)
        j = seen[bits] = seen.get(bits, -1) + 1
        x = bits * 1.06 ** (j - (count[bits] - 1) / 2)
        m, h = mean_ci(vals)
        color = PALETTE[i % len(PALETTE)]
        ax.errorbar(x, m, yerr=h if np.isfinite(h) else None, fmt=_MARKERS[i % len(_MARKERS)], color=color,
                    mfc=color if private else "white", mec=color, ms=7, capsize=3, alpha=0.85)
        if family not in used:
            used.append(family)
    handles = [Line2D([], [], ls="", marker=_MARKERS[families.index(f) % len(_MARKERS)],
                      color=PALETTE[families.index(f) % len(PALETTE)], ms=7, label=f) for f in families if f in used]
    handles += [Line2D([], [], ls="", marker="o", color="grey", ms=7, label="private (filled)"),
                Line2D([], [], ls="", marker="o", color="grey", mfc="white", ms=7, label="no DP (open)")]
    ax.set_xscale("log")
    ax.set_xlabel("bits of one step's update (dptheory.communication; log scale)")
    ax.set_ylabel("test accuracy (fixed step; mean, 95 % CI)")
    ax.set_title(title, fontsize=9)
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(alpha=0.3, which="both")
    return save(fig, path)
