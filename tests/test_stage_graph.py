"""deploy's stage graph: declared inputs wired by name, refused when unmet, printed by `deploy --explain`, kept in
docs/STAGES.md; engine rows composed by key; check skipped by its declared rule."""
from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from edgerep.pipeline import (DEPLOY_STAGES, RUN_CONTEXT, BuildOutput, DeployOptions, EngineEntry, merge_engine_rows,
                              stages_markdown)
from edgerep.stage_graph import Stage, StageClock, StageGraphError, check_graph, run_stage, run_stages

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "checkpoints" / "repvgg_digits.pt"
BY_NAME = {s.name: s for s in DEPLOY_STAGES}


def _out(x):
    """A stage result for the toy stages (the runner asks each result for its summary)."""
    class Out:
        value = x

        def summary(self):
            return f"gave {x}"
    return Out()


def test_deploy_stages_are_wired_and_each_need_is_given_earlier():
    check_graph(DEPLOY_STAGES, list(RUN_CONTEXT))
    given = set(RUN_CONTEXT) - {"bundle_dir"}
    for s in DEPLOY_STAGES:
        assert set(s.needs) <= given | ({"bundle_dir"} if s.in_bundle else set()), s.name
        given.add(s.gives)
    assert BY_NAME["bench"].needs == ("opts", "say", "bundle_dir", "load", "build")  # no silent reads of evaluate


@pytest.mark.parametrize("order,stage,missing", [
    (["load", "fold", "check", "export", "quantize", "bench", "build", "evaluate", "gate", "write"], "bench", "build"),
    (["fold", "load", "check", "export", "quantize", "build", "evaluate", "bench", "gate", "write"], "fold", "load"),
    (["load", "fold", "check", "export", "quantize", "build", "evaluate", "bench", "write"], "write", "gate"),
])
def test_a_stage_list_with_an_unmet_input_is_refused(order, stage, missing):
    with pytest.raises(StageGraphError, match=f"stage '{stage}' needs '{missing}'"):
        check_graph([BY_NAME[n] for n in order], list(RUN_CONTEXT))


def test_the_runner_refuses_an_unmet_input_before_running_any_stage():
    ran = []

    def first(opts):
        ran.append("first")
        return _out(1)

    def second(engines):  # nothing gives "engines"
        ran.append("second")
        return _out(2)

    @contextmanager
    def bundle():
        ran.append("bundle opened")
        yield Path("/nonexistent")

    stages = [Stage("first", first, "first", False, "starting"), Stage("second", second, "second", True, "starting")]
    with pytest.raises(StageGraphError, match="stage 'second' needs 'engines', and no earlier stage gives it"):
        run_stages(stages, {"opts": None}, bundle, lambda step, msg: None, StageClock())
    assert ran == []


def test_bundle_dir_outside_the_bundle_and_a_name_given_twice_are_refused():
    def wants_dir(bundle_dir):
        return _out(0)

    with pytest.raises(StageGraphError, match="exists only inside the bundle directory"):
        check_graph([Stage("early", wants_dir, "early", False, "")], ["opts", "bundle_dir"])
    with pytest.raises(StageGraphError, match="already gives"):
        check_graph([Stage("a", lambda opts: _out(0), "load", False, ""),
                     Stage("b", lambda opts: _out(0), "load", False, "")], ["opts"])
    with pytest.raises(StageGraphError, match="runs outside the bundle directory but comes after"):
        check_graph([Stage("a", lambda opts: _out(0), "a", True, ""),
                     Stage("b", lambda opts: _out(0), "b", False, "")], ["opts"])


def test_check_is_skipped_by_its_declared_rule_and_gives_none():
    """--no-check is check's declared ``enabled`` rule (no special case by name): it does not run, gives None,
    and every stage that reads its result accepts None."""
    check = BY_NAME["check"]
    assert check.enabled(DeployOptions(checkpoint=DEMO)) and not check.enabled(DeployOptions(checkpoint=DEMO,
                                                                                              run_check=False))
    assert [s.name for s in DEPLOY_STAGES if not s.enabled(DeployOptions(checkpoint=DEMO, run_check=False))] == \
        ["check"]
    said: list = []
    results = {"opts": DeployOptions(checkpoint=DEMO, run_check=False)}  # nothing check needs: it must not run
    run_stage(check, results, lambda step, msg: said.append((step, msg)), StageClock())
    assert results["check"] is None and said == []
    readers = [s for s in DEPLOY_STAGES if "check" in s.needs]
    assert {s.name for s in readers} == {"gate", "write"}
    for s in readers:
        assert "None" in str(s.fn.__annotations__["check"]), s.name


