"""sims.stacking and the sweep's stacked tasks (issue 11, item 2): configs that differ only in
per-run axes run as one stacked call, automatically, with the records of the configs run alone."""
import math

import numpy as np
import pytest

from sims import config as C
from sims import stacking, sweep
from sims.train import train

BASE = {"data": {"name": "digits", "feature_scale": 1 / 16, "validation_fraction": 0.2},
        "model": {"hidden": [16]}, "training": {"epochs": 2, "batch_size": 64},
        "privacy": {"noise_multiplier": 1.0}}
FREEZE = [{"name": "random_freeze", "r_final": 0.8}, {"name": "clip", "clip_norm": 1.0}, {"name": "gaussian_noise"}]
TOPK = [{"name": "clip", "clip_norm": 1.0}, {"name": "gaussian_noise"}, {"name": "top_k", "k": 200}]
RANDK = [{"name": "clip", "clip_norm": 1.0}, {"name": "random_k", "k": 100}, {"name": "gaussian_noise"}]
RANDK_MTC = [{"name": "random_k", "k": 100, "order": "mask_then_clip"}, {"name": "clip", "clip_norm": 1.0},
             {"name": "gaussian_noise"}]
LOWRANK = [{"name": "clip", "clip_norm": 1.0}, {"name": "gaussian_noise"}, {"name": "low_rank", "rank": 2}]
TOPK_PEX = [{"name": "top_k", "k": 200, "mode": "per_example"}, {"name": "clip", "clip_norm": 1.0},
            {"name": "gaussian_noise"}]
TOPAGG = [{"name": "topagg", "k": 100, "beta": 0.05}]
PRIVTOPK = [{"name": "clip", "clip_norm": 1.0}, {"name": "private_top_k", "k": 100, "selection_epsilon": 0.5},
            {"name": "gaussian_noise"}]
PUBLIC = {"public_fraction": 0.1}
EF21 = [{"name": "clip", "clip_norm": 1.0}, {"name": "gaussian_noise"},
        {"name": "error_feedback", "compressor": {"name": "top_k", "k": 200, "mode": "noisy"}, "style": "ef21"}]
PFREEZE = [{"name": "public_freeze", "fraction": 0.75}, {"name": "clip", "clip_norm": 1.0}, {"name": "gaussian_noise"}]
PSELECT = [{"name": "public_select", "fraction": 0.75}, {"name": "clip", "clip_norm": 1.0}, {"name": "gaussian_noise"}]
PRUNE = [{"name": "magnitude_prune", "fraction": 0.8, "source": "current", "every": 20},
         {"name": "clip", "clip_norm": 1.0}, {"name": "gaussian_noise"}]


def _with(cfg=BASE, **sections):
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in cfg.items()}
    for sec, val in sections.items():
        out[sec] = {**out.get(sec, {}), **val} if isinstance(val, dict) else val
    return out


def _grid():
    """12 configs: 3 chains x (2 seeds x 2 step sizes), with clip norms and k / r_final varied too."""
    out = []
    for mech in (None, FREEZE, TOPK):
        for seed in (0, 1):
            for lr in (0.5, 2.0):
                c = _with(training={"seed": seed}, optimizer={"lr": lr})
                if mech is not None:
                    m = [dict(t) for t in mech]
                    m[0 if mech is FREEZE else 2].update({"r_final": 0.6 + 0.1 * seed} if mech is FREEZE
                                                          else {"k": 150 + 50 * seed})
                    c["mechanism"] = m
                out.append(c)
    return out


