"""deploy as a list of named stages over one context: each stage runs (and is tested) alone."""
from __future__ import annotations

import json
from pathlib import Path

from edgerep.pipeline import STAGES, DeployContext, DeployOptions, stage_fold, stage_load

DEMO = Path(__file__).resolve().parents[1] / "examples" / "checkpoints" / "repvgg_digits.pt"


def test_a_deploy_runs_every_stage_once_in_the_pipeline_order(demo_bundle):
    """What a real deploy ran, in the order it ran them (its report's stage timings), is the pipeline."""
    ran = json.loads((demo_bundle / "report.json").read_text())["timings_s"]
    assert list(ran) == [*STAGES, "total"], list(ran)
    assert STAGES == ("load", "fold", "check", "export", "quantize", "build", "evaluate", "bench", "gate", "write")
    assert all(ran[s] >= 0 for s in STAGES) and ran["total"] >= sum(ran[s] for s in STAGES) - 0.01 * len(STAGES)


def test_load_and_fold_run_alone_without_a_bundle(tmp_path):
    said = []
    ctx = DeployContext(opts=DeployOptions(checkpoint=DEMO), say=lambda step, msg: said.append((step, msg)),
                        out=tmp_path / "never-written")
    stage_load(ctx)
    assert ctx.splits.test.has_labels and len(ctx.splits.selection) == 180
    assert ctx.report["preprocessing"]["source"] == "checkpoint" and ctx.report["splits"]["test"]["count"] == 359
    stage_fold(ctx)
    fold = ctx.report["fold"]
    assert fold["convs_after"] < fold["convs_before"] and fold["max_rel_error"] < 1e-5
    assert ctx.real_x.shape[0] == 16 and ctx.tmp is None and not (tmp_path / "never-written").exists()
