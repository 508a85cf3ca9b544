"""edgerep checkpoints: safe loading of every accepted format, metadata, atomic saving.

An edgerep checkpoint is a ``torch.save``d dict ``{"edgerep_checkpoint": FORMAT_VERSION,
"meta": CheckpointMeta.to_dict(), "state_dict": ...}``: it carries the architecture
(registry name + kwargs), preprocessing, class names and the data set, and loads with
``weights_only=True``. Also accepted: a plain state_dict (with ``arch``), the official RepVGG /
MobileOne / ACNet / DBB key layouts (``edgerep.checkpoint_formats``), a ``torch.export``
program (``.pt2``), and - only with ``trust=True`` - a whole pickled module, because
unpickling runs whatever code the file names.
"""
from __future__ import annotations

import importlib
import os
import pickle
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from edgerep.data.base import IMAGENET_MEAN, IMAGENET_STD
from edgerep.errors import CheckpointError

FORMAT_VERSION = 1
MAGIC = "edgerep_checkpoint"
#: common keys under which training scripts nest their state_dict
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "ema", "model_ema", "params")


TASKS = ("classify", "detect", "sr")  # meta.task's values (edgerep.tasks has one module per task)


@dataclass
class CheckpointMeta:
    """Everything besides the weights that deploying a model needs."""

    arch: str
    arch_kwargs: dict = field(default_factory=dict)
    input_shape: tuple = (3, 224, 224)  # (C, H, W)
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    layout: str = "NCHW"
    scale: float = 1.0 / 255.0  # 8-bit pixel value * scale, then (x - mean) / std
    resize: str = "direct"  # or "shorter:N" (shorter side to N, centre crop H x W)
    channel_order: str = "rgb"
    class_names: list | None = None
    dataset: str | None = None
    task: str = "classify"  # what the outputs are for: "classify", "detect" or "sr" (edgerep.tasks)
    folded: bool = False
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"], d["mean"], d["std"] = list(self.input_shape), list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "checkpoint") -> "CheckpointMeta":
        """Validate and build; a bad field raises ``CheckpointError`` naming it."""
        try:
            return cls._from_dict(d, where)
        except (TypeError, ValueError, OverflowError) as e:  # e.g. input_shape ["a", 16, 16], mean None
            raise CheckpointError(f"{where}: meta has a field of the wrong type or value ({_short(str(e))})",
                                  hint="meta.input_shape is 3 positive ints, mean/std lists of floats") from None

    @classmethod
    def _from_dict(cls, d: Mapping[str, Any], where: str) -> "CheckpointMeta":
        if not isinstance(d, Mapping):
            raise CheckpointError(f"{where}: 'meta' is a {type(d).__name__}, expected a dict")
        known = {f.name for f in fields(cls)}
        if "arch" not in d or not isinstance(d["arch"], str) or not d["arch"]:
            raise CheckpointError(f"{where}: meta.arch is missing or not a string")
        kw = {k: v for k, v in d.items() if k in known}
        version = int(kw.get("format_version", FORMAT_VERSION))
        if version > FORMAT_VERSION:
            raise CheckpointError(f"{where}: meta.format_version {version} is newer than this edgerep reads "
                                  f"({FORMAT_VERSION})", hint="upgrade edgerep")
        shape = tuple(int(v) for v in kw.get("input_shape", cls.input_shape))
        if len(shape) != 3 or min(shape) < 1:
            raise CheckpointError(f"{where}: meta.input_shape must be (C, H, W) positive, got {shape}")
        kw["input_shape"] = shape
        for name in ("mean", "std"):  # absent: a placeholder for the channel count (loaders mark it a guess)
            absent = getattr(cls, name) if shape[0] == 3 else (0.5,) * shape[0]
            vals = tuple(float(v) for v in kw.get(name, absent))
            if len(vals) not in (1, shape[0]):
                raise CheckpointError(f"{where}: meta.{name} has {len(vals)} values for {shape[0]} channels")
            kw[name] = vals
        if any(s <= 0 for s in kw["std"]):
            raise CheckpointError(f"{where}: meta.std must be positive, got {kw['std']}")
        kw["scale"] = float(kw.get("scale", cls.scale))
        if not (kw["scale"] > 0 and kw["scale"] < float("inf")):
            raise CheckpointError(f"{where}: meta.scale must be a positive number, got {kw['scale']}")
        kw["resize"] = str(kw.get("resize", cls.resize))
        kw["channel_order"] = str(kw.get("channel_order", cls.channel_order))
        from edgerep.data.base import CHANNEL_ORDERS, check_resize
        from edgerep.errors import DataError

        try:
            check_resize(kw["resize"])
        except DataError as e:
            raise CheckpointError(f"{where}: meta.{e}") from None
        if kw["channel_order"] not in CHANNEL_ORDERS:
            raise CheckpointError(f"{where}: meta.channel_order {kw['channel_order']!r} is not one of "
                                  f"{', '.join(CHANNEL_ORDERS)}")
        if kw.get("layout", "NCHW") != "NCHW":
            raise CheckpointError(f"{where}: meta.layout {kw['layout']!r} is not supported (only NCHW)")
        if not isinstance(kw.get("arch_kwargs", {}), Mapping):
            raise CheckpointError(f"{where}: meta.arch_kwargs must be a dict")
        kw["arch_kwargs"] = dict(kw.get("arch_kwargs", {}))
        kw["extra"] = dict(kw.get("extra") or {})
        kw["format_version"] = version
        if kw.get("class_names") is not None:
            kw["class_names"] = [str(c) for c in kw["class_names"]]
        kw["folded"] = bool(kw.get("folded", False))
        kw["task"] = str(kw.get("task") or cls.task)
        if kw["task"] not in TASKS:
            raise CheckpointError(f"{where}: meta.task {kw['task']!r} is not one of {', '.join(TASKS)}")
        return cls(**kw)


