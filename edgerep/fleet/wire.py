"""The fleet's data-only wire format, and reading a Ray result without Ray's unpickler.

Ray pickles whatever a task returns, and ``ray.get`` unpickles it: a node that returned a crafted
pickle would run code on the CI runner. So a fleet task returns one ``bytes`` value (Ray stores
bytes as raw data, metadata ``RAW``), and the CI side reads it with :func:`fetch`, which takes the
object's raw buffer and refuses anything else (never calls Ray's deserializer). The bytes are
:func:`encode`'s: a JSON document plus raw blobs (``bytes``, or numeric arrays whose dtype and
shape :func:`decode` checks against what the reader expects; an array nobody expects is refused).
"""
from __future__ import annotations

import json
import struct
from pathlib import PurePath
from typing import Any

import numpy as np

MAGIC = b"EDGEREP-WIRE/1\n"
_BLOB = "__edgerep_blob__"
#: the only array dtypes that travel: plain little-endian numbers (never ``object``)
DTYPES = frozenset({"|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8"})
MAX_HEADER = 64 << 20  # a header beyond this is not a fleet result


class WireError(ValueError):
    """Bytes that are not the fleet's data format, or data other than what the reader expects."""


class RemoteFailure(RuntimeError):
    """A fleet task ended without a data result (the message says how; nothing of it was unpickled)."""


class TaskFailed(RemoteFailure):
    """The task ran on its node and failed there (it raised, or returned something other than data): the
    device's answer, not a lost connection, so it is never retried elsewhere."""


class WorkerCrashedError(RemoteFailure):
    """Ray said the task's worker process died (``WORKER_DIED``)."""


class NodeDiedError(RemoteFailure):
    """Ray said the task's node died (``NODE_DIED``)."""


class TaskCancelledError(RemoteFailure):
    """Ray said the task was cancelled (``TASK_CANCELLED``)."""


_RAY_ENDED = {"WORKER_DIED": WorkerCrashedError, "NODE_DIED": NodeDiedError, "TASK_CANCELLED": TaskCancelledError}


def encode(doc: Any) -> bytes:
    """``doc`` (dicts with str keys, lists, str, numbers, bool, None, bytes, numeric arrays) as bytes."""
    blobs: list[tuple[dict, bytes]] = []

    def walk(v: Any, where: str) -> Any:
        if isinstance(v, dict):
            if _BLOB in v or not all(isinstance(k, str) for k in v):
                raise WireError(f"{where}: keys must be strings (and not {_BLOB!r})")
            return {k: walk(x, f"{where}.{k}") for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x, f"{where}[{i}]") for i, x in enumerate(v)]
        if isinstance(v, (bytes, bytearray, memoryview)):
            blobs.append(({"kind": "bytes"}, bytes(v)))
            return {_BLOB: len(blobs) - 1}
        if isinstance(v, np.ndarray):
            a = np.ascontiguousarray(v)
            a = a.astype(a.dtype.newbyteorder("<")) if a.dtype.byteorder == ">" else a
            if a.dtype.str not in DTYPES:
                raise WireError(f"{where}: dtype {a.dtype} does not travel (numbers only)")
            blobs.append(({"kind": "array", "dtype": a.dtype.str, "shape": list(a.shape)}, a.tobytes()))
            return {_BLOB: len(blobs) - 1}
        if isinstance(v, np.generic):
            return walk(v.item(), where)
        if isinstance(v, PurePath):
            return str(v)
        if v is None or isinstance(v, (str, bool, int, float)):
            return v
        raise WireError(f"{where}: {type(v).__name__} does not travel (data only)")

    body = walk(doc, "$")
    header = json.dumps({"doc": body, "blobs": [dict(m, size=len(b)) for m, b in blobs]},
                        allow_nan=True, separators=(",", ":")).encode()
    return b"".join([MAGIC, struct.pack("<Q", len(header)), header, *(b for _, b in blobs)])