def test_stack_key_groups_per_run_axes_only():
    a = stacking.stack_key(BASE)
    assert a is not None
    assert stacking.stack_key(_with(training={"seed": 5}, optimizer={"lr": 0.3})) == a
    assert stacking.stack_key(_with(privacy={"noise_multiplier": None, "epsilon": 2.0})) == a
    assert stacking.stack_key(_with(mechanism=[{"name": "clip", "clip_norm": 3.0}, {"name": "gaussian_noise"}])) == a
    assert stacking.stack_key(_with(training={"batch_size": 32})) != a
    assert stacking.stack_key(_with(mechanism=FREEZE)) not in (None, a)
    rk2 = [RANDK[0], dict(RANDK[1], k=7), RANDK[2]]
    assert stacking.stack_key(_with(mechanism=rk2)) == stacking.stack_key(_with(mechanism=RANDK)) is not None
    assert stacking.stack_key(_with(mechanism=RANDK_MTC)) not in (None, stacking.stack_key(_with(mechanism=RANDK)))
    f2 = [dict(FREEZE[0], r_final=0.3), *FREEZE[1:]]
    assert stacking.stack_key(_with(mechanism=f2)) == stacking.stack_key(_with(mechanism=FREEZE))
    opts = {stacking.stack_key(_with(optimizer=o)) for o in ({"name": "adam"}, {"momentum": 0.9, "name": "momentum"},
                                                                {"schedule": "cosine"}, {"weight_decay": 0.01})}
    assert len(opts) == 4 and not opts & {None, a}  # the optimizer and the schedule are structure
    ef = stacking.stack_key(_with(mechanism=EF21))
    assert ef not in (None, stacking.stack_key(_with(mechanism=TOPK)))
    ef_k = [*EF21[:2], {**EF21[2], "compressor": {**EF21[2]["compressor"], "k": 50}}]
    assert stacking.stack_key(_with(mechanism=ef_k)) == ef  # the compressor's k is per run
    assert stacking.stack_key(_with(mechanism=[*EF21[:2], {**EF21[2], "style": "ef"}])) not in (None, ef)
    pub = stacking.stack_key(_with(data=PUBLIC))
    assert pub not in (None, a)  # a public split is data: another group
    f3 = [dict(PFREEZE[0], fraction=0.5), *PFREEZE[1:]]
    assert stacking.stack_key(_with(data=PUBLIC, mechanism=f3)) == stacking.stack_key(_with(data=PUBLIC, mechanism=PFREEZE))
    assert stacking.stack_key(_with(data=PUBLIC, mechanism=PFREEZE)) not in (None, pub)
    p2 = [dict(PRUNE[0], every=10), *PRUNE[1:]]  # the options are structure
    assert stacking.stack_key(_with(mechanism=p2)) not in (None, stacking.stack_key(_with(mechanism=PRUNE)))
    agg = stacking.stack_key(_with(mechanism=TOPAGG))
    assert agg is not None and stacking.stack_key(_with(mechanism=[dict(TOPAGG[0], k=20)])) == agg  # k is per run
    assert stacking.stack_key(_with(mechanism=[dict(TOPAGG[0], beta=0.1)])) not in (None, agg)  # beta is structure
    ptk = stacking.stack_key(_with(mechanism=PRIVTOPK))
    assert ptk is not None and stacking.stack_key(_with(mechanism=[PRIVTOPK[0], dict(PRIVTOPK[1], k=20), PRIVTOPK[2]])) == ptk
    assert stacking.stack_key(_with(mechanism=[PRIVTOPK[0], dict(PRIVTOPK[1], selection_epsilon=1.0),
                                               PRIVTOPK[2]])) not in (None, ptk)  # the selection budget is structure
    pex = stacking.stack_key(_with(mechanism=TOPK_PEX))
    assert pex not in (None, stacking.stack_key(_with(mechanism=TOPK)))
    assert stacking.stack_key(_with(mechanism=[dict(TOPK_PEX[0], k=50), *TOPK_PEX[1:]])) == pex  # k is per run
    lr3 = [LOWRANK[0], LOWRANK[1], dict(LOWRANK[2], rank=3)]
    assert stacking.stack_key(_with(mechanism=lr3)) not in (None, stacking.stack_key(_with(mechanism=LOWRANK)))
    not_stackable = [
        _with(model={"dtype": "float32"}),
        _with(training={"sampling": "shuffle"}),
        _with(mechanism=[{"name": "clip", "clip_norm": 1.0}, {"name": "random_k", "k": 10, "rescale": True},
                         {"name": "gaussian_noise"}]),
        _with(mechanism=[{"name": "clip", "clip_norm": 1.0}, {"name": "random_k", "k": 10, "layerwise": True},
                         {"name": "gaussian_noise"}]),
        _with(mechanism=[{"name": "clip", "clip_norm": 1.0, "per_layer": True}, {"name": "gaussian_noise"}]),
        _with(mechanism=[dict(FREEZE[0], rescale=True), *FREEZE[1:]]),
        _with(mechanism=[*TOPK[:2], dict(TOPK[2], layerwise=True)]),
        _with(mechanism=[dict(TOPK_PEX[0], chunk_size=16), *TOPK_PEX[1:]]),
        _with(mechanism=[dict(TOPK_PEX[0], layerwise=True), *TOPK_PEX[1:]]),
        _with(mechanism=[{"name": "topagg", "k": 10, "teacher_size": 2}], privacy={"allow_non_private": True}),
        _with(mechanism=[{"name": "topagg", "k": 10, "noise_multiplier": 0.0}], privacy={"allow_non_private": True}),
        _with(mechanism=[{"name": "clip", "clip_norm": 1.0, "reference_norm": 2.0}, {"name": "gaussian_noise"}]),
        {"bogus": 1},
    ]
    for c in not_stackable:
        assert stacking.stack_key(c) is None, c


