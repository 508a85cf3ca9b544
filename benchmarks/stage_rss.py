"""Run the edgerep CLI with its resident set sampled per deploy stage (for ``benchmarks/scale.py``).

``python benchmarks/stage_rss.py deploy ...`` is ``edgerep deploy ...`` plus one stderr line
``STAGE_RSS {"stage": peak MiB, ...}``: a thread reads VmRSS every 20 ms and charges it to the stage
running then (``edgerep.stage_graph.run_stage`` is wrapped to name it). Linux only (/proc/self/status).
"""
from __future__ import annotations

import json
import sys
import threading
import time


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def main() -> int:
    import edgerep.stage_graph as stage_graph
    from edgerep.cli import main as cli

    peaks: dict[str, float] = {}
    state = {"stage": "startup", "stop": False}

    def sample() -> None:
        while not state["stop"]:
            r = _rss_mib()
            peaks[state["stage"]] = max(peaks.get(state["stage"], 0.0), r)
            time.sleep(0.02)

    run_stage = stage_graph.run_stage

    def labelled(stage, *args):
        state["stage"] = stage.name
        try:
            return run_stage(stage, *args)
        finally:
            state["stage"] = f"after {stage.name}"

    stage_graph.run_stage = labelled
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        return cli(sys.argv[1:])
    finally:
        state["stop"] = True
        t.join()
        print("STAGE_RSS " + json.dumps({k: round(v) for k, v in peaks.items()}), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
