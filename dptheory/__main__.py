"""``python -m dptheory``: privacy accounting from the command line.

    python -m dptheory epsilon --sampling-rate Q --noise-multiplier S --steps T --delta D [--accountant rdp|pld] [--json]
                               [--keep-fraction F]   (OPTION: amplified clip-then-mask random-k, beside dense)
    python -m dptheory noise   --sampling-rate Q --steps T --epsilon E --delta D [--accountant rdp|pld] [--json]
    python -m dptheory table   [--json]

Bad arguments exit with code 2 and the error message on stderr (no traceback). The accounting
modules are imported when a command runs, not to print ``--help``; ``dptheory/__init__.py`` imports
its submodules lazily, so ``epsilon`` loads ``dptheory.accounting`` (numpy, scipy.special) and, with
``--keep-fraction``, ``dptheory.mask_amplification``, but no theory module (scipy.stats,
scipy.integrate; ``tests/test_cli.py`` checks it).
"""
from __future__ import annotations

import argparse
import json
import math
import sys

#: the accountants (``dptheory.accounting.ACCOUNTANTS``; repeated here so --help needs no import).
ACCOUNTANTS = ("rdp", "pld")

#: the table's settings: MNIST-like batch 256 of 60000 examples, delta = 1e-5.
TABLE_N, TABLE_BATCH, TABLE_DELTA = 60000, 256, 1e-5
TABLE_SIGMAS = (0.8, 1.1, 2.0)
TABLE_EPOCHS = (1, 15, 60)


_EXAMPLES = """examples:
  python -m dptheory epsilon --sampling-rate 0.004267 --noise-multiplier 1.1 --steps 14063 --delta 1e-5
  python -m dptheory noise --sampling-rate 0.004267 --steps 14063 --epsilon 3 --delta 1e-5 --json
  python -m dptheory table
"""
_ACCOUNTANT_HELP = ("one of: rdp (default) = Renyi DP of the Poisson-subsampled Gaussian (Mironov, Talwar & "
                    "Zhang 2019), a rigorous upper bound, converted with Balle et al. 2020; pld = privacy loss "
                    "distributions (dp-accounting, pip install 'dpsparse[pld]'), usually tighter: pessimistic "
                    "discretisation on grids refined from the loss scale until the accuracy target or a cost "
                    "budget; returns min(PLD, RDP), says which, and the accuracy reached (the RDP bound when "
                    "the PLD does not settle monotonely)")


def _common(sp, *, noise: bool) -> None:
    sp.add_argument("--sampling-rate", type=float, required=True, metavar="Q",
                    help="Poisson sampling probability q in (0, 1] (expected batch size / n)")
    if noise:
        sp.add_argument("--noise-multiplier", type=float, required=True, metavar="SIGMA",
                        help="noise std / L2 sensitivity, sigma > 0")
    sp.add_argument("--steps", type=float, required=True, metavar="T",
                    help="number of composed steps T >= 1 (epochs = T q)")
    sp.add_argument("--delta", type=float, required=True, metavar="DELTA", help="target delta in (0, 1)")
    sp.add_argument("--accountant", default="rdp", choices=ACCOUNTANTS, help=_ACCOUNTANT_HELP)
    sp.add_argument("--json", action="store_true", help="print one JSON object instead of a sentence "
                    "(with the PLD accountant it includes pld_gap, the accuracy reached)")


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="python -m dptheory", description="DP-SGD privacy accounting (add/remove "
                                "adjacency, Poisson sampling). Accountants (--accountant): rdp (default, a rigorous "
                                "upper bound) or pld (tighter; needs dp-accounting). 'COMMAND --help' describes "
                                "every option of a command.", epilog=_EXAMPLES, formatter_class=fmt)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("epsilon", help="epsilon of T steps of the Poisson-subsampled Gaussian", epilog=_EXAMPLES,
                       formatter_class=fmt, description="epsilon spent by T steps of DP-SGD at (q, sigma), at delta")
    _common(e, noise=True)
    e.add_argument("--keep-fraction", type=float, default=None, metavar="F",
                   help="OPTION: also print the amplified epsilon of clip-then-mask random-k with k/d = F in (0, 1] "
                        "(a fresh uniform data-independent mask each step, noise on kept coordinates only; "
                        "dptheory.mask_amplification, docs/mask_amplification.md). The dense epsilon stays the "
                        "default and is printed beside it")
    n = sub.add_parser("noise", help="smallest noise multiplier meeting (epsilon, delta)", epilog=_EXAMPLES,
                       formatter_class=fmt, description="smallest sigma with epsilon(q, sigma, T, delta) <= epsilon")
    _common(n, noise=False)
    n.add_argument("--epsilon", type=float, required=True, metavar="EPS", help="target epsilon > 0")
    t = sub.add_parser("table", help="epsilon of standard MNIST-like settings under every accountant",
                       formatter_class=fmt, description="q = 256/60000, delta = 1e-5, sigma in {0.8, 1.1, 2.0}, "
                       "1/15/60 epochs: RDP (classic and Balle et al. conversions, rigorous upper bounds), the "
                       "GDP CLT (an approximation, not a bound) and PLD (pessimistic, an upper bound up to its "
                       "discretisation; the gap between two grids is shown) when dp-accounting is installed")
    t.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def _steps(value: float):
    return int(value) if math.isfinite(value) and float(value).is_integer() else value


