"""Run configs: validation that names the key, normalisation, identity, and runs equal to train()."""
from __future__ import annotations

import glob
import math

import numpy as np
import pytest

import dptheory
import sims.mechanisms as mech
from sims import config, data, models
from sims.train import train

_CLIP = {"name": "clip", "clip_norm": 1.0}
_NOISE = {"name": "gaussian_noise"}

BAD = [
    ({"dataa": {}}, r"config\.dataa is not a known key"),
    ({"data": {"nme": "digits"}}, r"data\.nme is not a known key"),
    ({"data": {"name": "cifar"}}, r"data\.name must be one of"),
    ({"data": {"name": "mixture"}}, r"data\.n is required"),
    ({"data": {"public_fraction": 1.5}}, r"data\.public_fraction must be in"),
    ({"data": {"public_shift": -1}}, r"data\.public_shift must be in"),
    ({"data": {"standardize": "always"}}, r"data\.standardize must be one of"),
    ({"data": {"seed": -1}}, r"data\.seed must be an integer"),
    ({"data": {"test_size": "big"}}, r"data\.test_size|test_size"),
    ({"model": {"kind": "cnn"}}, r"model\.kind must be one of"),
    ({"model": {"hidden": []}}, r"model\.hidden must be a non-empty list"),
    ({"model": {"hidden": [64, 0]}}, r"model\.hidden\[1\] must be an integer"),
    ({"model": {"bias": "yes"}}, r"model\.bias must be true or false"),
    ({"model": {"dtype": "float16"}}, r"model\.dtype must be one of"),
    ({"mechanism": []}, r"mechanism must be a non-empty list"),
    ({"mechanism": [{"k": 3}, _CLIP, _NOISE]}, r"mechanism\[0\]\.name is required"),
    ({"mechanism": [{"name": "sparsify"}, _CLIP, _NOISE]}, r"mechanism\[0\]\.name must be one of"),
    ({"mechanism": [{"name": "random_k"}, _CLIP, _NOISE]}, r"mechanism\[0\]\.k is required"),
    ({"mechanism": [_CLIP, {"name": "random_k", "k": 0}, _NOISE]}, r"mechanism\[1\]\.k must be an integer"),
    ({"mechanism": [_CLIP, {"name": "random_k", "k": 3, "kk": 1}, _NOISE]}, r"mechanism\[1\]\.kk is not a known key"),
    ({"mechanism": [_CLIP, {"name": "random_k", "k": 3, "order": "sideways"}, _NOISE]}, r"mechanism\[1\]\.order must be"),
    ({"mechanism": [_CLIP, _NOISE, {"name": "error_feedback"}]}, r"mechanism\[2\]\.compressor is required"),
    ({"mechanism": [_CLIP, _NOISE, {"name": "error_feedback", "compressor": {"name": "top_k", "k": 0}}]},
     r"mechanism\[2\]\.compressor\.k must be an integer"),
    ({"mechanism": [_CLIP, {"name": "top_k", "k": 3, "mode": "clean"}, _NOISE]},
     r"mechanism: chain is not differentially private.*set privacy\.allow_non_private = true"),
    ({"mechanism": [_CLIP]}, r"mechanism: chain is not differentially private: no noise step"),
    ({"mechanism": [_NOISE, _CLIP]}, r"mechanism: .*comes after"),
    ({"mechanism": [_CLIP, {"name": "gaussian_noise", "noise_multiplier": 1.0}], "privacy": {"epsilon": 2.0}},
     r"mechanism\[1\]\.noise_multiplier and privacy\.noise_multiplier/epsilon are both given"),
    ({"privacy": {"noise_multiplier": 1.0, "epsilon": 2.0}}, r"privacy: give noise_multiplier or epsilon"),
    ({"privacy": {"epsilon": 0}}, r"privacy\.epsilon must be in"),
    ({"privacy": {"delta": 1.0}}, r"privacy\.delta must be in"),
    ({"privacy": {"noise_multiplier": 0.0}}, r"mechanism: chain is not differentially private.*noise_multiplier is 0"),
    ({"privacy": {"allow_non_private": 1}}, r"privacy\.allow_non_private must be true or false"),
    ({"optimizer": {"name": "lbfgs"}}, r"optimizer\.name must be one of"),
    ({"optimizer": {"lr": -0.1}}, r"optimizer\.lr must be in"),
    ({"optimizer": {"momentum": 1.0}}, r"optimizer\.momentum must be in"),
    ({"optimizer": {"schedule": "exp"}}, r"optimizer\.schedule must be one of"),
    ({"training": {"epochs": 2, "steps": 10}}, r"training: give epochs or steps"),
    ({"training": {"epochs": 0}}, r"training\.epochs must be an integer"),
    ({"training": {"batch_size": 64, "sampling_rate": 0.1}}, r"training: give batch_size or sampling_rate"),
    ({"training": {"sampling_rate": 1.5}}, r"training\.sampling_rate must be in"),
    ({"training": {"sampling": "uniform"}}, r"training\.sampling must be one of"),
    ({"training": {"record_every": 0}}, r"training\.record_every must be an integer"),
    ({"training": {"record_every": "often"}}, r"training\.record_every must be 'epoch', 'end' or an int"),
    ({"data": {"validation_fraction": 1.0}}, r"data\.validation_fraction must be in"),
    ({"data": {"feature_scale": 0}}, r"data\.feature_scale must be in"),
    ({"training": "fast"}, r"training must be a table"),
]


