"""Import the model libraries users already hold (timm, torchvision), or say why not.

A torchvision wheel built for another torch (PyPI's x86-64 torchvision is a CUDA build; beside a
CPU torch its native library cannot load) fails at import with "operator torchvision::nms does not
exist". edgerep does not paper over that (declaring the missing operators would change torch's
global operator registry for the user's own code too): it says which torchvision and which torch
disagree, and how to get a matching pair.
"""
from __future__ import annotations

import importlib
from types import ModuleType

import torch


class LibraryUnavailable(ImportError):
    """The library is not installed, or cannot be imported here (the message says why)."""


def import_torchvision() -> ModuleType:
    """``torchvision``, or ``LibraryUnavailable`` naming the mismatch when it does not import beside this torch."""
    try:
        return importlib.import_module("torchvision")
    except ModuleNotFoundError as e:
        raise LibraryUnavailable(f"torchvision is not installed ({e}); pip install 'edgerep[timm]'") from None
    except (RuntimeError, ImportError, OSError) as e:
        raise LibraryUnavailable(
            f"torchvision {_version('torchvision')} does not import beside torch {_version('torch')} "
            f"({torch.version.cuda and 'CUDA ' + torch.version.cuda or 'CPU'} build): {str(e).splitlines()[0]}; "
            "install the torchvision built for this torch (scripts/setup.sh says which it tried)") from None


def import_timm() -> ModuleType:
    """``timm`` (it imports torchvision: a torchvision that does not import is named as the reason)."""
    try:
        import_torchvision()
    except LibraryUnavailable as e:
        if "is not installed" not in str(e):
            raise LibraryUnavailable(f"timm cannot be imported: {e}") from None
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
