"""``report.md``: the verdict table of every claim, a section per paper with its figures, accuracy
against bits per step for every arm (:mod:`sims.claims.communication`), the theory checks and the
privacy audit.

Columns of the verdict table: the claim, its source, the effect with its 95 % interval and the
number of seeds (fixed step), the fixed-step verdict, the same at the tuned step (with the chosen
step sizes in the per-paper sections), and the epsilon of the claim's private arms ("-" for a
claim between non-private ablations). An inconclusive verdict says how many seeds would resolve it.
"""
from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np

from .. import figures as sf
from . import communication as cc
from . import figures as cf
from .catalog import PAPERS

__all__ = ["verdict_cell", "verdict_table", "paper_figures", "bits_section", "write_report"]

_TITLES = {"S0": "Lin: compression under DP", "S1": "Zhu & Blaschko: random freeze",
           "S2": "Watson et al.: clipping, noise and pruning", "S3": "DataLens: TopAgg",
           "S4": "Adamczewski & Park: pruning from public data"}


def paper_of(claim) -> str:
    """The source id (``docs/sources.md``) a claim's ``source`` starts with, e.g. ``"S1"``."""
    return claim.source.partition(":")[0].strip()


def _sentence(claim) -> str:
    return claim.source.partition(":")[2].strip() or claim.source


def _summary_of(v) -> str:
    """A verdict's line without its leading claim name."""
    return v.line().partition(": ")[2]


def verdict_cell(v, reason: str) -> str:
    """``"supported"``, ``"inconclusive (~N seeds)"``, or the reason there is no verdict."""
    if v is None:
        return f"- ({reason})"
    more = f" (~{v.seeds_needed} seeds)" if v.verdict == "inconclusive" and v.seeds_needed else ""
    return f"**{v.verdict}**{more}" if v.verdict in ("supported", "equivalent") else f"{v.verdict}{more}"


def _effect(v) -> str:
    return "-" if v is None else f"{v.effect:+.3f} [{v.ci_low:+.3f}, {v.ci_high:+.3f}]"


def verdict_table(results) -> str:
    """The Markdown verdict table (module docstring)."""
    rows = ["| claim | source | effect, fixed step [CI] | n | verdict, fixed step | effect, tuned step "
            "[CI] | verdict, tuned step | epsilon |", "|---|---|---:|---:|---|---:|---|---:|"]
    for r in results:
        src = paper_of(r.claim)
        eps = "-" if r.epsilon is None else f"{r.epsilon:.3g}"
        rows.append(f"| `{r.claim.name}` | {src} | {_effect(r.fixed)} | {r.claim.n_seeds} | "
                    f"{verdict_cell(r.fixed, r.fixed_reason)} | {_effect(r.tuned)} | "
                    f"{verdict_cell(r.tuned, r.tuned_reason)} | {eps} |")
    return "\n".join(rows) + "\n"


def _by_name(results) -> dict:
    return {r.claim.name: r for r in results}


def _lin_curves(named, figdir) -> list:
    from .lin import COMPRESSORS, slug

    out = []
    for which in ("fixed", "tuned"):
        series, ref = {}, None
        for name in COMPRESSORS:
            for key, r in named.items():
                if key.startswith(f"lin.{slug(name)}_reduces_privacy_gap_eps"):
                    eps = float(key.rsplit("eps", 1)[1])
                    series.setdefault(name, []).append((eps, getattr(r.arms["treatment"], which)))
                    series.setdefault("dense DP-SGD", []).append((eps, getattr(r.arms["control"], which)))
                    ref = getattr(r.arms["control_ref"], which)
        series = {k: list({e: v for e, v in pts}.items()) for k, pts in series.items()}
        if len(next(iter(series.values()), [])) >= 2 and all(v is not None for p in series.values() for _, v in p):
            series["_nonprivate"] = ref
            out.append(cf.utility_curves(series, figdir / f"lin_privacy_utility_{which}", which=which,
                                         title=f"Privacy-utility curves per compressor ({which} step)"))
    return out