def _entry(key, name, precision):
    return EngineEntry(key, None, {"name": name, "precision": precision, "status": "built"})


def test_engine_parts_are_matched_to_rows_by_key_not_by_position():
    """What evaluate, bench and gate found for an engine lands on that engine's row, whatever order each part
    lists its engines in (rows stay in the profile's order)."""
    build = BuildOutput((_entry("onnxruntime-fp32-cpu", "onnxruntime-cpu", "fp32"),
                         _entry("onnxruntime-int8-cpu-cpu", "onnxruntime-cpu", "int8"),
                         _entry("torch-fp32-cpu", "torch-cpu", "fp32")))
    accuracy = {"torch-fp32-cpu": {"accuracy": {"top1": 97.0}}, "onnxruntime-int8-cpu-cpu": {"accuracy": {"top1": 91.0}},
                "onnxruntime-fp32-cpu": {"accuracy": {"top1": 98.0}}}
    latency = {"onnxruntime-int8-cpu-cpu": {"latency": {"p50_ms": 0.2}}, "onnxruntime-fp32-cpu": {"latency": {"p50_ms": 0.5}}}
    verdicts = {"onnxruntime-int8-cpu-cpu": {"verdict": "fail"}, "torch-fp32-cpu": {"verdict": "pass"},
                "onnxruntime-fp32-cpu": {"verdict": "pass"}}
    rows = merge_engine_rows(build, [accuracy, latency, verdicts])
    assert [(r["precision"], r["name"]) for r in rows] == [("fp32", "onnxruntime-cpu"), ("int8", "onnxruntime-cpu"),
                                                           ("fp32", "torch-cpu")]
    assert [r["accuracy"]["top1"] for r in rows] == [98.0, 91.0, 97.0]
    assert [r.get("latency") for r in rows] == [{"p50_ms": 0.5}, {"p50_ms": 0.2}, None]
    assert [r["verdict"] for r in rows] == ["pass", "fail", "pass"]
    assert build.engines[1].row == {"name": "onnxruntime-cpu", "precision": "int8", "status": "built"}  # untouched


def _explain(*args, cwd):
    return subprocess.run([sys.executable, "-m", "edgerep", "deploy", *args, "--explain"], capture_output=True,
                          text=True, cwd=cwd, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _blocks(text: str) -> dict[str, str]:
    """--explain's output per stage (after "stages, in order:"): its header line and the lines under it."""
    blocks: dict[str, str] = {}
    name = None
    for line in text.split("stages, in order:\n", 1)[1].splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            name = line.split(":")[0].strip()
            blocks[name] = ""
        blocks[name] += line + "\n"
    return blocks


def test_deploy_explain_prints_the_declared_graph_without_doing_any_work(tmp_path):
    p = _explain(cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    blocks = _blocks(p.stdout)
    assert list(blocks) == [s.name for s in DEPLOY_STAGES]  # every stage, in order
    for s in DEPLOY_STAGES:  # its needs, what it gives and where it runs, as declared
        assert f"needs  {', '.join(s.needs)}\n" in blocks[s.name] and f"gives  {s.gives}: {s.returns}" in blocks[s.name]
        assert ("inside the bundle" in blocks[s.name]) == s.in_bundle, s.name
    assert "skipped when --no-check" in p.stdout
    assert list(tmp_path.iterdir()) == [] and p.stderr == ""  # no output folder, no progress: no work

    p = _explain(str(DEMO), "--no-check", "--out", str(tmp_path / "bundle"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "(skipped with these options)" in _blocks(p.stdout)["check"]
    assert p.stdout.count("(skipped with these options)") == 1
    assert list(tmp_path.iterdir()) == []


def test_the_docs_page_is_the_declared_graph():
    page = (ROOT / "docs" / "STAGES.md").read_text()
    assert page == stages_markdown(), "docs/STAGES.md is stale: run python scripts/stages_doc.py"
