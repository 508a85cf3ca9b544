"""Untrusted files never run code. Each malicious file carries a pickle whose ``__reduce__`` creates a marker
file when unpickled; edgerep must refuse it with one line and the marker must not exist afterwards. A
positive control proves every payload is live (plain ``pickle.loads`` / ``trust=True`` does create it).
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from edgerep.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "checkpoints" / "repvgg_digits.pt"


class Payload:
    """Unpickling this calls ``open(marker, "w")``: creates the marker file (harmless, observable)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_edgerep_dict(marker: Path) -> dict:
    o = torch.load(DEMO, map_location="cpu", weights_only=True)
    return {**o, "meta": {**o["meta"], "extra": {"note": Payload(marker)}}}


def _zip_with_pickle(path: Path, marker: Path) -> None:
    """A hand-made torch-style archive whose data.pkl is the payload."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(Payload(marker), protocol=2))
        zf.writestr("archive/version", "3\n")


# name -> writer(path, marker)
MALICIOUS = {
    "torch.save zip, payload as the object": lambda p, m: torch.save(Payload(m), p),
    "torch.save zip, payload inside a state_dict": lambda p, m: torch.save({"conv.weight": Payload(m)}, p),
    "torch.save zip, payload in an edgerep checkpoint's meta": lambda p, m: torch.save(_evil_edgerep_dict(m), p),
    "torch.save legacy (non-zip) format": lambda p, m: torch.save(Payload(m), p,
                                                                  _use_new_zipfile_serialization=False),
    "raw pickle protocol 0": lambda p, m: p.write_bytes(pickle.dumps(Payload(m), protocol=0)),
    "raw pickle protocol 2": lambda p, m: p.write_bytes(pickle.dumps(Payload(m), protocol=2)),
    "raw pickle protocol 5": lambda p, m: p.write_bytes(pickle.dumps(Payload(m), protocol=5)),
    "hand-made archive with a payload data.pkl": _zip_with_pickle,
}


def _make(tmp_path: Path, name: str, suffix: str = ".pt") -> tuple[Path, Path]:
    marker = tmp_path / "MARKER"
    path = tmp_path / f"evil{suffix}"
    MALICIOUS[name](path, marker)
    assert path.is_file() and not marker.exists()
    return path, marker


@pytest.mark.parametrize("name", list(MALICIOUS))
def test_payload_is_live_when_loaded_unsafely(name, tmp_path):
    """Positive control: the same bytes DO create the marker through an unsafe loader."""
    path, marker = _make(tmp_path, name)
    try:
        torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # the payload runs during unpickling; what the loader does next does not matter
        pass
    assert marker.exists()


@pytest.mark.parametrize("name", list(MALICIOUS))
def test_load_checkpoint_refuses_and_runs_nothing(name, tmp_path):
    from edgerep.checkpoint import load_checkpoint
    from edgerep.errors import CheckpointError

    path, marker = _make(tmp_path, name)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in info.value.one_line()
    assert not marker.exists()


def test_trust_flag_is_what_allows_code(tmp_path):
    """With trust=True (--trust-checkpoint) unpickling runs the file's code: the flag is the only way in."""
    from edgerep.checkpoint import load_checkpoint
    from edgerep.errors import CheckpointError

    path, marker = _make(tmp_path, "torch.save zip, payload as the object")
    with pytest.raises(CheckpointError):  # the payload returns a file object, not a model
        load_checkpoint(path, trust=True)
    assert marker.exists()


COMMANDS = {
    "deploy": lambda p, t: ["deploy", p, "--out", t / "bundle", "--no-check"],
    "fold": lambda p, t: ["fold", p, "--out", t / "folded.pt"],
    "check": lambda p, t: ["check", p],
    "quantize": lambda p, t: ["quantize", p, "--out", t / "q", "--data", "digits"],
    "bench": lambda p, t: ["bench", p, "--seconds", "0.05"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("name", ["torch.save zip, payload in an edgerep checkpoint's meta", "raw pickle protocol 2"])
def test_every_command_refuses_without_running_code(command, name, tmp_path, capsys):
    path, marker = _make(tmp_path, name)
    rc = main([str(a) for a in COMMANDS[command](path, tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.startswith(f"edgerep {command}: error:")]
    assert len(lines) == 1 and str(path) in lines[0], err[-2000:]
    assert not marker.exists()
    assert not (tmp_path / "bundle").exists() and not (tmp_path / "folded.pt").exists()


def test_pt2_with_a_payload_runs_nothing(tmp_path, capsys):
    path, marker = _make(tmp_path, "hand-made archive with a payload data.pkl", suffix=".pt2")
    rc = main(["deploy", str(path), "--out", str(tmp_path / "bundle")])
    assert rc == 2 and str(path) in capsys.readouterr().err
    assert not marker.exists()


def test_npz_with_pickled_objects_runs_nothing(tmp_path):
    """np.savez pickles object arrays; edgerep's .npz reader never unpickles (no allow_pickle)."""
    from edgerep.data import open_dataset
    from edgerep.errors import DataError

    marker = tmp_path / "MARKER"
    x = np.empty(4, dtype=object)
    for i in range(4):
        x[i] = Payload(marker)
    np.savez(tmp_path / "evil.npz", x=x, y=np.arange(4))
    with np.load(tmp_path / "evil.npz", allow_pickle=True) as z:  # positive control: unsafe reading runs it
        z["x"]
    assert marker.exists()
    marker.unlink()
    with pytest.raises(DataError, match="Python objects"):
        ds = open_dataset(tmp_path / "evil.npz", split="calib")
        next(ds.batches(4))
    assert not marker.exists()


def test_payload_as_labels_array_runs_nothing(tmp_path):
    from edgerep.data import open_dataset
    from edgerep.errors import DataError

    marker = tmp_path / "MARKER"
    y = np.empty(4, dtype=object)
    y[:] = [Payload(marker)] * 4
    np.savez(tmp_path / "evil.npz", x=np.zeros((4, 8, 8), np.uint8), y=y)
    with pytest.raises(DataError, match="'y'"):
        ds = open_dataset(tmp_path / "evil.npz", split="calib")
        next(ds.batches(4))
    assert not marker.exists()

