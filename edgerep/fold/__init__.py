"""Folding: the kernel algebra (``kernel``), model-level fold and verification (``model``)."""
from edgerep.fold.kernel import *  # noqa: F401,F403
from edgerep.fold.kernel import __all__ as _kernel_all

__all__ = list(_kernel_all)
