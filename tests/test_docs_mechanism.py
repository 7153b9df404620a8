"""The worked example of docs/mechanisms.md, run as written: a custom transform end to end."""
from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

import dptheory
import sims.mechanisms as mech
from sims.mechanisms import InitContext, StepContext
from sims.measure import backprop_from_rows
from sims.models import Backprop, Layout
from sims.step import dpsgd_step

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "mechanisms.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture(scope="module")
def random_layer():
    ns = {}
    exec(compile(BLOCKS[0], f"{DOC}:block0", "exec"), ns)
    return ns["random_layer"]


def test_doc_has_the_two_blocks():
    assert len(BLOCKS) == 2 and "def random_layer" in BLOCKS[0] and "train.train" in BLOCKS[1]


def test_usage_block_runs_and_is_dense_dpsgd_accounting(random_layer, capsys):
    ns = {"random_layer": random_layer}
    exec(compile(BLOCKS[1], f"{DOC}:block1", "exec"), ns)
    res, chain, q, sigma = ns["res"], ns["chain"], ns["q"], ns["sigma"]
    assert chain.privacy.private and chain.privacy.event == dptheory.Gaussian(sigma)
    steps = res.privacy["steps"]
    assert res.privacy["epsilon"] == dptheory.epsilon(q, sigma, steps, 1e-5)[0]
    assert 0.1 < res.history["test_accuracy"][-1] <= 1.0  # it trains (10 classes: chance is 0.1)
    out = capsys.readouterr().out
    assert "Gaussian" in out


def test_each_step_changes_exactly_one_layer_with_noise_there_only(random_layer):
    rng = np.random.default_rng(0)
    lay = Layout((5, 4, 3))
    B = 6
    acts = (rng.standard_normal((B, 5)), rng.standard_normal((B, 4)))
    deltas = (rng.standard_normal((B, 4)), rng.standard_normal((B, 3)))
    bp = Backprop(lay, acts, deltas, np.zeros(B))
    ch = mech.chain(random_layer(), mech.clip(1.0), mech.gaussian_noise(1.0))
    p = np.zeros(lay.n_params)
    state = ch.init(InitContext(model=None, layout=lay, params=p, total_steps=20, steps_per_epoch=5,
                                expected_batch_size=float(B), rng=np.random.default_rng(1)))
    seen = set()
    for t in range(20):
        sc = StepContext(model=None, layout=lay, step=t, epoch=t // 5, params=p, bp=bp,
                         expected_batch_size=float(B), rng=np.random.default_rng(100 + t))
        u, state, m = dpsgd_step(ch, state, sc)
        l = state[0]["last"]
        seen.add(l)
        inside = np.zeros(lay.n_params, bool)
        inside[lay.layer_slice(l)] = True
        assert np.all(u[~inside] == 0) and np.all(u[inside] != 0)  # noise on the kept layer, nothing else
        assert m["kept_fraction"] == inside.mean()
    assert seen == {0, 1}


def test_mask_then_clip_matches_a_naive_reference(random_layer):
    """The released signal (no noise) is sum_i clip_C(m * g_i) / B for the chosen layer."""
    G = np.random.default_rng(2).standard_normal((7, 9)) * 3
    bp = backprop_from_rows(G)  # one layer: the mask keeps everything, so this is dense clipping
    ch = mech.chain(random_layer(), mech.clip(1.0), allow_non_private=True)
    p = np.zeros(bp.layout.n_params)
    state = ch.init(InitContext(model=None, layout=bp.layout, params=p, total_steps=1, steps_per_epoch=1,
                                expected_batch_size=7.0, rng=np.random.default_rng(0)))
    u, _, _ = dpsgd_step(ch, state, StepContext(model=None, layout=bp.layout, step=0, epoch=0, params=p, bp=bp,
                                               expected_batch_size=7.0, rng=np.random.default_rng(1)))
    n = np.linalg.norm(G, axis=1, keepdims=True)
    np.testing.assert_allclose(u, (G * np.minimum(1, 1 / n)).sum(axis=0) / 7, rtol=1e-12)
