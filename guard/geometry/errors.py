"""The geometry's own error: bad arguments to a numeric routine (shapes, values, settings).

The geometry imports nothing else of the project, so it cannot raise :mod:`guard.errors`
classes; :class:`GeometryError` is a ``ValueError`` and the CLI and the server treat it as
invalid input, like :class:`guard.errors.GeometryError`.
"""

from __future__ import annotations


class GeometryError(ValueError):
    """Invalid input to a geometry routine; the message says what was expected."""