@pytest.mark.parametrize("mech,data", [(None, {}), (FREEZE, {}), (TOPK, {}), (RANDK, {}), (RANDK_MTC, {}),
                                       (LOWRANK, {}), (None, PUBLIC), (PFREEZE, PUBLIC), (PSELECT, PUBLIC), (PRUNE, {}), (EF21, {}),
                                       (None, {"optimizer": {"name": "momentum", "momentum": 0.9, "schedule": "cosine"}}),
                                       (TOPK_PEX, {}), (TOPAGG, {}), (PRIVTOPK, {})],
                         ids=["dense", "random_freeze", "top_k_noisy", "random_k", "random_k_mask_then_clip", "low_rank",
                              "dense_public_split", "public_freeze", "public_select", "magnitude_prune_every", "error_feedback_ef21", "momentum_cosine",
                              "top_k_per_example", "topagg", "private_top_k"])
def test_a_stackable_run_agrees_with_train(mech, data):
    sections = data if "optimizer" in data else {"data": data}
    cfg = _with(**sections) if mech is None else _with(mechanism=mech, **sections)
    assert stacking.stack_key(cfg) is not None
    rec = C.run(cfg)
    model, ds, ch, kw = C.build(cfg)
    ref = train(model, ds, **kw)
    for key, col in ref.history.items():
        np.testing.assert_allclose(rec["history"][key], col, rtol=1e-10, atol=1e-300, err_msg=key)
    assert rec["epsilon"] == ref.privacy["epsilon"] and rec["steps"] == ref.steps_done
    assert rec["test_accuracy"] == pytest.approx(float(ref.history["test_accuracy"][-1]), abs=1e-12)


def test_run_stacked_equals_each_run_alone_bit_for_bit():
    cfgs = [c for c in _grid() if stacking.stack_key(c) == stacking.stack_key(BASE)]
    assert len(cfgs) == 4
    together = stacking.run_stacked(cfgs)
    for c, rec in zip(cfgs, together):
        alone = C.run(c)
        for k in ("id", "test_accuracy", "validation_accuracy", "train_loss", "epsilon", "steps", "diverged_at"):
            assert rec[k] == alone[k] or (isinstance(rec[k], float) and math.isnan(rec[k]) and math.isnan(alone[k])), k
        for k, col in alone["history"].items():
            assert np.array_equal(rec["history"][k], col, equal_nan=True), k
    with pytest.raises(ValueError, match="stack_key"):
        stacking.run_stacked([BASE, _with(mechanism=FREEZE)])
    with pytest.raises(ValueError, match="stack_key"):
        stacking.run_stacked([])


