"""How many samples a scoring pass runs at once, from the bytes of one sample; freed memory handed back.

A fixed batch of 64 costs nothing at 16x16 but at 224x224 each onnxruntime session keeps an arena
sized for 64 images' activations (hundreds of MiB per session, several sessions alive while the
quantizer ranks its policies): the deploy's peak memory grew with the input size. Scoring batches
are therefore bounded by the bytes of their input. A small model keeps 64 (its numbers do not
change); at large inputs the batch can move scores by float summation order only, and calibration's
histogram bins (set by its first batch) follow the smaller batch: ranges change slightly there.
"""
from __future__ import annotations

from math import prod

BATCH_BYTES = 8 * 2**20  # input bytes of one scoring batch: 13 images at 3x224x224 float32, 64 at 3x64x64
MAX_BATCH = 64


def batch_for(sample_shape: tuple[int, ...] | list[int], *, itemsize: int = 4, cap: int = MAX_BATCH,
              budget: int = BATCH_BYTES) -> int:
    """Samples per batch so that one batch's input stays within ``budget`` bytes (at least 1, at most ``cap``)."""
    one = max(1, prod(int(d) for d in sample_shape)) * itemsize
    return max(1, min(int(cap), budget // one))


def x_shape(dataset) -> tuple[int, ...]:
    """One sample's input shape: the data set's preprocessing says it, else its first sample is read."""
    shape = getattr(getattr(dataset, "pre", None), "input_shape", None)
    if shape and all(int(d) > 0 for d in shape):  # an SR set's (3, 0, 0): any size, read the first sample
        return tuple(int(d) for d in shape)
    x, _ = next(iter(dataset.batches(1)))
    return tuple(int(d) for d in x.shape[1:])


def release_freed() -> bool:
    """Hand the pages the C allocator holds free back to the OS (glibc's ``malloc_trim``; a no-op elsewhere).
    torch frees a stage's tensors into glibc's heap, which keeps them resident: after the check's activation
    statistics on RepVGG-A0 at 224 (64 images), 804 -> 437 MiB. Returns whether it could ask."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return False
    trim(0)
    return True


__all__ = ["batch_for", "x_shape", "release_freed", "BATCH_BYTES", "MAX_BATCH"]
