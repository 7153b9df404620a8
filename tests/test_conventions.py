"""One convention shared by the simulator and the theory: what an epoch is, and what is accounted."""
import numpy as np

from sims.step import dpsgd_step
import pytest

import dptheory
from dptheory import convergence as cv
from sims import data, models
from sims.train import train


@pytest.mark.parametrize("n,B,epochs", [(60000, 256, 3), (1000, 64, 2), (997, 333, 4), (50, 50, 1)])
def test_calibration_and_training_count_the_same_steps(n, B, epochs):
    q = B / n
    T = dptheory.steps_for_epochs(q, epochs)
    assert T == epochs * max(1, round(n / B))
    _, steps = cv.calibrated_sigma(n, B, epochs, 2.0, 1e-5)
    assert steps == T


def test_training_run_spends_what_calibration_targeted():
    """A run of E epochs takes steps_for_epochs(q, E) steps and its accountant reports the epsilon
    that calibrate_noise targeted for exactly that many steps (to calibration's 1e-4 tolerance)."""
    ds = data.make_logistic(400, 5, random_state=0)
    model = models.logistic_regression(5)
    q, E = 32 / ds.X_train.shape[0], 3
    T = dptheory.steps_for_epochs(q, E)
    sigma = dptheory.calibrate_noise(q, T, 1.5, 1e-5)
    res = train(model, ds, epochs=E, sampling_rate=q, clip_norm=1.0, noise_multiplier=sigma, lr=0.1,
                delta=1e-5, random_state=0)
    assert res.steps_done == T
    assert res.privacy["epsilon"] == pytest.approx(1.5, rel=1e-3)
    assert res.privacy["epsilon"] <= 1.5 * (1 + 1e-9)
    assert np.isfinite(res.params).all()


@pytest.mark.parametrize("r_final,epochs,ramp", [(0.3, 4, "linear"), (0.9, 5, "cosine"), (0.7, 3, "step"),
                                                  (0.6, 1, "linear")])
