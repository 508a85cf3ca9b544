"""The model registry: architecture name -> constructor, listed by ``edgerep zoo``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from edgerep.errors import EdgerepError


class UnknownModelError(EdgerepError):
    """An architecture name that is neither registered nor an importable ``package.module:factory``."""


@dataclass(frozen=True)
class ModelInfo:
    """What ``edgerep zoo`` shows about one registered architecture."""

    name: str
    family: str
    description: str
    input_shape: tuple[int, int, int]  # (C, H, W) the model was designed for
    num_classes: int
    factory: Callable[..., nn.Module] = field(repr=False, compare=False)
    task: str = "classify"  # what the outputs are: class logits, or an image ("sr": num_classes is 0)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "description": self.description,
                "input_shape": list(self.input_shape), "num_classes": self.num_classes, "task": self.task}


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(name: str, family: str, description: str, input_shape: tuple[int, int, int],
                   num_classes: int = 1000, task: str = "classify"
                   ) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register ``factory(**kwargs) -> nn.Module`` under ``name`` (names are unique)."""

    def deco(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelInfo(name, family, description, tuple(input_shape), num_classes, factory, task)
        return factory

    return deco


def get_model_info(name: str) -> ModelInfo:
    """The registry entry for ``name``; ``UnknownModelError`` (with close names) otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "run `edgerep zoo` for the list"
        raise UnknownModelError(f"--arch {name!r}: no such model in the registry", hint=hint) from None


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model (random weights, train mode) with constructor ``kwargs``."""
    info = get_model_info(name)
    try:
        return info.factory(**kwargs)
    except TypeError as e:
        raise UnknownModelError(f"--arch {name!r}: bad constructor arguments {kwargs}: {e}") from None
    except ImportError as e:  # a block family this checkout does not have yet
        raise UnknownModelError(f"--arch {name!r}: its building block is not available here: {e}") from None


def list_models(family: str | None = None) -> list[ModelInfo]:
    """Every registered model (optionally one family), in registration order."""
    return [m for m in _REGISTRY.values() if family is None or m.family == family]
