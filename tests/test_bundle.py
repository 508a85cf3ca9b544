"""Bundles appear whole or not at all: exceptions, SIGTERM, SIGKILL leftovers, locks, ENOSPC."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from edgerep.bundle import TMP_MARK, atomic_bundle, clean_stale_temps
from edgerep.errors import EdgerepError


def _leftovers(parent, name):
    return [p for p in parent.iterdir() if p.name.startswith(f".{name}{TMP_MARK}")]


def test_success_renames_into_place(tmp_path):
    out = tmp_path / "bundle"
    with atomic_bundle(out) as tmp:
        (tmp / "a.txt").write_text("x")
        assert not out.exists()
    assert (out / "a.txt").read_text() == "x"
    assert _leftovers(tmp_path, "bundle") == []


def test_exception_leaves_nothing_and_keeps_old_bundle(tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_bundle(out, force=True) as tmp:
            (tmp / "new.txt").write_text("new")
            raise RuntimeError("boom")
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    assert _leftovers(tmp_path, "bundle") == []


def test_existing_bundle_needs_force_and_file_path_refused(tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "x").write_text("1")
    with pytest.raises(EdgerepError, match="already exists") as info:
        with atomic_bundle(out):
            pass
    assert "--force" in info.value.one_line()
    f = tmp_path / "file"
    f.write_text("i am a file")
    with pytest.raises(EdgerepError, match="is a file"):
        with atomic_bundle(f):
            pass
    assert f.read_text() == "i am a file"


def test_force_replaces(tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with atomic_bundle(out, force=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert _leftovers(tmp_path, "bundle") == []


def test_no_space_left_is_one_line_error(tmp_path):
    out = tmp_path / "bundle"
    with pytest.raises(EdgerepError, match="no space left"):
        with atomic_bundle(out) as tmp:
            (tmp / "part").write_text("half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert not out.exists() and _leftovers(tmp_path, "bundle") == []


SCRIPT = textwrap.dedent("""
    import sys, time
    from edgerep.bundle import atomic_bundle
    with atomic_bundle(sys.argv[1]) as tmp:
        (tmp / "part").write_text("half written")
        print("writing", flush=True)
        time.sleep(30)
""")


def _start_writer(out):
    p = subprocess.Popen([sys.executable, "-c", SCRIPT, str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "writing"
    return p


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_write_leaves_nothing(tmp_path, sig):
    out = tmp_path / "bundle"
    p = _start_writer(out)
    p.send_signal(sig)
    p.wait(timeout=20)
    assert not out.exists()
    assert _leftovers(tmp_path, "bundle") == []


def test_sigkill_leftover_is_hidden_and_cleaned_by_next_writer(tmp_path):
    out = tmp_path / "bundle"
    p = _start_writer(out)
    p.kill()
    p.wait(timeout=20)
    assert not out.exists()  # the half-written directory is never at the output path
    assert len(_leftovers(tmp_path, "bundle")) == 1
    with atomic_bundle(out) as tmp:
        (tmp / "ok").write_text("1")
    assert _leftovers(tmp_path, "bundle") == []


def test_two_writers_same_output(tmp_path):
    out = tmp_path / "bundle"
    p = _start_writer(out)
    try:
        with pytest.raises(EdgerepError, match="another edgerep process"):
            with atomic_bundle(out):
                pass
    finally:
        p.terminate()
        p.wait(timeout=20)


def test_clean_stale_temps_keeps_live_writers(tmp_path):
    live = tmp_path / f".b{TMP_MARK}{os.getpid()}-abc"
    live.mkdir()
    dead = tmp_path / f".b{TMP_MARK}999999999-abc"
    dead.mkdir()
    removed = clean_stale_temps(tmp_path, "b")
    assert removed == [dead] and live.exists()


@pytest.mark.parametrize("sig,exc", [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, BaseException)])
def test_swallowed_signal_still_prevents_the_commit(tmp_path, sig, exc):
    """Python drops an exception raised inside a finalizer; the writer remembers the signal and refuses
    to rename the half-done bundle into place anyway."""
    import time as _time

    out = tmp_path / "bundle"
    with pytest.raises(exc):
        with atomic_bundle(out) as tmp:
            (tmp / "part").write_text("half")
            try:
                os.kill(os.getpid(), sig)
                _time.sleep(0.5)
            except BaseException:  # swallowed, as in a __del__
                pass
    assert not out.exists() and _leftovers(tmp_path, "bundle") == []