def test_simulated_random_freeze_follows_the_theory_schedule(r_final, epochs, ramp):
    """The number of frozen coordinates the simulator holds in each epoch equals
    dptheory.noise_signal.n_frozen(freeze_schedule(...)[e], d): theory and simulation share one schedule
    (d = 1000 includes the case floor(0.3 * 1000 / 3 ...) where naive floating point loses one)."""
    from dptheory import noise_signal as ns
    from sims.mechanisms import InitContext, StepContext, chain, clip, gaussian_noise, random_freeze
    from sims.models import Backprop, Layout

    lay = Layout((99, 10))  # d = 1000
    rng = np.random.default_rng(0)
    bp = Backprop(lay, (rng.standard_normal((4, 99)),), (rng.standard_normal((4, 10)),), np.zeros(4))
    spe = 2
    ch = chain(random_freeze(r_final, ramp), clip(1.0), gaussian_noise(1.0))
    state = ch.init(InitContext(model=None, layout=lay, params=np.zeros(lay.n_params), total_steps=epochs * spe, steps_per_epoch=spe, expected_batch_size=4.0, rng=np.random.default_rng(1)))
    expected = ns.n_frozen(ns.freeze_schedule(r_final, epochs, ramp), lay.n_params)
    for t in range(epochs * spe):
        ctx = StepContext(model=None, layout=lay, step=t, epoch=t // spe, params=np.zeros(lay.n_params), bp=bp, expected_batch_size=4.0, rng=np.random.default_rng(t))
        u, state, m = dpsgd_step(ch, state, ctx)
        assert np.count_nonzero(u == 0) == expected[t // spe], (t, np.count_nonzero(u == 0), expected)


def test_n_frozen_rounding_guard_never_freezes_everything():
    from dptheory import noise_signal as ns
    assert ns.n_frozen(0.3, 10) == 3              # 0.3 * 10 = 2.9999999999999996 in binary
    assert ns.n_frozen(1 - 1e-13, 10) == 9        # a rate below 1 leaves at least one coordinate
    assert ns.n_frozen(0.0, 10) == 0


def test_chain_trajectory_advances_epochs():
    """sims.measure.chain_trajectory passes the epoch to the chain, so a ramp reaches r_final: at the
    last step of a linear ramp to 0.9 exactly d - n_frozen(0.9, d) coordinates move."""
    from dptheory import noise_signal as ns
    from sims.measure import chain_trajectory
    from sims.mechanisms import chain, clip, gaussian_noise, random_freeze

    ds = data.make_logistic(100, 9, random_state=0)
    model = models.logistic_regression(9)
    q = 0.25  # 4 steps per epoch
    traj = chain_trajectory(model, ds.X_train, ds.y_train,
                            chain(random_freeze(0.9), clip(1.0), gaussian_noise(1.0)),
                            lr=0.1, steps=20, sampling_rate=q, params0=np.zeros(10), random_state=0)
    moved = np.count_nonzero(traj[-1] != traj[-2])
    assert moved == 10 - ns.n_frozen(0.9, 10)


def test_error_feedback_inherits_what_its_compressor_reads():
    """Wrapping a compressor in error feedback must not launder a private read into a private chain."""
    from dataclasses import replace

    from sims.mechanisms import Effect, chain, clip, error_feedback, gaussian_noise, top_k

    leaky = replace(top_k(3, mode="noisy"), effect=Effect("post_noise", "all", "private"))
    with pytest.raises(ValueError, match="private"):
        chain(clip(1.0), gaussian_noise(1.0), leaky)
    with pytest.raises(ValueError, match="private"):
        chain(clip(1.0), gaussian_noise(1.0), error_feedback(leaky))
    assert chain(clip(1.0), gaussian_noise(1.0), error_feedback(top_k(3, mode="noisy"))).privacy.private


def test_measure_leaves_a_callers_seed_sequence_untouched():
    """A SeedSequence passed twice gives the same steps; an int seed gives those of SeedSequence(int)."""
    import sims.mechanisms as mech
    from sims.measure import backprop_from_rows, mechanism_steps

    G = np.random.default_rng(0).standard_normal((8, 5))
    ch = mech.chain(mech.clip(1.0), mech.random_k(2), mech.gaussian_noise(1.0))
    ss = np.random.SeedSequence(11)
    a, _ = mechanism_steps(ch, backprop_from_rows(G), 3, ss)
    b, _ = mechanism_steps(ch, backprop_from_rows(G), 3, ss)
    c, _ = mechanism_steps(ch, backprop_from_rows(G), 3, 11)
    assert ss.n_children_spawned == 0
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


# the names ``dptheory`` re-exported before its imports became lazy (issue 14); none may disappear.
_PACKAGE_NAMES = {
    "accounting": ("DEFAULT_ORDERS", "calibrate_noise", "calibrate_noise_gaussian_closed_form", "epsilon",
                   "epsilon_from_rdp", "epsilon_from_rdp_classic", "rdp_gaussian", "rdp_subsampled_gaussian",
                   "steps_for_epochs", "steps_per_epoch"),
    "events": ("Gaussian", "NonPrivate", "PoissonGaussian", "PoissonSelectedGaussian", "SelectedGaussian",
               "epsilon_of"),
    "gdp": ("delta_gdp", "epsilon_for_mu", "epsilon_gdp", "gdp_mu"),
    "mask_amplification": ("calibrate_noise_random_mask", "epsilon_random_mask", "rdp_random_mask_gaussian"),
    "selection": ("epsilon_selected_gaussian", "rdp_poisson_general", "rdp_poisson_selected_gaussian",
                  "rdp_selected_gaussian"),
}
_PACKAGE_SUBMODULES = ("accounting", "events", "gdp", "mask_amplification", "selection", "clipping", "convergence",
                       "noise_signal", "communication", "topagg", "error_feedback", "reference_rates", "validation")


def test_package_names_survive_lazy_imports():
    """``dptheory.X``, ``from dptheory import X``, ``__all__``, ``dir()`` and ``import *`` give the names they
    gave when dptheory/__init__.py imported every submodule, bound to the submodules' own objects."""
    import importlib

    functions = {name: mod for mod, names in _PACKAGE_NAMES.items() for name in names}
    public = set(functions) | set(_PACKAGE_SUBMODULES)
    assert set(dptheory.__all__) == public and len(dptheory.__all__) == len(public)
    assert public <= set(dir(dptheory))
    star = {}
    exec("from dptheory import *", star)
    assert set(star) - {"__builtins__"} == public
    for name, mod in functions.items():
        module = importlib.import_module(f"dptheory.{mod}")
        assert name in module.__all__, (mod, name)
        assert getattr(dptheory, name) is getattr(module, name) is star[name]
        exec(f"from dptheory import {name} as got", ns := {})
        assert ns["got"] is getattr(module, name)
    for mod in _PACKAGE_SUBMODULES:
        assert getattr(dptheory, mod) is importlib.import_module(f"dptheory.{mod}") is star[mod]
    with pytest.raises(AttributeError, match="no_such_name"):
        dptheory.no_such_name  # noqa: B018
    with pytest.raises(ImportError):
        exec("from dptheory import no_such_name", {})