PREPROCESSING_FIELDS = ("mean", "std", "scale", "resize", "channel_order")
PREPROCESSING_FLAGS = "--mean, --std (and --scale, --resize, --channel-order)"


def preprocessing_known(meta: Any) -> bool:
    """Whether ``meta``'s preprocessing was stated (by the checkpoint, flags or a recipe), not guessed."""
    return getattr(meta, "extra", {}).get("preprocessing_source", "checkpoint") != "default"


def preprocessing_of(meta: CheckpointMeta) -> dict[str, Any]:
    """The preprocessing as report.json records it."""
    return {"input_shape": list(meta.input_shape), "mean": list(meta.mean), "std": list(meta.std),
            "scale": meta.scale, "resize": meta.resize, "channel_order": meta.channel_order,
            "source": meta.extra.get("preprocessing_source", "checkpoint"),
            "input_shape_source": meta.extra.get("input_shape_source", "checkpoint")}


def apply_preprocessing(meta: CheckpointMeta, overrides: Mapping[str, Any] | None, source: str = "flags",
                        where: str = "--mean/--std") -> CheckpointMeta:
    """``meta`` with the given preprocessing fields replaced (one value broadcasts to every channel);
    marks the preprocessing as stated by ``source``. Bad values raise ``CheckpointError``."""
    given = {k: v for k, v in (overrides or {}).items() if k in PREPROCESSING_FIELDS and v is not None}
    if not given:
        return meta
    c = int(meta.input_shape[0])
    d = meta.to_dict()
    for k, v in given.items():
        if k in ("mean", "std"):
            vals = [float(x) for x in (v if isinstance(v, (list, tuple)) else [v])]
            if len(vals) == 1:
                vals = vals * c
            if len(vals) != c:
                raise CheckpointError(f"{where}: --{k} has {len(vals)} values for {c} input channels",
                                      hint="give one value per channel, or one for all")
            d[k] = vals
        else:
            d[k] = v
    if not preprocessing_known(meta) and ("mean" not in given or "std" not in given):
        # only part stated over a guess: applied, but still not known (a recipe may complete it; data
        # that needs preprocessing is refused until mean and std are both stated)
        d["extra"] = {**meta.extra, "preprocessing_source": "default", "preprocessing_partial": sorted(given)}
    else:
        d["extra"] = {k: v for k, v in meta.extra.items() if k != "preprocessing_partial"}
        d["extra"]["preprocessing_source"] = source
    return CheckpointMeta.from_dict(d, where)


