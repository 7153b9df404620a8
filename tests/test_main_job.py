"""The main job (``python -m sims``) runs end to end in its quick mode and writes every artefact."""
import json

import numpy as np
import pytest

from sims.__main__ import main

EXPERIMENTS = ("accounting_curves", "nsr_vs_k", "convex_bound_vs_steps", "keep_fraction_tradeoff")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    assert main(["reproduce", "--out", str(out), "--quick"]) == 0
    return out


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_theory_checks_write_json_and_png(quick_run, name):
    res = json.loads((quick_run / f"{name}.json").read_text())
    assert res
    png = quick_run / "figures" / f"{name}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_has_a_row_and_a_figure_per_claim(quick_run):
    from sims.claims import VERDICTS, catalog

    claims = catalog.claims("quick")
    report = (quick_run / "report.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == [c.name for c in claims]
    for c in claims:
        stem = quick_run / "figures" / "claims" / c.name.replace(".", "_")
        assert stem.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert stem.with_suffix(".pdf").read_bytes()[:4] == b"%PDF"
    for sid in ("S0", "S1", "S2", "S3", "S4"):
        assert f"figures/{sid}_forest.png" in report
    assert "## Theory checks" in report and "## Privacy audit" in report
    verdicts = json.loads((quick_run / "verdicts.json").read_text())
    assert [v["claim"] for v in verdicts] == [c.name for c in claims]
    for v in verdicts:
        for which in ("fixed", "tuned"):
            assert v[which] is None and v[which + "_reason"] or v[which]["verdict"] in VERDICTS


def test_every_private_arm_spends_the_claimed_epsilon(quick_run):
    verdicts = json.loads((quick_run / "verdicts.json").read_text())
    for v in verdicts:
        for arm in v["arms"].values():
            if arm["epsilon"] is not None:  # calibrated to its target (calibrate_noise: 1e-4 relative)
                assert arm["epsilon"] == pytest.approx(3.0, rel=2e-3), v["claim"]


def test_summary_has_a_line_per_claim_and_theory_check(quick_run):
    from sims.claims import catalog

    summary = (quick_run / "summary.txt").read_text().splitlines()
    assert len(summary) == len(catalog.claims("quick")) + 4
    assert all(("agrees" in s or "holds" in s or "disagrees" in s or "violated" in s)
               for s in summary if s.startswith("[theory]"))


def test_resumes_from_its_store(quick_run, capsys):
    """A second run on the same store trains nothing: every run is read back."""
    import sqlite3

    db = quick_run / "claims.db"
    before = sqlite3.connect(db).execute("select count(*) from attempts").fetchone()[0]
    assert main(["reproduce", "--out", str(quick_run), "--quick", "--no-theory", "--no-audit",
                 "--claims", "zhu."]) == 0
    after = sqlite3.connect(db).execute("select count(*) from attempts").fetchone()[0]
    assert after == before


def test_unknown_claim_name_is_one_clear_error(tmp_path, capsys):
    assert main(["reproduce", "--out", str(tmp_path), "--quick", "--claims", "zhu.nope"]) == 2
    err = capsys.readouterr().err
    assert "claims: 'zhu.nope' matches no claim" in err and "zhu.freeze_70_keeps_dense_accuracy" in err


def test_readme_python_example_runs(capsys):
    """The README's usage example runs as written and spends the epsilon it was calibrated for."""
    import pathlib
    import re

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    first, stacked = re.findall(r"```python\n(.*?)```", readme, re.S)[:2]
    scope = {}
    exec(compile(first, "README.md", "exec"), scope)
    assert scope["res"].privacy["private"] is True
    assert scope["res"].privacy["epsilon"] == pytest.approx(2.0, rel=1e-3)
    assert scope["res"].history["test_accuracy"][-1] > 0.5  # 10 classes: chance is 0.1
    # the stacked example: 8 runs, each the train() call of its seed and step size
    exec(compile(stacked, "README.md", "exec"), scope)
    runs, ds = scope["runs"], scope["ds"]
    assert len(runs) == 8 and all(r.privacy["private"] for r in runs)
    from sims.stacked import chain_for
    from sims.train import train

    ref = train(scope["models"].mlp((64, 64, 10)), ds, mechanism=chain_for("random_freeze", 1.0, 1.0, r_final=0.9),
                lr=0.5, epochs=20, batch_size=64, random_state=1)
    np.testing.assert_allclose(runs[1].params, ref.params, rtol=0, atol=1e-10 * np.max(np.abs(ref.params)))


_PAPERS = ("lin.", "zhu.", "watson.", "datalens.", "adamczewski.")


def _verdict_rows(text):
    """The rows of a verdict table: those whose first cell is a claim name."""
    return [line for line in text.splitlines() if line.startswith("| `") and line[3:].startswith(_PAPERS)]


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_readme_verdict_table_is_the_committed_reports():
    """README shows the verdict table of docs/results/report.md (a default-mode run), row for row."""
    readme = _verdict_rows((ROOT / "README.md").read_text())
    assert len(readme) == 47 and readme == _verdict_rows((ROOT / "docs" / "results" / "report.md").read_text())


@pytest.mark.slow
def test_default_mode_runs_every_claim_with_a_verdict(tmp_path):
    """The main job as README runs it (about 10 minutes on 2 cores): every claim gets a fixed-step
    and a tuned-step verdict, every private arm spends its epsilon, and the verdict table is README's,
    row for row."""
    from sims.claims import VERDICTS, catalog

    assert main(["reproduce", "--out", str(tmp_path), "--no-audit"]) == 0
    assert _verdict_rows((tmp_path / "report.md").read_text()) == _verdict_rows((ROOT / "README.md").read_text())
    verdicts = json.loads((tmp_path / "verdicts.json").read_text())
    assert [v["claim"] for v in verdicts] == [c.name for c in catalog.claims("default")]
    for v in verdicts:
        assert v["fixed"]["verdict"] in VERDICTS and v["tuned"]["verdict"] in VERDICTS, v["claim"]
        assert v["fixed"]["n"] == 12
        for arm in v["arms"].values():
            if arm["epsilon"] is not None:
                assert arm["epsilon"] == pytest.approx(v["epsilon"], rel=1e-6)
