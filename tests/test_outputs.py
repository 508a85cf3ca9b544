"""Every command that writes checks its output before any work: exit 2, one line, under a second;
the bundle lock is taken before the fold and never left behind; one cache root."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from edgerep.bundle import bundle_lock, lock_path
from edgerep.cli import main

DEMO = str(Path(__file__).resolve().parents[1] / "examples" / "checkpoints" / "repvgg_digits.pt")


def _report(tmp: Path) -> str:
    p = tmp / "report.json"
    p.write_text(json.dumps({"schema": "edgerep.report/1", "engines": []}))
    return str(p)


def _commands(tmp: Path, out: Path) -> dict[str, list[str]]:
    return {
        "deploy -o": ["deploy", DEMO, "-o", str(out / "bundle")],
        "fold -o": ["fold", DEMO, "-o", str(out / "x.pt")],
        "quantize -o": ["quantize", DEMO, "--data", "digits", "-o", str(out / "q")],
        "check --html": ["check", DEMO, "--html", str(out / "html")],
        "bench --out": ["bench", DEMO, "--out", str(out / "b.json")],
        "gate --junit": ["gate", _report(tmp), "--junit", str(out / "g.xml")],
        "gate --markdown": ["gate", _report(tmp), "--markdown", str(out / "g.md")],
        "build --out": ["build", DEMO, "--out", str(out / "e")],
        "build --timing-cache": ["build", DEMO, "--out", str(tmp / "e"), "--timing-cache", str(out / "tc")],
        "bench --log-dir": ["bench", DEMO, "--log-dir", str(out / "logs")],
        "deploy --cache-dir": ["deploy", DEMO, "-o", str(tmp / "bundle"), "--cache-dir", str(out / "c")],
        "quantize --cache-dir": ["quantize", DEMO, "--data", "digits", "-o", str(tmp / "q"), "--cache-dir",
                                 str(out / "c")],
        "diff --markdown": ["diff", _report(tmp), _report(tmp), "--markdown", str(out / "d.md")],
        "diff --html": ["diff", _report(tmp), _report(tmp), "--html", str(out / "d.html")],
        "fleet deploy --junit": ["fleet", "deploy", str(tmp), "--address", "127.0.0.1:1", "--junit",
                                 str(out / "g.xml")],
        "fleet deploy --out": ["fleet", "deploy", str(tmp), "--address", "127.0.0.1:1", "--out", str(out / "f")],
    }


CASES = {
    "virtual file system": (lambda tmp: Path("/proc/edgerep-no-such-dir"), ("/proc",)),
    "a file where a folder should be": (lambda tmp: _file(tmp / "somefile.py"), ("somefile.py", "is a file")),
}
FILE_OUTPUTS = ("fold -o", "bench --out", "gate --junit", "gate --markdown", "diff --markdown",
                "fleet deploy --junit")


def _file(p: Path) -> Path:
    p.write_text("precious")
    return p


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("command", ["deploy -o", "fold -o", "quantize -o", "check --html", "bench --out",
                                     "gate --junit", "gate --markdown", "build --out", "build --timing-cache",
                                     "bench --log-dir", "deploy --cache-dir", "quantize --cache-dir",
                                     "diff --markdown", "diff --html", "fleet deploy --junit", "fleet deploy --out"])
def test_unwritable_output_is_exit_2_before_any_work(command, case, tmp_path, capsys):
    make, words = CASES[case]
    out = make(tmp_path)
    argv = _commands(tmp_path, out)[command]
    t0 = time.perf_counter()
    rc = main(argv)
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert all(w in err for w in words) and command.split()[-1] in err, err
    assert elapsed < 1.0, f"{command}: {elapsed:.2f}s"
    if out.is_file():
        assert out.read_text() == "precious"


@pytest.mark.parametrize("command", FILE_OUTPUTS)
def test_missing_parent_of_an_output_file_is_exit_2(command, tmp_path, capsys):
    out = tmp_path / "missing"
    assert main(_commands(tmp_path, out)[command]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and str(out) in err
    assert not out.exists()


def test_fold_into_a_path_under_a_file_is_exit_2_not_file_exists(tmp_path, capsys):
    (tmp_path / "somefile.py").write_text("x = 1\n")
    assert main(["fold", DEMO, "-o", str(tmp_path / "somefile.py" / "x.pt")]) == 2
    assert "somefile.py is a file, not a directory" in capsys.readouterr().err


def test_two_deploys_are_told_apart_before_the_fold(tmp_path, capsys):
    out = tmp_path / "bundle"
    with bundle_lock(out):
        t0 = time.perf_counter()
        assert main(["deploy", DEMO, "-o", str(out), "--no-check"]) == 2
        assert time.perf_counter() - t0 < 1.0  # nothing was loaded or folded
    assert "another edgerep process is writing this bundle" in capsys.readouterr().err
    assert not lock_path(out).exists() and not out.exists()


@pytest.mark.parametrize("ending", ["success", "failure", "interrupt"])
def test_no_lock_file_remains(ending, tmp_path):
    out = tmp_path / "bundle"
    exc = {"success": None, "failure": RuntimeError, "interrupt": KeyboardInterrupt}[ending]
    try:
        with bundle_lock(out):
            assert lock_path(out).exists()
            if exc is not None:
                raise exc("stop")
    except (RuntimeError, KeyboardInterrupt):
        pass
    assert list(tmp_path.iterdir()) == []


def test_one_cache_root_for_calibration_plans_and_timing_caches(tmp_path, monkeypatch):
    from edgerep.engines import plan_cache
    from edgerep.pipeline import default_cache_dir

    monkeypatch.setenv("EDGEREP_CACHE", str(tmp_path / "c"))
    monkeypatch.delenv("EDGEREP_CACHE_DIR", raising=False)
    assert default_cache_dir() == tmp_path / "c" / "calibration"
    assert plan_cache.timing_cache_path("10.3.0", "x", "8.7").parent == tmp_path / "c" / "tensorrt"
