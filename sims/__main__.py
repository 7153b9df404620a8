"""``python -m sims [VERB] ...``: the main job, and the verbs of :mod:`sims.cli` (``--help`` lists them)."""
from __future__ import annotations

import os

# OpenBLAS worker threads spin for up to ~0.1 s after each matrix product; a Numba kernel launched
# right after one then waits for a core (measured: 118 ms instead of 6 ms per step on 2 cores, see
# benchmarks/README.md). A short spin timeout avoids it; it must be set before NumPy is imported.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import sys  # noqa: E402

from .cli import main  # noqa: E402

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