def _have_pld() -> bool:
    try:
        import dp_accounting  # noqa: F401
    except ImportError:
        return False
    return True


def table_rows():
    """Rows (sigma, epochs, steps, classic, balle, clt, pld, pld_gap) of the standard table.

    ``pld`` and ``pld_gap`` (:func:`dptheory.accounting.epsilon_pld`: min(PLD, RDP) and its
    estimated accuracy, ``inf`` when the RDP bound was returned) are None without dp-accounting.
    """
    from .accounting import epsilon, epsilon_pld, steps_for_epochs
    from .gdp import epsilon_gdp

    q = TABLE_BATCH / TABLE_N
    pld = _have_pld()
    rows = []
    for sigma in TABLE_SIGMAS:
        for epochs in TABLE_EPOCHS:
            steps = steps_for_epochs(q, epochs)
            classic = epsilon(q, sigma, steps, TABLE_DELTA, conversion="classic")[0]
            balle = epsilon(q, sigma, steps, TABLE_DELTA)[0]
            clt = epsilon_gdp(q, sigma, steps, TABLE_DELTA)
            tight, gap = epsilon_pld(q, sigma, steps, TABLE_DELTA) if pld else (None, None)
            rows.append((sigma, epochs, steps, classic, balle, clt, tight, gap))
    return rows


def _table(as_json: bool) -> str:
    rows = table_rows()
    q = TABLE_BATCH / TABLE_N
    if as_json:
        keys = ("noise_multiplier", "epochs", "steps", "rdp_classic", "rdp_balle", "gdp_clt_approx", "pld",
                "pld_gap")
        return json.dumps({"sampling_rate": q, "delta": TABLE_DELTA,
                           "columns": {"rdp_classic": "upper bound", "rdp_balle": "upper bound",
                                       "gdp_clt_approx": "approximation, not a bound",
                                       "pld": "min(PLD, RDP): an upper bound up to the PLD's discretisation",
                                       "pld_gap": "its estimated accuracy (inf: the RDP bound was returned)"},
                           "rows": [dict(zip(keys, r)) for r in rows]})
    lines = [f"epsilon at delta={TABLE_DELTA:g}, q={TABLE_BATCH}/{TABLE_N} (Poisson sampling)",
             (f"{'sigma':>6} {'epochs':>6} {'steps':>6} {'RDP-classic':>12} {'RDP-Balle':>10} "
              f"{'GDP-CLT*':>9} {'PLD':>8} {'PLD-gap':>8}")]
    for sigma, epochs, steps, classic, balle, clt, tight, gap in rows:
        pld = f"{tight:8.3f} {gap:8.1e}" if tight is not None else f"{'n/a':>8} {'':>8}"
        lines.append(f"{sigma:6.2f} {epochs:6d} {steps:6d} {classic:12.3f} {balle:10.3f} {clt:9.3f} {pld}")
    lines += ["RDP-classic, RDP-Balle: rigorous upper bounds (Mironov 2017 Prop. 3; Balle et al. 2020 Thm 21);",
              "  Balle is tighter. PLD: min(pessimistic PLD, RDP-Balle), an upper bound up to the PLD's",
              "  discretisation; PLD-gap: its estimated accuracy (inf: the PLD did not settle, RDP returned).",
              "* GDP-CLT is an asymptotic approximation (Bu et al. 2020), NOT an upper bound."]
    if not _have_pld():
        lines.append('PLD column needs dp-accounting: pip install "dpsparse[pld]"')
    return "\n".join(lines)


