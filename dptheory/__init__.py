"""Closed-form theory of differentially private SGD with sparse updates.

Numbers in, numbers out: privacy accounting of the (Poisson-subsampled) Gaussian
mechanism and typed privacy events (:mod:`dptheory.events`), noise-to-signal ratios of
sparse updates, convergence bounds, clipping bias, TopAgg's sensitivity and the bits a
step sends. Every closed form is checked
symbolically in :mod:`proofs` and against simulation (:mod:`sims`) in the tests.

Submodules are imported lazily (PEP 562): ``import dptheory`` loads none of them, and
``dptheory.X`` / ``from dptheory import X`` imports only the submodule that defines ``X``
on first use. ``python -m dptheory epsilon ...`` thus imports the accounting (numpy,
scipy.special) but not the theory modules (scipy.stats, scipy.integrate, scipy.optimize);
``tests/test_cli.py`` checks that.
"""
import importlib as _importlib

# --- accounting (dptheory.accounting, dptheory.events, dptheory.gdp) ---
_ACCOUNTING = {
    "accounting": ("DEFAULT_ORDERS", "calibrate_noise", "calibrate_noise_gaussian_closed_form", "epsilon",
                   "epsilon_from_rdp", "epsilon_from_rdp_classic", "rdp_gaussian", "rdp_subsampled_gaussian",
                   "steps_for_epochs", "steps_per_epoch"),
    "events": ("Gaussian", "NonPrivate", "PoissonGaussian", "PoissonSelectedGaussian", "SelectedGaussian",
               "epsilon_of"),
    "gdp": ("delta_gdp", "epsilon_for_mu", "epsilon_gdp", "gdp_mu"),
    "mask_amplification": ("calibrate_noise_random_mask", "epsilon_random_mask",  # (OPTION)
                           "rdp_random_mask_gaussian"),
    "selection": ("epsilon_selected_gaussian", "rdp_poisson_general",  # (private top-k)
                  "rdp_poisson_selected_gaussian", "rdp_selected_gaussian"),
}
# --- end accounting ---

# --- theory (dptheory.noise_signal, dptheory.convergence, dptheory.clipping, dptheory.topagg,
#     dptheory.communication) ---
_THEORY = ("clipping", "convergence", "noise_signal",
           "communication", "topagg",        # TopAgg accounting, bits per step
           "error_feedback", "reference_rates")  # EF rates; literature reference rates
# --- end theory ---

#: submodules reachable as ``dptheory.<name>`` (``validation`` checks inputs for all of them).
_SUBMODULES = (*_ACCOUNTING, *_THEORY, "validation")

#: re-exported name -> the submodule that defines it.
_WHERE = {name: mod for mod, names in _ACCOUNTING.items() for name in names}

__all__ = [*_WHERE, *_SUBMODULES]


def __getattr__(name):
    """Import the submodule behind ``name`` on first use and cache the result in this namespace."""
    if name in _WHERE:
        value = getattr(_importlib.import_module(f".{_WHERE[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = _importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *__all__})
