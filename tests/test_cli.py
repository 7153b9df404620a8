"""Tests of ``python -m dptheory`` (in-process through main(), plus one real subprocess)."""
import json
import pathlib
import subprocess
import sys

import pytest

from dptheory import calibrate_noise, epsilon
from dptheory.__main__ import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_epsilon_json_and_plain(capsys):
    args = ["epsilon", "--sampling-rate", "0.01", "--noise-multiplier", "1.1", "--steps", "1000", "--delta", "1e-5"]
    code, out, _ = run(capsys, *args, "--json")
    assert code == 0
    data = json.loads(out)
    eps, order = epsilon(0.01, 1.1, 1000, 1e-5)
    assert data["epsilon"] == eps and data["order"] == order
    code, out, _ = run(capsys, *args)
    assert code == 0 and out.count("\n") == 1 and f"{eps:.6g}" in out


def test_epsilon_pld(capsys):
    code, out, _ = run(capsys, "epsilon", "--sampling-rate", "0.01", "--noise-multiplier", "1.1",
                       "--steps", "100", "--delta", "1e-5", "--accountant", "pld", "--json")
    data = json.loads(out)
    assert code == 0 and data["order"] is None and 0 < data["epsilon"] < epsilon(0.01, 1.1, 100, 1e-5)[0]
    assert data["pld_bound"] == "pld" and data["pld_status"] == "settled" and data["rdp_epsilon"] > data["epsilon"]
    assert 0 < data["pld_gap"] < 0.01 * data["epsilon"]
    code, out, _ = run(capsys, "epsilon", "--sampling-rate", "0.01", "--noise-multiplier", "1.1",
                       "--steps", "100", "--delta", "1e-5", "--accountant", "pld")
    assert code == 0 and "PLD, settled, estimated accuracy" in out and "RDP bound" in out


def test_noise_pld_reports_which_bound(capsys):
    code, out, _ = run(capsys, "noise", "--sampling-rate", "0.01", "--steps", "100", "--epsilon", "2",
                       "--delta", "1e-5", "--accountant", "pld", "--json")
    data = json.loads(out)
    assert code == 0 and data["order"] is None and data["pld_bound"] in ("pld", "rdp") and data["epsilon"] <= 2.0
    code, out, _ = run(capsys, "noise", "--sampling-rate", "0.01", "--steps", "100", "--epsilon", "2",
                       "--delta", "1e-5", "--accountant", "pld")
    assert code == 0 and "RDP bound" in out


def test_noise(capsys):
    code, out, _ = run(capsys, "noise", "--sampling-rate", "0.01", "--steps", "1000", "--epsilon", "2",
                       "--delta", "1e-5", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["noise_multiplier"] == calibrate_noise(0.01, 1000, 2.0, 1e-5)
    assert data["epsilon"] <= 2.0


def test_table(capsys):
    code, out, _ = run(capsys, "table")
    assert code == 0
    assert "approximation" in out and "RDP-Balle" in out and "PLD" in out
    assert len([ln for ln in out.splitlines() if ln.strip().startswith(("0.80", "1.10", "2.00"))]) == 9
    code, out, _ = run(capsys, "table", "--json")
    rows = json.loads(out)["rows"]
    assert len(rows) == 9
    for r in rows:  # true inequalities: tight <= Balle < classic
        assert r["pld"] <= r["rdp_balle"] * 1.001 and r["rdp_balle"] < r["rdp_classic"]


@pytest.mark.parametrize("argv,name", [
    (["epsilon", "--sampling-rate", "2", "--noise-multiplier", "1", "--steps", "10", "--delta", "1e-5"], "sampling_rate"),
    (["epsilon", "--sampling-rate", "0.1", "--noise-multiplier", "0", "--steps", "10", "--delta", "1e-5"], "noise_multiplier"),
    (["epsilon", "--sampling-rate", "0.1", "--noise-multiplier", "1", "--steps", "1.5", "--delta", "1e-5"], "steps"),
    (["epsilon", "--sampling-rate", "0.1", "--noise-multiplier", "1", "--steps", "10", "--delta", "1e-5",
      "--accountant", "x"], "accountant"),
    (["noise", "--sampling-rate", "0.1", "--steps", "10", "--epsilon", "-1", "--delta", "1e-5"], "epsilon"),
])
def test_bad_arguments_exit_2(capsys, argv, name):
    code, out, err = run(capsys, *argv)
    assert code == 2 and name in err and "Traceback" not in err and out == ""


def test_subprocess_exit_codes():
    ok = subprocess.run([sys.executable, "-m", "dptheory", "epsilon", "--sampling-rate", "0.01",
                         "--noise-multiplier", "1", "--steps", "10", "--delta", "1e-5", "--json"],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "epsilon" in json.loads(ok.stdout)
    bad = subprocess.run([sys.executable, "-m", "dptheory", "epsilon", "--sampling-rate", "0",
                          "--noise-multiplier", "1", "--steps", "10", "--delta", "1e-5"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "sampling_rate" in bad.stderr and "Traceback" not in bad.stderr


_HEAVY = ("scipy.stats", "scipy.integrate")  # what the theory modules (clipping, noise_signal) import


def _modules_after(code):
    """The sys.modules of a fresh interpreter (run from the repository root) after ``code``."""
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         cwd=pathlib.Path(__file__).resolve().parents[1])
    return set(json.loads(res.stdout.splitlines()[-1]))


def test_import_dptheory_is_lazy():
    """``import dptheory`` loads no submodule and no scipy (PEP 562 module __getattr__, issue 14)."""
    mods = _modules_after("import dptheory")
    assert not [m for m in mods if m.startswith("dptheory.")], sorted(m for m in mods if m.startswith("dptheory"))
    assert not [m for m in mods if m == "scipy" or m.startswith("scipy.")]


def test_cli_epsilon_skips_the_theory_modules():
    """``python -m dptheory epsilon ...`` (run as -m runs it, through runpy) imports the accounting, not
    scipy.stats / scipy.integrate or the theory modules; --keep-fraction adds mask_amplification only."""
    argv = ["epsilon", "--sampling-rate", "0.01", "--noise-multiplier", "1.1", "--steps", "100", "--delta", "1e-5"]
    for extra, want in (([], {"dptheory.accounting", "dptheory.validation"}),
                        (["--keep-fraction", "0.1"], {"dptheory.accounting", "dptheory.validation",
                                                      "dptheory.mask_amplification"})):
        mods = _modules_after(f"import runpy, sys\nsys.argv = ['dptheory', *{argv + extra!r}]\n"
                              "try:\n    runpy.run_module('dptheory', run_name='__main__', alter_sys=True)\n"
                              "except SystemExit as e:\n    assert not e.code, e.code")
        assert {m for m in mods if m.startswith("dptheory.")} == want
        assert not [m for m in mods if m.startswith(_HEAVY)], sorted(m for m in mods if m.startswith(_HEAVY))
