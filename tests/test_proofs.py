"""``python -m proofs`` must pass: every entry behind dptheory holds, and every public closed form has one."""
import functools
import subprocess
import sys

import pytest

from proofs import KINDS, MODULES, coverage, public_closed_forms, run_all


@functools.cache
def _outcomes(module):
    """Each proof module runs once per session; the tests below share its outcomes."""
    return tuple(run_all((module,)))


@pytest.mark.parametrize("module", MODULES)
def test_derivations_pass(module):
    outcomes = _outcomes(module)
    if not outcomes:
        pytest.fail(f"proofs.{module} registered no derivation")
    failed = [(o.name, o.error) for o in outcomes if not o.passed]
    assert not failed, failed
    assert all(o.kind in KINDS for o in outcomes)
    assert all(o.covers for o in outcomes), [o.name for o in outcomes if not o.covers]


def test_every_public_closed_form_has_an_entry():
    table = coverage()
    missing = [name for name, entries in table.items() if not entries]
    assert not missing, missing
    unknown = sorted(set(table) - set(public_closed_forms()))
    assert not unknown, f"entries cover names that are not public dptheory functions: {unknown}"


def test_derived_entries_check_numbers():
    """A derived entry ends by evaluating dptheory: the report shows its numeric points, or it compares them itself."""
    outcomes = [o for m in MODULES for o in _outcomes(m) if o.kind == "derived"]
    shown = [o for o in outcomes if any("numeric points" in t or "relative" in t for t, _ in o.steps)]
    assert len(shown) >= len(outcomes) - 6, sorted({o.name for o in outcomes} - {o.name for o in shown})


def test_compositions_are_in_their_own_module():
    for o in (o for m in MODULES for o in _outcomes(m)):
        assert (o.kind == "composition") == o.module.endswith(".compositions"), o.name


def test_cli_exit_code_and_report(tmp_path):
    report = tmp_path / "proofs.md"
    res = subprocess.run([sys.executable, "-m", "proofs", "--only", "compositions", "--report", str(report)],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert " passed, 0 failed (" in res.stdout
    assert all(f" {k}" in res.stdout.splitlines()[-1] for k in KINDS)
    assert " composition " in res.stdout.splitlines()[1]
    text = report.read_text()
    assert "$$" in text and "Covers: `dptheory." in text


def test_cli_coverage():
    res = subprocess.run([sys.executable, "-m", "proofs", "--coverage"], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.splitlines()[-1].endswith(", 0 missing")
