"""`edgerep fold` and `edgerep zoo` through the real CLI entry point; the shipped demo checkpoints."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgerep.checkpoint import load_checkpoint
from edgerep.cli import main
from edgerep.data import open_dataset
from edgerep.models import create_model

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "checkpoints" / "repvgg_digits.pt"
DEMOS = [DEMO, ROOT / "examples" / "checkpoints" / "acnet_digits.pt"]



def _accuracy(model, meta, splits=("test", "val")) -> float:
    """Top-1 over ``splits``; test + val is the 30% split the demo checkpoints were scored on when trained."""
    correct = total = 0
    with torch.no_grad():
        for split in splits:
            for x, y in open_dataset("digits", split=split, meta=meta).batches(256):
                correct += int((model(torch.from_numpy(x)).argmax(1).numpy() == y).sum())
                total += len(y)
    return correct / total


def test_fold_json_writes_a_folded_checkpoint_that_reads_back(tmp_path, capsys):
    out = tmp_path / "folded.pt"
    assert main(["fold", str(DEMO), "-o", str(out), "--json", "--blocks-only"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["fold"]["convs_after"] < rep["fold"]["convs_before"]
    assert rep["fold"]["params_after"] < rep["fold"]["params_before"]
    assert rep["fold"]["max_rel_error"] < 1e-5 and rep["readback_max_abs_error"] == 0.0
    back, orig = load_checkpoint(out), load_checkpoint(DEMO)
    assert back.meta.folded and not orig.meta.folded
    assert back.meta.class_names == orig.meta.class_names and back.meta.mean == orig.meta.mean
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in back.model.modules())
    x, _ = next(open_dataset("digits", split="test", meta=back.meta).batches(64))
    with torch.no_grad():
        torch.testing.assert_close(back.model(torch.from_numpy(x)), orig.model(torch.from_numpy(x)),
                                   rtol=1e-4, atol=1e-4)


def test_default_fold_with_graph_folder_prints_table_and_reads_back(tmp_path, capsys):
    # no --blocks-only: edgerep's blocks, then the traced-graph folder, as users run it
    assert main(["fold", str(DEMO), "-o", str(tmp_path / "f.pt")]) == 0
    text = capsys.readouterr().out
    for word in ("parameters", "conv layers", "max abs error", "92,906", "82,850", "read back"):
        assert word in text
    back = load_checkpoint(tmp_path / "f.pt")
    assert back.meta.folded and back.meta.extra["fold_generic"] is True


def test_an_inexact_fold_is_refused_and_nothing_is_written(tmp_path, capsys):
    out = tmp_path / "f.pt"
    assert main(["fold", str(DEMO), "-o", str(out), "--blocks-only", "--tolerance", "0"]) == 2
    assert "tolerance" in capsys.readouterr().err and not out.exists()


def _bad_files(tmp: Path) -> dict[str, tuple[list[str], str]]:
    data = DEMO.read_bytes()
    (tmp / "cut.pt").write_bytes(data[: len(data) // 3])
    (tmp / "notes.pt").write_text("hello\n")
    torch.save(create_model("repvgg_digits").state_dict(), tmp / "sd.pt")
    torch.save(create_model("repvgg_digits"), tmp / "whole.pt")
    return {
        "truncated": (["cut.pt"], "truncated"),
        "not a checkpoint": (["notes.pt"], "not a PyTorch checkpoint"),
        "wrong arch": (["sd.pt", "--arch", "acnet_digits"], "likely cause: wrong --arch"),
        "pickled module": (["whole.pt"], "--trust-checkpoint"),
        "no arch": (["sd.pt"], "--arch"),
        "bad kwargs": (["sd.pt", "--arch", "repvgg_digits", "--arch-kwargs", "{oops"], "--arch-kwargs"),
    }


@pytest.mark.parametrize("case", ["truncated", "not a checkpoint", "wrong arch", "pickled module", "no arch",
                                  "bad kwargs"])
def test_bad_checkpoints_exit_2_with_one_line(tmp_path, capsys, case):
    args, needle = _bad_files(tmp_path)[case]
    rc = main(["fold", str(tmp_path / args[0]), *args[1:], "-o", str(tmp_path / "o.pt"), "--blocks-only"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("edgerep fold: error:") and "Traceback" not in err
    assert needle in err
    assert not (tmp_path / "o.pt").exists()


def test_trusted_pickled_module_folds(tmp_path, capsys):
    _bad_files(tmp_path)
    rc = main(["fold", str(tmp_path / "whole.pt"), "--trust-checkpoint", "--arch", "repvgg_digits",
               "-o", str(tmp_path / "o.pt"), "--json", "--blocks-only"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["source_format"] == "pickled-module"
    assert load_checkpoint(tmp_path / "o.pt").meta.folded


def test_bad_checkpoint_in_a_real_process_has_no_traceback(tmp_path):
    (tmp_path / "notes.pt").write_text("hello\n")
    p = subprocess.run([sys.executable, "-m", "edgerep", "fold", str(tmp_path / "notes.pt"), "-o",
                        str(tmp_path / "o.pt")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "Traceback" not in p.stderr and "notes.pt" in p.stderr


def test_fold_help_explains_trust():
    p = subprocess.run([sys.executable, "-m", "edgerep", "fold", "--help"], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert p.returncode == 0 and "RUNS CODE" in p.stdout and "examples:" in p.stdout


def test_zoo_lists_models_and_rejects_unknown_family(capsys):
    assert main(["zoo", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["repvgg_a0"]["input_shape"] == [3, 224, 224] and rows["repvgg_digits"]["num_classes"] == 10
    assert main(["zoo", "--family", "acnet", "--params", "--json"]) == 0
    acnet = json.loads(capsys.readouterr().out)
    assert {r["family"] for r in acnet} == {"acnet"}
    assert all(r["params_folded"] < r["params_train"] for r in acnet)
    assert main(["zoo", "--family", "nope"]) == 2
    assert "families:" in capsys.readouterr().err


@pytest.mark.parametrize("path", DEMOS, ids=lambda p: p.stem)
def test_shipped_demo_checkpoints_are_accurate_small_and_fold_exactly(path):
    assert path.stat().st_size < 1_000_000
    loaded = load_checkpoint(path)
    assert loaded.meta.dataset == "digits" and loaded.meta.input_shape == (1, 16, 16)
    acc = _accuracy(loaded.model, loaded.meta)
    assert acc >= 0.97
    assert acc == pytest.approx(loaded.meta.extra["training"]["test_top1"], abs=1e-4)
    from edgerep.fold.model import fold_model

    assert _accuracy(fold_model(loaded.model, generic=False), loaded.meta) == pytest.approx(acc, abs=1 / 539)


def test_fold_unknown_architecture_reports_graph_regions(tmp_path, capsys):
    """`edgerep fold --arch package.module:factory` on blocks edgerep has no code for: the traced-graph
    folder's regions (what folded into what) are in the report and the folded checkpoint reads back."""
    import json

    from unseen_blocks import randomize_bn, tinynet_digits

    torch.save(randomize_bn(tinynet_digits(), seed=3).state_dict(), tmp_path / "foreign.pt")
    assert main(["fold", str(tmp_path / "foreign.pt"), "--arch", "unseen_blocks:tinynet_digits",
                 "--input-shape", "1,16,16", "-o", str(tmp_path / "folded.pt"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    kinds = [g["kind"] for g in r["graph"]["folded_regions"]]
    assert "5-branch sum" in kinds and r["graph"]["refused_regions"] == []
    assert r["fold"]["convs_after"] < r["fold"]["convs_before"] and r["readback_max_abs_error"] == 0.0


def test_zoo_without_timm_prints_the_pip_extra_whole(monkeypatch, capsys) -> None:
    # here, not in test_timm_fold.py: that file skips whole where timm is absent, the case this test is about
    """rich markup would swallow "[timm]" in "pip install 'edgerep[timm]'": the line is escaped."""
    import sys

    from edgerep.cli import main

    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError, as where it is absent
    monkeypatch.setitem(sys.modules, "torchvision", None)  # (and torchvision, which edgerep imports first)
    assert main(["zoo"]) == 0
    assert "pip install 'edgerep[timm]'" in capsys.readouterr().out
