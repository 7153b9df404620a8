"""``python -m dptheory``: privacy accounting from the command line.

    python -m dptheory epsilon --sampling-rate Q --noise-multiplier S --steps T --delta D [--accountant rdp|pld] [--json]
    python -m dptheory noise   --sampling-rate Q --steps T --epsilon E --delta D [--accountant rdp|pld] [--json]
    python -m dptheory table   [--json]

Bad arguments exit with code 2 and the error message on stderr (no traceback).
"""
from __future__ import annotations

import argparse
import json
import math
import sys

from .accounting import ACCOUNTANTS, calibrate_noise, epsilon, steps_for_epochs
from .gdp import epsilon_gdp

#: the table's settings: MNIST-like batch 256 of 60000 examples, delta = 1e-5.
TABLE_N, TABLE_BATCH, TABLE_DELTA = 60000, 256, 1e-5
TABLE_SIGMAS = (0.8, 1.1, 2.0)
TABLE_EPOCHS = (1, 15, 60)


_EXAMPLES = """examples:
  python -m dptheory epsilon --sampling-rate 0.004267 --noise-multiplier 1.1 --steps 14063 --delta 1e-5
  python -m dptheory noise --sampling-rate 0.004267 --steps 14063 --epsilon 3 --delta 1e-5 --json
  python -m dptheory table
"""
_ACCOUNTANT_HELP = ("rdp (default): Renyi DP of the Poisson-subsampled Gaussian (Mironov, Talwar & Zhang 2019), "
                    "an upper bound, converted with Balle et al. 2020; pld: privacy loss distributions "
                    "(dp-accounting, pip install 'dpsparse[pld]'), tighter")


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
    sp.add_argument("--json", action="store_true", help="print one JSON object instead of a sentence")


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="python -m dptheory", description="DP-SGD privacy accounting (add/remove "
                                "adjacency, Poisson sampling)", epilog=_EXAMPLES, formatter_class=fmt)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("epsilon", help="epsilon of T steps of the Poisson-subsampled Gaussian", epilog=_EXAMPLES,
                       formatter_class=fmt, description="epsilon spent by T steps of DP-SGD at (q, sigma), at delta")
    _common(e, noise=True)
    n = sub.add_parser("noise", help="smallest noise multiplier meeting (epsilon, delta)", epilog=_EXAMPLES,
                       formatter_class=fmt, description="smallest sigma with epsilon(q, sigma, T, delta) <= epsilon")
    _common(n, noise=False)
    n.add_argument("--epsilon", type=float, required=True, metavar="EPS", help="target epsilon > 0")
    t = sub.add_parser("table", help="epsilon of standard MNIST-like settings under every accountant",
                       formatter_class=fmt, description="q = 256/60000, delta = 1e-5, sigma in {0.8, 1.1, 2.0}, "
                       "1/15/60 epochs: RDP (classic and Balle et al. conversions, upper bounds), the GDP CLT "
                       "(an approximation, not a bound) and PLD when dp-accounting is installed")
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
    """Rows (sigma, epochs, steps, classic, balle, clt, pld-or-None) of the standard table."""
    q = TABLE_BATCH / TABLE_N
    pld = _have_pld()
    rows = []
    for sigma in TABLE_SIGMAS:
        for epochs in TABLE_EPOCHS:
            steps = steps_for_epochs(q, epochs)
            classic = epsilon(q, sigma, steps, TABLE_DELTA, conversion="classic")[0]
            balle = epsilon(q, sigma, steps, TABLE_DELTA)[0]
            clt = epsilon_gdp(q, sigma, steps, TABLE_DELTA)
            tight = epsilon(q, sigma, steps, TABLE_DELTA, accountant="pld")[0] if pld else None
            rows.append((sigma, epochs, steps, classic, balle, clt, tight))
    return rows


def _table(as_json: bool) -> str:
    rows = table_rows()
    q = TABLE_BATCH / TABLE_N
    if as_json:
        keys = ("noise_multiplier", "epochs", "steps", "rdp_classic", "rdp_balle", "gdp_clt_approx", "pld")
        return json.dumps({"sampling_rate": q, "delta": TABLE_DELTA,
                           "rows": [dict(zip(keys, r)) for r in rows]})
    lines = [f"epsilon at delta={TABLE_DELTA:g}, q={TABLE_BATCH}/{TABLE_N} (Poisson sampling)",
             f"{'sigma':>6} {'epochs':>6} {'steps':>6} {'RDP-classic':>12} {'RDP-Balle':>10} "
             f"{'GDP-CLT*':>9} {'PLD':>8}"]
    for sigma, epochs, steps, classic, balle, clt, tight in rows:
        pld = f"{tight:8.3f}" if tight is not None else f"{'n/a':>8}"
        lines.append(f"{sigma:6.2f} {epochs:6d} {steps:6d} {classic:12.3f} {balle:10.3f} {clt:9.3f} {pld}")
    lines.append("* GDP-CLT is an asymptotic approximation (Bu et al. 2020), NOT an upper bound.")
    if not _have_pld():
        lines.append('PLD column needs dp-accounting: pip install "dpsparse[pld]"')
    return "\n".join(lines)


def main(argv=None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, message already on stderr)
        return int(e.code or 0)
    try:
        if args.command == "epsilon":
            eps, order = epsilon(args.sampling_rate, args.noise_multiplier, _steps(args.steps), args.delta,
                                 accountant=args.accountant)
            if args.json:
                out = json.dumps({"epsilon": eps, "order": order, "delta": args.delta,
                                  "sampling_rate": args.sampling_rate,
                                  "noise_multiplier": args.noise_multiplier,
                                  "steps": _steps(args.steps), "accountant": args.accountant})
            else:
                where = f" (optimal RDP order {order:.4g})" if order is not None else ""
                out = (f"epsilon = {eps:.6g} at delta = {args.delta:g}{where} [{args.accountant}; "
                       f"q = {args.sampling_rate:g}, sigma = {args.noise_multiplier:g}, steps = {_steps(args.steps)}]")
        elif args.command == "noise":
            sigma = calibrate_noise(args.sampling_rate, _steps(args.steps), args.epsilon, args.delta,
                                    accountant=args.accountant)
            eps, order = epsilon(args.sampling_rate, sigma, _steps(args.steps), args.delta,
                                 accountant=args.accountant)
            if args.json:
                out = json.dumps({"noise_multiplier": sigma, "epsilon": eps, "order": order,
                                  "delta": args.delta, "sampling_rate": args.sampling_rate,
                                  "steps": _steps(args.steps), "accountant": args.accountant})
            else:
                out = (f"noise_multiplier = {sigma:.6g} gives epsilon = {eps:.6g} at delta = {args.delta:g} "
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