def _lin_sparsity(named, figdir) -> list:
    """Accuracy against the kept fraction per epsilon for top-k and random-k (dense = fraction 1)."""
    panels = {}
    for mech in ("top_k", "random_k"):
        lines = {}
        for key, r in named.items():
            for pct in ("1pct", "10pct"):
                if key.startswith(f"lin.{mech}_{pct}_reduces_privacy_gap_eps"):
                    eps = float(key.rsplit("eps", 1)[1])
                    pts = lines.setdefault(eps, {})
                    pts[float(pct[:-3]) / 100] = r.arms["treatment"].fixed
                    pts[1.0] = r.arms["control"].fixed
        if lines and all(len(p) == 3 for p in lines.values()):
            panels[mech.replace("_", "-")] = {e: list(p.items()) for e, p in lines.items()}
    if not panels:
        return []
    return [cf.sparsity_curves(panels, figdir / "lin_accuracy_vs_sparsity",
                               title="Test accuracy against the kept fraction, per epsilon (1 = dense DP-SGD)")]


def _zhu_width(named, figdir) -> list:
    rows = sorted((int(k.rsplit("width", 1)[1]), r) for k, r in named.items() if k.startswith("zhu.freeze_gain_width"))
    if len(rows) < 2:
        return []
    gains = {}
    for which in ("fixed", "tuned"):
        if all(getattr(r.arms["treatment"], which) is not None for _, r in rows):
            gains[f"{which} step"] = [np.asarray(getattr(r.arms["treatment"], which)) -
                                      np.asarray(getattr(r.arms["control"], which)) for _, r in rows]
    return [cf.width_scaling([w for w, _ in rows], gains, figdir / "zhu_width_scaling",
                             title="Random freeze 0.9 minus dense DP-SGD, against width (epsilon 3)")]


def _ablation(named, figdir) -> list:
    keys = {"clip + noise (DP, epsilon 3)": "zhu.freeze_90_keeps_dense_accuracy",
            "clipping only": "zhu.freeze_no_gain_clip_only", "noise only": "zhu.freeze_no_gain_noise_only"}
    if not all(k in named for k in keys.values()):
        return []
    groups = {g: {"dense": named[k].arms["control"].fixed, "random freeze 0.9": named[k].arms["treatment"].fixed}
              for g, k in keys.items()}
    return [cf.ablation_figure(groups, figdir / "zhu_ablation",
                               title="The freeze trade-off with clipping and noise, and each alone")]


def paper_figures(results, figdir) -> dict:
    """``{source id: [figure paths]}``: a forest plot per paper and its classic views."""
    figdir = Path(figdir)
    named = _by_name(results)
    out = {}
    for sid in PAPERS:
        mine = [r for r in results if paper_of(r.claim) == sid]
        if not mine:
            continue
        paths = [cf.forest_figure(mine, figdir / f"{sid}_forest", f"{_TITLES[sid]}: effects (95 % CI)")]
        if sid == "S0":
            paths += _lin_curves(named, figdir) + _lin_sparsity(named, figdir)
        if sid == "S1":
            paths += _zhu_width(named, figdir) + _ablation(named, figdir)
        out[sid] = paths
    return out


def _arm_lines(r) -> list:
    """One line per arm: mean test accuracy with its 95 % half-width at the fixed step, the mean at
    the tuned step (flagged when it is an end of the grid: the best step may lie beyond it)."""
    lines = []
    for a in r.arms.values():
        m, h = sf.mean_ci(a.fixed)
        grid = r.claim.lr_grid[a.role]
        tuned = ""
        if a.tuned_lr is not None:
            edge = " (end of the grid)" if len(grid) > 1 and a.tuned_lr in (grid[0], grid[-1]) else ""
            tuned = f"; tuned lr {a.tuned_lr:g}{edge}: {sf.mean_ci(a.tuned)[0]:.3f}"
        div = f"; {a.diverged} diverged" if a.diverged else ""
        lines.append(f"  - {a.label}: lr {a.fixed_lr:g}: {m:.3f} ± {h:.3f}{tuned}{div}")
    return lines


def _paper_section(sid, mine, paths, out_dir) -> list:
    lines = [f"### {sid}: {_TITLES[sid]}", ""]
    for r in mine:
        lines.append(f"- `{r.claim.name}`: {_sentence(r.claim)}. {r.claim.describe()}.")
        for which, v, why in (("Fixed", r.fixed, r.fixed_reason), ("Tuned", r.tuned, r.tuned_reason)):
            lines.append(f"  {which} step: {_summary_of(v) if v is not None else 'no verdict: ' + why}.")
        lines += _arm_lines(r)
        lines += [f"  - note: {n}" for n in r.claim.notes]
    lines.append("")
    lines += [f"![{Path(p).stem}]({Path(p).relative_to(out_dir).as_posix()})" for p in paths]
    return lines + [""]


