"""Thread discipline: each engine is timed in its own settled phase.

onnxruntime's intra-op pool and torch's OpenMP pool both spin-wait after a run (tens of ms of CPU
time on two cores). Timing one engine while another's pool still spins measures the fight, not the
engine: on a 2-core host the unfolded torch baseline came out 100x slow. ``settle`` waits until this
process has stopped burning CPU (every worker parked) before the next phase starts.
"""
from __future__ import annotations

import time

WINDOW_S = 0.005  # one look at the process CPU clock
IDLE_SHARE = 0.2  # a window is idle when the process used under 20% of one core in it
MAX_WAIT_S = 1.0


def settle(max_wait_s: float = MAX_WAIT_S, window_s: float = WINDOW_S) -> float:
    """Sleep until two windows in a row show this process idle (spinning pools parked).
    Returns the seconds waited (``max_wait_s`` when it never went quiet)."""
    t0 = time.perf_counter()
    quiet = 0
    while time.perf_counter() - t0 < max_wait_s:
        c0, w0 = time.process_time(), time.perf_counter()
        time.sleep(window_s)
        used, wall = time.process_time() - c0, time.perf_counter() - w0
        quiet = quiet + 1 if used < IDLE_SHARE * wall else 0
        if quiet >= 2:
            break
    return time.perf_counter() - t0