def decode(data: bytes, arrays: dict[str, tuple[str, Any]] | None = None) -> Any:
    """The document :func:`encode` wrote; ``WireError`` for anything else.

    ``arrays`` maps the dotted path of each array the reader expects (``"$.x"``) to its dtype and
    shape (``None`` in a dimension: any size; ``None`` for the shape: any); any other array, or another
    dtype or shape, is refused.
    """
    arrays = arrays or {}
    if not isinstance(data, (bytes, bytearray)) or not bytes(data[:len(MAGIC)]) == MAGIC:
        raise WireError("not edgerep fleet data (no wire header)")
    view = memoryview(data)
    off = len(MAGIC)
    if len(data) < off + 8:
        raise WireError("truncated header")
    (n,) = struct.unpack_from("<Q", data, off)
    off += 8
    if n > MAX_HEADER or off + n > len(data):
        raise WireError(f"header length {n} does not fit the {len(data)} bytes received")
    try:
        header = json.loads(bytes(view[off:off + n]))
    except ValueError as e:
        raise WireError(f"header is not JSON ({e})") from None
    off += n
    metas = header.get("blobs") if isinstance(header, dict) else None
    if not isinstance(metas, list) or "doc" not in header:
        raise WireError("header has no doc / blobs")
    spans = []
    for i, m in enumerate(metas):
        size = m.get("size") if isinstance(m, dict) else None
        if not isinstance(size, int) or size < 0:
            raise WireError(f"blob {i}: bad size")
        spans.append((off, off + size))
        off += size
    if off != len(data):
        raise WireError(f"blobs take {off} bytes, {len(data)} were received")
    used: set[int] = set()

    def blob(i: Any, where: str) -> Any:
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < len(metas) or i in used:
            raise WireError(f"{where}: bad blob reference {i!r}")
        used.add(i)
        m, (a, b) = metas[i], spans[i]
        if m.get("kind") == "bytes":
            return bytes(view[a:b])
        if m.get("kind") != "array":
            raise WireError(f"{where}: unknown blob kind {m.get('kind')!r}")
        if where not in arrays:
            raise WireError(f"{where}: an array the reader does not expect")
        want_dtype, want_shape = arrays[where]
        dtype, shape = m.get("dtype"), m.get("shape")
        if dtype not in DTYPES or np.dtype(dtype) != np.dtype(want_dtype):
            raise WireError(f"{where}: dtype {dtype}, expected {np.dtype(want_dtype).str}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in shape):
            raise WireError(f"{where}: bad shape {shape!r}")
        if want_shape is not None and (len(shape) != len(want_shape)
                                       or any(w is not None and w != d for w, d in zip(want_shape, shape))):
            raise WireError(f"{where}: shape {shape}, expected {list(want_shape)}")
        if int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize != b - a:
            raise WireError(f"{where}: {b - a} bytes do not hold {dtype} {shape}")
        return np.frombuffer(bytes(view[a:b]), dtype=dtype).reshape(shape)

    def walk(v: Any, where: str) -> Any:
        if isinstance(v, dict):
            if _BLOB in v:
                return blob(v[_BLOB], where)
            return {k: walk(x, f"{where}.{k}") for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x, f"{where}[{i}]") for i, x in enumerate(v)]
        return v

    doc = walk(header["doc"], "$")
    if len(used) != len(metas):
        raise WireError("blobs that the document does not name")
    return doc


def _error_name(kind: bytes) -> str:
    try:
        from ray.core.generated.common_pb2 import ErrorType

        return ErrorType.Name(int(kind))
    except Exception:  # not an error code: some other serialized object
        return f"metadata {kind[:40]!r}"


def fetch(ray: Any, ref: Any, timeout: float | None = None) -> bytes:
    """The raw bytes a fleet task returned, read from Ray's object store without deserializing it.

    ``RemoteFailure`` (as ``WorkerCrashedError`` / ``NodeDiedError`` / ``TaskCancelledError`` where Ray
    said so) when the task left no raw bytes: a pickled exception or object is never loaded here.
    """
    worker = getattr(getattr(ray, "_private", None), "worker", None)
    core = getattr(getattr(worker, "global_worker", None), "core_worker", None)
    get_objects = getattr(core, "get_objects", None)
    if get_objects is None:
        raise RemoteFailure("this Ray has no core_worker.get_objects: edgerep will not read fleet results "
                            "through ray.get, which unpickles what a node sent")
    timeout_ms = -1 if timeout is None else int(max(0.0, timeout) * 1000)
    data, metadata, *_ = get_objects([ref], timeout_ms)[0]
    kind = bytes(metadata or b"").split(b",")[0]
    if kind == b"RAW":
        return b"" if data is None else data.to_pybytes()
    name = _error_name(kind)
    if name in _RAY_ENDED:
        raise _RAY_ENDED[name](f"{name}: the node or its worker ended before returning a result")
    if name == "TASK_EXECUTION_EXCEPTION":
        raise TaskFailed("the task raised before returning data (its pickled exception is not loaded "
                         "here; the node's Ray logs have it)")
    if name.startswith("metadata"):  # a serialized object, not data and not a Ray error: the node misbehaved
        raise TaskFailed(f"the task returned no data ({name}); it was not loaded")
    raise RemoteFailure(f"the task returned no data ({name}); it was not loaded")


def read(ray: Any, ref: Any, arrays: dict[str, tuple[str, Any]] | None = None,
         timeout: float | None = None) -> Any:
    """:func:`fetch` then :func:`decode`; a node's own ``{"error": ...}`` result is raised as ``RemoteFailure``."""
    doc = decode(fetch(ray, ref, timeout), arrays)
    if isinstance(doc, dict) and set(doc) == {"error"}:
        raise TaskFailed(f"on the node: {doc['error']}")
    return doc


def as_result(fn: Any, *args: Any) -> bytes:
    """Run ``fn(*args)`` and return its result encoded; an exception becomes ``{"error": "Type: message"}``."""
    try:
        return encode(fn(*args))
    except Exception as e:  # the node reports, as data, why it could not do the job
        return encode({"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:2000]})


__all__ = ["RemoteFailure", "TaskFailed", "WireError", "as_result", "decode", "encode", "fetch", "read"]