def bits_section(results, figdir, out_dir) -> list:
    """The section "Accuracy against bits per step" (:mod:`sims.claims.communication`) and its
    figure ``figdir/accuracy_vs_bits`` (only arms with a cost and every seed finite)."""
    costs = cc.arm_costs(results)
    pts = [(c.family, c.private, c.bits, c.values) for c in costs
           if c.bits is not None and np.all(np.isfinite(np.asarray(c.values, dtype=float)))]
    fig = cf.bits_figure(pts, cc.FAMILIES, Path(figdir) / "accuracy_vs_bits",
                         title="Test accuracy against the bits of one step's update, every arm") if pts else None
    return cc.section(costs, fig, out_dir)


def _theory_section(checks, figures, out_dir) -> list:
    lines = ["## Theory checks", "", "Closed forms of `dptheory` against the simulator, each with a verdict from the "
             "rule in `sims.claims.theory_checks`.", "", "| check | verdict | detail |", "|---|---|---|"]
    lines += [f"| {c} | **{v}** | {d} |" for c, v, d in checks]
    lines.append("")
    lines += [f"![{Path(p).stem}]({Path(p).relative_to(out_dir).as_posix()})" for p in figures]
    return lines + [""]


def write_report(out_dir, results, *, mode, wall_seconds, theory=None, audit=None, command="", runs="") -> Path:
    """Write ``out_dir/report.md`` and the figures under ``out_dir/figures``; returns the report's path.

    ``theory``: ``(checks, figure paths)`` from :mod:`sims.claims.theory_checks`, or None;
    ``audit``: the Markdown of ``sims.audit.audit_section``, or None; ``runs``: a line on where the
    runs came from (trained now or read back from the store).
    """
    import os

    out_dir = Path(out_dir)
    figdir = out_dir / "figures"
    for r in results:
        cf.claim_figure(r, figdir / "claims" / r.claim.name.replace(".", "_"))
    per_paper = paper_figures(results, figdir)
    eps = sorted({round(r.epsilon, 6) for r in results if r.epsilon is not None})
    deltas = sorted({r.delta for r in results if r.delta is not None})
    fractions = sorted({a["data"].get("validation_fraction") for r in results for a in r.claim.arms.values()} - {None})
    lines = ["# Claims of the source papers: verdicts", "",
             f"- generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `{command}` "
             f"(mode `{mode}`) in {wall_seconds / 60:.1f} min",
             f"- machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
             f"{platform.system()} {platform.release()}",
             *([f"- {runs}"] if runs else []),
             f"- epsilons of the private arms: {', '.join(f'{e:g}' for e in eps) or '-'} (delta "
             f"{', '.join(f'{d:g}' for d in deltas) or '-'}); each private arm is calibrated with "
             f"`dptheory.calibrate_noise`, and the arms of a claim spend the same (epsilon, delta)",
             f"- the tuned-step verdicts choose each arm's step size on a private validation split "
             f"({', '.join(f'{100 * f:g} %' for f in fractions)} of the training rows) over the first n seeds and "
             f"evaluate it on n fresh seeds; the choice is a release the stated epsilon does not include (Papernot "
             f"& Steinke 2022). The test split is never used to choose.",
             "- a verdict follows `sims.claims.verdict` (docs/claims.md): supported / contradicted / equivalent / "
             "inconclusive from the 95 % interval (the 90 % interval of two one-sided tests for equivalence "
             "claims). Each claim is decided at its own level: among claims whose effect is truly 0, about 1 in 40 "
             "is called supported, so one or two of this many directional verdicts may be wrong by chance.", "",
             "## Verdicts", "", verdict_table(results), "## Claims by paper", ""]
    for sid, paths in per_paper.items():
        mine = [r for r in results if paper_of(r.claim) == sid]
        lines += _paper_section(sid, mine, paths, out_dir)
    lines += ["Per-claim figures (arm means with 95 % CIs at both steps): `figures/claims/`.", ""]
    lines += bits_section(results, figdir, out_dir)
    if theory is not None:
        lines += _theory_section(*theory, out_dir)
    if audit is not None:
        lines += [audit]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
