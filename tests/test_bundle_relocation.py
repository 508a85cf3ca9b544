"""A bundle is relocatable: `edgerep bench` finds the unfolded checkpoint deploy read (hash-checked)
when the bundle is read from another folder, moved with its project, or named with --checkpoint,
and says plainly why there is no baseline when the checkpoint cannot be found."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgerep.cli import main

DEMO = Path(__file__).resolve().parents[1] / "examples" / "checkpoints" / "repvgg_digits.pt"
QUICK = ["--iterations", "3", "--warmup", "1", "--timer", "builtin", "--min-queries", "1"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder where deploy ran with relative paths: ckpt/model.pt -> out/bundle."""
    root = tmp_path_factory.mktemp("reloc") / "proj"
    (root / "ckpt").mkdir(parents=True)
    shutil.copy(DEMO, root / "ckpt" / "model.pt")
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    try:
        assert main(["deploy", "ckpt/model.pt", "--out", "out/bundle", "--no-check", "--calib-samples", "64",
                     "--bench-seconds", "0.05", "--cache-dir", str(root.parent / "cache")]) == 0
    finally:
        mp.undo()
    return root


def _bench(bundle: Path, out: Path, *extra: str) -> dict:
    assert main(["bench", str(bundle), "--out", str(out), *QUICK, *extra]) == 0
    return json.loads(out.read_text())


def test_manifest_locates_the_checkpoint_relative_to_the_bundle(project):
    inputs = json.loads((project / "out" / "bundle" / "manifest.json").read_text())["inputs"]
    assert inputs["checkpoint"] == "ckpt/model.pt"  # as given
    assert inputs["checkpoint_from_bundle"] == "../../ckpt/model.pt"
    assert inputs["checkpoint_resolved"] == str((project / "ckpt" / "model.pt").resolve())


def test_bench_from_another_folder_keeps_the_unfolded_baseline(project, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = _bench(project / "out" / "bundle", tmp_path / "b.json")
    assert r["baseline"]["name"] == "torch-cpu-unfolded"
    assert r["model"]["unfolded_checkpoint"] == str(project / "out" / "bundle" / "../../ckpt/model.pt")


def test_bench_of_a_project_moved_whole_keeps_the_unfolded_baseline(project, tmp_path, monkeypatch):
    moved = tmp_path / "elsewhere" / "proj"
    shutil.copytree(project, moved)
    monkeypatch.chdir(tmp_path)
    (project / "ckpt" / "model.pt").rename(project / "ckpt" / "gone.pt")  # the original place is empty
    try:
        r = _bench(moved / "out" / "bundle", tmp_path / "b.json")
    finally:
        (project / "ckpt" / "gone.pt").rename(project / "ckpt" / "model.pt")
    assert r["baseline"]["name"] == "torch-cpu-unfolded"
    assert r["model"]["unfolded_checkpoint"].startswith(str(moved / "out" / "bundle"))


def test_a_bundle_without_its_checkpoint_says_why_and_how(project, tmp_path, monkeypatch, capsys):
    alone = tmp_path / "alone" / "bundle"
    shutil.copytree(project / "out" / "bundle", alone)
    m = json.loads((alone / "manifest.json").read_text())
    m["inputs"]["checkpoint_resolved"] = str(tmp_path / "deleted.pt")  # as if the original were deleted
    (alone / "manifest.json").write_text(json.dumps(m))
    monkeypatch.chdir(tmp_path)
    r = _bench(alone, tmp_path / "b.json")
    out = capsys.readouterr()
    assert r["baseline"] is None and "not reachable" in r["model"]["baseline_note"]
    assert "--checkpoint" in r["model"]["baseline_note"] and "deleted.pt" in r["model"]["baseline_note"]
    assert "no unfolded baseline" in out.err + out.out
    r = _bench(alone, tmp_path / "c.json", "--checkpoint", str(project / "ckpt" / "model.pt"))
    assert r["baseline"]["name"] == "torch-cpu-unfolded"


def test_a_different_file_at_the_checkpoint_path_is_not_the_baseline(project, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ckpt").mkdir()
    shutil.copy(project / "out" / "bundle" / "model.folded.pt", tmp_path / "ckpt" / "model.pt")  # same name
    alone = tmp_path / "b2"
    shutil.copytree(project / "out" / "bundle", alone)
    m = json.loads((alone / "manifest.json").read_text())
    m["inputs"].pop("checkpoint_resolved"), m["inputs"].pop("checkpoint_from_bundle")  # a bundle from before
    (alone / "manifest.json").write_text(json.dumps(m))
    r = _bench(alone, tmp_path / "b.json")
    assert r["baseline"] is None and "a different file (sha256)" in r["model"]["baseline_note"]
    assert main(["bench", str(alone), "--checkpoint", str(tmp_path / "ckpt" / "model.pt"), *QUICK]) == 2
    err = capsys.readouterr().err
    assert "--checkpoint" in err and "not the checkpoint" in err
