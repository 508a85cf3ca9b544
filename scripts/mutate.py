#!/usr/bin/env python3
"""Mutation run: apply each registered mutant to a private copy of the tree, run the tests that
must catch it, and report killed / survived. A check whose mutant survives is a check that tests
nothing.

Mutants live in scripts/mutants/*.toml, one table per mutant:

    [[mutant]]
    name = "overlap check off"          # what the mutant breaks, in words
    issue = "20.2"                      # the issue item it guards
    file = "edgerep/data/splits.py"     # relative to the repository root
    find = "if overlap:"                # exact text, must occur exactly once in the file
    replace = "if False:"
    tests = ["tests/test_splits.py::test_overlap_is_refused"]

The working tree is never touched: the tracked files (plus uncommitted edits) are copied into a
temporary folder, the mutant is applied there, and pytest runs there with PYTHONPATH pointing at the
copy (subprocesses the tests start import the copy too). Each mutant's tests are first run on the
unmutated copy (once per distinct test list): a test that already fails cannot kill anything, and is
reported as such.

    .venv/bin/python scripts/mutate.py              # every mutant
    .venv/bin/python scripts/mutate.py --only overlap --only nan
    .venv/bin/python scripts/mutate.py --list

Exit 0 when every mutant was killed, 1 when any survived, was stale (its text no longer in the file) or
its baseline failed, 2 on a bad registry.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = ROOT / "scripts" / "mutants"


@dataclass(frozen=True)
class Mutant:
    """One deliberate bug and the tests that must fail when it is present."""

    name: str
    issue: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]
    source: str


def load_mutants(folder: Path = REGISTRY) -> list[Mutant]:
    """Every mutant registered under `folder`, checked for the fields a run needs."""
    mutants: list[Mutant] = []
    for path in sorted(folder.glob("*.toml")):
        data = tomllib.loads(path.read_text())
        for i, entry in enumerate(data.get("mutant", [])):
            missing = [k for k in ("name", "file", "find", "replace", "tests") if k not in entry]
            if missing:
                raise SystemExit(f"mutate: {path.name} mutant #{i + 1}: missing {', '.join(missing)}")
            if not entry["tests"]:
                raise SystemExit(f"mutate: {path.name} mutant {entry['name']!r}: names no test")
            mutants.append(Mutant(entry["name"], str(entry.get("issue", "")), entry["file"], entry["find"],
                                  entry["replace"], tuple(entry["tests"]), path.name))
    return mutants


def copy_tree(dest: Path) -> None:
    """The tracked and untracked-but-not-ignored files of the working tree, as they are now."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for raw in listed:
        if not raw:
            continue
        rel = raw.decode()
        src = ROOT / rel
        if not src.is_file():
            continue  # deleted in the working tree
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


def run_tests(tree: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, float, str]:
    """pytest on `tests` inside `tree`; (exit code, seconds, last lines of output)."""
    env = dict(os.environ, PYTHONPATH=str(tree) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONDONTWRITEBYTECODE="1")
    t0 = time.monotonic()
    try:
        p = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                           cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
        code, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired:
        code, out = -1, f"timed out after {timeout:.0f} s"
    tail = "\n".join(out.strip().splitlines()[-3:])
    return code, time.monotonic() - t0, tail


class StaleMutant(Exception):
    """The mutant no longer applies (its file or text changed): reported, and the run goes on."""


def apply(tree: Path, m: Mutant) -> str:
    """Apply the mutant in `tree`; returns the file's original text (to restore)."""
    path = tree / m.file
    if not path.is_file():
        raise StaleMutant(f"no file {m.file}")
    text = path.read_text()
    count = text.count(m.find)
    if count != 1:
        raise StaleMutant(f"`find` occurs {count} times in {m.file} (needs 1)")
    path.write_text(text.replace(m.find, m.replace))
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", default=[], help="run mutants whose name contains this (repeatable)")
    ap.add_argument("--registry", action="append", default=[],
                    help="run the mutants of this registry file, e.g. roles.toml (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the registered mutants and exit")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per pytest run (default 600)")
    args = ap.parse_args(argv)

    mutants = load_mutants()
    if args.registry:
        mutants = [m for m in mutants if m.source in args.registry or m.source.removesuffix(".toml") in args.registry]
    if args.only:
        mutants = [m for m in mutants if any(o.lower() in m.name.lower() for o in args.only)]
    if args.list:
        for m in mutants:
            print(f"[{m.issue or '-'}] {m.name}  ({m.file}; {len(m.tests)} test(s); {m.source})")
        return 0
    if not mutants:
        print("mutate: no mutant matched", file=sys.stderr)
        return 2

    results: list[tuple[Mutant, str, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="edgerep-mutate-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)
        baselines: dict[tuple[str, ...], tuple[int, float, str]] = {}  # one unmutated run per test list
        for m in mutants:
            if m.tests not in baselines:
                baselines[m.tests] = run_tests(tree, m.tests, args.timeout)
            code, secs, tail = baselines[m.tests]
            if code != 0:
                verdict = "BASELINE FAILS"
            else:
                try:
                    original = apply(tree, m)
                except StaleMutant as e:
                    verdict, secs, tail = "STALE", 0.0, f"{m.source}: {e}"
                else:
                    try:
                        code, secs, tail = run_tests(tree, m.tests, args.timeout)
                    finally:
                        (tree / m.file).write_text(original)
                    verdict = "killed" if code != 0 else "SURVIVED"
            results.append((m, verdict, secs, tail))
            print(f"{verdict:>15}  [{m.issue or '-'}] {m.name}  ({secs:.1f} s)", flush=True)
            if verdict != "killed":
                print("                 " + tail.replace("\n", "\n                 "), flush=True)

    killed = sum(1 for _, v, _, _ in results if v == "killed")
    print(f"\nmutants: {killed} killed, {len(results) - killed} not killed, of {len(results)}")
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
