"""``python -m sims``: verbs, the run verb, and one-line errors with exit code 2 for bad paths."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sims.cli import VERBS, main


def test_help_lists_every_verb(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(v in out for v in VERBS) and "--out" in out


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_verb_has_help_with_an_example_or_usage(capsys, verb):
    assert main([verb, "--help"]) == 0
    assert f"python -m sims {verb}" in capsys.readouterr().out


def test_run_verb_prints_the_summary_of_a_config(capsys, tmp_path):
    cfg = tmp_path / "r.toml"
    cfg.write_text('[model]\nhidden = [8]\n[privacy]\nepsilon = 3.0\n[training]\nsteps = 5\n')
    assert main(["run", str(cfg), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["steps"] == 5 and abs(rec["epsilon"] - 3.0) < 1e-5 and 0 <= rec["test_accuracy"] <= 1


@pytest.mark.parametrize("argv, message", [
    (["run", "missing.toml"], "config 'missing.toml' does not exist"),
    (["--out", "README.md", "--quick"], "--out 'README.md' is a file"),
    (["audit", "--out", "README.md", "--quick"], "--out 'README.md' is a file"),
])
def test_bad_paths_are_one_line_and_exit_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_bad_config_names_the_key_from_the_command_line(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[[mechanism]]\nname = "random_k"\nk = 0\n[[mechanism]]\nname = "clip"\nclip_norm = 1.0\n'
                   '[[mechanism]]\nname = "gaussian_noise"\n')
    p = subprocess.run([sys.executable, "-m", "sims", "run", str(cfg)], capture_output=True, text=True)
    assert p.returncode == 2 and "mechanism[0].k must be an integer" in p.stderr and "Traceback" not in p.stderr


def _sweep_file(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('seeds = [0, 1]\n[base]\nmodel.hidden = [8]\nprivacy.epsilon = 2.0\ntraining.steps = 4\n'
                 'mechanism = [{ name = "random_freeze", r_final = 0.5 }, { name = "clip", clip_norm = 1.0 }, '
                 '{ name = "gaussian_noise" }]\n[grid]\n"mechanism[0].r_final" = [0.3, 0.9]\n')
    return f


def test_sweep_results_figure_round_trip(capsys, tmp_path):
    from sims import config, store, sweep_spec

    f, db = _sweep_file(tmp_path), tmp_path / "s.db"
    assert main(["sweep", str(f), "--db", str(db), "--serial"]) == 0
    assert "4 of 4 runs done, 0 failed" in capsys.readouterr().out
    rows = store.load(db)
    assert sorted((r["mechanism[0].r_final"], r["training.seed"]) for r in rows) == [(0.3, 0), (0.3, 1), (0.9, 0), (0.9, 1)]
    # every stored record is the record of the config run directly (no wall time in it)
    direct = config.sweep_run(**sweep_spec.load(f)[0])
    first = next(r for r in rows if r["_hash"] == direct["id"])
    assert first["test_accuracy"] == direct["test_accuracy"] and first["epsilon"] == direct["epsilon"]
    # a second sweep runs nothing new
    assert main(["sweep", str(f), "--db", str(db), "--serial"]) == 0
    assert all(r["_attempts"] == 1 for r in store.load(db))
    capsys.readouterr()
    assert main(["results", str(db), "--where", "training.seed=1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["mechanism[0].r_final", "test_accuracy"] and len(out) == 3  # seed fixed by --where
    assert main(["results", str(db), "--csv", str(tmp_path / "s.csv")]) == 0
    assert (tmp_path / "s.csv").read_text().count("\n") == 5
    png = tmp_path / "f.png"
    assert main(["figure", str(db), "--x", "mechanism[0].r_final", "--out", str(png)]) == 0
    assert png.stat().st_size > 1000


@pytest.mark.parametrize("argv, message", [
    (["sweep", "missing.toml"], "sweep file 'missing.toml' does not exist"),
    (["results", "missing.db"], "store 'missing.db' does not exist"),
    (["figure", "missing.db", "--x", "optimizer.lr"], "store 'missing.db' does not exist"),
])
def test_store_verbs_bad_paths(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_figure_names_a_missing_column(capsys, tmp_path):
    f, db = _sweep_file(tmp_path), tmp_path / "s.db"
    assert main(["sweep", str(f), "--db", str(db), "--serial"]) == 0
    assert main(["figure", str(db), "--x", "optimizer.lrr"]) == 2
    assert "column 'optimizer.lrr' is not in the store" in capsys.readouterr().err


def test_run_with_db_stores_once(capsys, tmp_path):
    from sims import store

    cfg = tmp_path / "r.toml"
    cfg.write_text('[model]\nhidden = [8]\n[training]\nsteps = 3\n')
    db = tmp_path / "r.db"
    for _ in range(2):
        assert main(["run", str(cfg), "--db", str(db)]) == 0
    rows = store.load(db)
    assert len(rows) == 1 and rows[0]["_attempts"] == 1 and rows[0]["steps"] == 3


def test_run_summary_of_a_non_private_and_of_a_shuffled_run(capsys, tmp_path):
    no_noise = tmp_path / "np.toml"
    no_noise.write_text('[model]\nhidden = [8]\n[[mechanism]]\nname = "clip"\nclip_norm = 1.0\n'
                        '[privacy]\nallow_non_private = true\n[training]\nsteps = 2\n')
    assert main(["run", str(no_noise)]) == 0
    assert "[NOT PRIVATE]" in capsys.readouterr().out
    assert main(["run", str(no_noise), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)  # valid JSON: no bare Infinity
    assert rec["epsilon"] == "inf" and rec["noise_multiplier"] is None and rec["private"] is False
    shuffled = tmp_path / "sh.toml"
    shuffled.write_text('[model]\nhidden = [8]\n[training]\nsteps = 2\nsampling = "shuffle"\n')
    assert main(["run", str(shuffled)]) == 0
    assert "epsilon NOT valid" in capsys.readouterr().out