NP = {"allow_non_private": True, "noise_multiplier": None}
SGD = [{"name": "clip", "clip_norm": None}]
CLIP_ONLY = [{"name": "clip", "clip_norm": 1.0}]
TOPK_CLEAN = [{"name": "clip", "clip_norm": None}, {"name": "top_k", "k": 200, "mode": "clean"}]
RANDK_NP = [{"name": "clip", "clip_norm": None}, {"name": "random_k", "k": 100}]
FREEZE_NP = [{"name": "random_freeze", "r_final": 0.8}, {"name": "clip", "clip_norm": 1.0}]
LOWRANK_NP = [{"name": "clip", "clip_norm": None}, {"name": "low_rank", "rank": 1, "order": "compress_then_noise"}]
NOISE_ONLY = [{"name": "clip", "clip_norm": None, "reference_norm": 1.5}, {"name": "gaussian_noise", "noise_multiplier": 1.2}]
FREEZE_NOISE_ONLY = [{"name": "random_freeze", "r_final": 0.8}, *NOISE_ONLY]


def _np(mech, **sections):
    return _with(_with(privacy=NP), mechanism=mech, **sections)


def test_non_private_baselines_stack_by_structure():
    sgd = stacking.stack_key(_np(SGD))
    assert sgd is not None and sgd != stacking.stack_key(BASE)
    assert stacking.stack_key(_np(SGD, training={"seed": 4}, optimizer={"lr": 0.1})) == sgd
    clip_only = stacking.stack_key(_np(CLIP_ONLY))
    assert clip_only not in (None, sgd)  # clipping or not is structure; the clip norm is per run
    assert stacking.stack_key(_np([{"name": "clip", "clip_norm": 3.0}])) == clip_only
    keys = {stacking.stack_key(_np(mech)) for mech in (TOPK_CLEAN, RANDK_NP, FREEZE_NP, LOWRANK_NP, NOISE_ONLY,
                                                         FREEZE_NOISE_ONLY)}
    assert len(keys) == 6 and not keys & {None, sgd, clip_only}
    # the noise-only ablation: its noise multiplier is per run, its reference norm structure
    sigma2 = [NOISE_ONLY[0], dict(NOISE_ONLY[1], noise_multiplier=3.0)]
    assert stacking.stack_key(_np(sigma2)) == stacking.stack_key(_np(NOISE_ONLY))
    assert stacking.stack_key(_np([dict(NOISE_ONLY[0], reference_norm=2.0), NOISE_ONLY[1]])) not in keys
    # noise in another non-private chain, and low-rank compressing the clean sum before noise: train() only
    assert stacking.stack_key(_np([*TOPK[:2], dict(TOPK[2], mode="clean")])) is None
    assert stacking.stack_key(_np([*LOWRANK[:2], dict(LOWRANK[2], order="compress_then_noise")])) is None
    assert stacking.stack_key(_np([LOWRANK_NP[0], dict(LOWRANK_NP[1], order="noise_then_compress")])) is None


def test_zero_noise_runs_through_train():
    """A zero noise multiplier (from [privacy] or the stage) is a valid non-private baseline that
    only train() runs: no stack key, and run() gives train()'s record."""
    zero_privacy = _with(privacy={"noise_multiplier": 0.0, "allow_non_private": True})
    zero_stage = _np([{"name": "clip", "clip_norm": 1.0}, {"name": "gaussian_noise", "noise_multiplier": 0.0}])
    for cfg in (zero_privacy, zero_stage):
        assert stacking.stack_key(cfg) is None
        rec = C.run(cfg)
        assert rec["epsilon"] == math.inf and not rec["private"] and math.isfinite(rec["test_accuracy"])


