"""Closed-form theory of differentially private SGD with sparse updates.

Numbers in, numbers out: privacy accounting of the (Poisson-subsampled) Gaussian
mechanism and typed privacy events (:mod:`dptheory.events`), noise-to-signal ratios of
sparse updates, convergence bounds, clipping bias, TopAgg's sensitivity and the bits a
step sends. Every closed form is checked
symbolically in :mod:`proofs` and against simulation (:mod:`sims`) in the tests.
"""

# --- accounting (dptheory.accounting, dptheory.events, dptheory.gdp) ---
from .accounting import (DEFAULT_ORDERS, calibrate_noise, calibrate_noise_gaussian_closed_form,  # noqa: F401
                         epsilon, epsilon_from_rdp, epsilon_from_rdp_classic, rdp_gaussian,
                         rdp_subsampled_gaussian, steps_for_epochs, steps_per_epoch)
from .events import (Gaussian, NonPrivate, PoissonGaussian, PoissonSelectedGaussian,  # noqa: F401
                     SelectedGaussian, epsilon_of)
from .gdp import delta_gdp, epsilon_for_mu, epsilon_gdp, gdp_mu  # noqa: F401
from .mask_amplification import (calibrate_noise_random_mask, epsilon_random_mask,  # noqa: F401  (OPTION)
                                 rdp_random_mask_gaussian)
from .selection import (epsilon_selected_gaussian, rdp_poisson_general,  # noqa: F401  (private top-k)
                        rdp_poisson_selected_gaussian, rdp_selected_gaussian)
# --- end accounting ---

# --- theory (dptheory.noise_signal, dptheory.convergence, dptheory.clipping, dptheory.topagg,
#     dptheory.communication) ---
from . import clipping, convergence, noise_signal  # noqa: E402,F401
from . import communication, topagg  # noqa: F401  (TopAgg accounting, bits per step)
from . import error_feedback, reference_rates  # noqa: F401  (EF rates; literature reference rates)
# --- end theory ---