_AMPLIFIED_LABEL = ("clip-then-mask random-k only: fresh uniform data-independent mask each step, noise on the kept "
                    "coordinates only, support released; integer RDP orders, min with dense; docs/mask_amplification.md")


def _pld_fields(info) -> dict:
    """The JSON fields of a PLD result (:class:`dptheory.accounting.PLDInfo`): which bound the
    epsilon is, its accuracy and the PLD's status; none for RDP."""
    if info is None:
        return {}
    return {"pld_gap": info.gap, "pld_bound": info.bound, "pld_status": info.status, "rdp_epsilon": info.rdp}


def _pld_words(info) -> str:
    """One phrase for a PLD result: the bound returned, its accuracy, the PLD's status."""
    if info.bound == "rdp":
        return f"the RDP bound: the PLD was {info.status}"
    return f"PLD, {info.status}, estimated accuracy {info.gap:.2g}; RDP bound {info.rdp:.6g}"


def _epsilon_command(args) -> str:
    """The output of ``python -m dptheory epsilon`` (PLD: which bound it returns, and its accuracy)."""
    from .accounting import epsilon, epsilon_pld

    steps = _steps(args.steps)
    info = None
    if args.accountant == "pld":
        info, order = epsilon_pld(args.sampling_rate, args.noise_multiplier, steps, args.delta).info, None
        eps = info.epsilon
    else:
        eps, order = epsilon(args.sampling_rate, args.noise_multiplier, steps, args.delta)
    amp = None
    if args.keep_fraction is not None:
        from .mask_amplification import epsilon_random_mask

        amp = epsilon_random_mask(args.sampling_rate, args.noise_multiplier, steps, args.delta, args.keep_fraction)
    if args.json:
        extra = _pld_fields(info)
        if amp is not None:
            extra.update({"keep_fraction": args.keep_fraction, "amplified_epsilon": amp[0], "amplified_order": amp[1],
                          "amplified_accounting": _AMPLIFIED_LABEL})
        return json.dumps({"epsilon": eps, "order": order, "delta": args.delta, "sampling_rate": args.sampling_rate,
                           "noise_multiplier": args.noise_multiplier, "steps": steps,
                           "accountant": args.accountant, **extra})
    where = f" (optimal RDP order {order:.4g})" if info is None else f" ({_pld_words(info)})"
    out = (f"epsilon = {eps:.6g} at delta = {args.delta:g}{where} [{args.accountant}; "
           f"q = {args.sampling_rate:g}, sigma = {args.noise_multiplier:g}, steps = {steps}]")
    if amp is not None:
        out += (f"\nOPTION amplified epsilon = {amp[0]:.6g} at k/d = {args.keep_fraction:g} [{_AMPLIFIED_LABEL}; "
                f"the default accounting is the dense epsilon above]")
    return out


def main(argv=None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, message already on stderr)
        return int(e.code or 0)
    try:
        if args.command == "epsilon":
            out = _epsilon_command(args)
        elif args.command == "noise":
            from .accounting import calibrate_noise, epsilon

            sigma = calibrate_noise(args.sampling_rate, _steps(args.steps), args.epsilon, args.delta,
                                    accountant=args.accountant)
            eps, order = epsilon(args.sampling_rate, sigma, _steps(args.steps), args.delta,
                                 accountant=args.accountant)
            info, order = (order, None) if args.accountant == "pld" else (None, order)
            if args.json:
                out = json.dumps({"noise_multiplier": sigma, "epsilon": eps, "order": order,
                                  "delta": args.delta, "sampling_rate": args.sampling_rate,
                                  "steps": _steps(args.steps), "accountant": args.accountant, **_pld_fields(info)})
            else:
                how = "" if info is None else f" ({_pld_words(info)})"
                out = (f"noise_multiplier = {sigma:.6g} gives epsilon = {eps:.6g} at delta = {args.delta:g}{how} "
                       f"[{args.accountant}; q = {args.sampling_rate:g}, steps = {_steps(args.steps)}]")
        else:
            out = _table(args.json)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
