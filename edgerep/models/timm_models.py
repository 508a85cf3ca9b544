"""``--arch timm:NAME``: a timm architecture for a timm state_dict, built without downloading anything.

``timm.create_model(NAME, pretrained=False, **arch_kwargs)`` builds the train-time model; the
checkpoint's own weights (timm's key names, loaded as they are) fill it. Input shape, mean and std
come from timm's pretrained config for the name (read from timm's registry, no download).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from torch import nn

from edgerep.errors import EdgerepError

PREFIX = "timm:"
#: keyword arguments that would make timm fetch weights: edgerep loads them from the checkpoint
_NO_DOWNLOAD = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path")


@dataclass(frozen=True)
class TimmDefaults:
    """What timm's pretrained config says about a name: input (C, H, W), mean, std, classifier."""

    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classifier: str | None
    num_classes: int


def is_timm_arch(arch: str | None) -> bool:
    """``timm:NAME``."""
    return bool(arch) and str(arch).startswith(PREFIX)


def _timm(arch: str) -> Any:
    from edgerep.models.libraries import LibraryUnavailable, import_timm

    try:
        return import_timm()
    except LibraryUnavailable as e:
        raise EdgerepError(f"--arch {arch!r}: {e}", hint="pip install 'edgerep[timm]'") from None


def _name(arch: str) -> tuple[Any, str]:
    timm, name = _timm(arch), arch[len(PREFIX):]
    if not timm.is_model(name):
        import difflib

        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(PREFIX + c for c in close)}?" if close else "see timm.list_models()"
        raise EdgerepError(f"--arch {arch!r}: timm {timm.__version__} has no model {name!r}", hint=hint)
    return timm, name


def create_timm_model(arch: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model(NAME, pretrained=False, **kwargs)`` for ``arch = "timm:NAME"``."""
    timm, name = _name(arch)
    bad = [k for k in _NO_DOWNLOAD if kwargs.get(k)]
    if bad:
        raise EdgerepError(f"--arch-kwargs {bad[0]!r}: edgerep takes the weights from the checkpoint and "
                           "downloads nothing; drop it")
    kwargs = {k: v for k, v in kwargs.items() if k not in _NO_DOWNLOAD}
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as e:
        raise EdgerepError(f"--arch-kwargs: timm's {name!r} rejected {kwargs}: {e}") from None


def timm_defaults(arch: str) -> TimmDefaults:
    """Input shape and preprocessing timm records for the name (its pretrained config)."""
    timm, name = _name(arch)
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name, allow_unregistered=True)
    shape = tuple(int(v) for v in (getattr(cfg, "input_size", None) or (3, 224, 224)))
    mean = tuple(float(v) for v in (getattr(cfg, "mean", None) or (0.485, 0.456, 0.406)))
    std = tuple(float(v) for v in (getattr(cfg, "std", None) or (0.229, 0.224, 0.225)))
    classifier = getattr(cfg, "classifier", None)
    return TimmDefaults((shape[0], shape[1], shape[2]), mean, std,
                        classifier if isinstance(classifier, str) else None, int(getattr(cfg, "num_classes", 1000)))


def infer_num_classes(arch: str, kwargs: Mapping[str, Any], sd: Mapping[str, Any]) -> dict:
    """``num_classes`` read off the checkpoint's classifier (timm's ``pretrained_cfg.classifier``)."""
    if "num_classes" in kwargs:
        return dict(kwargs)
    head = timm_defaults(arch).classifier
    w = sd.get(f"{head}.weight") if head else None
    if w is not None and getattr(w, "dim", lambda: 0)() in (2, 4):  # linear, or a 1x1 conv head
        return {**kwargs, "num_classes": int(w.shape[0])}
    return dict(kwargs)


def timm_status() -> tuple[bool, str]:
    """(usable, one line): whether ``--arch timm:NAME`` works here, and with which timm."""
    from edgerep.models.libraries import LibraryUnavailable, import_timm

    try:
        timm = import_timm()
    except LibraryUnavailable as e:
        return False, str(e)
    return True, f"timm {timm.__version__}: --arch timm:NAME accepts any of its {len(timm.list_models())} names"


__all__ = ["PREFIX", "TimmDefaults", "is_timm_arch", "create_timm_model", "timm_defaults", "infer_num_classes",
           "timm_status"]
