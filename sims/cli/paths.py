"""Output paths of the ``python -m sims`` verbs: bad paths are a one-line error (exit 2), not a traceback."""
from __future__ import annotations

import os
import pathlib

__all__ = ["CLIError", "output_dir", "input_file"]


class CLIError(ValueError):
    """A bad command-line argument: the dispatcher prints ``python -m sims VERB: error: ...`` and exits 2."""


def output_dir(path) -> pathlib.Path:
    """``path`` as a writable directory with a ``figures/`` subdirectory (created if missing)."""
    out = pathlib.Path(path)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {str(out)!r} is a file, not a directory")
    try:
        (out / "figures").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CLIError(f"--out {str(out)!r} cannot be created: {e.strerror}") from None
    if not os.access(out, os.W_OK):
        raise CLIError(f"--out {str(out)!r} is not writable")
    return out


def input_file(path, what: str) -> pathlib.Path:
    """``path`` as an existing regular file."""
    p = pathlib.Path(path)
    if not p.is_file():
        raise CLIError(f"{what} {str(p)!r} does not exist or is not a file")
    return p
