"""User code named on the command line as ``package.module:function`` (``--metric``, ``--postprocess``)."""
from __future__ import annotations

import importlib
from typing import Callable

from edgerep.errors import EdgerepError


def load_function(spec: str, flag: str) -> Callable:
    """The callable ``spec`` names; an ``EdgerepError`` naming ``flag`` when it is malformed or cannot be imported."""
    if ":" not in spec:
        raise EdgerepError(f"{flag} {spec!r} is not of the form package.module:function")
    mod_name, fn_name = spec.split(":", 1)
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise EdgerepError(f"{flag} {spec!r} cannot be imported: {e}") from None
    if not callable(fn):
        raise EdgerepError(f"{flag} {spec!r} is not callable")
    return fn