@pytest.mark.parametrize("mech", [SGD, CLIP_ONLY, TOPK_CLEAN, RANDK_NP, FREEZE_NP, LOWRANK_NP, NOISE_ONLY,
                                  FREEZE_NOISE_ONLY],
                         ids=["sgd", "clip_only", "top_k_clean", "random_k", "random_freeze", "low_rank", "noise_only",
                              "random_freeze_noise_only"])
def test_a_non_private_stackable_run_agrees_with_train(mech):
    cfg = _np(mech)
    rec = C.run(cfg)
    model, ds, ch, kw = C.build(cfg)
    ref = train(model, ds, **kw)
    for key, col in ref.history.items():
        np.testing.assert_allclose(rec["history"][key], col, rtol=1e-10, atol=1e-300, err_msg=key)
    assert rec["private"] is False and rec["epsilon"] == math.inf == ref.privacy["epsilon"]
    assert rec["test_accuracy"] == pytest.approx(float(ref.history["test_accuracy"][-1]), abs=1e-12)


@pytest.mark.parametrize("mech", [SGD, NOISE_ONLY], ids=["sgd", "noise_only"])
def test_a_non_private_group_equals_each_run_alone_bit_for_bit(mech):
    cfgs = [_np(mech, training={"seed": s}, optimizer={"lr": lr}) for s, lr in ((0, 0.5), (1, 0.5), (2, 0.1))]
    for c, rec in zip(cfgs, stacking.run_stacked(cfgs)):
        alone = C.run(c)
        assert rec["id"] == alone["id"] and rec["test_accuracy"] == alone["test_accuracy"]
        for k, col in alone["history"].items():
            assert np.array_equal(rec["history"][k], col, equal_nan=True), k


SWITCH = {"mechanism": [{"name": "clip", "clip_norm": 1.0}, {"name": "gaussian_noise", "noise_multiplier": 1.5}],
          "switch_mechanism": [{"name": "clip", "clip_norm": None}],
          "privacy": {"allow_non_private": True, "noise_multiplier": None}, "training": {"switch_at": 0.5}}


def _switched(seed=0, lr=0.5, **extra):
    cfg = _with(**{k: v for k, v in SWITCH.items() if k not in ("mechanism", "switch_mechanism")},
                optimizer={"lr": lr}, **extra)
    cfg["training"]["seed"] = seed
    cfg["mechanism"], cfg["switch_mechanism"] = SWITCH["mechanism"], SWITCH["switch_mechanism"]
    return cfg


def test_a_chain_switch_stacks_and_agrees_with_its_two_train_phases():
    """DP-SGD then plain SGD (training.switch_at): two stacked calls, one per phase, merged as
    sims.config.run merges two train() calls; reported non-private."""
    cfg = _switched()
    key = stacking.stack_key(cfg)
    assert key is not None and key == stacking.stack_key(_switched(seed=3, lr=0.1))
    assert stacking.stack_key(_with(mechanism=SWITCH["mechanism"], privacy={"noise_multiplier": None})) != key
    rec = C.run(cfg)
    model, ds, ch, kw = C.build(cfg)
    t1, total, after = C.second_phase(C.validate(cfg), ds, kw)
    first = train(model, ds, **{**kw, "steps": t1, "epochs": None})
    second = train(model, ds, **{**kw, "steps": total - t1, "epochs": None, "mechanism": after,
                                 "params0": first.params, "random_state": C.switch_seed(0)})
    ref = C.merge_phases(first, second, t1)
    for k, col in ref.history.items():
        np.testing.assert_allclose(rec["history"][k], col, rtol=1e-10, atol=1e-300, err_msg=k)
    assert rec["steps"] == ref.steps_done == total and rec["diverged_at"] is None
    assert rec["private"] is False and rec["epsilon"] == math.inf
    group = stacking.run_stacked([_switched(seed=s) for s in (1, 0, 2)])
    assert group[1]["id"] == rec["id"]
    for k, col in rec["history"].items():
        assert np.array_equal(group[1]["history"][k], col, equal_nan=True), k