@pytest.mark.parametrize("raw, match", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_configs_name_the_key(raw, match):
    with pytest.raises(ValueError, match=match):
        config.validate(raw)


def test_normalised_config_is_complete_idempotent_and_hash_stable():
    raw = {"training": {"seed": 3, "epochs": 2}, "data": {"public_fraction": 0.1}}
    c = config.validate(raw)
    assert list(c) == list(config.SECTIONS)
    assert config.validate(c) == c
    shuffled = {"data": {"public_fraction": 0.1}, "training": {"epochs": 2, "seed": 3}}
    assert config.config_id(shuffled) == config.config_id(raw) == config.config_id(c)
    assert config.config_id({**raw, "training": {"seed": 4, "epochs": 2}}) != config.config_id(raw)
    assert len(config.config_id(raw)) == 64


def test_a_config_run_equals_the_same_train_call():
    raw = {"data": {"public_fraction": 0.1}, "model": {"hidden": [16]},
           "mechanism": [{"name": "random_freeze", "r_final": 0.5}, _CLIP, _NOISE],
           "optimizer": {"lr": 0.5}, "privacy": {"epsilon": 3.0, "delta": 1e-5},
           "training": {"epochs": 2, "batch_size": 32, "seed": 5}}
    rec = config.run(raw)
    ds = data.standardize(data.split_public(data.load_digits(test_size=0.25, random_state=0), 0.1, random_state=1),
                          fit_on="public")
    q = 32 / ds.X_train.shape[0]
    sigma = dptheory.calibrate_noise(q, dptheory.steps_for_epochs(q, 2), epsilon=3.0, delta=1e-5)
    res = train(models.mlp((64, 16, 10)), ds, epochs=2, batch_size=32, lr=0.5, delta=1e-5, random_state=5,
                mechanism=mech.chain(mech.random_freeze(0.5), mech.clip(1.0), mech.gaussian_noise(sigma)))
    assert rec["noise_multiplier"] == sigma
    # the config stacks (sims.stacking): the stacked engine sums in another order, 1e-10 relative
    assert rec["test_accuracy"] == pytest.approx(res.history["test_accuracy"][-1], abs=1e-12)
    np.testing.assert_allclose(rec["history"]["train_loss"], res.history["train_loss"], rtol=1e-10)
    assert rec["epsilon"] == pytest.approx(3.0, rel=1e-6) and rec["steps"] == res.steps_done


def test_load_reports_bad_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        config.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[data\nname = 1")
    with pytest.raises(ValueError, match="not valid TOML"):
        config.load(bad)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('[[mechanism]]\nname = "random_k"\nk = -1\n[[mechanism]]\nname = "clip"\nclip_norm = 1.0\n'
                     '[[mechanism]]\nname = "gaussian_noise"\n')
    with pytest.raises(ValueError, match=r"mechanism\[0\]\.k must be an integer"):
        config.load(wrong)


RUN_EXAMPLES = sorted(p for p in glob.glob("examples/*.toml") if not p.split("/")[-1].startswith("sweep_"))


@pytest.mark.parametrize("path", RUN_EXAMPLES)
def test_every_example_config_runs_in_reduced_form(path):
    c = config.load(path)
    c["training"].update(epochs=None, steps=3)
    rec = config.run(c)
    assert rec["steps"] == 3 and math.isfinite(rec["train_loss"])
    assert rec["epsilon"] == pytest.approx(c["privacy"]["epsilon"], rel=1e-6)


def test_examples_exist_for_every_mechanism_family():
    names = {t["name"] for p in RUN_EXAMPLES for t in config.load(p)["mechanism"]}
    assert {"random_freeze", "random_k", "top_k", "public_select", "magnitude_prune", "topagg",
            "error_feedback"} <= names


def test_the_configs_in_docs_runs_md_are_valid():
    import pathlib
    import re
    import tomllib

    from sims import sweep_spec

    blocks = re.findall(r"```toml\n(.*?)```", pathlib.Path("docs/runs.md").read_text(), flags=re.S)
    assert len(blocks) == 2
    run = config.validate(tomllib.loads(blocks[0]))
    assert [t["name"] for t in run["mechanism"]] == ["random_freeze", "clip", "gaussian_noise"]
    assert len(sweep_spec.expand(tomllib.loads(blocks[1]))) == 3 * 3 * 2


def test_one_run_has_one_identity():
    ints = {"mechanism": [{"name": "clip", "clip_norm": 1}, {"name": "gaussian_noise"}]}
    floats = {"mechanism": [{"name": "clip", "clip_norm": 1.0}, {"name": "gaussian_noise"}]}
    assert config.config_id(ints) == config.config_id(floats)
    assert config.validate({"model": {"kind": "softmax"}})["model"]["hidden"] is None
    with pytest.raises(ValueError, match=r"model\.hidden is only for model\.kind = 'mlp'"):
        config.validate({"model": {"kind": "logistic", "hidden": [8]}})


def test_shuffled_batches_get_no_calibrated_epsilon():
    with pytest.raises(ValueError, match=r"privacy\.epsilon with training\.sampling = 'shuffle'"):
        config.validate({"training": {"sampling": "shuffle"}, "privacy": {"epsilon": 2.0}})
    rec = config.run({"model": {"hidden": [8]}, "training": {"sampling": "shuffle", "steps": 2}})
    assert rec["private"] and not rec["accounting_valid"]


def test_validation_split_scaling_and_end_record():
    """validation_fraction holds rows out of training (the accountant's n shrinks), feature_scale
    multiplies every split, record_every = 'end' records the last step only."""
    base = {"training": {"epochs": 2, "record_every": "end"}, "privacy": {"noise_multiplier": 1.0}}
    plain = config.build(base)[1]
    cfg = {**base, "data": {"validation_fraction": 0.2, "feature_scale": 0.0625}}
    model, ds, _, kw = config.build(cfg)
    assert ds.X_val.shape[0] == round(0.2 * plain.n_train) and ds.n_train == plain.n_train - ds.X_val.shape[0]
    assert ds.X_train.max() <= 1.0 and plain.X_train.max() == 16.0
    rec = config.run(cfg)
    assert list(rec["history"]["step"]) == [rec["steps"]] and rec["diverged_at"] is None
    expected = models.accuracy(model, train(model, ds, **kw).params, ds.X_val, ds.y_val)
    assert rec["validation_accuracy"] == expected
    assert math.isnan(config.run(base)["validation_accuracy"])


def test_a_diverged_run_is_a_record_with_its_step():
    rec = config.run({"data": {"validation_fraction": 0.2}, "optimizer": {"lr": 50.0}, "privacy": {"epsilon": 3.0},
                      "training": {"epochs": 20}})  # diverges at step 220
    assert rec["diverged_at"] is not None and 0 <= rec["diverged_at"] <= rec["steps"]
    assert rec["diverged_at"] < 340  # before the last of the 340 steps of 20 epochs
    assert math.isnan(rec["test_accuracy"]) and math.isnan(rec["validation_accuracy"])


def test_a_switched_run_is_two_train_calls_and_not_private():
    dp = [{"name": "clip", "clip_norm": 1.0}, {"name": "gaussian_noise", "noise_multiplier": 1.5}]
    sgd = [{"name": "clip", "clip_norm": None}]
    cfg = {"mechanism": dp, "switch_mechanism": sgd, "privacy": {"allow_non_private": True},
           "training": {"steps": 20, "switch_at": 0.25, "record_every": 5, "seed": 3}}
    rec = config.run(cfg)
    assert rec["private"] is False and rec["accounting_valid"] is False and rec["epsilon"] == math.inf
    np.testing.assert_array_equal(rec["history"]["step"], [5, 10, 15, 20])
    model, ds, _, kw = config.build(cfg)
    first = train(model, ds, **{**kw, "steps": 5, "epochs": None})
    after = mech.chain(mech.clip(None), allow_non_private=True)
    second = train(model, ds, **{**kw, "steps": 15, "epochs": None, "mechanism": after, "params0": first.params,
                                 "random_state": np.random.SeedSequence([3, 1])})
    assert rec["test_accuracy"] == float(second.history["test_accuracy"][-1])
    with pytest.raises(ValueError, match="switch_at and \\[\\[switch_mechanism\\]\\] go together"):
        config.validate({"switch_mechanism": sgd})
    with pytest.raises(ValueError, match="not accounted.*allow_non_private"):
        config.validate({"switch_mechanism": sgd, "training": {"switch_at": 0.5}})
    with pytest.raises(ValueError, match="switch_mechanism\\[0\\]\\.name must be one of"):
        config.validate({"switch_mechanism": [{"name": "nope"}], "training": {"switch_at": 0.5},
                         "privacy": {"allow_non_private": True}})
    with pytest.raises(ValueError, match="training.switch_at must be in"):
        config.validate({"training": {"switch_at": 1.0}})


def test_a_switched_run_diverging_in_its_first_phase_is_still_not_private():
    dp = [{"name": "clip", "clip_norm": 1.0}, {"name": "gaussian_noise", "noise_multiplier": 1.5}]
    rec = config.run({"mechanism": dp, "switch_mechanism": [{"name": "clip", "clip_norm": None}],
                      "privacy": {"allow_non_private": True}, "optimizer": {"lr": 1e4},
                      "training": {"epochs": 4, "switch_at": 0.5}})
    assert rec["diverged_at"] is not None and rec["diverged_at"] < 42  # 4 epochs of 21 steps, switch at 42
    assert rec["private"] is False and rec["epsilon"] == math.inf