@dataclass
class LoadedCheckpoint:
    """A loaded model (eval mode) with its metadata and what the file was."""

    model: nn.Module
    meta: CheckpointMeta
    source_format: str  # "edgerep", "state_dict", "official:<layout>", "torch.export", "pickled-module"
    path: Path

    def example_input(self, batch: int = 1) -> torch.Tensor:
        """A seeded random input of the model's shape (for fold verification)."""
        g = torch.Generator().manual_seed(0)
        return torch.randn((batch, *self.meta.input_shape), generator=g)


# ------------------------------------------------------------------------------------------
# architectures
# ------------------------------------------------------------------------------------------
def build_arch(arch: str, arch_kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """A registry name (``edgerep zoo``), ``timm:NAME`` or ``package.module:factory``, called with ``arch_kwargs``."""
    kwargs = dict(arch_kwargs or {})
    from edgerep.models.timm_models import create_timm_model, is_timm_arch

    if is_timm_arch(arch):
        return create_timm_model(arch, **kwargs)
    if ":" in arch:
        mod_name, _, attr = arch.partition(":")
        try:
            factory = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as e:
            raise CheckpointError(f"--arch {arch!r}: cannot import ({e})",
                                  hint="use package.module:factory with the package on PYTHONPATH") from None
        try:
            model = factory(**kwargs)
        except TypeError as e:
            raise CheckpointError(f"--arch {arch!r}: factory rejected {kwargs}: {e}") from None
        if not isinstance(model, nn.Module):
            raise CheckpointError(f"--arch {arch!r}: factory returned {type(model).__name__}, not an nn.Module")
        return model
    from edgerep.models import create_model

    return create_model(arch, **kwargs)


def default_meta(arch: str, arch_kwargs: Mapping[str, Any] | None = None) -> CheckpointMeta:
    """Metadata for a bare architecture: the registry's input shape, ImageNet preprocessing."""
    shape: tuple = (3, 224, 224)
    task = "classify"
    from edgerep.models.timm_models import is_timm_arch, timm_defaults

    if is_timm_arch(arch):
        d = timm_defaults(arch)
        # timm's config for the name: what timm's own transforms use, still a guess for this checkpoint
        return CheckpointMeta(arch=arch, arch_kwargs=dict(arch_kwargs or {}), input_shape=d.input_shape,
                              mean=d.mean, std=d.std, extra={"preprocessing_source": "default"})
    if ":" not in arch:
        from edgerep.models import get_model_info

        info = get_model_info(arch)
        shape = info.input_shape
        task = info.task if info.task in TASKS else "classify"
        kw = dict(arch_kwargs or {})
        if "in_channels" in kw:
            shape = (int(kw["in_channels"]), shape[1], shape[2])
    mean = IMAGENET_MEAN if shape[0] == 3 else (0.5,) * shape[0]
    std = IMAGENET_STD if shape[0] == 3 else (0.5,) * shape[0]
    return CheckpointMeta(arch=arch, arch_kwargs=dict(arch_kwargs or {}), input_shape=shape, mean=mean, std=std,
                          task=task, extra={"preprocessing_source": "default"})  # a guess: data that needs it is refused


# ------------------------------------------------------------------------------------------
# state_dict matching with one-line errors
# ------------------------------------------------------------------------------------------
def _first(items: list[str], n: int = 3) -> str:
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _block_family(keys: Iterable[str]) -> str:
    from edgerep.checkpoint_formats import detect_layout

    keys = list(keys)
    fam = detect_layout(dict.fromkeys(keys))
    if fam:
        return fam
    segs = {p for k in keys for p in k.split(".")}
    return "repvgg" if {"dense", "one_by_one"} & segs else "other"


def _likely_cause(missing: list[str], unexpected: list[str], shapes: list[str], model_keys: set[str]) -> str:
    from edgerep.checkpoint_formats import FOLDED_MARKERS

    if any(m in k for k in unexpected for m in FOLDED_MARKERS) or (
            unexpected and all(k.endswith(".bias") or ".conv." in k for k in unexpected)
            and any(".bn." in k or "running_" in k for k in missing)):
        return "the checkpoint is folded (deploy form) but the model is train-time, or the reverse"
    if unexpected and missing:
        a, b = _block_family(unexpected), _block_family(missing)
        if a != b:
            return f"wrong --arch: the checkpoint holds {a} blocks where the model has {b} blocks"
    prefixes_model = {k.split(".")[0] for k in model_keys}
    if unexpected and missing and not ({k.split(".")[0] for k in unexpected} & prefixes_model):
        return "wrong --arch: the checkpoint and the model share no top-level module names"
    if shapes and not missing and not unexpected:
        return "same family but another width or class count (wrong variant or num_classes)"
    if (missing and not unexpected) or (unexpected and not missing):
        return "same family but another depth (wrong variant)"
    return "wrong --arch or a different model definition"


def check_finite(tensors: Mapping[str, Any], where: str) -> None:
    """Refuse NaN / Inf in floating-point weights or BN statistics, naming the first bad tensor."""
    bad = [k for k, v in tensors.items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        n = int((~torch.isfinite(tensors[bad[0]])).sum())
        raise CheckpointError(f"{where}: {len(bad)} tensors hold NaN or Inf ({_first(bad)}; {n} bad values in "
                              f"{bad[0]})", hint="the training run diverged or the file is damaged; "
                              "use an earlier checkpoint") from None


def load_state_dict_checked(model: nn.Module, sd: Mapping[str, torch.Tensor], where: str) -> None:
    """``model.load_state_dict`` that fails with one line naming the first bad keys and a likely cause."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own and not k.endswith("num_batches_tracked")]
    shapes = [f"{k} {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}" for k in own
              if k in sd and hasattr(sd[k], "shape") and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({_first(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({_first(unexpected)})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches ({_first(shapes, 2)})")
        cause = _likely_cause(missing, unexpected, shapes, set(own))
        raise CheckpointError(f"{where}: weights do not fit the architecture: {'; '.join(parts)}",
                              hint=f"likely cause: {cause}")
    check_finite(sd, where)
    full = {k: v for k, v in sd.items() if k in own}
    for k in own:  # older files without num_batches_tracked
        full.setdefault(k, own[k])
    model.load_state_dict(full, strict=True)


# ------------------------------------------------------------------------------------------
# reading the file
# ------------------------------------------------------------------------------------------
def _check_crc(path: Path) -> None:
    """torch.load does not verify the archive's CRC-32s: flipped bytes in a tensor would load as other weights."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({type(e).__name__}: {_short(str(e))})",
                              hint="re-download or re-save the file") from None
    except Exception as e:  # zlib.error and friends from a damaged member
        raise CheckpointError(f"{path}: corrupt checkpoint ({type(e).__name__}: {_short(str(e))})",
                              hint="re-download or re-save the file") from None
    if bad is not None:
        raise CheckpointError(f"{path}: corrupt checkpoint (CRC-32 mismatch in {bad})",
                              hint="the file changed after it was written; re-download or re-save it")


def _sniff(path: Path) -> None:
    """Refuse files that are not torch.save output before the unpickler sees them."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(path):
            raise CheckpointError(f"{path}: unreadable or truncated checkpoint (zip archive without its "
                                  "central directory)", hint="re-download or re-save the file")
        _check_crc(path)
        return
    if not head.startswith(b"\x80"):  # the legacy (pre-1.6) format is a bare pickle
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a torch.save archive nor a pickle)")


def _torch_load(path: Path, trust: bool) -> Any:
    _sniff(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Weights only load failed" in msg and ("GLOBAL" in msg or "global" in msg):
            raise CheckpointError(
                f"{path}: contains pickled Python objects (e.g. a whole nn.Module); loading it would run code "
                "named by the file", hint="save model.state_dict() instead, or pass --trust-checkpoint if you "
                "trust where the file came from") from None
        why = msg.split("WeightsUnpickler error:", 1)[-1] if "WeightsUnpickler error:" in msg else msg
        raise CheckpointError(f"{path}: not a PyTorch checkpoint, or a pickle edgerep will not run "
                              f"({_short(why)})", hint="pass a checkpoint saved with torch.save(state_dict)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        msg = _short(str(e))
        if "zip" in msg.lower() or "central directory" in msg.lower() or isinstance(e, EOFError):
            raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({msg})",
                                  hint="re-download or re-save the file") from None
        raise CheckpointError(f"{path}: cannot read checkpoint ({msg})") from None
    except Exception as e:  # e.g. a trusted pickle naming a class that does not exist here
        if not trust:  # the weights-only reader met bytes it cannot parse (a text file, an image...)
            raise CheckpointError(f"{path}: not a PyTorch checkpoint ({type(e).__name__}: {_short(str(e))})",
                                  hint="pass a checkpoint saved with torch.save(state_dict)") from None
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(e).__name__}: {_short(str(e))})") from None


def _short(msg: str, n: int = 160) -> str:
    line = msg.strip().splitlines()[0] if msg.strip() else msg
    return line[:n] + ("..." if len(line) > n else "")


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if _is_state_dict(obj):
        sd = dict(obj)
    elif isinstance(obj, Mapping):
        for k in WRAPPER_KEYS:
            if k in obj and _is_state_dict(obj[k]):
                sd = dict(obj[k])
                break
        else:
            keys = ", ".join(map(str, list(obj)[:5]))
            raise CheckpointError(f"{path}: a dict but not a checkpoint (top-level keys: {keys})",
                                  hint="expected an edgerep checkpoint or a state_dict of tensors")
    else:
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a checkpoint or state_dict")
    if all(k.startswith("module.") for k in sd):  # DataParallel / DDP
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _keys(sd: Mapping[str, Any]) -> set[str]:
    return {k for k in sd if not k.endswith("num_batches_tracked")}


def _fold_like(model: nn.Module, meta: CheckpointMeta, sd: Mapping[str, torch.Tensor]) -> nn.Module:
    """Bring a freshly built train-time model into the folded structure the checkpoint was saved in.

    Blocks fold by ``to_deploy()``; if the saver also ran the traced-graph folder (recorded as
    ``extra["fold_generic"]``, or evident because the block-only structure does not fit the
    keys), that is replayed on a zero input of the checkpoint's shape.
    """
    from edgerep.fold.model import fold_model

    model.eval()
    order = [True, False] if meta.extra.get("fold_generic") else [False, True]
    first = None
    for generic in order:
        example = torch.zeros((1, *meta.input_shape)) if generic else None
        folded = fold_model(model, example, generic=generic, verify=False)  # a structure: its weights come from sd
        own = folded.state_dict()
        if _keys(own) == _keys(sd) and all(tuple(own[k].shape) == tuple(sd[k].shape) for k in _keys(own)):
            return folded
        first = first or folded
    return first  # the caller's key check names what does not fit


def _with_inferred_classes(arch: str, kwargs: dict, sd: Mapping[str, torch.Tensor]) -> dict:
    """Registry and timm models take ``num_classes``; read it off the classifier so 1000-class and 10-class files both load."""
    from edgerep.models.timm_models import infer_num_classes, is_timm_arch

    if is_timm_arch(arch):
        return infer_num_classes(arch, kwargs, sd)
    if ":" in arch or "num_classes" in kwargs:
        return kwargs
    for key in ("linear.weight", "fc.weight", "classifier.weight", "head.weight"):
        if key in sd and sd[key].dim() == 2:
            return {**kwargs, "num_classes": int(sd[key].shape[0])}
    return kwargs


def _load_edgerep(obj: Mapping, path: Path, arch: str | None, input_shape: tuple | None = None) -> LoadedCheckpoint:
    meta = CheckpointMeta.from_dict(obj.get("meta"), str(path))
    given = obj.get("meta", {})
    if not all(k in given for k in ("mean", "std")):  # written without preprocessing: the class defaults are a guess
        meta.extra["preprocessing_source"] = "default"
    # the checkpoint's own input shape stands (preprocessing_of reports "checkpoint"); a contradicting
    # --input-shape is refused below, never silently overridden
    if "input_shape" not in given and input_shape is not None:
        meta.input_shape = tuple(int(v) for v in input_shape)
        meta.extra["input_shape_source"] = "flags"
    elif "input_shape" not in given:
        raise CheckpointError(f"{path}: meta has no input_shape, and edgerep will not guess one",
                              hint="pass --input-shape C,H,W as the model was trained")
    if arch is not None and arch != meta.arch:
        raise CheckpointError(f"{path}: the checkpoint is a {meta.arch!r}, not --arch {arch!r}",
                              hint="edgerep checkpoints carry their architecture; drop --arch")
    if input_shape is not None and tuple(int(v) for v in input_shape) != tuple(meta.input_shape):
        raise CheckpointError(f"--input-shape {','.join(map(str, input_shape))}: {path} carries its input shape "
                              f"{','.join(map(str, meta.input_shape))}",
                              hint="edgerep checkpoints carry their input shape; drop --input-shape")
    sd = obj.get("state_dict")
    if not _is_state_dict(sd):
        raise CheckpointError(f"{path}: 'state_dict' is missing or not a dict of tensors")
    model = build_arch(meta.arch, meta.arch_kwargs)
    if meta.folded:
        model = _fold_like(model, meta, sd)
    load_state_dict_checked(model, sd, str(path))
    return LoadedCheckpoint(model.eval(), meta, "edgerep", path)


def _load_plain(obj: Any, path: Path, arch: str | None, arch_kwargs: Mapping[str, Any] | None,
                input_shape: tuple | None) -> LoadedCheckpoint:
    from edgerep.checkpoint_formats import to_edgerep_layout

    sd = _unwrap_state_dict(obj, path)
    if arch is None:
        raise CheckpointError(f"{path}: a plain state_dict carries no architecture",
                              hint="pass --arch NAME (see `edgerep zoo`) or --arch package.module:factory")
    raw = sd
    sd, layout, folded = to_edgerep_layout(sd)
    kwargs = _with_inferred_classes(arch, dict(arch_kwargs or {}), sd)
    if layout is not None and set(raw) == set(build_arch(arch, kwargs).state_dict()):
        # the architecture itself uses the official names (e.g. a user's own factory): load as is
        sd, folded = dict(raw), False
    meta = default_meta(arch, kwargs)
    meta.extra["input_shape_source"] = "timm" if arch.startswith("timm:") else "registry"
    if input_shape is not None:
        meta.input_shape = tuple(int(v) for v in input_shape)
        meta.extra["input_shape_source"] = "flags"
        c = meta.input_shape[0]
        if len(meta.mean) != c:  # the default preprocessing was for another channel count
            meta.mean, meta.std = (0.5,) * c, (0.5,) * c
            meta.extra["preprocessing_source"] = "default"
    meta.folded = folded
    meta.extra["source_layout"] = layout or "edgerep"
    model = build_arch(arch, kwargs)
    if input_shape is None and ":" in arch and not arch.startswith("timm:"):  # a factory of the user's: no shape
        raise CheckpointError(f"{path}: --arch {arch} states no input shape, and edgerep will not guess one",
                              hint="pass --input-shape C,H,W as the model was trained")
    if folded:
        model = _fold_like(model, meta, sd)
    load_state_dict_checked(model, sd, str(path))
    return LoadedCheckpoint(model.eval(), meta, f"official:{layout}" if layout else "state_dict", path)


def _load_export(path: Path, input_shape: tuple | None) -> LoadedCheckpoint:
    if not zipfile.is_zipfile(path):  # a .pt2 is a zip archive; refuse junk before torch.export logs a traceback
        raise CheckpointError(f"{path}: not a readable torch.export program (not a zip archive)",
                              hint="save it with torch.export.save, or re-download it")
    _check_crc(path)
    try:
        ep = torch.export.load(str(path))
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable torch.export program ({type(e).__name__}: "
                              f"{_short(str(e))})") from None
    shape = input_shape
    if shape is None:
        args = getattr(ep, "example_inputs", None)
        try:
            shape = tuple(args[0][0].shape[1:]) if args else None
        except (IndexError, TypeError, AttributeError):
            shape = None
    if shape is None or len(shape) != 3:
        raise CheckpointError(f"{path}: the program records no (N, C, H, W) example input",
                              hint="pass --input-shape C,H,W")
    meta = CheckpointMeta(arch="torch.export", input_shape=tuple(int(s) for s in shape),
                          extra={"preprocessing_source": "default",
                                 "input_shape_source": "flags" if input_shape is not None else "program"})
    if meta.input_shape[0] != 3:
        meta.mean, meta.std = (0.5,) * meta.input_shape[0], (0.5,) * meta.input_shape[0]
    from edgerep.exported import program_module

    example = torch.randn((1, *meta.input_shape), generator=torch.Generator().manual_seed(0))
    recorded = (getattr(ep, "example_inputs", None) or ((),))[0]
    if recorded and isinstance(recorded[0], torch.Tensor) and tuple(recorded[0].shape[1:]) == meta.input_shape:
        example = recorded[0]  # the program may be specialised on the batch size it was exported with
    return LoadedCheckpoint(program_module(ep, example, str(path)), meta, "torch.export", path)


def load_checkpoint(path: str | Path, *, arch: str | None = None, trust: bool = False,
                    arch_kwargs: Mapping[str, Any] | None = None, input_shape: tuple | None = None,
                    preprocessing: Mapping[str, Any] | None = None) -> LoadedCheckpoint:
    """Load any accepted checkpoint format into an eval-mode model plus metadata.

    ``arch`` (registry name or ``package.module:factory``) is required for plain state_dicts.
    ``trust=True`` allows unpickling a whole module (this runs code from the file).
    ``preprocessing`` (mean, std, scale, resize, channel_order) overrides what the file carries.
    Every user-fixable problem raises ``CheckpointError`` with one line naming the file.
    """
    loaded = _load_any(Path(path), arch, trust, arch_kwargs, input_shape)
    loaded.meta = apply_preprocessing(loaded.meta, preprocessing)
    return loaded


def _load_any(path: Path, arch: str | None, trust: bool, arch_kwargs: Mapping[str, Any] | None,
              input_shape: tuple | None) -> LoadedCheckpoint:
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file",
                              hint="name the .pt / .pth / .pt2 file inside it")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".pt2":
        return _load_export(path, input_shape)
    if path.suffix.lower() == ".onnx":
        raise CheckpointError(f"{path}: an ONNX model, not a PyTorch checkpoint (it has no train-time branches "
                              "left to fold or attribute)", hint="fold, check and deploy take the checkpoint; "
                              "quantize, build and bench also take ONNX")
    obj = _torch_load(path, trust)
    if isinstance(obj, Mapping) and MAGIC in obj:
        return _load_edgerep(obj, path, arch, input_shape)
    if isinstance(obj, nn.Module) or (isinstance(obj, Mapping) and isinstance(obj.get("model"), nn.Module)):
        model = obj if isinstance(obj, nn.Module) else obj["model"]
        check_finite(model.state_dict(), str(path))
        return LoadedCheckpoint(model.eval(), _pickled_meta(obj, model, path, arch, arch_kwargs, input_shape),
                                "pickled-module", path)
    return _load_plain(obj, path, arch, arch_kwargs, input_shape)


def _pickled_meta(obj: Any, model: nn.Module, path: Path, arch: str | None, arch_kwargs: Mapping[str, Any] | None,
                  input_shape: tuple | None) -> CheckpointMeta:
    """Metadata of a pickled module: the file's own ``meta`` (edgerep writes one), else the registry's for
    ``arch``; the input shape is never guessed (``--input-shape``, else the meta's or the registry's, else
    exit 2), and preprocessing the meta does not state is marked a guess (data that needs it is refused)."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if isinstance(obj, Mapping) and isinstance(obj.get("meta"), Mapping):
        given = obj["meta"]
        meta = CheckpointMeta.from_dict(given, str(path))
        if not all(k in given for k in ("mean", "std")):  # the class defaults (ImageNet) are a guess
            meta.extra["preprocessing_source"] = "default"
        shape_source = "checkpoint" if "input_shape" in given else None
    elif arch and ":" not in arch:
        meta, shape_source = default_meta(arch, arch_kwargs), "registry"
    else:
        c = int(first.in_channels) if first is not None else 3
        meta = CheckpointMeta(arch=arch or "pickled-module", arch_kwargs=dict(arch_kwargs or {}),
                              input_shape=(c, 1, 1), extra={"preprocessing_source": "default"})
        shape_source = None
    if input_shape is not None:
        meta.input_shape, shape_source = tuple(int(v) for v in input_shape), "flags"
    if shape_source is None:
        channels = f" (its first conv takes {first.in_channels} channels)" if first is not None else ""
        raise CheckpointError(f"{path}: a pickled module records no input shape{channels}, and edgerep will not "
                              "guess one", hint="pass --input-shape C,H,W as the model was trained")
    if shape_source != "checkpoint":
        meta.extra["input_shape_source"] = shape_source
    c = meta.input_shape[0]
    if len(meta.mean) not in (1, c):  # the default preprocessing was for another channel count
        meta.mean, meta.std = (0.5,) * c, (0.5,) * c
    return meta


def _atomic_torch_save(path: Path, payload: Any) -> Path:
    """``torch.save`` into a temp file in the same folder, then rename: a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a checkpoint is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_pickled_module(path: str | Path, model: nn.Module, meta: CheckpointMeta) -> Path:
    """Write a whole module plus its metadata (reloads only with ``trust=True``), atomically."""
    return _atomic_torch_save(Path(path), {"model": model, "meta": meta.to_dict()})


def save_checkpoint(path: str | Path, model: nn.Module, meta: CheckpointMeta) -> Path:
    """Write an edgerep checkpoint atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    CheckpointMeta.from_dict(meta.to_dict(), str(path))  # validate before writing anything
    sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return _atomic_torch_save(path, {MAGIC: FORMAT_VERSION, "meta": meta.to_dict(), "state_dict": sd})


def fold_checkpoint(src: str | Path, out: str | Path, *, arch: str | None = None,
                    arch_kwargs: Mapping[str, Any] | None = None, input_shape: tuple | None = None,
                    trust: bool = False, tolerance: float = 1e-4, batch: int = 2, generic: bool = True,
                    preprocessing: Mapping[str, Any] | None = None) -> dict:
    """Load ``src``, fold it, verify on a seeded input, save it at ``out`` in a form that loads
    again (an edgerep checkpoint with ``folded=True``; a ``.pt2`` for a torch.export program; a
    pickled module for a pickled module given without ``arch``) and read it back. Returns a JSON-ready report; an
    inexact fold raises ``FoldError``."""
    from edgerep.model_path import example_input, fold_loaded
    from edgerep.outputs import check_output_file

    out = check_output_file(out, "-o")
    if Path(src).suffix == ".pt2" and Path(out).suffix != ".pt2":
        raise CheckpointError(f"-o {out}: a torch.export program folds into a .pt2 program",
                              hint="name the output FILE.pt2")
    loaded = load_checkpoint(src, arch=arch, trust=trust, arch_kwargs=arch_kwargs, input_shape=input_shape,
                             preprocessing=preprocessing)
    meta = loaded.meta
    x = example_input(loaded, 1 if loaded.source_format == "torch.export" else batch)
    result = fold_loaded(loaded, example=x, generic=generic, tolerance=tolerance)
    folded, rep = result.module, result.verify
    out_meta = CheckpointMeta.from_dict({**meta.to_dict(), "folded": True}, str(src))
    out_meta.extra = {**meta.extra, "fold_generic": bool(generic),
                      "folded_from": str(src), "fold_max_rel_error": rep.max_rel_error}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    if loaded.source_format == "torch.export":
        from edgerep.exported import save_program

        save_program(folded, out, x)
        back = load_checkpoint(out)
    elif loaded.source_format == "pickled-module" and not arch:  # no architecture to rebuild it from
        save_pickled_module(out, folded, out_meta)
        back = load_checkpoint(out, trust=True)
    else:
        save_checkpoint(out, folded, out_meta)
        back = load_checkpoint(out)
    with torch.no_grad():
        readback = float((back.model(x) - folded(x)).abs().max())
    if readback != 0.0 and not readback <= tolerance * float(folded(x).abs().max()):
        raise CheckpointError(f"{out}: the folded checkpoint reads back differently ({readback:.2e})")
    return {"checkpoint": str(src), "out": str(out), "arch": meta.arch, "source_format": loaded.source_format,
            "fold": rep.to_dict(), "fold_seconds": result.seconds, "readback_max_abs_error": readback,
            "tolerance": tolerance, "graph": result.graph,
            "provenance": [r.to_dict() for r in result.provenance], "folders": result.counts()}
