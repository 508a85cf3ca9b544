"""The CI example's edgerep commands parse with today's CLI, and its diff really gets a baseline: the
artifact a push to main keeps is the one pull requests restore, holding the file the diff reads."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

from edgerep.cli import build_parser

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ci" / "github-actions-edgerep.yml"


def _commands(text: str) -> list[list[str]]:
    """Every `edgerep ...` command line, folded (`>-`) lines and trailing backslashes joined."""
    text = re.sub(r"\\\n\s*", " ", text)
    text = re.sub(r"run: >-\n((?:\s{10,}.*\n)+)", lambda m: "run: " + " ".join(m.group(1).split()) + "\n", text)
    out = []
    for line in text.splitlines():
        m = re.search(r"(?:run:\s*)?(edgerep \w+ .*)$", line.strip())
        if m and not line.strip().startswith("#"):
            out.append(shlex.split(m.group(1))[1:])
    return out


def test_every_edgerep_command_in_the_example_parses():
    cmds = _commands(EXAMPLE.read_text())
    assert {c[0] for c in cmds} >= {"deploy", "gate", "diff"}
    for argv in cmds:
        args = build_parser(only=argv[0]).parse_args(argv)  # SystemExit (a failed test) on an unknown flag
        assert args.command == argv[0]


def test_the_diff_baseline_is_the_artifact_main_keeps():
    text = EXAMPLE.read_text()
    kept = re.search(r"upload-artifact@v4\n\s+with:\n\s+name: (\S+)\n\s+path: \|\n((?:\s+bundle/\S+\n)+)", text)
    restored = re.search(r"download-artifact@v4\n\s+with:\n\s+name: (\S+)\n\s+path: (\S+)\n\s+run-id: (.+)", text)
    assert kept and restored and kept.group(1) == restored.group(1)
    kept_files = {Path(p.strip()).name for p in kept.group(2).split()}
    assert {"report.json", "manifest.json"} <= kept_files
    diff = next(c for c in _commands(text) if c[0] == "diff")
    assert diff[1] == f"{restored.group(2)}/report.json"  # the restored artifact's own file
    assert "steps.base.outputs.run_id" in restored.group(3)  # main's run, not this one
    assert "--branch main" in text and "--status success" in text


def test_the_examples_edgerep_lines_run_on_the_demo(tmp_path):
    """The example's own command lines on the digits demo: deploy, gate, then diff against the report a
    push to main keeps (here the same run's, so the diff must pass: one deploy keeps the test fast and
    its latency comparison free of chance); every one exits 0."""
    import os
    import shutil
    import subprocess
    import sys

    root = EXAMPLE.parents[2]
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(root / "examples" / "checkpoints" / "repvgg_digits.pt", tmp_path / "checkpoints" / "model.pt")
    env = {**os.environ, "PYTHONPATH": str(root), "EDGEREP_CACHE": str(tmp_path / "cache")}
    cmds = {c[0]: c for c in _commands(EXAMPLE.read_text())}
    # the demo carries its data set: data/val -> digits; fewer calibration samples and bench time for speed
    deploy = [("digits" if a == "data/val" else a) for a in cmds["deploy"]] + [
        "--no-check", "--calib-samples", "64", "--bench-seconds", "0.05"]

    def run(argv: list[str]) -> None:
        r = subprocess.run([sys.executable, "-m", "edgerep.cli", *argv], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, (argv, r.stderr[-2000:])

    run(deploy)
    run(cmds["gate"])
    (tmp_path / "baseline").mkdir()  # what the upload-artifact / download-artifact pair carries
    for name in ("report.json", "manifest.json"):
        shutil.copy(tmp_path / "bundle" / name, tmp_path / "baseline" / name)
    run(cmds["diff"])
    assert (tmp_path / "gate.xml").is_file() and (tmp_path / "diff.md").read_text().strip()
    assert (tmp_path / "bundle" / "diff.html").is_file()
