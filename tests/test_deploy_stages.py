"""deploy as a list of declared stages wired by name: each stage runs (and is tested) alone."""
from __future__ import annotations

import json
from pathlib import Path

from edgerep.pipeline import STAGES, DeployOptions, stage_fold, stage_load

DEMO = Path(__file__).resolve().parents[1] / "examples" / "checkpoints" / "repvgg_digits.pt"


def test_a_deploy_runs_every_stage_once_in_the_pipeline_order(demo_bundle):
    """What a real deploy ran, in the order it ran them (its report's stage timings), is the pipeline."""
    ran = json.loads((demo_bundle / "report.json").read_text())["timings_s"]
    assert list(ran) == [*STAGES, "total"], list(ran)
    assert STAGES == ("load", "fold", "check", "export", "quantize", "build", "evaluate", "bench", "gate", "write")
    assert all(ran[s] >= 0 for s in STAGES) and ran["total"] >= sum(ran[s] for s in STAGES) - 0.01 * len(STAGES)


def test_load_and_fold_run_alone_without_a_bundle(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    said = []
    opts = DeployOptions(checkpoint=DEMO)
    load = stage_load(opts=opts, say=lambda step, msg: said.append((step, msg)))
    assert load.splits.test.has_labels and len(load.splits.selection) == 180
    assert load.report["preprocessing"]["source"] == "checkpoint" and load.report["splits"]["test"]["count"] == 359
    fold = stage_fold(opts=opts, load=load)
    assert fold.report["convs_after"] < fold.report["convs_before"] and fold.report["max_rel_error"] < 1e-5
    assert fold.real_x.shape[0] == 16 and list(tmp_path.iterdir()) == []  # no bundle, nothing written


def test_the_fold_check_on_real_images_runs_in_pieces_bounded_in_bytes(monkeypatch):
    """16 selection images verify the fold; at 640x640 they go through the unfolded model a few at a time (one
    batch of 16 held 1.6 GB), at 224 in one piece as before. Every image is checked once."""
    from types import SimpleNamespace

    import edgerep.model_path as mp
    from edgerep.data.base import Preprocess
    from edgerep.data.synthetic import SyntheticDataset
    from edgerep.pipeline import VERIFY_BATCH_BYTES

    seen = []
    done = SimpleNamespace(verify=SimpleNamespace(seconds=0.0, to_dict=lambda: {}), provenance=[], graph=None,
                           counts=lambda: {})
    monkeypatch.setattr(mp, "fold_loaded", lambda loaded, **k: seen.append([len(t) for t in k["extra_inputs"]]) or done)
    for size, pieces in ((224, [16]), (640, [3, 3, 3, 3, 3, 1])):
        pre = Preprocess((3, size, size), (0.0,) * 3, (1.0,) * 3)
        load = SimpleNamespace(input_shape=pre.input_shape, loaded=None,
                               splits=SimpleNamespace(selection=SyntheticDataset(pre, 20, seed=1)))
        fold = stage_fold(opts=DeployOptions(checkpoint=DEMO), load=load)
        assert seen[-1] == pieces and fold.real_x.shape[0] == 16
        assert max(seen[-1]) * 3 * size * size * 4 <= max(VERIFY_BATCH_BYTES, 3 * size * size * 4)


def test_the_checks_selection_images_come_in_batches_bounded_in_bytes(monkeypatch, tmp_path):
    """The check's 16 selection images: one batch at 224 (as before), a few at a time at 640x640 (one batch of 16
    held 2.4 GB in each layer's sensitivity replay)."""
    from types import SimpleNamespace

    import edgerep.quant.check as check
    import edgerep.report.check_html as html
    from edgerep.data.base import Preprocess
    from edgerep.data.synthetic import SyntheticDataset
    from edgerep.pipeline import _run_check

    seen = []
    report = SimpleNamespace(to_dict=lambda: {})
    monkeypatch.setattr(check, "check_model", lambda model, **k: seen.append([len(x) for x, _ in k["eval_batches"]])
                        or report)
    monkeypatch.setattr(html, "write_check_html", lambda rep, out, **k: tmp_path / "check" / "check.html")
    for size, batches in ((224, [16]), (640, [3, 3, 3, 3, 3, 1])):
        pre = Preprocess((3, size, size), (0.0,) * 3, (1.0,) * 3)
        _run_check(None, [None], None, SyntheticDataset(pre, 40, seed=1), tmp_path)
        assert seen[-1] == batches


def test_the_latency_query_pool_is_bounded_in_bytes():
    """bench draws its queries from distinct selection images: 64 at 224 (as before), 13 at 640 (64 held 315 MB
    through bench, the deploy's second-highest stage there), never fewer than one query's batch."""
    from types import SimpleNamespace

    from edgerep.data.base import Preprocess
    from edgerep.data.synthetic import SyntheticDataset
    from edgerep.pipeline import _bench_queries

    for size, batch, pool in ((224, 1, 64), (640, 1, 13), (640, 16, 16)):
        pre = Preprocess((3, size, size), (0.0,) * 3, (1.0,) * 3)
        load = SimpleNamespace(input_shape=pre.input_shape, splits=SimpleNamespace(selection=SyntheticDataset(pre, 80)))
        x, source = _bench_queries(DeployOptions(checkpoint=DEMO, batch=batch), load)
        assert x.shape[0] == pool and source == f"selection set: {pool} distinct samples"
