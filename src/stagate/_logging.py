"""Package logger, verbosity and the tqdm factory (progress goes to stderr)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

from tqdm.auto import tqdm

log = logging.getLogger("stagate")
log.addHandler(logging.NullHandler())


def set_verbosity(level: int | str = "INFO") -> None:
    """Send stagate's log to stderr at `level` (``"WARNING"``, ``"INFO"``, ``"DEBUG"``)."""
    log.setLevel(level)
    if not any(getattr(h, "_stagate", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        handler._stagate = True  # type: ignore[attr-defined]
        log.addHandler(handler)


def progress(iterable: Iterable | None = None, *, show: bool = True, **kwds) -> tqdm:
    """A tqdm bar on stderr, silent when `show` is False."""
    return tqdm(iterable, disable=not show, file=sys.stderr, dynamic_ncols=True, **kwds)
