"""Round-robin timing shared by the benchmark scripts (never used by tests; no timing is asserted)."""
import os
import platform
import statistics
import subprocess
import time


def machine() -> str:
    """``"<CPU model>, <n> logical CPUs"`` (lscpu's model name where there is one)."""
    cpu = platform.processor() or "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs"


def best_of(fn, repeat=5) -> float:
    """The shortest of ``repeat`` wall times of ``fn()`` (seconds)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def paired(fns, repeats, warmup=1):
    """Time ``fns`` round-robin, so background load hits all alike.

    Returns the per-function medians and the medians of the per-round ratios to the first function.
    """
    for _ in range(warmup):
        for f in fns:
            f()
    ts = [[] for _ in fns]
    for _ in range(repeats):
        for j, f in enumerate(fns):
            t0 = time.perf_counter()
            f()
            ts[j].append(time.perf_counter() - t0)
    med = [statistics.median(t) for t in ts]
    ratios = [statistics.median(a / b for a, b in zip(t, ts[0])) for t in ts]
    return med, ratios
