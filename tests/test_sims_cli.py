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
