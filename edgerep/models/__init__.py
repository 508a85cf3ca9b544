"""Architectures edgerep can build by name (``edgerep zoo``), and the registry behind them.

``create_model(name, **kwargs)``, ``list_models()``, ``register_model(...)``; importing this
package registers every family module below.
"""
from __future__ import annotations

from edgerep.models.registry import (
    ModelInfo,
    UnknownModelError,
    create_model,
    get_model_info,
    list_models,
    register_model,
)
from edgerep.models import repvgg as _repvgg  # noqa: F401  (registers)
from edgerep.models import resnet as _resnet  # noqa: F401
from edgerep.models import small as _small  # noqa: F401
from edgerep.models import mobileone as _mobileone  # noqa: F401
from edgerep.models import ecbsr as _ecbsr  # noqa: F401
from edgerep.models import repdet as _repdet  # noqa: F401

__all__ = ["ModelInfo", "UnknownModelError", "create_model", "get_model_info", "list_models", "register_model"]