def test_a_run_diverging_in_phase_one_of_a_switch_stops_alone():
    cfgs = [_switched(seed=0, lr=0.5), _switched(seed=1, lr=1e308)]
    recs = stacking.run_stacked(cfgs)
    for c, rec in zip(cfgs, recs):
        alone = C.run(c)
        assert rec["diverged_at"] == alone["diverged_at"] and rec["steps"] == alone["steps"]
    assert recs[0]["diverged_at"] is None and recs[1]["diverged_at"] is not None
    assert math.isnan(recs[1]["test_accuracy"]) and recs[1]["private"] is False


def test_groups_fill_free_slots_and_respect_the_caps():
    keys = ["a"] * 20 + [None, None] + ["b"] * 3
    tasks = sweep._groups(list(range(25)), keys, free=1)
    assert tasks == [tuple(range(20))]
    assert sorted(len(t) for t in sweep._groups(list(range(25)), keys, free=4)) == [1, 1, 3, 20]
    tasks = sweep._groups(list(range(25)), keys, free=5)
    assert sorted(len(t) for t in tasks) == [1, 1, 3, 10, 10] and all(len(set(keys[i] for i in t)) == 1 for t in tasks)
    tasks = sweep._groups(list(range(25)), keys, free=10)
    assert sum(len(t) for t in tasks) == 25 and min(len(t) for t in tasks if keys[t[0]] == "a") >= sweep.MIN_STACK
    many = sweep._groups(list(range(150)), ["k"] * 150, free=1)
    assert len(many) == 1 and len(many[0]) == sweep.MAX_STACK
    assert sweep._groups([0, 1], ["k", "k"], free=0) == []


def _stack_calls(monkeypatch):
    calls = []
    real = stacking.run_stacked

    def counted(configs):
        calls.append(len(configs))
        return real(configs)

    monkeypatch.setattr(stacking, "run_stacked", counted)
    return calls


def test_a_sweep_stacks_automatically_and_stores_the_records_of_runs_alone(tmp_path, monkeypatch):
    cfgs = _grid()
    calls = _stack_calls(monkeypatch)
    recs = sweep.run_sweep(C.sweep_run, cfgs, executor="serial", store=str(tmp_path / "s.db"))
    assert sorted(calls) == [4, 4, 4]  # one stacked call per chain, no config run alone
    calls.clear()
    alone = [sweep.run_sweep(C.sweep_run, [c], executor="serial")[0] for c in cfgs]
    assert calls == [1] * len(cfgs)
    assert recs == alone  # the records (JSON, read back from the store) are equal bit for bit


def test_local_workers_split_groups_and_store_the_same_records(tmp_path):
    cfgs = _grid()
    serial = sweep.run_sweep(C.sweep_run, cfgs, executor="serial")
    pooled = sweep.run_sweep(C.sweep_run, cfgs, n_workers=2, store=str(tmp_path / "p.db"))
    assert pooled == serial


def test_a_failing_stack_falls_back_to_each_config_alone(monkeypatch):
    def boom(configs):
        raise RuntimeError("stacked engine failed")

    monkeypatch.setattr(stacking, "run_stacked", boom)
    cfgs = [_with(training={"seed": s}) for s in range(3)]
    # run() itself uses run_stacked for a stackable config: each config then fails alone, with its own error
    recs = sweep.run_sweep(C.sweep_run, cfgs, executor="serial", max_attempts=1)
    assert all("stacked engine failed" in r["error"] for r in recs)
    monkeypatch.undo()
    calls = _stack_calls(monkeypatch)
    orig = C.sweep_run.run_stack

    def first_fails(configs):
        if len(configs) > 1:
            raise RuntimeError("group failed")
        return orig(configs)

    monkeypatch.setattr(C.sweep_run, "run_stack", first_fails)
    recs = sweep.run_sweep(C.sweep_run, cfgs, executor="serial")
    assert all("error" not in r for r in recs) and calls == [1, 1, 1]
