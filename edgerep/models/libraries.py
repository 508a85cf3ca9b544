"""Import the model libraries users already hold (timm, torchvision), or say why not.

A torchvision wheel built against another torch (PyPI's x86_64 torchvision is a CUDA build;
beside a CPU torch its native ``_C`` library cannot load) fails at import with "operator
torchvision::nms does not exist": its fake-tensor registrations assume the native ops exist.
Its model definitions are pure Python and do not need them, so when the native library did
not load, the two missing operator schemas are declared (no kernel: calling ``nms`` still
fails, with torch's "no kernel" error) and the import is retried. A torchvision whose native
library loaded is never touched.
"""
from __future__ import annotations

import importlib
import re
import sys
from types import ModuleType

import torch

#: the schemas torchvision's own C++ library declares for the ops its Python import registers
#: fake kernels for unconditionally (torchvision/csrc/ops/nms.cpp, quantized/qnms)
_TORCHVISION_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_MISSING_OP = re.compile(r"operator torchvision::(\w+) does not exist")
_declared: list[torch.library.Library] = []  # kept alive: a Library's definitions die with it


class LibraryUnavailable(ImportError):
    """The library is not installed, or cannot be imported here (the message says why)."""


def _purge(prefix: str) -> None:
    for name in [n for n in sys.modules if n == prefix or n.startswith(prefix + ".")]:
        del sys.modules[name]


def _declare(op: str) -> None:
    if not _declared:
        _declared.append(torch.library.Library("torchvision", "FRAGMENT"))
    _declared[0].define(_TORCHVISION_SCHEMAS[op])


def import_torchvision() -> ModuleType:
    """``torchvision``, importable even where its native ops do not match this torch."""
    for _ in range(len(_TORCHVISION_SCHEMAS) + 1):
        try:
            return importlib.import_module("torchvision")
        except ModuleNotFoundError as e:
            raise LibraryUnavailable(f"torchvision is not installed ({e}); pip install 'edgerep[timm]'") from None
        except RuntimeError as e:
            m = _MISSING_OP.search(str(e))
            if not m or m.group(1) not in _TORCHVISION_SCHEMAS:
                raise LibraryUnavailable(f"torchvision {_version('torchvision')} does not import beside torch "
                                         f"{torch.__version__}: {e}") from None
            _purge("torchvision")
            _declare(m.group(1))
    raise LibraryUnavailable(f"torchvision does not import beside torch {torch.__version__}")


def import_timm() -> ModuleType:
    """``timm`` (it imports torchvision, so that goes through ``import_torchvision`` first)."""
    try:
        import_torchvision()
    except LibraryUnavailable:
        pass  # older timm releases import without torchvision; let timm's own import decide
    try:
        return importlib.import_module("timm")
    except ImportError as e:
        raise LibraryUnavailable(f"timm cannot be imported ({e}); pip install 'edgerep[timm]'") from None


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


__all__ = ["LibraryUnavailable", "import_timm", "import_torchvision"]
