"""Run by tests/test_signals.py in a child process: LoadGen times an engine that sends this process a
real signal from inside its 50th call (inside LoadGen's SUT callback); exit 130 / 143 / 0 says how
the run ended (a crash is a negative exit code)."""
import os, signal, sys, time
import numpy as np
from edgerep.bench.scenarios import ScenarioSettings, run_scenario
from edgerep.interrupts import Terminated, signals_as_exceptions

SIG, SCEN, BATCH, LOGS = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]


class SelfSignalling:
    """An engine that sends this process SIG from inside its 50th call (inside LoadGen's SUT callback)."""
    name, precision, device = "self-signalling", "fp32", "cpu"
    calls = 0

    def run(self, x):
        self.calls += 1
        if self.calls == 50:
            os.kill(os.getpid(), SIG)
        time.sleep(0.0005)
        return x

    def describe(self):
        return {}


t0 = time.time()
try:
    with signals_as_exceptions():
        run_scenario(SelfSignalling(), np.zeros((8, 1), np.float32),
                     ScenarioSettings(scenario=SCEN, min_seconds=5.0, warmup=1, use_loadgen=True, log_dir=LOGS),
                     batch=BATCH, log_name="cut")
except KeyboardInterrupt:
    print(f"after {time.time() - t0:.2f} s"); sys.exit(130)
except Terminated:
    print(f"after {time.time() - t0:.2f} s"); sys.exit(143)
print("not interrupted"); sys.exit(0)
