"""Tools: train STAGATE, find domains, score them."""

from ._domains import domains
from ._metrics import score_domains
from ._stagate import stagate

__all__ = ["domains", "score_domains", "stagate"]
