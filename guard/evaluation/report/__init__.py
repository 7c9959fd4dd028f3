"""``guard report``: the paper's figures and facts, and the guard-vs-peers tables, for a fitted
artifact, as Markdown with PNG figures (see :func:`build_report`)."""

from .build import build_report
from .data import ReportData, builtin, from_files

__all__ = ["ReportData", "build_report", "builtin", "from_files"]
