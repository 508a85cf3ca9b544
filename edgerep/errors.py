"""Errors edgerep raises on purpose; the CLI turns each into one line and an exit code."""
from __future__ import annotations


class EdgerepError(Exception):
    """A problem the user can fix (bad file, bad field, missing tool). CLI exit code 2.

    The message is one line that names the file or field; ``hint`` says what to do.
    """

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint

    def one_line(self) -> str:
        msg = str(self).strip().replace("\n", " ")
        return f"{msg} ({self.hint})" if self.hint else msg


class FoldError(EdgerepError):
    """A structure cannot be folded exactly. Carries the module path and the reason."""

    def __init__(self, reason: str, path: str | None = None, hint: str | None = None):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path else reason, hint)

    def at(self, path: str) -> "FoldError":
        """The same error, located at module ``path`` (outermost caller wins)."""
        full = f"{path}.{self.path}" if self.path else path
        return FoldError(self.reason, full, self.hint)


class CheckpointError(EdgerepError):
    """A checkpoint cannot be read, is unsafe to read, or does not match its architecture."""


class DataError(EdgerepError):
    """A data set cannot be read or does not fit the model."""


class EngineError(EdgerepError):
    """An engine cannot be built or run here (missing backend, wrong device, stale plan)."""


class GateFailed(EdgerepError):
    """A gate threshold was not met. CLI exit code 1."""

    exit_code = 1

    def __init__(self, reasons: list[str]):
        self.reasons = list(reasons)
        super().__init__("gate failed: " + "; ".join(self.reasons))
