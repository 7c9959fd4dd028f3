"""One exception hierarchy for the whole package (plus the geometry's :class:`GeometryError`).

Every error a user can cause derives from :class:`GuardError` and carries a message that says
what was expected. The CLI prints ``str(err)`` on one line; the server (later) maps each class
to a status code in one table.
"""

from __future__ import annotations

from .geometry.errors import GeometryError


class GuardError(Exception):
    """Base class of every error raised on purpose by ``guard``."""


class InputError(GuardError, ValueError):
    """Input data has the wrong shape, dtype, values, or is missing."""


class ModelError(GuardError):
    """The ONNX model cannot be used (no final affine layer, unreadable, inconsistent)."""


class ArtifactError(GuardError):
    """A fitted artifact is missing, corrupt, of another schema, or belongs to another model."""


class NotFittedError(GuardError, AttributeError):
    """A fitted attribute was used before ``fit`` (or ``load``) was called."""


class DataError(GuardError):
    """A built-in data set is not installed or unreadable."""


#: Every error a user can cause: the package's own and the geometry's (which imports nothing of
#: the project, so it has its own class). The CLI prints these as one line; the server maps them
#: to a status code.
USER_ERRORS: tuple[type[Exception], ...] = (GuardError, GeometryError)
