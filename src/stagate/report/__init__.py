"""report.html: one self-contained page that shows a whole run (figures embedded)."""

from ._report import render_report, write_report

__all__ = ["render_report", "write_report"]
