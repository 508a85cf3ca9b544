"""The fleet's edges without a cluster: the data-only wire format, the loopback patch of Ray's
private function, and Ray token authentication settings (a private HOME, never the user's)."""
from __future__ import annotations

import os
import pickle
import stat
import struct

import numpy as np
import pytest

from edgerep.errors import EdgerepError
from edgerep.fleet import wire


def _doc() -> dict:
    return {"rows": [{"name": "onnxruntime-cpu", "p50": 1.5, "ok": True, "none": None}],
            "artifacts": {"a.plan": b"\x00\x01plan"}, "x": np.arange(12, dtype=np.float32).reshape(3, 4),
            "n": np.int64(7)}


def test_wire_round_trip_is_data_with_checked_arrays() -> None:
    got = wire.decode(wire.encode(_doc()), {"$.x": ("<f4", [None, 4])})
    assert got["rows"] == _doc()["rows"] and got["artifacts"] == {"a.plan": b"\x00\x01plan"} and got["n"] == 7
    assert got["x"].dtype == np.float32 and got["x"].shape == (3, 4) and np.array_equal(got["x"], _doc()["x"])


@pytest.mark.parametrize("expect,needle", [
    ({"$.x": ("<f8", [None, 4])}, "dtype <f4, expected <f8"),
    ({"$.x": ("<f4", [3, 5])}, "shape [3, 4], expected [3, 5]"),
    ({"$.x": ("<f4", [None])}, "shape [3, 4], expected [None]"),
    ({}, "an array the reader does not expect"),
    ({"$.y": ("<f4", None)}, "an array the reader does not expect"),
])
def test_wire_refuses_an_array_other_than_expected(expect, needle) -> None:
    with pytest.raises(wire.WireError) as e:
        wire.decode(wire.encode(_doc()), expect)
    assert needle in str(e.value)


class _Runs:
    def __reduce__(self):
        return (os.mkdir, ("/nonexistent-edgerep-wire-test",))


def test_wire_refuses_pickles_and_damaged_bytes_without_loading_them() -> None:
    good = wire.encode({"a": b"xyz"})
    for bad, needle in [(pickle.dumps(_Runs()), "no wire header"),
                        (pickle.dumps({"a": 1}), "no wire header"),
                        (good[:-1], "blobs take"),
                        (good + b"!", "blobs take"),
                        (good[:len(wire.MAGIC) + 4], "truncated"),
                        (wire.MAGIC + struct.pack("<Q", 1 << 40), "does not fit")]:
        with pytest.raises(wire.WireError) as e:
            wire.decode(bad)
        assert needle in str(e.value)
    # a header that claims an array is bytes of another size: refused, not reshaped
    forged = wire.encode({"x": np.zeros((2, 2), np.float32)}).replace(b'"shape":[2,2]', b'"shape":[2,3]')
    with pytest.raises(wire.WireError, match="do not hold"):
        wire.decode(forged, {"$.x": ("<f4", None)})


def test_wire_encodes_data_only() -> None:
    for v in (np.array([object()]), {1: "int key"}, object(), {"k": {1, 2}}):
        with pytest.raises(wire.WireError):
            wire.encode(v)


def test_a_node_error_travels_as_data() -> None:
    def boom() -> None:
        raise ValueError("no such profile\nsecond line")

    assert wire.decode(wire.as_result(boom)) == {"error": "ValueError: no such profile"}


# ----------------------------------------------------------------------------------------------- loopback
ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'edgerep[fleet]')")


@pytest.fixture
def services(monkeypatch):
    """Ray's services module with its own resolve_ip_for_localhost restored after the test."""
    import ray._private.services as services

    monkeypatch.setattr(services, "resolve_ip_for_localhost", services.resolve_ip_for_localhost)
    return services


def test_loopback_patch_keeps_localhost_and_127_on_loopback(services) -> None:
    from edgerep.fleet.cluster import keep_loopback

    keep_loopback()
    assert services.resolve_ip_for_localhost("127.0.0.1") == "127.0.0.1"
    assert services.resolve_ip_for_localhost("localhost") == "127.0.0.1"
    assert services.resolve_ip_for_localhost("10.1.2.3") == "10.1.2.3"


def test_loopback_patch_refuses_when_rays_function_is_gone(services, monkeypatch, capsys) -> None:
    from edgerep.fleet import raynode
    from edgerep.fleet.cluster import keep_loopback

    monkeypatch.delattr(services, "resolve_ip_for_localhost")
    with pytest.raises(EdgerepError, match="resolve_ip_for_localhost"):
        keep_loopback()
    started = []
    monkeypatch.setattr("ray.scripts.scripts.main", lambda: started.append(1))
    assert raynode.main(["start", "--head", "--port", "1", "--node-ip-address", "localhost"]) == 2
    assert started == [] and "does not start one" in capsys.readouterr().err
    assert raynode.main(["start", "--address", "10.0.0.5:6379"]) == 0 and started == [1]  # not asked for loopback


# ----------------------------------------------------------------------------------------------- token
@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private HOME, and no Ray auth variables from the user's environment."""
    for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    yield tmp_path
    for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"):  # use_token writes these; monkeypatch restores the rest
        os.environ.pop(k, None)


def test_token_is_made_for_a_new_head_and_required_to_join(home) -> None:
    from edgerep.fleet.auth import use_token

    with pytest.raises(EdgerepError, match="no token is here") as e:
        use_token(create=False)  # a device with no token
    assert "--token-file" in e.value.hint
    said = use_token(create=True)  # `fleet up`
    token = home / ".ray" / "auth_token"
    assert said == f"token authentication on (new token file {token})" and os.environ["RAY_AUTH_MODE"] == "token"
    assert len(token.read_text()) == 64 and stat.S_IMODE(token.stat().st_mode) == 0o600
    assert use_token(create=False) == f"token authentication on (token file {token})"
    with pytest.raises(EdgerepError, match="--token-file"):
        use_token(create=False, token_file=home / "missing")


def test_explicit_auth_mode_is_respected(home, monkeypatch) -> None:
    from edgerep.fleet.auth import use_token

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert use_token(create=True) == "token authentication off (RAY_AUTH_MODE=disabled)"
    assert not (home / ".ray").exists()


# ----------------------------------------------------------------------------------------------- node side
def _shard(x: np.ndarray, start: int = 0, stop: int | None = None) -> bytes:
    n = len(x)
    return wire.encode({"index": 0, "start": start, "stop": n if stop is None else stop, "x": x,
                        "y": np.zeros(n, np.int64), "ref": np.zeros((n, 10), np.float32)})


@pytest.mark.parametrize("x,stop,needle", [
    (np.zeros((2, 3, 8, 8), np.float32), None, "$.x: shape [2, 3, 8, 8], expected [None, 1, 8, 8]"),
    (np.zeros((2, 1, 8, 8), np.float64), None, "$.x: dtype <f8, expected <f4"),
    (np.zeros((2, 1, 8, 8), np.float32), 3, "shard 0: 3 rows named, arrays of other lengths"),
])
def test_node_refuses_a_shard_other_than_the_spec_says(x, stop, needle) -> None:
    """The node decodes what it is sent against the model's input shape before any engine is built."""
    from edgerep.fleet.node import run_job_data

    spec = wire.encode({"target": "x86-cpu", "fp32": "m.onnx", "input_shape": [1, 8, 8],
                        "x_bench": np.zeros((1, 1, 8, 8), np.float32)})
    out = wire.decode(run_job_data(wire.encode({"m.onnx": b"onnx"}), spec, _shard(x, stop=stop)))
    assert out == {"error": f"WireError: {needle}"}
