"""``edgerep check`` end to end: JSON on stdout, the HTML page and its plots, --strict, bad input."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from edgerep.cli import main

CKPT = Path(__file__).resolve().parents[1] / "examples" / "checkpoints" / "repvgg_digits.pt"


@pytest.fixture(scope="module")
def hostile_ckpt(tmp_path_factory):
    from edgerep.quant.hostile import save_hostile_checkpoint

    path = tmp_path_factory.mktemp("hostile") / "hostile.pt"
    h = save_hostile_checkpoint(path)
    return path, h


def test_json_report_on_the_digits_demo(capsys):
    rc = main(["check", str(CKPT), "--json", "--calib-limit", "32", "--eval-limit", "8"])
    out = capsys.readouterr().out
    assert rc == 0
    d = json.loads(out)
    assert d["schema"] == "edgerep.check/2"
    assert d["data"]["spec"] == "digits"  # taken from the checkpoint's meta.dataset
    assert d["data"]["calib_images"] == 32 and d["data"]["eval_images"] == 8
    names = [layer["name"] for layer in d["layers"]]
    assert names[0] == "stage0" and names[-1] == "linear"
    assert all(layer["metrics"]["activation"]["sqnr_minmax_db"] > 0 for layer in d["layers"])


def test_strict_html_on_a_hostile_checkpoint(hostile_ckpt, tmp_path, capsys):
    path, h = hostile_ckpt
    out_dir = tmp_path / "page"
    rc = main(["check", str(path), "--strict", "--no-sensitivity", "--html", str(out_dir)])
    captured = capsys.readouterr()
    assert rc == 1  # bad layers under plain INT8 fail the gate
    assert "gate failed" in captured.err and "stage2.1" in captured.err
    assert "identity-BN gamma/sigma" in captured.out
    page = (out_dir / "check.html").read_text()
    for name in h.expected_layers:
        assert name in page
    assert "identity-BN gamma/sigma" in page and "QARepVGG" in page
    images = re.findall(r'<img src="([^"]+)"', page)
    assert "check_sqnr.png" in images and any(i.startswith("check_attribution_") for i in images)
    for img in images:
        data = (out_dir / img).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    assert not list(tmp_path.glob(".check-*"))  # the temporary folder is gone


def test_fail_without_strict_says_it_exits_0(hostile_ckpt, capsys):
    """check is a report: FAIL exits 0 without --strict, and its last line says so (and how to get 1)."""
    path, _ = hostile_ckpt
    assert main(["check", str(path), "--no-sensitivity", "--no-data"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("FAIL (2 layer(s) bad under plain INT8; a report, not a gate: exit 0; --strict exits 1)"), last
    assert main(["check", str(path), "--no-sensitivity", "--no-data", "--strict"]) == 1
    assert "FAIL (2 layer(s) bad under plain INT8; --strict: exit 1)" in capsys.readouterr().out


def test_without_data_only_weights_are_judged(hostile_ckpt, capsys):
    path, _ = hostile_ckpt
    rc = main(["check", str(path), "--json", "--no-sensitivity"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert d["data"]["calib_images"] == 0
    assert all(layer["metrics"]["activation"] is None for layer in d["layers"])
    bad = {layer["name"] for layer in d["layers"] if layer["verdict"] == "bad"}
    assert bad == {"stage2.1", "stage3.2"}  # the median-channel SQNR sees the outliers without data


def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
    assert main(["check", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.pt" in err[0]
    assert main(["check", str(CKPT), "--calib-limit", "0"]) == 2
    assert "--calib-limit" in capsys.readouterr().err


def test_help_teaches_with_examples(capsys):
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    out = capsys.readouterr().out
    assert "edgerep check examples/checkpoints/repvgg_digits.pt" in out
    assert "--strict" in out and "identity-BN" in out
