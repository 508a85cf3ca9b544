"""Long loops report counts and an ETA: a line every LINE_EVERY_S in a log, a live bar on a terminal,
nothing in a library call; calibration, evaluation and the quantizer's scoring loops are counted."""
from __future__ import annotations

import io

import numpy as np
import torch
from rich.console import Console
from torch import nn

from edgerep.progress import LineReporter, counted, eta_seconds, progress_line, reporting
from edgerep.quant.calibrate import ArrayDataset, calibrate_many
from edgerep.quant.export import export_onnx
from edgerep.report.console import step_progress


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_eta_is_the_rate_so_far():
    assert eta_seconds(25, 100, 10.0) == 30.0
    assert eta_seconds(0, 100, 10.0) is None and eta_seconds(5, None, 1.0) is None
    assert progress_line("calibration", 512, 1024, "images", 41.0) == "calibration: 512/1024 images, 41 s, ETA 41 s"


def test_a_log_gets_a_line_at_most_every_interval():
    clock, lines = FakeClock(), []
    with reporting(LineReporter(lines.append, every_s=10.0, clock=clock)):
        with counted("test set", 100, "samples") as tick:
            for _ in range(10):
                clock.t += 4.0
                tick(10)
    # 40 s for 100 samples, a line whenever 10 s passed since the last: at t=12, 24, 36
    assert lines == ["test set: 30/100 samples, 12 s, ETA 28 s", "test set: 60/100 samples, 24 s, ETA 16 s",
                     "test set: 90/100 samples, 36 s, ETA 4 s"]


def test_no_reporter_no_output(capsys):
    with counted("anything", 3) as tick:
        tick(3)
    assert capsys.readouterr() == ("", "")


def _tiny_onnx(folder):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()).eval()
    export_onnx(m, folder / "m.onnx", (3, 8, 8))
    return folder / "m.onnx"


def test_calibration_counts_its_images_in_a_log(tmp_path):
    lines = []
    data = ArrayDataset(np.zeros((20, 3, 8, 8), np.float32))
    with reporting(LineReporter(lines.append, every_s=0.0)):
        calibrate_many(_tiny_onnx(tmp_path), data, ("minmax",), batch_size=8, limit=20)
    assert [ln.split(",")[0] for ln in lines] == ["calibration: 8/20 images", "calibration: 16/20 images",
                                                   "calibration: 20/20 images"]


def test_evaluation_counts_its_samples_on_a_terminal_bar(tmp_path):
    from edgerep.bench.accuracy import collect_outputs
    from edgerep.engines.onnxruntime_engine import OrtEngine

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120)
    data = ArrayDataset(np.zeros((130, 3, 8, 8), np.float32))
    seen = []
    with step_progress(console=console) as say:
        say("evaluate", "evaluating")
        from edgerep import progress

        bars = progress._REPORTERS[-1].progress
        eng = OrtEngine(_tiny_onnx(tmp_path))
        orig = eng.run

        def run(x):  # what the bar shows while the loop runs
            seen.append([(t.description, t.completed, t.total) for t in bars.tasks if t.total])
            return orig(x)

        eng.run = run
        collect_outputs(eng, data.batches(64))
    assert seen == [[("onnxruntime-cpu fp32 (samples)", c, 130)] for c in (0, 64, 128)]
    assert "evaluate" in buf.getvalue()


def test_timing_shows_its_seconds(tmp_path):
    from edgerep.bench.scenarios import ScenarioSettings, run_scenario
    from edgerep.engines.onnxruntime_engine import OrtEngine

    lines = []
    eng = OrtEngine(_tiny_onnx(tmp_path))
    settings = ScenarioSettings(scenario="single-stream", min_seconds=2.0, warmup=2, use_loadgen=False)
    with reporting(LineReporter(lines.append, every_s=0.0)):
        run_scenario(eng, np.zeros((4, 3, 8, 8), np.float32), settings, batch=1, log_name="ort-fp32")
    assert [ln.split(",")[0] for ln in lines][:1] == ["timing ort-fp32: 1/2 s"]  # 2/2 when it ran past 2 s


def test_the_checks_sensitivity_counts_its_layers():
    from edgerep.quant.attribution import fold_for_check
    from edgerep.quant.sensitivity import as_batches, layer_sensitivity

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1)).eval()
    folded, layers = fold_for_check(model)
    lines = []
    with reporting(LineReporter(lines.append, every_s=0.0)):
        got = layer_sensitivity(folded, layers, as_batches([torch.randn(2, 3, 8, 8)]))
    assert len(got) == len(layers) == 2
    assert [ln.split(",")[0] for ln in lines] == ["sensitivity: 1/2 layers", "sensitivity: 2/2 layers"]
